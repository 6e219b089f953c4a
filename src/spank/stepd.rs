//! slurmstepd: every job step on every node.
//!
//! - `init_post_opt` (root): validate the options again (they come from the user's
//!   client), read the config, the account and the secret, compute the job NUMBER.
//! - `user_init` (the user's effective uid): resolve the project data and create the
//!   job's directories as the user.
//! - `task_init_privileged` (root): record what was created, for the epilog.
//! - `task_init` (the user): report any held error and fail the task, or print the
//!   plan and prepend the runtime command to the task's argv.
//!
//! Errors before `task_init` are held, not returned: srun never sees a `user_init`
//! failure, and an error there can drain the node.

use std::error::Error;
use std::ffi::OsString;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use slurm_spank::{spank_log_info, SpankHandle};

use super::{fail, raw_options};
use crate::host::account::{self, Account};
use crate::host::dirs::{self, DirId};
use crate::host::runtime_dir;
use crate::host::state::{JobRecord, StateDir};
use crate::rules::config::{self, Config};
use crate::rules::job_number::job_number;
use crate::rules::options::{self, ContainerRequest, Runtime};
use crate::rules::plan::{self, outputs_name, scratch_name, JobDirs, IN_CONTAINER_VAR};
use crate::rules::project::{self, ProjectError, ProjectFacts, Resolution, SafeData};
use crate::rules::runtime::{self, TaskLaunch};

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
    account: Account,
    job_id: u32,
    number: u32,
    /// The record an earlier step of this job left on this node.
    earlier: Option<JobRecord>,
    /// Per-job `$XDG_RUNTIME_DIR` for the runtime.
    runtime_dir: PathBuf,
    ready: Option<Ready>,
}

/// After `user_init`: directories exist and the data is resolved.
struct Ready {
    resolution: Resolution,
    dirs: JobDirs,
    outputs: DirId,
    scratch: DirId,
    /// Created by this step (so no record exists yet).
    created_now: bool,
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
            Ok(ready) => job.ready = Some(ready),
            Err(message) => self.job = Some(Err(message)),
        }
    }

    pub fn task_init_privileged(&mut self, _spank: &mut SpankHandle) {
        let Some(Ok(job)) = &self.job else { return };
        let Some(ready) = &job.ready else { return };
        if !ready.created_now {
            return;
        }
        let record = JobRecord {
            job_id: job.job_id,
            uid: job.account.uid,
            number: job.number,
            home: job.account.home.clone(),
            outputs: ready.outputs,
            scratch: ready.scratch,
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
                return Err(message.clone().into());
            }
            Some(Ok(job)) => job,
        };
        let Some(ready) = &job.ready else {
            return Err(fail("internal error: the step was not prepared"));
        };
        wrap_task(spank, job, ready).map_err(|message| {
            say(&message);
            message.into()
        })
    }
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
    let config = config::load(&args).map_err(|e| format!("tre-spank: {e}"))?;
    let request = options::parse(raw, &config)
        .map_err(|e| format!("tre-spank: {e}"))?
        .ok_or_else(|| "tre-spank: --tre-container is missing".to_string())?;
    let node = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let installed = |r: Runtime| match r {
        Runtime::Podman => config.podman.path.is_file(),
        Runtime::Apptainer => config.apptainer.path.is_file(),
    };
    let runtime = runtime::choose_runtime(request.runtime, &config.runtimes, &installed, &node)
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
    let account = account::lookup(uid, gid, &gids).map_err(|e| format!("tre-spank: {e}"))?;
    let secret = std::fs::read(&config.secret_file).map_err(|e| {
        format!(
            "tre-spank: cannot read the job number secret {}: {e}",
            config.secret_file.display()
        )
    })?;
    let number = job_number(&secret, job_id, restarts).map_err(|e| format!("tre-spank: {e}"))?;
    let state = StateDir::open(&config.state_dir).map_err(|e| format!("tre-spank: {e}"))?;
    let earlier = state.load(job_id).map_err(|e| format!("tre-spank: {e}"))?;
    if let Some(r) = &earlier {
        if r.uid != uid || r.number != number {
            return Err(format!(
                "tre-spank: the record of job {job_id} on this node belongs to another job"
            ));
        }
    }
    let runtime_dir = runtime_dir::ensure(&config.runtime_dir, job_id, uid, gid)
        .map_err(|e| format!("tre-spank: {e}"))?;
    Ok(Job {
        config,
        request,
        runtime,
        sif,
        account,
        job_id,
        number,
        earlier,
        runtime_dir,
        ready: None,
    })
}

/// Runs with the user's effective uid and groups.
fn make_ready(job: &Job) -> Result<Ready, String> {
    let home = &job.account.home;
    let home_fd: OwnedFd = dirs::open_home(home).map_err(|e| format!("tre-spank: {e}"))?;
    let facts = ProjectFacts {
        home,
        home_safe_data: dirs::probe_home_safe_data(&home_fd),
        primary_group: &job.account.primary_group,
        supplementary_groups: &job.account.supplementary_groups,
        requested: job.request.project.as_deref(),
    };
    let resolution =
        project::resolve(&facts, &job.config, &dirs::is_directory).map_err(|e| e.to_string())?;
    match &resolution.safe_data {
        SafeData::Home(p) | SafeData::ProjectDir(p) if !dirs::can_open_dir(p) => {
            return Err(ProjectError::CannotOpen(p.clone()).to_string())
        }
        _ => {}
    }
    let dirs = JobDirs::new(home, job.number);
    let (outputs_dir, scratch_dir) = (outputs_name(job.number), scratch_name(job.number));
    if let Some(earlier) = &job.earlier {
        dirs::confirm_dir(&home_fd, home, &outputs_dir, earlier.outputs)
            .map_err(|e| format!("tre-spank: {e}"))?;
        dirs::confirm_dir(&home_fd, home, &scratch_dir, earlier.scratch)
            .map_err(|e| format!("tre-spank: {e}"))?;
        return Ok(Ready {
            resolution,
            dirs,
            outputs: earlier.outputs,
            scratch: earlier.scratch,
            created_now: false,
        });
    }
    let outputs = dirs::create_private_dir(&home_fd, home, &outputs_dir)
        .map_err(|e| format!("tre-spank: {e}"))?;
    let scratch = match dirs::create_private_dir(&home_fd, home, &scratch_dir) {
        Ok(id) => id,
        Err(e) => {
            // Leave nothing half-made: the outputs directory is new and empty.
            let _ = nix::unistd::unlinkat(
                &home_fd,
                outputs_dir.as_str(),
                nix::unistd::UnlinkatFlags::RemoveDir,
            );
            return Err(format!("tre-spank: {e}"));
        }
    };
    Ok(Ready {
        resolution,
        dirs,
        outputs,
        scratch,
        created_now: true,
    })
}

fn wrap_task(spank: &mut SpankHandle, job: &Job, ready: &Ready) -> Result<(), String> {
    for (name, value) in plan::host_env(&ready.resolution, &ready.dirs) {
        spank
            .setenv(&name, &value, true)
            .map_err(|e| format!("tre-spank: cannot set {name}: {e}"))?;
    }
    // The runtime's own state lives per job on local disk (see host::runtime_dir).
    spank
        .setenv("XDG_RUNTIME_DIR", &job.runtime_dir, true)
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
    let env_names: Vec<String> = spank
        .job_env_os()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|kv| kv.to_str()?.split_once('=').map(|(k, _)| k.to_string()))
        .collect();
    let plan = plan::container_plan(
        &job.request.image,
        job.runtime,
        &ready.resolution,
        &ready.dirs,
    );
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
    let argv = match (job.runtime, &job.sif) {
        (Runtime::Apptainer, Some(sif)) => {
            // The user's APPTAINER_BIND and the like would add mounts: drop them all.
            for name in runtime::apptainer_control_vars(&env_names) {
                spank
                    .unsetenv(&name)
                    .map_err(|e| format!("tre-spank: cannot remove {name}: {e}"))?;
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
            let cwd = std::env::current_dir().ok();
            let workdir = runtime::apptainer_workdir(
                &plan,
                &job.config.apptainer,
                &job.account.home,
                cwd.as_deref(),
            );
            runtime::apptainer_argv(&plan, &job.config.apptainer, sif, &workdir, &launch)
                .map_err(|e| format!("tre-spank: {e}"))?
        }
        _ => {
            // The user's CONTAINERS_CONF, CONTAINER_HOST and the like: drop them all,
            // and point podman at the site's containers.conf only.
            for name in runtime::podman_control_vars(&env_names) {
                spank
                    .unsetenv(&name)
                    .map_err(|e| format!("tre-spank: cannot remove {name}: {e}"))?;
            }
            let site_conf = &job.config.podman.containers_conf;
            if site_conf.is_file() {
                spank
                    .setenv("CONTAINERS_CONF", site_conf, true)
                    .map_err(|e| format!("tre-spank: cannot set CONTAINERS_CONF: {e}"))?;
            }
            let storage = runtime::PodmanStorage {
                job_dir: &job.runtime_dir,
                home: &job.account.home,
            };
            runtime::podman_argv(&plan, &job.config.podman, &storage, &launch)
        }
    };
    if spank.task_global_id().unwrap_or(0) == 0 {
        for line in plan::summary_lines(&ready.resolution, &ready.dirs) {
            say(&line);
        }
        say(&format!("Running: {}", runtime::display_command(&argv)));
    }
    spank_log_info!(
        "tre-spank: job {} user {} image {} outputs {}",
        job.job_id,
        job.account.name,
        job.request.image,
        ready.dirs.outputs.display()
    );
    // Slurm keeps the task's own argv after what is prepended.
    let kept = launch.container_args().len();
    let runtime_prefix = argv[..argv.len() - kept].to_vec();
    let task = runtime::supervised_argv(
        &job.config.tool_path,
        &job.request.image,
        job.runtime,
        launch.dropped_args(),
        runtime_prefix,
    );
    let prefix = &task[..];
    spank
        .prepend_task_argv_os(prefix.iter().map(|a| a.as_os_str()).collect())
        .map_err(|e| format!("tre-spank: cannot start the container: {e}"))
}

fn stdin_is_tty() -> bool {
    // SAFETY: isatty only inspects the descriptor; fd 0 may be closed, which it reports.
    unsafe { libc::isatty(0) == 1 }
}
