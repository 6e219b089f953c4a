//! A container step from start to end, free of Slurm: what slurmstepd
//! (`spank::stepd`) and `tre-spank plan` both run, in the same order.
//!
//! The step's facts come through [`StepFacts`] (what slurmstepd knows: ids, options,
//! the task's command and environment) and the node through [`StepHost`] (config,
//! accounts, the secret, records, directories). [`NodeHost`] is the real node; the unit
//! tests give fakes of both. Each stage returns what to apply:
//!
//! - [`prepare`] (root, `init_post_opt`): config, request, runtime, account, NUMBER.
//! - [`resolve`] (as the user, `user_init`): the project's data and the job's
//!   directories; [`make_ready`] also creates or confirms them (`plan` does not).
//! - [`task`] (as the user, `task_init`): the changes to the task's environment, the
//!   lines the job shows, and the command the task becomes.
//!
//! [`Step`] is the step's state between slurmstepd's callbacks.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::account::{self, Account, AccountError};
use super::devices;
use super::dirs::{self, Dir, DirError, DirId, JobDirSpec, ScratchIn};
use super::inputs::{self, InputError};
use super::job::{self, SecretError};
use super::liveness;
use super::podman_version;
use super::runtime_dir::{self, RuntimeDirError};
use super::state::{JobRecord, StateDir, StateError};
use super::trust::{self, TrustError};
use crate::rules::config::{Config, ConfigError};
use crate::rules::image::ImageRef;
use crate::rules::job_number::SubmitTimeError;
use crate::rules::job_number::{job_number, JobIdentity, NumberError};
use crate::rules::options::{self, BatchMode, ContainerRequest, OptionError, RawOptions, Runtime};
use crate::rules::plan::{self, outputs_name, scratch_name, JobDirs, Mount, IN_CONTAINER_VAR};
use crate::rules::project::{ProjectError, Resolution, SafeData};
use crate::rules::proof::{JobFacts, ProofKey};
use crate::rules::runtime::{self, ApptainerError, RuntimeChoiceError, Target, TaskLaunch};

/// Slurm's step id for the batch script (`SLURM_BATCH_SCRIPT`).
pub const BATCH_STEP_ID: u32 = 0xffff_fffb;

/// Why a step does not run. [`StepError::line`] is what the job shows: tests assert
/// it verbatim.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// A call to Slurm or the system failed (`what`: "get the job's uid", ...).
    #[error("cannot {what}: {detail}")]
    Cannot { what: String, detail: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Option(#[from] OptionError),
    #[error("--tre-container is missing")]
    NoContainer,
    #[error(transparent)]
    Runtime(#[from] RuntimeChoiceError),
    #[error("the image reference has no name")]
    NoImageName,
    #[error("image {image} is not on node {node}: no SIF file {} (images reach the nodes only through the site's approved process, and jobs never pull)", .sif.display())]
    NoSif {
        image: String,
        node: String,
        sif: PathBuf,
    },
    #[error(transparent)]
    Account(#[from] AccountError),
    #[error("refusing {0}")]
    Untrusted(#[from] TrustError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Number(#[from] NumberError),
    #[error("the job number secret is empty")]
    EmptySecret,
    #[error("cannot tell this job from an earlier one with its id: {0}")]
    SubmitTime(#[from] SubmitTimeError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    RuntimeDir(#[from] RuntimeDirError),
    #[error(transparent)]
    Dir(#[from] DirError),
    #[error(transparent)]
    Project(#[from] ProjectError),
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Command(#[from] ApptainerError),
    /// Without a record the epilog could not remove scratch: the task does not run.
    #[error("cannot record the job's directories: {0}")]
    Record(StateError),
    /// A callback came out of order (slurmstepd's order is fixed).
    #[error("internal error: the step was not prepared")]
    NotPrepared,
}

impl StepError {
    /// The line the job shows (and the audit record's reason): the plugin's name in
    /// front, except for the project lines, which are the real service's own, verbatim
    /// (`Cannot open project data: ...`).
    pub fn line(&self) -> String {
        match self {
            StepError::Project(e) => e.to_string(),
            e => super::log::prefixed(e),
        }
    }

    /// A call that failed, as the job shows it (`cannot WHAT: DETAIL`).
    pub fn cannot(what: impl Into<String>, detail: impl std::fmt::Display) -> StepError {
        StepError::Cannot {
            what: what.into(),
            detail: detail.to_string(),
        }
    }
}

/// What slurmstepd knows of the step (the `SpankHandle` in the plugin, the command line
/// in `tre-spank plan`). Everything from the job's environment is the user's.
pub trait StepFacts {
    /// The arguments of the plugin's line in plugstack.conf.
    fn plugin_args(&self) -> Result<Vec<String>, StepError>;
    /// The `--tre-*` options as given.
    fn options(&self) -> RawOptions;
    /// `None`: no job yet (`tre-spank plan`; its id and NUMBER are shown as JOBID, N).
    fn job_id(&self) -> Result<Option<u32>, StepError>;
    fn step_id(&self) -> Option<u32>;
    fn restart_count(&self) -> u32;
    fn uid(&self) -> Result<u32, StepError>;
    fn gid(&self) -> Result<u32, StepError>;
    /// The job's supplementary groups (Slurm's credential).
    fn supplementary_gids(&self) -> Vec<u32>;
    /// A variable of the task's environment (the user's).
    fn getenv(&self, name: &str) -> Option<OsString>;
    /// Every variable name of the task's environment, as bytes.
    fn env_names(&self) -> Vec<OsString>;
    /// The task's own command.
    fn task_argv(&self) -> Result<Vec<OsString>, StepError>;
    /// The task's global id (`None`: unknown).
    fn task_id(&self) -> Option<u32>;
    /// Whether the task's stdin is a terminal.
    fn tty(&self) -> bool;
    /// The task's working directory.
    fn cwd(&self) -> Option<PathBuf>;
}

/// What the step needs from the node. [`NodeHost`] is the real one.
pub trait StepHost {
    /// An open home directory of the job's user.
    type Home;
    /// This node's own name (never anything from the job).
    fn node_name(&self) -> String;
    /// The site config as it applies to this node.
    fn load_config(&self, args: &[&str], node: &str) -> Result<Config, StepError>;
    fn is_file(&self, path: &Path) -> bool;
    fn is_dir(&self, path: &Path) -> bool;
    fn account(&self, uid: u32, gid: u32, gids: &[u32]) -> Result<Account, StepError>;
    /// The job-number secret, once it and `tool_path` are known to be root's.
    fn secret(&self, config: &Config) -> Result<Vec<u8>, StepError>;
    /// The record an earlier step of the job left on this node.
    fn record(&self, config: &Config, job_id: u32) -> Result<Option<JobRecord>, StepError>;
    /// Sets a record aside for the sweep; returns the name it is kept under.
    fn retire(&self, config: &Config, record: &JobRecord) -> Result<String, StepError>;
    fn save_record(&self, config: &Config, record: &JobRecord) -> Result<(), StepError>;
    /// The job's submit time as the controller has it (never from the job's
    /// environment, the user's): what tells this job from an earlier one with its id.
    fn submit_time(&self, config: &Config, job_id: u32) -> Result<u64, StepError>;
    /// The job's runtime state on node-local disk (podman's graph root; made if missing).
    fn runtime_dir(
        &self,
        config: &Config,
        job_id: u32,
        uid: u32,
        gid: u32,
    ) -> Result<PathBuf, StepError>;
    /// The job's run state on a tmpfs: `$XDG_RUNTIME_DIR` and podman's run root (made
    /// if missing).
    fn run_dir(
        &self,
        config: &Config,
        job_id: u32,
        uid: u32,
        gid: u32,
    ) -> Result<PathBuf, StepError>;
    /// What the node's podman can do for a job (one look at host::podman_version).
    fn podman_features(&self, config: &Config) -> PodmanFeatures;
    /// The GPU control devices this node has (`/dev/nvidiactl` and the like), for an
    /// apptainer step that was given GPUs.
    fn gpu_control(&self) -> Vec<PathBuf>;
    /// The image's immutable id for the audit records (`unknown` if not found).
    fn image_id(
        &self,
        config: &Config,
        runtime: Runtime,
        image: &ImageRef,
        sif: Option<&Path>,
    ) -> String;
    /// As the user from here on.
    fn open_home(&self, home: &Path) -> Result<Self::Home, StepError>;
    fn resolve_project(
        &self,
        home: &Self::Home,
        account: &Account,
        config: &Config,
        requested: Option<&str>,
    ) -> Result<Resolution, StepError>;
    /// `--tre-inputs`: the host paths of the earlier jobs' outputs (checked).
    fn check_inputs(
        &self,
        home: &Self::Home,
        account: &Account,
        numbers: &[u32],
        number: u32,
        key: &ProofKey,
    ) -> Result<Vec<PathBuf>, StepError>;
    /// Creates, joins or confirms the job's directories as `plan` says.
    fn make_dirs(&self, home: &Self::Home, plan: &DirPlan<'_>) -> Result<MadeDirs, StepError>;
}

/// Which job the step belongs to.
// One per step, held in a box already (Step::Prepared): boxing the variant buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub enum Identity {
    /// A job Slurm started.
    Job {
        job_id: u32,
        number: u32,
        /// What the proof of the job's directories names (see rules::proof).
        facts: JobFacts,
        key: ProofKey,
        /// The record an earlier step of this job left on this node.
        earlier: Option<JobRecord>,
    },
    /// The job a user would submit (`tre-spank plan`): nothing is made.
    Planned,
}

/// After `init_post_opt`: everything checked out that root can check.
#[derive(Clone)]
pub struct Prepared {
    pub config: Config,
    pub request: ContainerRequest,
    /// The runtime chosen for this node.
    pub runtime: Runtime,
    /// apptainer: the image's SIF file (checked to exist).
    pub sif: Option<PathBuf>,
    pub image_id: String,
    pub account: Account,
    pub identity: Identity,
    /// Per-job runtime state on disk (podman's graph root).
    pub runtime_dir: PathBuf,
    /// Per-job run state on a tmpfs: `$XDG_RUNTIME_DIR` and podman's run root.
    pub run_dir: PathBuf,
    /// The node's podman has `--transient-store`.
    pub transient_store: bool,
    /// podman runs the exit guard's conmon wrapper (StepHost::exit_guard).
    pub exit_guard: bool,
    pub node: String,
    /// The step runs the batch script.
    pub is_batch: bool,
    /// The batch step of a `--tre-batch=host` job: directories and variables, no
    /// container (its srun steps run in the container).
    pub host_batch: bool,
}

/// After the project's data and the job's directories are known (as the user).
#[derive(Clone)]
pub struct Resolved {
    pub prepared: Prepared,
    pub resolution: Resolution,
    pub dirs: JobDirs,
    /// `--tre-inputs`: earlier jobs' outputs directories (checked), mounted read-only.
    pub inputs: Vec<PathBuf>,
}

/// After `user_init`: the directories exist.
#[derive(Clone)]
pub struct Ready {
    pub resolved: Resolved,
    pub made: MadeDirs,
    /// When the step's tasks were about to start (audit records).
    pub started: SystemTime,
}

/// The job's directories on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MadeDirs {
    pub outputs: DirId,
    pub scratch: DirId,
    pub origin: Origin,
}

/// How this step came to the directories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// An earlier step on this node made them (its record names them).
    Earlier,
    Created,
    /// Made for this job by another step (another node, or one starting with this).
    Joined,
}

/// What [`StepHost::make_dirs`] is asked to do.
pub struct DirPlan<'a> {
    pub home: &'a Path,
    pub uid: u32,
    pub outputs: String,
    pub scratch: String,
    /// `None`: scratch in `home`.
    pub scratch_in: Option<ScratchIn<'a>>,
    /// The directory holding `scratch`.
    pub scratch_parent: PathBuf,
    pub action: DirAction<'a>,
}

pub enum DirAction<'a> {
    /// The directories an earlier step recorded: they must still be those.
    Confirm { outputs: DirId, scratch: DirId },
    /// The first step here: create them, or join those made for this job.
    CreateOrJoin {
        facts: JobFacts,
        key: &'a ProofKey,
        number: u32,
    },
}

/// One change to the task's environment, applied in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvChange {
    Set(OsString, OsString),
    Unset(OsString),
    /// apptainer `--cleanenv`: `APPTAINERENV_<name>` from the task's own value.
    Pass {
        name: String,
        value: OsString,
    },
}

/// What a task gets.
pub struct TaskPlan {
    pub env: Vec<EnvChange>,
    /// Shown on the job's output (task 0 only), in order.
    pub lines: Vec<String>,
    /// `None`: the batch script of `--tre-batch=host` runs on the host as it is.
    pub command: Option<TaskCommand>,
}

/// The container command of one task.
pub struct TaskCommand {
    /// What the `Running:` line shows.
    pub runtime_argv: Vec<OsString>,
    /// What the task's own argv gets in front of it (see spank::start).
    pub task_prefix: Vec<OsString>,
    pub task_argv: Vec<OsString>,
    pub mounts: Vec<Mount>,
}

/// A step that runs in a container: root's checks (`init_post_opt`).
/// What the node's podman can do for a job's command line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodmanFeatures {
    /// `--transient-store` (podman 4.4 and later).
    pub transient_store: bool,
    /// The exit guard applies: the site has it on, the node has the package's conmon
    /// wrapper and its podman is 5.0 or later (podman 4 waits for its own clean-up
    /// before `podman run` exits, so there the guard would only hold the step).
    pub exit_guard: bool,
}

pub fn prepare(facts: &impl StepFacts, host: &impl StepHost) -> Result<Prepared, StepError> {
    let args = facts.plugin_args()?;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // Per-node settings by this node's own name, never by anything from the job.
    let node = host.node_name();
    let mut config = host.load_config(&args, &node)?;
    // podman refuses to start with a missing store: a node that has not received the
    // site store yet runs jobs from the user's own storage, if the site allows that.
    config.podman.image_stores.retain(|s| host.is_dir(s));
    let request = options::parse(&facts.options(), &config)?.ok_or(StepError::NoContainer)?;
    let installed = |r: Runtime| match r {
        Runtime::Podman => host.is_file(&config.podman.path),
        Runtime::Apptainer => host.is_file(&config.apptainer.path),
    };
    let runtime = runtime::choose_runtime(request.runtime, &config.runtimes, &installed, &node)?;
    // A root-managed path: a stat here is cheap and needs no runtime call.
    let sif = match runtime {
        Runtime::Podman => None,
        Runtime::Apptainer => {
            let sif = runtime::sif_path(&config.apptainer.sif_dir, &request.image)
                .ok_or(StepError::NoImageName)?;
            if !host.is_file(&sif) {
                return Err(StepError::NoSif {
                    image: request.image.to_string(),
                    node,
                    sif,
                });
            }
            Some(sif)
        }
    };
    let uid = facts.uid()?;
    let gid = facts.gid()?;
    let job_id = facts.job_id()?;
    let account = host.account(uid, gid, &facts.supplementary_gids())?;
    let secret = host.secret(&config)?;
    let is_batch = facts.step_id() == Some(BATCH_STEP_ID);
    let host_batch = request.batch == BatchMode::Host && is_batch;
    let podman = if runtime == Runtime::Podman {
        host.podman_features(&config)
    } else {
        PodmanFeatures::default()
    };
    let Some(job_id) = job_id else {
        return Ok(Prepared {
            runtime_dir: config.runtime_dir.join("job-JOBID"),
            run_dir: config.run_dir.join("job-JOBID"),
            transient_store: podman.transient_store,
            exit_guard: podman.exit_guard,
            config,
            request,
            runtime,
            sif,
            image_id: "unknown".into(),
            account,
            identity: Identity::Planned,
            node,
            is_batch,
            host_batch,
        });
    };
    let restarts = facts.restart_count();
    let submitted = host.submit_time(&config, job_id)?;
    let number = job_number(
        &secret,
        &JobIdentity {
            job_id,
            restart_count: restarts,
            submitted,
        },
    )?;
    let key = ProofKey::derive(&secret).ok_or(StepError::EmptySecret)?;
    drop(secret);
    let mut earlier = host.record(&config, job_id)?;
    if let Some(r) = earlier.take_if(|r| !r.is_of(submitted, uid, number)) {
        // Not this job's (submit time, uid and NUMBER are fixed for a job): an earlier
        // job with the same id (ids wrapped, the controller was reset, a requeue, a
        // record of the previous format) whose cleanup did not finish. Set aside for
        // the sweep, never adopted.
        let name = host.retire(&config, &r)?;
        log::info!(
            "job {job_id}: the record on this node was an earlier job's with the same id: kept as {name} for the sweep"
        );
    }
    let runtime_dir = host.runtime_dir(&config, job_id, uid, gid)?;
    let run_dir = host.run_dir(&config, job_id, uid, gid)?;
    let image_id = host.image_id(&config, runtime, &request.image, sif.as_deref());
    Ok(Prepared {
        config,
        request,
        runtime,
        sif,
        image_id,
        account,
        identity: Identity::Job {
            job_id,
            number,
            facts: JobFacts {
                job_id,
                restart_count: restarts,
                submitted,
                uid,
                number,
            },
            key,
            earlier,
        },
        runtime_dir,
        run_dir,
        transient_store: podman.transient_store,
        exit_guard: podman.exit_guard,
        node,
        is_batch,
        host_batch,
    })
}

/// The project's data and the job's directories (as the user; nothing is made).
pub fn resolve<H: StepHost>(
    prepared: Prepared,
    host: &H,
    home: &H::Home,
) -> Result<Resolved, StepError> {
    let p = &prepared;
    let resolution =
        host.resolve_project(home, &p.account, &p.config, p.request.project.as_deref())?;
    let scratch_parent =
        plan::scratch_parent(&p.account.home, &p.config.scratch_root, &p.account.name);
    let (dirs, inputs) = match &p.identity {
        Identity::Job { number, key, .. } => (
            JobDirs::with_scratch_in(&p.account.home, &scratch_parent, *number),
            host.check_inputs(home, &p.account, &p.request.inputs, *number, key)?,
        ),
        // The job number is secret-keyed per job: shown as N.
        Identity::Planned => (
            JobDirs {
                number: 0,
                outputs: p.account.home.join("outputs-N"),
                scratch: scratch_parent.join("scratch-N"),
            },
            Vec::new(),
        ),
    };
    Ok(Resolved {
        prepared,
        resolution,
        dirs,
        inputs,
    })
}

/// What the step's directories need (`None` in a plan).
pub fn dir_plan(p: &Prepared) -> Option<DirPlan<'_>> {
    let Identity::Job {
        number,
        facts,
        key,
        earlier,
        ..
    } = &p.identity
    else {
        return None;
    };
    let home = p.account.home.as_path();
    // scratch-N in $HOME, or in the site's scratch root (`<scratch_root>/<user>`).
    let scratch_in = (!p.config.scratch_root.as_os_str().is_empty()).then_some(ScratchIn {
        root: &p.config.scratch_root,
        user: &p.account.name,
    });
    Some(DirPlan {
        home,
        uid: p.account.uid,
        outputs: outputs_name(*number),
        scratch: scratch_name(*number),
        scratch_in,
        scratch_parent: plan::scratch_parent(home, &p.config.scratch_root, &p.account.name),
        action: match earlier {
            Some(r) => DirAction::Confirm {
                outputs: r.outputs,
                scratch: r.scratch,
            },
            None => DirAction::CreateOrJoin {
                facts: *facts,
                key,
                number: *number,
            },
        },
    })
}

/// `user_init` (as the user): resolves, then creates or confirms the directories.
pub fn make_ready(prepared: Prepared, host: &impl StepHost) -> Result<Ready, StepError> {
    let home = host.open_home(&prepared.account.home)?;
    let resolved = resolve(prepared, host, &home)?;
    let plan = dir_plan(&resolved.prepared).ok_or(StepError::NotPrepared)?;
    let made = host.make_dirs(&home, &plan)?;
    if made.origin == Origin::Joined {
        if let Identity::Job { job_id, .. } = resolved.prepared.identity {
            log::info!(
                "job {job_id}: using {} made for this job by another step (proof checked)",
                resolved.dirs.outputs.display()
            );
        }
    }
    Ok(Ready {
        resolved,
        made,
        started: SystemTime::now(),
    })
}

/// The record the epilog needs (`None`: an earlier step here wrote it already).
pub fn record(ready: &Ready) -> Option<JobRecord> {
    let p = &ready.resolved.prepared;
    let Identity::Job {
        job_id,
        number,
        ref facts,
        ..
    } = p.identity
    else {
        return None;
    };
    if ready.made.origin == Origin::Earlier {
        return None;
    }
    let home = &p.account.home;
    let scratch_parent = ready.resolved.dirs.scratch.parent();
    Some(JobRecord {
        job_id,
        submitted: Some(facts.submitted),
        uid: p.account.uid,
        number,
        home: home.clone(),
        outputs: ready.made.outputs,
        scratch: ready.made.scratch,
        scratch_parent: (scratch_parent != Some(home.as_path()))
            .then(|| scratch_parent.map(Path::to_path_buf))
            .flatten(),
    })
}

/// The task's environment as the earlier changes left it.
struct EnvView<'a, F> {
    facts: &'a F,
    changes: &'a [EnvChange],
}

impl<F: StepFacts> EnvView<'_, F> {
    fn get(&self, name: &str) -> Option<OsString> {
        for c in self.changes.iter().rev() {
            match c {
                EnvChange::Set(n, v) if n.as_bytes() == name.as_bytes() => return Some(v.clone()),
                EnvChange::Unset(n) if n.as_bytes() == name.as_bytes() => return None,
                _ => {}
            }
        }
        self.facts.getenv(name)
    }

    fn names(&self) -> Vec<OsString> {
        let mut names = self.facts.env_names();
        for c in self.changes {
            match c {
                EnvChange::Set(n, _) if !names.contains(n) => names.push(n.clone()),
                EnvChange::Unset(n) => names.retain(|m| m != n),
                _ => {}
            }
        }
        names
    }
}

/// `task_init` (as the user): what the task gets.
pub fn task(
    resolved: &Resolved,
    facts: &impl StepFacts,
    host: &impl StepHost,
) -> Result<TaskPlan, StepError> {
    let p = &resolved.prepared;
    let (resolution, dirs) = (&resolved.resolution, &resolved.dirs);
    let mut env: Vec<EnvChange> = plan::host_env(resolution, dirs)
        .into_iter()
        .map(|(n, v)| EnvChange::Set(n.into(), v.into()))
        .collect();
    let input_mounts = plan::input_mounts(&resolved.inputs);
    let mut lines = plan::summary_lines(resolution, dirs);
    lines.extend(plan::input_lines(&input_mounts));
    if p.host_batch {
        lines.push(super::log::prefixed(&format_args!(
            "the batch script runs on the host (--tre-batch=host); its srun steps run in {}",
            p.request.image
        )));
        return Ok(TaskPlan {
            env,
            lines,
            command: None,
        });
    }
    // The runtime's own run state lives per job on a tmpfs (see host::runtime_dir).
    env.push(EnvChange::Set(
        "XDG_RUNTIME_DIR".into(),
        p.run_dir.clone().into(),
    ));
    let task_argv = facts.task_argv()?;
    let batch_script: Option<PathBuf> = if p.is_batch {
        task_argv.first().map(PathBuf::from)
    } else {
        None
    };
    // Every name, as bytes: a value that is not UTF-8 must not hide its variable.
    let env_names_os = EnvView {
        facts,
        changes: &env,
    }
    .names();
    // Only UTF-8 names can be passed into the container (they are all portable names).
    let env_names: Vec<String> = env_names_os
        .iter()
        .filter_map(|n| n.to_str().map(str::to_string))
        .collect();
    let mut container = plan::container_plan(&p.request.image, p.runtime, resolution, dirs);
    container
        .mounts
        .extend(plan::site_mounts(&p.config.site_mounts));
    container.mounts.extend(input_mounts.iter().cloned());
    let gpu_var = runtime::gpu_list_variable(p.is_batch);
    let gpu_value = EnvView {
        facts,
        changes: &env,
    }
    .get(gpu_var);
    let gpus = runtime::parse_gpu_list(gpu_value.as_deref().and_then(|v| v.to_str()));
    let launch = TaskLaunch {
        argv: &task_argv,
        batch_script: batch_script.as_deref(),
        task_env_names: &env_names,
        tty: facts.tty(),
        user_env: &p.request.env,
        entrypoint: p.request.entrypoint,
        gpus: &gpus,
    };
    let workdir;
    let gpu_control;
    let target = match (p.runtime, &p.sif) {
        (Runtime::Apptainer, Some(sif)) => {
            // The user's APPTAINER_BIND and the like would add mounts: drop them all.
            env.extend(
                runtime::apptainer_control_vars(&env_names_os)
                    .into_iter()
                    .map(EnvChange::Unset),
            );
            // --cleanenv: the variables passed in are set as APPTAINERENV_<NAME>, by
            // name, from the task's own values (never on the command line).
            for name in runtime::apptainer_passed_env(&launch) {
                let value = EnvView {
                    facts,
                    changes: &env,
                }
                .get(&name);
                if let Some(value) = value {
                    env.push(EnvChange::Pass { name, value });
                }
            }
            workdir = runtime::apptainer_workdir(
                &container,
                &p.config.apptainer,
                &p.account.home,
                facts.cwd().as_deref(),
            );
            gpu_control = if gpus.is_empty() {
                Vec::new()
            } else {
                host.gpu_control()
            };
            Target::Apptainer {
                sif,
                workdir: &workdir,
                home: &p.account.home,
                gpu_control: &gpu_control,
            }
        }
        _ => {
            // The user's CONTAINERS_CONF, CONTAINER_HOST and the like: drop them all,
            // and point podman at the site's containers.conf only.
            env.extend(
                runtime::podman_control_vars(&env_names_os)
                    .into_iter()
                    .map(EnvChange::Unset),
            );
            // Always set: without it podman would read the user's containers.conf
            // (Debian and RHEL ship no /etc/containers/containers.conf). The
            // supervisor passes the runtime nothing else of the job's environment
            // (runtime::runtime_env).
            let site_conf = &p.config.podman.containers_conf;
            let conf: &Path = if host.is_file(site_conf) {
                site_conf
            } else {
                Path::new(runtime::SHIPPED_CONTAINERS_CONF)
            };
            env.push(EnvChange::Set("CONTAINERS_CONF".into(), conf.into()));
            Target::Podman(runtime::PodmanStorage {
                job_dir: &p.runtime_dir,
                run_dir: &p.run_dir,
                home: &p.account.home,
                // task_init runs as the user: this stat works on a root-squashed home.
                user_store_exists: host.is_dir(&runtime::user_image_store(&p.account.home)),
                transient_store: p.transient_store,
                conmon: p.exit_guard.then_some(Path::new(runtime::CONMON_WRAPPER)),
            })
        }
    };
    let command = runtime::job_command(&p.config, &container, &target, &launch)?;
    lines.push(format!(
        "Running: {}",
        runtime::display_command(&command.runtime_argv)
    ));
    // Only a hint (the variable is the job's own): the script cannot reach the other
    // nodes from inside the image, which has no srun.
    let nodes = facts
        .getenv("SLURM_JOB_NUM_NODES")
        .and_then(|n| n.to_str()?.parse::<u32>().ok())
        .unwrap_or(1);
    if p.is_batch && nodes > 1 {
        lines.push(super::log::prefixed(&format_args!(
            "note: this job has {nodes} nodes but its batch script runs in the container on this node, where there is no srun; use --tre-batch=host to run srun steps in the container on every node"
        )));
    }
    Ok(TaskPlan {
        env,
        lines,
        command: Some(TaskCommand {
            runtime_argv: command.runtime_argv,
            task_prefix: command.task_prefix,
            task_argv,
            mounts: container.mounts,
        }),
    })
}

/// The step's state between slurmstepd's callbacks.
#[derive(Default)]
pub enum Step {
    /// Not a container step (no `--tre-*` option, or started inside the container).
    #[default]
    NotContainer,
    /// Refused: shown, and the task fails, in `task_init`.
    Refused(StepError),
    Prepared(Box<Prepared>),
    Ready(Box<Ready>),
}

impl Step {
    /// `init_post_opt` (root).
    pub fn init_post_opt(&mut self, facts: &impl StepFacts, host: &impl StepHost) {
        if matches!(self, Step::Refused(_)) || !facts.options().any() {
            return;
        }
        // A step started from inside the container (it inherits the options) runs as is.
        if facts.getenv(IN_CONTAINER_VAR).as_deref() == Some(std::ffi::OsStr::new("1")) {
            return;
        }
        *self = match prepare(facts, host) {
            Ok(p) => Step::Prepared(Box::new(p)),
            Err(e) => Step::Refused(e),
        };
    }

    /// `user_init` (as the user).
    pub fn user_init(&mut self, host: &impl StepHost) {
        *self = match std::mem::take(self) {
            Step::Prepared(p) => match make_ready(*p, host) {
                Ok(r) => Step::Ready(Box::new(r)),
                Err(e) => Step::Refused(e),
            },
            other => other,
        };
    }

    /// `task_init_privileged` (root): record what was made, for the epilog.
    pub fn task_init_privileged(&mut self, host: &impl StepHost) {
        let Step::Ready(ready) = self else { return };
        let Some(record) = record(ready) else { return };
        let config = &ready.resolved.prepared.config;
        if let Err(e) = host.save_record(config, &record) {
            // Without a record the epilog could not remove scratch: do not run.
            *self = Step::Refused(match e {
                StepError::State(e) => StepError::Record(e),
                e => e,
            });
        }
    }

    /// `task_init` (as the user): what the task gets, or why it fails.
    pub fn task_init(&self, facts: &impl StepFacts, host: &impl StepHost) -> TaskOutcome<'_> {
        match self {
            Step::NotContainer => TaskOutcome::NotContainer,
            Step::Refused(e) => TaskOutcome::Refused(e),
            Step::Prepared(_) => TaskOutcome::Failed(StepError::NotPrepared),
            Step::Ready(r) => match task(&r.resolved, facts, host) {
                Ok(plan) => TaskOutcome::Run(r, plan),
                Err(e) => TaskOutcome::Failed(e),
            },
        }
    }

    /// The step that ran in a container here, for its end record (`None`: none did, or
    /// it was the batch script of `--tre-batch=host`).
    pub fn container_run(&self) -> Option<&Ready> {
        match self {
            Step::Ready(r) if !r.resolved.prepared.host_batch => Some(r),
            _ => None,
        }
    }
}

/// What `task_init` does with a task.
pub enum TaskOutcome<'a> {
    /// Not a container step: the task runs as it is.
    NotContainer,
    /// An error held since an earlier callback.
    Refused(&'a StepError),
    /// An error of this task.
    Failed(StepError),
    Run(&'a Ready, TaskPlan),
}

/// The fields of a container run, in the documented order (docs/audit-log.md).
pub fn run_fields(ready: &Ready, facts: &impl StepFacts) -> Vec<(&'static str, String)> {
    let (p, r) = (&ready.resolved.prepared, &ready.resolved);
    let safe_data = match &r.resolution.safe_data {
        SafeData::Disabled => String::new(),
        SafeData::Home(p) | SafeData::ProjectDir(p) => p.display().to_string(),
    };
    let job_id = match p.identity {
        Identity::Job { job_id, .. } => job_id.to_string(),
        Identity::Planned => String::new(),
    };
    vec![
        ("job", job_id),
        ("step", step_name(facts)),
        (
            "task",
            facts.task_id().map(|t| t.to_string()).unwrap_or_default(),
        ),
        ("user", p.account.name.clone()),
        ("uid", p.account.uid.to_string()),
        (
            "project",
            (r.resolution.project.as_ref())
                .map(|p| p.name.clone())
                .unwrap_or_default(),
        ),
        ("safe_data", safe_data),
        ("image", p.request.image.to_string()),
        ("image_id", p.image_id.clone()),
        ("runtime", p.runtime.to_string()),
        ("node", p.node.clone()),
        ("outputs", r.dirs.outputs.display().to_string()),
    ]
}

/// What is known of a refused step: from Slurm, not from the job's environment.
pub fn refusal_fields(
    facts: &impl StepFacts,
    host: &impl StepHost,
    message: &str,
) -> Vec<(&'static str, String)> {
    let raw = facts.options();
    let text = |v: Option<Vec<u8>>| {
        v.map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    let uid = facts.uid().ok();
    let user = uid
        .and_then(|u| nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(u)).ok()?)
        .map(|u| u.name)
        .unwrap_or_default();
    vec![
        ("where", "node".into()),
        (
            "job",
            facts
                .job_id()
                .ok()
                .flatten()
                .map(|j| j.to_string())
                .unwrap_or_default(),
        ),
        ("step", step_name(facts)),
        ("user", user),
        ("uid", uid.map(|u| u.to_string()).unwrap_or_default()),
        ("image", text(raw.container)),
        ("runtime", text(raw.runtime)),
        ("project", text(raw.project)),
        ("node", host.node_name()),
        ("reason", message.to_string()),
    ]
}

fn step_name(facts: &impl StepFacts) -> String {
    match facts.step_id() {
        Some(BATCH_STEP_ID) => "batch".into(),
        Some(s) => s.to_string(),
        None => "unknown".into(),
    }
}

/// The real node.
pub struct NodeHost;

impl StepHost for NodeHost {
    type Home = Dir;

    fn node_name(&self) -> String {
        job::node_name()
    }

    fn load_config(&self, args: &[&str], node: &str) -> Result<Config, StepError> {
        Ok(job::load_node_config(args, node)?)
    }

    fn is_file(&self, path: &Path) -> bool {
        path.is_file()
    }

    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }

    fn account(&self, uid: u32, gid: u32, gids: &[u32]) -> Result<Account, StepError> {
        Ok(account::lookup(uid, gid, gids)?)
    }

    fn secret(&self, config: &Config) -> Result<Vec<u8>, StepError> {
        // Root reads the secret and every container task runs tool_path: both must be
        // root's (the munge key, the default secret, is munge's).
        let secret = job::read_secret(config)?;
        trust::check_file("tool_path", &config.tool_path, &[])?;
        Ok(secret)
    }

    fn record(&self, config: &Config, job_id: u32) -> Result<Option<JobRecord>, StepError> {
        Ok(StateDir::open(&config.state_dir)?.load(job_id)?)
    }

    fn retire(&self, config: &Config, record: &JobRecord) -> Result<String, StepError> {
        Ok(StateDir::open(&config.state_dir)?.retire(record)?)
    }

    fn save_record(&self, config: &Config, record: &JobRecord) -> Result<(), StepError> {
        Ok(StateDir::open(&config.state_dir)?.save(record)?)
    }

    fn runtime_dir(
        &self,
        config: &Config,
        job_id: u32,
        uid: u32,
        gid: u32,
    ) -> Result<PathBuf, StepError> {
        Ok(runtime_dir::ensure(&config.runtime_dir, job_id, uid, gid)?)
    }

    fn submit_time(&self, config: &Config, job_id: u32) -> Result<u64, StepError> {
        Ok(liveness::submit_time(&config.cleanup, job_id)?)
    }

    fn run_dir(
        &self,
        config: &Config,
        job_id: u32,
        uid: u32,
        gid: u32,
    ) -> Result<PathBuf, StepError> {
        Ok(runtime_dir::ensure_tmpfs(
            &config.run_dir,
            job_id,
            uid,
            gid,
        )?)
    }

    fn podman_features(&self, config: &Config) -> PodmanFeatures {
        let Some(version) = podman_version::podman_version(&config.podman.path, &config.run_dir)
        else {
            return PodmanFeatures::default();
        };
        PodmanFeatures {
            transient_store: runtime::podman_has_transient_store(&version),
            exit_guard: config.podman.exit_guard
                && runtime::podman_takes_the_exit_guard(&version)
                && Path::new(runtime::CONMON_WRAPPER).is_file(),
        }
    }

    fn gpu_control(&self) -> Vec<PathBuf> {
        devices::present_char_devices(&runtime::NVIDIA_CONTROL_DEVICES)
    }

    fn image_id(
        &self,
        config: &Config,
        runtime: Runtime,
        image: &ImageRef,
        sif: Option<&Path>,
    ) -> String {
        super::image_store::image_id(config, runtime, image, sif)
    }

    fn open_home(&self, home: &Path) -> Result<Dir, StepError> {
        Ok(Dir::open(home)?)
    }

    fn resolve_project(
        &self,
        home: &Dir,
        account: &Account,
        config: &Config,
        requested: Option<&str>,
    ) -> Result<Resolution, StepError> {
        Ok(job::resolve_project(home, account, config, requested)?)
    }

    fn check_inputs(
        &self,
        home: &Dir,
        account: &Account,
        numbers: &[u32],
        number: u32,
        key: &ProofKey,
    ) -> Result<Vec<PathBuf>, StepError> {
        Ok(inputs::check_inputs(
            home,
            &account.home,
            numbers,
            number,
            account.uid,
            key,
        )?)
    }

    fn make_dirs(&self, home: &Dir, plan: &DirPlan<'_>) -> Result<MadeDirs, StepError> {
        match &plan.action {
            DirAction::Confirm { outputs, scratch } => {
                home.confirm(&plan.outputs, *outputs)?;
                let parent_fd = match plan.scratch_in {
                    None => None,
                    Some(s) => Some(dirs::open_scratch_parent(s, plan.uid, false)?),
                };
                let parent = parent_fd.as_ref().unwrap_or(home);
                parent.confirm(&plan.scratch, *scratch)?;
                Ok(MadeDirs {
                    outputs: *outputs,
                    scratch: *scratch,
                    origin: Origin::Earlier,
                })
            }
            DirAction::CreateOrJoin { facts, key, number } => {
                let spec = JobDirSpec {
                    home: plan.home,
                    outputs: &plan.outputs,
                    scratch: &plan.scratch,
                    scratch_in: plan.scratch_in,
                    facts: *facts,
                    key,
                };
                let (ids, origin) = dirs::create_or_join(home, &spec, dirs::JOIN_WAIT)?;
                if origin == dirs::Origin::Created {
                    // What a later job's --tre-inputs checks, long after this job is gone.
                    inputs::write_outputs_record(
                        home,
                        plan.home,
                        *number,
                        ids.outputs,
                        plan.uid,
                        key,
                    )?;
                }
                Ok(MadeDirs {
                    outputs: ids.outputs,
                    scratch: ids.scratch,
                    origin: match origin {
                        dirs::Origin::Created => Origin::Created,
                        dirs::Origin::Joined => Origin::Joined,
                    },
                })
            }
        }
    }
}

/// `tre-spank plan` after [`prepare`], as the user: what the job would get; nothing
/// is made.
pub fn plan_task(
    prepared: Prepared,
    facts: &impl StepFacts,
    host: &impl StepHost,
) -> Result<(Resolved, TaskPlan), StepError> {
    let home = host.open_home(&prepared.account.home)?;
    let resolved = resolve(prepared, host, &home)?;
    let plan = task(&resolved, facts, host)?;
    Ok((resolved, plan))
}

/// `tre-spank plan`'s facts: a job the user would submit from the command line.
pub struct PlannedJob {
    pub plugin_args: Vec<String>,
    pub options: RawOptions,
    /// The user's uid, gid and groups (from the group database, as Slurm's credential
    /// carries them by default), or why the user is not known.
    pub ids: Result<(u32, u32, Vec<u32>), AccountError>,
    /// The command after `--` (empty: the batch script).
    pub command: Vec<OsString>,
}

/// Where slurmd keeps a batch script, as `plan` shows it.
pub const PLANNED_SCRIPT: &str = "/var/spool/slurmd/jobJOBID/slurm_script";

impl PlannedJob {
    pub fn new(
        plugin_args: Vec<String>,
        user: &str,
        options: RawOptions,
        command: Vec<OsString>,
    ) -> PlannedJob {
        PlannedJob {
            ids: account::ids_by_name(user),
            plugin_args,
            options,
            command,
        }
    }

    fn ids(&self) -> Result<&(u32, u32, Vec<u32>), StepError> {
        self.ids.as_ref().map_err(|e| StepError::Account(e.clone()))
    }
}

impl StepFacts for PlannedJob {
    fn plugin_args(&self) -> Result<Vec<String>, StepError> {
        Ok(self.plugin_args.clone())
    }
    fn options(&self) -> RawOptions {
        self.options.clone()
    }
    fn job_id(&self) -> Result<Option<u32>, StepError> {
        Ok(None)
    }
    fn step_id(&self) -> Option<u32> {
        Some(if self.command.is_empty() {
            BATCH_STEP_ID
        } else {
            0
        })
    }
    fn restart_count(&self) -> u32 {
        0
    }
    fn uid(&self) -> Result<u32, StepError> {
        Ok(self.ids()?.0)
    }
    fn gid(&self) -> Result<u32, StepError> {
        Ok(self.ids()?.1)
    }
    fn supplementary_gids(&self) -> Vec<u32> {
        self.ids().map(|i| i.2.clone()).unwrap_or_default()
    }
    fn getenv(&self, _name: &str) -> Option<OsString> {
        None
    }
    fn env_names(&self) -> Vec<OsString> {
        Vec::new()
    }
    fn task_argv(&self) -> Result<Vec<OsString>, StepError> {
        Ok(if self.command.is_empty() {
            vec![PLANNED_SCRIPT.into()]
        } else {
            self.command.clone()
        })
    }
    fn task_id(&self) -> Option<u32> {
        Some(0)
    }
    fn tty(&self) -> bool {
        false
    }
    fn cwd(&self) -> Option<PathBuf> {
        None
    }
}

#[cfg(test)]
mod tests;
