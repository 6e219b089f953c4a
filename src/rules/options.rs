//! The job's `--tre-*` options: names, help text, and strict validation.
//!
//! Values arrive as bytes written by the user's client (or the job environment), so
//! they are hostile until parsed here.

use super::config::Config;
use super::image::{ImageError, ImageRef};
// The values the options take are the rules' shared vocabulary (the config uses them
// too); they are re-exported here, where a job names them.
pub use super::vocab::{BatchMode, Entrypoint, Runtime, RuntimeChoice};

use super::project::valid_project_name;

pub const OPT_CONTAINER: &str = "tre-container";
pub const OPT_RUNTIME: &str = "tre-runtime";
pub const OPT_PROJECT: &str = "tre-project";
pub const OPT_ENV: &str = "tre-env";
pub const OPT_ENTRYPOINT: &str = "tre-entrypoint";
pub const OPT_BATCH: &str = "tre-batch";
pub const OPT_INPUTS: &str = "tre-inputs";

/// Every option, its argument name and its `--help` line.
pub const OPTIONS: &[(&str, &str, &str)] = &[
    (
        OPT_CONTAINER,
        "IMAGE",
        "Run the job (batch script or srun tasks) inside container IMAGE, e.g. ghcr.io/org/name:tag, with /safe_data, /safe_outputs and /scratch mounted",
    ),
    (OPT_RUNTIME, "RUNTIME", "Container runtime for --tre-container: podman, apptainer or auto (default: the site's)"),
    (OPT_PROJECT, "PROJECT", "Project whose data is mounted at /safe_data, when you belong to several"),
    (OPT_ENV, "NAME[,NAME...]", "Also pass these variables of the job's environment into the container (by name; values are never printed)"),
    (OPT_ENTRYPOINT, "MODE", "command (default): run the step's command in the container; image: run the image's own ENTRYPOINT/CMD (apptainer: runscript) with the step's arguments"),
    (OPT_BATCH, "WHERE", "container: the batch script runs in the container; host: it runs on the node and each srun step in it runs in the container (multi-node jobs) (default: the site's)"),
    (OPT_INPUTS, "outputs-N[,outputs-N...]", "Mount these outputs directories of your own earlier tre-spank jobs read-only at /inputs/outputs-N"),
];

/// Most names `--tre-env` accepts.
pub const MAX_ENV_NAMES: usize = 64;

/// Most directories `--tre-inputs` accepts.
pub const MAX_INPUTS: usize = 16;

/// Longest option value accepted (values are copied into the job environment).
pub const MAX_VALUE_LEN: usize = 4096;

/// Raw option values as Slurm hands them over (`None`: option not given).
#[derive(Debug, Default, Clone)]
pub struct RawOptions {
    pub container: Option<Vec<u8>>,
    pub runtime: Option<Vec<u8>>,
    pub project: Option<Vec<u8>>,
    pub env: Option<Vec<u8>>,
    pub entrypoint: Option<Vec<u8>>,
    pub batch: Option<Vec<u8>>,
    pub inputs: Option<Vec<u8>>,
}

impl RawOptions {
    pub fn any(&self) -> bool {
        self.container.is_some()
            || self.runtime.is_some()
            || self.project.is_some()
            || self.env.is_some()
            || self.entrypoint.is_some()
            || self.batch.is_some()
            || self.inputs.is_some()
    }
}

/// A validated request to run in a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRequest {
    pub image: ImageRef,
    pub runtime: RuntimeChoice,
    pub project: Option<String>,
    /// Extra variables the user forwards by name.
    pub env: Vec<String>,
    pub entrypoint: Entrypoint,
    pub batch: BatchMode,
    /// The NUMBERs of earlier jobs' `outputs-N` to mount read-only under `/inputs`.
    pub inputs: Vec<u32>,
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
    #[error("--tre-runtime={0:?} is not a runtime: use podman, apptainer or auto")]
    UnknownRuntime(String),
    #[error("--tre-env: {0:?} is not a variable name (letters, digits and '_', not starting with a digit)")]
    BadEnvName(String),
    #[error("--tre-env: {0} is set by tre-spank or the runtime and cannot be forwarded")]
    ReservedEnvName(String),
    #[error("--tre-env: at most {MAX_ENV_NAMES} names")]
    TooManyEnvNames,
    #[error("--tre-entrypoint={0:?} is not a mode: use command or image")]
    UnknownEntrypoint(String),
    #[error("--tre-batch={0:?} is not a place: use container or host")]
    UnknownBatchMode(String),
    #[error("--tre-inputs: {0:?} is not the name of a job's outputs directory (outputs-N, as printed in the job's output)")]
    BadInput(String),
    #[error("--tre-inputs: at most {MAX_INPUTS} directories")]
    TooManyInputs,
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

pub fn parse_runtime(s: &str) -> Result<RuntimeChoice, OptionError> {
    match s {
        "podman" => Ok(RuntimeChoice::Podman),
        "apptainer" => Ok(RuntimeChoice::Apptainer),
        "auto" => Ok(RuntimeChoice::Auto),
        other => Err(OptionError::UnknownRuntime(other.to_string())),
    }
}

pub fn parse_entrypoint(s: &str) -> Result<Entrypoint, OptionError> {
    match s {
        "command" => Ok(Entrypoint::Command),
        "image" => Ok(Entrypoint::Image),
        other => Err(OptionError::UnknownEntrypoint(other.to_string())),
    }
}

pub fn parse_batch_mode(s: &str) -> Result<BatchMode, OptionError> {
    match s {
        "container" => Ok(BatchMode::Container),
        "host" => Ok(BatchMode::Host),
        other => Err(OptionError::UnknownBatchMode(other.to_string())),
    }
}

/// A portable variable name: `[A-Za-z_][A-Za-z0-9_]*`, at most 128 bytes.
pub fn valid_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && s.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Names the plugin or the runtimes own: tre-spank's own variables, every variable
/// that steers a runtime, its helpers or the loader (podman reads a `--env=NAME`
/// value from its own environment, see `runtime::steers_runtime`), and Slurm's
/// (already forwarded, all of them).
pub fn reserved_env_name(s: &str) -> bool {
    ["TRE_", "SLURM_"].iter().any(|p| s.starts_with(p))
        || s == "CUDA_VISIBLE_DEVICES"
        || super::runtime::steers_runtime(s.as_bytes())
}

/// `NAME[,NAME...]`: strict names, duplicates dropped, order kept.
pub fn parse_env_names(s: &str) -> Result<Vec<String>, OptionError> {
    let mut names: Vec<String> = Vec::new();
    for name in s.split(',') {
        if !valid_env_name(name) {
            return Err(OptionError::BadEnvName(name.to_string()));
        }
        if reserved_env_name(name) {
            return Err(OptionError::ReservedEnvName(name.to_string()));
        }
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    if names.len() > MAX_ENV_NAMES {
        return Err(OptionError::TooManyEnvNames);
    }
    Ok(names)
}

/// `outputs-N[,outputs-N...]`: the NUMBERs, in the form tre-spank prints them (no sign,
/// no leading zeros), duplicates dropped, order kept.
pub fn parse_inputs(s: &str) -> Result<Vec<u32>, OptionError> {
    let mut numbers: Vec<u32> = Vec::new();
    for name in s.split(',') {
        let number = name
            .strip_prefix("outputs-")
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|n| super::plan::outputs_name(*n) == name)
            .ok_or_else(|| OptionError::BadInput(name.to_string()))?;
        if !numbers.contains(&number) {
            numbers.push(number);
        }
    }
    if numbers.len() > MAX_INPUTS {
        return Err(OptionError::TooManyInputs);
    }
    Ok(numbers)
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
    let env = raw.env.as_deref().map(|e| text(OPT_ENV, e)).transpose()?;
    let entrypoint = raw
        .entrypoint
        .as_deref()
        .map(|e| text(OPT_ENTRYPOINT, e))
        .transpose()?;
    let batch = raw
        .batch
        .as_deref()
        .map(|b| text(OPT_BATCH, b))
        .transpose()?;
    let inputs = raw
        .inputs
        .as_deref()
        .map(|i| text(OPT_INPUTS, i))
        .transpose()?;
    let Some(container) = raw.container.as_deref() else {
        for (given, name) in [
            (runtime.is_some(), OPT_RUNTIME),
            (project.is_some(), OPT_PROJECT),
            (env.is_some(), OPT_ENV),
            (entrypoint.is_some(), OPT_ENTRYPOINT),
            (batch.is_some(), OPT_BATCH),
            (inputs.is_some(), OPT_INPUTS),
        ] {
            if given {
                return Err(OptionError::NeedsContainer(name));
            }
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
    let env = env
        .as_deref()
        .map(parse_env_names)
        .transpose()?
        .unwrap_or_default();
    let entrypoint = entrypoint
        .as_deref()
        .map(parse_entrypoint)
        .transpose()?
        .unwrap_or_default();
    let batch = match batch {
        Some(b) => parse_batch_mode(&b)?,
        None => config.batch,
    };
    let inputs = inputs
        .as_deref()
        .map(parse_inputs)
        .transpose()?
        .unwrap_or_default();
    Ok(Some(ContainerRequest {
        image,
        runtime,
        project,
        env,
        entrypoint,
        batch,
        inputs,
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
            ..RawOptions::default()
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
        assert_eq!(r.runtime, RuntimeChoice::Podman);
        assert_eq!(r.entrypoint, Entrypoint::Command);
        assert!(r.env.is_empty());
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
        assert_eq!(r.runtime, RuntimeChoice::Apptainer);
        let r = parse(&raw(Some(b"ghcr.io/a/b:1"), Some(b"auto"), None), &cfg())
            .unwrap()
            .unwrap();
        assert_eq!(r.runtime, RuntimeChoice::Auto);
        let e = parse(&raw(Some(b"ghcr.io/a/b:1"), Some(b"docker"), None), &cfg()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--tre-runtime=\"docker\" is not a runtime: use podman, apptainer or auto"
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

    fn with(env: Option<&[u8]>, entrypoint: Option<&[u8]>) -> RawOptions {
        RawOptions {
            env: env.map(<[u8]>::to_vec),
            entrypoint: entrypoint.map(<[u8]>::to_vec),
            ..raw(Some(b"ghcr.io/a/b:1"), None, None)
        }
    }

    #[test]
    fn env_names_are_strict_and_deduplicated() {
        let r = parse(
            &with(Some(b"MY_VAR,OMP_NUM_THREADS,MY_VAR,_x1"), None),
            &cfg(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.env, vec!["MY_VAR", "OMP_NUM_THREADS", "_x1"]);
        for bad in [
            &b""[..],
            b"A,,B",
            b"1ABC",
            b"A-B",
            b"A=B",
            b"A B",
            b"$HOME",
            b"A,\xc3\xa9",
        ] {
            assert!(parse(&with(Some(bad), None), &cfg()).is_err(), "{bad:?}");
        }
        for reserved in [
            "TRE_PROJECT",
            "SLURM_JOB_ID",
            "APPTAINERENV_X",
            "APPTAINER_BIND",
            "SINGULARITY_BIND",
            "TMPDIR",
            "CUDA_VISIBLE_DEVICES",
        ] {
            let e = parse(&with(Some(reserved.as_bytes()), None), &cfg())
                .unwrap_err()
                .to_string();
            assert!(e.contains("cannot be forwarded"), "{reserved}: {e}");
        }
        let many: Vec<String> = (0..=MAX_ENV_NAMES).map(|i| format!("V{i}")).collect();
        let e = parse(&with(Some(many.join(",").as_bytes()), None), &cfg()).unwrap_err();
        assert_eq!(e, OptionError::TooManyEnvNames);
    }

    #[test]
    fn inputs_are_outputs_names_only() {
        let with_inputs = |v: &[u8]| RawOptions {
            inputs: Some(v.to_vec()),
            ..raw(Some(b"ghcr.io/a/b:1"), None, None)
        };
        let r = parse(
            &with_inputs(b"outputs-123,outputs-4294967295,outputs-123"),
            &cfg(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.inputs, vec![123, 4_294_967_295]);
        for bad in [
            &b""[..],
            b"outputs-",
            b"outputs-007",
            b"outputs-+1",
            b"outputs--1",
            b"outputs-4294967296",
            b"scratch-1",
            b"outputs-1,",
            b"../outputs-1",
            b"outputs-1/x",
            b"/home/bob/outputs-1",
            b"outputs-1 ",
        ] {
            assert!(parse(&with_inputs(bad), &cfg()).is_err(), "{bad:?}");
        }
        let e = parse(&with_inputs(b"scratch-5"), &cfg()).unwrap_err();
        assert_eq!(e.to_string(), "--tre-inputs: \"scratch-5\" is not the name of a job's outputs directory (outputs-N, as printed in the job's output)");
        let many: Vec<String> = (0..=MAX_INPUTS).map(|i| format!("outputs-{i}")).collect();
        let e = parse(&with_inputs(many.join(",").as_bytes()), &cfg()).unwrap_err();
        assert_eq!(e, OptionError::TooManyInputs);
        let e = parse(
            &RawOptions {
                inputs: Some(b"outputs-1".to_vec()),
                ..RawOptions::default()
            },
            &cfg(),
        )
        .unwrap_err();
        assert_eq!(e, OptionError::NeedsContainer(OPT_INPUTS));
    }

    #[test]
    fn entrypoint_modes() {
        let r = parse(&with(None, Some(b"image")), &cfg()).unwrap().unwrap();
        assert_eq!(r.entrypoint, Entrypoint::Image);
        let r = parse(&with(None, Some(b"command")), &cfg())
            .unwrap()
            .unwrap();
        assert_eq!(r.entrypoint, Entrypoint::Command);
        let e = parse(&with(None, Some(b"shell")), &cfg()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--tre-entrypoint=\"shell\" is not a mode: use command or image"
        );
    }

    #[test]
    fn env_and_entrypoint_need_a_container() {
        let mut r = with(Some(b"A"), None);
        r.container = None;
        assert_eq!(
            parse(&r, &cfg()).unwrap_err().to_string(),
            "--tre-env only makes sense with --tre-container"
        );
        let mut r = with(None, Some(b"image"));
        r.container = None;
        assert_eq!(
            parse(&r, &cfg()).unwrap_err().to_string(),
            "--tre-entrypoint only makes sense with --tre-container"
        );
    }

    #[test]
    fn batch_mode_from_the_option_or_the_site() {
        let mut r = with(None, None);
        assert_eq!(
            parse(&r, &cfg()).unwrap().unwrap().batch,
            BatchMode::Container
        );
        let site = Config {
            batch: BatchMode::Host,
            ..cfg()
        };
        assert_eq!(parse(&r, &site).unwrap().unwrap().batch, BatchMode::Host);
        r.batch = Some(b"container".to_vec());
        assert_eq!(
            parse(&r, &site).unwrap().unwrap().batch,
            BatchMode::Container
        );
        r.batch = Some(b"hosts".to_vec());
        assert_eq!(
            parse(&r, &cfg()).unwrap_err().to_string(),
            "--tre-batch=\"hosts\" is not a place: use container or host"
        );
        r.container = None;
        r.batch = Some(b"host".to_vec());
        assert_eq!(
            parse(&r, &cfg()).unwrap_err().to_string(),
            "--tre-batch only makes sense with --tre-container"
        );
    }
}
