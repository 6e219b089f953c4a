//! The environment a runtime gets and passes on: an allow-list, as bytes; the
//! variables that steer a runtime; the shipped configuration's paths.

use super::TaskLaunch;
use crate::rules::vocab::Runtime;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

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

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::*;
    use super::*;

    use std::ffi::OsString;
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

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
}
