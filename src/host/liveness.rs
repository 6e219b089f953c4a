//! Asks the controller about jobs (see [`crate::rules::liveness`]): `squeue` run as an
//! argv with a fixed environment and a time bound. A controller that is down or slow
//! makes every job [`JobView::Unknown`], which keeps everything.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::poll;
use crate::rules::config::CleanupConfig;
use crate::rules::job_number::{
    parse_submit_time, submit_time_args, SubmitTimeError, SUBMIT_TIME_FORMAT,
};
use crate::rules::liveness::{parse_squeue, squeue_args, JobView};

/// The most of squeue's output read (a line per job asked; a node list can be long).
const OUTPUT_LIMIT: u64 = 4 << 20;

/// What the controller says about `jobs` (empty: no query).
pub fn ask_controller(config: &CleanupConfig, jobs: &[u32]) -> BTreeMap<u32, JobView> {
    if jobs.is_empty() {
        return BTreeMap::new();
    }
    match run_squeue(config, &squeue_args(jobs), &[]) {
        Some((success, out, err)) => parse_squeue(jobs, success, &out, &err),
        None => jobs.iter().map(|j| (*j, JobView::Unknown)).collect(),
    }
}

/// Job `job_id`'s submit time, from the controller (see [`crate::rules::job_number`]).
pub fn submit_time(config: &CleanupConfig, job_id: u32) -> Result<u64, SubmitTimeError> {
    let env = [("SLURM_TIME_FORMAT", SUBMIT_TIME_FORMAT)];
    match run_squeue(config, &submit_time_args(job_id), &env) {
        Some((success, out, err)) => parse_submit_time(job_id, success, &out, &err),
        None => Err(SubmitTimeError::NoAnswer {
            job_id,
            detail: format!(
                "{} did not run or gave no answer within {}s",
                config.squeue.display(),
                config.controller_timeout.max(1)
            ),
        }),
    }
}

/// Runs squeue with `args` and a fixed environment (plus `env`), within the
/// controller timeout: `None` if it did not run or did not finish in time, else its
/// success and its output.
fn run_squeue(
    config: &CleanupConfig,
    args: &[String],
    env: &[(&str, &str)],
) -> Option<(bool, String, String)> {
    let mut cmd = Command::new(&config.squeue);
    cmd.args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // slurmd's own view of where slurm.conf is (configless sites, test beds).
    for name in ["SLURM_CONF", "LANG"] {
        if let Some(v) = std::env::var_os(name) {
            cmd.env(name, v);
        }
    }
    cmd.envs(env.iter().copied());
    let mut child = cmd.spawn().ok()?;
    let readers = [
        child.stdout.take().map(|o| read_bounded(Box::new(o))),
        child.stderr.take().map(|e| read_bounded(Box::new(e))),
    ];
    let deadline = Instant::now() + Duration::from_secs(config.controller_timeout.max(1));
    let mut round = 0;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => {
                // squeue answers in a few milliseconds: a container step waits for it.
                std::thread::sleep(poll::pause(round, Duration::from_millis(20)));
                round += 1;
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    // On a timeout the readers are left to finish on their own: something squeue
    // started may hold the pipes open.
    let status = status?;
    let [out, err] = readers.map(|r| r.and_then(|h| h.join().ok()).unwrap_or_default());
    Some((status.success(), out, err))
}

fn read_bounded(stream: Box<dyn Read + Send>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stream.take(OUTPUT_LIMIT).read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn fake_squeue(dir: &std::path::Path, name: &str, body: &str) -> CleanupConfig {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        CleanupConfig {
            squeue: path,
            controller_timeout: 1,
            ..CleanupConfig::default()
        }
    }

    #[test]
    fn the_answer_is_read_and_a_slow_or_missing_controller_is_unknown() {
        let t = tempfile::tempdir().unwrap();
        let ok = fake_squeue(t.path(), "ok", "echo \"$4\" >&2; echo '3|RUNNING|n1'");
        let v = ask_controller(&ok, &[3, 4]);
        assert_eq!(
            v[&3],
            JobView::Listed {
                state: "RUNNING".into(),
                nodes: "n1".into()
            }
        );
        assert_eq!(v[&4], JobView::Gone);

        let slow = fake_squeue(t.path(), "slow", "exec sleep 5; echo '3|COMPLETED|n1'");
        let started = Instant::now();
        assert_eq!(ask_controller(&slow, &[3])[&3], JobView::Unknown);
        assert!(started.elapsed() < Duration::from_secs(4));

        let missing = CleanupConfig {
            squeue: t.path().join("nothing"),
            ..CleanupConfig::default()
        };
        assert_eq!(ask_controller(&missing, &[3])[&3], JobView::Unknown);
        assert!(ask_controller(&missing, &[]).is_empty());
    }

    #[test]
    fn the_submit_time_is_asked_in_seconds_and_a_silent_controller_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        // Prints the job asked for and the submit time only in the format asked for.
        let ok = fake_squeue(
            t.path(),
            "ok",
            "[ \"$SLURM_TIME_FORMAT\" = %s ] || exit 1; echo \"${3#--jobs=}|1764640000\"",
        );
        assert_eq!(submit_time(&ok, 9), Ok(1_764_640_000));
        let down = fake_squeue(
            t.path(),
            "down",
            "echo 'squeue: error: Unable to contact slurm controller' >&2; exit 1",
        );
        let e = submit_time(&down, 9).unwrap_err().to_string();
        assert!(e.contains("Unable to contact slurm controller"), "{e}");
        let slow = fake_squeue(t.path(), "slow2", "exec sleep 5");
        let e = submit_time(&slow, 9).unwrap_err().to_string();
        assert!(e.contains("gave no answer within 1s"), "{e}");
    }
}
