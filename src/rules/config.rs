//! Site configuration: a TOML file plus `key=value` arguments from plugstack.conf.
//!
//! Parsing is strict (unknown keys are errors) so that a typo never silently turns a
//! rule off. A missing file means the documented defaults.

use serde::Deserialize;
use std::path::{Path, PathBuf};

use super::vocab::{self, BatchMode, Runtime, RuntimeChoice};

/// Where the config lives unless plugstack.conf says `config=PATH`.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/slurm/tre-spank.toml";

/// The site image store for podman unless the config says otherwise.
pub const DEFAULT_IMAGE_STORE: &str = "/var/lib/tre-spank/images";

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
    /// Where a batch script runs when the job does not say `--tre-batch`.
    pub batch: BatchMode,
    /// Where project directories live (`<root>/<project>`).
    pub safe_data_root: PathBuf,
    /// Whether this node mounts project data at all (TRE-level hosts have none).
    pub safe_data: bool,
    /// Group `PREFIX<sep>P` also names project P; empty turns prefixed groups off.
    pub project_group_separator: String,
    /// What to do when a user has several projects and names none.
    pub multiple_projects: MultipleProjects,
    /// Projects whose data is mounted read-only; `"*"`: all, `$HOME/safe_data` included.
    pub read_only_projects: Vec<String>,
    /// Root-owned node-local directory for per-job records.
    pub state_dir: PathBuf,
    /// Root-owned node-local directory for per-job runtime state on disk (podman's
    /// graph root: the containers' writable layers), removed at job end.
    pub runtime_dir: PathBuf,
    /// Root-owned directory on a tmpfs for per-job run state (podman's run root,
    /// `XDG_RUNTIME_DIR`, its database and pause process pid file: small, written at
    /// every container start), removed at job end.
    pub run_dir: PathBuf,
    /// Where `scratch-N` lives: empty (the default) is `$HOME`; otherwise
    /// `<scratch_root>/<user>`, a directory the user owns (node-local disk or a parallel
    /// filesystem; see docs/threat-model.md, Filesystems).
    pub scratch_root: PathBuf,
    /// Root-only file whose bytes key the job NUMBER; identical on every node.
    pub secret_file: PathBuf,
    /// The `tre-spank` tool, which supervises each container task.
    pub tool_path: PathBuf,
    /// Host paths every container job gets read-only at the same path, under either
    /// runtime (for example `/etc/localtime`). Nothing else of the host is mounted:
    /// not the `bind path` entries of apptainer.conf (see `rules::plan::site_mounts`).
    pub site_mounts: Vec<PathBuf>,
    pub podman: PodmanConfig,
    pub apptainer: ApptainerConfig,
    /// How and when leftovers of ended jobs are removed (`[cleanup]`).
    pub cleanup: CleanupConfig,
    /// `[[node]]` sections: overrides for nodes whose hostname matches (see
    /// [`Config::for_node`]).
    #[serde(rename = "node")]
    pub nodes: Vec<NodeSection>,
}

/// Settings that differ between nodes. Every matching section applies, in file order
/// (a later section overrides an earlier one).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// Hostname globs (`*` any run of characters, `?` one character).
    pub names: Vec<String>,
    pub safe_data: Option<bool>,
    pub safe_data_root: Option<PathBuf>,
    pub default_runtime: Option<RuntimeChoice>,
    pub runtimes: Option<Vec<Runtime>>,
    pub podman_network: Option<Network>,
    pub scratch_root: Option<PathBuf>,
}

impl NodeSection {
    pub fn matches(&self, hostname: &str) -> bool {
        self.names.iter().any(|g| glob_match(g, hostname))
    }
}

/// Shell-style match of `*` and `?` over the whole of `name` (no character classes:
/// hostnames have no need of them and a `[` is then a plain character).
pub fn glob_match(glob: &str, name: &str) -> bool {
    let (g, n): (Vec<char>, Vec<char>) = (glob.chars().collect(), name.chars().collect());
    let (mut gi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if gi < g.len() && (g[gi] == '?' || (g[gi] != '*' && g[gi] == n[ni])) {
            gi += 1;
            ni += 1;
        } else if gi < g.len() && g[gi] == '*' {
            star = Some((gi, ni));
            gi += 1;
        } else if let Some((sg, sn)) = star {
            gi = sg + 1;
            ni = sn + 1;
            star = Some((sg, sn + 1));
        } else {
            return false;
        }
    }
    g[gi..].iter().all(|&c| c == '*')
}

impl Config {
    /// Whether project data is mounted read-only for `project` (`None`: a
    /// `$HOME/safe_data` that belongs to no known project; only `"*"` covers it).
    pub fn safe_data_read_only(&self, project: Option<&str>) -> bool {
        self.read_only_projects
            .iter()
            .any(|p| p == "*" || Some(p.as_str()) == project)
    }

    /// The settings for one node: every `[[node]]` section whose `names` match the
    /// hostname applies, in file order. The hostname comes from the node itself
    /// (gethostname), never from the job.
    pub fn for_node(&self, hostname: &str) -> Config {
        let mut c = self.clone();
        for s in self.nodes.iter().filter(|s| s.matches(hostname)) {
            if let Some(v) = s.safe_data {
                c.safe_data = v;
            }
            if let Some(v) = &s.safe_data_root {
                c.safe_data_root = v.clone();
            }
            if let Some(v) = s.default_runtime {
                c.default_runtime = v;
            }
            if let Some(v) = &s.runtimes {
                c.runtimes = v.clone();
            }
            if let Some(v) = s.podman_network {
                c.podman.network = v;
            }
            if let Some(v) = &s.scratch_root {
                c.scratch_root = v.clone();
            }
        }
        c
    }

    /// Sections that apply to `hostname`, by position (1-based), for `check`/`plan`.
    pub fn matching_sections(&self, hostname: &str) -> Vec<usize> {
        (self.nodes.iter().enumerate())
            .filter(|(_, s)| s.matches(hostname))
            .map(|(i, _)| i + 1)
            .collect()
    }
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
    /// A step with GPUs also gets `--nv`: the node's NVIDIA driver libraries
    /// (apptainer's nvliblist.conf), at the price that apptainer then binds every
    /// /dev/nvidia* of the node; access to the other jobs' GPUs then rests on Slurm's
    /// cgroup device limits (ConstrainDevices=yes). Off: the step's GPU device nodes
    /// only, and the image brings its own driver libraries.
    pub nv: bool,
}

impl Default for ApptainerConfig {
    fn default() -> Self {
        ApptainerConfig {
            path: PathBuf::from("/usr/bin/apptainer"),
            sif_dir: PathBuf::from("/var/lib/tre-spank/sif"),
            mount_home: true,
            userns: true,
            nv: false,
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
    /// `--shm-size`: the size of the container's `/dev/shm` (podman's own default,
    /// 64 MiB, is too small for common data loaders).
    pub shm_size: ShmSize,
    /// Read-only site image stores (podman graph roots root populates with
    /// `tre-spank image`); the first is where `tre-spank image` writes. A store that
    /// does not exist on the node is left out of the job's command line.
    pub image_stores: Vec<PathBuf>,
    /// Overlay mount program for jobs that read a site store (`fuse-overlayfs`, run
    /// with `squash_to_root`): the store's files are root's on the host, which the
    /// user's namespace cannot map; squashed, they are the container root's (the
    /// user's) and podman can create its mount points in them. Empty: kernel overlay.
    pub store_mount_program: PathBuf,
    /// Also read images from the user's own rootless storage
    /// (`$HOME/.local/share/containers/storage`), read-only. Off by default: the
    /// allow-list then checks only a name, and any image a user tags with an allowed
    /// name runs (approved images only is the default; a site opt-in).
    pub user_image_store: bool,
    /// CDI device kind for the job's GPUs (`--device=<kind>=<index>`).
    pub gpu_cdi_kind: String,
    /// The site's containers.conf, given to podman as `CONTAINERS_CONF` when it
    /// exists, else the package's (`/usr/share/tre-spank/containers.conf`): the
    /// user's own `~/.config/containers/containers.conf` is never read.
    pub containers_conf: PathBuf,
    /// Who makes the rootless user namespace a container task's podman runs in.
    pub user_namespace: UserNamespace,
    /// podman runs the plugin's conmon wrapper, whose exit guard keeps podman's own
    /// clean-up from racing the step's `podman run --rm` (rules::runtime::conmon).
    pub exit_guard: bool,
}

/// Who makes the user namespace of a container task's podman (docs/job-semantics.md,
/// "How a step starts").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UserNamespace {
    /// The task's supervisor, with `newuidmap`/`newgidmap` and podman's own maps, for
    /// users with ranges in `/etc/subuid` and `/etc/subgid`: podman then starts once,
    /// not twice, and leaves no pause process. Users without ranges get `Podman`.
    TreSpank,
    /// podman itself: it re-executes itself in a namespace it makes and keeps a pause
    /// process for it, which the supervisor ends when the task ends.
    Podman,
}

/// A size as podman's `--shm-size` takes it: digits and an optional unit `b`, `k`, `m`
/// or `g` (1024-based), more than zero and at most 16 digits.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ShmSize(String);

impl ShmSize {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ShmSize {
    type Error = ShmSizeError;
    fn try_from(value: String) -> Result<Self, ShmSizeError> {
        let digits = value.trim_end_matches(['b', 'k', 'm', 'g']);
        let unit_len = value.len() - digits.len();
        if unit_len <= 1
            && !digits.is_empty()
            && digits.len() <= 16
            && digits.bytes().all(|b| b.is_ascii_digit())
            && digits.bytes().any(|b| b != b'0')
        {
            Ok(ShmSize(value))
        } else {
            Err(ShmSizeError(value))
        }
    }
}

/// A `podman.shm_size` that is not a size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a size: digits with an optional unit b, k, m or g (e.g. \"8g\")")]
pub struct ShmSizeError(String);

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
            batch: BatchMode::Container,
            safe_data_root: PathBuf::from("/safe_data"),
            safe_data: true,
            project_group_separator: "-".to_string(),
            multiple_projects: MultipleProjects::Refuse,
            read_only_projects: Vec::new(),
            state_dir: PathBuf::from("/var/spool/tre-spank"),
            runtime_dir: PathBuf::from("/var/lib/tre-spank/jobs"),
            run_dir: PathBuf::from("/run/tre-spank/jobs"),
            scratch_root: PathBuf::new(),
            secret_file: PathBuf::from("/etc/munge/munge.key"),
            tool_path: PathBuf::from("/usr/sbin/tre-spank"),
            site_mounts: Vec::new(),
            podman: PodmanConfig::default(),
            nodes: Vec::new(),
            apptainer: ApptainerConfig::default(),
            cleanup: CleanupConfig::default(),
        }
    }
}

/// Cleanup of ended jobs: liveness from the controller, and time bounds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CleanupConfig {
    /// The `squeue` that asks the controller whether a job still runs anywhere, and
    /// (each container step) for the job's submit time.
    pub squeue: PathBuf,
    /// Seconds one controller query may take; past it the job counts as alive (a
    /// container step fails).
    pub controller_timeout: u64,
    /// Seconds the job epilog waits for removal; past it removal goes on in the
    /// background and the epilog returns (keep it well below `PrologEpilogTimeout`).
    pub epilog_budget: u64,
    /// Seconds between controller queries while a node waits for the job's other
    /// nodes to finish before it removes shared scratch (doubling from the fourth query
    /// on, up to 5 minutes).
    pub poll_interval: u64,
    /// Seconds a background cleanup (an epilog's, or the sweep at slurmd start) may
    /// live; past it, it stops and what remains waits for the next sweep.
    pub background_limit: u64,
}

impl Default for CleanupConfig {
    fn default() -> Self {
        CleanupConfig {
            squeue: PathBuf::from("/usr/bin/squeue"),
            controller_timeout: 10,
            epilog_budget: 20,
            poll_interval: 5,
            background_limit: 6 * 3600,
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
            shm_size: ShmSize("1g".to_string()),
            image_stores: vec![PathBuf::from(DEFAULT_IMAGE_STORE)],
            store_mount_program: PathBuf::from("/usr/bin/fuse-overlayfs"),
            user_image_store: false,
            gpu_cdi_kind: "nvidia.com/gpu".to_string(),
            containers_conf: PathBuf::from("/etc/containers/containers.conf"),
            user_namespace: UserNamespace::TreSpank,
            exit_guard: true,
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
    /// `location` is empty or `line N, key K` (1-based line of the file).
    #[error("config {path}{}: {message}", if location.is_empty() { String::new() } else { format!(" {location}") })]
    Parse {
        path: PathBuf,
        location: String,
        message: String,
    },
    #[error("plugstack argument {arg:?}: {message}")]
    Argument { arg: String, message: String },
    /// The file is not root's, or others can write it (host::trust says why).
    #[error("refusing {0}")]
    Untrusted(String),
    /// `config=PATH` on the plugstack line names a file that does not exist: a site
    /// that names a file relies on it, so its absence is not the defaults.
    #[error("config {path} (config= on the plugstack line) does not exist")]
    Missing { path: PathBuf },
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

/// The plugin's arguments from a plugstack.conf text: the first active line whose
/// plugin path ends in `tre_spank.so` or `tre-spank.so`. `None`: no such line.
pub fn plugstack_args(plugstack_text: &str) -> Option<Vec<String>> {
    plugstack_text.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let kind = words.next()?;
        let plugin = words.next()?;
        let ours = matches!(kind, "required" | "optional")
            && (plugin.ends_with("/tre_spank.so")
                || plugin.ends_with("/tre-spank.so")
                || plugin == "tre_spank.so"
                || plugin == "tre-spank.so");
        ours.then(|| words.map(str::to_string).collect())
    })
}

/// Whether the plugstack arguments name the config file (`config=PATH`); without it
/// the default path is used, and a missing default file means the defaults.
pub fn config_named(plugstack_args: &[&str]) -> bool {
    plugstack_args.iter().any(|a| a.starts_with("config="))
}

/// The config from the file's text (`path` names it in errors), the other plugstack
/// arguments applied on top. Reading the file is the host's (`host::config_file::load`).
pub fn parse(text: &str, path: &Path, plugstack_args: &[&str]) -> Result<Config, ConfigError> {
    // The file alone first, so that errors carry its line numbers.
    let from_file: Config = toml::from_str(text).map_err(|e| located(text, path, &e))?;
    check_sections(&from_file, path)?;
    let mut table: toml::Table = text.parse().map_err(|e| located(text, path, &e))?;
    let overrides: Vec<&str> = (plugstack_args.iter().copied())
        .filter(|a| !a.starts_with("config="))
        .collect();
    for arg in &overrides {
        apply_argument(&mut table, arg)?;
    }
    let config = Config::deserialize(table).map_err(|e| ConfigError::Argument {
        arg: overrides.join(" "),
        message: one_line(e.message()),
    })?;
    // (The file's own values were checked above, with the file's name.)
    check_site_mounts(&config.site_mounts).map_err(|e| ConfigError::Argument {
        arg: overrides.join(" "),
        message: e.to_string(),
    })?;
    Ok(config)
}

fn check_site_mounts(paths: &[PathBuf]) -> Result<(), vocab::SiteMountError> {
    for (i, p) in paths.iter().enumerate() {
        vocab::check_site_mount(p)?;
        if paths[..i].contains(p) {
            return Err(vocab::SiteMountError::Twice {
                path: p.display().to_string(),
            });
        }
    }
    Ok(())
}

fn check_sections(config: &Config, path: &Path) -> Result<(), ConfigError> {
    let relative = |p: &Path| !p.as_os_str().is_empty() && !p.is_absolute();
    if relative(&config.scratch_root) {
        return Err(ConfigError::Parse {
            path: path.to_path_buf(),
            location: "key scratch_root".into(),
            message: "must be empty ($HOME) or an absolute path".into(),
        });
    }
    for (i, s) in config.nodes.iter().enumerate() {
        if s.scratch_root.as_deref().is_some_and(relative) {
            return Err(ConfigError::Parse {
                path: path.to_path_buf(),
                location: format!("[[node]] section {}, key node.scratch_root", i + 1),
                message: "must be empty ($HOME) or an absolute path".into(),
            });
        }
    }
    check_site_mounts(&config.site_mounts).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        location: "key site_mounts".into(),
        message: e.to_string(),
    })?;
    for (i, s) in config.nodes.iter().enumerate() {
        if s.names.is_empty() || s.names.iter().any(|n| n.is_empty()) {
            return Err(ConfigError::Parse {
                path: path.to_path_buf(),
                location: format!("[[node]] section {}, key node.names", i + 1),
                message: "names must list at least one non-empty hostname glob".into(),
            });
        }
    }
    Ok(())
}

/// Turns a toml error's byte span into `line N, key K` (K with its section, dotted).
fn located(text: &str, path: &Path, e: &toml::de::Error) -> ConfigError {
    let location = e
        .span()
        .map(|span| {
            let start = span.start.min(text.len());
            let line_no = text[..start].matches('\n').count() + 1;
            let mut section = String::new();
            let mut key = String::new();
            for line in text.lines().take(line_no) {
                let t = line.trim();
                if t.starts_with('[') {
                    section = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
                    key.clear();
                } else if let Some((k, _)) = t.split_once('=') {
                    key = k.trim().trim_matches('"').to_string();
                } else {
                    key.clear();
                }
            }
            let dotted = match (section.is_empty(), key.is_empty()) {
                (_, true) => section,
                (true, false) => key,
                (false, false) => format!("{section}.{key}"),
            };
            if dotted.is_empty() {
                format!("line {line_no}")
            } else {
                format!("line {line_no}, key {dotted}")
            }
        })
        .unwrap_or_default();
    ConfigError::Parse {
        path: path.to_path_buf(),
        location,
        message: one_line(e.message()),
    }
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
/// Slurm's default `SlurmdSpoolDir`.
pub const DEFAULT_SLURMD_SPOOL: &str = "/var/spool/slurmd";

/// The directory holding slurmd's spool according to slurm.conf text: `SlurmdSpoolDir`
/// (keys are case-insensitive; the last one wins), cut before the first `%` pattern
/// (`%n`, `%h`: per-node names, whose parent is on the same filesystem as a rule).
pub fn slurmd_spool_dir(slurm_conf: &str) -> PathBuf {
    let mut dir = PathBuf::from(DEFAULT_SLURMD_SPOOL);
    for line in slurm_conf.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if !key.trim().eq_ignore_ascii_case("SlurmdSpoolDir") {
            continue;
        }
        let value = value.trim().trim_matches('"');
        let fixed = match value.find('%') {
            Some(i) => match value[..i].rfind('/') {
                Some(0) => "/",
                Some(j) => &value[..j],
                None => continue,
            },
            None => value,
        };
        if fixed.starts_with('/') {
            dir = PathBuf::from(fixed);
        }
    }
    dir
}

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
        assert!(d.apptainer.mount_home && d.apptainer.userns && !d.apptainer.nv);
    }

    #[test]
    fn site_mounts_are_checked_in_the_file_and_on_the_plugstack_line() {
        let c = parse("site_mounts = [\"/etc/localtime\"]\n", p(), &[]).unwrap();
        assert_eq!(c.site_mounts, [PathBuf::from("/etc/localtime")]);
        let c = parse("", p(), &["site_mounts=[\"/etc/hosts\", \"/opt/lic\"]"]).unwrap();
        assert_eq!(
            c.site_mounts,
            [PathBuf::from("/etc/hosts"), PathBuf::from("/opt/lic")]
        );
        assert!(Config::default().site_mounts.is_empty());
        let e = parse("site_mounts = [\"/tmp\"]\n", p(), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("key site_mounts"), "{e}");
        assert!(e.contains("\"/tmp\" overlaps /tmp"), "{e}");
        let e = parse("", p(), &["site_mounts=[\"/etc/../etc/shadow\"]"])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("plugstack argument ")
                && e.ends_with(": \"/etc/../etc/shadow\" is not an absolute path without '.', '..' or a trailing '/'"),
            "{e}"
        );
        let e = parse("site_mounts = [\"/opt/a\", \"/opt/a\"]\n", p(), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("listed twice"), "{e}");
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

    const EXAMPLE: &str = include_str!("../../examples/tre-spank.toml");

    #[test]
    fn the_example_file_is_the_defaults() {
        assert_eq!(parse(EXAMPLE, p(), &[]).unwrap(), Config::default());
    }

    /// The fields serde knows, from its own "expected one of" message.
    fn known_fields(section: &str) -> Vec<String> {
        let e = parse(&format!("{section}\nzz_not_a_key = 1\n"), p(), &[])
            .unwrap_err()
            .to_string();
        let list = e.split("expected one of").nth(1).expect(&e).to_string();
        list.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn the_example_file_documents_every_setting() {
        let set = |key: &str| EXAMPLE.lines().any(|l| l.starts_with(&format!("{key} = ")));
        let commented = |key: &str| {
            EXAMPLE
                .lines()
                .any(|l| l.starts_with(&format!("# {key} = ")))
        };
        let sections = |key: &str| EXAMPLE.lines().any(|l| l == format!("[{key}]"));
        for key in known_fields("") {
            assert!(
                key == "node" || set(&key) || sections(&key),
                "{key} missing from examples/tre-spank.toml"
            );
        }
        for key in known_fields("[podman]") {
            assert!(set(&key), "podman.{key} missing from the example");
        }
        for key in known_fields("[cleanup]") {
            assert!(set(&key), "cleanup.{key} missing from the example");
        }
        for key in known_fields("[[node]]\nnames = [\"x\"]") {
            assert!(commented(&key), "node.{key} missing from the example");
        }
    }

    #[test]
    fn the_commented_node_examples_parse_and_apply() {
        let uncommented: String = EXAMPLE
            .lines()
            .skip_while(|l| !l.starts_with("# Examples"))
            .skip(1)
            .map(|l| l.strip_prefix("# ").or(l.strip_prefix("#")).unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        let text = format!("{EXAMPLE}\n{uncommented}\n");
        let c = parse(&text, p(), &[]).unwrap();
        assert_eq!(c.nodes.len(), 3);
        let login = c.for_node("login2");
        assert!(!login.safe_data);
        assert_eq!(login.podman.network, Network::None);
        let gpu = c.for_node("gpu07");
        assert_eq!(gpu.runtimes, vec![Runtime::Apptainer]);
        assert!(gpu.safe_data);
        assert_eq!(
            c.for_node("bigmem3").safe_data_root,
            PathBuf::from("/bigmem/safe_data")
        );
        assert_eq!(
            c.for_node("bigmem3").scratch_root,
            PathBuf::from("/local/scratch")
        );
        let other = c.for_node("node01");
        assert_eq!(
            Config {
                nodes: vec![],
                ..other
            },
            Config::default()
        );
    }

    #[test]
    fn node_sections_apply_in_file_order() {
        let text = "[[node]]\nnames = [\"n*\"]\nsafe_data = false\npodman_network = \"none\"\n\
                    [[node]]\nnames = [\"n1\", \"x\"]\nsafe_data = true\ndefault_runtime = \"apptainer\"\n";
        let c = parse(text, p(), &[]).unwrap();
        let n1 = c.for_node("n1");
        assert!(n1.safe_data);
        assert_eq!(n1.default_runtime, RuntimeChoice::Apptainer);
        assert_eq!(n1.podman.network, Network::None);
        let n2 = c.for_node("n2");
        assert!(!n2.safe_data);
        assert_eq!(n2.default_runtime, RuntimeChoice::Podman);
        assert_eq!(c.matching_sections("n1"), vec![1, 2]);
        assert_eq!(c.matching_sections("m1"), Vec::<usize>::new());
        assert!(c.for_node("m1").safe_data);
    }

    #[test]
    fn node_sections_are_strict() {
        let e = parse("[[node]]\nnames = [\"a\"]\nsafe_dta = false\n", p(), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3, key node.safe_dta"), "{e}");
        let e = parse("[[node]]\nnames = []\n", p(), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("node.names"), "{e}");
        assert!(parse("[[node]]\nsafe_data = false\n", p(), &[]).is_err());
        let e = parse(
            "\n[[node]]\nnames = [\"a\"]\nruntimes = [\"docker\"]\n",
            p(),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("line 4, key node.runtimes"), "{e}");
    }

    #[test]
    fn parse_errors_name_file_line_and_key() {
        let e = parse(
            "safe_data = true\n\n[podman]\nnetwork = \"bridge\"\n",
            p(),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("config /etc/slurm/tre-spank.toml line 4, key podman.network: "),
            "{e}"
        );
        assert!(e.contains("bridge"), "{e}");
        let e = parse("x = = 1\n", p(), &[]).unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn globs() {
        assert!(glob_match("bigmem*", "bigmem12"));
        assert!(glob_match("bigmem*", "bigmem"));
        assert!(!glob_match("bigmem*", "xbigmem1"));
        assert!(glob_match("n?1", "na1"));
        assert!(!glob_match("n?1", "n1"));
        assert!(glob_match("*-gpu-*", "a-gpu-b"));
        assert!(glob_match("tre-host1", "tre-host1"));
        assert!(!glob_match("tre-host1", "tre-host10"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXbYbZc"));
    }

    #[test]
    fn plugstack_lines_give_the_arguments() {
        let text = "# required /x/tre_spank.so config=/no\ninclude /etc/slurm/plugstack.conf.d/*.conf\n\
                    optional /usr/lib/other.so a=b\nrequired /usr/lib/slurm-tre/tre_spank.so config=/etc/t.toml safe_data=false # note\n";
        assert_eq!(
            plugstack_args(text),
            Some(vec![
                "config=/etc/t.toml".to_string(),
                "safe_data=false".to_string()
            ])
        );
        assert_eq!(plugstack_args("required /usr/lib/other.so\n"), None);
        assert_eq!(
            plugstack_args(include_str!("../../plugstack.conf.example")),
            Some(vec!["config=/etc/slurm/tre-spank.toml".to_string()])
        );
    }

    #[test]
    fn scratch_root_is_home_or_absolute_and_per_node() {
        assert_eq!(Config::default().scratch_root, PathBuf::new());
        let c = parse(
            "scratch_root = \"/lustre/scratch\"\n[[node]]\nnames = [\"n1\"]\nscratch_root = \"/local\"\n",
            p(),
            &[],
        )
        .unwrap();
        assert_eq!(c.for_node("n1").scratch_root, Path::new("/local"));
        assert_eq!(c.for_node("n2").scratch_root, Path::new("/lustre/scratch"));
        let e = parse("scratch_root = \"scratch\"\n", p(), &[]).unwrap_err();
        assert!(e.to_string().contains("key scratch_root"), "{e}");
        let e = parse(
            "[[node]]\nnames = [\"n1\"]\nscratch_root = \"x\"\n",
            p(),
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("node.scratch_root"), "{e}");
    }

    #[test]
    fn the_supervisor_makes_podmans_user_namespace_unless_the_site_says_podman() {
        let c = parse("", p(), &[]).unwrap();
        assert_eq!(c.podman.user_namespace, UserNamespace::TreSpank);
        let c = parse("[podman]\nuser_namespace = \"podman\"\n", p(), &[]).unwrap();
        assert_eq!(c.podman.user_namespace, UserNamespace::Podman);
        let c = parse("", p(), &["podman.user_namespace=tre-spank"]).unwrap();
        assert_eq!(c.podman.user_namespace, UserNamespace::TreSpank);
        assert!(parse("[podman]\nuser_namespace = \"auto\"\n", p(), &[]).is_err());
        assert!(parse("", p(), &[]).unwrap().podman.exit_guard);
        let c = parse("", p(), &["podman.exit_guard=false"]).unwrap();
        assert!(!c.podman.exit_guard);
    }

    #[test]
    fn shm_size_is_a_podman_size() {
        for good in ["1g", "64m", "512k", "1048576", "2b"] {
            let c = parse(&format!("[podman]\nshm_size = \"{good}\"\n"), p(), &[]).unwrap();
            assert_eq!(c.podman.shm_size.as_str(), good);
        }
        for bad in [
            "",
            "0",
            "0g",
            "1G",
            "1gb",
            "-1g",
            "1.5g",
            "g",
            "1 g",
            "99999999999999999g",
        ] {
            let e = parse(&format!("[podman]\nshm_size = \"{bad}\"\n"), p(), &[]).unwrap_err();
            assert!(e.to_string().contains("key podman.shm_size"), "{bad}: {e}");
        }
    }

    #[test]
    fn slurmd_spool_dir_from_slurm_conf() {
        assert_eq!(slurmd_spool_dir(""), Path::new(DEFAULT_SLURMD_SPOOL));
        assert_eq!(
            slurmd_spool_dir("ClusterName=x\nslurmdspooldir = /local/spool # c\n"),
            Path::new("/local/spool")
        );
        assert_eq!(
            slurmd_spool_dir("SlurmdSpoolDir=/var/spool/slurmd.%n\n"),
            Path::new("/var/spool")
        );
        assert_eq!(
            slurmd_spool_dir("SlurmdSpoolDir=relative\n"),
            Path::new(DEFAULT_SLURMD_SPOOL)
        );
    }
}
