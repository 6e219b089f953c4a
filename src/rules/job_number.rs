//! The job NUMBER in `outputs-NUMBER` and `scratch-NUMBER`.
//!
//! It is a keyed hash of the job's identity: its id, its restart count and the time the
//! controller recorded its submission. The same on every node and step of one job
//! without any coordination (every node learns these from Slurm), new for a requeued
//! job, different for two jobs that share an id (ids wrapped at `MaxJobId`, or a
//! controller that lost its state and numbers jobs from `FirstJobId` again), and
//! unpredictable to users because the key is a root-only file that every node holds (by
//! default the munge key, which a Slurm cluster already distributes).
//!
//! The submit time comes from the controller (`squeue`, see [`submit_time_args`]), never
//! from the job's environment, which is the user's.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// NUMBERs have seven digits, like the real service's `outputs-3320888`.
pub const NUMBER_MIN: u32 = 1_000_000;
pub const NUMBER_SPAN: u32 = 9_000_000;

/// Which run of which job: what tells two jobs apart even when they share an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobIdentity {
    pub job_id: u32,
    /// Slurm's restart count (`S_SLURM_RESTART_COUNT`): a requeued job's next run.
    pub restart_count: u32,
    /// The job's submit time, in seconds since the epoch, as the controller has it.
    pub submitted: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    #[error("the job number secret is empty")]
    EmptySecret,
}

pub fn job_number(secret: &[u8], id: &JobIdentity) -> Result<u32, NumberError> {
    if secret.is_empty() {
        return Err(NumberError::EmptySecret);
    }
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).map_err(|_| NumberError::EmptySecret)?;
    mac.update(b"tre-spank job number v2\0");
    mac.update(&id.job_id.to_be_bytes());
    mac.update(&id.restart_count.to_be_bytes());
    mac.update(&id.submitted.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let n = u64::from_be_bytes(first) % u64::from(NUMBER_SPAN);
    Ok(NUMBER_MIN + n as u32)
}

/// The squeue arguments that ask the controller for job `job_id`'s submit time (run with
/// `SLURM_TIME_FORMAT` set to [`SUBMIT_TIME_FORMAT`], so that the time is in seconds
/// since the epoch whatever the node's time zone).
pub fn submit_time_args(job_id: u32) -> Vec<String> {
    vec![
        "--noheader".into(),
        "--states=all".into(),
        format!("--jobs={job_id}"),
        "--format=%A|%V".into(),
    ]
}

/// `SLURM_TIME_FORMAT` for [`submit_time_args`] (a strftime format).
pub const SUBMIT_TIME_FORMAT: &str = "%s";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitTimeError {
    #[error("the controller could not be asked for job {job_id}'s submit time{}", in_parens(.detail))]
    NoAnswer { job_id: u32, detail: String },
    #[error("the controller does not list job {0}")]
    NotListed(u32),
    #[error("the controller's answer about job {job_id} is not understood: {line:?}")]
    Garbled { job_id: u32, line: String },
}

fn in_parens(d: &str) -> String {
    if d.is_empty() {
        String::new()
    } else {
        format!(" ({d})")
    }
}

/// Reads squeue's answer to [`submit_time_args`]: the line `ID|SECONDS` for this job
/// (lines of other ids are other tasks of a job array). `success`: squeue's exit status
/// was 0. Anything else (no line for this job, two different times, a time that is not a
/// plain number of seconds) is an error: the caller fails the step rather than guess a
/// NUMBER.
pub fn parse_submit_time(
    job_id: u32,
    success: bool,
    stdout: &str,
    stderr: &str,
) -> Result<u64, SubmitTimeError> {
    if !success {
        let first = stderr.lines().next().unwrap_or("").trim();
        // Shown to the user and logged: only printable ASCII, bounded.
        let shown: String = first
            .chars()
            .filter(|c| c.is_ascii_graphic() || *c == ' ')
            .take(200)
            .collect();
        return Err(SubmitTimeError::NoAnswer {
            job_id,
            detail: shown,
        });
    }
    let mut found = None;
    for line in stdout.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let garbled = || SubmitTimeError::Garbled {
            job_id,
            line: line.chars().take(200).collect(),
        };
        let (id, time) = line.split_once('|').ok_or_else(garbled)?;
        if id.parse::<u32>().ok() != Some(job_id) {
            // Asked for the id of a job array, squeue lists all its tasks (each with
            // its own id): not this job's lines.
            continue;
        }
        if time.is_empty() || !time.bytes().all(|b| b.is_ascii_digit()) {
            return Err(garbled());
        }
        let seconds: u64 = time.parse().map_err(|_| garbled())?;
        if seconds == 0 || found.is_some_and(|f| f != seconds) {
            return Err(garbled());
        }
        found = Some(seconds);
    }
    found.ok_or(SubmitTimeError::NotListed(job_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOB: JobIdentity = JobIdentity {
        job_id: 42,
        restart_count: 0,
        submitted: 1_764_640_000,
    };

    #[test]
    fn same_job_same_number() {
        assert_eq!(job_number(b"k", &JOB), job_number(b"k", &JOB));
    }

    #[test]
    fn numbers_have_seven_digits_and_spread() {
        let mut seen = std::collections::HashSet::new();
        for job_id in 1..2000 {
            let n = job_number(b"site secret", &JobIdentity { job_id, ..JOB }).unwrap();
            assert_eq!(n.to_string().len(), 7);
            seen.insert(n);
        }
        assert!(seen.len() > 1990, "too many collisions: {}", seen.len());
    }

    #[test]
    fn key_restart_and_job_change_the_number() {
        let base = job_number(b"k1", &JOB).unwrap();
        assert_ne!(base, job_number(b"k2", &JOB).unwrap());
        let requeued = JobIdentity {
            restart_count: 1,
            ..JOB
        };
        assert_ne!(base, job_number(b"k1", &requeued).unwrap());
        assert_ne!(
            base,
            job_number(b"k1", &JobIdentity { job_id: 43, ..JOB }).unwrap()
        );
        assert_ne!(base, 42);
    }

    #[test]
    fn a_job_that_reuses_an_id_gets_another_number() {
        // A controller reset or an id wrap: the same id and restart count, submitted
        // later (a second later is enough).
        let base = job_number(b"k", &JOB).unwrap();
        let mut seen = std::collections::HashSet::from([base]);
        for later in 1..1000 {
            let again = JobIdentity {
                submitted: JOB.submitted + later,
                ..JOB
            };
            assert!(seen.insert(job_number(b"k", &again).unwrap()), "{again:?}");
        }
    }

    #[test]
    fn empty_secret_is_refused() {
        assert_eq!(job_number(b"", &JOB), Err(NumberError::EmptySecret));
    }

    #[test]
    fn the_submit_time_is_read_from_the_controllers_answer_only() {
        assert_eq!(
            submit_time_args(7),
            ["--noheader", "--states=all", "--jobs=7", "--format=%A|%V"]
        );
        assert_eq!(
            parse_submit_time(7, true, "7|1764640000\n", ""),
            Ok(1_764_640_000)
        );
        assert_eq!(
            parse_submit_time(7, true, "  7|1764640000  \n\n", ""),
            Ok(1_764_640_000)
        );
        // The same line twice (a job in two partitions) is one answer.
        assert_eq!(
            parse_submit_time(7, true, "7|1764640000\n7|1764640000\n", ""),
            Ok(1_764_640_000)
        );
        assert_eq!(
            parse_submit_time(7, true, "", ""),
            Err(SubmitTimeError::NotListed(7))
        );
        let e = parse_submit_time(7, false, "", "slurm_load_jobs error: Unable to contact slurm controller (connect failure)\nmore\x1b[2J").unwrap_err();
        assert_eq!(
            e.to_string(),
            "the controller could not be asked for job 7's submit time (slurm_load_jobs error: Unable to contact slurm controller (connect failure))"
        );
        // Another task of the job array the id names: not this job's line.
        assert_eq!(
            parse_submit_time(7, true, "8|1764640005\n7|1764640000\n", ""),
            Ok(1_764_640_000)
        );
        assert_eq!(
            parse_submit_time(7, true, "8|1764640000\n", ""),
            Err(SubmitTimeError::NotListed(7))
        );
        for garbled in [
            "7|2026-12-02T02:40:00",
            "7|",
            "7|0",
            "7|-5",
            "7|+5",
            "7|1764640000|x",
            "7 1764640000",
            "7|1764640000\n7|1764640001",
            "7|99999999999999999999999",
        ] {
            assert!(
                matches!(
                    parse_submit_time(7, true, garbled, ""),
                    Err(SubmitTimeError::Garbled { .. })
                ),
                "{garbled:?}"
            );
        }
    }
}
