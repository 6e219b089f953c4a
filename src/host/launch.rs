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
//!
//! Nothing of the task outlives it (docs/job-semantics.md, "When a step ends"): after
//! the runtime exits, what it left running (podman's conmon finishing its clean-up, the
//! rootless pause process) would make slurmstepd's process tracking kill it and wait
//! its one-second poll before the step could end. The supervisor is the child
//! subreaper of the runtime's processes, waits briefly for those it inherited to end
//! on their own, and ends podman's pause process of this step once nothing uses it.

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::prctl::set_child_subreaper;
use nix::sys::signal::{kill, raise, signal, SigHandler, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, pipe, read, ForkResult, Pid};

use crate::rules::image_store::{unreadable_store_message, STORE_FILES_JOBS_READ};
use crate::rules::options::Runtime;
use crate::rules::runtime::{
    diagnose_runtime_exit, image_stores_of, missing_image_message, runtime_env, RuntimeFailure,
};
use crate::rules::vocab::prefixed;

use super::{poll, userns};

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
    /// Make podman's user namespace here ([`super::userns`]) rather than leave it to
    /// podman.
    pub user_namespace: bool,
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

/// A message of the plugin's, with its name in front.
fn note(message: &dyn std::fmt::Display) {
    say(&prefixed(message));
}

fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Runs the launch and returns the process exit code (or does not return, dying of
/// the child's signal).
pub fn supervise(launch: &Launch) -> i32 {
    let argv = launch.command();
    let Some((program, args)) = argv.split_first() else {
        note(&"launch: no command");
        return 125;
    };
    let mut mask = forwarded_mask();
    mask.add(Signal::SIGCHLD);
    // Blocked here and collected with sigwait; std resets the mask in the child.
    if let Err(e) = mask.thread_block() {
        note(&format_args!("launch: cannot block signals: {e}"));
        return 125;
    }
    let env = match runtime_environment(launch.runtime, &argv) {
        Ok(env) => env,
        Err(e) => {
            note(&format_args!("launch: {e}"));
            return 125;
        }
    };
    // Processes the runtime leaves behind (double-forked conmon, the pause process)
    // become this process's children instead of init's: see `settle`. Without it
    // (it cannot fail on Linux) they are only not waited for.
    let _ = set_child_subreaper(true);
    let pid = match start_runtime(launch, program, args, env) {
        Ok(pid) => pid,
        Err(e) => {
            note(&e);
            return 127;
        }
    };
    // Without a sentinel every signal is passed on (the behaviour before it existed).
    let mut sentinel = Sentinel::start(&forwarded_mask());
    let outcome = loop {
        match mask.wait() {
            Ok(Signal::SIGCHLD) => match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => break Ok(code),
                Ok(WaitStatus::Signaled(_, sig, _)) => break Err(sig),
                Ok(_) => {}
                Err(e) => {
                    note(&format_args!("launch: waiting for the runtime: {e}"));
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
    settle(launch.runtime);
    match outcome {
        Ok(code) => explain_exit(launch, &argv, program, code),
        Err(sig) => die_of(sig),
    }
}

/// Starts the runtime as this process's child: for podman, in a user namespace made
/// here when the plugin asked for it and the user has subordinate ids (else podman
/// makes its own, as it would without the supervisor).
fn start_runtime(
    launch: &Launch,
    program: &OsString,
    args: &[OsString],
    env: Vec<(OsString, OsString)>,
) -> Result<Pid, StartError> {
    if launch.user_namespace && launch.runtime == Runtime::Podman {
        if let Some(maps) = userns::podman_maps() {
            match userns::spawn_in_user_namespace(program, args, &env, &maps) {
                Ok(pid) => return Ok(pid),
                Err(e @ userns::UsernsError::Exec { .. }) => return Err(StartError::Userns(e)),
                // Nothing has run yet: podman's own way gives what it would anyway.
                Err(_) => {}
            }
        }
    }
    match Command::new(program)
        .args(args)
        .env_clear()
        .envs(env)
        .spawn()
    {
        // Waited for by pid (waitpid), never through the handle.
        Ok(child) => Ok(Pid::from_raw(child.id() as i32)),
        Err(source) => Err(StartError::Spawn {
            program: program.to_string_lossy().into_owned(),
            source,
        }),
    }
}

#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error(transparent)]
    Userns(userns::UsernsError),
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
}

/// Why the runtime's `HOME` is not known.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    #[error("uid {uid} is not in the password database")]
    Unknown { uid: u32 },
    #[error("cannot look up uid {uid}: {source}")]
    Lookup { uid: u32, source: nix::Error },
}

/// The runtime's environment: an allow-list over this process's (the task's)
/// environment, see [`runtime_env`]. Apptainer's `HOME` is the password database's.
fn runtime_environment(
    runtime: Runtime,
    argv: &[OsString],
) -> Result<Vec<(OsString, OsString)>, HomeError> {
    let home = match runtime {
        Runtime::Podman => PathBuf::new(),
        Runtime::Apptainer => {
            let uid = nix::unistd::getuid();
            match nix::unistd::User::from_uid(uid) {
                Ok(Some(user)) => user.dir,
                Ok(None) => return Err(HomeError::Unknown { uid: uid.as_raw() }),
                Err(e) => {
                    return Err(HomeError::Lookup {
                        uid: uid.as_raw(),
                        source: e,
                    })
                }
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
    // The pause process may be podman itself (without catatonit); never the copy.
    let pause = pause_pid(runtime);
    let copies: Vec<Pid> = children(pid)
        .into_iter()
        .filter(|c| Some(*c) != pause && exe(*c).as_ref() == Some(&own))
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

/// The children of this (single-threaded) process: the kernel's list for its only
/// thread, or the /proc scan where the kernel has none.
fn own_children(me: Pid) -> Vec<Pid> {
    match std::fs::read_to_string(format!("/proc/{me}/task/{me}/children")) {
        Ok(list) => list
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .map(Pid::from_raw)
            .collect(),
        Err(_) => children(me),
    }
}

/// Field `n` after the command name of a /proc/PID/stat line (0: the state; the name
/// is in parentheses and may itself contain spaces and parentheses).
pub fn stat_field(stat: &str, n: usize) -> Option<&str> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(n)
}

/// The parent pid in a /proc/PID/stat line (field 4).
fn parent_pid(stat: &str) -> Option<i32> {
    stat_field(stat, 1)?.parse().ok()
}

/// How long the processes the runtime left behind may take to end on their own
/// (conmon runs podman's clean-up of the exited container, 5-150 ms on the bed).
/// Whatever is left after it is left to slurmstepd, which kills it.
const LEFTOVER_WAIT: Duration = Duration::from_millis(1000);

/// How long an ended pause process may take to disappear (be reaped).
const PAUSE_GONE_WAIT: Duration = Duration::from_millis(500);

/// After the runtime has exited: waits (at most [`LEFTOVER_WAIT`]) for the processes
/// the supervisor inherited from it, reaping them, and then ends podman's pause
/// process if it belongs to this step and nothing else uses it, so that the step's
/// process tracking finds the step empty and does not wait its poll.
fn settle(runtime: Runtime) {
    let me = Pid::this();
    let pause = pause_pid(runtime);
    let deadline = Instant::now() + LEFTOVER_WAIT;
    let mut round = 0;
    loop {
        reap_exited();
        let left = own_children(me).into_iter().any(|c| Some(c) != pause);
        if !left || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(poll::pause(round, Duration::from_millis(5)));
        round += 1;
    }
    if let Some(p) = pause {
        end_pause_process(p, me);
    }
}

/// Reaps every child that has ended, without waiting.
fn reap_exited() {
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}

/// The rootless pause process podman recorded for this job's runtime directory
/// (`$XDG_RUNTIME_DIR/libpod/tmp/pause.pid`), if any. The directory is the job's own
/// (set by the plugin); the file is the user's, and so is everything done with it.
fn pause_pid(runtime: Runtime) -> Option<Pid> {
    if runtime != Runtime::Podman {
        return None;
    }
    let dir = std::env::var_os("XDG_RUNTIME_DIR")?;
    let text = std::fs::read_to_string(Path::new(&dir).join("libpod/tmp/pause.pid")).ok()?;
    parse_pid_file(&text)
}

/// A pid file's pid: decimal digits (a newline allowed), greater than 1.
fn parse_pid_file(text: &str) -> Option<Pid> {
    let pid: i32 = text.strip_suffix('\n').unwrap_or(text).parse().ok()?;
    (pid > 1).then(|| Pid::from_raw(pid))
}

/// Whether a process's name (`/proc/PID/comm`) is that of podman's pause process:
/// catatonit in pause mode, or podman's own (`podman pause`) without catatonit.
fn is_pause_name(comm: &str) -> bool {
    matches!(comm.trim_end(), "catatonit" | "podman" | "podman pause")
}

/// Ends the pause process `p` when all of this holds: it is a pause process, it is in
/// this step (its cgroups are the supervisor's, so Slurm would kill it when the step
/// ends anyway) and no other process is in its user namespace (no container, conmon
/// or podman of another task or step of the job still uses it). A podman starting
/// just then finds it gone and starts a new one (podman's own fallback, the same as
/// after Slurm's kill). Waits (briefly) until it has disappeared.
fn end_pause_process(p: Pid, me: Pid) {
    let proc_dir = PathBuf::from(format!("/proc/{p}"));
    let Ok(comm) = std::fs::read_to_string(proc_dir.join("comm")) else {
        return;
    };
    let (Ok(its), Ok(mine)) = (
        std::fs::read(proc_dir.join("cgroup")),
        std::fs::read("/proc/self/cgroup"),
    ) else {
        return;
    };
    if !is_pause_name(&comm) || its != mine {
        return;
    }
    let Ok(userns) = std::fs::read_link(proc_dir.join("ns/user")) else {
        return;
    };
    if std::fs::read_link("/proc/self/ns/user").ok().as_ref() == Some(&userns)
        || namespace_shared(&userns, p)
    {
        return;
    }
    if kill(p, Signal::SIGKILL).is_err() {
        return;
    }
    if own_children(me).contains(&p) {
        let _ = waitpid(p, None);
        return;
    }
    // Someone else's child (another task of this step started it): its parent or
    // init reaps it.
    let deadline = Instant::now() + PAUSE_GONE_WAIT;
    while Instant::now() < deadline && is_alive(p) {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether a process other than `except` is in the user namespace `userns` (as
/// `/proc/PID/ns/user` names it). Processes this user cannot inspect are not in it:
/// every process of the job's namespaces is the user's or the user's namespace's.
fn namespace_shared(userns: &Path, except: Pid) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        // Cannot tell: assume it is used.
        return true;
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| *p != except.as_raw())
        .any(|p| {
            std::fs::read_link(format!("/proc/{p}/ns/user"))
                .ok()
                .as_deref()
                == Some(userns)
        })
}

/// Whether `p` still exists and is not a zombie.
fn is_alive(p: Pid) -> bool {
    match std::fs::read_to_string(format!("/proc/{p}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
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
    let unreadable = (failure == RuntimeFailure::RuntimeError && launch.runtime == Runtime::Podman)
        .then(|| unreadable_store(argv))
        .flatten();
    if let Some(message) = unreadable {
        say(&message);
    } else if failure == RuntimeFailure::RuntimeError
        && launch.runtime == Runtime::Podman
        && image_missing(argv, &launch.image)
    {
        say(&missing_image_message(&launch.image, argv));
    } else {
        note(&format_args!(
            "{runtime} exited with status {code}: {}",
            failure.describe()
        ));
    }
    code
}

/// Asked only after the runtime failed: a site store this job (the user) cannot read,
/// as the job's message. A few opens, no runtime call.
fn unreadable_store(argv: &[OsString]) -> Option<String> {
    for store in image_stores_of(argv) {
        if let Err(e) = std::fs::read_dir(&store) {
            return Some(unreadable_store_message(&store, &store, &e.to_string()));
        }
        for file in STORE_FILES_JOBS_READ {
            let path = store.join(file);
            match std::fs::File::open(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    return Some(unreadable_store_message(&store, &path, &e.to_string()));
                }
                _ => {}
            }
        }
    }
    None
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
    fn a_pause_pid_file_holds_one_pid_above_one() {
        assert_eq!(parse_pid_file("4347"), Some(Pid::from_raw(4347)));
        assert_eq!(parse_pid_file("4347\n"), Some(Pid::from_raw(4347)));
        for bad in ["", "1", "0", "-5", " 12", "12 13", "x", "4347\n\n"] {
            assert_eq!(parse_pid_file(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn only_podmans_pause_process_names_are_ended() {
        assert!(is_pause_name("catatonit\n"));
        assert!(is_pause_name("podman pause\n"));
        assert!(is_pause_name("podman"));
        assert!(!is_pause_name("conmon\n"));
        assert!(!is_pause_name("bash"));
        assert!(!is_pause_name("catatonitx"));
    }

    #[test]
    fn a_process_that_shares_this_user_namespace_is_never_ended() {
        // A child in this process's own namespace (as a stale or forged pause.pid
        // could name): the namespace is shared, and the supervisor's own namespace is
        // refused before that.
        let mut child = Command::new("sleep").arg("5").spawn().unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        let ns = std::fs::read_link(format!("/proc/{pid}/ns/user")).unwrap();
        assert!(namespace_shared(&ns, pid));
        end_pause_process(pid, Pid::this());
        assert!(is_alive(pid));
        let _ = child.kill();
        let _ = child.wait();
        assert!(!is_alive(pid));
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
            user_namespace: false,
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
