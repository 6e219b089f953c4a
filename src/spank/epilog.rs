//! The job epilog (root, on every node of the job) and slurmd's start hand cleanup to
//! a `tre-spank cleanup` process (see [`crate::host::cleanup`]): the epilog waits for
//! it at most `cleanup.epilog_budget` seconds, slurmd not at all.
//!
//! Nothing here returns an error to Slurm: an epilog failure drains the node. Problems
//! are logged to slurmd's log (through `log`: see `spank::log`, which escapes the
//! users' file names) and the record is kept for the next sweep.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use slurm_spank::SpankHandle;

use crate::host::cleanup::{read_line, LOG_NAME};
use crate::host::state::StateDir;
use crate::host::{job, runtime_dir};
use crate::rules::config::Config;

/// The cleanup process for `mode` (`--epilog J` or `--at-slurmd-start`), with the
/// plugin's own arguments so that it reads the config this plugin reads.
fn cleanup_command(config: &Config, mode: &[String], plugin_args: &[&str]) -> Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(&config.tool_path);
    cmd.arg("cleanup")
        .args(mode)
        .arg("--")
        .args(plugin_args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: what kills a timed-out epilog leaves it alone.
        .process_group(0);
    if let Some(conf) = std::env::var_os("SLURM_CONF") {
        cmd.env("SLURM_CONF", conf);
    }
    cmd
}

pub fn job_epilog(spank: &mut SpankHandle) {
    let Ok(job_id) = spank.job_id() else { return };
    let args = spank.plugin_argv().unwrap_or_default();
    let config = match job::load_node_config(&args, &job::node_name()) {
        Ok(c) => c,
        Err(e) => {
            log::error!("job {job_id}: epilog cannot clean up: {e}");
            return;
        }
    };
    // A job that left nothing here (no container step ran on this node) needs no
    // cleanup process.
    let has_record = StateDir::open(&config.state_dir)
        .and_then(|s| s.load(job_id))
        .map_or(true, |r| r.is_some());
    let job_dir = |root: &std::path::Path| runtime_dir::job_dir(root, job_id);
    if !has_record
        && std::fs::symlink_metadata(job_dir(&config.runtime_dir)).is_err()
        && std::fs::symlink_metadata(job_dir(&config.run_dir)).is_err()
    {
        return;
    }
    let mode = ["--epilog".to_string(), job_id.to_string()];
    let mut child = match cleanup_command(&config, &mode, &args)
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            log::error!(
                "job {job_id}: cannot start {} cleanup: {e}; left for the next sweep",
                config.tool_path.display()
            );
            return;
        }
    };
    let Some(stdout) = child.stdout.take() else {
        return;
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(config.cleanup.epilog_budget);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            // File names in these lines are the users': no forged log lines.
            Ok(line) => match read_line(&line) {
                Ok((true, text)) => log::error!("{text}"),
                Ok((false, text)) => log::info!("{text}"),
                Err(text) => {
                    log::info!(
                        "{text} (in the background, pid {}; its notes go to {}/{LOG_NAME})",
                        child.id(),
                        config.state_dir.display()
                    );
                    return;
                }
            },
            Err(RecvTimeoutError::Disconnected) => {
                let _ = child.wait();
                return;
            }
            Err(RecvTimeoutError::Timeout) => {
                log::error!(
                    "job {job_id}: cleanup still running after {}s (cleanup.epilog_budget): it goes on in the background (pid {}); its notes go to {}/{LOG_NAME}, what it cannot finish is left for the next sweep",
                    config.cleanup.epilog_budget,
                    child.id(),
                    config.state_dir.display()
                );
                return;
            }
        }
    }
}

/// slurmd start (and reconfiguration): start the sweep of jobs that ended (see
/// [`crate::host::cleanup::sweep_ended_jobs`]) in the background and return at once.
pub fn slurmd_sweep(spank: &mut SpankHandle) {
    let args = spank.plugin_argv().unwrap_or_default();
    let config = match job::load_node_config(&args, &job::node_name()) {
        Ok(c) => c,
        Err(e) => {
            log::error!("sweep at slurmd start cannot clean up: {e}");
            return;
        }
    };
    let mode = ["--at-slurmd-start".to_string(), "--detach".to_string()];
    // The detaching process only starts the sweep in a new session and exits.
    match cleanup_command(&config, &mode, &args)
        .stdout(Stdio::piped())
        .output()
    {
        Ok(out) if out.status.success() => log::info!(
            "sweep at slurmd start runs in the background (pid {}); its notes go to {}/{LOG_NAME}",
            String::from_utf8_lossy(&out.stdout).trim(),
            config.state_dir.display()
        ),
        Ok(out) => log::error!("sweep at slurmd start did not start ({})", out.status),
        Err(e) => log::error!(
            "sweep at slurmd start: cannot run {}: {e}",
            config.tool_path.display()
        ),
    }
}
