//! `--tre-inputs`: earlier jobs' outputs directories, mounted read-only under `/inputs`.
//!
//! When tre-spank creates `outputs-N` it writes a record into it (see
//! [`crate::rules::proof::OUTPUTS_RECORD_FILE`]) naming the user, the NUMBER and the
//! directory's inode, signed with the key derived from the site secret. A later job of
//! the same user may mount `outputs-N` only if the record there verifies: a directory
//! the user made, one of another user's, a symbolic link or a copy carries no valid
//! record. Runs with the user's effective uid (`user_init`), relative to the home
//! directory handle, following no link.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::{fstat, fstatat, SFlag};

use super::dirs::{file_type, open_dir_nofollow, read_proof_file, write_new_read_only_file, DirId};
use crate::rules::plan::outputs_name;
use crate::rules::proof::{ProofKey, OUTPUTS_RECORD_FILE};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InputError {
    #[error("--tre-inputs: {path} does not exist")]
    Missing { path: String },
    #[error("--tre-inputs: {path} is a symbolic link; only outputs directories tre-spank created for your jobs can be inputs")]
    Link { path: String },
    #[error("--tre-inputs: {path} is not a directory")]
    NotADirectory { path: String },
    #[error("--tre-inputs: {path} belongs to another user")]
    NotYours { path: String },
    #[error("--tre-inputs: {path} is not an outputs directory tre-spank created for your jobs (no valid record {OUTPUTS_RECORD_FILE} in it)")]
    NotMade { path: String },
    #[error("--tre-inputs: {path} is this job's own outputs directory")]
    Own { path: String },
    #[error("--tre-inputs: cannot read {path}: {errno}")]
    Unreadable { path: String, errno: Errno },
    #[error("cannot write the outputs record {path}: {errno}")]
    Write { path: String, errno: Errno },
}

/// Writes the record into the `outputs` directory this step just created (`id`).
pub fn write_outputs_record(
    home: impl AsFd,
    home_path: &Path,
    number: u32,
    id: DirId,
    uid: u32,
    key: &ProofKey,
) -> Result<(), InputError> {
    let name = outputs_name(number);
    let path = home_path
        .join(&name)
        .join(OUTPUTS_RECORD_FILE)
        .display()
        .to_string();
    let line = key.outputs_line(uid, number, id.ino);
    write_new_read_only_file(home, &name, id, OUTPUTS_RECORD_FILE, line.as_bytes())
        .map_err(|errno| InputError::Write { path, errno })
}

/// Checks every requested `outputs-N` in the user's home; returns their host paths.
pub fn check_inputs(
    home: impl AsFd,
    home_path: &Path,
    numbers: &[u32],
    own_number: u32,
    uid: u32,
    key: &ProofKey,
) -> Result<Vec<PathBuf>, InputError> {
    let home = home.as_fd();
    numbers
        .iter()
        .map(|&n| check_one(home, home_path, n, own_number, uid, key))
        .collect()
}

fn check_one(
    home: impl AsFd,
    home_path: &Path,
    number: u32,
    own_number: u32,
    uid: u32,
    key: &ProofKey,
) -> Result<PathBuf, InputError> {
    let name = outputs_name(number);
    let host = home_path.join(&name);
    let path = host.display().to_string();
    if number == own_number {
        return Err(InputError::Own { path });
    }
    let st = match fstatat(home.as_fd(), name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Err(InputError::Missing { path }),
        Err(errno) => return Err(InputError::Unreadable { path, errno }),
    };
    if file_type(st.st_mode) == SFlag::S_IFLNK {
        return Err(InputError::Link { path });
    }
    if file_type(st.st_mode) != SFlag::S_IFDIR {
        return Err(InputError::NotADirectory { path });
    }
    if st.st_uid != uid {
        return Err(InputError::NotYours { path });
    }
    let dir = open_dir_nofollow(home, &name).map_err(|errno| InputError::Unreadable {
        path: path.clone(),
        errno,
    })?;
    let st = fstat(dir.as_fd()).map_err(|errno| InputError::Unreadable {
        path: path.clone(),
        errno,
    })?;
    if st.st_uid != uid {
        return Err(InputError::NotYours { path });
    }
    match read_proof_file(dir.as_fd(), OUTPUTS_RECORD_FILE) {
        Ok(content) if key.outputs_verifies(&content, uid, number, st.st_ino) => Ok(host),
        _ => Err(InputError::NotMade { path }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::dirs::Dir;

    fn uid() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    #[test]
    fn only_recorded_outputs_of_this_user_are_inputs() {
        let t = tempfile::tempdir().unwrap();
        let key = ProofKey::derive(b"secret").unwrap();
        let home = Dir::open(t.path()).unwrap();
        let id = home.create_private("outputs-11").unwrap();
        write_outputs_record(&home, t.path(), 11, id, uid(), &key).unwrap();
        let got = check_inputs(&home, t.path(), &[11], 99, uid(), &key).unwrap();
        assert_eq!(got, vec![t.path().join("outputs-11")]);
        let show = |n: &str| t.path().join(n).display().to_string();
        // The job's own outputs, a missing one.
        assert_eq!(
            check_inputs(&home, t.path(), &[11], 11, uid(), &key),
            Err(InputError::Own {
                path: show("outputs-11")
            })
        );
        assert_eq!(
            check_inputs(&home, t.path(), &[11, 12], 99, uid(), &key),
            Err(InputError::Missing {
                path: show("outputs-12")
            })
        );
        // A directory the user made, with a record copied from a real one.
        std::fs::create_dir(t.path().join("outputs-12")).unwrap();
        std::fs::copy(
            t.path().join("outputs-11").join(OUTPUTS_RECORD_FILE),
            t.path().join("outputs-12").join(OUTPUTS_RECORD_FILE),
        )
        .unwrap();
        assert_eq!(
            check_inputs(&home, t.path(), &[12], 99, uid(), &key),
            Err(InputError::NotMade {
                path: show("outputs-12")
            })
        );
        // A real one renamed to another NUMBER.
        std::fs::remove_dir_all(t.path().join("outputs-12")).unwrap();
        std::fs::rename(t.path().join("outputs-11"), t.path().join("outputs-12")).unwrap();
        assert!(matches!(
            check_inputs(&home, t.path(), &[12], 99, uid(), &key),
            Err(InputError::NotMade { .. })
        ));
        // A symbolic link to a real one; a file; another key; a FIFO record.
        std::fs::rename(t.path().join("outputs-12"), t.path().join("outputs-11")).unwrap();
        std::os::unix::fs::symlink(t.path().join("outputs-11"), t.path().join("outputs-13"))
            .unwrap();
        assert_eq!(
            check_inputs(&home, t.path(), &[13], 99, uid(), &key),
            Err(InputError::Link {
                path: show("outputs-13")
            })
        );
        std::fs::write(t.path().join("outputs-14"), b"x").unwrap();
        assert_eq!(
            check_inputs(&home, t.path(), &[14], 99, uid(), &key),
            Err(InputError::NotADirectory {
                path: show("outputs-14")
            })
        );
        let other = ProofKey::derive(b"other").unwrap();
        assert!(check_inputs(&home, t.path(), &[11], 99, uid(), &other).is_err());
        assert!(check_inputs(&home, t.path(), &[11], 99, uid() + 1, &key).is_err());
        std::fs::create_dir(t.path().join("outputs-15")).unwrap();
        nix::unistd::mkfifo(
            &t.path().join("outputs-15").join(OUTPUTS_RECORD_FILE),
            nix::sys::stat::Mode::S_IRWXU,
        )
        .unwrap();
        assert_eq!(
            check_inputs(&home, t.path(), &[15], 99, uid(), &key),
            Err(InputError::NotMade {
                path: show("outputs-15")
            })
        );
        // The record is written once, read-only for the user.
        assert!(write_outputs_record(&home, t.path(), 11, id, uid(), &key).is_err());
    }
}
