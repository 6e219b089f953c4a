//! slurmstepd: every job step on every node. The step itself is
//! [`crate::host::step`]; this module gathers its facts from the `SpankHandle` and
//! applies what the pipeline returns.
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
use std::path::PathBuf;
use std::time::SystemTime;

use slurm_spank::SpankHandle;

use super::raw_options;
use super::start::start_task;
use crate::host::audit as host_audit;
use crate::host::log::AUDIT_TARGET;
use crate::host::step::{
    self, EnvChange, NodeHost, Step as StepState, StepError, StepFacts, TaskOutcome,
};
use crate::rules::audit::{self, Event};
use crate::rules::options::RawOptions;

#[derive(Default)]
pub struct Step {
    state: StepState,
}

/// The step's facts, as slurmstepd gives them.
struct Facts<'a, 'b>(&'a SpankHandle<'b>);

impl StepFacts for Facts<'_, '_> {
    fn plugin_args(&self) -> Result<Vec<String>, StepError> {
        let args =
            (self.0.plugin_argv()).map_err(|e| StepError::cannot("read plugstack arguments", e))?;
        Ok(args.into_iter().map(str::to_string).collect())
    }
    fn options(&self) -> RawOptions {
        raw_options(self.0)
    }
    fn job_id(&self) -> Result<Option<u32>, StepError> {
        let id = (self.0.job_id()).map_err(|e| StepError::cannot("get the job id", e))?;
        Ok(Some(id))
    }
    fn step_id(&self) -> Option<u32> {
        self.0.job_stepid().ok()
    }
    fn restart_count(&self) -> u32 {
        self.0.slurm_restart_count().unwrap_or(0)
    }
    fn uid(&self) -> Result<u32, StepError> {
        (self.0.job_uid()).map_err(|e| StepError::cannot("get the job's uid", e))
    }
    fn gid(&self) -> Result<u32, StepError> {
        (self.0.job_gid()).map_err(|e| StepError::cannot("get the job's gid", e))
    }
    fn supplementary_gids(&self) -> Vec<u32> {
        self.0.job_supplementary_gids().unwrap_or_default()
    }
    fn getenv(&self, name: &str) -> Option<OsString> {
        self.0.getenv_os(name).ok().flatten()
    }
    fn env_names(&self) -> Vec<OsString> {
        // Every name, as bytes: a value that is not UTF-8 must not hide its variable.
        (self.0.job_env_os().unwrap_or_default().into_iter())
            .map(|kv| {
                let kv = kv.as_bytes();
                let name = kv.split(|b| *b == b'=').next().unwrap_or(kv);
                OsString::from_vec(name.to_vec())
            })
            .collect()
    }
    fn task_argv(&self) -> Result<Vec<OsString>, StepError> {
        let argv =
            (self.0.job_argv_os()).map_err(|e| StepError::cannot("read the task's command", e))?;
        Ok(argv.into_iter().map(|a| a.to_os_string()).collect())
    }
    fn task_id(&self) -> Option<u32> {
        self.0.task_global_id().ok()
    }
    fn tty(&self) -> bool {
        std::io::IsTerminal::is_terminal(&std::io::stdin())
    }
    fn cwd(&self) -> Option<PathBuf> {
        std::env::current_dir().ok()
    }
}

impl Step {
    pub fn hold_error(&mut self, error: StepError) {
        self.state = StepState::Refused(error);
    }

    pub fn init_post_opt(&mut self, spank: &mut SpankHandle) {
        self.state.init_post_opt(&Facts(spank), &NodeHost);
    }

    pub fn user_init(&mut self, _spank: &mut SpankHandle) {
        self.state.user_init(&NodeHost);
    }

    pub fn task_init_privileged(&mut self, _spank: &mut SpankHandle) {
        self.state.task_init_privileged(&NodeHost);
    }

    pub fn task_init(&mut self, spank: &mut SpankHandle) -> Result<(), Box<dyn Error>> {
        let facts = Facts(spank);
        let result = match self.state.task_init(&facts, &NodeHost) {
            TaskOutcome::NotContainer => return Ok(()),
            TaskOutcome::Refused(e) => Err(e.line()),
            TaskOutcome::Failed(e) => Err(e.line()),
            TaskOutcome::Run(ready, plan) => apply(spank, ready, plan).map_err(|e| e.line()),
        };
        result.map_err(|line| {
            say(&line);
            audit(
                Event::Refused,
                step::refusal_fields(&Facts(spank), &NodeHost, &line),
            );
            line.into()
        })
    }

    /// slurmstepd (root), once per task: the end of the container run.
    pub fn task_exit(&mut self, spank: &mut SpankHandle) {
        let Some(ready) = self.state.container_run() else {
            return;
        };
        let mut fields = step::run_fields(ready, &Facts(spank));
        fields.push(("start", audit::utc_time(ready.started)));
        fields.push(("end", audit::utc_time(SystemTime::now())));
        match spank.task_exit_status() {
            Ok(status) => {
                let (key, value) = audit::exit_fields(status);
                fields.push((key, value));
            }
            Err(_) => fields.push(("exit", "unknown".into())),
        }
        audit(Event::End, fields);
    }
}

/// Applies the task's plan: its environment, the lines the job shows, its command.
fn apply(
    spank: &mut SpankHandle,
    ready: &step::Ready,
    plan: step::TaskPlan,
) -> Result<(), StepError> {
    for change in &plan.env {
        match change {
            EnvChange::Set(name, value) => spank
                .setenv(name, value, true)
                .map_err(|e| StepError::cannot(format!("set {}", name.to_string_lossy()), e))?,
            EnvChange::Unset(name) => spank
                .unsetenv(name)
                .map_err(|e| StepError::cannot(format!("remove {}", name.to_string_lossy()), e))?,
            EnvChange::Pass { name, value } => spank
                .setenv(format!("APPTAINERENV_{name}"), value, true)
                .map_err(|e| StepError::cannot(format!("pass {name}"), e))?,
        }
    }
    let Some(command) = plan.command else {
        // The batch script of --tre-batch=host: as it is, on the host.
        for line in &plan.lines {
            say(line);
        }
        return Ok(());
    };
    if spank.task_global_id().unwrap_or(0) == 0 {
        for line in &plan.lines {
            say(line);
        }
    }
    let mut fields = step::run_fields(ready, &Facts(spank));
    fields.push(("start", audit::utc_time(ready.started)));
    audit(Event::Start, fields);
    // The task runs the prefix followed by its own argv (see spank::start).
    start_task(spank, &command.task_prefix, &command.task_argv)
}

/// An audit record to syslog and to the slurmd log.
fn audit(event: Event, fields: Vec<(&'static str, String)>) {
    let record = audit::format_record(event, &fields);
    log::info!(target: AUDIT_TARGET, "{record}");
    if let Err(e) = host_audit::send(event, &fields) {
        log::debug!("audit record not sent to syslog: {e}");
    }
}

/// One line on the task's stderr, which is the job's output. Write errors are ignored:
/// there is nowhere else to report them.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}
