//! Runtime command lines. Flags come from code and the site config only; nothing the
//! user typed becomes a flag (the image and the task's own argv come last).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::config::{ContainerUser, Network, PodmanConfig};
use super::plan::ContainerPlan;

/// Facts about the task being wrapped.
pub struct TaskLaunch<'a> {
    /// The task's own command line (for the batch step: the spooled script and its args).
    pub argv: &'a [OsString],
    /// The batch step's spooled script, bind-mounted read-only at its own path.
    pub batch_script: Option<&'a Path>,
    /// Names of variables passed through from the task's environment by name.
    pub pass_env: &'a [String],
    /// Whether stdin is a terminal (`srun --pty`).
    pub tty: bool,
}

/// Variables passed into the container by name: Slurm's own and terminal settings.
pub fn is_forwarded_var(name: &str) -> bool {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid && (name.starts_with("SLURM_") || matches!(name, "TERM" | "LANG" | "LC_ALL" | "TZ"))
}

fn flag(name: &str, value: impl AsRef<OsStr>) -> OsString {
    let mut f = OsString::from(format!("--{name}="));
    f.push(value.as_ref());
    f
}

pub fn podman_argv(plan: &ContainerPlan, config: &PodmanConfig, task: &TaskLaunch<'_>) -> Vec<OsString> {
    let mut argv: Vec<OsString> = vec![config.path.clone().into(), "run".into(), "--rm".into(), "--pull=never".into()];
    argv.push(
        match config.network {
            Network::Host => "--network=host",
            Network::None => "--network=none",
            Network::Private => "--network=private",
        }
        .into(),
    );
    match config.container_user {
        // Forced even when the image says USER: files must land as the user on the host.
        ContainerUser::Root => argv.push("--user=0:0".into()),
        ContainerUser::KeepId => argv.push("--userns=keep-id".into()),
    }
    if config.keep_groups {
        argv.push("--group-add=keep-groups".into());
    }
    if config.no_new_privileges {
        argv.push("--security-opt=no-new-privileges".into());
    }
    if config.cgroups_disabled {
        argv.push("--cgroups=disabled".into());
    }
    argv.push("--interactive".into());
    if task.tty {
        argv.push("--tty".into());
    }
    argv.push(flag("workdir", &plan.workdir));
    for m in &plan.mounts {
        argv.push(volume(&m.host, &m.container, m.read_only));
    }
    if let Some(script) = task.batch_script {
        argv.push(volume(script, script, true));
    }
    for name in task.pass_env.iter().filter(|n| is_forwarded_var(n)) {
        // By name only: values (possibly secrets) stay out of the Running: line.
        argv.push(flag("env", name));
    }
    for (name, value) in &plan.env {
        argv.push(flag("env", format!("{name}={value}")));
    }
    argv.push(plan.image.to_string().into());
    argv.extend(task.argv.iter().cloned());
    argv
}

fn volume(host: &Path, container: &Path, read_only: bool) -> OsString {
    let mut v = OsString::from("--volume=");
    v.push(host);
    v.push(":");
    v.push(container);
    if read_only {
        v.push(":ro");
    }
    v
}

/// The command as a shell would need it typed, for the `Running:` line only.
pub fn display_command(argv: &[OsString]) -> String {
    argv.iter()
        .map(|a| {
            let s = String::from_utf8_lossy(a.as_bytes());
            shlex::try_quote(&s).map(|q| q.into_owned()).unwrap_or_else(|_| format!("{s:?}"))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::image::ImageRef;
    use crate::rules::options::Runtime;
    use crate::rules::plan::{container_plan, JobDirs};
    use crate::rules::project::{Project, Resolution, SafeData};

    fn plan() -> ContainerPlan {
        let r = Resolution {
            safe_data: SafeData::ProjectDir("/safe_data/proj1".into()),
            project: Some(Project { name: "proj1".into(), group: "proj1".into() }),
            reason: String::new(),
        };
        container_plan(
            &ImageRef::parse("ghcr.io/mikej888/hello-tre:1.0").unwrap(),
            Runtime::Podman,
            &r,
            &JobDirs::new(Path::new("/home/alice"), 1234567),
        )
    }

    fn strings(v: &[OsString]) -> Vec<String> {
        v.iter().map(|s| s.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn srun_task_command_line() {
        let argv = [OsString::from("cat"), OsString::from("/safe_data/README.txt")];
        let pass = vec!["SLURM_JOB_ID".to_string(), "HOME".to_string(), "SLURM_BAD*".to_string()];
        let got = strings(&podman_argv(
            &plan(),
            &PodmanConfig::default(),
            &TaskLaunch { argv: &argv, batch_script: None, pass_env: &pass, tty: false },
        ));
        let want = [
            "/usr/bin/podman",
            "run",
            "--rm",
            "--pull=never",
            "--network=host",
            "--user=0:0",
            "--group-add=keep-groups",
            "--security-opt=no-new-privileges",
            "--cgroups=disabled",
            "--interactive",
            "--workdir=/scratch",
            "--volume=/safe_data/proj1:/safe_data",
            "--volume=/home/alice/outputs-1234567:/safe_outputs",
            "--volume=/home/alice/scratch-1234567:/scratch",
            "--env=SLURM_JOB_ID",
            "--env=TRE_OUTPUTS_DIR=/safe_outputs",
            "--env=TRE_SCRATCH_DIR=/scratch",
            "--env=TRE_SAFE_DATA=/safe_data",
            "--env=TRE_PROJECT=proj1",
            "--env=TRE_CONTAINER=ghcr.io/mikej888/hello-tre:1.0",
            "--env=TRE_IN_CONTAINER=1",
            "ghcr.io/mikej888/hello-tre:1.0",
            "cat",
            "/safe_data/README.txt",
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn batch_script_is_mounted_read_only_at_its_path() {
        let script = Path::new("/var/spool/slurmd/job00042/slurm_script");
        let argv = [script.as_os_str().to_owned(), OsString::from("arg1")];
        let got = strings(&podman_argv(
            &plan(),
            &PodmanConfig::default(),
            &TaskLaunch { argv: &argv, batch_script: Some(script), pass_env: &[], tty: true },
        ));
        assert!(got.contains(&"--volume=/var/spool/slurmd/job00042/slurm_script:/var/spool/slurmd/job00042/slurm_script:ro".into()));
        assert!(got.contains(&"--tty".to_string()));
        assert_eq!(&got[got.len() - 2..], ["/var/spool/slurmd/job00042/slurm_script", "arg1"]);
    }

    #[test]
    fn site_settings_change_the_flags() {
        let cfg = PodmanConfig {
            network: Network::None,
            container_user: ContainerUser::KeepId,
            keep_groups: false,
            no_new_privileges: false,
            cgroups_disabled: false,
            ..PodmanConfig::default()
        };
        let got = strings(&podman_argv(&plan(), &cfg, &TaskLaunch { argv: &[], batch_script: None, pass_env: &[], tty: false }));
        assert!(got.contains(&"--network=none".to_string()));
        assert!(got.contains(&"--userns=keep-id".to_string()));
        assert!(!got.iter().any(|a| a == "--user=0:0" || a.contains("keep-groups") || a.contains("no-new-priv") || a.contains("cgroups")));
    }

    #[test]
    fn only_slurm_and_terminal_variables_are_forwarded() {
        assert!(is_forwarded_var("SLURM_PROCID"));
        assert!(is_forwarded_var("TERM"));
        for no in ["HOME", "PATH", "AWS_SECRET", "SLURM_X=Y", "SLURM_*", "", "1SLURM"] {
            assert!(!is_forwarded_var(no), "{no}");
        }
    }

    #[test]
    fn running_line_quotes_arguments() {
        let argv = [OsString::from("podman"), OsString::from("run"), OsString::from("a b"), OsString::from("it's")];
        assert_eq!(display_command(&argv), r#"podman run 'a b' "it's""#);
    }
}
