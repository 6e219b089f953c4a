//! podman's command line: its storage flags and the task's `podman run`.

use super::{flag, forwarded_env, TaskLaunch};
use crate::rules::config::{ContainerUser, Network, PodmanConfig};
use crate::rules::plan::ContainerPlan;
use crate::rules::vocab::Entrypoint;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Where podman keeps its state for one job: a fresh storage (graph root, with the
/// container's writable layer) on node-local disk and a fresh run root on a tmpfs,
/// with images read from read-only stores. Nothing a killed job leaves behind can then
/// break the user's next job.
pub struct PodmanStorage<'a> {
    /// The job's directory under `runtime_dir` (disk): the graph root.
    pub job_dir: &'a Path,
    /// The job's directory under `run_dir` (tmpfs): the run root, also the task's
    /// `XDG_RUNTIME_DIR`.
    pub run_dir: &'a Path,
    /// The user's home, for the user's own image store (if the site allows it).
    pub home: &'a Path,
    /// Whether that store exists: podman refuses to start with a missing store, and a
    /// user who never ran podman has none.
    pub user_store_exists: bool,
    /// `--transient-store` (podman 4.4 and later, see [`podman_has_transient_store`]):
    /// podman's database and container records go to the run root (the tmpfs) instead
    /// of the graph root; the container's writable layer stays in the graph root.
    pub transient_store: bool,
    /// The conmon wrapper of the exit guard ([`super::CONMON_WRAPPER`]), where the
    /// site has it on and the node has the file.
    pub conmon: Option<&'a Path>,
}
/// Whether the podman that printed `version_line` (`podman --version`: "podman version
/// 4.3.1") has `--transient-store` (4.4 and later). Anything unreadable counts as old:
/// the command line then works with every podman, only slower.
pub fn podman_has_transient_store(version_line: &str) -> bool {
    podman_version_at_least(version_line, (4, 4))
}
fn podman_version_at_least(version_line: &str, least: (u32, u32)) -> bool {
    let Some(version) = version_line.trim().strip_prefix("podman version ") else {
        return false;
    };
    let mut parts = version.split(['.', '-', '+', '~']);
    let number = |p: Option<&str>| p.and_then(|s| s.parse::<u32>().ok());
    match (number(parts.next()), number(parts.next())) {
        (Some(major), Some(minor)) => (major, minor) >= least,
        _ => false,
    }
}
/// Whether the podman that printed `version_line` takes the exit guard (5.0 and
/// later: `podman run` there does not wait for conmon's exit command). Anything
/// unreadable counts as old.
pub fn podman_takes_the_exit_guard(version_line: &str) -> bool {
    podman_version_at_least(version_line, (5, 0))
}
/// The user's own rootless podman storage.
pub fn user_image_store(home: &Path) -> PathBuf {
    home.join(".local/share/containers/storage")
}
impl PodmanStorage<'_> {
    pub fn global_flags(&self, config: &PodmanConfig) -> Vec<OsString> {
        let mut flags = vec![
            flag("root", self.job_dir.join("storage")),
            flag("runroot", self.run_dir.join("run")),
        ];
        if self.transient_store {
            flags.push("--transient-store".into());
        }
        if let Some(conmon) = self.conmon {
            flags.push(flag("conmon", conmon));
        }
        if !config.image_stores.is_empty() && !config.store_mount_program.as_os_str().is_empty() {
            // The site store's files are root's: squashed to the container's root so
            // that podman can create its mount points (docs/images.md).
            let mut opt = OsString::from("--storage-opt=overlay.mount_program=");
            opt.push(&config.store_mount_program);
            flags.push(opt);
            flags.push("--storage-opt=overlay.mountopt=squash_to_root".into());
        }
        let user_store = (config.user_image_store && self.user_store_exists)
            .then(|| user_image_store(self.home));
        for store in config.image_stores.iter().cloned().chain(user_store) {
            let mut opt = OsString::from("--storage-opt=additionalimagestore=");
            opt.push(store);
            flags.push(opt);
        }
        flags
    }
}
pub fn podman_argv(
    plan: &ContainerPlan,
    config: &PodmanConfig,
    storage: &PodmanStorage<'_>,
    task: &TaskLaunch<'_>,
) -> Vec<OsString> {
    let mut argv: Vec<OsString> = vec![config.path.clone().into()];
    argv.extend(storage.global_flags(config));
    // No event log: nothing reads it, and writing it is per-step work (a file in the
    // job's runtime directory, or the journal) for every container start and end.
    argv.push("--events-backend=none".into());
    argv.extend(["run".into(), "--rm".into(), "--pull=never".into()]);
    // No container log: conmon would otherwise copy everything the job prints into a
    // log file in the job's storage (and relay it). Without a terminal the container
    // gets the task's own stdin, stdout and stderr (podman refuses that on a terminal,
    // where only the log file is left out).
    argv.push(
        if task.tty {
            "--log-driver=none"
        } else {
            "--log-driver=passthrough"
        }
        .into(),
    );
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
    argv.push(flag("shm-size", config.shm_size.as_str()));
    argv.push("--interactive".into());
    if task.tty {
        argv.push("--tty".into());
    }
    if task.entrypoint == Entrypoint::Command {
        // The step's command runs as given, whatever ENTRYPOINT the image declares.
        argv.push("--entrypoint=".into());
    }
    for gpu in task.gpus {
        argv.push(flag("device", format!("{}={gpu}", config.gpu_cdi_kind)));
    }
    argv.push(flag("workdir", &plan.workdir));
    for m in &plan.mounts {
        argv.push(volume(&m.host, &m.container, m.read_only));
    }
    if let Some(script) = task.batch_script {
        argv.push(volume(script, script, true));
    }
    for name in forwarded_env(task.task_env_names)
        .into_iter()
        .chain(task.user_env.iter().cloned())
    {
        // By name only: values (possibly secrets) stay out of the Running: line.
        argv.push(flag("env", name));
    }
    for (name, value) in &plan.env {
        argv.push(flag("env", format!("{name}={value}")));
    }
    argv.push(plan.image.to_string().into());
    argv.extend(task.container_args().iter().cloned());
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

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::*;
    use super::*;

    use crate::rules::config::{ContainerUser, Network, PodmanConfig};
    use std::ffi::OsString;

    use std::path::Path;

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
                user_env: &[],
                entrypoint: Entrypoint::Command,
                gpus: &[],
            },
        ));
        let want = [
            "/usr/bin/podman",
            "--root=/var/lib/tre-spank/jobs/job-42/storage",
            "--runroot=/run/tre-spank/jobs/job-42/run",
            "--transient-store",
            "--storage-opt=overlay.mount_program=/usr/bin/fuse-overlayfs",
            "--storage-opt=overlay.mountopt=squash_to_root",
            "--storage-opt=additionalimagestore=/var/lib/tre-spank/images",
            "--events-backend=none",
            "run",
            "--rm",
            "--pull=never",
            "--log-driver=passthrough",
            "--sig-proxy=true",
            "--network=host",
            "--user=0:0",
            "--group-add=keep-groups",
            "--security-opt=no-new-privileges",
            "--cgroups=disabled",
            "--shm-size=1g",
            "--interactive",
            "--entrypoint=",
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
            "--env=TMPDIR=/scratch",
            "--env=TMP=/scratch",
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
                user_env: &[],
                entrypoint: Entrypoint::Command,
                gpus: &[],
            },
        ));
        assert!(got.contains(&"--volume=/var/spool/slurmd/job00042/slurm_script:/var/spool/slurmd/job00042/slurm_script:ro".into()));
        assert!(got.contains(&"--tty".to_string()));
        // podman refuses passthrough on a terminal.
        assert!(got.contains(&"--log-driver=none".to_string()));
        assert!(!got.iter().any(|a| a == "--log-driver=passthrough"));
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
                user_env: &[],
                entrypoint: Entrypoint::Command,
                gpus: &[],
            },
        ));
        assert_eq!(
            got[6..8],
            [
                "--storage-opt=additionalimagestore=/var/lib/tre-spank/images",
                "--storage-opt=additionalimagestore=/srv/images"
            ]
        );
        assert!(!got.iter().any(|a| a.contains("additionalimagestore=/home")));
        // No site store: the kernel's overlay, and only the user's own storage (a
        // site opt-in).
        let user_only = PodmanConfig {
            image_stores: Vec::new(),
            user_image_store: true,
            ..PodmanConfig::default()
        };
        let flags = strings(&storage().global_flags(&user_only));
        assert_eq!(
            flags[3..],
            ["--storage-opt=additionalimagestore=/home/alice/.local/share/containers/storage"]
        );
        // A user who never ran podman has no storage: podman would refuse to start.
        let fresh = PodmanStorage {
            user_store_exists: false,
            ..storage()
        };
        assert_eq!(fresh.global_flags(&user_only).len(), 3);
        // The exit guard's conmon, where the node has it.
        let guarded = PodmanStorage {
            conmon: Some(Path::new("/usr/libexec/tre-spank/conmon")),
            ..storage()
        };
        assert!(strings(&guarded.global_flags(&user_only))
            .contains(&"--conmon=/usr/libexec/tre-spank/conmon".to_string()));
        assert!(!strings(&storage().global_flags(&user_only))
            .iter()
            .any(|f| f.starts_with("--conmon")));
        // podman before 4.4 has no transient store: its database stays in the storage.
        let old = PodmanStorage {
            transient_store: false,
            ..storage()
        };
        assert_eq!(
            strings(&old.global_flags(&user_only)),
            [
                "--root=/var/lib/tre-spank/jobs/job-42/storage",
                "--runroot=/run/tre-spank/jobs/job-42/run",
                "--storage-opt=additionalimagestore=/home/alice/.local/share/containers/storage"
            ]
        );
        assert!(got.contains(&"--network=none".to_string()));
        assert!(got.contains(&"--userns=keep-id".to_string()));
        assert!(!got.iter().any(|a| a == "--user=0:0"
            || a.contains("keep-groups")
            || a.contains("no-new-priv")
            || a.contains("cgroups")));
    }
    #[test]
    fn the_exit_guard_is_for_podman_5_and_later() {
        assert!(podman_takes_the_exit_guard("podman version 5.0.0"));
        assert!(podman_takes_the_exit_guard("podman version 5.8.6\n"));
        assert!(!podman_takes_the_exit_guard("podman version 4.9.3"));
        assert!(!podman_takes_the_exit_guard("podman version 4.3.1"));
        assert!(!podman_takes_the_exit_guard("garbage"));
    }

    #[test]
    fn the_transient_store_is_used_from_podman_4_4_on() {
        for (line, has) in [
            ("podman version 5.4.2", true),
            ("podman version 5.8.6\n", true),
            ("podman version 4.4.0", true),
            ("podman version 4.9.3-dev", true),
            ("podman version 10.0.0", true),
            ("podman version 4.3.1", false),
            ("podman version 3.4.4", false),
            ("podman version 4", false),
            ("podman version x.y", false),
            ("Podman version 5.4.2", false),
            ("", false),
        ] {
            assert_eq!(podman_has_transient_store(line), has, "{line:?}");
        }
    }
    #[test]
    fn podman_gpus_user_env_and_image_entrypoint() {
        let argv = os(&["a b", "$HOME", "it's\nnew"]);
        let user = vec!["MY_TOKEN".to_string()];
        let t = TaskLaunch {
            user_env: &user,
            entrypoint: Entrypoint::Image,
            gpus: &[0, 2],
            ..task(&argv, &[])
        };
        let got = strings(&podman_argv(
            &plan(),
            &PodmanConfig::default(),
            &storage(),
            &t,
        ));
        assert!(!got.iter().any(|a| a.starts_with("--entrypoint")));
        let devices: Vec<&String> = got.iter().filter(|a| a.starts_with("--device")).collect();
        assert_eq!(
            devices,
            ["--device=nvidia.com/gpu=0", "--device=nvidia.com/gpu=2"]
        );
        assert!(got.contains(&"--env=MY_TOKEN".to_string()));
        // Arguments reach the runtime unchanged, after the image.
        assert_eq!(
            &got[got.len() - 4..],
            [
                "ghcr.io/mikej888/hello-tre:1.0",
                "a b",
                "$HOME",
                "it's\nnew"
            ]
        );
        // No GPUs: no device flags at all.
        let got = strings(&podman_argv(
            &plan(),
            &PodmanConfig::default(),
            &storage(),
            &task(&argv, &[]),
        ));
        assert!(!got
            .iter()
            .any(|a| a.contains("device") || a.contains("nvidia")));
    }
}
