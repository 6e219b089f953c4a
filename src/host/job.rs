//! Node facts that the step pipeline ([`super::step`]), the epilog and the
//! `tre-spank` tool share: this node's name, its config, its runtimes, the project.

use super::account::Account;
use super::dirs::{self, Dir};
use super::trust;
use crate::rules::config::{self, Config, ConfigError};
use crate::rules::options::{Runtime, RuntimeChoice};
use crate::rules::project::{self, HomeSafeData, ProjectError, ProjectFacts, Resolution, SafeData};
use crate::rules::runtime::{self, RuntimeChoiceError};

/// This node's own name (never anything from the job's environment).
/// Reading the job-number secret failed.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("refusing {0}")]
    Untrusted(#[from] trust::TrustError),
    #[error("cannot read the job number secret {}: {source}", .path.display())]
    Unreadable {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// The job-number secret, once it is known to be root's (the munge key, the default
/// secret, is munge's). The plugin and `tre-spank number` read it here.
pub fn read_secret(config: &Config) -> Result<Vec<u8>, SecretError> {
    trust::check_file("secret_file", &config.secret_file, trust::SECRET_OWNERS)?;
    std::fs::read(&config.secret_file).map_err(|source| SecretError::Unreadable {
        path: config.secret_file.clone(),
        source,
    })
}

pub fn node_name() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The site config as it applies to this node (its `[[node]]` sections applied).
/// Root reads it: a config file that is not root's, or that others can write, is
/// refused (a missing one means the defaults and the plugstack arguments).
pub fn load_node_config(plugstack_args: &[&str], node: &str) -> Result<Config, ConfigError> {
    let path = config::config_path(plugstack_args);
    if path.symlink_metadata().is_ok() {
        trust::check_file("config", &path, &[])
            .map_err(|e| ConfigError::Untrusted(e.to_string()))?;
    }
    Ok(super::config_file::load(plugstack_args)?.for_node(node))
}

/// Whether the runtime can run on this node; the error is the line the job shows.
pub fn check_runtime(
    config: &Config,
    runtime: Runtime,
    node: &str,
) -> Result<(), RuntimeChoiceError> {
    choose_runtime(config, runtime.into(), node).map(|_| ())
}

/// The runtime for a job's choice (`auto`: the first of the node's runtimes that is
/// installed); the error is the line the job shows.
pub fn choose_runtime(
    config: &Config,
    choice: RuntimeChoice,
    node: &str,
) -> Result<Runtime, RuntimeChoiceError> {
    let installed = |r: Runtime| match r {
        Runtime::Podman => config.podman.path.is_file(),
        Runtime::Apptainer => config.apptainer.path.is_file(),
    };
    runtime::choose_runtime(choice, &config.runtimes, &installed, node)
}

/// Which project data the job sees. Must run with the job user's identity: what the
/// user can open decides.
pub fn resolve_project(
    home: &Dir,
    account: &Account,
    config: &Config,
    requested: Option<&str>,
) -> Result<Resolution, ProjectError> {
    let home_safe_data = home.probe_safe_data();
    // Followed as the user (this runs with the user's ids): a link to a read-only
    // project keeps it read-only (project::resolve).
    let target = (home_safe_data == HomeSafeData::Directory)
        .then(|| std::fs::canonicalize(account.home.join("safe_data")).ok())
        .flatten();
    let facts = ProjectFacts {
        home: &account.home,
        home_safe_data,
        home_safe_data_target: target.as_deref(),
        primary_group: &account.primary_group,
        supplementary_groups: &account.supplementary_groups,
        requested,
    };
    let resolution = project::resolve(&facts, config, &dirs::is_directory)?;
    match &resolution.safe_data {
        SafeData::Home(p) | SafeData::ProjectDir(p) if !dirs::can_open_dir(p) => {
            Err(ProjectError::CannotOpen(p.clone()))
        }
        _ => Ok(resolution),
    }
}
