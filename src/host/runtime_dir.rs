//! Per-job runtime state for rootless podman: its storage on node-local disk
//! (`runtime_dir`) and its run state on a small per-job tmpfs (`run_dir`).
//!
//! Rootless podman keeps its run state, its per-user pause process's pid file and the
//! pid files of running containers under `$XDG_RUNTIME_DIR`. When a job is killed, the
//! job's cgroup (and with it the pause process) goes, but that state would stay and
//! break the user's next job ("invalid internal status"). Each job therefore gets its
//! own directories, created by root under root-owned parents, owned by the user, and
//! removed by the epilog once the job's processes are gone.
//!
//! The run state is written at every container start (podman's database with
//! `--transient-store`, lock and pid files, the container's `/etc/hosts`,
//! `/etc/resolv.conf` and `/etc/hostname`, which the container can write): in memory,
//! and on a tmpfs of its own per job with a fixed size, so that no job fills `/run` or
//! the node's memory through it.

use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, Flock, FlockArg, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{fstat, fstatat, mkdirat, Mode};
use nix::unistd::{fchownat, Gid, Uid};

use super::dirs::{is_dir, Dir, DirId};
use super::remove::{job_owners, RemoveError, RemoveReport};
use super::state::StateError;
use super::trust::check_owned_dir;
use crate::rules::plan::job_dir_name;

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
    #[error("cannot mount the job's tmpfs on {path}: {errno}")]
    Mount { path: PathBuf, errno: Errno },
}

/// The size of a job's run state tmpfs. podman's own use is a few hundred KiB (its
/// database, lock, pid and exit files, the container's `/etc/hosts`); the rest bounds
/// what a container can write there. The container's `/dev/shm` is a tmpfs of its own
/// (`podman.shm_size`), not this one.
pub const RUN_TMPFS_OPTIONS: &str = "size=16m,nr_inodes=4096";

/// The job's runtime directory under `root` (`runtime_dir`), whether it exists or not.
pub fn job_dir(root: &Path, job_id: u32) -> PathBuf {
    root.join(job_dir_name(job_id))
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
    check_owned_dir(&meta, Uid::effective().as_raw())
        .map_err(|_| RuntimeDirError::Parent(StateError::Unsafe(root.to_path_buf())))?;
    Ok(())
}

/// Creates (or, for a later step of the same job, finds) the job's runtime directory.
pub fn ensure(root: &Path, job_id: u32, uid: u32, gid: u32) -> Result<PathBuf, RuntimeDirError> {
    open_parent(root)?;
    let parent = Dir::open(root).map_err(|_| RuntimeDirError::NotOurs {
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
            if !is_dir(st.st_mode) || st.st_uid != uid {
                return Err(RuntimeDirError::NotOurs { path });
            }
        }
        Err(errno) => return Err(RuntimeDirError::Create { path, errno }),
    }
    Ok(path)
}

/// Creates (or finds) the job's directory under `root` as [`ensure`] does, with a
/// tmpfs of [`RUN_TMPFS_OPTIONS`] mounted on it (the user's, mode 0700, no set-id
/// files or devices). A later step of the job finds the mount; two steps starting at
/// once mount it once (under a lock on the root-owned parent).
pub fn ensure_tmpfs(
    root: &Path,
    job_id: u32,
    uid: u32,
    gid: u32,
) -> Result<PathBuf, RuntimeDirError> {
    let path = ensure(root, job_id, uid, gid)?;
    let parent = Dir::open(root).map_err(|_| RuntimeDirError::NotOurs {
        path: root.to_path_buf(),
    })?;
    let mount_error = |errno| RuntimeDirError::Mount {
        path: path.clone(),
        errno,
    };
    let lock_fd = parent
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| mount_error(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))))?;
    let _lock = Flock::lock(std::fs::File::from(lock_fd), FlockArg::LockExclusive)
        .map_err(|(_, errno)| mount_error(errno))?;
    let name = job_dir_name(job_id);
    // The entry is the one `ensure` made (the parent is root's; users cannot rename
    // in it); opened without following a link, and mounted on through its handle.
    let dir = openat(
        parent.as_fd(),
        name.as_str(),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(mount_error)?;
    let on = fstat(dir.as_fd()).map_err(mount_error)?;
    let below = fstat(parent.as_fd()).map_err(mount_error)?;
    if on.st_dev != below.st_dev {
        // An earlier step of the job mounted it.
        if on.st_uid != uid {
            return Err(RuntimeDirError::NotOurs { path });
        }
        return Ok(path);
    }
    let target = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&dir));
    let options = format!("{RUN_TMPFS_OPTIONS},mode=0700,uid={uid},gid={gid}");
    mount(
        Some("tre-spank-run"),
        target.as_str(),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(options.as_str()),
    )
    .map_err(mount_error)?;
    Ok(path)
}

/// Removes the job's directory under `root` made by [`ensure_tmpfs`]: unmounts the
/// tmpfs (what is in it goes with it), then removes the directory as [`remove`] does.
/// Unmounted lazily: a process of the job still holding it (there should be none at
/// the epilog) keeps only its own reference.
pub fn remove_tmpfs(root: &Path, job_id: u32) -> Result<RemoveReport, RuntimeDirError> {
    let path = job_dir(root, job_id);
    // Stacked mounts are not made (see ensure_tmpfs), but a bounded loop costs nothing.
    for _ in 0..4 {
        match umount2(&path, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
            Ok(()) => continue,
            // Not a mount point (never mounted, or mounted in another mount namespace),
            // or no such directory.
            Err(Errno::EINVAL) | Err(Errno::ENOENT) => break,
            // Not root: nothing of ours can be mounted there (unit tests, `--help` runs).
            Err(Errno::EPERM) if !Uid::effective().is_root() => break,
            Err(errno) => return Err(RuntimeDirError::Mount { path, errno }),
        }
    }
    remove(root, job_id)
}

/// Removes the job's runtime directory, if any (the parent is root's, so the entry
/// there is the one `ensure` made).
pub fn remove(root: &Path, job_id: u32) -> Result<RemoveReport, RuntimeDirError> {
    let parent = match Dir::open(root) {
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
    Ok(parent.remove_tree(&name, id, &job_owners(uid))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

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
    #[ignore = "needs root: mounts a tmpfs, in a mount namespace of this test's own"]
    fn run_state_gets_one_bounded_tmpfs_that_goes_with_the_job() {
        use nix::sched::{unshare, CloneFlags};
        // This thread's own mount namespace: nothing mounted here is seen elsewhere.
        unshare(CloneFlags::CLONE_NEWNS).unwrap();
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .unwrap();
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("run");
        let dir = ensure_tmpfs(&root, 7, 1001, 1001).unwrap();
        let fs = nix::sys::statfs::statfs(&dir).unwrap();
        assert_eq!(fs.filesystem_type(), nix::sys::statfs::TMPFS_MAGIC);
        assert_eq!(fs.blocks() * fs.block_size() as u64, 16 << 20, "16 MiB");
        let meta = std::fs::metadata(&dir).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (1001, 1001, 0o700)
        );
        std::fs::write(dir.join("db.sql"), b"x").unwrap();
        // A later step finds it (no second mount over the first).
        assert_eq!(ensure_tmpfs(&root, 7, 1001, 1001).unwrap(), dir);
        assert!(
            dir.join("db.sql").exists(),
            "the first mount is still the one seen"
        );
        // More than the limit: no space, whoever writes.
        let big = std::fs::write(dir.join("fill"), vec![0u8; 17 << 20]);
        assert_eq!(big.unwrap_err().raw_os_error(), Some(libc::ENOSPC));
        // This thread's mount namespace, not the process's.
        let mountinfo = || std::fs::read_to_string("/proc/thread-self/mountinfo").unwrap();
        assert_eq!(mountinfo().matches(dir.to_str().unwrap()).count(), 1);
        remove_tmpfs(&root, 7).unwrap();
        assert!(!dir.exists());
        assert!(!mountinfo().contains(dir.to_str().unwrap()));
        assert_eq!(remove_tmpfs(&root, 7).unwrap(), RemoveReport::default());
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
