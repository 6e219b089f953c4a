//! Cleanup of one job's leftovers on this node (scratch, per-job runtime state, the
//! record), shared by the job epilog, `tre-spank sweep` and a sweep at slurmd start.
//!
//! Nothing here follows a path alone: scratch is removed only if it is the directory
//! the record names (device and inode), runtime state only under the root-owned parent.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::errno::Errno;

use super::as_user::{self, AsUserError};
use super::dirs::{Dir, DirError};
use super::remove::{job_owners, RemoveError};
use super::runtime_dir;
use super::state::{JobRecord, StateDir, StateError};
use crate::rules::config::Config;
use crate::rules::plan::{job_dir_name, job_id_of_dir_name, scratch_name};

/// One line for a log; `problem` lines go out as errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub problem: bool,
    pub line: String,
}

fn info(line: String) -> Note {
    Note {
        problem: false,
        line,
    }
}

fn problem(line: String) -> Note {
    Note {
        problem: true,
        line,
    }
}

/// Removes what job `job_id` left on this node: its runtime state, then its scratch
/// and record (see [`clean_scratch`]).
pub fn clean_job(config: &Config, state: &StateDir, job_id: u32, wait_for_lock: bool) -> Vec<Note> {
    let mut notes = clean_runtime_state(config, job_id);
    notes.extend(clean_scratch(state, job_id, wait_for_lock));
    notes
}

/// Removes the runtime's per-job state on this node (node-local, never shared): the
/// run state on the tmpfs (`run_dir`), then the storage on disk (`runtime_dir`).
pub fn clean_runtime_state(config: &Config, job_id: u32) -> Vec<Note> {
    let mut notes = Vec::new();
    for (root, tmpfs) in [(&config.run_dir, true), (&config.runtime_dir, false)] {
        let job_dir = runtime_dir::job_dir(root, job_id);
        let existed = std::fs::symlink_metadata(&job_dir).is_ok();
        let removed = if tmpfs {
            runtime_dir::remove_tmpfs(root, job_id)
        } else {
            runtime_dir::remove(root, job_id)
        };
        match removed {
            Ok(r) if existed => notes.push(info(format!(
                "job {job_id}: removed {}/{} ({} entries)",
                root.display(),
                job_dir_name(job_id),
                r.removed_entries
            ))),
            Ok(_) => {}
            Err(e) => notes.push(problem(format!("job {job_id}: runtime state cleanup: {e}"))),
        }
    }
    notes
}

/// Removes the scratch directory the record of `job_id` names, then the record. The
/// record is kept when scratch could not be removed, so that a later sweep tries
/// again. Holds the record's lock: with `wait_for_lock` false a record another
/// process is cleaning up is left to it.
pub fn clean_scratch(state: &StateDir, job_id: u32, wait_for_lock: bool) -> Vec<Note> {
    let mut notes = Vec::new();
    let _lock = match state.lock(job_id, wait_for_lock) {
        Ok(Some(lock)) => lock,
        Ok(None) => return notes,
        Err(e) => {
            notes.push(problem(format!("job {job_id}: {e}")));
            return notes;
        }
    };
    let record = match state.load(job_id) {
        Ok(Some(r)) => r,
        Ok(None) => return notes,
        Err(e) => {
            notes.push(problem(format!("job {job_id}: {e}")));
            return notes;
        }
    };
    let (mut more, forget) = remove_recorded(&record);
    notes.append(&mut more);
    if forget {
        if let Err(e) = state.remove(job_id) {
            notes.push(problem(format!("job {job_id}: {e}")));
        }
    }
    notes
}

/// What root's attempt at a job's scratch came to.
enum ByRoot {
    Removed(u64),
    /// Something else is at the name: left alone (the record may go).
    NotOurs(String),
    /// Refused for want of permission (a home that squashes root to nobody).
    Refused(String),
    Failed(String),
}

fn remove_as_root(record: &JobRecord, parent_path: &Path, name: &str) -> ByRoot {
    let parent = match Dir::open(parent_path) {
        Ok(fd) => fd,
        Err(
            e @ DirError::Home {
                errno: Errno::EACCES | Errno::EPERM,
                ..
            },
        ) => return ByRoot::Refused(e.to_string()),
        Err(e) => return ByRoot::Failed(e.to_string()),
    };
    match parent.remove_tree(name, record.scratch, &job_owners(record.uid)) {
        Ok(report) => ByRoot::Removed(report.removed_entries),
        Err(e @ RemoveError::NotOurs { .. }) => ByRoot::NotOurs(e.to_string()),
        Err(e) if e.denied() => ByRoot::Refused(e.to_string()),
        Err(e) => ByRoot::Failed(e.to_string()),
    }
}

/// Removes the scratch `record` names; `true` when the record may go (scratch removed,
/// or replaced by something that is not ours). Root first; where root is refused for
/// want of permission (a home that squashes root to nobody), as the user
/// ([`super::as_user`]), under the same rules.
fn remove_recorded(record: &JobRecord) -> (Vec<Note>, bool) {
    let job_id = record.job_id;
    let name = scratch_name(record.number);
    let parent_path = record.scratch_parent();
    let removed = |n: u64, how: &str| {
        info(format!(
            "job {job_id}: removed {}/{name} ({n} entries{how})",
            parent_path.display()
        ))
    };
    let kept = |why: String| {
        (
            vec![problem(format!("job {job_id}: scratch cleanup: {why}"))],
            false,
        )
    };
    match remove_as_root(record, parent_path, &name) {
        ByRoot::Removed(n) => (vec![removed(n, "")], true),
        // Someone put something else at the name: leave it, and forget the job.
        ByRoot::NotOurs(why) => (vec![problem(format!("job {job_id}: {why}"))], true),
        ByRoot::Refused(why) if record.uid != 0 => {
            match as_user::remove_as_user(parent_path, &name, record.scratch, record.uid) {
                Ok(n) => (
                    vec![removed(n, ", as the user: root is refused there")],
                    true,
                ),
                Err(e @ AsUserError::NotOurs(_)) => {
                    (vec![problem(format!("job {job_id}: {e}"))], true)
                }
                Err(e) => kept(format!("root is refused ({why}); as the user: {e}")),
            }
        }
        ByRoot::Refused(why) | ByRoot::Failed(why) => kept(why),
    }
}

/// Removes what retired records (of earlier jobs that had the id of a later one) name.
fn clean_retired(state: &StateDir) -> Vec<Note> {
    let mut notes = Vec::new();
    for name in state.retired().unwrap_or_default() {
        let record = match state.load_retired(&name) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                notes.push(problem(format!("retired record {name}: {e}")));
                continue;
            }
        };
        let (mut more, forget) = remove_recorded(&record);
        notes.append(&mut more);
        if forget {
            if let Err(e) = state.remove_retired(&name) {
                notes.push(problem(format!("retired record {name}: {e}")));
            }
        }
    }
    notes
}

/// Job ids with a runtime directory `job-N` under `root`.
fn runtime_dir_jobs(root: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| job_id_of_dir_name(e.file_name().to_str()?))
        .collect()
}

/// Jobs that have a slurmstepd on this node: root-owned processes whose title is
/// `slurmstepd: [JOB.STEP]` (slurmstepd sets it). A user can name a process anything,
/// so only root's processes count.
pub fn jobs_with_a_stepd(proc_root: &Path) -> BTreeSet<u32> {
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return BTreeSet::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_str().is_some_and(is_pid))
        .filter(|e| e.metadata().map(|m| m.uid() == 0).unwrap_or(false))
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter_map(|cmdline| stepd_job(&cmdline))
        .collect()
}

fn is_pid(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit())
}

/// The job id in a slurmstepd process title, if `cmdline` is one.
pub fn stepd_job(cmdline: &[u8]) -> Option<u32> {
    let rest = cmdline.strip_prefix(b"slurmstepd: [")?;
    let end = rest.iter().position(|b| !b.is_ascii_digit())?;
    if end == 0 || !matches!(rest[end], b'.' | b']') {
        return None;
    }
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// Jobs with a record or a runtime directory on this node, sorted.
pub fn known_jobs(config: &Config, state: &StateDir) -> Result<Vec<u32>, StateError> {
    let mut jobs = state.jobs()?;
    jobs.extend(runtime_dir_jobs(&config.runtime_dir));
    jobs.extend(runtime_dir_jobs(&config.run_dir));
    jobs.sort_unstable();
    jobs.dedup();
    Ok(jobs)
}

#[derive(Debug, Default)]
pub struct SweepReport {
    /// Jobs cleaned up (their leftovers no longer exist, or a problem was noted).
    pub swept: Vec<u32>,
    /// Jobs left alone because they are still alive.
    pub alive: Vec<u32>,
    pub notes: Vec<Note>,
}

/// Cleans up every job with a record or runtime directory on this node for which
/// `is_job_alive` says no. The caller decides liveness (squeue, slurmd's own view); when
/// in doubt it must say alive.
pub fn sweep(
    config: &Config,
    is_job_alive: &dyn Fn(u32) -> bool,
) -> Result<SweepReport, StateError> {
    let state = StateDir::open(&config.state_dir)?;
    let jobs = known_jobs(config, &state)?;
    let mut report = SweepReport::default();
    report.notes.extend(clean_retired(&state));
    for job_id in jobs {
        if is_job_alive(job_id) {
            report.alive.push(job_id);
        } else {
            report
                .notes
                .extend(clean_job(config, &state, job_id, false));
            report.swept.push(job_id);
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stepd_titles() {
        assert_eq!(stepd_job(b"slurmstepd: [12.batch]\0\0"), Some(12));
        assert_eq!(stepd_job(b"slurmstepd: [7.0]"), Some(7));
        assert_eq!(stepd_job(b"slurmstepd: [3.extern]   "), Some(3));
        assert_eq!(stepd_job(b"slurmstepd: [3]"), Some(3));
        assert_eq!(stepd_job(b"slurmstepd: []"), None);
        assert_eq!(stepd_job(b"slurmstepd: [x.0]"), None);
        assert_eq!(stepd_job(b"slurmstepd: [99999999999.0]"), None);
        assert_eq!(stepd_job(b"/usr/sbin/slurmstepd\0"), None);
        assert_eq!(stepd_job(b"sleep\0slurmstepd: [1.0]"), None);
    }

    #[test]
    fn only_roots_processes_titled_slurmstepd_count() {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sleep")
            .arg0("slurmstepd: [424242.batch]")
            .arg("30")
            .spawn()
            .unwrap();
        // The title is in /proc as soon as exec is done.
        let mut found = BTreeSet::new();
        for _ in 0..100 {
            found = jobs_with_a_stepd(Path::new("/proc"));
            let cmdline =
                std::fs::read(format!("/proc/{}/cmdline", child.id())).unwrap_or_default();
            if cmdline.starts_with(b"slurmstepd") {
                found = jobs_with_a_stepd(Path::new("/proc"));
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        // Run as root, the fake is root's and counts; as a user it must not.
        assert_eq!(
            found.contains(&424242),
            nix::unistd::geteuid().is_root(),
            "{found:?}"
        );
        assert!(jobs_with_a_stepd(Path::new("/nonexistent")).is_empty());
    }
    use crate::host::dirs::{Dir, DirId};
    use nix::unistd::{Gid, Uid};

    /// A node's state and runtime directories and a home, in a temporary directory.
    fn node() -> (tempfile::TempDir, std::path::PathBuf, Config, StateDir) {
        let t = tempfile::tempdir().unwrap();
        let home = t.path().join("home");
        std::fs::create_dir(&home).unwrap();
        let config = Config {
            state_dir: t.path().join("state"),
            runtime_dir: t.path().join("jobs"),
            run_dir: t.path().join("run"),
            ..Config::default()
        };
        let state = StateDir::open(&config.state_dir).unwrap();
        (t, home, config, state)
    }

    #[test]
    fn sweeps_dead_jobs_and_keeps_live_ones() {
        let (_t, home, config, state) = node();
        let (uid, gid) = (Uid::effective().as_raw(), Gid::effective().as_raw());
        let home_fd = Dir::open(&home).unwrap();
        for (job, number) in [(10u32, 111u32), (11, 222)] {
            let scratch = home_fd.create_private(&scratch_name(number)).unwrap();
            std::fs::write(home.join(scratch_name(number)).join("f"), b"x").unwrap();
            state
                .save(&JobRecord {
                    job_id: job,
                    submitted: Some(1),
                    uid,
                    number,
                    home: home.clone(),
                    outputs: DirId { dev: 0, ino: 0 },
                    scratch,
                    scratch_parent: None,
                })
                .unwrap();
            runtime_dir::ensure(&config.runtime_dir, job, uid, gid).unwrap();
            let run = runtime_dir::ensure(&config.run_dir, job, uid, gid).unwrap();
            std::fs::create_dir_all(run.join("libpod/tmp")).unwrap();
            std::fs::write(run.join("libpod/tmp/pause.pid"), b"1").unwrap();
        }
        // A runtime directory without a record (the step failed before recording).
        runtime_dir::ensure(&config.runtime_dir, 12, uid, gid).unwrap();
        // Run state alone (a step that failed between making the two directories).
        runtime_dir::ensure(&config.run_dir, 13, uid, gid).unwrap();
        let report = sweep(&config, &|j| j == 11).unwrap();
        assert_eq!(report.swept, vec![10, 12, 13]);
        assert_eq!(report.alive, vec![11]);
        assert!(
            report.notes.iter().all(|n| !n.problem),
            "{:?}",
            report.notes
        );
        assert!(!home.join(scratch_name(111)).exists());
        assert!(home.join(scratch_name(222)).exists());
        assert!(!config.runtime_dir.join("job-10").exists());
        assert!(!config.runtime_dir.join("job-12").exists());
        assert!(config.runtime_dir.join("job-11").exists());
        assert!(!config.run_dir.join("job-10").exists());
        assert!(!config.run_dir.join("job-13").exists());
        assert!(config.run_dir.join("job-11").exists());
        assert_eq!(state.jobs().unwrap(), vec![11]);
    }

    #[test]
    fn retired_records_are_swept_whatever_the_job_id_does() {
        let (_t, home, config, state) = node();
        let home_fd = Dir::open(&home).unwrap();
        let scratch = home_fd.create_private(&scratch_name(333)).unwrap();
        let old = JobRecord {
            job_id: 20,
            submitted: None,
            uid: Uid::effective().as_raw(),
            number: 333,
            home: home.clone(),
            outputs: DirId { dev: 0, ino: 0 },
            scratch,
            scratch_parent: None,
        };
        state.save(&old).unwrap();
        state.retire(&old).unwrap();
        // Job 20 is alive again (a later job with the id): its retired record still goes.
        let report = sweep(&config, &|_| true).unwrap();
        assert!(!home.join(scratch_name(333)).exists(), "{:?}", report.notes);
        assert!(state.retired().unwrap().is_empty());
    }

    #[test]
    fn a_replaced_scratch_is_left_and_the_job_forgotten() {
        let (_t, home, config, state) = node();
        std::fs::create_dir(home.join(scratch_name(5))).unwrap();
        state
            .save(&JobRecord {
                job_id: 3,
                submitted: Some(1),
                uid: 0,
                number: 5,
                home: home.clone(),
                outputs: DirId { dev: 0, ino: 0 },
                scratch: DirId { dev: 0, ino: 1 },
                scratch_parent: None,
            })
            .unwrap();
        let report = sweep(&config, &|_| false).unwrap();
        assert!(report.notes.iter().any(|n| n.problem));
        assert!(home.join(scratch_name(5)).exists());
        assert_eq!(state.jobs().unwrap(), Vec::<u32>::new());
    }
}
