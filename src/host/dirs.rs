//! Creating and recognising the job's directories under `$HOME`.
//!
//! Called with the user's effective uid (slurmstepd's `user_init`), so the kernel's own
//! permission checks apply; names are resolved relative to the home directory handle
//! with `O_NOFOLLOW`, so a planted symbolic link is refused, never followed.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::fcntl::{openat, OFlag, AT_FDCWD};
use nix::sys::stat::{fchmod, fstat, fstatat, mkdirat, FileStat, Mode, SFlag};
use serde::{Deserialize, Serialize};

use crate::rules::project::HomeSafeData;

/// A directory's identity: a path can be swapped, device and inode cannot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirId {
    pub dev: u64,
    pub ino: u64,
}

impl DirId {
    pub fn of(st: &FileStat) -> DirId {
        DirId {
            dev: st.st_dev,
            ino: st.st_ino,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("cannot open home directory {path}: {errno}")]
    Home { path: String, errno: Errno },
    #[error(
        "{path} already exists; tre-spank never reuses a directory it did not create for this job"
    )]
    Exists { path: String },
    #[error("cannot create {path}: {errno}")]
    Create { path: String, errno: Errno },
    #[error("{path} is not the directory this job created")]
    Replaced { path: String },
}

fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

/// Opens the home directory named by the password database (an administrator's path).
pub fn open_home(home: &Path) -> Result<OwnedFd, DirError> {
    openat(
        AT_FDCWD,
        home,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| DirError::Home {
        path: home.display().to_string(),
        errno,
    })
}

/// What `$HOME/safe_data` is.
pub fn probe_home_safe_data(home: impl AsFd) -> HomeSafeData {
    match fstatat(home.as_fd(), "safe_data", AtFlags::empty()) {
        Ok(st) if is_dir(&st) => HomeSafeData::Directory,
        Ok(_) => HomeSafeData::NotADirectory,
        Err(_) => match fstatat(home.as_fd(), "safe_data", AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(_) => HomeSafeData::DanglingLink,
            Err(_) => HomeSafeData::Absent,
        },
    }
}

/// Whether the calling (effective) user can open `dir` as a directory.
pub fn can_open_dir(dir: &Path) -> bool {
    openat(
        AT_FDCWD,
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .is_ok()
}

/// Whether `path` is a directory (for project lookup; follows no user-controlled link
/// since the safe_data root and its entries belong to the site).
pub fn is_directory(path: &Path) -> bool {
    nix::sys::stat::stat(path)
        .map(|st| is_dir(&st))
        .unwrap_or(false)
}

/// Creates `name` in `parent` with mode 0700 and returns its identity. An existing
/// entry of any kind is an error: it is never adopted.
pub fn create_private_dir(
    parent: impl AsFd,
    parent_path: &Path,
    name: &str,
) -> Result<DirId, DirError> {
    let path = parent_path.join(name).display().to_string();
    match mkdirat(parent.as_fd(), name, Mode::S_IRWXU) {
        Ok(()) => {}
        Err(Errno::EEXIST) => return Err(DirError::Exists { path }),
        Err(errno) => return Err(DirError::Create { path, errno }),
    }
    let fd = openat(
        parent.as_fd(),
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| DirError::Create {
        path: path.clone(),
        errno,
    })?;
    // mkdir's mode is filtered by the umask; the contract is exactly 0700.
    fchmod(fd.as_fd(), Mode::S_IRWXU).map_err(|errno| DirError::Create {
        path: path.clone(),
        errno,
    })?;
    let st = fstat(fd.as_fd()).map_err(|errno| DirError::Create { path, errno })?;
    Ok(DirId::of(&st))
}

/// Confirms that `parent/name` is still the directory `expected` (not a link, not a swap).
pub fn confirm_dir(
    parent: impl AsFd,
    parent_path: &Path,
    name: &str,
    expected: DirId,
) -> Result<(), DirError> {
    let path = parent_path.join(name).display().to_string();
    match fstatat(parent.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if is_dir(&st) && DirId::of(&st) == expected => Ok(()),
        _ => Err(DirError::Replaced { path }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_a_private_directory_once() {
        let t = tempfile::tempdir().unwrap();
        let home = open_home(t.path()).unwrap();
        let id = create_private_dir(&home, t.path(), "outputs-1234567").unwrap();
        let meta = std::fs::metadata(t.path().join("outputs-1234567")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o700);
        confirm_dir(&home, t.path(), "outputs-1234567", id).unwrap();
        let again = create_private_dir(&home, t.path(), "outputs-1234567").unwrap_err();
        assert!(again.to_string().contains("already exists"), "{again}");
    }

    #[test]
    fn a_planted_symlink_is_refused_not_followed() {
        let t = tempfile::tempdir().unwrap();
        let target = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(target.path(), t.path().join("scratch-1")).unwrap();
        let home = open_home(t.path()).unwrap();
        assert!(matches!(
            create_private_dir(&home, t.path(), "scratch-1"),
            Err(DirError::Exists { .. })
        ));
        assert_eq!(std::fs::read_dir(target.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_swapped_directory_is_detected() {
        let t = tempfile::tempdir().unwrap();
        let home = open_home(t.path()).unwrap();
        let id = create_private_dir(&home, t.path(), "scratch-2").unwrap();
        std::fs::rename(t.path().join("scratch-2"), t.path().join("moved")).unwrap();
        std::fs::create_dir(t.path().join("scratch-2")).unwrap();
        assert!(confirm_dir(&home, t.path(), "scratch-2", id).is_err());
        std::fs::remove_dir(t.path().join("scratch-2")).unwrap();
        std::os::unix::fs::symlink(t.path().join("moved"), t.path().join("scratch-2")).unwrap();
        assert!(confirm_dir(&home, t.path(), "scratch-2", id).is_err());
    }

    #[test]
    fn home_safe_data_kinds() {
        let t = tempfile::tempdir().unwrap();
        let home = open_home(t.path()).unwrap();
        assert_eq!(probe_home_safe_data(&home), HomeSafeData::Absent);
        std::os::unix::fs::symlink("/nonexistent/x", t.path().join("safe_data")).unwrap();
        assert_eq!(probe_home_safe_data(&home), HomeSafeData::DanglingLink);
        std::fs::remove_file(t.path().join("safe_data")).unwrap();
        std::fs::write(t.path().join("safe_data"), b"x").unwrap();
        assert_eq!(probe_home_safe_data(&home), HomeSafeData::NotADirectory);
        std::fs::remove_file(t.path().join("safe_data")).unwrap();
        std::fs::create_dir(t.path().join("safe_data")).unwrap();
        assert_eq!(probe_home_safe_data(&home), HomeSafeData::Directory);
    }
}
