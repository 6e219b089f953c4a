//! The job epilog (root, on every node of the job): remove the scratch directory this
//! job created, identified by the node-local record, never by a path alone, and the
//! job's runtime state (see [`crate::host::sweep::clean_job`]).
//!
//! Nothing here returns an error to Slurm: an epilog failure drains the node. Problems
//! are logged to slurmd's log and the record is kept for the next sweep.

use slurm_spank::{spank_log_error, spank_log_info, SpankHandle};

use crate::host::job;
use crate::host::state::StateDir;
use crate::host::sweep::{self, clean_job, Note};

pub fn job_epilog(spank: &mut SpankHandle) {
    let Ok(job_id) = spank.job_id() else { return };
    let args = spank.plugin_argv().unwrap_or_default();
    let config = match job::load_node_config(&args, &job::node_name()) {
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
    log_notes(&clean_job(&config, &state, job_id));
}

fn log_notes(notes: &[Note]) {
    for note in notes {
        // File names in these lines are the users': no forged log lines.
        let line = crate::rules::audit::log_line(&note.line);
        if note.problem {
            spank_log_error!("tre-spank: {line}");
        } else {
            spank_log_info!("tre-spank: {line}");
        }
    }
}

/// slurmd start (and reconfiguration): clean up after jobs that no longer run here.
/// "No longer runs" means no root-owned `slurmstepd: [JOB.*]` process on this node:
/// slurmd launches every step through a slurmstepd, and a step's slurmstepd lives
/// until the step's processes are gone.
pub fn slurmd_sweep(spank: &mut SpankHandle) {
    let args = spank.plugin_argv().unwrap_or_default();
    let config = match job::load_node_config(&args, &job::node_name()) {
        Ok(c) => c,
        Err(e) => {
            spank_log_error!("tre-spank: sweep at slurmd start cannot clean up: {e}");
            return;
        }
    };
    let running = sweep::jobs_with_a_stepd(std::path::Path::new("/proc"));
    match sweep::sweep(&config, &|j| running.contains(&j)) {
        Ok(report) => {
            for job_id in &report.swept {
                spank_log_info!(
                    "tre-spank: sweep: job {job_id} has no slurmstepd on this node: cleaning up"
                );
            }
            log_notes(&report.notes);
        }
        Err(e) => spank_log_error!("tre-spank: sweep at slurmd start: {e}"),
    }
}
