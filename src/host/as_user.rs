//! Removing scratch as the job's user, for homes where root is nobody (NFS or GPFS
//! exported with `root_squash`): root's attempt ([`super::remove`]) is refused there
//! (`EACCES`/`EPERM`), and the cleanup then hands the tree to this path.
//!
//! Root starts `tre-spank remove-as-user` with the user's uid and gid and no
//! supplementary groups (`std`'s `Command::uid`/`gid`: setgroups, setgid, setuid before
//! exec), so the process has no capabilities and a fresh memory image (nothing of
//! root's, such as the proof key, is inherited) before it opens anything. As the user it
//! reads the user's ranges in `/etc/subuid` and `/etc/subgid`
//! ([`crate::rules::subid`]). Without ranges it runs the remover itself. With ranges it
//! starts itself once more (`--in-userns`); that process creates a user namespace, and
//! the first one has the setuid helpers `newuidmap`/`newgidmap` (the `uidmap` package,
//! which checks the ranges are the user's) write its maps: the user's own uid and gid
//! and the user's ranges, each mapped to the same number inside (so ids read inside are
//! the host's), never uid 0 and never a range that holds it. Inside, the remover
//! ([`super::remove::Acting::Owners`]) acts in each directory as that directory's owner
//! (`setfsuid`): the user for the user's directories, a subordinate uid for what a
//! container left under it. A server that squashes root still checks every request
//! against that owner, so nothing can be removed that its owner could not remove.
//!
//! Every argument is an argv word (no shell), errors come back on standard output as
//! one line, and the remover is the same one root uses (no links followed, no mounts
//! crossed, only directories of the user and the user's subordinate uids entered).

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag, AT_FDCWD};
use nix::sys::stat::{fchmod, fchmodat, fstat, FchmodatFlags, Mode};
use nix::unistd::{Gid, Uid, User};

use super::dirs::{Dir, DirId};
use super::remove::{Acting, RemoveError, SUBUID_FILE};
use crate::rules::subid::{id_map_args, ranges_for, usable_ranges, Owners};

/// The subordinate gid ranges (shadow-utils' file).
pub const SUBGID_FILE: &str = "/etc/subgid";
/// The setuid helpers that write a user namespace's maps (Debian's `uidmap` package).
pub const NEWUIDMAP: &str = "/usr/bin/newuidmap";
pub const NEWGIDMAP: &str = "/usr/bin/newgidmap";
/// The `tre-spank` subcommand that removes as the user.
pub const SUBCOMMAND: &str = "remove-as-user";
const IN_USERNS: &str = "--in-userns";
const PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, thiserror::Error)]
pub enum AsUserError {
    #[error("uid {0} has no account here: cannot remove as the user")]
    NoAccount(u32),
    #[error("the job's user is root: nothing to do as the user")]
    Root,
    #[error("cannot start the remover as uid {uid}: {err}")]
    Spawn { uid: u32, err: std::io::Error },
    #[error("the remover as uid {uid} said nothing ({status}){stderr}")]
    NoAnswer {
        uid: u32,
        status: std::process::ExitStatus,
        stderr: String,
    },
    /// Scratch is not the directory this job created (left alone).
    #[error("{0}")]
    NotOurs(String),
    #[error("{0}")]
    Failed(String),
}

/// Root's side: removes `parent_path/name` (still `expected`) as the user `uid`, in a
/// process of the user's (see the module). Returns the entries removed.
pub fn remove_as_user(
    parent_path: &Path,
    name: &str,
    expected: DirId,
    uid: u32,
) -> Result<u64, AsUserError> {
    if uid == 0 {
        return Err(AsUserError::Root);
    }
    let user = User::from_uid(Uid::from_raw(uid))
        .ok()
        .flatten()
        .ok_or(AsUserError::NoAccount(uid))?;
    // This very program (the `tre-spank` that runs the cleanup), not a path to look up.
    let out = Command::new("/proc/self/exe")
        .arg(SUBCOMMAND)
        .arg(parent_path)
        .arg(name)
        .arg(expected.dev.to_string())
        .arg(expected.ino.to_string())
        .env_clear()
        .env("PATH", PATH)
        .current_dir("/")
        .stdin(Stdio::null())
        .uid(uid)
        .gid(user.gid.as_raw())
        .output()
        .map_err(|err| AsUserError::Spawn { uid, err })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.lines().last().map(Answer::read) {
        Some(Some(Answer::Removed(n))) => Ok(n),
        Some(Some(Answer::NotOurs(m))) => Err(AsUserError::NotOurs(m)),
        Some(Some(Answer::Failed(m))) => Err(AsUserError::Failed(m)),
        _ => {
            let err = String::from_utf8_lossy(&out.stderr);
            let err = err.trim();
            Err(AsUserError::NoAnswer {
                uid,
                status: out.status,
                stderr: if err.is_empty() {
                    String::new()
                } else {
                    format!(": {}", err.lines().last().unwrap_or(err))
                },
            })
        }
    }
}

/// The one line the user's process answers with.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Removed(u64),
    NotOurs(String),
    Failed(String),
}

impl Answer {
    fn line(&self) -> String {
        // One line: a file name with a newline must not end the answer early.
        let flat = |m: &str| m.replace(['\n', '\r'], "?");
        match self {
            Answer::Removed(n) => format!("removed {n}"),
            Answer::NotOurs(m) => format!("not-ours {}", flat(m)),
            Answer::Failed(m) => format!("failed {}", flat(m)),
        }
    }

    fn read(line: &str) -> Option<Answer> {
        let (word, rest) = line.split_once(' ')?;
        match word {
            "removed" => rest.parse().ok().map(Answer::Removed),
            "not-ours" => Some(Answer::NotOurs(rest.into())),
            "failed" => Some(Answer::Failed(rest.into())),
            _ => None,
        }
    }
}

/// Acting as the owners: what follows is done with `owner`'s filesystem uid. Inside the
/// namespace only the user and the user's ranges are mapped; any other uid is refused
/// by the kernel and the uid stays what it was.
pub fn act_as(owner: u32) {
    nix::unistd::setfsuid(Uid::from_raw(owner));
}

/// Makes the directory `dir` (opened for reading) `0700`, as its owner.
pub fn owner_chmod(dir: &OwnedFd) -> nix::Result<()> {
    fchmod(dir.as_fd(), Mode::S_IRWXU)
}

/// Opens the subdirectory `name` of `dir` for the remover acting as the owners: looked
/// up (`O_PATH`, no link followed, no mount crossed) with the current filesystem uid,
/// the parent's owner, who may search the parent; then, if its owner is one `owners`
/// allows, reopened for reading as that owner (made `0700` by it first when its mode
/// keeps the owner out). A directory of anyone else comes back as the `O_PATH` handle,
/// never read: the caller sees its owner and leaves it.
pub fn open_child_as_owner(
    dir: &OwnedFd,
    name: &std::ffi::CStr,
    owners: &Owners,
) -> nix::Result<OwnedFd> {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let how = OpenHow::new().flags(flags).resolve(
        ResolveFlag::RESOLVE_NO_XDEV
            | ResolveFlag::RESOLVE_NO_SYMLINKS
            | ResolveFlag::RESOLVE_BENEATH,
    );
    let handle = match openat2(dir.as_fd(), name, how) {
        Err(Errno::ENOSYS) => openat(dir.as_fd(), name, flags, Mode::empty()),
        other => other,
    }?;
    let st = fstat(handle.as_fd())?;
    if !owners.allows(st.st_uid) {
        return Ok(handle);
    }
    act_as(st.st_uid);
    // The handle's own inode, by its descriptor: no path is resolved again.
    let by_fd = format!("/proc/self/fd/{}", handle.as_raw_fd());
    if st.st_mode & 0o700 != 0o700 {
        fchmodat(
            AT_FDCWD,
            by_fd.as_str(),
            Mode::S_IRWXU,
            FchmodatFlags::FollowSymlink,
        )?;
    }
    openat(
        AT_FDCWD,
        by_fd.as_str(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// What the remover is asked to remove.
struct Target {
    parent: OsString,
    name: String,
    expected: DirId,
}

fn parse(mut args: impl Iterator<Item = OsString>) -> Option<Target> {
    let parent = args.next()?;
    let name = args.next()?.into_string().ok()?;
    let dev = args.next()?.into_string().ok()?.parse().ok()?;
    let ino = args.next()?.into_string().ok()?.parse().ok()?;
    if args.next().is_some() || name.contains('/') || name.is_empty() || name == ".." {
        return None;
    }
    Some(Target {
        parent,
        name,
        expected: DirId { dev, ino },
    })
}

/// The user's side: `tre-spank remove-as-user [--in-userns] PARENT NAME DEV INO`, run
/// by root's [`remove_as_user`] as the user. Answers on standard output.
pub fn subcommand(args: impl Iterator<Item = OsString>) -> ExitCode {
    let mut args = args.peekable();
    let in_userns = args.next_if(|a| a == IN_USERNS).is_some();
    let answer = run(in_userns, args);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", answer.line()).and_then(|()| out.flush());
    match answer {
        Answer::Removed(_) => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    }
}

fn run(in_userns: bool, args: impl Iterator<Item = OsString>) -> Answer {
    let uid = nix::unistd::getuid();
    if uid.is_root() || nix::unistd::geteuid().is_root() {
        return Answer::Failed(format!("{SUBCOMMAND} never runs as root"));
    }
    let Some(target) = parse(args) else {
        return Answer::Failed(format!("usage: tre-spank {SUBCOMMAND} PARENT NAME DEV INO"));
    };
    let Some(user) = User::from_uid(uid).ok().flatten() else {
        return Answer::Failed(format!("uid {uid} has no account here"));
    };
    let gid = nix::unistd::getgid();
    let read = |file: &str| std::fs::read_to_string(file).unwrap_or_default();
    let subuids = usable_ranges(
        ranges_for(&read(SUBUID_FILE), &user.name, uid.as_raw()),
        uid.as_raw(),
    );
    let subgids = usable_ranges(
        ranges_for(&read(SUBGID_FILE), &user.name, uid.as_raw()),
        gid.as_raw(),
    );
    let owners = Owners::new(uid.as_raw(), subuids.clone());
    if in_userns {
        return enter_and_remove(&target, &owners);
    }
    if subuids.is_empty() {
        // Nothing under subordinate uids can exist: the user alone removes.
        return remove(&target, &owners);
    }
    in_a_user_namespace(
        &target,
        uid,
        gid,
        &id_map_args(uid.as_raw(), &subuids),
        &id_map_args(gid.as_raw(), &subgids),
    )
}

fn remove(target: &Target, owners: &Owners) -> Answer {
    let parent_path = Path::new(OsStr::from_bytes(target.parent.as_bytes()));
    let parent = match Dir::open(parent_path) {
        Ok(fd) => fd,
        Err(e) => return Answer::Failed(e.to_string()),
    };
    match parent.remove_tree_as(&target.name, target.expected, owners, Acting::Owners) {
        Ok(report) => Answer::Removed(report.removed_entries),
        Err(e @ RemoveError::NotOurs { .. }) => Answer::NotOurs(e.to_string()),
        Err(e) => Answer::Failed(e.to_string()),
    }
}

/// The process inside: creates the user namespace, says so, waits for its maps, removes.
fn enter_and_remove(target: &Target, owners: &Owners) -> Answer {
    if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER) {
        return Answer::Failed(format!("cannot create a user namespace: {e}"));
    }
    {
        let mut out = std::io::stdout().lock();
        if writeln!(out, "ready").and_then(|()| out.flush()).is_err() {
            return Answer::Failed("lost the process that maps the namespace".into());
        }
    }
    let mut go = String::new();
    if std::io::stdin().lock().read_line(&mut go).is_err() || go.trim() != "go" {
        return Answer::Failed("the namespace's maps were not written".into());
    }
    remove(target, owners)
}

/// Why a user namespace's maps were not written: the helper, its arguments and what it
/// said.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct IdMapError(String);

/// Has `newuidmap` and `newgidmap` (side by side: each is a setuid start of its own)
/// write the maps of process `pid`'s user namespace; `uid_map` and `gid_map` are their
/// arguments after the pid. The remover's namespace and podman's (host::userns) are
/// mapped here.
pub fn write_id_maps(pid: u32, uid_map: &[String], gid_map: &[String]) -> Result<(), IdMapError> {
    let pid = pid.to_string();
    let helpers = [(NEWUIDMAP, uid_map), (NEWGIDMAP, gid_map)].map(|(helper, map)| {
        let started = Command::new(helper)
            .arg(&pid)
            .args(map)
            .env_clear()
            .env("PATH", PATH)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        (helper, map, started)
    });
    let mut problem = None;
    for (helper, map, started) in helpers {
        let failed = match started.and_then(|c| c.wait_with_output()) {
            Ok(o) if o.status.success() => continue,
            Ok(o) => format!(
                "{helper} {pid} {} failed ({}): {}",
                map.join(" "),
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => format!("cannot run {helper} (the uidmap package): {e}"),
        };
        problem.get_or_insert(failed);
    }
    problem.map_or(Ok(()), |p| Err(IdMapError(p)))
}

/// The process outside (the user, in the host's namespace): starts the one inside, has
/// `newuidmap`/`newgidmap` map it, and passes its answer on.
fn in_a_user_namespace(
    target: &Target,
    uid: Uid,
    gid: Gid,
    uid_map: &[String],
    gid_map: &[String],
) -> Answer {
    let mut child = match Command::new("/proc/self/exe")
        .arg(SUBCOMMAND)
        .arg(IN_USERNS)
        .arg(&target.parent)
        .arg(&target.name)
        .arg(target.expected.dev.to_string())
        .arg(target.expected.ino.to_string())
        .env_clear()
        .env("PATH", PATH)
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            return Answer::Failed(format!("cannot start the remover in a user namespace: {e}"))
        }
    };
    let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Answer::Failed("no pipe to the remover in the user namespace".into());
    };
    let mut lines = std::io::BufReader::new(stdout).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    if first != "ready" {
        let _ = child.wait();
        return Answer::read(&first).unwrap_or(Answer::Failed(
            "the remover in the user namespace did not start".into(),
        ));
    }
    if let Err(problem) = write_id_maps(child.id(), uid_map, gid_map) {
        let _ = child.kill();
        let _ = child.wait();
        return Answer::Failed(format!(
            "{problem}; uid {uid} gid {gid} need their ranges in {SUBUID_FILE} and {SUBGID_FILE}"
        ));
    }
    if writeln!(stdin, "go").and_then(|()| stdin.flush()).is_err() {
        let _ = child.wait();
        return Answer::Failed("the remover in the user namespace went away".into());
    }
    drop(stdin);
    let last = lines.map_while(Result::ok).last().unwrap_or_default();
    let status = child.wait();
    Answer::read(&last).unwrap_or_else(|| {
        Answer::Failed(format!(
            "the remover in the user namespace said nothing ({})",
            status.map_or_else(|e| e.to_string(), |s| s.to_string())
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_one_line_each_way() {
        for a in [
            Answer::Removed(7),
            Answer::NotOurs("x is not the directory".into()),
            Answer::Failed("cannot open /home/a: EACCES".into()),
        ] {
            assert_eq!(Answer::read(&a.line()), Some(a));
        }
        let forged = Answer::Failed("a\nremoved 3".into()).line();
        assert_eq!(forged.lines().count(), 1);
        assert!(matches!(Answer::read(&forged), Some(Answer::Failed(_))));
        assert_eq!(Answer::read("ready"), None);
        assert_eq!(Answer::read("removed x"), None);
    }

    #[test]
    fn arguments_name_one_entry_of_the_parent() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>().into_iter();
        let t = parse(args(&["/home/a", "scratch-1", "5", "6"])).unwrap();
        assert_eq!(
            (t.name.as_str(), t.expected),
            ("scratch-1", DirId { dev: 5, ino: 6 })
        );
        for bad in [
            &["/home/a", "x/y", "5", "6"][..],
            &["/home/a", "..", "5", "6"],
            &["/home/a", "", "5", "6"],
            &["/home/a", "s", "5"],
            &["/home/a", "s", "5", "6", "7"],
            &["/home/a", "s", "x", "6"],
        ] {
            assert!(parse(args(bad)).is_none(), "{bad:?}");
        }
    }
}
