//! Runtime command lines. Flags come from code and the site config only; nothing the
//! user typed becomes a flag (the image and the task's own argv come last).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::config::{ApptainerConfig, Config, ContainerUser, Network, PodmanConfig};
use super::image::ImageRef;
use super::plan::ContainerPlan;
use super::vocab::{Entrypoint, Runtime, RuntimeChoice};

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
    /// Variables the user forwards by name (`--tre-env`, validated).
    pub user_env: &'a [String],
    pub entrypoint: Entrypoint,
    /// Host indices of the GPUs allocated to the step; empty: no GPU flags at all.
    pub gpus: &'a [u32],
}

impl TaskLaunch<'_> {
    /// What follows the image on the runtime's command line. For the batch step
    /// under `--tre-entrypoint=image` the script itself is dropped: the image's own
    /// entrypoint gets the script's arguments (`ces-run IMAGE args`).
    pub fn container_args(&self) -> &[OsString] {
        match (self.entrypoint, self.batch_script) {
            (Entrypoint::Image, Some(_)) => self.argv.get(1..).unwrap_or(&[]),
            _ => self.argv,
        }
    }

    /// How many of the task's own arguments the runtime command line leaves out
    /// (Slurm appends them all after the prepended prefix; the supervisor drops them).
    pub fn dropped_args(&self) -> usize {
        self.argv.len() - self.container_args().len()
    }
}

/// Why a node cannot run the runtime a job chose.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeChoiceError {
    #[error("{runtime} is not offered on node {node} (this node offers: {offered})")]
    NotOffered {
        runtime: Runtime,
        node: String,
        offered: String,
    },
    #[error("{runtime} is not installed on node {node}")]
    NotInstalled { runtime: Runtime, node: String },
    #[error("no container runtime is installed on node {node} (looked for: {offered})")]
    NoneInstalled { node: String, offered: String },
}

/// The runtime for this step: the one asked for, or under `auto` the first of the
/// node's runtimes (in the site's order) that is installed.
pub fn choose_runtime(
    choice: RuntimeChoice,
    node_runtimes: &[Runtime],
    installed: &dyn Fn(Runtime) -> bool,
    node: &str,
) -> Result<Runtime, RuntimeChoiceError> {
    let offered = || {
        let names: Vec<&str> = node_runtimes.iter().map(|r| r.name()).collect();
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    };
    let node = || node.to_string();
    match choice.named() {
        Some(runtime) if !node_runtimes.contains(&runtime) => Err(RuntimeChoiceError::NotOffered {
            runtime,
            node: node(),
            offered: offered(),
        }),
        Some(runtime) if !installed(runtime) => Err(RuntimeChoiceError::NotInstalled {
            runtime,
            node: node(),
        }),
        Some(r) => Ok(r),
        None => node_runtimes
            .iter()
            .copied()
            .find(|r| installed(*r))
            .ok_or_else(|| RuntimeChoiceError::NoneInstalled {
                node: node(),
                offered: offered(),
            }),
    }
}

/// Where an approved image lives as a SIF file:
/// `<sif_dir>/<registry>/<path...>/<name>_<tag>.sif` (tag `latest` when none is
/// given), or `<name>@sha256_<hex>.sif` for a digest (the digest wins over a tag).
/// A registry port `host:5000` becomes `host_5000`. The parsed reference has no
/// empty, `.` or `..` components, so the result always lies under `sif_dir`.
pub fn sif_path(sif_dir: &Path, image: &ImageRef) -> Option<PathBuf> {
    let mut path = sif_dir.join(image.registry.replace(':', "_"));
    let (last, dirs) = image.path.split_last()?;
    for d in dirs {
        path.push(d);
    }
    let file = match (&image.digest, &image.tag) {
        (Some(hex), _) => format!("{last}@sha256_{hex}.sif"),
        (None, Some(tag)) => format!("{last}_{tag}.sif"),
        (None, None) => format!("{last}_latest.sif"),
    };
    path.push(file);
    Some(path)
}

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
}

/// Whether the podman that printed `version_line` (`podman --version`: "podman version
/// 4.3.1") has `--transient-store` (4.4 and later). Anything unreadable counts as old:
/// the command line then works with every podman, only slower.
pub fn podman_has_transient_store(version_line: &str) -> bool {
    let Some(version) = version_line.trim().strip_prefix("podman version ") else {
        return false;
    };
    let mut parts = version.split(['.', '-', '+', '~']);
    let number = |p: Option<&str>| p.and_then(|s| s.parse::<u32>().ok());
    match (number(parts.next()), number(parts.next())) {
        (Some(major), Some(minor)) => (major, minor) >= (4, 4),
        _ => false,
    }
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

/// Passed through by name when the task has them: the node's name as Slurm gives it to
/// every task (`SLURMD_NODENAME`, outside the `SLURM_*` prefix), terminal and locale.
const PASSED_BY_NAME: &[&str] = &["SLURMD_NODENAME", "TERM", "LANG", "LC_ALL", "TZ"];

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

/// Variables apptainer passes in by name: `--cleanenv` drops the task's environment,
/// and the plugin sets `APPTAINERENV_<NAME>` from the task's own value for each of
/// these (so no value appears on the command line). Slurm's variables, terminal and
/// locale settings, the user's `--tre-env` names present in the task, and with GPUs
/// Slurm's `CUDA_VISIBLE_DEVICES`.
pub fn apptainer_passed_env(task: &TaskLaunch<'_>) -> Vec<String> {
    let has = |n: &str| task.task_env_names.iter().any(|t| t == n);
    let mut names: Vec<String> = task
        .task_env_names
        .iter()
        .filter(|n| n.starts_with("SLURM_"))
        .cloned()
        .collect();
    let gpu_var = (!task.gpus.is_empty()).then_some("CUDA_VISIBLE_DEVICES");
    let wanted = PASSED_BY_NAME
        .iter()
        .copied()
        .chain(task.user_env.iter().map(String::as_str))
        .chain(gpu_var);
    for n in wanted {
        if has(n) && !names.iter().any(|m| m == n) {
            names.push(n.to_string());
        }
    }
    names
}

/// Variables of the task that would steer apptainer itself (`APPTAINER_BIND` adds
/// mounts, `APPTAINERENV_*` adds variables, and the `SINGULARITY*` spellings of both):
/// removed from the runtime's environment before it starts, so only code and the site
/// config decide its flags. Flags on apptainer's command line win over these anyway
/// for what the plugin sets; removing them covers what it does not.
///
/// Names are bytes: a value (or name) that is not UTF-8 is still seen.
pub fn apptainer_control_vars(task_env_names: &[OsString]) -> Vec<OsString> {
    task_env_names
        .iter()
        .filter(|n| {
            let n = n.as_bytes();
            n.starts_with(b"APPTAINER") || n.starts_with(b"SINGULARITY")
        })
        .cloned()
        .collect()
}

/// Variables of the task that would steer podman itself (`CONTAINERS_CONF` replaces
/// the site's containers.conf, which can add volumes; `CONTAINER_HOST` would send the
/// run to another podman; `PODMAN_USERNS` changes the user namespace): removed from
/// the runtime's environment before it starts.
/// The runtime never sees any of them anyway ([`runtime_env`] is an allow-list);
/// removing them here also keeps them out of what the task's environment shows.
pub fn podman_control_vars(task_env_names: &[OsString]) -> Vec<OsString> {
    task_env_names
        .iter()
        .filter(|n| {
            let n = n.as_bytes();
            n.starts_with(b"CONTAINERS_")
                || n.starts_with(b"PODMAN_")
                || [
                    &b"CONTAINER_HOST"[..],
                    b"CONTAINER_CONNECTION",
                    b"CONTAINER_SSHKEY",
                ]
                .contains(&n)
        })
        .cloned()
        .collect()
}

/// The fixed search path of the runtimes and their helpers (conmon, crun,
/// newuidmap, fuse-overlayfs, squashfuse): root's directories, never the job's `PATH`.
pub const RUNTIME_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What the package ships for the runtimes (docs/threat-model.md).
pub const SHIPPED_DIR: &str = "/usr/share/tre-spank";
/// `HOME` and the XDG base directories of the runtimes: an empty, root-owned directory,
/// so that no `~/.config/containers/*` (mounts.conf, containers.conf.d, storage.conf,
/// registries.conf, policy.json) or `~/.apptainer` of the user is ever read for a job.
pub const RUNTIME_HOME: &str = "/usr/share/tre-spank/runtime-home";
/// podman's containers.conf where the site has none (`podman.containers_conf`).
pub const SHIPPED_CONTAINERS_CONF: &str = "/usr/share/tre-spank/containers.conf";
/// containers/storage's configuration for job containers (the graph and run roots
/// are on the command line).
pub const SHIPPED_STORAGE_CONF: &str = "/usr/share/tre-spank/storage.conf";
/// Registries for job containers: none (jobs never pull).
pub const SHIPPED_REGISTRIES_CONF: &str = "/usr/share/tre-spank/registries.conf";

/// Whether a variable of this name steers a runtime, its libraries or helpers, or the
/// loader: podman, containers/storage and containers/common (`CONTAINERS_*`,
/// `CONTAINER_HOST` and the other remote-podman settings, `STORAGE_*`,
/// `_CONTAINERS_*`, `REGISTRY_AUTH_FILE`, `DOCKER_*`, `BUILDAH_*`), conmon, crun and
/// runc, apptainer (`APPTAINER*`, `SINGULARITY*`), Go (`GO*`), the loader (`LD_*`),
/// config lookups (`HOME`, `XDG_*`, `PATH`, `TMPDIR`), systemd's notify and
/// socket-activation sockets and the user's D-Bus. Such names are never passed
/// from the job's environment to a runtime, and `--tre-env` refuses them.
pub fn steers_runtime(name: &[u8]) -> bool {
    const PREFIXES: &[&[u8]] = &[
        b"CONTAINERS_",
        b"CONTAINER_",
        b"PODMAN",
        b"STORAGE_",
        b"_CONTAINERS",
        b"BUILDAH",
        b"DOCKER_",
        b"REGISTRY_",
        b"CONMON",
        b"CRUN",
        b"RUNC",
        b"OCI_",
        b"APPTAINER",
        b"SINGULARITY",
        b"GO",
        b"LD_",
        b"XDG_",
        b"LISTEN_",
        b"DBUS_",
        b"NOTIFY_SOCKET",
    ];
    const NAMES: &[&[u8]] = &[b"HOME", b"PATH", b"TMPDIR", b"TMP", b"TEMP", b"SHELL"];
    PREFIXES.iter().any(|p| name.starts_with(p)) || NAMES.contains(&name)
}

/// Variables of the inherited environment that `runtime_env` keeps because the plugin
/// itself set them for this task (overwriting whatever the job had).
const SET_BY_THE_PLUGIN: &[&[u8]] = &[b"XDG_RUNTIME_DIR", b"CONTAINERS_CONF"];

/// The names podman's command line passes into the container by name (`--env=NAME`,
/// or `--env=PREFIX*`), read from the runtime's flags only: the task's own
/// arguments after the image are never looked at.
fn podman_env_by_name(argv: &[OsString]) -> Vec<&[u8]> {
    argv.iter()
        .skip(1)
        .filter(|a| a.as_bytes() != b"run")
        .take_while(|a| a.as_bytes().starts_with(b"--"))
        .filter_map(|a| a.as_bytes().strip_prefix(b"--env="))
        .filter(|n| !n.contains(&b'='))
        .collect()
}

fn passes(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.strip_suffix(b"*") {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// The whole environment a runtime is started with, built from an allow-list and
/// handled as bytes (a value that is not UTF-8 is no different from any other):
/// - fixed values: [`RUNTIME_PATH`]; for podman `HOME` and the XDG base directories
///   under [`RUNTIME_HOME`] and the shipped storage and registries configuration;
///   for apptainer `HOME` is `home` (the password database's) and its user
///   configuration directory is under [`RUNTIME_HOME`];
/// - from `inherited`, only what the plugin set for this task: `XDG_RUNTIME_DIR`,
///   podman's `CONTAINERS_CONF`, apptainer's `APPTAINERENV_<NAME>` (the plugin removed
///   the job's own `APPTAINER*` variables and set these from the passed variables);
/// - for podman, the variables its `--env=NAME` flags pass into the container (Slurm's,
///   terminal and locale, the user's `--tre-env` names), except names that steer a
///   runtime ([`steers_runtime`]).
///
/// Everything else of the job's environment (`CONTAINERS_CONF_OVERRIDE`,
/// `APPTAINER_BIND`, `LD_PRELOAD`, `NOTIFY_SOCKET`, ...) never reaches the runtime.
pub fn runtime_env(
    runtime: Runtime,
    argv: &[OsString],
    inherited: &[(OsString, OsString)],
    home: &Path,
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = vec![("PATH".into(), RUNTIME_PATH.into())];
    let under_home = |rel: &str| OsString::from(format!("{RUNTIME_HOME}/{rel}"));
    match runtime {
        Runtime::Podman => {
            env.extend([
                ("HOME".into(), RUNTIME_HOME.into()),
                ("XDG_CONFIG_HOME".into(), under_home(".config")),
                ("XDG_DATA_HOME".into(), under_home(".local/share")),
                ("XDG_CACHE_HOME".into(), under_home(".cache")),
                ("XDG_STATE_HOME".into(), under_home(".local/state")),
                (
                    "CONTAINERS_STORAGE_CONF".into(),
                    SHIPPED_STORAGE_CONF.into(),
                ),
                (
                    "CONTAINERS_REGISTRIES_CONF".into(),
                    SHIPPED_REGISTRIES_CONF.into(),
                ),
            ]);
        }
        Runtime::Apptainer => {
            env.extend([
                ("HOME".into(), home.into()),
                ("APPTAINER_CONFIGDIR".into(), under_home(".apptainer")),
            ]);
        }
    }
    let by_name = match runtime {
        Runtime::Podman => podman_env_by_name(argv),
        Runtime::Apptainer => Vec::new(),
    };
    for (name, value) in inherited {
        let n = name.as_bytes();
        let keep = SET_BY_THE_PLUGIN.contains(&n)
            && (runtime == Runtime::Podman || n != b"CONTAINERS_CONF")
            || (runtime == Runtime::Apptainer && n.starts_with(b"APPTAINERENV_"))
            || (!steers_runtime(n) && by_name.iter().any(|p| passes(p, n)));
        if keep && !env.iter().any(|(k, _)| k == name) {
            env.push((name.clone(), value.clone()));
        }
    }
    env
}

/// Working directory under apptainer: the submission directory when it is visible in
/// the container (home mounted and the directory inside it), else `/scratch`.
pub fn apptainer_workdir(
    plan: &ContainerPlan,
    config: &ApptainerConfig,
    home: &Path,
    cwd: Option<&Path>,
) -> PathBuf {
    match cwd {
        Some(c) if config.mount_home && c.is_absolute() && c.starts_with(home) => c.to_path_buf(),
        _ => plan.workdir.clone(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApptainerError {
    #[error("cannot bind {0}: apptainer's --bind cannot express a path containing ',' or ':'")]
    UnbindablePath(String),
}

/// The NVIDIA control devices a GPU needs besides its own `/dev/nvidiaN`. A step with
/// GPUs gets those of them that exist on the node (the SPANK layer looks), as the
/// `containerEdits` of a CDI spec give them to podman.
pub const NVIDIA_CONTROL_DEVICES: [&str; 4] = [
    "/dev/nvidiactl",
    "/dev/nvidia-uvm",
    "/dev/nvidia-uvm-tools",
    "/dev/nvidia-modeset",
];

/// The node's hosts file, which apptainer jobs get read-only (podman jobs get podman's
/// copy of it).
pub const NODE_HOSTS: &str = "/etc/hosts";

/// The device node of the GPU with host index `index` (Slurm's `SLURM_STEP_GPUS`
/// numbering, the same index podman's CDI name `nvidia.com/gpu=N` uses).
pub fn gpu_device(index: u32) -> PathBuf {
    PathBuf::from(format!("/dev/nvidia{index}"))
}

/// The apptainer command line. Images come from SIF files only (a path, never a
/// `docker://` URI, so nothing is ever pulled); the user keeps their uid.
/// `gpu_control`: the [`NVIDIA_CONTROL_DEVICES`] present on the node, bound only
/// for a step with GPUs.
pub fn apptainer_argv(
    plan: &ContainerPlan,
    config: &ApptainerConfig,
    sif: &Path,
    workdir: &Path,
    home: &Path,
    gpu_control: &[PathBuf],
    task: &TaskLaunch<'_>,
) -> Result<Vec<OsString>, ApptainerError> {
    let mut argv: Vec<OsString> = vec![config.path.clone().into()];
    argv.push(
        match task.entrypoint {
            Entrypoint::Command => "exec",
            Entrypoint::Image => "run",
        }
        .into(),
    );
    argv.push("--cleanenv".into());
    // Values (and arguments) reach the container as they are: no shell evaluation.
    argv.push("--no-eval".into());
    if config.userns {
        argv.push("--userns".into());
    }
    // What podman gives: a minimal /dev, an empty /tmp and /var/tmp of the container's
    // own, no host file systems, no current directory. `bind-paths`: none of the
    // `bind path` entries of apptainer.conf, and not the node's /etc/hosts and
    // /etc/localtime, which --contain alone still binds (apptainer 1.4); a site
    // that wants host files in jobs lists them in `site_mounts` (rules::plan), for
    // both runtimes. Home is bound only while mount_home is on.
    argv.push("--contain".into());
    argv.push(if config.mount_home {
        "--no-mount=cwd,hostfs,bind-paths".into()
    } else {
        "--no-mount=home,cwd,hostfs,bind-paths".into()
    });
    // Not even where apptainer.conf says `always use nv` or `always use rocm`: those
    // bind every GPU device node of the node. `apptainer.nv`: the site takes that for
    // the driver libraries, for steps with GPUs only.
    let nv = config.nv && !task.gpus.is_empty();
    argv.push(if nv { "--nv" } else { "--no-nv" }.into());
    argv.push("--no-rocm".into());
    if config.mount_home {
        argv.push(home_flag(home)?);
    }
    // podman writes its own /etc/hosts from the node's: apptainer gets the node's
    // file, read-only (unless the site mounts one itself).
    let hosts = Path::new(NODE_HOSTS);
    if !plan.mounts.iter().any(|m| m.container == hosts) {
        argv.push(bind(hosts, hosts, true)?);
    }
    // The step's GPUs only, as podman's --device=nvidia.com/gpu=N: never --nv, which
    // binds every /dev/nvidia* of the node.
    if !task.gpus.is_empty() && !nv {
        for gpu in task.gpus {
            let dev = gpu_device(*gpu);
            argv.push(bind(&dev, &dev, false)?);
        }
        for dev in gpu_control {
            argv.push(bind(dev, dev, false)?);
        }
    }
    argv.push(flag("pwd", workdir));
    for m in &plan.mounts {
        argv.push(bind(&m.host, &m.container, m.read_only)?);
    }
    if let Some(script) = task.batch_script {
        argv.push(bind(script, script, true)?);
    }
    for (name, value) in &plan.env {
        argv.push(flag("env", format!("{name}={value}")));
    }
    argv.push(sif.into());
    argv.extend(task.container_args().iter().cloned());
    Ok(argv)
}

/// `--home=HOME`: with `--contain`, only a home given by name is bound.
fn home_flag(home: &Path) -> Result<OsString, ApptainerError> {
    if home.as_os_str().as_bytes().contains(&b':') {
        return Err(ApptainerError::UnbindablePath(home.display().to_string()));
    }
    Ok(flag("home", home))
}

fn bind(host: &Path, container: &Path, read_only: bool) -> Result<OsString, ApptainerError> {
    for p in [host, container] {
        if p.as_os_str()
            .as_bytes()
            .iter()
            .any(|b| *b == b',' || *b == b':')
        {
            return Err(ApptainerError::UnbindablePath(p.display().to_string()));
        }
    }
    let mut v = OsString::from("--bind=");
    v.push(host);
    v.push(":");
    v.push(container);
    if read_only {
        v.push(":ro");
    }
    Ok(v)
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
/// `prefix` is the runtime command line without the task's own arguments (Slurm
/// appends those); `dropped` of them, right after the prefix, are removed by the tool
/// (see [`TaskLaunch::dropped_args`]).
pub fn supervised_argv(
    tool: &Path,
    image: &ImageRef,
    runtime: Runtime,
    dropped: usize,
    prefix: Vec<OsString>,
) -> Vec<OsString> {
    let mut argv: Vec<OsString> = vec![
        tool.into(),
        "launch".into(),
        "--image".into(),
        image.to_string().into(),
        "--runtime".into(),
        runtime.name().into(),
    ];
    if dropped > 0 {
        argv.extend([
            "--drop-args".into(),
            format!("{},{dropped}", prefix.len()).into(),
        ]);
    }
    argv.push("--".into());
    argv.extend(prefix);
    argv
}

/// How one task's container is reached: podman with the job's storage, or apptainer
/// with the image's SIF file and the working directory inside.
pub enum Target<'a> {
    Podman(PodmanStorage<'a>),
    Apptainer {
        sif: &'a Path,
        workdir: &'a Path,
        /// The user's home (the password database's), bound while `mount_home` is on.
        home: &'a Path,
        /// The [`NVIDIA_CONTROL_DEVICES`] that exist on the node.
        gpu_control: &'a [PathBuf],
    },
}

/// One task's commands: what the `Running:` line shows, and what slurmstepd prepends
/// to the task's argv (the supervised runtime command without the task's own args,
/// which Slurm keeps after it).
pub struct JobCommand {
    pub runtime_argv: Vec<OsString>,
    pub task_prefix: Vec<OsString>,
}

/// The whole command for one task under the `tre-spank launch` supervisor.
/// slurmstepd and `tre-spank plan` both call this.
pub fn job_command(
    config: &Config,
    plan: &ContainerPlan,
    target: &Target<'_>,
    task: &TaskLaunch<'_>,
) -> Result<JobCommand, ApptainerError> {
    let runtime_argv = match target {
        Target::Podman(storage) => podman_argv(plan, &config.podman, storage, task),
        Target::Apptainer {
            sif,
            workdir,
            home,
            gpu_control,
        } => apptainer_argv(
            plan,
            &config.apptainer,
            sif,
            workdir,
            home,
            gpu_control,
            task,
        )?,
    };
    let kept = task.container_args().len();
    let task_prefix = supervised_argv(
        &config.tool_path,
        &plan.image,
        plan.runtime,
        task.dropped_args(),
        runtime_argv[..runtime_argv.len() - kept].to_vec(),
    );
    Ok(JobCommand {
        runtime_argv,
        task_prefix,
    })
}

/// The variable that holds the step's GPUs. The environment is the user's, so only a
/// variable slurmstepd's gres/gpu plugin always rewrites is trusted: for the batch
/// step `SLURM_JOB_GPUS` (set when the job has GPUs, removed otherwise; a user's
/// `SLURM_STEP_GPUS` survives there), for other steps `SLURM_STEP_GPUS` (set or
/// removed per step; a user's `SLURM_JOB_GPUS` survives there). Checked in the bed
/// with Slurm 26.05 and 24.11.
pub fn gpu_list_variable(is_batch: bool) -> &'static str {
    if is_batch {
        "SLURM_JOB_GPUS"
    } else {
        "SLURM_STEP_GPUS"
    }
}

/// Strict parse of Slurm's GPU index list (`SLURM_STEP_GPUS` / `SLURM_JOB_GPUS`,
/// e.g. `0,2`). Anything else (ranges, names, empty items) means no GPUs: a bad
/// value never becomes a flag.
pub fn parse_gpu_list(value: Option<&str>) -> Vec<u32> {
    let Some(v) = value.filter(|v| !v.is_empty()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for item in v.split(',') {
        if item.is_empty() || item.len() > 4 || !item.bytes().all(|b| b.is_ascii_digit()) {
            return Vec::new();
        }
        match item.parse::<u32>() {
            Ok(n) if !out.contains(&n) => out.push(n),
            Ok(_) => {}
            Err(_) => return Vec::new(),
        }
    }
    out
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

/// The runtime's documented statuses (a command's own `exit 125` looks the same; the
/// message says what the runtime means by it). podman: 125-127; apptainer: 255 for
/// its own fatal errors (including a command missing from the image).
pub fn diagnose_runtime_exit(runtime: Runtime, code: i32) -> Option<RuntimeFailure> {
    match (runtime, code) {
        (Runtime::Podman, 125) | (Runtime::Apptainer, 255) => Some(RuntimeFailure::RuntimeError),
        (Runtime::Podman, 126) => Some(RuntimeFailure::CannotExecute),
        (Runtime::Podman, 127) => Some(RuntimeFailure::NotFound),
        _ => None,
    }
}

/// The site stores a podman command line reads (its `additionalimagestore` options,
/// before `run`).
pub fn image_stores_of(argv: &[OsString]) -> Vec<PathBuf> {
    argv.iter()
        .take_while(|a| *a != "run")
        .filter_map(|a| {
            a.as_bytes()
                .strip_prefix(b"--storage-opt=additionalimagestore=")
                .map(|s| PathBuf::from(OsStr::from_bytes(s)))
        })
        .collect()
}

/// The job's message when podman did not find the image: it names the image and every
/// store the failed command looked in (its `additionalimagestore` options), so that
/// users and administrators know where the image was expected.
pub fn missing_image_message(image: &str, argv: &[OsString]) -> String {
    let stores: Vec<String> = image_stores_of(argv)
        .iter()
        .map(|s| s.display().to_string())
        .collect();
    let looked = if stores.is_empty() {
        "no image store is configured on this node".to_string()
    } else {
        format!("looked in {}", stores.join(", "))
    };
    format!(
        "tre-spank: image {image} is not on this node: images reach the nodes only through the site's approved process, and jobs never pull ({looked}; ask your TRE administrators to approve it)"
    )
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
    use crate::rules::plan::{container_plan, JobDirs};
    use crate::rules::project::{Project, Resolution, SafeData};
    use std::os::unix::ffi::OsStringExt;

    fn plan() -> ContainerPlan {
        let r = Resolution {
            safe_data: SafeData::ProjectDir("/safe_data/proj1".into()),
            project: Some(Project {
                name: "proj1".into(),
                group: "proj1".into(),
            }),
            reason: String::new(),
            read_only: false,
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
            run_dir: Path::new("/run/tre-spank/jobs/job-42"),
            home: Path::new("/home/alice"),
            user_store_exists: true,
            transient_store: true,
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
    fn missing_image_message_names_the_stores_looked_in() {
        let argv = storage().global_flags(&PodmanConfig {
            user_image_store: true,
            ..PodmanConfig::default()
        });
        let mut full = vec![OsString::from("/usr/bin/podman")];
        full.extend(argv);
        full.extend(os(&[
            "run",
            "--storage-opt=additionalimagestore=/not/this",
            "x",
        ]));
        assert_eq!(
            missing_image_message("ghcr.io/a/b:1", &full),
            "tre-spank: image ghcr.io/a/b:1 is not on this node: images reach the nodes only through the site's approved process, and jobs never pull (looked in /var/lib/tre-spank/images, /home/alice/.local/share/containers/storage; ask your TRE administrators to approve it)"
        );
        assert!(
            missing_image_message("ghcr.io/a/b:1", &os(&["podman", "run"]))
                .contains("(no image store is configured on this node;")
        );
    }

    #[test]
    fn only_slurm_and_terminal_variables_are_forwarded() {
        let names: Vec<String> = [
            "HOME",
            "PATH",
            "AWS_SECRET",
            "TERM",
            "LANG",
            "SLURMD_NODENAME",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            forwarded_env(&names),
            vec!["SLURM_*", "SLURMD_NODENAME", "TERM", "LANG"]
        );
        assert_eq!(forwarded_env(&[]), vec!["SLURM_*"]);
    }

    fn task<'a>(argv: &'a [OsString], names: &'a [String]) -> TaskLaunch<'a> {
        TaskLaunch {
            argv,
            batch_script: None,
            task_env_names: names,
            tty: false,
            user_env: &[],
            entrypoint: Entrypoint::Command,
            gpus: &[],
        }
    }

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
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

    #[test]
    fn batch_step_with_image_entrypoint_passes_only_the_script_arguments() {
        let script = Path::new("/var/spool/slurmd/job00042/slurm_script");
        let argv = os(&["/var/spool/slurmd/job00042/slurm_script", "x", "y z"]);
        let t = TaskLaunch {
            batch_script: Some(script),
            entrypoint: Entrypoint::Image,
            ..task(&argv, &[])
        };
        assert_eq!(t.container_args(), &argv[1..]);
        assert_eq!(t.dropped_args(), 1);
        let t = TaskLaunch {
            entrypoint: Entrypoint::Command,
            ..t
        };
        assert_eq!(t.container_args(), &argv[..]);
        assert_eq!(t.dropped_args(), 0);
        // srun steps: every argument goes to the image's entrypoint.
        let t = TaskLaunch {
            entrypoint: Entrypoint::Image,
            ..task(&argv, &[])
        };
        assert_eq!(t.dropped_args(), 0);
    }

    #[test]
    fn supervised_command_line_says_what_to_drop() {
        let image = ImageRef::parse("ghcr.io/mikej888/hello-tre:1.0").unwrap();
        let got = strings(&supervised_argv(
            Path::new("/usr/sbin/tre-spank"),
            &image,
            Runtime::Apptainer,
            1,
            os(&["apptainer", "run", "/x.sif"]),
        ));
        assert_eq!(
            got,
            [
                "/usr/sbin/tre-spank",
                "launch",
                "--image",
                "ghcr.io/mikej888/hello-tre:1.0",
                "--runtime",
                "apptainer",
                "--drop-args",
                "3,1",
                "--",
                "apptainer",
                "run",
                "/x.sif"
            ]
        );
        let got = strings(&supervised_argv(
            Path::new("/t"),
            &image,
            Runtime::Podman,
            0,
            os(&["podman"]),
        ));
        assert_eq!(
            got,
            [
                "/t",
                "launch",
                "--image",
                "ghcr.io/mikej888/hello-tre:1.0",
                "--runtime",
                "podman",
                "--",
                "podman"
            ]
        );
    }

    fn app_plan() -> ContainerPlan {
        let mut p = plan();
        p.runtime = Runtime::Apptainer;
        p
    }

    const SIF: &str = "/var/lib/tre-spank/sif/ghcr.io/mikej888/hello-tre_1.0.sif";

    #[test]
    fn apptainer_srun_command_line() {
        let argv = os(&["cat", "/safe_data/README.txt"]);
        let names: Vec<String> = ["SLURM_JOB_ID", "AWS_SECRET", "TERM", "MY_VAR"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let t = task(&argv, &names);
        let got = strings(
            &apptainer_argv(
                &app_plan(),
                &ApptainerConfig::default(),
                Path::new(SIF),
                Path::new("/home/alice/work"),
                Path::new("/home/alice"),
                &[],
                &t,
            )
            .unwrap(),
        );
        let want = [
            "/usr/bin/apptainer",
            "exec",
            "--cleanenv",
            "--no-eval",
            "--userns",
            "--contain",
            "--no-mount=cwd,hostfs,bind-paths",
            "--no-nv",
            "--no-rocm",
            "--home=/home/alice",
            "--bind=/etc/hosts:/etc/hosts:ro",
            "--pwd=/home/alice/work",
            "--bind=/safe_data/proj1:/safe_data",
            "--bind=/home/alice/outputs-1234567:/safe_outputs",
            "--bind=/home/alice/scratch-1234567:/scratch",
            "--env=TRE_OUTPUTS_DIR=/safe_outputs",
            "--env=TRE_SCRATCH_DIR=/scratch",
            "--env=TRE_SAFE_DATA=/safe_data",
            "--env=TRE_PROJECT=proj1",
            "--env=TRE_CONTAINER=ghcr.io/mikej888/hello-tre:1.0",
            "--env=TRE_IN_CONTAINER=1",
            "--env=TMPDIR=/scratch",
            "--env=TMP=/scratch",
            SIF,
            "cat",
            "/safe_data/README.txt",
        ];
        assert_eq!(got, want);
        assert!(!got
            .iter()
            .any(|a| a.contains("docker://") || a.contains("pull")));
        // Passed by name through APPTAINERENV_ (values never on the command line).
        assert_eq!(apptainer_passed_env(&t), ["SLURM_JOB_ID", "TERM"]);
        let user = vec!["MY_VAR".to_string(), "ABSENT".to_string()];
        let t = TaskLaunch {
            user_env: &user,
            ..task(&argv, &names)
        };
        assert_eq!(apptainer_passed_env(&t), ["SLURM_JOB_ID", "TERM", "MY_VAR"]);
    }

    fn batch_argv(
        cfg: &ApptainerConfig,
        gpu_control: &[PathBuf],
        t: &TaskLaunch<'_>,
    ) -> Vec<String> {
        strings(
            &apptainer_argv(
                &app_plan(),
                cfg,
                Path::new(SIF),
                Path::new("/scratch"),
                Path::new("/home/alice"),
                gpu_control,
                t,
            )
            .unwrap(),
        )
    }

    #[test]
    fn apptainer_batch_home_off_gpus_and_image_entrypoint() {
        let script = Path::new("/var/spool/slurmd/job00042/slurm_script");
        let argv = os(&["/var/spool/slurmd/job00042/slurm_script", "arg 1"]);
        let names = vec![
            "CUDA_VISIBLE_DEVICES".to_string(),
            "SLURM_JOB_GPUS".to_string(),
        ];
        let cfg = ApptainerConfig {
            mount_home: false,
            userns: false,
            ..ApptainerConfig::default()
        };
        let t = TaskLaunch {
            batch_script: Some(script),
            entrypoint: Entrypoint::Image,
            gpus: &[1],
            ..task(&argv, &names)
        };
        let control = [
            PathBuf::from("/dev/nvidiactl"),
            PathBuf::from("/dev/nvidia-uvm"),
        ];
        let got = batch_argv(&cfg, &control, &t);
        assert_eq!(
            got[..13],
            [
                "/usr/bin/apptainer",
                "run",
                "--cleanenv",
                "--no-eval",
                "--contain",
                "--no-mount=home,cwd,hostfs,bind-paths",
                "--no-nv",
                "--no-rocm",
                "--bind=/etc/hosts:/etc/hosts:ro",
                "--bind=/dev/nvidia1:/dev/nvidia1",
                "--bind=/dev/nvidiactl:/dev/nvidiactl",
                "--bind=/dev/nvidia-uvm:/dev/nvidia-uvm",
                "--pwd=/scratch"
            ]
        );
        // Never --nv: it binds every /dev/nvidia* of the node.
        assert!(!got.iter().any(|a| a == "--nv" || a == "--nvccli"));
        assert!(got.contains(&format!("--bind={0}:{0}:ro", script.display())));
        assert_eq!(&got[got.len() - 2..], [SIF, "arg 1"]);
        assert_eq!(
            apptainer_passed_env(&t),
            ["SLURM_JOB_GPUS", "CUDA_VISIBLE_DEVICES"]
        );
        // Two GPUs: both device nodes, in the step's order.
        let t2 = TaskLaunch { gpus: &[0, 3], ..t };
        let got = batch_argv(&cfg, &[], &t2);
        assert_eq!(
            got[9..11],
            [
                "--bind=/dev/nvidia0:/dev/nvidia0",
                "--bind=/dev/nvidia3:/dev/nvidia3"
            ]
        );
        // Without GPUs: no device at all (not even the control devices the node
        // has), and CUDA_VISIBLE_DEVICES is not passed.
        let t = TaskLaunch { gpus: &[], ..t };
        let got = batch_argv(&cfg, &control, &t);
        assert!(!got
            .iter()
            .any(|a| a.contains("/dev/") || a == "--nv" || a == "--nvccli"));
        assert_eq!(apptainer_passed_env(&t), ["SLURM_JOB_GPUS"]);
    }

    #[test]
    fn apptainer_nv_is_the_sites_choice_and_only_for_steps_with_gpus() {
        let argv = os(&["true"]);
        let cfg = ApptainerConfig {
            nv: true,
            ..ApptainerConfig::default()
        };
        let control = [PathBuf::from("/dev/nvidiactl")];
        let gpu = TaskLaunch {
            gpus: &[1],
            ..task(&argv, &[])
        };
        let got = batch_argv(&cfg, &control, &gpu);
        // --nv binds the devices (all of them) and the driver libraries itself.
        assert!(got.contains(&"--nv".to_string()), "{got:?}");
        assert!(!got.iter().any(|a| a == "--no-nv" || a.contains("/dev/")));
        // Without GPUs nothing changes: --no-nv, no device.
        let none = task(&argv, &[]);
        let got = batch_argv(&cfg, &control, &none);
        assert!(got.contains(&"--no-nv".to_string()));
        assert!(!got.iter().any(|a| a == "--nv" || a.contains("/dev/")));
        // The default: the step's device nodes, never --nv.
        let got = batch_argv(&ApptainerConfig::default(), &control, &gpu);
        assert!(got.contains(&"--no-nv".to_string()));
        assert!(got.contains(&"--bind=/dev/nvidia1:/dev/nvidia1".to_string()));
    }

    #[test]
    fn apptainer_gets_site_mounts_read_only_and_one_hosts_file() {
        let mut p = app_plan();
        p.mounts
            .extend(crate::rules::plan::site_mounts(&["/etc/localtime".into()]));
        let got = batch_argv(&ApptainerConfig::default(), &[], &task(&[], &[]));
        assert!(got.contains(&"--bind=/etc/hosts:/etc/hosts:ro".to_string()));
        let got = strings(
            &apptainer_argv(
                &p,
                &ApptainerConfig::default(),
                Path::new(SIF),
                Path::new("/scratch"),
                Path::new("/home/alice"),
                &[],
                &task(&[], &[]),
            )
            .unwrap(),
        );
        assert!(got.contains(&"--bind=/etc/localtime:/etc/localtime:ro".to_string()));
        // A site that mounts /etc/hosts itself: that one only.
        p.mounts
            .extend(crate::rules::plan::site_mounts(&["/etc/hosts".into()]));
        let got = strings(
            &apptainer_argv(
                &p,
                &ApptainerConfig::default(),
                Path::new(SIF),
                Path::new("/scratch"),
                Path::new("/home/alice"),
                &[],
                &task(&[], &[]),
            )
            .unwrap(),
        );
        assert_eq!(got.iter().filter(|a| a.contains("/etc/hosts")).count(), 1);
    }

    #[test]
    fn apptainer_refuses_paths_its_bind_syntax_cannot_express() {
        let mut p = app_plan();
        p.mounts[1].host = "/home/a,b/outputs-1".into();
        let e = apptainer_argv(
            &p,
            &ApptainerConfig::default(),
            Path::new(SIF),
            Path::new("/scratch"),
            Path::new("/home/alice"),
            &[],
            &task(&[], &[]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("/home/a,b/outputs-1"), "{e}");
        p.mounts[1].host = "/home/a:b/outputs-1".into();
        assert!(apptainer_argv(
            &p,
            &ApptainerConfig::default(),
            Path::new(SIF),
            Path::new("/scratch"),
            Path::new("/home/alice"),
            &[],
            &task(&[], &[])
        )
        .is_err());
        // A home apptainer's --home cannot express.
        assert!(apptainer_argv(
            &app_plan(),
            &ApptainerConfig::default(),
            Path::new(SIF),
            Path::new("/scratch"),
            Path::new("/home/a:b"),
            &[],
            &task(&[], &[])
        )
        .is_err());
    }

    #[test]
    fn variables_that_steer_podman_are_removed() {
        let names: Vec<OsString> = [
            "CONTAINERS_CONF",
            "CONTAINERS_CONF_OVERRIDE",
            "CONTAINER_HOST",
            "PODMAN_USERNS",
            "HOME",
            "MY_CONTAINERS_CONF",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        assert_eq!(
            podman_control_vars(&names),
            [
                "CONTAINERS_CONF",
                "CONTAINERS_CONF_OVERRIDE",
                "CONTAINER_HOST",
                "PODMAN_USERNS"
            ]
        );
    }

    #[test]
    fn variables_that_steer_apptainer_are_removed() {
        let names: Vec<OsString> = [
            "APPTAINER_BIND",
            "APPTAINERENV_X",
            "SINGULARITY_BIND",
            "SINGULARITYENV_Y",
            "APPTAINER_NO_MOUNT",
            "HOME",
            "SLURM_JOB_ID",
            "MY_APPTAINER",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        assert_eq!(
            apptainer_control_vars(&names),
            [
                "APPTAINER_BIND",
                "APPTAINERENV_X",
                "SINGULARITY_BIND",
                "SINGULARITYENV_Y",
                "APPTAINER_NO_MOUNT"
            ]
        );
    }

    fn bytes(b: &[u8]) -> OsString {
        OsString::from_vec(b.to_vec())
    }

    #[test]
    fn control_variables_are_found_whatever_their_bytes() {
        let names = vec![
            bytes(b"CONTAINERS_CONF_OVERRIDE"),
            bytes(b"APPTAINER_BIND"),
            bytes(b"APPTAINER\xffX"),
            bytes(b"SLURM_JOB_ID"),
        ];
        assert_eq!(
            podman_control_vars(&names),
            [bytes(b"CONTAINERS_CONF_OVERRIDE")]
        );
        assert_eq!(
            apptainer_control_vars(&names),
            [bytes(b"APPTAINER_BIND"), bytes(b"APPTAINER\xffX")]
        );
    }

    fn env_of(pairs: &[(&[u8], &[u8])]) -> Vec<(OsString, OsString)> {
        pairs.iter().map(|(k, v)| (bytes(k), bytes(v))).collect()
    }

    fn value<'a>(env: &'a [(OsString, OsString)], name: &str) -> Option<&'a [u8]> {
        env.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_bytes())
    }

    #[test]
    fn podman_gets_an_allow_listed_environment() {
        let argv = os(&[
            "/usr/bin/podman",
            "--root=/run/tre-spank/job-1/storage",
            "run",
            "--rm",
            "--env=SLURM_*",
            "--env=TERM",
            "--env=MY_VAR",
            "--env=TRE_OUTPUTS_DIR=/safe_outputs",
            "ghcr.io/mikej888/hello-tre:1.0",
            "--env=LD_PRELOAD",
            "--env=OTHER",
        ]);
        let inherited = env_of(&[
            (b"CONTAINERS_CONF_OVERRIDE", b"/home/alice/\xff/o.conf"),
            (b"CONTAINERS_CONF", b"/etc/containers/containers.conf"),
            (b"XDG_RUNTIME_DIR", b"/run/tre-spank/job-1"),
            (b"XDG_CONFIG_HOME", b"/home/alice/.config"),
            (b"HOME", b"/home/alice"),
            (b"PATH", b"/home/alice/bin:/usr/bin"),
            (b"LD_PRELOAD", b"/home/alice/evil.so"),
            (b"NOTIFY_SOCKET", b"/home/alice/sock"),
            (b"CONTAINER_HOST", b"unix:///home/alice/podman.sock"),
            (b"SLURM_JOB_ID", b"7"),
            (b"SLURM_X", b"\xff"),
            (b"TERM", b"xterm"),
            (b"MY_VAR", b"secret"),
            (b"OTHER", b"x"),
            (b"TRE_OUTPUTS_DIR", b"/elsewhere"),
        ]);
        let env = runtime_env(Runtime::Podman, &argv, &inherited, Path::new(""));
        let names: Vec<&[u8]> = env.iter().map(|(k, _)| k.as_bytes()).collect();
        assert_eq!(
            names,
            [
                &b"PATH"[..],
                b"HOME",
                b"XDG_CONFIG_HOME",
                b"XDG_DATA_HOME",
                b"XDG_CACHE_HOME",
                b"XDG_STATE_HOME",
                b"CONTAINERS_STORAGE_CONF",
                b"CONTAINERS_REGISTRIES_CONF",
                b"CONTAINERS_CONF",
                b"XDG_RUNTIME_DIR",
                b"SLURM_JOB_ID",
                b"SLURM_X",
                b"TERM",
                b"MY_VAR",
            ]
        );
        assert_eq!(value(&env, "PATH"), Some(RUNTIME_PATH.as_bytes()));
        assert_eq!(value(&env, "HOME"), Some(RUNTIME_HOME.as_bytes()));
        assert_eq!(
            value(&env, "XDG_CONFIG_HOME"),
            Some(b"/usr/share/tre-spank/runtime-home/.config".as_slice())
        );
        assert_eq!(value(&env, "SLURM_X"), Some(b"\xff".as_slice()));
        assert_eq!(
            value(&env, "CONTAINERS_CONF"),
            Some(b"/etc/containers/containers.conf".as_slice())
        );
    }

    #[test]
    fn apptainer_gets_an_allow_listed_environment() {
        let argv = os(&["/usr/bin/apptainer", "exec", "--cleanenv", "/x.sif", "id"]);
        let inherited = env_of(&[
            (b"APPTAINER_BIND", b"/etc:/hostetc,/home/alice/\xff:/x"),
            (b"SINGULARITY_BIND", b"/etc:/hostetc"),
            (b"APPTAINERENV_SLURM_JOB_ID", b"7"),
            (b"APPTAINERENV_MY_VAR", b"\xff"),
            (b"APPTAINER_CONFIGDIR", b"/home/alice/.x"),
            (b"CONTAINERS_CONF", b"/home/alice/c.conf"),
            (b"XDG_RUNTIME_DIR", b"/run/tre-spank/job-1"),
            (b"HOME", b"/tmp/elsewhere"),
            (b"SLURM_JOB_ID", b"7"),
            (b"LD_LIBRARY_PATH", b"/home/alice/lib"),
        ]);
        let env = runtime_env(
            Runtime::Apptainer,
            &argv,
            &inherited,
            Path::new("/home/alice"),
        );
        let names: Vec<&[u8]> = env.iter().map(|(k, _)| k.as_bytes()).collect();
        assert_eq!(
            names,
            [
                &b"PATH"[..],
                b"HOME",
                b"APPTAINER_CONFIGDIR",
                b"APPTAINERENV_SLURM_JOB_ID",
                b"APPTAINERENV_MY_VAR",
                b"XDG_RUNTIME_DIR",
            ]
        );
        assert_eq!(value(&env, "HOME"), Some(b"/home/alice".as_slice()));
        assert_eq!(
            value(&env, "APPTAINER_CONFIGDIR"),
            Some(b"/usr/share/tre-spank/runtime-home/.apptainer".as_slice())
        );
    }

    #[test]
    fn names_that_steer_a_runtime() {
        for n in [
            "CONTAINERS_CONF_OVERRIDE",
            "CONTAINER_HOST",
            "PODMAN_USERNS",
            "STORAGE_OPTS",
            "_CONTAINERS_USERNS_CONFIGURED",
            "APPTAINER_BIND",
            "SINGULARITYENV_X",
            "LD_PRELOAD",
            "GODEBUG",
            "XDG_CONFIG_HOME",
            "HOME",
            "PATH",
            "NOTIFY_SOCKET",
            "LISTEN_FDS",
            "DBUS_SESSION_BUS_ADDRESS",
            "REGISTRY_AUTH_FILE",
        ] {
            assert!(steers_runtime(n.as_bytes()), "{n}");
        }
        for n in [
            "SLURM_JOB_ID",
            "TERM",
            "LANG",
            "MY_VAR",
            "OMP_NUM_THREADS",
            "HOMEDIR",
        ] {
            assert!(!steers_runtime(n.as_bytes()), "{n}");
        }
    }

    #[test]
    fn apptainer_workdir_is_the_submission_dir_only_when_home_is_mounted() {
        let p = app_plan();
        let on = ApptainerConfig::default();
        let off = ApptainerConfig {
            mount_home: false,
            ..ApptainerConfig::default()
        };
        let home = Path::new("/home/alice");
        let wd = |c: &ApptainerConfig, cwd: Option<&str>| {
            apptainer_workdir(&p, c, home, cwd.map(Path::new))
        };
        assert_eq!(
            wd(&on, Some("/home/alice/proj")),
            PathBuf::from("/home/alice/proj")
        );
        assert_eq!(wd(&on, Some("/home/alice")), PathBuf::from("/home/alice"));
        assert_eq!(wd(&on, Some("/home/alicex")), PathBuf::from("/scratch"));
        assert_eq!(wd(&on, Some("/tmp")), PathBuf::from("/scratch"));
        assert_eq!(wd(&on, None), PathBuf::from("/scratch"));
        assert_eq!(
            wd(&off, Some("/home/alice/proj")),
            PathBuf::from("/scratch")
        );
    }

    #[test]
    fn sif_files_are_named_from_the_reference() {
        let dir = Path::new("/var/lib/tre-spank/sif");
        let sif = |r: &str| {
            sif_path(dir, &ImageRef::parse(r).unwrap())
                .unwrap()
                .display()
                .to_string()
        };
        assert_eq!(
            sif("ghcr.io/mikej888/hello-tre:1.0"),
            "/var/lib/tre-spank/sif/ghcr.io/mikej888/hello-tre_1.0.sif"
        );
        assert_eq!(
            sif("GHCR.IO/org/team/tool"),
            "/var/lib/tre-spank/sif/ghcr.io/org/team/tool_latest.sif"
        );
        let hex = "0123456789abcdef".repeat(4);
        assert_eq!(
            sif(&format!("ghcr.io/org/tool:2.0@sha256:{hex}")),
            format!("/var/lib/tre-spank/sif/ghcr.io/org/tool@sha256_{hex}.sif")
        );
        assert_eq!(
            sif("registry.example.org:5000/a/b:v1"),
            "/var/lib/tre-spank/sif/registry.example.org_5000/a/b_v1.sif"
        );
        // Never outside the directory: no component is empty, "." or "..".
        for r in [
            "ghcr.io/a/b:1",
            "ghcr.io/a.b/c.d:x..y",
            "ghcr.io/a__b/c-d:_x",
        ] {
            let p = sif_path(dir, &ImageRef::parse(r).unwrap()).unwrap();
            assert!(p.starts_with(dir));
            assert!(p.components().all(|c| matches!(
                c,
                std::path::Component::RootDir | std::path::Component::Normal(_)
            )));
        }
        for bad in ["ghcr.io/../x:1", "ghcr.io/a/./b", "ghcr.io//b"] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn runtime_choice_follows_the_node() {
        let both = [Runtime::Podman, Runtime::Apptainer];
        let all = |_: Runtime| true;
        let only_apptainer = |r: Runtime| r == Runtime::Apptainer;
        let none = |_: Runtime| false;
        assert_eq!(
            choose_runtime(RuntimeChoice::Auto, &both, &all, "n1"),
            Ok(Runtime::Podman)
        );
        assert_eq!(
            choose_runtime(RuntimeChoice::Auto, &both, &only_apptainer, "n1"),
            Ok(Runtime::Apptainer)
        );
        assert_eq!(
            choose_runtime(
                RuntimeChoice::Auto,
                &[Runtime::Apptainer, Runtime::Podman],
                &all,
                "n1"
            ),
            Ok(Runtime::Apptainer)
        );
        assert_eq!(
            choose_runtime(RuntimeChoice::Auto, &both, &none, "n1")
                .unwrap_err()
                .to_string(),
            "no container runtime is installed on node n1 (looked for: podman, apptainer)"
        );
        assert_eq!(
            choose_runtime(RuntimeChoice::Apptainer, &both, &all, "n1"),
            Ok(Runtime::Apptainer)
        );
        assert_eq!(
            choose_runtime(RuntimeChoice::Apptainer, &both, &none, "n1")
                .unwrap_err()
                .to_string(),
            "apptainer is not installed on node n1"
        );
        assert_eq!(
            choose_runtime(RuntimeChoice::Apptainer, &[Runtime::Podman], &all, "n1")
                .unwrap_err()
                .to_string(),
            "apptainer is not offered on node n1 (this node offers: podman)"
        );
    }

    #[test]
    fn gpu_lists_are_parsed_strictly() {
        assert_eq!(parse_gpu_list(Some("0")), [0]);
        assert_eq!(parse_gpu_list(Some("0,2,2,3")), [0, 2, 3]);
        for bad in [
            None,
            Some(""),
            Some("0-3"),
            Some("0,,1"),
            Some("a"),
            Some("0, 1"),
            Some("99999"),
            Some("-1"),
        ] {
            assert!(parse_gpu_list(bad).is_empty(), "{bad:?}");
        }
    }

    #[test]
    fn exit_statuses_are_diagnosed_per_runtime() {
        assert_eq!(
            diagnose_runtime_exit(Runtime::Podman, 125),
            Some(RuntimeFailure::RuntimeError)
        );
        assert_eq!(diagnose_runtime_exit(Runtime::Podman, 255), None);
        assert_eq!(
            diagnose_runtime_exit(Runtime::Apptainer, 255),
            Some(RuntimeFailure::RuntimeError)
        );
        assert_eq!(diagnose_runtime_exit(Runtime::Apptainer, 125), None);
        assert_eq!(diagnose_runtime_exit(Runtime::Apptainer, 3), None);
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
