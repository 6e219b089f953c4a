//! The rootless user namespace of a container task's podman, made by the supervisor
//! (`podman.user_namespace = "tre-spank"`, the default).
//!
//! Left to itself, rootless podman started in a fresh per-job runtime directory finds
//! no namespace to join: it opens its runtime as the user, makes a user and mount
//! namespace with `newuidmap`/`newgidmap`, starts a pause process to keep it, and
//! executes itself a second time inside (docs/benchmarks.md measured that cold start
//! at 85 ms over a warm one). Here the supervisor's child makes the namespace with the
//! same maps podman writes (the user at 0, the user's ranges from 1 on), becomes its
//! root and executes podman once, with the variables podman sets for its own second
//! start (`_CONTAINERS_USERNS_CONFIGURED`, `_CONTAINERS_ROOTLESS_UID`/`GID`, as
//! `podman unshare` does for its command): podman then runs at once, and conmon and
//! its clean-up inherit the namespace and the variables. No pause process is left, and
//! the namespace ends with the step's last process in it.
//!
//! Users without ranges in both `/etc/subuid` and `/etc/subgid`, or a namespace that
//! cannot be mapped, get podman's own way (the caller falls back): the result is then
//! what it would have been without this module.

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{signal, SigHandler, SigSet, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, pipe2, read, setresgid, setresuid, write, ForkResult, Gid, Pid, Uid};

use super::as_user::{write_id_maps, IdMapError, SUBGID_FILE};
use super::remove::SUBUID_FILE;
use crate::rules::subid::{podman_id_map_args, ranges_for, usable_ranges};

/// The arguments of `newuidmap PID ...` and `newgidmap PID ...` after the pid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMaps {
    pub uid: u32,
    pub gid: u32,
    pub uid_map: Vec<String>,
    pub gid_map: Vec<String>,
}

/// Podman's maps for the user `name` (`uid`, primary group `gid`) from the texts of
/// the subuid and subgid files; `None` without a usable range in either.
pub fn podman_maps_from(
    name: &str,
    uid: u32,
    gid: u32,
    subuid: &str,
    subgid: &str,
) -> Option<IdMaps> {
    let uids = usable_ranges(ranges_for(subuid, name, uid), uid);
    let gids = usable_ranges(ranges_for(subgid, name, uid), gid);
    if uids.is_empty() || gids.is_empty() || uid == 0 {
        return None;
    }
    Some(IdMaps {
        uid,
        gid,
        uid_map: podman_id_map_args(uid, &uids),
        gid_map: podman_id_map_args(gid, &gids),
    })
}

/// Podman's maps for this process's user, read from the node's files.
pub fn podman_maps() -> Option<IdMaps> {
    let uid = Uid::current();
    let gid = Gid::current();
    let user = nix::unistd::User::from_uid(uid).ok()??;
    let subuid = std::fs::read_to_string(SUBUID_FILE).ok()?;
    let subgid = std::fs::read_to_string(SUBGID_FILE).ok()?;
    podman_maps_from(&user.name, uid.as_raw(), gid.as_raw(), &subuid, &subgid)
}

#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    #[error("a NUL byte in the command or its environment")]
    Nul(#[from] std::ffi::NulError),
    #[error("cannot make a pipe: {0}")]
    Pipe(Errno),
    #[error("cannot fork: {0}")]
    Fork(Errno),
    #[error("cannot create a user namespace: {0}")]
    Unshare(Errno),
    #[error(transparent)]
    Map(#[from] IdMapError),
    #[error("cannot become root in the user namespace: {0}")]
    SetIds(Errno),
    /// The runtime itself could not be started (no fallback helps).
    #[error("cannot start {program}: {errno}")]
    Exec { program: String, errno: Errno },
    #[error("the process for the user namespace went away")]
    Lost,
}

// One byte from the child on the ready pipe: ready for its maps, or the step that
// failed (followed by the errno, 4 bytes). Nothing more once it has executed.
const READY: u8 = b'r';
const FAILED_UNSHARE: u8 = b'u';
const FAILED_SETIDS: u8 = b's';
const FAILED_EXEC: u8 = b'e';
const GO: u8 = b'g';

/// Starts `program args` (podman) with the environment `env` in a new user and mount
/// namespace mapped with `maps`, as the namespace's root. Returns the child's pid once
/// it has executed. The caller's signal mask is not the child's: the child starts with
/// none blocked and SIGPIPE at its default, as `std::process::Command` leaves it.
///
/// Must be called while this process has only one thread (the supervisor has).
pub fn spawn_in_user_namespace(
    program: &OsStr,
    args: &[OsString],
    env: &[(OsString, OsString)],
    maps: &IdMaps,
) -> Result<Pid, UsernsError> {
    // execve does not search PATH: a bare name is looked up here, as std's Command
    // does, in the environment the runtime gets.
    let path = CString::new(resolve(program, env).as_os_str().as_bytes())?;
    let argv: Vec<CString> = std::iter::once(program)
        .chain(args.iter().map(OsString::as_os_str))
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()?;
    let mut envp: Vec<CString> = env
        .iter()
        .filter(|(name, _)| !name.as_bytes().starts_with(b"_CONTAINERS_"))
        .map(|(name, value)| {
            let mut entry = name.as_bytes().to_vec();
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
            CString::new(entry)
        })
        .collect::<Result<_, _>>()?;
    envp.extend([
        CString::new("_CONTAINERS_USERNS_CONFIGURED=done")?,
        CString::new(format!("_CONTAINERS_ROOTLESS_UID={}", maps.uid))?,
        CString::new(format!("_CONTAINERS_ROOTLESS_GID={}", maps.gid))?,
    ]);
    let argv_ptrs = null_terminated(&argv);
    let envp_ptrs = null_terminated(&envp);
    let (ready_read, ready_write) = pipe2(OFlag::O_CLOEXEC).map_err(UsernsError::Pipe)?;
    let (go_read, go_write) = pipe2(OFlag::O_CLOEXEC).map_err(UsernsError::Pipe)?;
    // SAFETY: the supervisor has no other threads, and the child calls only
    // async-signal-safe functions (system call wrappers, no allocation) until it
    // executes or exits.
    match unsafe { fork() }.map_err(UsernsError::Fork)? {
        ForkResult::Child => {
            drop(ready_read);
            drop(go_write);
            child(&ready_write, &go_read, &path, &argv_ptrs, &envp_ptrs)
        }
        ForkResult::Parent { child } => {
            drop(ready_write);
            drop(go_read);
            let started = parent(child, &ready_read, go_write, maps, program);
            if let Err(e) = &started {
                // The child exits on its own once the go pipe is closed or after a
                // failure it reported; only its status is left to collect.
                if !matches!(e, UsernsError::Lost) {
                    let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
                }
                let _ = waitpid(child, None);
            }
            started.map(|()| child)
        }
    }
}

/// `program` itself if it names a path, else the first executable file of that name
/// in `PATH` of `env` (or `program` unchanged, which then fails to execute).
fn resolve(program: &OsStr, env: &[(OsString, OsString)]) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    if program.as_bytes().contains(&b'/') {
        return program.into();
    }
    let path = env
        .iter()
        .find(|(name, _)| name == "PATH")
        .map(|(_, value)| value.clone())
        .unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .unwrap_or_else(|| program.into())
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// The child: unshare, say ready, wait for the maps, become root, execute.
fn child(
    ready: &OwnedFd,
    go: &OwnedFd,
    path: &CString,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> ! {
    let fail = |stage: u8, errno: Errno| -> ! {
        let mut report = [stage, 0, 0, 0, 0];
        report[1..].copy_from_slice(&(errno as i32).to_le_bytes());
        let _ = write(ready, &report);
        // SAFETY: _exit ends the child without running the parent's atexit handlers
        // or destructors.
        unsafe { libc::_exit(127) }
    };
    if let Err(e) = unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS) {
        fail(FAILED_UNSHARE, e);
    }
    if write(ready, &[READY]) != Ok(1) {
        // SAFETY: as above.
        unsafe { libc::_exit(127) }
    }
    let mut byte = [0u8; 1];
    if read(go.as_fd(), &mut byte) != Ok(1) || byte[0] != GO {
        // The parent gave up (its maps failed): nothing to report.
        // SAFETY: as above.
        unsafe { libc::_exit(127) }
    }
    // The maps hold the user at 0: become it for every id (the supplementary groups
    // stay, so the user's groups still reach their files).
    let root_gid = Gid::from_raw(0);
    let root_uid = Uid::from_raw(0);
    if let Err(e) = setresgid(root_gid, root_gid, root_gid) {
        fail(FAILED_SETIDS, e);
    }
    if let Err(e) = setresuid(root_uid, root_uid, root_uid) {
        fail(FAILED_SETIDS, e);
    }
    // SAFETY: SIG_DFL installs no handler; Rust's runtime ignores SIGPIPE and the
    // runtime should start with its default, as std's Command leaves it.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
    let _ = SigSet::empty().thread_set_mask();
    // SAFETY: path, argv and envp are NUL-terminated strings and null-terminated
    // pointer arrays that live until execve (they are the parent's, copied by fork).
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    fail(FAILED_EXEC, Errno::last())
}

/// The parent: wait for the child's namespace, map it, let it go, and see it execute.
fn parent(
    child: Pid,
    ready: &OwnedFd,
    go: OwnedFd,
    maps: &IdMaps,
    program: &OsStr,
) -> Result<(), UsernsError> {
    match read_report(ready)? {
        None => return Err(UsernsError::Lost),
        Some((READY, _)) => {}
        Some((stage, errno)) => return Err(failure(stage, errno, "")),
    }
    write_id_maps(child.as_raw().unsigned_abs(), &maps.uid_map, &maps.gid_map)?;
    if write(&go, &[GO]) != Ok(1) {
        return Err(UsernsError::Lost);
    }
    drop(go);
    match read_report(ready)? {
        // The pipe closed on execute.
        None => Ok(()),
        Some((stage, errno)) => Err(failure(stage, errno, &program.to_string_lossy())),
    }
}

fn failure(stage: u8, errno: i32, program: &str) -> UsernsError {
    let errno = Errno::from_raw(errno);
    match stage {
        FAILED_UNSHARE => UsernsError::Unshare(errno),
        FAILED_SETIDS => UsernsError::SetIds(errno),
        FAILED_EXEC => UsernsError::Exec {
            program: program.to_string(),
            errno,
        },
        _ => UsernsError::Lost,
    }
}

/// One report from the child: `None` at end of file, else its byte and, for a
/// failure, the errno.
fn read_report(ready: &OwnedFd) -> Result<Option<(u8, i32)>, UsernsError> {
    let mut buf = [0u8; 5];
    let mut got = 0;
    while got < buf.len() {
        match read(ready.as_fd(), &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(Errno::EINTR) => {}
            Err(_) => return Err(UsernsError::Lost),
        }
        if got >= 1 && buf[0] == READY {
            return Ok(Some((READY, 0)));
        }
    }
    match got {
        0 => Ok(None),
        5 => Ok(Some((
            buf[0],
            i32::from_le_bytes([buf[1], buf[2], buf[3], buf[4]]),
        ))),
        _ => Err(UsernsError::Lost),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUBUID: &str = "alice:100000:65536\nbob:165536:65536\n";
    const SUBGID: &str = "alice:100000:65536\n1002:165536:100\n";

    #[test]
    fn a_bare_program_name_is_found_in_the_runtimes_path() {
        let t = tempfile::tempdir().unwrap();
        let exe = t.path().join("podman");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        std::fs::write(t.path().join("plain"), "").unwrap();
        let env = [(
            OsString::from("PATH"),
            OsString::from(format!("/nonexistent:{}", t.path().display())),
        )];
        assert_eq!(resolve(OsStr::new("podman"), &env), exe);
        assert_eq!(
            resolve(OsStr::new("/usr/bin/podman"), &env),
            std::path::Path::new("/usr/bin/podman")
        );
        // Not executable, or nowhere: the name as given (execve then fails with ENOENT).
        assert_eq!(
            resolve(OsStr::new("plain"), &env),
            std::path::Path::new("plain")
        );
        assert_eq!(
            resolve(OsStr::new("podman"), &[]),
            std::path::Path::new("podman")
        );
    }

    #[test]
    fn podmans_maps_come_from_both_files_or_not_at_all() {
        let m = podman_maps_from("alice", 1001, 1001, SUBUID, SUBGID).unwrap();
        assert_eq!(m.uid_map, ["0", "1001", "1", "1", "100000", "65536"]);
        assert_eq!(m.gid_map, ["0", "1001", "1", "1", "100000", "65536"]);
        // bob's gids are listed by uid, as shadow-utils allows.
        let m = podman_maps_from("bob", 1002, 1002, SUBUID, SUBGID).unwrap();
        assert_eq!(m.gid_map, ["0", "1002", "1", "1", "165536", "100"]);
        assert!(podman_maps_from("carol", 1003, 1003, SUBUID, SUBGID).is_none());
        assert!(podman_maps_from("alice", 1001, 1001, SUBUID, "").is_none());
        assert!(podman_maps_from("root", 0, 0, "root:100000:10\n", "root:100000:10\n").is_none());
    }
}
