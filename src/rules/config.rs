//! Site configuration: a TOML file plus `key=value` arguments from plugstack.conf.
//!
//! Parsing is strict (unknown keys are errors) so that a typo never silently turns a
//! rule off. A missing file means the documented defaults.

use serde::Deserialize;
use std::path::{Path, PathBuf};

use super::options::{Runtime, RuntimeChoice};

/// Where the config lives unless plugstack.conf says `config=PATH`.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/slurm/tre-spank.toml";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Image references must lie under one of these (`registry[/path]`).
    pub allowed_registries: Vec<String>,
    /// Runtime used when the job does not say `--tre-runtime` (`auto`: the first of
    /// `runtimes` installed on the node).
    pub default_runtime: RuntimeChoice,
    /// The runtimes this node offers, in the site's order of preference.
    pub runtimes: Vec<Runtime>,
    /// Where project directories live (`<root>/<project>`).
    pub safe_data_root: PathBuf,
    /// Whether this node mounts project data at all (TRE-level hosts have none).
    pub safe_data: bool,
    /// Group `PREFIX<sep>P` also names project P; empty turns prefixed groups off.
    pub project_group_separator: String,
    /// What to do when a user has several projects and names none.
    pub multiple_projects: MultipleProjects,
    /// Root-owned node-local directory for per-job records.
    pub state_dir: PathBuf,
    /// Root-owned node-local directory for per-job runtime state (podman's storage,
    /// run root and pause process files), removed at job end.
    pub runtime_dir: PathBuf,
    /// Root-only file whose bytes key the job NUMBER; identical on every node.
    pub secret_file: PathBuf,
    /// The `tre-spank` tool, which supervises each container task.
    pub tool_path: PathBuf,
    pub podman: PodmanConfig,
    pub apptainer: ApptainerConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApptainerConfig {
    pub path: PathBuf,
    /// Root-managed directory of approved images as SIF files (see
    /// `rules::runtime::sif_path` for the layout).
    pub sif_dir: PathBuf,
    /// Mount the user's home (apptainer's default, as the real service did).
    pub mount_home: bool,
    /// `--userns`: always run unprivileged, even where a setuid starter is installed.
    pub userns: bool,
}

impl Default for ApptainerConfig {
    fn default() -> Self {
        ApptainerConfig {
            path: PathBuf::from("/usr/bin/apptainer"),
            sif_dir: PathBuf::from("/var/lib/tre-spank/sif"),
            mount_home: true,
            userns: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MultipleProjects {
    /// Fail and list the user's projects (the default: never guess whose data to mount).
    Refuse,
    /// Take the first match in the documented group order, and say so in the job output.
    First,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PodmanConfig {
    pub path: PathBuf,
    pub network: Network,
    pub container_user: ContainerUser,
    /// `--security-opt=no-new-privileges`.
    pub no_new_privileges: bool,
    /// `--group-add=keep-groups`: the user's groups reach `/safe_data` (needs crun).
    pub keep_groups: bool,
    /// `--cgroups=disabled` keeps the container in the job's own cgroup.
    pub cgroups_disabled: bool,
    /// Read-only image stores (podman graph roots an administrator populates).
    pub image_stores: Vec<PathBuf>,
    /// Also read images from the user's own rootless storage
    /// (`$HOME/.local/share/containers/storage`), read-only.
    pub user_image_store: bool,
    /// CDI device kind for the job's GPUs (`--device=<kind>=<index>`).
    pub gpu_cdi_kind: String,
    /// The site's containers.conf, given to podman as `CONTAINERS_CONF` (when it
    /// exists) so that the user's own `~/.config/containers/containers.conf` is not read.
    pub containers_conf: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Network {
    Host,
    None,
    Private,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ContainerUser {
    /// uid 0 in the rootless user namespace, which is the user on the host.
    Root,
    /// The user's own uid inside (`--userns=keep-id`).
    KeepId,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            allowed_registries: vec!["ghcr.io/".to_string()],
            default_runtime: RuntimeChoice::Podman,
            runtimes: vec![Runtime::Podman, Runtime::Apptainer],
            safe_data_root: PathBuf::from("/safe_data"),
            safe_data: true,
            project_group_separator: "-".to_string(),
            multiple_projects: MultipleProjects::Refuse,
            state_dir: PathBuf::from("/var/spool/tre-spank"),
            runtime_dir: PathBuf::from("/var/lib/tre-spank/jobs"),
            secret_file: PathBuf::from("/etc/munge/munge.key"),
            tool_path: PathBuf::from("/usr/sbin/tre-spank"),
            podman: PodmanConfig::default(),
            apptainer: ApptainerConfig::default(),
        }
    }
}

impl Default for PodmanConfig {
    fn default() -> Self {
        PodmanConfig {
            path: PathBuf::from("/usr/bin/podman"),
            network: Network::Host,
            container_user: ContainerUser::Root,
            no_new_privileges: true,
            keep_groups: true,
            cgroups_disabled: true,
            image_stores: Vec::new(),
            user_image_store: true,
            gpu_cdi_kind: "nvidia.com/gpu".to_string(),
            containers_conf: PathBuf::from("/etc/containers/containers.conf"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("plugstack argument {arg:?}: {message}")]
    Argument { arg: String, message: String },
}

/// The config path named by plugstack arguments, or the default.
pub fn config_path(plugstack_args: &[&str]) -> PathBuf {
    plugstack_args
        .iter()
        .rev()
        .find_map(|a| a.strip_prefix("config="))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
}

/// Reads the file (if it exists) and applies the other plugstack arguments on top.
pub fn load(plugstack_args: &[&str]) -> Result<Config, ConfigError> {
    let path = config_path(plugstack_args);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => return Err(ConfigError::Read { path, source }),
    };
    parse(&text, &path, plugstack_args)
}

pub fn parse(text: &str, path: &Path, plugstack_args: &[&str]) -> Result<Config, ConfigError> {
    let mut table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Parse {
            path: path.to_path_buf(),
            message: one_line(&e.to_string()),
        })?;
    for arg in plugstack_args.iter().filter(|a| !a.starts_with("config=")) {
        apply_argument(&mut table, arg)?;
    }
    Config::deserialize(table).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: one_line(&e.to_string()),
    })
}

/// `podman.network=none` sets `[podman] network = "none"`; values are TOML when they
/// parse as TOML (`true`, `["a", "b"]`), strings otherwise.
fn apply_argument(table: &mut toml::Table, arg: &str) -> Result<(), ConfigError> {
    let err = |message: &str| ConfigError::Argument {
        arg: arg.to_string(),
        message: message.to_string(),
    };
    let (key, raw) = arg
        .split_once('=')
        .ok_or_else(|| err("expected key=value"))?;
    let value = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts
        .pop()
        .filter(|k| !k.is_empty())
        .ok_or_else(|| err("empty key"))?;
    let mut current = table;
    for part in parts {
        let entry = current
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| err("key is not a section"))?;
    }
    current.insert(last.to_string(), value);
    Ok(())
}

/// Serde errors span lines; the job output and logs want one.
fn one_line(s: &str) -> String {
    s.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("/etc/slurm/tre-spank.toml")
    }

    #[test]
    fn empty_file_gives_documented_defaults() {
        let c = parse("", p(), &[]).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.allowed_registries, vec!["ghcr.io/"]);
        assert_eq!(c.podman.network, Network::Host);
        assert_eq!(c.multiple_projects, MultipleProjects::Refuse);
    }

    #[test]
    fn missing_file_gives_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let arg = format!("config={}/absent.toml", dir.path().display());
        assert_eq!(load(&[&arg]).unwrap(), Config::default());
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_file_and_key() {
        let e = parse("alowed_registries = []\n", p(), &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/etc/slurm/tre-spank.toml") && e.contains("alowed_registries"),
            "{e}"
        );
        let e = parse("[podman]\nnetwrk = \"none\"\n", p(), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("netwrk"), "{e}");
    }

    #[test]
    fn bad_values_are_errors() {
        let e = parse("[podman]\nnetwork = \"bridge\"\n", p(), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("bridge"), "{e}");
        assert!(parse("default_runtime = \"docker\"\n", p(), &[]).is_err());
        assert!(parse("runtimes = [\"auto\"]\n", p(), &[]).is_err());
        assert!(parse("[apptainer]\nmount_hom = false\n", p(), &[]).is_err());
    }

    #[test]
    fn plugstack_arguments_override_the_file() {
        let c = parse(
            "safe_data = true\n[podman]\nnetwork = \"host\"\n",
            p(),
            &[
                "config=/x",
                "safe_data=false",
                "podman.network=none",
                "allowed_registries=[\"ghcr.io/a\",\"r.example.org\"]",
            ],
        )
        .unwrap();
        assert!(!c.safe_data);
        assert_eq!(c.podman.network, Network::None);
        assert_eq!(c.allowed_registries, vec!["ghcr.io/a", "r.example.org"]);
        let c = parse("", p(), &["safe_data_root=/srv/safe data"]).unwrap();
        assert_eq!(c.safe_data_root, PathBuf::from("/srv/safe data"));
    }

    #[test]
    fn runtime_settings() {
        let c = parse(
            "default_runtime = \"auto\"\nruntimes = [\"apptainer\"]\n[apptainer]\nsif_dir = \"/srv/sif\"\n",
            p(),
            &["apptainer.mount_home=false"],
        )
        .unwrap();
        assert_eq!(c.default_runtime, RuntimeChoice::Auto);
        assert_eq!(c.runtimes, vec![Runtime::Apptainer]);
        assert_eq!(c.apptainer.sif_dir, PathBuf::from("/srv/sif"));
        assert!(!c.apptainer.mount_home);
        let d = Config::default();
        assert_eq!(d.runtimes, vec![Runtime::Podman, Runtime::Apptainer]);
        assert_eq!(d.apptainer.sif_dir, PathBuf::from("/var/lib/tre-spank/sif"));
        assert!(d.apptainer.mount_home && d.apptainer.userns);
    }

    #[test]
    fn bad_plugstack_arguments_are_errors() {
        assert!(parse("", p(), &["nonsense"]).is_err());
        assert!(parse("", p(), &["no_such_key=1"]).is_err());
        assert!(parse("", p(), &["safe_data.x=1"]).is_err());
    }

    #[test]
    fn config_path_comes_from_the_last_config_argument() {
        assert_eq!(config_path(&[]), PathBuf::from(DEFAULT_CONFIG_PATH));
        assert_eq!(
            config_path(&["config=/a", "config=/b"]),
            PathBuf::from("/b")
        );
    }
}
