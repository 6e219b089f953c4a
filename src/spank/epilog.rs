//! The job epilog (root, on every node of the job): remove the scratch directory this
//! job created, identified by the node-local record, never by a path alone.
//!
//! Nothing here returns an error to Slurm: an epilog failure drains the node. Problems
//! are logged to slurmd's log and the record is kept for the next sweep.

use slurm_spank::{spank_log_error, spank_log_info, SpankHandle};

use crate::host::dirs::open_home;
use crate::host::remove::{remove_tree, RemoveError};
use crate::host::runtime_dir;
use crate::host::state::StateDir;
use crate::rules::config;
use crate::rules::plan::scratch_name;

pub fn job_epilog(spank: &mut SpankHandle) {
    let Ok(job_id) = spank.job_id() else { return };
    let args = spank.plugin_argv().unwrap_or_default();
    let config = match config::load(&args) {
        Ok(c) => c,
        Err(e) => {
            spank_log_error!("tre-spank: job {job_id}: epilog cannot clean up: {e}");
            return;
        }
    };
    let state = match StateDir::open(&config.state_dir) {
        Ok(s) => s,
        Err(e) => {
            spank_log_error!("tre-spank: job {job_id}: {e}");
            return;
        }
    };
    // The runtime's per-job state goes whatever else happened.
    match runtime_dir::remove(&config.runtime_dir, job_id) {
        Ok(_) => {}
        Err(e) => spank_log_error!("tre-spank: job {job_id}: runtime state cleanup: {e}"),
    }
    let record = match state.load(job_id) {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => {
            spank_log_error!("tre-spank: job {job_id}: {e}");
            return;
        }
    };
    let name = scratch_name(record.number);
    let home = match open_home(&record.home) {
        Ok(fd) => fd,
        Err(e) => {
            spank_log_error!("tre-spank: job {job_id}: scratch cleanup: {e}");
            return;
        }
    };
    match remove_tree(&home, &record.home, &name, record.scratch) {
        Ok(report) => {
            spank_log_info!(
                "tre-spank: job {job_id}: removed {}/{name} ({} entries)",
                record.home.display(),
                report.removed_entries
            );
            drop_record(&state, job_id);
        }
        Err(e @ RemoveError::NotOurs { .. }) => {
            // Someone put something else at the name: leave it, and forget the job.
            spank_log_error!("tre-spank: job {job_id}: {e}");
            drop_record(&state, job_id);
        }
        Err(e) => spank_log_error!("tre-spank: job {job_id}: scratch cleanup: {e}"),
    }
}

fn drop_record(state: &StateDir, job_id: u32) {
    if let Err(e) = state.remove(job_id) {
        spank_log_error!("tre-spank: job {job_id}: {e}");
    }
}
