//! The one remover: deletes a job's scratch tree from directory handles.
//!
//! It never follows a symbolic link (every open is `O_NOFOLLOW` relative to a handle),
//! never crosses into another filesystem (a mount inside scratch is left alone), and
//! only starts if the top directory is the one this job created (device and inode).
//! Hard links are unlinked, never opened, so their targets are untouched.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

use super::dirs::DirId;

/// Deeper trees are left (and reported) rather than risk slurmstepd's stack and fds.
pub const MAX_DEPTH: usize = 1024;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RemoveReport {
    pub removed_entries: u64,
    /// Mount points (other filesystems) met inside the tree and left in place.
    pub other_filesystems: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    #[error("{path} is not the directory this job created; left alone")]
    NotOurs { path: String },
    #[error("cannot open {path}: {errno}")]
    Open { path: String, errno: Errno },
    #[error("could not remove {failed} entries under {path} (first: {first})")]
    Incomplete {
        path: String,
        failed: u64,
        first: String,
    },
}

fn is_dir(mode: u32) -> bool {
    SFlag::from_bits_truncate(mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

fn open_dir_nofollow(parent: impl AsFd, name: &str) -> nix::Result<OwnedFd> {
    openat(
        parent.as_fd(),
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// Removes `parent/name` if it is still `expected`. A missing entry is not an error.
pub fn remove_tree(
    parent: impl AsFd,
    parent_path: &Path,
    name: &str,
    expected: DirId,
) -> Result<RemoveReport, RemoveError> {
    let path = parent_path.join(name).display().to_string();
    let top = match open_dir_nofollow(parent.as_fd(), name) {
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
        report: RemoveReport::default(),
        failed: 0,
        first: None,
    };
    walk.empty(&top, &path, 0);
    drop(top);
    match unlinkat(parent.as_fd(), name, UnlinkatFlags::RemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(errno) => walk.fail(&path, errno),
    }
    match walk.first {
        None => Ok(walk.report),
        Some(first) => Err(RemoveError::Incomplete {
            path,
            failed: walk.failed,
            first,
        }),
    }
}

struct Walk {
    dev: u64,
    report: RemoveReport,
    failed: u64,
    first: Option<String>,
}

impl Walk {
    fn fail(&mut self, path: &str, why: impl std::fmt::Display) {
        self.failed += 1;
        if self.first.is_none() {
            self.first = Some(format!("{path}: {why}"));
        }
    }

    fn names(&mut self, dir: &OwnedFd, path: &str) -> Vec<std::ffi::CString> {
        // A second handle for reading, so `dir` stays usable for the *at calls.
        let reader = match openat(
            dir.as_fd(),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .and_then(Dir::from_fd)
        {
            Ok(d) => d,
            Err(e) => {
                self.fail(path, e);
                return Vec::new();
            }
        };
        let mut names = Vec::new();
        for entry in reader.into_iter().flatten() {
            let n = entry.file_name();
            if n.to_bytes() != b"." && n.to_bytes() != b".." {
                names.push(n.to_owned());
            }
        }
        names
    }

    fn empty(&mut self, dir: &OwnedFd, path: &str, depth: usize) {
        for name in self.names(dir, path) {
            let shown = format!("{path}/{}", name.to_string_lossy());
            let st = match fstatat(dir.as_fd(), name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::ENOENT) => continue,
                Err(e) => {
                    self.fail(&shown, e);
                    continue;
                }
            };
            if is_dir(st.st_mode) {
                if st.st_dev != self.dev {
                    self.report.other_filesystems += 1;
                    self.fail(&shown, "another filesystem is mounted here; left in place");
                    continue;
                }
                if depth + 1 > MAX_DEPTH {
                    self.fail(&shown, format!("deeper than {MAX_DEPTH} levels"));
                    continue;
                }
                let child = match openat(
                    dir.as_fd(),
                    name.as_c_str(),
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                ) {
                    Ok(fd) => fd,
                    Err(Errno::ENOENT) => continue,
                    Err(e) => {
                        self.fail(&shown, e);
                        continue;
                    }
                };
                // Swapped between stat and open? Only descend into what was checked.
                match fstat(child.as_fd()) {
                    Ok(c) if c.st_dev == st.st_dev && c.st_ino == st.st_ino => {}
                    _ => {
                        self.fail(&shown, "changed while being removed");
                        continue;
                    }
                }
                self.empty(&child, &shown, depth + 1);
                drop(child);
                match unlinkat(dir.as_fd(), name.as_c_str(), UnlinkatFlags::RemoveDir) {
                    Ok(()) => self.report.removed_entries += 1,
                    Err(Errno::ENOENT) => {}
                    Err(e) => self.fail(&shown, e),
                }
            } else {
                match unlinkat(dir.as_fd(), name.as_c_str(), UnlinkatFlags::NoRemoveDir) {
                    Ok(()) => self.report.removed_entries += 1,
                    Err(Errno::ENOENT) => {}
                    Err(e) => self.fail(&shown, e),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::dirs::{create_private_dir, open_home};
    use std::fs;

    fn setup() -> (tempfile::TempDir, OwnedFd, DirId) {
        let t = tempfile::tempdir().unwrap();
        let home = open_home(t.path()).unwrap();
        let id = create_private_dir(&home, t.path(), "scratch-1").unwrap();
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
        let r = remove_tree(&home, t.path(), "scratch-1", id).unwrap();
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
        remove_tree(&home, t.path(), "scratch-1", id).unwrap();
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
            remove_tree(&home, t.path(), "scratch-1", id),
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
        assert!(remove_tree(&home, t.path(), "scratch-1", id).is_err());
        assert!(t.path().join("scratch-1/f").exists());
    }

    #[test]
    fn already_gone_is_fine() {
        let (t, home, id) = setup();
        fs::remove_dir(t.path().join("scratch-1")).unwrap();
        assert_eq!(
            remove_tree(&home, t.path(), "scratch-1", id).unwrap(),
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
        let mut fd = open_home(&t.path().join("scratch-1")).unwrap();
        for _ in 0..(MAX_DEPTH + 3) {
            nix::sys::stat::mkdirat(fd.as_fd(), "d", Mode::S_IRWXU).unwrap();
            fd = open_dir_nofollow(fd.as_fd(), "d").unwrap();
        }
        let e = remove_tree(&home, t.path(), "scratch-1", id).unwrap_err();
        assert!(e.to_string().contains("deeper than"), "{e}");
    }
}
