//! Per-job runtime state for rootless podman on node-local disk.
//!
//! Rootless podman keeps its run state, its per-user pause process's pid file and the
//! pid files of running containers under `$XDG_RUNTIME_DIR`. When a job is killed, the
//! job's cgroup (and with it the pause process) goes, but that state would stay and
//! break the user's next job ("invalid internal status"). Each job therefore gets its
//! own directory, created by root under a root-owned parent, owned by the user, and
//! removed by the epilog once the job's processes are gone.

use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::{fstatat, mkdirat, Mode};
use nix::unistd::{fchownat, Gid, Uid};

use super::dirs::{open_home, DirId};
use super::remove::{job_owners, remove_tree, RemoveError, RemoveReport};
use super::state::StateError;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeDirError {
    #[error(transparent)]
    Parent(#[from] StateError),
    #[error("cannot create {path}: {errno}")]
    Create { path: PathBuf, errno: Errno },
    #[error("{path} exists and is not this job's")]
    NotOurs { path: PathBuf },
    #[error(transparent)]
    Remove(#[from] RemoveError),
}

fn job_dir_name(job_id: u32) -> String {
    format!("job-{job_id}")
}

/// Creates the parent if needed (mode 0711: users reach their own job's directory but
/// cannot list the others) and checks it is root's and writable by nobody else.
fn open_parent(root: &Path) -> Result<(), RuntimeDirError> {
    let io = |source| {
        RuntimeDirError::Parent(StateError::Io {
            path: root.to_path_buf(),
            source,
        })
    };
    if let Some(parent) = root.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    match std::fs::create_dir(root) {
        Ok(()) => {
            std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o711)).map_err(io)?
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(e)),
    }
    let meta = std::fs::symlink_metadata(root).map_err(io)?;
    if !meta.is_dir() || meta.uid() != Uid::effective().as_raw() || meta.mode() & 0o022 != 0 {
        return Err(RuntimeDirError::Parent(StateError::Unsafe(
            root.to_path_buf(),
        )));
    }
    Ok(())
}

/// Creates (or, for a later step of the same job, finds) the job's runtime directory.
pub fn ensure(root: &Path, job_id: u32, uid: u32, gid: u32) -> Result<PathBuf, RuntimeDirError> {
    open_parent(root)?;
    let parent = open_home(root).map_err(|_| RuntimeDirError::NotOurs {
        path: root.to_path_buf(),
    })?;
    let name = job_dir_name(job_id);
    let path = root.join(&name);
    match mkdirat(parent.as_fd(), name.as_str(), Mode::S_IRWXU) {
        Ok(()) => fchownat(
            parent.as_fd(),
            name.as_str(),
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|errno| RuntimeDirError::Create {
            path: path.clone(),
            errno,
        })?,
        Err(Errno::EEXIST) => {
            let st = fstatat(parent.as_fd(), name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW).map_err(
                |errno| RuntimeDirError::Create {
                    path: path.clone(),
                    errno,
                },
            )?;
            let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
            if !is_dir || st.st_uid != uid {
                return Err(RuntimeDirError::NotOurs { path });
            }
        }
        Err(errno) => return Err(RuntimeDirError::Create { path, errno }),
    }
    Ok(path)
}

/// Removes the job's runtime directory, if any (the parent is root's, so the entry
/// there is the one `ensure` made).
pub fn remove(root: &Path, job_id: u32) -> Result<RemoveReport, RuntimeDirError> {
    let parent = match open_home(root) {
        Ok(fd) => fd,
        Err(_) => return Ok(RemoveReport::default()),
    };
    let name = job_dir_name(job_id);
    // The parent is root's and `ensure` chowned the entry: its owner is the job's user.
    let (id, uid) = match fstatat(parent.as_fd(), name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => (DirId::of(&st), st.st_uid),
        Err(Errno::ENOENT) => return Ok(RemoveReport::default()),
        Err(errno) => {
            return Err(RuntimeDirError::Create {
                path: root.join(&name),
                errno,
            })
        }
    };
    Ok(remove_tree(&parent, root, &name, id, &job_owners(uid))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_for_the_user_then_removed() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("run");
        let (uid, gid) = (Uid::effective().as_raw(), Gid::effective().as_raw());
        let dir = ensure(&root, 5, uid, gid).unwrap();
        assert_eq!(std::fs::metadata(&root).unwrap().mode() & 0o777, 0o711);
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        assert_eq!(
            ensure(&root, 5, uid, gid).unwrap(),
            dir,
            "a later step finds it"
        );
        std::fs::create_dir_all(dir.join("libpod/tmp")).unwrap();
        std::fs::write(dir.join("libpod/tmp/pause.pid"), b"1").unwrap();
        remove(&root, 5).unwrap();
        assert!(!dir.exists());
        assert_eq!(remove(&root, 5).unwrap(), RemoveReport::default());
    }

    #[test]
    fn someone_elses_entry_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("run");
        let uid = Uid::effective().as_raw();
        ensure(&root, 1, uid, 0).unwrap();
        assert!(matches!(
            ensure(&root, 1, uid + 1, 0),
            Err(RuntimeDirError::NotOurs { .. })
        ));
    }
}
