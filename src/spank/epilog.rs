//! The job epilog (root, on every node of the job) and the sweep at slurmd start:
//! remove the scratch directory each job created, identified by the node-local record,
//! never by a path alone (see [`crate::host::cleanup`]).
//!
//! Nothing here returns an error to Slurm: an epilog or slurmd init failure drains the
//! node or stops slurmd. Problems are logged to slurmd's log and the record is kept
//! for the next sweep.

use slurm_spank::{spank_log_error, spank_log_info, SpankHandle};

use crate::host::cleanup::{self, Line};
use crate::host::state::StateDir;
use crate::rules::config::{self, Config};

fn log(lines: Vec<Line>) {
    for line in lines {
        match line {
            Ok(l) => spank_log_info!("tre-spank: {l}"),
            Err(l) => spank_log_error!("tre-spank: {l}"),
        }
    }
}

fn config_and_state(spank: &SpankHandle, what: &str) -> Option<(Config, StateDir)> {
    let args = spank.plugin_argv().unwrap_or_default();
    let config = match config::load(&args) {
        Ok(c) => c,
        Err(e) => {
            spank_log_error!("tre-spank: {what} cannot clean up: {e}");
            return None;
        }
    };
    match StateDir::open(&config.state_dir) {
        Ok(s) => Some((config, s)),
        Err(e) => {
            spank_log_error!("tre-spank: {what}: {e}");
            None
        }
    }
}

pub fn job_epilog(spank: &mut SpankHandle) {
    let Ok(job_id) = spank.job_id() else { return };
    let Some((config, state)) = config_and_state(spank, &format!("job {job_id}: epilog")) else {
        return;
    };
    log(cleanup::clean_up_job(&state, &config.runtime_dir, job_id));
}

/// slurmd start (and reconfiguration): clean up after jobs that no longer run here.
/// "No longer runs" means no root-owned `slurmstepd: [JOB.*]` process on this node:
/// slurmd itself launches every step through a slurmstepd, and a step's slurmstepd
/// lives until the step's processes are gone.
pub fn slurmd_sweep(spank: &mut SpankHandle) {
    let Some((config, state)) = config_and_state(spank, "sweep at slurmd start") else {
        return;
    };
    let running = cleanup::jobs_with_a_stepd(std::path::Path::new("/proc"));
    log(cleanup::sweep(&state, &config.runtime_dir, &running));
}
