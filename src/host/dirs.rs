//! The directory handle ([`Dir`]) the host works from, and creating and recognising
//! the job's directories under `$HOME`.
//!
//! Called with the user's effective uid (slurmstepd's `user_init`), so the kernel's own
//! permission checks apply; names are resolved relative to the home directory handle
//! with `O_NOFOLLOW`, so a planted symbolic link is refused, never followed.

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::fcntl::{openat, OFlag, AT_FDCWD};
use nix::sys::stat::{fchmod, fstat, fstatat, mkdirat, FileStat, Mode, SFlag};
use serde::{Deserialize, Serialize};

use crate::rules::project::HomeSafeData;
use crate::rules::proof::{JobFacts, ProofKey, MAX_PROOF_LEN, PROOF_FILE};

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
    #[error("cannot write the job's proof {path}: {errno}")]
    Proof { path: String, errno: Errno },
    #[error("{path} is not a directory of the job's user; scratch is not made there")]
    NotTheUsers { path: String },
}

/// The type bits of a `st_mode` (`S_IFDIR`, `S_IFREG`, ...).
pub fn file_type(mode: u32) -> SFlag {
    SFlag::from_bits_truncate(mode) & SFlag::S_IFMT
}

/// Whether a `st_mode` is a directory's.
pub fn is_dir(mode: u32) -> bool {
    file_type(mode) == SFlag::S_IFDIR
}

/// An open directory and the path it was opened by. Every operation works from the
/// handle with names relative to it, following no link (`O_NOFOLLOW`,
/// `AT_SYMLINK_NOFOLLOW`); the path is for messages and for the paths of what is made
/// there.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

impl AsFd for Dir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Dir {
    /// Opens `path`, an administrator's path (a home from the password database, the
    /// site's `runtime_dir` or scratch root): links in it are followed, as the caller's
    /// identity allows.
    pub fn open(path: &Path) -> Result<Dir, DirError> {
        let fd = openat(
            AT_FDCWD,
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| DirError::Home {
            path: path.display().to_string(),
            errno,
        })?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// Opens the directory `name` in this one; a symbolic link there is refused
    /// (`ELOOP` or `ENOTDIR`), never followed.
    pub fn open_child(&self, name: &str) -> nix::Result<Dir> {
        Ok(Dir {
            fd: open_dir_nofollow(self, name)?,
            path: self.path.join(name),
        })
    }

    /// The path it was opened by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of `name` in it, as messages show it.
    pub fn shown(&self, name: &str) -> String {
        self.path.join(name).display().to_string()
    }

    /// Creates `name` with mode 0700 and returns its identity. An existing entry of
    /// any kind is an error: it is never adopted.
    pub fn create_private(&self, name: &str) -> Result<DirId, DirError> {
        let path = self.shown(name);
        match mkdirat(self.as_fd(), name, Mode::S_IRWXU) {
            Ok(()) => {}
            Err(Errno::EEXIST) => return Err(DirError::Exists { path }),
            Err(errno) => return Err(DirError::Create { path, errno }),
        }
        let fd = open_dir_nofollow(self, name).map_err(|errno| DirError::Create {
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

    /// Confirms that `name` is still the directory `expected` (not a link, not a swap).
    pub fn confirm(&self, name: &str, expected: DirId) -> Result<(), DirError> {
        match fstatat(self.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if is_dir(st.st_mode) && DirId::of(&st) == expected => Ok(()),
            _ => Err(DirError::Replaced {
                path: self.shown(name),
            }),
        }
    }

    /// What `safe_data` in this (home) directory is.
    pub fn probe_safe_data(&self) -> HomeSafeData {
        match fstatat(self.as_fd(), "safe_data", AtFlags::empty()) {
            Ok(st) if is_dir(st.st_mode) => HomeSafeData::Directory,
            Ok(_) => HomeSafeData::NotADirectory,
            Err(_) => match fstatat(self.as_fd(), "safe_data", AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(_) => HomeSafeData::DanglingLink,
                Err(_) => HomeSafeData::Absent,
            },
        }
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
        .map(|st| is_dir(st.st_mode))
        .unwrap_or(false)
}

/// Opens the directory `name` in `parent`; a symbolic link there is refused (`ELOOP`),
/// never followed.
pub fn open_dir_nofollow(parent: impl AsFd, name: &str) -> nix::Result<OwnedFd> {
    openat(
        parent.as_fd(),
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// The job's two directories under `$HOME`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobDirIds {
    pub outputs: DirId,
    pub scratch: DirId,
}

/// Whether this step made the directories or found them made for this job by another
/// step (on another node, or starting at the same moment on this one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Created,
    Joined,
}

/// How long a step that finds `outputs-N` already there waits for the step that
/// created it to finish `scratch-N` and its proof (normally a few milliseconds).
pub const JOIN_WAIT: Duration = Duration::from_secs(10);
const JOIN_POLL: Duration = Duration::from_millis(50);

/// A scratch root of the site: `scratch-N` goes into `<root>/<user>`.
#[derive(Debug, Clone, Copy)]
pub struct ScratchIn<'a> {
    pub root: &'a Path,
    pub user: &'a str,
}

/// Names and facts of one job's directories.
pub struct JobDirSpec<'a> {
    pub home: &'a Path,
    pub outputs: &'a str,
    pub scratch: &'a str,
    /// `None`: scratch in `home`.
    pub scratch_in: Option<ScratchIn<'a>>,
    pub facts: JobFacts,
    pub key: &'a ProofKey,
}

impl JobDirSpec<'_> {
    /// The directory holding `scratch`.
    pub fn scratch_parent(&self) -> std::path::PathBuf {
        match &self.scratch_in {
            None => self.home.to_path_buf(),
            Some(s) => s.root.join(s.user),
        }
    }
}

/// Opens the user's directory in a scratch root, as the user: `<root>/<user>`, which
/// must be a directory (never a link) owned by `uid`. With `create`, a missing one is
/// made (mode 0700), which works where the user may write the root (a sticky
/// world-writable root such as a node-local /local/scratch).
pub fn open_scratch_parent(s: ScratchIn, uid: u32, create: bool) -> Result<Dir, DirError> {
    let path = s.root.join(s.user).display().to_string();
    let root = Dir::open(s.root)?;
    let dir = match root.open_child(s.user) {
        Err(Errno::ENOENT) if create => {
            match mkdirat(root.as_fd(), s.user, Mode::S_IRWXU) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(errno) => return Err(DirError::Create { path, errno }),
            }
            root.open_child(s.user)
        }
        other => other,
    }
    .map_err(|errno| match errno {
        Errno::ELOOP | Errno::ENOTDIR => DirError::NotTheUsers { path: path.clone() },
        errno => DirError::Home {
            path: path.clone(),
            errno,
        },
    })?;
    match fstat(dir.as_fd()) {
        Ok(st) if is_dir(st.st_mode) && st.st_uid == uid => Ok(dir),
        _ => Err(DirError::NotTheUsers { path }),
    }
}

/// Creates the job's directories, or joins them when another step of the same job
/// created them (see [`crate::rules::proof`]). Anything else already at either name is
/// refused, never adopted. `home` is the open `spec.home`. Runs as the user.
pub fn create_or_join(
    home: &Dir,
    spec: &JobDirSpec,
    wait: Duration,
) -> Result<(JobDirIds, Origin), DirError> {
    let scratch_root = match spec.scratch_in {
        None => None,
        Some(s) => Some(open_scratch_parent(s, spec.facts.uid, true)?),
    };
    let scratch_parent = scratch_root.as_ref().unwrap_or(home);
    let outputs = match home.create_private(spec.outputs) {
        Ok(id) => id,
        Err(DirError::Exists { path }) => return join(spec, wait, path),
        Err(e) => return Err(e),
    };
    // Leave nothing half-made: what this step created is new and empty.
    let undo = |with_scratch: bool| {
        if with_scratch {
            let _ = nix::unistd::unlinkat(
                scratch_parent,
                spec.scratch,
                nix::unistd::UnlinkatFlags::RemoveDir,
            );
        }
        let _ = nix::unistd::unlinkat(home, spec.outputs, nix::unistd::UnlinkatFlags::RemoveDir);
    };
    let scratch = match scratch_parent.create_private(spec.scratch) {
        Ok(id) => id,
        Err(e) => {
            undo(false);
            return Err(e);
        }
    };
    let line = spec.key.line(&spec.facts, outputs.ino, scratch.ino);
    if let Err(e) = write_proof(scratch_parent, spec, scratch, &line) {
        let _ = open_dir_nofollow(scratch_parent, spec.scratch).and_then(|fd| {
            nix::unistd::unlinkat(&fd, PROOF_FILE, nix::unistd::UnlinkatFlags::NoRemoveDir)
        });
        undo(true);
        return Err(e);
    }
    Ok((JobDirIds { outputs, scratch }, Origin::Created))
}

fn write_proof(
    scratch_parent: impl AsFd,
    spec: &JobDirSpec,
    scratch: DirId,
    line: &str,
) -> Result<(), DirError> {
    let path = spec
        .scratch_parent()
        .join(spec.scratch)
        .join(PROOF_FILE)
        .display()
        .to_string();
    write_new_read_only_file(
        scratch_parent,
        spec.scratch,
        scratch,
        PROOF_FILE,
        line.as_bytes(),
    )
    .map_err(|errno| DirError::Proof { path, errno })
}

/// Reads the proof-sized regular file `file` in `dir`, following no link. `ENOENT`:
/// absent; `EINVAL`: not a regular file or too long; `EAGAIN`: reading failed.
pub fn read_proof_file(dir: impl AsFd, file: &str) -> Result<Vec<u8>, Errno> {
    // O_NONBLOCK: a FIFO planted under the name must not hang the step.
    let fd = openat(
        dir.as_fd(),
        file,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let st = fstat(fd.as_fd())?;
    if file_type(st.st_mode) != SFlag::S_IFREG || st.st_size > MAX_PROOF_LEN as i64 {
        return Err(Errno::EINVAL);
    }
    let mut content = Vec::with_capacity(MAX_PROOF_LEN);
    std::fs::File::from(fd)
        .take(MAX_PROOF_LEN as u64 + 1)
        .read_to_end(&mut content)
        .map_err(|_| Errno::EAGAIN)?;
    Ok(content)
}

/// Writes `content` to a new file `file` (mode 0400, never an existing one) in the
/// directory `dir` of `parent`, which must still be the directory `expected`.
pub fn write_new_read_only_file(
    parent: impl AsFd,
    dir: &str,
    expected: DirId,
    file: &str,
    content: &[u8],
) -> Result<(), Errno> {
    let dir = open_dir_nofollow(parent, dir)?;
    if DirId::of(&fstat(dir.as_fd())?) != expected {
        return Err(Errno::ESTALE);
    }
    let fd = openat(
        dir.as_fd(),
        file,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::S_IRUSR,
    )?;
    std::fs::File::from(fd)
        .write_all(content)
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
}

/// Why a join attempt did not succeed: still waiting, or never going to.
enum NotJoined {
    Wait,
    Refuse,
}

fn join(
    spec: &JobDirSpec,
    wait: Duration,
    outputs_path: String,
) -> Result<(JobDirIds, Origin), DirError> {
    let deadline = Instant::now() + wait;
    loop {
        match try_join(spec) {
            Ok(ids) => return Ok((ids, Origin::Joined)),
            Err(NotJoined::Wait) if Instant::now() < deadline => std::thread::sleep(JOIN_POLL),
            Err(_) => return Err(DirError::Exists { path: outputs_path }),
        }
    }
}

fn try_join(spec: &JobDirSpec) -> Result<JobDirIds, NotJoined> {
    // Opened afresh each time: on NFS an open revalidates the directory, so a name
    // created on another node is seen (close-to-open consistency).
    let home = Dir::open(spec.home).map_err(|_| NotJoined::Refuse)?;
    let owned_dir = |st: &FileStat| is_dir(st.st_mode) && st.st_uid == spec.facts.uid;
    let outputs = match fstatat(&home, spec.outputs, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if owned_dir(&st) => DirId::of(&st),
        _ => return Err(NotJoined::Refuse),
    };
    let scratch_root = match spec.scratch_in {
        None => None,
        Some(s) => {
            Some(open_scratch_parent(s, spec.facts.uid, false).map_err(|_| NotJoined::Wait)?)
        }
    };
    let scratch_parent = scratch_root.as_ref().unwrap_or(&home);
    let scratch_fd = match open_dir_nofollow(scratch_parent, spec.scratch) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Err(NotJoined::Wait),
        Err(_) => return Err(NotJoined::Refuse),
    };
    let scratch = match fstat(scratch_fd.as_fd()) {
        Ok(st) if owned_dir(&st) => DirId::of(&st),
        _ => return Err(NotJoined::Refuse),
    };
    let content = match read_proof_file(scratch_fd.as_fd(), PROOF_FILE) {
        Ok(content) => content,
        Err(Errno::ENOENT | Errno::EAGAIN) => return Err(NotJoined::Wait),
        Err(_) => return Err(NotJoined::Refuse),
    };
    // A proof being written is short for a moment: wait, then refuse.
    if !spec
        .key
        .verifies(&content, &spec.facts, outputs.ino, scratch.ino)
    {
        return Err(NotJoined::Wait);
    }
    Ok(JobDirIds { outputs, scratch })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_a_private_directory_once() {
        let t = tempfile::tempdir().unwrap();
        let home = Dir::open(t.path()).unwrap();
        let id = home.create_private("outputs-1234567").unwrap();
        let meta = std::fs::metadata(t.path().join("outputs-1234567")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o700);
        home.confirm("outputs-1234567", id).unwrap();
        let again = home.create_private("outputs-1234567").unwrap_err();
        assert!(again.to_string().contains("already exists"), "{again}");
    }

    #[test]
    fn a_dir_handle_stays_on_the_directory_it_opened() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("home")).unwrap();
        let home = Dir::open(&t.path().join("home")).unwrap();
        assert_eq!(home.path(), t.path().join("home"));
        assert_eq!(
            home.shown("outputs-1"),
            format!("{}/home/outputs-1", t.path().display())
        );
        // Renamed away and replaced: the handle still works on the directory it opened,
        // and what it makes lands there, not at the path.
        std::fs::rename(t.path().join("home"), t.path().join("moved")).unwrap();
        std::fs::create_dir(t.path().join("home")).unwrap();
        let id = home.create_private("outputs-1").unwrap();
        assert!(t.path().join("moved/outputs-1").is_dir());
        assert!(!t.path().join("home/outputs-1").exists());
        home.confirm("outputs-1", id).unwrap();
        // A child is opened as a directory, never through a link.
        let child = home.open_child("outputs-1").unwrap();
        assert_eq!(child.path(), t.path().join("home/outputs-1"));
        assert_eq!(
            DirId::of(&fstat(child.as_fd()).unwrap()),
            id,
            "the child is the directory made"
        );
        std::os::unix::fs::symlink("outputs-1", t.path().join("moved/link")).unwrap();
        // (O_DIRECTORY | O_NOFOLLOW on a link: Linux says ENOTDIR, some kernels ELOOP.)
        assert!(matches!(
            home.open_child("link"),
            Err(Errno::ELOOP | Errno::ENOTDIR)
        ));
        std::fs::write(t.path().join("moved/file"), b"x").unwrap();
        assert_eq!(home.open_child("file").unwrap_err(), Errno::ENOTDIR);
        assert!(matches!(
            home.confirm("link", id),
            Err(DirError::Replaced { .. })
        ));
        assert!(matches!(
            Dir::open(&t.path().join("absent")),
            Err(DirError::Home { .. })
        ));
    }

    #[test]
    fn file_types_from_the_mode() {
        assert!(is_dir(0o040755));
        assert!(!is_dir(0o100644));
        assert!(!is_dir(0o120777));
        assert_eq!(file_type(0o100644), SFlag::S_IFREG);
        assert_eq!(file_type(0o120777), SFlag::S_IFLNK);
        assert_eq!(file_type(0o041777), SFlag::S_IFDIR);
    }

    #[test]
    fn a_planted_symlink_is_refused_not_followed() {
        let t = tempfile::tempdir().unwrap();
        let target = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(target.path(), t.path().join("scratch-1")).unwrap();
        let home = Dir::open(t.path()).unwrap();
        assert!(matches!(
            home.create_private("scratch-1"),
            Err(DirError::Exists { .. })
        ));
        assert_eq!(std::fs::read_dir(target.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_swapped_directory_is_detected() {
        let t = tempfile::tempdir().unwrap();
        let home = Dir::open(t.path()).unwrap();
        let id = home.create_private("scratch-2").unwrap();
        std::fs::rename(t.path().join("scratch-2"), t.path().join("moved")).unwrap();
        std::fs::create_dir(t.path().join("scratch-2")).unwrap();
        assert!(home.confirm("scratch-2", id).is_err());
        std::fs::remove_dir(t.path().join("scratch-2")).unwrap();
        std::os::unix::fs::symlink(t.path().join("moved"), t.path().join("scratch-2")).unwrap();
        assert!(home.confirm("scratch-2", id).is_err());
    }

    #[test]
    fn home_safe_data_kinds() {
        let t = tempfile::tempdir().unwrap();
        let home = Dir::open(t.path()).unwrap();
        assert_eq!(home.probe_safe_data(), HomeSafeData::Absent);
        std::os::unix::fs::symlink("/nonexistent/x", t.path().join("safe_data")).unwrap();
        assert_eq!(home.probe_safe_data(), HomeSafeData::DanglingLink);
        std::fs::remove_file(t.path().join("safe_data")).unwrap();
        std::fs::write(t.path().join("safe_data"), b"x").unwrap();
        assert_eq!(home.probe_safe_data(), HomeSafeData::NotADirectory);
        std::fs::remove_file(t.path().join("safe_data")).unwrap();
        std::fs::create_dir(t.path().join("safe_data")).unwrap();
        assert_eq!(home.probe_safe_data(), HomeSafeData::Directory);
    }

    fn spec<'a>(home: &'a Path, key: &'a ProofKey, job_id: u32) -> JobDirSpec<'a> {
        JobDirSpec {
            home,
            outputs: "outputs-7654321",
            scratch: "scratch-7654321",
            scratch_in: None,
            facts: JobFacts {
                job_id,
                restart_count: 0,
                submitted: 1_764_640_000,
                uid: nix::unistd::geteuid().as_raw(),
                number: 7_654_321,
            },
            key,
        }
    }

    const SHORT: Duration = Duration::from_millis(300);

    fn make(s: &JobDirSpec, wait: Duration) -> Result<(JobDirIds, Origin), DirError> {
        create_or_join(&Dir::open(s.home)?, s, wait)
    }

    #[test]
    fn a_second_step_of_the_job_joins_what_the_first_created() {
        let t = tempfile::tempdir().unwrap();
        let key = ProofKey::derive(b"secret").unwrap();
        let (ids, origin) = make(&spec(t.path(), &key, 9), SHORT).unwrap();
        assert_eq!(origin, Origin::Created);
        let proof = t.path().join("scratch-7654321").join(PROOF_FILE);
        let meta = std::fs::metadata(&proof).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o400);
        let (again, origin) = make(&spec(t.path(), &key, 9), SHORT).unwrap();
        assert_eq!((again, origin), (ids, Origin::Joined));
        // Another job with the same NUMBER (or another key) is refused.
        let e = make(&spec(t.path(), &key, 10), SHORT).unwrap_err();
        assert!(e.to_string().ends_with("outputs-7654321 already exists; tre-spank never reuses a directory it did not create for this job"), "{e}");
        let other_key = ProofKey::derive(b"other").unwrap();
        assert!(make(&spec(t.path(), &other_key, 9), SHORT).is_err());
        // A later job with the same id (ids wrapped, the controller was reset).
        let mut later = spec(t.path(), &key, 9);
        later.facts.submitted += 1;
        assert!(make(&later, SHORT).is_err());
    }

    #[test]
    fn steps_starting_together_make_the_directories_once() {
        let t = tempfile::tempdir().unwrap();
        let key = ProofKey::derive(b"secret").unwrap();
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| make(&spec(t.path(), &key, 9), JOIN_WAIT)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap().unwrap())
                .collect()
        });
        let created = results
            .iter()
            .filter(|(_, o)| *o == Origin::Created)
            .count();
        assert_eq!(created, 1);
        assert!(results.iter().all(|(ids, _)| *ids == results[0].0));
    }

    #[test]
    fn directories_without_a_valid_proof_are_never_joined() {
        let t = tempfile::tempdir().unwrap();
        let key = ProofKey::derive(b"secret").unwrap();
        let s = spec(t.path(), &key, 9);
        // Planted by the user before the job: no proof.
        std::fs::create_dir(t.path().join(s.outputs)).unwrap();
        std::fs::create_dir(t.path().join(s.scratch)).unwrap();
        let started = Instant::now();
        assert!(make(&s, SHORT).is_err());
        assert!(started.elapsed() >= SHORT);
        // A proof copied from elsewhere names other inodes.
        let copied = key.line(&s.facts, 1, 2);
        std::fs::write(t.path().join(s.scratch).join(PROOF_FILE), copied).unwrap();
        assert!(make(&s, SHORT).is_err());
        // A FIFO under the proof's name is refused at once, not waited on.
        std::fs::remove_file(t.path().join(s.scratch).join(PROOF_FILE)).unwrap();
        nix::unistd::mkfifo(&t.path().join(s.scratch).join(PROOF_FILE), Mode::S_IRWXU).unwrap();
        let started = Instant::now();
        assert!(make(&s, JOIN_WAIT).is_err());
        assert!(started.elapsed() < JOIN_WAIT);
        // A symbolic link at scratch is refused at once.
        std::fs::remove_dir_all(t.path().join(s.scratch)).unwrap();
        std::os::unix::fs::symlink("/tmp", t.path().join(s.scratch)).unwrap();
        let started = Instant::now();
        assert!(make(&s, JOIN_WAIT).is_err());
        assert!(started.elapsed() < JOIN_WAIT);
    }

    #[test]
    fn scratch_in_a_scratch_root_is_made_joined_and_guarded() {
        let t = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let key = ProofKey::derive(b"secret").unwrap();
        let mut s = spec(t.path(), &key, 9);
        s.scratch_in = Some(ScratchIn {
            root: root.path(),
            user: "u",
        });
        let (ids, origin) = make(&s, SHORT).unwrap();
        assert_eq!(origin, Origin::Created);
        assert!(t.path().join(s.outputs).is_dir());
        assert!(!t.path().join(s.scratch).exists());
        let scratch = root.path().join("u").join(s.scratch);
        assert!(scratch.join(PROOF_FILE).is_file());
        assert_eq!(
            std::fs::metadata(root.path().join("u"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        assert_eq!(make(&s, SHORT).unwrap(), (ids, Origin::Joined));
        // The user's directory there replaced by a link: refused, nothing made through it.
        let other = tempfile::tempdir().unwrap();
        std::fs::rename(root.path().join("u"), root.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(other.path(), root.path().join("u")).unwrap();
        let mut s2 = spec(t.path(), &key, 9);
        s2.outputs = "outputs-1";
        s2.scratch = "scratch-1";
        s2.scratch_in = s.scratch_in;
        let e = make(&s2, SHORT).unwrap_err();
        assert!(
            e.to_string()
                .contains("is not a directory of the job's user"),
            "{e}"
        );
        assert_eq!(std::fs::read_dir(other.path()).unwrap().count(), 0);
        // Another owner's directory under the user's name: refused.
        let e = open_scratch_parent(
            ScratchIn {
                root: root.path(),
                user: "moved",
            },
            s.facts.uid + 1,
            false,
        )
        .unwrap_err();
        assert!(matches!(e, DirError::NotTheUsers { .. }), "{e}");
    }

    #[test]
    fn a_failed_scratch_leaves_no_outputs_behind() {
        let t = tempfile::tempdir().unwrap();
        let key = ProofKey::derive(b"secret").unwrap();
        let s = spec(t.path(), &key, 9);
        std::os::unix::fs::symlink("/nonexistent", t.path().join(s.scratch)).unwrap();
        assert!(make(&s, SHORT).is_err());
        assert!(!t.path().join(s.outputs).exists());
    }
}
