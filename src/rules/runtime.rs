//! Runtime command lines. Flags come from code and the site config only; nothing the
//! user typed becomes a flag (the image and the task's own argv come last).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::config::{ContainerUser, Network, PodmanConfig};
use super::image::ImageRef;
use super::plan::ContainerPlan;

/// Facts about the task being wrapped.
pub struct TaskLaunch<'a> {
    /// The task's own command line (for the batch step: the spooled script and its args).
    pub argv: &'a [OsString],
    /// The batch step's spooled script, bind-mounted read-only at its own path.
    pub batch_script: Option<&'a Path>,
    /// Names of the variables in the task's environment.
    pub task_env_names: &'a [String],
    /// Whether stdin is a terminal (`srun --pty`).
    pub tty: bool,
}

/// Where podman keeps its state for one job: a fresh storage and run root per job on
/// node-local disk, with images read from read-only stores. Nothing a killed job
/// leaves behind can then break the user's next job.
pub struct PodmanStorage<'a> {
    pub job_dir: &'a Path,
    /// The user's home, for the user's own image store (if the site allows it).
    pub home: &'a Path,
}

impl PodmanStorage<'_> {
    pub fn global_flags(&self, config: &PodmanConfig) -> Vec<OsString> {
        let mut flags = vec![
            flag("root", self.job_dir.join("storage")),
            flag("runroot", self.job_dir.join("run")),
        ];
        let user_store = config
            .user_image_store
            .then(|| self.home.join(".local/share/containers/storage"));
        for store in config.image_stores.iter().cloned().chain(user_store) {
            let mut opt = OsString::from("--storage-opt=additionalimagestore=");
            opt.push(store);
            flags.push(opt);
        }
        flags
    }
}

/// Terminal and locale settings passed through by name when the task has them.
const PASSED_BY_NAME: &[&str] = &["TERM", "LANG", "LC_ALL", "TZ"];

/// Slurm's own variables, all of them, by podman's prefix form (values stay out of the
/// command line), plus the terminal and locale settings the task has.
pub fn forwarded_env(task_env_names: &[String]) -> Vec<String> {
    let mut names = vec!["SLURM_*".to_string()];
    names.extend(
        PASSED_BY_NAME
            .iter()
            .filter(|n| task_env_names.iter().any(|t| t == *n))
            .map(|n| n.to_string()),
    );
    names
}

fn flag(name: &str, value: impl AsRef<OsStr>) -> OsString {
    let mut f = OsString::from(format!("--{name}="));
    f.push(value.as_ref());
    f
}

pub fn podman_argv(
    plan: &ContainerPlan,
    config: &PodmanConfig,
    storage: &PodmanStorage<'_>,
    task: &TaskLaunch<'_>,
) -> Vec<OsString> {
    let mut argv: Vec<OsString> = vec![config.path.clone().into()];
    argv.extend(storage.global_flags(config));
    argv.extend(["run".into(), "--rm".into(), "--pull=never".into()]);
    // podman passes the signals it gets to the container and keeps waiting for it.
    // Without the proxy podman exits on SIGTERM/SIGINT/SIGHUP, which ends the task
    // early and cuts the time limit's KillWait grace short (docs/job-semantics.md).
    argv.push("--sig-proxy=true".into());
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
    for name in forwarded_env(task.task_env_names) {
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

/// The task's real command line: the `tre-spank` tool supervising the runtime.
pub fn supervised_argv(
    tool: &Path,
    image: &ImageRef,
    runtime_argv: Vec<OsString>,
) -> Vec<OsString> {
    let mut argv: Vec<OsString> = vec![
        tool.into(),
        "launch".into(),
        "--image".into(),
        image.to_string().into(),
        "--".into(),
    ];
    argv.extend(runtime_argv);
    argv
}

/// How the runtime's own failures look in its exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeFailure {
    /// 125: the runtime failed before the command ran (missing image, bad mount, ...).
    RuntimeError,
    /// 126: the command was found but could not be executed.
    CannotExecute,
    /// 127: the command was not found in the image.
    NotFound,
}

impl RuntimeFailure {
    pub fn describe(self) -> &'static str {
        match self {
            RuntimeFailure::RuntimeError => {
                "the container runtime failed before your command ran (see its message above)"
            }
            RuntimeFailure::CannotExecute => {
                "your command was found in the image but could not be executed"
            }
            RuntimeFailure::NotFound => "your command was not found in the image",
        }
    }
}

/// podman's documented statuses (a command's own `exit 125` looks the same; the
/// message says what the runtime means by it).
pub fn diagnose_runtime_exit(code: i32) -> Option<RuntimeFailure> {
    match code {
        125 => Some(RuntimeFailure::RuntimeError),
        126 => Some(RuntimeFailure::CannotExecute),
        127 => Some(RuntimeFailure::NotFound),
        _ => None,
    }
}

/// The command as a shell would need it typed, for the `Running:` line only.
pub fn display_command(argv: &[OsString]) -> String {
    argv.iter()
        .map(|a| quote(&String::from_utf8_lossy(a.as_bytes())))
        .collect::<Vec<_>>()
        .join(" ")
}

fn quote(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "@%+=:,./_-*".contains(c);
    if !s.is_empty() && s.chars().all(plain) && !s.contains('*') {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
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
            project: Some(Project {
                name: "proj1".into(),
                group: "proj1".into(),
            }),
            reason: String::new(),
        };
        container_plan(
            &ImageRef::parse("ghcr.io/mikej888/hello-tre:1.0").unwrap(),
            Runtime::Podman,
            &r,
            &JobDirs::new(Path::new("/home/alice"), 1234567),
        )
    }

    fn storage() -> PodmanStorage<'static> {
        PodmanStorage {
            job_dir: Path::new("/var/lib/tre-spank/jobs/job-42"),
            home: Path::new("/home/alice"),
        }
    }

    fn strings(v: &[OsString]) -> Vec<String> {
        v.iter().map(|s| s.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn srun_task_command_line() {
        let argv = [
            OsString::from("cat"),
            OsString::from("/safe_data/README.txt"),
        ];
        let pass = vec![
            "SLURM_JOB_ID".to_string(),
            "HOME".to_string(),
            "TERM".to_string(),
            "AWS_SECRET".to_string(),
        ];
        let got = strings(&podman_argv(
            &plan(),
            &PodmanConfig::default(),
            &storage(),
            &TaskLaunch {
                argv: &argv,
                batch_script: None,
                task_env_names: &pass,
                tty: false,
            },
        ));
        let want = [
            "/usr/bin/podman",
            "--root=/var/lib/tre-spank/jobs/job-42/storage",
            "--runroot=/var/lib/tre-spank/jobs/job-42/run",
            "--storage-opt=additionalimagestore=/home/alice/.local/share/containers/storage",
            "run",
            "--rm",
            "--pull=never",
            "--sig-proxy=true",
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
            "--env=SLURM_*",
            "--env=TERM",
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
            &storage(),
            &TaskLaunch {
                argv: &argv,
                batch_script: Some(script),
                task_env_names: &[],
                tty: true,
            },
        ));
        assert!(got.contains(&"--volume=/var/spool/slurmd/job00042/slurm_script:/var/spool/slurmd/job00042/slurm_script:ro".into()));
        assert!(got.contains(&"--tty".to_string()));
        assert_eq!(
            &got[got.len() - 2..],
            ["/var/spool/slurmd/job00042/slurm_script", "arg1"]
        );
    }

    #[test]
    fn site_settings_change_the_flags() {
        let cfg = PodmanConfig {
            network: Network::None,
            container_user: ContainerUser::KeepId,
            keep_groups: false,
            no_new_privileges: false,
            cgroups_disabled: false,
            user_image_store: false,
            image_stores: vec!["/var/lib/tre-spank/images".into(), "/srv/images".into()],
            ..PodmanConfig::default()
        };
        let got = strings(&podman_argv(
            &plan(),
            &cfg,
            &storage(),
            &TaskLaunch {
                argv: &[],
                batch_script: None,
                task_env_names: &[],
                tty: false,
            },
        ));
        assert_eq!(
            got[3..5],
            [
                "--storage-opt=additionalimagestore=/var/lib/tre-spank/images",
                "--storage-opt=additionalimagestore=/srv/images"
            ]
        );
        assert!(!got.iter().any(|a| a.contains("additionalimagestore=/home")));
        assert!(got.contains(&"--network=none".to_string()));
        assert!(got.contains(&"--userns=keep-id".to_string()));
        assert!(!got.iter().any(|a| a == "--user=0:0"
            || a.contains("keep-groups")
            || a.contains("no-new-priv")
            || a.contains("cgroups")));
    }

    #[test]
    fn only_slurm_and_terminal_variables_are_forwarded() {
        let names: Vec<String> = ["HOME", "PATH", "AWS_SECRET", "TERM", "LANG"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(forwarded_env(&names), vec!["SLURM_*", "TERM", "LANG"]);
        assert_eq!(forwarded_env(&[]), vec!["SLURM_*"]);
    }

    #[test]
    fn running_line_quotes_arguments() {
        let argv: Vec<OsString> = ["podman", "--pull=never", "--env=SLURM_*", "a b", "it's", ""]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(
            display_command(&argv),
            r#"podman --pull=never '--env=SLURM_*' 'a b' 'it'\''s' ''"#
        );
    }
}
