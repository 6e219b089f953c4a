//! The task's first process: runs the container runtime as a child, passes signals on,
//! and when the runtime itself fails says why in the job output (a missing image is
//! detected from the runtime's own failure, so a good run costs no extra runtime call).
//!
//! Exit status: the child's, unchanged; a child killed by a signal is mirrored by
//! dying of the same signal, so Slurm reports what it would without a container.
//!
//! Signals (docs/job-semantics.md): Slurm usually signals every process of the step
//! (`scancel --signal`, `--full`, the time limit, srun's Ctrl-C); the container's
//! processes then have the signal already, and passing it on would deliver it again.
//! Only `scancel --batch` signals the task's first process alone. A sentinel child
//! (in the step's cgroup, doing nothing but collect signals) tells the two apart: a
//! signal the sentinel also got was step-wide and is not passed on.

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, raise, signal, SigHandler, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, pipe, read, ForkResult, Pid};

use crate::rules::options::Runtime;
use crate::rules::runtime::{
    diagnose_runtime_exit, missing_image_message, runtime_env, RuntimeFailure,
};

/// Signals passed on to the runtime (which passes them into the container).
const FORWARDED: &[Signal] = &[
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGALRM,
    Signal::SIGCONT,
    Signal::SIGWINCH,
    Signal::SIGXCPU,
];

pub struct Launch {
    pub image: String,
    pub runtime: Runtime,
    /// The runtime's command line as received (the plugin's prefix plus the task's
    /// own arguments, which Slurm appends).
    pub argv: Vec<OsString>,
    /// `(start, count)`: task arguments Slurm appended that are not for the runtime
    /// (see `TaskLaunch::dropped_args`); `start` indexes `argv`.
    pub drop: Option<(usize, usize)>,
}

impl Launch {
    /// The command actually run.
    pub fn command(&self) -> Vec<OsString> {
        let mut argv = self.argv.clone();
        if let Some((start, count)) = self.drop {
            let start = start.min(argv.len());
            let end = start.saturating_add(count).min(argv.len());
            argv.drain(start..end);
        }
        argv
    }
}

fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Runs the launch and returns the process exit code (or does not return, dying of
/// the child's signal).
pub fn supervise(launch: &Launch) -> i32 {
    let argv = launch.command();
    let Some((program, args)) = argv.split_first() else {
        say("tre-spank: launch: no command");
        return 125;
    };
    let mut mask = forwarded_mask();
    mask.add(Signal::SIGCHLD);
    // Blocked here and collected with sigwait; std resets the mask in the child.
    if let Err(e) = mask.thread_block() {
        say(&format!("tre-spank: launch: cannot block signals: {e}"));
        return 125;
    }
    let env = match runtime_environment(launch.runtime, &argv) {
        Ok(env) => env,
        Err(e) => {
            say(&format!("tre-spank: launch: {e}"));
            return 125;
        }
    };
    let child = match Command::new(program)
        .args(args)
        .env_clear()
        .envs(env)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            say(&format!(
                "tre-spank: cannot start {}: {e}",
                program.to_string_lossy()
            ));
            return 127;
        }
    };
    let pid = Pid::from_raw(child.id() as i32);
    // Without a sentinel every signal is passed on (the behaviour before it existed).
    let mut sentinel = Sentinel::start(&forwarded_mask());
    let outcome = loop {
        match mask.wait() {
            Ok(Signal::SIGCHLD) => match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => break Ok(code),
                Ok(WaitStatus::Signaled(_, sig, _)) => break Err(sig),
                Ok(_) => {}
                Err(e) => {
                    say(&format!("tre-spank: launch: waiting for the runtime: {e}"));
                    break Ok(125);
                }
            },
            Ok(sig) => {
                let step_wide = sentinel.as_mut().is_some_and(|s| s.also_got(sig));
                if !step_wide {
                    let _ = kill(signal_target(launch.runtime, pid), sig);
                }
            }
            Err(_) => {}
        }
    };
    if let Some(s) = sentinel {
        s.stop();
    }
    match outcome {
        Ok(code) => explain_exit(launch, &argv, program, code),
        Err(sig) => die_of(sig),
    }
}

/// The runtime's environment: an allow-list over this process's (the task's)
/// environment, see [`runtime_env`]. Apptainer's `HOME` is the password database's.
fn runtime_environment(
    runtime: Runtime,
    argv: &[OsString],
) -> Result<Vec<(OsString, OsString)>, String> {
    let home = match runtime {
        Runtime::Podman => PathBuf::new(),
        Runtime::Apptainer => {
            let uid = nix::unistd::getuid();
            match nix::unistd::User::from_uid(uid) {
                Ok(Some(user)) => user.dir,
                Ok(None) => return Err(format!("uid {uid} is not in the password database")),
                Err(e) => return Err(format!("cannot look up uid {uid}: {e}")),
            }
        }
    };
    let inherited: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    Ok(runtime_env(runtime, argv, &inherited, &home))
}

/// The process a passed-on signal goes to: the runtime, except for rootless podman
/// before 5.0 once it has re-executed itself in its user namespace. That podman waits
/// for its copy (which proxies signals into the container) but, on SIGTERM or SIGINT,
/// runs its own shutdown handler and exits 0 at once, so the task would end, and Slurm
/// kill the container, before the container's own handler ran (seen with podman 4.3.1
/// under Slurm 22.05, which signals only the task's first process). The copy is the
/// runtime's only child running the same executable; it gets the signal directly.
fn signal_target(runtime: Runtime, pid: Pid) -> Pid {
    if runtime != Runtime::Podman {
        return pid;
    }
    let exe = |p: Pid| std::fs::read_link(format!("/proc/{p}/exe")).ok();
    let Some(own) = exe(pid) else { return pid };
    let copies: Vec<Pid> = children(pid)
        .into_iter()
        .filter(|c| exe(*c).as_ref() == Some(&own))
        .collect();
    match copies.as_slice() {
        [copy] => *copy,
        _ => pid,
    }
}

/// The children of `parent`, from /proc (a few hundred small reads, only when a signal
/// is passed on).
fn children(parent: Pid) -> Vec<Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|stat| parent_pid(&stat))
                == Some(parent.as_raw())
        })
        .map(Pid::from_raw)
        .collect()
}

/// The parent pid in a /proc/PID/stat line: the second field after the command name,
/// which is in parentheses and may itself contain spaces and parentheses.
fn parent_pid(stat: &str) -> Option<i32> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn forwarded_mask() -> SigSet {
    let mut mask = SigSet::empty();
    for s in FORWARDED {
        mask.add(*s);
    }
    mask
}

/// How long a step-wide signal may take to reach the sentinel after the supervisor
/// (Slurm signals the step's processes one after another, microseconds apart).
const SENTINEL_WAIT: Duration = Duration::from_millis(150);

/// A child process that only collects the forwarded signals and reports each on a pipe.
struct Sentinel {
    pid: Pid,
    reports: OwnedFd,
    /// Signals reported and not yet matched with one the supervisor got.
    seen: Vec<Signal>,
}

impl Sentinel {
    fn start(mask: &SigSet) -> Option<Sentinel> {
        let (reports, report) = pipe().ok()?;
        // SAFETY: the supervisor has no other threads, and the child only calls
        // async-signal-safe functions (prctl, sigwait, write, _exit) before it ends.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                drop(reports);
                // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number only.
                unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
                // The signals are blocked (inherited): sigwait takes each one.
                loop {
                    if let Ok(sig) = mask.wait() {
                        let byte = [sig as i32 as u8];
                        if nix::unistd::write(&report, &byte).is_err() {
                            // SAFETY: _exit ends the process without running anything.
                            unsafe { libc::_exit(0) };
                        }
                    }
                }
            }
            Ok(ForkResult::Parent { child }) => Some(Sentinel {
                pid: child,
                reports,
                seen: Vec::new(),
            }),
            Err(_) => None,
        }
    }

    /// Whether the sentinel got `sig` too (waiting briefly for its report).
    fn also_got(&mut self, sig: Signal) -> bool {
        let deadline = Instant::now() + SENTINEL_WAIT;
        loop {
            if let Some(i) = self.seen.iter().position(|s| *s == sig) {
                self.seen.remove(i);
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(self.reports.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(0) => return false,
                Ok(_) => {
                    let mut buf = [0u8; 64];
                    match read(&self.reports, &mut buf) {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => self.seen.extend(
                            buf[..n]
                                .iter()
                                .filter_map(|b| Signal::try_from(i32::from(*b)).ok()),
                        ),
                    }
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return false,
            }
        }
    }

    fn stop(self) {
        let _ = kill(self.pid, Signal::SIGKILL);
        let _ = waitpid(self.pid, None);
    }
}

fn explain_exit(launch: &Launch, argv: &[OsString], program: &OsString, code: i32) -> i32 {
    let Some(failure) = diagnose_runtime_exit(launch.runtime, code) else {
        return code;
    };
    let runtime = program.to_string_lossy();
    // apptainer's image is a SIF file the plugin checked before the launch.
    if failure == RuntimeFailure::RuntimeError
        && launch.runtime == Runtime::Podman
        && image_missing(argv, &launch.image)
    {
        say(&missing_image_message(&launch.image, argv));
    } else {
        say(&format!(
            "tre-spank: {runtime} exited with status {code}: {}",
            failure.describe()
        ));
    }
    code
}

/// Asked only after the runtime failed: does the image exist for this job? The
/// runtime's global options (storage locations) are those of the failed command.
fn image_missing(argv: &[OsString], image: &str) -> bool {
    let Some(run) = argv.iter().position(|a| a == "run") else {
        return false;
    };
    let Ok(env) = runtime_environment(Runtime::Podman, argv) else {
        return false;
    };
    Command::new(&argv[0])
        .args(&argv[1..run])
        .args(["image", "exists", image])
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.code() == Some(1))
        .unwrap_or(false)
}

fn die_of(sig: Signal) -> ! {
    // SAFETY: resetting a disposition to the default has no preconditions.
    let _ = unsafe { signal(sig, SigHandler::SigDfl) };
    let mut only = SigSet::empty();
    only.add(sig);
    let _ = only.thread_unblock();
    let _ = raise(sig);
    std::process::exit(128 + sig as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_pid_is_read_past_a_command_name_with_spaces_and_parentheses() {
        assert_eq!(parent_pid("42 (podman) S 41 42 1 0"), Some(41));
        assert_eq!(parent_pid("42 (a b) c)) S 7 42 1 0"), Some(7));
        assert_eq!(parent_pid("42 (podman"), None);
    }

    #[test]
    fn a_process_without_a_copy_of_itself_is_signalled_itself() {
        // This test process has no child running its own executable.
        let me = Pid::this();
        assert_eq!(signal_target(Runtime::Podman, me), me);
        assert_eq!(signal_target(Runtime::Apptainer, me), me);
    }

    #[test]
    fn the_children_of_this_process_are_found() {
        let mut child = Command::new("sleep").arg("5").spawn().unwrap();
        let found = children(Pid::this());
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            found.contains(&Pid::from_raw(child.id() as i32)),
            "{found:?}"
        );
    }

    #[test]
    fn dropped_arguments_are_removed_where_the_plugin_said() {
        let argv: Vec<OsString> = [
            "apptainer",
            "run",
            "x.sif",
            "/spool/slurm_script",
            "a b",
            "c",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let l = Launch {
            image: "ghcr.io/a/b:1".into(),
            runtime: Runtime::Apptainer,
            argv: argv.clone(),
            drop: Some((3, 1)),
        };
        assert_eq!(l.command(), ["apptainer", "run", "x.sif", "a b", "c"]);
        let l = Launch { drop: None, ..l };
        assert_eq!(l.command(), argv);
        let l = Launch {
            drop: Some((5, 9)),
            ..l
        };
        assert_eq!(l.command().len(), 5);
    }
}
