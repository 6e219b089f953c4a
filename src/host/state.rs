//! Node-local, root-owned records of what the plugin created for each job, so that
//! cleanup removes exactly that (device and inode) and nothing a user put in its place.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::dirs::DirId;
use super::trust::check_owned_dir;
use crate::rules::plan::{job_dir_name, job_id_of_dir_name};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRecord {
    pub job_id: u32,
    /// The job's submit time from the controller (with `job_id`, what tells this job
    /// from an earlier one with the same id). Absent in records written before it was
    /// recorded: such a record is never this job's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted: Option<u64>,
    pub uid: u32,
    pub number: u32,
    pub home: PathBuf,
    pub outputs: DirId,
    pub scratch: DirId,
    /// The directory holding `scratch-N` when it is not `home` (`scratch_root`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scratch_parent: Option<PathBuf>,
}

impl JobRecord {
    /// Whether this record is the one a step of this job (`submitted`, `uid`, `number`)
    /// wrote on this node, rather than an earlier job's that had the same id.
    pub fn is_of(&self, submitted: u64, uid: u32, number: u32) -> bool {
        self.submitted == Some(submitted) && self.uid == uid && self.number == number
    }

    /// The directory holding `scratch-N`.
    pub fn scratch_parent(&self) -> &Path {
        self.scratch_parent.as_deref().unwrap_or(&self.home)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state directory {0} must be a directory owned by the plugin's user and not writable by others")]
    Unsafe(PathBuf),
    #[error("job record {path} is corrupt: {message}")]
    Corrupt { path: PathBuf, message: String },
}

pub struct StateDir {
    path: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl StateDir {
    /// Opens (creating with mode 0700 if absent) and checks the state directory.
    pub fn open(path: &Path) -> Result<StateDir, StateError> {
        match std::fs::create_dir(path) {
            Ok(()) => std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
                .map_err(io(path))?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(path)(e)),
        }
        let meta = std::fs::symlink_metadata(path).map_err(io(path))?;
        check_owned_dir(&meta, nix::unistd::geteuid().as_raw())
            .map_err(|_| StateError::Unsafe(path.to_path_buf()))?;
        Ok(StateDir {
            path: path.to_path_buf(),
        })
    }

    fn record_path(&self, job_id: u32) -> PathBuf {
        self.path.join(format!("{}.toml", job_dir_name(job_id)))
    }

    pub fn load(&self, job_id: u32) -> Result<Option<JobRecord>, StateError> {
        self.load_path(self.record_path(job_id))
    }

    fn load_path(&self, path: PathBuf) -> Result<Option<JobRecord>, StateError> {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        toml::from_str(&text)
            .map(Some)
            .map_err(|e| StateError::Corrupt {
                path,
                message: e.to_string(),
            })
    }

    /// Moves `record` (the one stored for its job id) aside as
    /// `retired-<job>-<number>.toml`: it belongs to an earlier job that had the same id
    /// (ids wrapped, the controller was reset, or the job was requeued), never to the job
    /// that now has the id. The sweep removes what a retired record names without
    /// asking the controller. Returns the new name; a record already moved is no error.
    pub fn retire(&self, record: &JobRecord) -> Result<String, StateError> {
        let name = format!("retired-{}-{}.toml", record.job_id, record.number);
        let to = self.path.join(&name);
        match std::fs::rename(self.record_path(record.job_id), &to) {
            Ok(()) => Ok(name),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(name),
            Err(e) => Err(io(&to)(e)),
        }
    }

    /// The names of retired records (see [`StateDir::retire`]), sorted.
    pub fn retired(&self) -> Result<Vec<String>, StateError> {
        let mut names: Vec<String> = std::fs::read_dir(&self.path)
            .map_err(io(&self.path))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("retired-") && n.ends_with(".toml") && !n.contains('/'))
            .collect();
        names.sort();
        Ok(names)
    }

    pub fn load_retired(&self, name: &str) -> Result<Option<JobRecord>, StateError> {
        self.load_path(self.path.join(name))
    }

    pub fn remove_retired(&self, name: &str) -> Result<(), StateError> {
        let path = self.path.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Writes the record atomically (temporary file, then rename).
    pub fn save(&self, record: &JobRecord) -> Result<(), StateError> {
        let path = self.record_path(record.job_id);
        let tmp = self.path.join(format!(
            ".{}.{}.tmp",
            job_dir_name(record.job_id),
            std::process::id()
        ));
        let text = toml::to_string(record).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(io(&tmp))?;
        f.write_all(text.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))
    }

    pub fn remove(&self, job_id: u32) -> Result<(), StateError> {
        let path = self.record_path(job_id);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Locks job `job_id`'s record against other cleanups on this node (an epilog's
    /// background removal, a sweep): `Ok(None)` when there is no record, or, with
    /// `wait` false, when another process holds the lock. The lock goes with the
    /// returned handle; the caller loads the record again after locking (the holder
    /// before it may have removed it).
    pub fn lock(
        &self,
        job_id: u32,
        wait: bool,
    ) -> Result<Option<nix::fcntl::Flock<std::fs::File>>, StateError> {
        use nix::fcntl::{Flock, FlockArg};
        let path = self.record_path(job_id);
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        let how = if wait {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockExclusiveNonblock
        };
        match Flock::lock(file, how) {
            Ok(lock) => Ok(Some(lock)),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) if !wait => Ok(None),
            Err((_, errno)) => Err(io(&path)(std::io::Error::from(errno))),
        }
    }

    /// Job ids that have a record.
    pub fn jobs(&self) -> Result<Vec<u32>, StateError> {
        let mut ids: Vec<u32> = std::fs::read_dir(&self.path)
            .map_err(io(&self.path))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                job_id_of_dir_name(name.strip_suffix(".toml")?)
            })
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn record(job_id: u32) -> JobRecord {
        JobRecord {
            job_id,
            submitted: Some(1_764_640_000),
            uid: 1001,
            number: 1234567,
            home: "/home/alice".into(),
            outputs: DirId { dev: 1, ino: 2 },
            scratch: DirId { dev: 1, ino: 3 },
            scratch_parent: None,
        }
    }

    #[test]
    fn records_round_trip() {
        let t = tempfile::tempdir().unwrap();
        let s = StateDir::open(&t.path().join("state")).unwrap();
        assert_eq!(s.load(7).unwrap(), None);
        s.save(&record(7)).unwrap();
        s.save(&record(9)).unwrap();
        assert_eq!(s.load(7).unwrap(), Some(record(7)));
        assert_eq!(s.jobs().unwrap(), vec![7, 9]);
        s.remove(7).unwrap();
        s.remove(7).unwrap();
        assert_eq!(s.jobs().unwrap(), vec![9]);
        let mode = std::fs::metadata(t.path().join("state")).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn a_record_of_the_previous_format_is_read_and_is_no_jobs_own() {
        // What the previous version wrote: no submit time.
        let t = tempfile::tempdir().unwrap();
        let s = StateDir::open(&t.path().join("state")).unwrap();
        std::fs::write(
            t.path().join("state/job-7.toml"),
            "job_id = 7\nuid = 1001\nnumber = 1234567\nhome = \"/home/alice\"\n[outputs]\ndev = 1\nino = 2\n[scratch]\ndev = 1\nino = 3\n",
        )
        .unwrap();
        let old = s.load(7).unwrap().unwrap();
        assert_eq!(
            old,
            JobRecord {
                submitted: None,
                ..record(7)
            }
        );
        assert_eq!(s.jobs().unwrap(), vec![7]);
        assert!(!old.is_of(1_764_640_000, 1001, 1234567));
        // A new record says when its job was submitted, and is only that job's.
        s.save(&record(8)).unwrap();
        let text = std::fs::read_to_string(t.path().join("state/job-8.toml")).unwrap();
        assert!(text.contains("submitted = 1764640000"), "{text}");
        let new = s.load(8).unwrap().unwrap();
        assert!(new.is_of(1_764_640_000, 1001, 1234567));
        assert!(
            !new.is_of(1_764_640_001, 1001, 1234567),
            "a later job, same id"
        );
        assert!(!new.is_of(1_764_640_000, 1002, 1234567));
        assert!(!new.is_of(1_764_640_000, 1001, 1234568));
    }

    #[test]
    fn a_retired_record_leaves_the_job_id_free() {
        let t = tempfile::tempdir().unwrap();
        let s = StateDir::open(&t.path().join("state")).unwrap();
        s.save(&record(7)).unwrap();
        let name = s.retire(&record(7)).unwrap();
        assert_eq!(name, "retired-7-1234567.toml");
        assert_eq!(s.retire(&record(7)).unwrap(), name, "already moved");
        assert_eq!(s.load(7).unwrap(), None);
        assert_eq!(s.jobs().unwrap(), Vec::<u32>::new());
        assert_eq!(s.retired().unwrap(), vec![name.clone()]);
        assert_eq!(s.load_retired(&name).unwrap(), Some(record(7)));
        s.remove_retired(&name).unwrap();
        assert!(s.retired().unwrap().is_empty());
    }

    #[test]
    fn a_locked_record_is_skipped_without_waiting() {
        let t = tempfile::tempdir().unwrap();
        let s = StateDir::open(&t.path().join("state")).unwrap();
        assert!(s.lock(7, false).unwrap().is_none(), "no record, no lock");
        s.save(&record(7)).unwrap();
        let held = s.lock(7, true).unwrap();
        assert!(held.is_some());
        assert!(s.lock(7, false).unwrap().is_none(), "held elsewhere");
        drop(held);
        assert!(s.lock(7, false).unwrap().is_some());
    }

    #[test]
    fn a_state_dir_others_can_write_is_refused() {
        let t = tempfile::tempdir().unwrap();
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            StateDir::open(t.path()),
            Err(StateError::Unsafe(_))
        ));
        let link = t.path().join("link");
        std::os::unix::fs::symlink("/tmp", &link).unwrap();
        assert!(StateDir::open(&link).is_err());
    }
}
