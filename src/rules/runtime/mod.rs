//! Runtime command lines. Flags come from code and the site config only; nothing the
//! user typed becomes a flag (the image and the task's own argv come last).

use super::config::{Config, UserNamespace};
use super::plan::ContainerPlan;
use super::vocab::{Entrypoint, Runtime, RuntimeChoice};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

mod apptainer;
mod conmon;
mod display;
mod env;
mod exit;
mod gpu;
mod podman;
mod supervisor;

pub use apptainer::*;
pub use conmon::*;
pub use display::*;
pub use env::*;
pub use exit::*;
pub use gpu::*;
pub use podman::*;
pub use supervisor::*;

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
fn flag(name: &str, value: impl AsRef<OsStr>) -> OsString {
    let mut f = OsString::from(format!("--{name}="));
    f.push(value.as_ref());
    f
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
        matches!(target, Target::Podman(_))
            && config.podman.user_namespace == UserNamespace::TreSpank,
        runtime_argv[..runtime_argv.len() - kept].to_vec(),
    );
    Ok(JobCommand {
        runtime_argv,
        task_prefix,
    })
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    use std::path::Path;

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
}

/// The values the tests of every runtime file share.
#[cfg(test)]
mod fixtures {
    use super::*;
    use crate::rules::config::ApptainerConfig;
    use crate::rules::image::ImageRef;
    use crate::rules::plan::{container_plan, JobDirs};
    use crate::rules::project::{Project, Resolution, SafeData};
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::ffi::OsStringExt;
    use std::path::{Path, PathBuf};

    pub(super) fn plan() -> ContainerPlan {
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
    pub(super) fn storage() -> PodmanStorage<'static> {
        PodmanStorage {
            job_dir: Path::new("/var/lib/tre-spank/jobs/job-42"),
            run_dir: Path::new("/run/tre-spank/jobs/job-42"),
            home: Path::new("/home/alice"),
            user_store_exists: true,
            transient_store: true,
            conmon: None,
        }
    }
    pub(super) fn strings(v: &[OsString]) -> Vec<String> {
        v.iter().map(|s| s.to_string_lossy().into_owned()).collect()
    }
    pub(super) fn task<'a>(argv: &'a [OsString], names: &'a [String]) -> TaskLaunch<'a> {
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
    pub(super) fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }
    pub(super) fn app_plan() -> ContainerPlan {
        let mut p = plan();
        p.runtime = Runtime::Apptainer;
        p
    }
    pub(super) const SIF: &str = "/var/lib/tre-spank/sif/ghcr.io/mikej888/hello-tre_1.0.sif";
    pub(super) fn batch_argv(
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
    pub(super) fn bytes(b: &[u8]) -> OsString {
        OsString::from_vec(b.to_vec())
    }
    pub(super) fn env_of(pairs: &[(&[u8], &[u8])]) -> Vec<(OsString, OsString)> {
        pairs.iter().map(|(k, v)| (bytes(k), bytes(v))).collect()
    }
    pub(super) fn value<'a>(env: &'a [(OsString, OsString)], name: &str) -> Option<&'a [u8]> {
        env.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_bytes())
    }
}
