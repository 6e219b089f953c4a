//! The exit guard's two processes (see [`crate::rules::runtime::conmon`]): the conmon
//! wrapper podman starts, and the guard conmon runs when the container exits. Both run
//! as the job's user, in podman's user namespace, with the environment podman gives
//! conmon; neither holds any of podman's locks or files.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::launch::stat_field;
use super::poll;
use crate::rules::runtime::{
    container_records, guarded_conmon_args, parse_guard, Guard, REAL_CONMON,
};

/// How long the guard waits for the step's podman before it runs podman's clean-up
/// anyway (podman removes an exited container in tens of milliseconds).
const PODMAN_WAIT: Duration = Duration::from_secs(60);

/// The start time (clock ticks after boot) in a `/proc/PID/stat` line: field 22, after
/// the command name in parentheses (which may hold spaces and parentheses).
pub fn start_time(stat: &str) -> Option<u64> {
    stat_field(stat, 19)?.parse().ok()
}

fn start_time_of(pid: u32) -> Option<u64> {
    start_time(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The real conmon: the first of [`REAL_CONMON`] that is an executable file and not
/// this program (the wrapper is a link to it).
fn real_conmon() -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let me = std::env::current_exe().ok()?;
    REAL_CONMON.iter().map(PathBuf::from).find(|p| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            && std::fs::canonicalize(p).ok().as_deref() != Some(me.as_path())
    })
}

/// Runs as conmon: executes the real conmon with the exit command replaced by the
/// guard. Returns only if that cannot be done (the exit code for podman to report).
pub fn run_wrapper(args: &[OsString]) -> u8 {
    let Some(conmon) = real_conmon() else {
        eprintln!(
            "tre-spank: no conmon found (looked for {}): podman cannot start the container",
            REAL_CONMON.join(", ")
        );
        return 127;
    };
    let podman = std::os::unix::process::parent_id();
    let guarded = match (std::env::current_exe(), start_time_of(podman)) {
        (Ok(tool), Some(start)) => guarded_conmon_args(args, &tool, podman, start),
        // Without its own path or podman's start time the guard could not work:
        // conmon keeps podman's own exit command.
        _ => None,
    };
    let err = Command::new(&conmon)
        .args(guarded.as_deref().unwrap_or(args))
        .exec();
    eprintln!("tre-spank: cannot start {}: {err}", conmon.display());
    127
}

/// Runs as conmon's exit command. conmon waits for its exit command, and the step's
/// podman waits for conmon, so the guard answers at once and leaves a child of its own
/// to wait for that podman to end; the child then runs podman's clean-up only if the
/// container's record is still there. (The child becomes the supervisor's, the step's
/// subreaper, which waits for it.) Returns the exit code.
pub fn run_guard(args: &[OsString]) -> u8 {
    let Some(guard) = parse_guard(args) else {
        eprintln!("tre-spank: exit-guard: needs PID START -- COMMAND...");
        return 125;
    };
    // SAFETY: this process has one thread (the tool starts none before this), and
    // the child goes on as an ordinary process: it waits, reads /proc and executes.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { .. }) => 0,
        // Without a child the guard waits itself: the step only waits longer.
        Ok(nix::unistd::ForkResult::Child) | Err(_) => watch(&guard),
    }
}

/// Waits (at most [`PODMAN_WAIT`]) for the guard's podman to end, then runs podman's
/// clean-up if the container's record is still there. Returns the exit code (or does
/// not return, having become the clean-up).
fn watch(guard: &Guard) -> u8 {
    let deadline = Instant::now() + PODMAN_WAIT;
    let mut round = 0;
    while start_time_of(guard.podman_pid) == Some(guard.podman_start) && Instant::now() < deadline {
        std::thread::sleep(poll::pause(round, Duration::from_millis(2)));
        round += 1;
    }
    let still_there = container_records(&guard.command)
        .map(|records| records.iter().any(|r| r.symlink_metadata().is_ok()))
        // A command the guard cannot read is run, as conmon would have.
        .unwrap_or(true);
    if !still_there {
        return 0;
    }
    let Some((program, rest)) = guard.command.split_first() else {
        return 125;
    };
    let err = Command::new(program).args(rest).exec();
    eprintln!(
        "tre-spank: exit-guard: cannot start {}: {err}",
        Path::new(program).display()
    );
    125
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_time_is_field_22_past_a_command_name_with_spaces() {
        let stat = "4242 (pod man) (x) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 8 0 123456 1000 10";
        assert_eq!(start_time(stat), Some(123456));
        assert_eq!(start_time("4242 (podman) S 1"), None);
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(start_time(&own).is_some());
    }

    #[test]
    fn the_guard_returns_at_once_when_its_podman_is_gone_and_the_container_too() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("storage");
        let run = t.path().join("run");
        let args: Vec<OsString> = [
            "999999999",
            "1",
            "--",
            "/nonexistent/podman",
            "--root",
            root.to_str().unwrap(),
            "--runroot",
            run.to_str().unwrap(),
            "container",
            "cleanup",
            "--rm",
            "abc123",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let guard = parse_guard(&args).unwrap();
        assert_eq!(watch(&guard), 0, "nothing left: nothing to run");
        // The record still there: the clean-up is run (here it cannot start).
        std::fs::create_dir_all(run.join("overlay-containers/abc123")).unwrap();
        assert_eq!(watch(&guard), 125);
    }
}
