//! Node-local, root-owned records of what the plugin created for each job, so that
//! cleanup removes exactly that (device and inode) and nothing a user put in its place.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::dirs::DirId;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRecord {
    pub job_id: u32,
    pub uid: u32,
    pub number: u32,
    pub home: PathBuf,
    pub outputs: DirId,
    pub scratch: DirId,
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
        let euid = nix::unistd::geteuid().as_raw();
        if !meta.is_dir() || meta.uid() != euid || meta.mode() & 0o022 != 0 {
            return Err(StateError::Unsafe(path.to_path_buf()));
        }
        Ok(StateDir {
            path: path.to_path_buf(),
        })
    }

    fn record_path(&self, job_id: u32) -> PathBuf {
        self.path.join(format!("job-{job_id}.toml"))
    }

    pub fn load(&self, job_id: u32) -> Result<Option<JobRecord>, StateError> {
        let path = self.record_path(job_id);
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

    /// Writes the record atomically (temporary file, then rename).
    pub fn save(&self, record: &JobRecord) -> Result<(), StateError> {
        let path = self.record_path(record.job_id);
        let tmp = self
            .path
            .join(format!(".job-{}.{}.tmp", record.job_id, std::process::id()));
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

    /// Job ids that have a record.
    pub fn jobs(&self) -> Result<Vec<u32>, StateError> {
        let mut ids: Vec<u32> = std::fs::read_dir(&self.path)
            .map_err(io(&self.path))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_prefix("job-")?
                    .strip_suffix(".toml")?
                    .parse()
                    .ok()
            })
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(job_id: u32) -> JobRecord {
        JobRecord {
            job_id,
            uid: 1001,
            number: 1234567,
            home: "/home/alice".into(),
            outputs: DirId { dev: 1, ino: 2 },
            scratch: DirId { dev: 1, ino: 3 },
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
