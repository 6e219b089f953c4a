//! The rules' shared vocabulary: the runtimes, what a job or the site chooses among
//! them, what runs in the container and where a batch script runs. The options
//! (`--tre-runtime`, `--tre-entrypoint`, `--tre-batch`), the config and the runtime
//! command lines all speak it; it depends on none of them. The container's own paths
//! (`/safe_data`, `/safe_outputs`, `/scratch`, `/inputs`) are here too, with the check
//! of a `site_mounts` entry against them: the config checks it, the plan mounts them.

use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// What every line of the plugin starts with.
const PREFIX: &str = "tre-spank: ";

/// A message as a user or an administrator reads it: the plugin's name, once. The one
/// place the prefix is added (the plugin's log backend, the job's messages, the tool).
pub fn prefixed(message: &dyn fmt::Display) -> String {
    format!("{PREFIX}{message}")
}

pub const CONTAINER_SAFE_DATA: &str = "/safe_data";
pub const CONTAINER_OUTPUTS: &str = "/safe_outputs";
pub const CONTAINER_SCRATCH: &str = "/scratch";
/// Where `--tre-inputs` directories appear inside the container.
pub const CONTAINER_INPUTS: &str = "/inputs";

/// Container paths a site mount may not be, lie under or hold: the job's own mounts,
/// the container's own `/dev`, `/proc`, `/sys`, `/tmp` and `/var/tmp`, and `/`.
const NOT_SITE_MOUNTABLE: [&str; 9] = [
    CONTAINER_SAFE_DATA,
    CONTAINER_OUTPUTS,
    CONTAINER_SCRATCH,
    CONTAINER_INPUTS,
    "/dev",
    "/proc",
    "/sys",
    "/tmp",
    "/var/tmp",
];

/// Why a `site_mounts` entry is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SiteMountError {
    #[error("{path:?} is not an absolute path without '.', '..' or a trailing '/'")]
    NotNormal { path: String },
    #[error("{path:?}: a site mount cannot hold ',', ':' or control characters")]
    Character { path: String },
    #[error("{path:?} overlaps {}, which the container has of its own", .own.display())]
    Overlaps { path: String, own: PathBuf },
    #[error("{path:?} is listed twice")]
    Twice { path: String },
}

/// Checks one `site_mounts` entry: an absolute, normal path (no `.`, `..`, `//` or
/// trailing `/`) that both runtimes' mount syntax can express (no `,` or `:`), and
/// that neither is, holds nor lies under a path the container has of its own.
pub fn check_site_mount(path: &Path) -> Result<(), SiteMountError> {
    let bytes = path.as_os_str().as_encoded_bytes();
    let normal = path.is_absolute()
        && path
            .components()
            .skip(1)
            .all(|c| matches!(c, std::path::Component::Normal(_)))
        && path.components().collect::<PathBuf>().as_os_str() == path.as_os_str();
    if !normal || path == Path::new("/") {
        return Err(SiteMountError::NotNormal {
            path: path.display().to_string(),
        });
    }
    if bytes
        .iter()
        .any(|b| *b == b',' || *b == b':' || b.is_ascii_control())
    {
        return Err(SiteMountError::Character {
            path: path.display().to_string(),
        });
    }
    for own in NOT_SITE_MOUNTABLE {
        let own = Path::new(own);
        if path.starts_with(own) || own.starts_with(path) {
            return Err(SiteMountError::Overlaps {
                path: path.display().to_string(),
                own: own.to_path_buf(),
            });
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Runtime {
    Podman,
    Apptainer,
}

impl Runtime {
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Podman => "podman",
            Runtime::Apptainer => "apptainer",
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the site or the job asked for: a runtime, or the first one the node has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuntimeChoice {
    Auto,
    Podman,
    Apptainer,
}

impl From<Runtime> for RuntimeChoice {
    fn from(runtime: Runtime) -> Self {
        match runtime {
            Runtime::Podman => RuntimeChoice::Podman,
            Runtime::Apptainer => RuntimeChoice::Apptainer,
        }
    }
}

impl RuntimeChoice {
    pub fn named(self) -> Option<Runtime> {
        match self {
            RuntimeChoice::Auto => None,
            RuntimeChoice::Podman => Some(Runtime::Podman),
            RuntimeChoice::Apptainer => Some(Runtime::Apptainer),
        }
    }
}

/// What runs in the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Entrypoint {
    /// The step's own command (the image's ENTRYPOINT is bypassed), like pyxis.
    #[default]
    Command,
    /// The image's ENTRYPOINT/CMD (apptainer: its runscript), given the step's
    /// arguments (for the batch step: the batch script's arguments).
    Image,
}

/// Where a batch job's script runs (its `srun` steps always run in the container).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BatchMode {
    /// In the container on the first node: a job is one container run.
    #[default]
    Container,
    /// On the host, so that it can start `srun` steps (on one node or several); the
    /// job's directories exist and `TRE_*` name their host paths.
    Host,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_mounts_must_be_normal_paths_away_from_the_containers_own() {
        for good in [
            "/etc/localtime",
            "/etc/hosts",
            "/opt/site/licences",
            "/scratchpad",
        ] {
            assert_eq!(check_site_mount(Path::new(good)), Ok(()), "{good}");
        }
        for bad in [
            "",
            "etc/hosts",
            "/",
            "/etc/../etc/shadow",
            "/etc/./hosts",
            "/etc//hosts",
            "/etc/hosts/",
            "/a,b",
            "/a:b",
            "/a\nb",
        ] {
            assert!(check_site_mount(Path::new(&bad)).is_err(), "{bad:?}");
        }
        for own in [
            "/safe_data",
            "/safe_data/x",
            "/safe_outputs",
            "/scratch/a",
            "/inputs",
            "/dev",
            "/dev/nvidia1",
            "/proc",
            "/sys/fs",
            "/tmp",
            "/var/tmp",
            "/var",
        ] {
            let e = check_site_mount(Path::new(own)).unwrap_err();
            assert!(
                e.to_string().contains("which the container has of its own"),
                "{own}: {e}"
            );
        }
    }
}
