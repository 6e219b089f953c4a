//! slurmstepd: every job step on every node.
//!
//! - `init_post_opt` (root): validate the options again (they come from the user's
//!   client), read the config, the account and the secret, compute the job NUMBER.
//! - `user_init` (the user's effective uid): resolve the project data and create the
//!   job's directories as the user.
//! - `task_init_privileged` (root): record what was created, for the epilog.
//! - `task_init` (the user): report any held error and fail the task, or print the
//!   plan and make the task the runtime command (prepended to the task's argv, or,
//!   before Slurm 23.11, started with `execve`: see [`super::start`]).
//!
//! Errors before `task_init` are held, not returned: srun never sees a `user_init`
//! failure, and an error there can drain the node.

use std::error::Error;
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use std::time::SystemTime;

use slurm_spank::{spank_log_info, spank_log_verbose, SpankHandle};

use super::start::start_task;
use super::{fail, raw_options};
use crate::host::account::{self, Account};
use crate::host::audit as host_audit;
use crate::host::devices;
use crate::host::dirs::{self, Dir, DirId, JobDirSpec, ScratchIn};
use crate::host::image_store;
use crate::host::inputs;
use crate::host::job;
use crate::host::liveness;
use crate::host::podman_version;
use crate::host::runtime_dir;
use crate::host::state::{JobRecord, StateDir};
use crate::host::trust;
use crate::rules::audit::{self, Event};
use crate::rules::config::Config;
use crate::rules::job_number::{job_number, JobIdentity};
use crate::rules::options::{self, BatchMode, ContainerRequest, Runtime};
use crate::rules::plan::{self, outputs_name, scratch_name, JobDirs, IN_CONTAINER_VAR};
use crate::rules::project::{Resolution, SafeData};
use crate::rules::proof::{JobFacts, ProofKey};
use crate::rules::runtime::{self, Target, TaskLaunch};

/// Slurm's step id for the batch script (`SLURM_BATCH_SCRIPT`).
const BATCH_STEP_ID: u32 = 0xffff_fffb;

#[derive(Default)]
pub struct Step {
    /// `None`: this step does not run in a container.
    job: Option<Result<Job, String>>,
}

/// What one step knows once everything checked out.
struct Job {
    config: Config,
    request: ContainerRequest,
    /// The runtime chosen for this node.
    runtime: Runtime,
    /// apptainer: the image's SIF file (checked to exist).
    sif: Option<PathBuf>,
    /// The image's immutable ID for the audit records (`unknown` if not found).
    image_id: String,
    account: Account,
    job_id: u32,
    number: u32,
    /// What the proof of the job's directories names (see rules::proof).
    facts: JobFacts,
    proof_key: ProofKey,
    /// The record an earlier step of this job left on this node.
    earlier: Option<JobRecord>,
    /// Per-job runtime state on disk (podman's graph root).
    runtime_dir: PathBuf,
    /// Per-job run state on a tmpfs: `$XDG_RUNTIME_DIR` and podman's run root.
    run_dir: PathBuf,
    /// The node's podman has `--transient-store` (host::podman_version).
    transient_store: bool,
    /// This node's name, for the audit records.
    node: String,
    /// The batch step of a `--tre-batch=host` job: directories and variables, no
    /// container (its srun steps run in the container).
    host_batch: bool,
    ready: Option<Ready>,
}

/// After `user_init`: directories exist and the data is resolved.
struct Ready {
    resolution: Resolution,
    dirs: JobDirs,
    outputs: DirId,
    scratch: DirId,
    /// The first step of the job on this node: no record exists here yet.
    needs_record: bool,
    /// When the step's tasks were about to start (audit records).
    started: SystemTime,
    /// `--tre-inputs`: earlier jobs' outputs directories (checked), mounted read-only.
    inputs: Vec<PathBuf>,
}

impl Step {
    pub fn hold_error(&mut self, message: String) {
        self.job = Some(Err(message));
    }

    pub fn init_post_opt(&mut self, spank: &mut SpankHandle) {
        if matches!(self.job, Some(Err(_))) {
            return;
        }
        let raw = raw_options(spank);
        if !raw.any() {
            return;
        }
        // A step started from inside the container (it inherits the options) runs as is.
        if spank.getenv(IN_CONTAINER_VAR).ok().flatten().as_deref() == Some("1") {
            return;
        }
        self.job = Some(prepare(spank, &raw));
    }

    pub fn user_init(&mut self, _spank: &mut SpankHandle) {
        let Some(Ok(job)) = &mut self.job else { return };
        match make_ready(job) {
            Ok(ready) => {
                job.ready = Some(Ready {
                    started: SystemTime::now(),
                    ..ready
                })
            }
            Err(message) => self.job = Some(Err(message)),
        }
    }

    pub fn task_init_privileged(&mut self, _spank: &mut SpankHandle) {
        let Some(Ok(job)) = &self.job else { return };
        let Some(ready) = &job.ready else { return };
        if !ready.needs_record {
            return;
        }
        let record = JobRecord {
            job_id: job.job_id,
            submitted: Some(job.facts.submitted),
            uid: job.account.uid,
            number: job.number,
            home: job.account.home.clone(),
            outputs: ready.outputs,
            scratch: ready.scratch,
            scratch_parent: (ready.dirs.scratch.parent() != Some(job.account.home.as_path()))
                .then(|| ready.dirs.scratch.parent().map(Path::to_path_buf))
                .flatten(),
        };
        if let Err(e) = StateDir::open(&job.config.state_dir).and_then(|s| s.save(&record)) {
            // Without a record the epilog could not remove scratch: do not run.
            self.job = Some(Err(format!("cannot record the job's directories: {e}")));
        }
    }

    pub fn task_init(&mut self, spank: &mut SpankHandle) -> Result<(), Box<dyn Error>> {
        let job = match &self.job {
            None => return Ok(()),
            Some(Err(message)) => {
                say(message);
                audit(spank, Event::Refused, refusal_fields(spank, message));
                return Err(message.clone().into());
            }
            Some(Ok(job)) => job,
        };
        let Some(ready) = &job.ready else {
            return Err(fail("internal error: the step was not prepared"));
        };
        wrap_task(spank, job, ready).map_err(|message| {
            say(&message);
            audit(spank, Event::Refused, refusal_fields(spank, &message));
            message.into()
        })
    }

    /// slurmstepd (root), once per task: the end of the container run.
    pub fn task_exit(&mut self, spank: &mut SpankHandle) {
        let Some(Ok(job)) = &self.job else { return };
        let Some(ready) = &job.ready else { return };
        if job.host_batch {
            return;
        }
        let mut fields = run_fields(spank, job, ready);
        fields.push(("start", audit::utc_time(ready.started)));
        fields.push(("end", audit::utc_time(SystemTime::now())));
        match spank.task_exit_status() {
            Ok(status) => {
                let (key, value) = audit::exit_fields(status);
                fields.push((key, value));
            }
            Err(_) => fields.push(("exit", "unknown".into())),
        }
        audit(spank, Event::End, fields);
    }
}

/// An audit record to syslog and to the slurmd log.
fn audit(_spank: &SpankHandle, event: Event, fields: Vec<(&'static str, String)>) {
    let record = audit::format_record(event, &fields);
    spank_log_info!("{record}");
    if let Err(e) = host_audit::send(event, &fields) {
        spank_log_verbose!("tre-spank: audit record not sent to syslog: {e}");
    }
}

fn step_name(spank: &SpankHandle) -> String {
    match spank.job_stepid() {
        Ok(BATCH_STEP_ID) => "batch".into(),
        Ok(s) => s.to_string(),
        Err(_) => "unknown".into(),
    }
}

/// The fields of a container run, in the documented order (docs/audit-log.md).
fn run_fields(spank: &SpankHandle, job: &Job, ready: &Ready) -> Vec<(&'static str, String)> {
    let safe_data = match &ready.resolution.safe_data {
        SafeData::Disabled => String::new(),
        SafeData::Home(p) | SafeData::ProjectDir(p) => p.display().to_string(),
    };
    vec![
        ("job", job.job_id.to_string()),
        ("step", step_name(spank)),
        (
            "task",
            spank
                .task_global_id()
                .map(|t| t.to_string())
                .unwrap_or_default(),
        ),
        ("user", job.account.name.clone()),
        ("uid", job.account.uid.to_string()),
        (
            "project",
            (ready.resolution.project.as_ref())
                .map(|p| p.name.clone())
                .unwrap_or_default(),
        ),
        ("safe_data", safe_data),
        ("image", job.request.image.to_string()),
        ("image_id", job.image_id.clone()),
        ("runtime", job.runtime.to_string()),
        ("node", job.node.clone()),
        ("outputs", ready.dirs.outputs.display().to_string()),
    ]
}

/// What is known of a refused step: from Slurm, not from the job's environment.
fn refusal_fields(spank: &SpankHandle, message: &str) -> Vec<(&'static str, String)> {
    let raw = raw_options(spank);
    let text = |v: Option<Vec<u8>>| {
        v.map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    let uid = spank.job_uid().ok();
    let user = uid
        .and_then(|u| nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(u)).ok()?)
        .map(|u| u.name)
        .unwrap_or_default();
    vec![
        ("where", "node".into()),
        (
            "job",
            spank.job_id().map(|j| j.to_string()).unwrap_or_default(),
        ),
        ("step", step_name(spank)),
        ("user", user),
        ("uid", uid.map(|u| u.to_string()).unwrap_or_default()),
        ("image", text(raw.container)),
        ("runtime", text(raw.runtime)),
        ("project", text(raw.project)),
        ("node", job::node_name()),
        ("reason", message.to_string()),
    ]
}

/// One line on the task's stderr, which is the job's output. Write errors are ignored:
/// there is nowhere else to report them.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn prepare(spank: &SpankHandle, raw: &options::RawOptions) -> Result<Job, String> {
    let args = spank
        .plugin_argv()
        .map_err(|e| format!("tre-spank: cannot read plugstack arguments: {e}"))?;
    // Per-node settings by this node's own name, never by anything from the job.
    let node = job::node_name();
    let mut config = job::load_node_config(&args, &node).map_err(|e| format!("tre-spank: {e}"))?;
    job::keep_present_image_stores(&mut config);
    let request = options::parse(raw, &config)
        .map_err(|e| format!("tre-spank: {e}"))?
        .ok_or_else(|| "tre-spank: --tre-container is missing".to_string())?;
    let runtime = job::choose_runtime(&config, request.runtime, &node)
        .map_err(|e| format!("tre-spank: {e}"))?;
    // A root-managed path: a stat here is cheap and needs no runtime call.
    let sif = match runtime {
        Runtime::Podman => None,
        Runtime::Apptainer => {
            let sif = runtime::sif_path(&config.apptainer.sif_dir, &request.image)
                .ok_or_else(|| "tre-spank: the image reference has no name".to_string())?;
            if !sif.is_file() {
                return Err(format!(
                    "tre-spank: image {} is not on node {node}: no SIF file {} (images reach the nodes only through the site's approved process, and jobs never pull)",
                    request.image,
                    sif.display()
                ));
            }
            Some(sif)
        }
    };
    let uid = spank
        .job_uid()
        .map_err(|e| format!("tre-spank: cannot get the job's uid: {e}"))?;
    let gid = spank
        .job_gid()
        .map_err(|e| format!("tre-spank: cannot get the job's gid: {e}"))?;
    let gids = spank.job_supplementary_gids().unwrap_or_default();
    let job_id = spank
        .job_id()
        .map_err(|e| format!("tre-spank: cannot get the job id: {e}"))?;
    let restarts = spank.slurm_restart_count().unwrap_or(0);
    // What tells this job from an earlier one with the same id: from the controller,
    // never from the job's environment (the user's).
    let submitted = liveness::submit_time(&config.cleanup, job_id).map_err(|e| {
        format!("tre-spank: cannot tell this job from an earlier one with its id: {e}")
    })?;
    let identity = JobIdentity {
        job_id,
        restart_count: restarts,
        submitted,
    };
    let account = account::lookup(uid, gid, &gids).map_err(|e| format!("tre-spank: {e}"))?;
    // Root reads the secret and every container task runs tool_path: both must be
    // root's (the munge key, the default secret, is munge's).
    trust::check_file("secret_file", &config.secret_file, trust::SECRET_OWNERS)
        .map_err(|e| format!("tre-spank: refusing {e}"))?;
    trust::check_file("tool_path", &config.tool_path, &[])
        .map_err(|e| format!("tre-spank: refusing {e}"))?;
    let secret = std::fs::read(&config.secret_file).map_err(|e| {
        format!(
            "tre-spank: cannot read the job number secret {}: {e}",
            config.secret_file.display()
        )
    })?;
    let number = job_number(&secret, &identity).map_err(|e| format!("tre-spank: {e}"))?;
    let proof_key = ProofKey::derive(&secret)
        .ok_or_else(|| "tre-spank: the job number secret is empty".to_string())?;
    drop(secret);
    let facts = JobFacts {
        job_id,
        restart_count: restarts,
        submitted,
        uid,
        number,
    };
    let state = StateDir::open(&config.state_dir).map_err(|e| format!("tre-spank: {e}"))?;
    let mut earlier = state.load(job_id).map_err(|e| format!("tre-spank: {e}"))?;
    if let Some(r) = earlier.take_if(|r| !r.is_of(submitted, uid, number)) {
        // Not this job's (submit time, uid and NUMBER are fixed for a job): an earlier
        // job with the same id (ids wrapped, the controller was reset, a requeue, a
        // record of the previous format) whose cleanup did not finish. Set aside for
        // the sweep, never adopted.
        let name = state.retire(&r).map_err(|e| format!("tre-spank: {e}"))?;
        spank_log_info!(
            "tre-spank: job {job_id}: the record on this node was an earlier job's with the same id: kept as {name} for the sweep"
        );
    }
    let host_batch = request.batch == BatchMode::Host
        && spank
            .job_stepid()
            .map(|s| s == BATCH_STEP_ID)
            .unwrap_or(false);
    let runtime_dir = runtime_dir::ensure(&config.runtime_dir, job_id, uid, gid)
        .map_err(|e| format!("tre-spank: {e}"))?;
    let run_dir = runtime_dir::ensure_tmpfs(&config.run_dir, job_id, uid, gid)
        .map_err(|e| format!("tre-spank: {e}"))?;
    let transient_store = runtime == Runtime::Podman
        && podman_version::podman_version(&config.podman.path, &config.run_dir)
            .is_some_and(|v| runtime::podman_has_transient_store(&v));
    let image_id = image_store::image_id(&config, runtime, &request.image, sif.as_deref());
    Ok(Job {
        config,
        request,
        runtime,
        sif,
        image_id,
        account,
        job_id,
        number,
        facts,
        proof_key,
        earlier,
        runtime_dir,
        run_dir,
        transient_store,
        node,
        host_batch,
        ready: None,
    })
}

/// Runs with the user's effective uid and groups.
fn make_ready(job: &Job) -> Result<Ready, String> {
    let home = &job.account.home;
    let home_fd = Dir::open(home).map_err(|e| format!("tre-spank: {e}"))?;
    let resolution = job::resolve_project(
        &home_fd,
        &job.account,
        &job.config,
        job.request.project.as_deref(),
    )?;
    // scratch-N in $HOME, or in the site's scratch root (`<scratch_root>/<user>`).
    let scratch_in = (!job.config.scratch_root.as_os_str().is_empty()).then_some(ScratchIn {
        root: &job.config.scratch_root,
        user: &job.account.name,
    });
    let scratch_parent = plan::scratch_parent(home, &job.config.scratch_root, &job.account.name);
    let dirs = JobDirs::with_scratch_in(home, &scratch_parent, job.number);
    let inputs = inputs::check_inputs(
        &home_fd,
        home,
        &job.request.inputs,
        job.number,
        job.account.uid,
        &job.proof_key,
    )
    .map_err(|e| format!("tre-spank: {e}"))?;
    let (outputs_dir, scratch_dir) = (outputs_name(job.number), scratch_name(job.number));
    if let Some(earlier) = &job.earlier {
        home_fd
            .confirm(&outputs_dir, earlier.outputs)
            .map_err(|e| format!("tre-spank: {e}"))?;
        let scratch_parent_fd = match scratch_in {
            None => None,
            Some(s) => Some(
                dirs::open_scratch_parent(s, job.account.uid, false)
                    .map_err(|e| format!("tre-spank: {e}"))?,
            ),
        };
        let parent_fd = scratch_parent_fd.as_ref().unwrap_or(&home_fd);
        parent_fd
            .confirm(&scratch_dir, earlier.scratch)
            .map_err(|e| format!("tre-spank: {e}"))?;
        return Ok(Ready {
            resolution,
            dirs,
            outputs: earlier.outputs,
            scratch: earlier.scratch,
            needs_record: false,
            started: SystemTime::now(),
            inputs,
        });
    }
    // First step of the job on this node: create the directories, or join those
    // another node (or a step starting at the same moment) created for this job.
    let spec = JobDirSpec {
        home,
        outputs: &outputs_dir,
        scratch: &scratch_dir,
        scratch_in,
        facts: job.facts,
        key: &job.proof_key,
    };
    let (ids, origin) = dirs::create_or_join(&home_fd, &spec, dirs::JOIN_WAIT)
        .map_err(|e| format!("tre-spank: {e}"))?;
    if origin == dirs::Origin::Created {
        // What a later job's --tre-inputs checks, long after this job is gone.
        inputs::write_outputs_record(
            &home_fd,
            home,
            job.number,
            ids.outputs,
            job.account.uid,
            &job.proof_key,
        )
        .map_err(|e| format!("tre-spank: {e}"))?;
    }
    if origin == dirs::Origin::Joined {
        spank_log_info!(
            "tre-spank: job {}: using {} made for this job by another step (proof checked)",
            job.job_id,
            audit::log_line(&dirs.outputs.display().to_string())
        );
    }
    Ok(Ready {
        resolution,
        dirs,
        outputs: ids.outputs,
        scratch: ids.scratch,
        needs_record: true,
        started: SystemTime::now(),
        inputs,
    })
}

fn wrap_task(spank: &mut SpankHandle, job: &Job, ready: &Ready) -> Result<(), String> {
    for (name, value) in plan::host_env(&ready.resolution, &ready.dirs) {
        spank
            .setenv(&name, &value, true)
            .map_err(|e| format!("tre-spank: cannot set {name}: {e}"))?;
    }
    if job.host_batch {
        for line in plan::summary_lines(&ready.resolution, &ready.dirs) {
            say(&line);
        }
        for line in plan::input_lines(&plan::input_mounts(&ready.inputs)) {
            say(&line);
        }
        say(&format!(
            "tre-spank: the batch script runs on the host (--tre-batch=host); its srun steps run in {}",
            job.request.image
        ));
        return Ok(());
    }
    // The runtime's own run state lives per job on a tmpfs (see host::runtime_dir).
    spank
        .setenv("XDG_RUNTIME_DIR", &job.run_dir, true)
        .map_err(|e| format!("tre-spank: cannot set XDG_RUNTIME_DIR: {e}"))?;
    let task_argv: Vec<OsString> = spank
        .job_argv_os()
        .map_err(|e| format!("tre-spank: cannot read the task's command: {e}"))?
        .into_iter()
        .map(|a| a.to_os_string())
        .collect();
    let is_batch = spank
        .job_stepid()
        .map(|s| s == BATCH_STEP_ID)
        .unwrap_or(false);
    let batch_script: Option<PathBuf> = if is_batch {
        task_argv.first().map(PathBuf::from)
    } else {
        None
    };
    // Every name, as bytes: a value that is not UTF-8 must not hide its variable.
    let env_names_os: Vec<OsString> = spank
        .job_env_os()
        .unwrap_or_default()
        .into_iter()
        .map(|kv| {
            let kv = kv.as_bytes();
            let name = kv.split(|b| *b == b'=').next().unwrap_or(kv);
            OsString::from_vec(name.to_vec())
        })
        .collect();
    // Only UTF-8 names can be passed into the container (they are all portable names).
    let env_names: Vec<String> = env_names_os
        .iter()
        .filter_map(|n| n.to_str().map(str::to_string))
        .collect();
    let mut plan = plan::container_plan(
        &job.request.image,
        job.runtime,
        &ready.resolution,
        &ready.dirs,
    );
    plan.mounts
        .extend(plan::site_mounts(&job.config.site_mounts));
    let input_mounts = plan::input_mounts(&ready.inputs);
    plan.mounts.extend(input_mounts.iter().cloned());
    let gpus = runtime::parse_gpu_list(
        spank
            .getenv(runtime::gpu_list_variable(is_batch))
            .ok()
            .flatten()
            .as_deref(),
    );
    let launch = TaskLaunch {
        argv: &task_argv,
        batch_script: batch_script.as_deref(),
        task_env_names: &env_names,
        tty: stdin_is_tty(),
        user_env: &job.request.env,
        entrypoint: job.request.entrypoint,
        gpus: &gpus,
    };
    let cwd = std::env::current_dir().ok();
    let workdir;
    let gpu_control;
    let target = match (job.runtime, &job.sif) {
        (Runtime::Apptainer, Some(sif)) => {
            // The user's APPTAINER_BIND and the like would add mounts: drop them all.
            for name in runtime::apptainer_control_vars(&env_names_os) {
                spank.unsetenv(&name).map_err(|e| {
                    format!("tre-spank: cannot remove {}: {e}", name.to_string_lossy())
                })?;
            }
            // --cleanenv: the variables passed in are set as APPTAINERENV_<NAME>, by
            // name, from the task's own values (never on the command line).
            for name in runtime::apptainer_passed_env(&launch) {
                if let Ok(Some(value)) = spank.getenv_os(&name) {
                    spank
                        .setenv(format!("APPTAINERENV_{name}"), &value, true)
                        .map_err(|e| format!("tre-spank: cannot pass {name}: {e}"))?;
                }
            }
            workdir = runtime::apptainer_workdir(
                &plan,
                &job.config.apptainer,
                &job.account.home,
                cwd.as_deref(),
            );
            gpu_control = if gpus.is_empty() {
                Vec::new()
            } else {
                devices::present_char_devices(&runtime::NVIDIA_CONTROL_DEVICES)
            };
            Target::Apptainer {
                sif,
                workdir: &workdir,
                home: &job.account.home,
                gpu_control: &gpu_control,
            }
        }
        _ => {
            // The user's CONTAINERS_CONF, CONTAINER_HOST and the like: drop them all,
            // and point podman at the site's containers.conf only.
            for name in runtime::podman_control_vars(&env_names_os) {
                spank.unsetenv(&name).map_err(|e| {
                    format!("tre-spank: cannot remove {}: {e}", name.to_string_lossy())
                })?;
            }
            // Always set: without it podman would read the user's containers.conf
            // (Debian and RHEL ship no /etc/containers/containers.conf). The
            // supervisor passes the runtime nothing else of the job's environment
            // (runtime::runtime_env).
            let site_conf = &job.config.podman.containers_conf;
            let conf: &Path = if site_conf.is_file() {
                site_conf
            } else {
                Path::new(runtime::SHIPPED_CONTAINERS_CONF)
            };
            spank
                .setenv("CONTAINERS_CONF", conf, true)
                .map_err(|e| format!("tre-spank: cannot set CONTAINERS_CONF: {e}"))?;
            Target::Podman(runtime::PodmanStorage {
                job_dir: &job.runtime_dir,
                run_dir: &job.run_dir,
                home: &job.account.home,
                // task_init runs as the user: this stat works on a root-squashed home.
                user_store_exists: runtime::user_image_store(&job.account.home).is_dir(),
                transient_store: job.transient_store,
            })
        }
    };
    let command = runtime::job_command(&job.config, &plan, &target, &launch)
        .map_err(|e| format!("tre-spank: {e}"))?;
    if spank.task_global_id().unwrap_or(0) == 0 {
        for line in plan::summary_lines(&ready.resolution, &ready.dirs) {
            say(&line);
        }
        for line in plan::input_lines(&input_mounts) {
            say(&line);
        }
        say(&format!(
            "Running: {}",
            runtime::display_command(&command.runtime_argv)
        ));
        // Only a hint (the variable is the job's own): the script cannot reach the
        // other nodes from inside the image, which has no srun.
        let nodes = spank
            .getenv("SLURM_JOB_NUM_NODES")
            .ok()
            .flatten()
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(1);
        if is_batch && nodes > 1 {
            say(&format!(
                "tre-spank: note: this job has {nodes} nodes but its batch script runs in the container on this node, where there is no srun; use --tre-batch=host to run srun steps in the container on every node"
            ));
        }
    }
    let mut fields = run_fields(spank, job, ready);
    fields.push(("start", audit::utc_time(ready.started)));
    audit(spank, Event::Start, fields);
    // The task runs the prefix followed by its own argv (see spank::start).
    start_task(spank, &command.task_prefix, &task_argv)
}

fn stdin_is_tty() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stdin())
}
