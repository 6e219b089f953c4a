//! What happens to a job's leftovers on a node: used by the job epilog and by the sweep
//! at slurmd start (for jobs whose epilog never ran here: slurmd down, node rebooted).
//!
//! A job is cleaned up from its root-owned record only: the scratch directory it names
//! is removed if it is still the directory the job created (device and inode), and the
//! job's runtime directory under the root-owned runtime root goes too. Outputs are
//! never touched.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::dirs::open_home;
use super::remove::{remove_tree, RemoveError};
use super::runtime_dir;
use super::state::StateDir;
use crate::rules::plan::scratch_name;

/// One line for slurmd's log; `Err` lines are logged as errors.
pub type Line = Result<String, String>;

/// Cleans up job `job_id` on this node. The record is dropped once there is nothing
/// more to do (removed, gone, or replaced by something that is not ours); it is kept
/// when something was left that a later sweep may remove (for example a mount).
pub fn clean_up_job(state: &StateDir, runtime_root: &Path, job_id: u32) -> Vec<Line> {
    let mut lines = Vec::new();
    // The runtime's per-job state goes whatever else happened.
    if let Err(e) = runtime_dir::remove(runtime_root, job_id) {
        lines.push(Err(format!("job {job_id}: runtime state cleanup: {e}")));
    }
    let record = match state.load(job_id) {
        Ok(Some(r)) => r,
        Ok(None) => return lines,
        Err(e) => {
            lines.push(Err(format!("job {job_id}: {e}")));
            return lines;
        }
    };
    let name = scratch_name(record.number);
    let home = match open_home(&record.home) {
        Ok(fd) => fd,
        Err(e) => {
            lines.push(Err(format!("job {job_id}: scratch cleanup: {e}")));
            return lines;
        }
    };
    let drop_record = match remove_tree(&home, &record.home, &name, record.scratch) {
        Ok(report) => {
            lines.push(Ok(format!(
                "job {job_id}: removed {}/{name} ({} entries)",
                record.home.display(),
                report.removed_entries
            )));
            true
        }
        Err(e @ RemoveError::NotOurs { .. }) => {
            // Someone put something else at the name: leave it, and forget the job.
            lines.push(Err(format!("job {job_id}: {e}")));
            true
        }
        Err(e) => {
            lines.push(Err(format!("job {job_id}: scratch cleanup: {e}")));
            false
        }
    };
    if drop_record {
        if let Err(e) = state.remove(job_id) {
            lines.push(Err(format!("job {job_id}: {e}")));
        }
    }
    lines
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

/// Job ids with a runtime directory (`job-N`) under the runtime root.
fn runtime_dir_jobs(runtime_root: &Path) -> BTreeSet<u32> {
    let Ok(entries) = std::fs::read_dir(runtime_root) else {
        return BTreeSet::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("job-")?.parse().ok())
        .collect()
}

/// The sweep at slurmd start: cleans up every job that has a record or a runtime
/// directory on this node but no slurmstepd any more (`running`).
pub fn sweep(state: &StateDir, runtime_root: &Path, running: &BTreeSet<u32>) -> Vec<Line> {
    let mut jobs = runtime_dir_jobs(runtime_root);
    match state.jobs() {
        Ok(ids) => jobs.extend(ids),
        Err(e) => return vec![Err(format!("sweep: {e}"))],
    }
    let mut lines = Vec::new();
    for job_id in jobs.difference(running) {
        lines.push(Ok(format!(
            "sweep: job {job_id} has no slurmstepd on this node: cleaning up"
        )));
        lines.extend(clean_up_job(state, runtime_root, *job_id));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::dirs::{create_private_dir, DirId};
    use crate::host::state::JobRecord;
    use nix::unistd::{Gid, Uid};

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

    struct Node {
        _t: tempfile::TempDir,
        home: std::path::PathBuf,
        runtime: std::path::PathBuf,
        state: StateDir,
    }

    fn node() -> Node {
        let t = tempfile::tempdir().unwrap();
        let home = t.path().join("home");
        std::fs::create_dir(&home).unwrap();
        let runtime = t.path().join("jobs");
        let state = StateDir::open(&t.path().join("state")).unwrap();
        Node {
            _t: t,
            home,
            runtime,
            state,
        }
    }

    /// A job as the plugin leaves it: outputs and scratch (with content), a record, and
    /// a runtime directory.
    fn job(n: &Node, job_id: u32, number: u32) -> DirId {
        let fd = open_home(&n.home).unwrap();
        let outputs = create_private_dir(&fd, &n.home, &format!("outputs-{number}")).unwrap();
        let scratch = create_private_dir(&fd, &n.home, &format!("scratch-{number}")).unwrap();
        std::fs::write(n.home.join(format!("outputs-{number}/result")), b"r").unwrap();
        std::fs::create_dir(n.home.join(format!("scratch-{number}/d"))).unwrap();
        let (uid, gid) = (Uid::effective().as_raw(), Gid::effective().as_raw());
        runtime_dir::ensure(&n.runtime, job_id, uid, gid).unwrap();
        n.state
            .save(&JobRecord {
                job_id,
                uid,
                number,
                home: n.home.clone(),
                outputs,
                scratch,
            })
            .unwrap();
        scratch
    }

    #[test]
    fn sweep_cleans_jobs_without_a_stepd_and_leaves_running_ones() {
        let n = node();
        job(&n, 10, 1_000_010);
        job(&n, 11, 1_000_011);
        // A runtime directory whose job never got a record.
        runtime_dir::ensure(
            &n.runtime,
            12,
            Uid::effective().as_raw(),
            Gid::effective().as_raw(),
        )
        .unwrap();
        let running = BTreeSet::from([11]);
        let lines = sweep(&n.state, &n.runtime, &running);
        assert!(lines.iter().all(|l| l.is_ok()), "{lines:?}");
        assert!(!n.home.join("scratch-1000010").exists());
        assert!(!n.runtime.join("job-10").exists());
        assert!(!n.runtime.join("job-12").exists());
        assert_eq!(
            std::fs::read(n.home.join("outputs-1000010/result")).unwrap(),
            b"r"
        );
        // The running job keeps everything.
        assert!(n.home.join("scratch-1000011/d").is_dir());
        assert!(n.runtime.join("job-11").is_dir());
        assert_eq!(n.state.jobs().unwrap(), vec![11]);
        // Nothing left to do: a second sweep says nothing.
        assert!(sweep(&n.state, &n.runtime, &running).is_empty());
    }

    #[test]
    fn a_replaced_scratch_is_left_and_the_record_dropped() {
        let n = node();
        job(&n, 20, 1_000_020);
        let victim = tempfile::tempdir().unwrap();
        std::fs::write(victim.path().join("canary"), b"keep").unwrap();
        std::fs::rename(n.home.join("scratch-1000020"), n.home.join("moved")).unwrap();
        std::os::unix::fs::symlink(victim.path(), n.home.join("scratch-1000020")).unwrap();
        let lines = clean_up_job(&n.state, &n.runtime, 20);
        assert!(
            lines
                .iter()
                .any(|l| l.as_ref().is_err_and(|e| e.contains("not the directory"))),
            "{lines:?}"
        );
        assert_eq!(
            std::fs::read(victim.path().join("canary")).unwrap(),
            b"keep"
        );
        assert!(n.home.join("moved/d").is_dir());
        assert!(n.state.jobs().unwrap().is_empty());
    }

    #[test]
    fn without_a_record_only_the_runtime_dir_goes() {
        let n = node();
        std::fs::create_dir(n.home.join("scratch-1000030")).unwrap();
        runtime_dir::ensure(
            &n.runtime,
            30,
            Uid::effective().as_raw(),
            Gid::effective().as_raw(),
        )
        .unwrap();
        assert!(clean_up_job(&n.state, &n.runtime, 30).is_empty());
        assert!(n.home.join("scratch-1000030").is_dir());
        assert!(!n.runtime.join("job-30").exists());
    }
}
