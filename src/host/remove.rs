//! The one remover: deletes a job's scratch tree from directory handles.
//!
//! It never follows a symbolic link (every open is `O_NOFOLLOW` relative to a handle),
//! never crosses a mount point (a mount inside scratch is left alone, including a bind
//! mount of the same filesystem, which has the same device number: subdirectories are
//! opened with `openat2` and `RESOLVE_NO_XDEV`, and on kernels without `openat2`
//! (before 5.6) only by device number), and only starts if the top directory is the one
//! this job created (device and inode). Hard links are unlinked, never opened, so their
//! targets keep their owner, mode and content. Nothing is ever chowned or chmodded:
//! root's own permission override is what lets it descend into directories a container
//! left under subordinate uids (mode 000 included).
//!
//! Root only enters (and so only empties) directories owned by the job's user or by one
//! of the user's subordinate uids ([`Owners`]): a directory of anyone else renamed into
//! scratch (another user's group-writable or sticky tree) is left in place and
//! reported, as the user could not have emptied it either.

use std::os::fd::{AsFd, OwnedFd};

use nix::dir::Type;
use nix::errno::Errno;
use nix::fcntl::{openat, openat2, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, fstatat, Mode};
use nix::unistd::{unlinkat, UnlinkatFlags};

use super::dirs::{is_dir, open_dir_nofollow, Dir, DirId};
use crate::rules::subid::{ranges_for, Owners};

/// Where the subordinate uid ranges are (shadow-utils' file; a subid NSS module is not
/// consulted: its ranges then count as somebody else's and such trees are left).
pub const SUBUID_FILE: &str = "/etc/subuid";

/// The owners whose directories root may empty for the job of `uid`: the user and the
/// user's ranges in [`SUBUID_FILE`] (none if it cannot be read: then only the user).
pub fn job_owners(uid: u32) -> Owners {
    let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name);
    let ranges = match (name, std::fs::read_to_string(SUBUID_FILE)) {
        (Some(name), Ok(text)) => ranges_for(&text, &name, uid),
        (None, Ok(text)) => ranges_for(&text, "", uid),
        _ => Vec::new(),
    };
    Owners::new(uid, ranges)
}

/// Deeper trees are left (and reported) rather than risk slurmstepd's stack and fds.
pub const MAX_DEPTH: usize = 1024;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RemoveReport {
    pub removed_entries: u64,
    /// Mount points (other filesystems) met inside the tree and left in place.
    pub other_filesystems: u64,
    /// Directories of somebody other than the job's user (and the user's subordinate
    /// uids) met inside the tree and left in place, unentered.
    pub not_the_users: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    #[error("{path} is not the directory this job created; left alone")]
    NotOurs { path: String },
    #[error("cannot open {path}: {errno}")]
    Open { path: String, errno: Errno },
    /// Something was left in place: a mount, an entry that could not be removed.
    #[error("could not remove {failed} entries under {path} (first: {first})")]
    Incomplete {
        path: String,
        failed: u64,
        first: String,
        /// Some of it was refused for want of permission (`EACCES`, `EPERM`).
        denied: bool,
    },
}

impl RemoveError {
    /// Whether permission was what failed (root squashed to nobody on a home).
    pub fn denied(&self) -> bool {
        match self {
            RemoveError::Open { errno, .. } => matches!(errno, Errno::EACCES | Errno::EPERM),
            RemoveError::Incomplete { denied, .. } => *denied,
            RemoveError::NotOurs { .. } => false,
        }
    }
}

/// Opens the subdirectory `name` of `dir` without following a symbolic link and without
/// crossing a mount point: `EXDEV` means `name` is a mount point.
pub(super) fn open_child_dir(dir: impl AsFd, name: &std::ffi::CStr) -> nix::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let how = OpenHow::new().flags(flags).resolve(
        ResolveFlag::RESOLVE_NO_XDEV
            | ResolveFlag::RESOLVE_NO_SYMLINKS
            | ResolveFlag::RESOLVE_BENEATH,
    );
    match openat2(dir.as_fd(), name, how) {
        // Kernels before 5.6 (or a seccomp filter) lack openat2: the caller's device
        // check is then the only mount test.
        Err(Errno::ENOSYS) => openat(dir.as_fd(), name, flags, Mode::empty()),
        other => other,
    }
}

/// Who does the removing: root (the kernel's permission override), or the owners
/// themselves ([`super::as_user`]: a process of the job's user, in a user namespace that
/// maps only the user's subordinate ranges, which acts in each directory as that
/// directory's owner; for root-squashed homes, where root is nobody).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acting {
    Root,
    Owners,
}

impl Dir {
    /// Removes `name` in this directory if it is still `expected`, entering only
    /// directories `owners` allows (the top one included). A missing entry is not an
    /// error.
    pub fn remove_tree(
        &self,
        name: &str,
        expected: DirId,
        owners: &Owners,
    ) -> Result<RemoveReport, RemoveError> {
        self.remove_tree_as(name, expected, owners, Acting::Root)
    }

    /// [`Dir::remove_tree`], done by `acting`.
    pub fn remove_tree_as(
        &self,
        name: &str,
        expected: DirId,
        owners: &Owners,
        acting: Acting,
    ) -> Result<RemoveReport, RemoveError> {
        remove_tree(self, &self.shown(name), name, expected, owners, acting)
    }
}

/// Removes `parent/name` (shown as `path`) if it is still `expected`, entering only
/// directories `owners` allows, done by `acting`. The walk itself; callers use
/// [`Dir::remove_tree`] and [`Dir::remove_tree_as`].
fn remove_tree(
    parent: &Dir,
    path: &str,
    name: &str,
    expected: DirId,
    owners: &Owners,
    acting: Acting,
) -> Result<RemoveReport, RemoveError> {
    let path = path.to_string();
    let top = match open_dir_nofollow(parent, name) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(RemoveReport::default()),
        Err(Errno::ELOOP) | Err(Errno::ENOTDIR) => return Err(RemoveError::NotOurs { path }),
        Err(errno) => return Err(RemoveError::Open { path, errno }),
    };
    let st = fstat(top.as_fd()).map_err(|errno| RemoveError::Open {
        path: path.clone(),
        errno,
    })?;
    if DirId::of(&st) != expected {
        return Err(RemoveError::NotOurs { path });
    }
    let mut walk = Walk {
        dev: st.st_dev,
        owners,
        acting,
        report: RemoveReport::default(),
        failed: 0,
        denied: false,
        first: None,
    };
    let parent_owner = match acting {
        Acting::Root => 0,
        Acting::Owners => fstat(parent.as_fd()).map_or(owners.uid, |p| p.st_uid),
    };
    if owners.allows(st.st_uid) {
        let top = walk.writable(top, st.st_uid, st.st_mode, &path);
        walk.empty(&top, &path, 0, st.st_uid);
    } else {
        walk.not_the_users(&path, st.st_uid);
    }
    walk.act(parent_owner);
    match unlinkat(parent.as_fd(), name, UnlinkatFlags::RemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => {}
        // Not empty because of what was already reported: no second report.
        Err(Errno::ENOTEMPTY | Errno::EEXIST) if walk.failed > 0 => {}
        Err(errno) => walk.fail_errno(&path, errno),
    }
    match walk.first {
        None => Ok(walk.report),
        Some(first) => Err(RemoveError::Incomplete {
            path,
            failed: walk.failed,
            first,
            denied: walk.denied,
        }),
    }
}

struct Walk<'a> {
    dev: u64,
    owners: &'a Owners,
    acting: Acting,
    report: RemoveReport,
    failed: u64,
    denied: bool,
    first: Option<String>,
}

impl Walk<'_> {
    /// Acting as the owners: the filesystem uid of what follows is `owner`'s.
    fn act(&self, owner: u32) {
        if self.acting == Acting::Owners {
            super::as_user::act_as(owner);
        }
    }

    /// Acting as the owners, a directory its owner cannot list or empty (mode 000, a
    /// read-only tree) is made `0700` by that owner first; root needs no such change.
    fn writable(&mut self, dir: OwnedFd, owner: u32, mode: u32, path: &str) -> OwnedFd {
        if self.acting == Acting::Owners && mode & 0o700 != 0o700 {
            self.act(owner);
            if let Err(e) = super::as_user::owner_chmod(&dir) {
                self.fail_errno(path, e);
            }
        }
        dir
    }

    fn fail_errno(&mut self, path: &str, errno: Errno) {
        if matches!(errno, Errno::EACCES | Errno::EPERM) {
            self.denied = true;
        }
        self.fail(path, errno);
    }

    fn fail(&mut self, path: &str, why: impl std::fmt::Display) {
        self.failed += 1;
        if self.first.is_none() {
            self.first = Some(format!("{path}: {why}"));
        }
    }

    /// [`open_child_dir`]; acting as the owners, looked up as the parent's owner (who
    /// may search it) and opened as its own owner (see [`super::as_user`]).
    fn open_child(&self, dir: &OwnedFd, name: &std::ffi::CStr) -> nix::Result<OwnedFd> {
        match self.acting {
            Acting::Root => open_child_dir(dir, name),
            Acting::Owners => super::as_user::open_child_as_owner(dir, name, self.owners),
        }
    }

    fn not_the_users(&mut self, path: &str, owner: u32) {
        self.report.not_the_users += 1;
        // Inside the user's namespace another user's uid is not mapped: it reads as
        // the overflow uid, so it is not named.
        let whose = match self.acting {
            Acting::Root => format!("uid {owner}"),
            Acting::Owners => "a uid outside the user's ranges".into(),
        };
        self.fail(
            path,
            format!("a directory of {whose}, not the job's user's; left in place"),
        );
    }

    /// The entries of `dir` with their type as the directory reports it (`None`: the
    /// filesystem does not say), which is only a hint: see [`Walk::empty`].
    fn names(&mut self, dir: &OwnedFd, path: &str) -> Vec<(std::ffi::CString, Option<Type>)> {
        // A second handle for reading, so `dir` stays usable for the *at calls.
        let reader = match openat(
            dir.as_fd(),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .and_then(nix::dir::Dir::from_fd)
        {
            Ok(d) => d,
            Err(e) => {
                self.fail_errno(path, e);
                return Vec::new();
            }
        };
        let mut names = Vec::new();
        for entry in reader.into_iter().flatten() {
            let n = entry.file_name();
            if n.to_bytes() != b"." && n.to_bytes() != b".." {
                names.push((n.to_owned(), entry.file_type()));
            }
        }
        names
    }

    fn empty(&mut self, dir: &OwnedFd, path: &str, depth: usize, owner: u32) {
        self.act(owner);
        for (name, hint) in self.names(dir, path) {
            self.act(owner);
            let shown = || format!("{path}/{}", name.to_string_lossy());
            // Fast path for what the directory says is not a directory: unlink it without
            // a stat (as `rm -rf` does). Unlinking never follows a link, and cannot remove
            // a directory (EISDIR) or a mount point (EBUSY, reported); an entry swapped
            // for a directory since it was listed takes the checked path below.
            if hint.is_some_and(|t| t != Type::Directory) {
                match unlinkat(dir.as_fd(), name.as_c_str(), UnlinkatFlags::NoRemoveDir) {
                    Ok(()) => {
                        self.report.removed_entries += 1;
                        continue;
                    }
                    Err(Errno::ENOENT) => continue,
                    Err(Errno::EISDIR) => {}
                    Err(e) => {
                        self.fail_errno(&shown(), e);
                        continue;
                    }
                }
            }
            let st = match fstatat(dir.as_fd(), name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::ENOENT) => continue,
                Err(e) => {
                    self.fail_errno(&shown(), e);
                    continue;
                }
            };
            if is_dir(st.st_mode) {
                if st.st_dev != self.dev {
                    self.report.other_filesystems += 1;
                    self.fail(&shown(), "a filesystem is mounted here; left in place");
                    continue;
                }
                if depth + 1 > MAX_DEPTH {
                    self.fail(&shown(), format!("deeper than {MAX_DEPTH} levels"));
                    continue;
                }
                let child = match self.open_child(dir, name.as_c_str()) {
                    Ok(fd) => fd,
                    Err(Errno::ENOENT) => continue,
                    Err(Errno::EXDEV) => {
                        // A bind mount of the same filesystem: same device, other mount.
                        self.report.other_filesystems += 1;
                        self.fail(&shown(), "a filesystem is mounted here; left in place");
                        continue;
                    }
                    Err(e) => {
                        self.fail_errno(&shown(), e);
                        continue;
                    }
                };
                // Swapped between stat and open? Only descend into what was checked, and
                // only into what the job's user (or the user's subordinate ids) owns.
                match fstat(child.as_fd()) {
                    Ok(c) if c.st_dev == st.st_dev && c.st_ino == st.st_ino => {
                        if !self.owners.allows(c.st_uid) {
                            self.not_the_users(&shown(), c.st_uid);
                            continue;
                        }
                    }
                    _ => {
                        self.fail(&shown(), "changed while being removed");
                        continue;
                    }
                }
                let failed_before = self.failed;
                self.empty(&child, &shown(), depth + 1, st.st_uid);
                drop(child);
                self.act(owner);
                match unlinkat(dir.as_fd(), name.as_c_str(), UnlinkatFlags::RemoveDir) {
                    Ok(()) => self.report.removed_entries += 1,
                    Err(Errno::ENOENT) => {}
                    Err(Errno::ENOTEMPTY | Errno::EEXIST) if self.failed > failed_before => {}
                    Err(e) => self.fail_errno(&shown(), e),
                }
            } else {
                match unlinkat(dir.as_fd(), name.as_c_str(), UnlinkatFlags::NoRemoveDir) {
                    Ok(()) => self.report.removed_entries += 1,
                    Err(Errno::ENOENT) => {}
                    Err(e) => self.fail_errno(&shown(), e),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn me() -> Owners {
        Owners::new(nix::unistd::geteuid().as_raw(), Vec::new())
    }

    fn setup() -> (tempfile::TempDir, Dir, DirId) {
        let t = tempfile::tempdir().unwrap();
        let home = Dir::open(t.path()).unwrap();
        let id = home.create_private("scratch-1").unwrap();
        (t, home, id)
    }

    #[test]
    fn removes_a_nested_tree() {
        let (t, home, id) = setup();
        let s = t.path().join("scratch-1");
        fs::create_dir_all(s.join("a/b/c")).unwrap();
        fs::write(s.join("a/b/c/f"), b"x").unwrap();
        fs::write(s.join("top"), b"x").unwrap();
        fs::set_permissions(
            s.join("a/b"),
            std::os::unix::fs::PermissionsExt::from_mode(0o500),
        )
        .unwrap();
        let r = home.remove_tree("scratch-1", id, &me()).unwrap();
        assert_eq!(r.removed_entries, 5);
        assert!(!s.exists());
    }

    #[test]
    fn symlinks_inside_are_unlinked_not_followed() {
        let (t, home, id) = setup();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("canary"), b"keep").unwrap();
        std::os::unix::fs::symlink(outside.path(), t.path().join("scratch-1/link")).unwrap();
        fs::hard_link(
            outside.path().join("canary"),
            t.path().join("scratch-1/hard"),
        )
        .unwrap();
        home.remove_tree("scratch-1", id, &me()).unwrap();
        assert_eq!(fs::read(outside.path().join("canary")).unwrap(), b"keep");
    }

    #[test]
    fn scratch_replaced_by_a_symlink_is_left_alone() {
        let (t, home, id) = setup();
        let victim = tempfile::tempdir().unwrap();
        fs::write(victim.path().join("canary"), b"keep").unwrap();
        fs::remove_dir(t.path().join("scratch-1")).unwrap();
        std::os::unix::fs::symlink(victim.path(), t.path().join("scratch-1")).unwrap();
        assert!(matches!(
            home.remove_tree("scratch-1", id, &me()),
            Err(RemoveError::NotOurs { .. })
        ));
        assert!(victim.path().join("canary").exists());
    }

    #[test]
    fn a_different_directory_at_the_name_is_left_alone() {
        let (t, home, id) = setup();
        fs::rename(t.path().join("scratch-1"), t.path().join("elsewhere")).unwrap();
        fs::create_dir(t.path().join("scratch-1")).unwrap();
        fs::write(t.path().join("scratch-1/f"), b"x").unwrap();
        assert!(home.remove_tree("scratch-1", id, &me()).is_err());
        assert!(t.path().join("scratch-1/f").exists());
    }

    /// Child half of `a_bind_mount_inside_is_left_alone` (runs inside its namespace).
    #[test]
    #[ignore = "run by a_bind_mount_inside_is_left_alone inside a mount namespace"]
    fn bind_mount_child() {
        let home = std::path::PathBuf::from(std::env::var_os("TRE_SPANK_TEST_HOME").unwrap());
        let ino: u64 = std::env::var("TRE_SPANK_TEST_INO")
            .unwrap()
            .parse()
            .unwrap();
        let fd = Dir::open(&home).unwrap();
        let st = fstatat(fd.as_fd(), "scratch-1", AtFlags::AT_SYMLINK_NOFOLLOW).unwrap();
        assert_eq!(st.st_ino, ino);
        let e = fd
            .remove_tree("scratch-1", DirId::of(&st), &me())
            .unwrap_err();
        assert!(e.to_string().contains("mounted here"), "{e}");
        println!("BIND-CHILD-OK");
    }

    /// A bind mount of the same filesystem (same device number) inside scratch is not
    /// entered. Mounting needs privileges: the test re-runs itself in a new user and
    /// mount namespace (`unshare -r -m`, util-linux), where the mount is visible.
    #[test]
    fn a_bind_mount_inside_is_left_alone() {
        let (t, _home, id) = setup();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("canary"), b"keep").unwrap();
        fs::create_dir(t.path().join("scratch-1/mnt")).unwrap();
        fs::write(t.path().join("scratch-1/other"), b"x").unwrap();
        let out = std::process::Command::new("unshare")
            .args(["--user", "--map-root-user", "--mount", "--", "sh", "-c"])
            .arg(r#"mount --bind "$0" "$1" && exec "$2" --exact host::remove::tests::bind_mount_child --ignored --nocapture"#)
            .arg(outside.path())
            .arg(t.path().join("scratch-1/mnt"))
            .arg(std::env::current_exe().unwrap())
            .env("TRE_SPANK_TEST_HOME", t.path())
            .env("TRE_SPANK_TEST_INO", id.ino.to_string())
            .output()
            .expect("this test needs unshare(1) from util-linux");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && text.contains("BIND-CHILD-OK"),
            "child failed (user namespaces must be allowed): {text}"
        );
        assert_eq!(fs::read(outside.path().join("canary")).unwrap(), b"keep");
        // Outside the namespace `mnt` is a plain empty directory: what was not mounted
        // went, and the mount point itself is left.
        assert!(!t.path().join("scratch-1/other").exists());
        assert!(t.path().join("scratch-1/mnt").is_dir());
        let _ = id;
    }

    #[test]
    fn subordinate_owned_unreadable_directories_are_removed_by_root() {
        // Without root this is the user's own mode-000 tree (the owner can still
        // remove it only by changing modes, which the remover never does), so the
        // property is checked for root only; the integration suite covers it for real.
        let (t, home, id) = setup();
        let d = t.path().join("scratch-1/d");
        fs::create_dir_all(d.join("e")).unwrap();
        fs::write(d.join("e/f"), b"x").unwrap();
        fs::set_permissions(
            d.join("e"),
            std::os::unix::fs::PermissionsExt::from_mode(0o000),
        )
        .unwrap();
        fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
        let r = home.remove_tree("scratch-1", id, &me());
        if nix::unistd::geteuid().is_root() {
            r.unwrap();
            assert!(!t.path().join("scratch-1").exists());
        } else {
            assert!(
                r.is_err(),
                "a non-root remover cannot enter a mode-000 directory"
            );
            fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
            fs::set_permissions(
                d.join("e"),
                std::os::unix::fs::PermissionsExt::from_mode(0o700),
            )
            .unwrap();
        }
    }

    #[test]
    fn a_tree_of_somebody_else_is_not_entered() {
        // Root's check with real owners: a subordinate uid's directory is emptied, a
        // directory of another uid (renamed in by someone with write access to it) is
        // left with its content, and so is scratch itself. Without root the same
        // refusal is seen through a job user who is not the caller.
        let (t, home, id) = setup();
        let s = t.path().join("scratch-1");
        fs::create_dir_all(s.join("sub/x")).unwrap();
        fs::write(s.join("sub/x/f"), b"x").unwrap();
        fs::create_dir_all(s.join("run1/raw")).unwrap();
        fs::write(s.join("run1/raw/data"), b"keep").unwrap();
        let me = nix::unistd::geteuid().as_raw();
        if nix::unistd::geteuid().is_root() {
            let chown = |p: &std::path::Path, uid: u32| {
                nix::unistd::chown(p, Some(nix::unistd::Uid::from_raw(uid)), None).unwrap()
            };
            let user = 4000;
            chown(&s, user);
            chown(&s.join("sub"), 200_001);
            chown(&s.join("sub/x"), 200_002);
            chown(&s.join("run1"), 4001);
            chown(&s.join("run1/raw"), 4001);
            let owners = Owners::new(
                user,
                vec![crate::rules::subid::IdRange {
                    start: 200_000,
                    count: 65536,
                }],
            );
            let e = home.remove_tree("scratch-1", id, &owners).unwrap_err();
            assert!(
                e.to_string().contains("run1: a directory of uid 4001"),
                "{e}"
            );
            assert!(!s.join("sub").exists());
            assert_eq!(fs::read(s.join("run1/raw/data")).unwrap(), b"keep");
        } else {
            let e = home
                .remove_tree("scratch-1", id, &Owners::new(me + 1, vec![]))
                .unwrap_err();
            assert!(e.to_string().contains("not the job's user's"), "{e}");
            assert!(s.join("sub/x/f").exists());
            assert_eq!(fs::read(s.join("run1/raw/data")).unwrap(), b"keep");
        }
    }

    #[test]
    fn already_gone_is_fine() {
        let (t, home, id) = setup();
        fs::remove_dir(t.path().join("scratch-1")).unwrap();
        assert_eq!(
            home.remove_tree("scratch-1", id, &me()).unwrap(),
            RemoveReport::default()
        );
    }

    #[test]
    fn too_deep_trees_are_reported_not_overflowed() {
        let (t, home, id) = setup();
        let mut p = t.path().join("scratch-1");
        for _ in 0..(MAX_DEPTH + 3) {
            p.push("d");
        }
        // create_dir_all with very long paths can exceed PATH_MAX; build relative.
        let mut fd = Dir::open(&t.path().join("scratch-1")).unwrap();
        for _ in 0..(MAX_DEPTH + 3) {
            nix::sys::stat::mkdirat(fd.as_fd(), "d", Mode::S_IRWXU).unwrap();
            fd = fd.open_child("d").unwrap();
        }
        let e = home.remove_tree("scratch-1", id, &me()).unwrap_err();
        assert!(e.to_string().contains("deeper than"), "{e}");
    }
}
