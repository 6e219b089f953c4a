//! The job's `--tre-*` options: names, help text, and strict validation.
//!
//! Values arrive as bytes written by the user's client (or the job environment), so
//! they are hostile until parsed here.

use serde::Deserialize;
use std::fmt;

use super::config::Config;
use super::image::{ImageError, ImageRef};

pub const OPT_CONTAINER: &str = "tre-container";
pub const OPT_RUNTIME: &str = "tre-runtime";
pub const OPT_PROJECT: &str = "tre-project";

/// Every option, its argument name and its `--help` line.
pub const OPTIONS: &[(&str, &str, &str)] = &[
    (
        OPT_CONTAINER,
        "IMAGE",
        "Run the job (batch script or srun tasks) inside container IMAGE, e.g. ghcr.io/org/name:tag, with /safe_data, /safe_outputs and /scratch mounted",
    ),
    (OPT_RUNTIME, "RUNTIME", "Container runtime for --tre-container: podman or apptainer (default: the site's)"),
    (OPT_PROJECT, "PROJECT", "Project whose data is mounted at /safe_data, when you belong to several"),
];

/// Longest option value accepted (values are copied into the job environment).
pub const MAX_VALUE_LEN: usize = 4096;

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

/// Raw option values as Slurm hands them over (`None`: option not given).
#[derive(Debug, Default, Clone)]
pub struct RawOptions {
    pub container: Option<Vec<u8>>,
    pub runtime: Option<Vec<u8>>,
    pub project: Option<Vec<u8>>,
}

/// A validated request to run in a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRequest {
    pub image: ImageRef,
    pub runtime: Runtime,
    pub project: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    #[error("--{0} needs a value")]
    Empty(&'static str),
    #[error("--{0} value is longer than {MAX_VALUE_LEN} bytes")]
    TooLong(&'static str),
    #[error("--{0} value is not valid UTF-8")]
    NotUtf8(&'static str),
    #[error("--{0} value contains control characters")]
    Control(&'static str),
    #[error("--tre-runtime={0:?} is not a runtime: use podman or apptainer")]
    UnknownRuntime(String),
    #[error("--{0} only makes sense with --tre-container")]
    NeedsContainer(&'static str),
    #[error("--tre-project={0:?} is not a project name")]
    BadProject(String),
    #[error("--tre-container: {0}")]
    Image(#[from] ImageError),
}

fn text(option: &'static str, raw: &[u8]) -> Result<String, OptionError> {
    if raw.is_empty() {
        return Err(OptionError::Empty(option));
    }
    if raw.len() > MAX_VALUE_LEN {
        return Err(OptionError::TooLong(option));
    }
    let s = std::str::from_utf8(raw).map_err(|_| OptionError::NotUtf8(option))?;
    if s.chars().any(char::is_control) {
        return Err(OptionError::Control(option));
    }
    Ok(s.to_string())
}

pub fn parse_runtime(s: &str) -> Result<Runtime, OptionError> {
    match s {
        "podman" => Ok(Runtime::Podman),
        "apptainer" => Ok(Runtime::Apptainer),
        other => Err(OptionError::UnknownRuntime(other.to_string())),
    }
}

/// Project names are Unix-group-like: they become a path component under the safe_data root.
pub fn valid_project_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Validates the raw values. `Ok(None)`: no container was asked for.
pub fn parse(raw: &RawOptions, config: &Config) -> Result<Option<ContainerRequest>, OptionError> {
    let runtime = raw
        .runtime
        .as_deref()
        .map(|r| text(OPT_RUNTIME, r))
        .transpose()?;
    let project = raw
        .project
        .as_deref()
        .map(|p| text(OPT_PROJECT, p))
        .transpose()?;
    let Some(container) = raw.container.as_deref() else {
        if runtime.is_some() {
            return Err(OptionError::NeedsContainer(OPT_RUNTIME));
        }
        if project.is_some() {
            return Err(OptionError::NeedsContainer(OPT_PROJECT));
        }
        return Ok(None);
    };
    let image = ImageRef::parse(&text(OPT_CONTAINER, container)?)?;
    image.check_allowed(&config.allowed_registries)?;
    let runtime = match runtime {
        Some(r) => parse_runtime(&r)?,
        None => config.default_runtime,
    };
    if let Some(p) = &project {
        if !valid_project_name(p) {
            return Err(OptionError::BadProject(p.clone()));
        }
    }
    Ok(Some(ContainerRequest {
        image,
        runtime,
        project,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(c: Option<&[u8]>, r: Option<&[u8]>, p: Option<&[u8]>) -> RawOptions {
        RawOptions {
            container: c.map(<[u8]>::to_vec),
            runtime: r.map(<[u8]>::to_vec),
            project: p.map(<[u8]>::to_vec),
        }
    }

    fn cfg() -> Config {
        Config::default()
    }

    #[test]
    fn no_options_means_no_container() {
        assert_eq!(parse(&RawOptions::default(), &cfg()), Ok(None));
    }

    #[test]
    fn container_with_default_runtime() {
        let r = parse(
            &raw(Some(b"ghcr.io/mikej888/hello-tre:1.0"), None, None),
            &cfg(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.runtime, Runtime::Podman);
        assert_eq!(r.image.to_string(), "ghcr.io/mikej888/hello-tre:1.0");
    }

    #[test]
    fn runtime_values() {
        let r = parse(
            &raw(Some(b"ghcr.io/a/b:1"), Some(b"apptainer"), None),
            &cfg(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.runtime, Runtime::Apptainer);
        let e = parse(&raw(Some(b"ghcr.io/a/b:1"), Some(b"docker"), None), &cfg()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--tre-runtime=\"docker\" is not a runtime: use podman or apptainer"
        );
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        let long = vec![b'a'; MAX_VALUE_LEN + 1];
        let cases: Vec<(RawOptions, &str)> = vec![
            (raw(Some(b""), None, None), "--tre-container needs a value"),
            (raw(Some(&long), None, None), "longer than 4096"),
            (raw(Some(b"ghcr.io/a/\xff"), None, None), "not valid UTF-8"),
            (
                raw(Some(b"ghcr.io/a/b:1\n"), None, None),
                "control characters",
            ),
            (
                raw(None, Some(b"podman"), None),
                "--tre-runtime only makes sense with --tre-container",
            ),
            (
                raw(None, None, Some(b"proj1")),
                "--tre-project only makes sense with --tre-container",
            ),
            (
                raw(Some(b"docker.io/library/ubuntu:22.04"), None, None),
                "not from an allowed registry",
            ),
            (
                raw(Some(b"ghcr.io/a/b:1"), None, Some(b"../etc")),
                "not a project name",
            ),
            (
                raw(Some(b"ghcr.io/a/b:1"), Some(b""), None),
                "--tre-runtime needs a value",
            ),
        ];
        for (input, want) in cases {
            let got = parse(&input, &cfg()).unwrap_err().to_string();
            assert!(got.contains(want), "{input:?}: {got}");
        }
    }

    #[test]
    fn project_names() {
        assert!(valid_project_name("proj1"));
        assert!(valid_project_name("Proj_2.x-y"));
        for bad in ["", ".", "..", "-x", "a/b", "a b", &"p".repeat(65)] {
            assert!(!valid_project_name(bad), "{bad:?}");
        }
    }
}
