//! Files root acts on (the config, the job-number secret, the `tool_path` every
//! container task runs) must be root's: owned by root (or by the account a daemon's
//! file belongs to, such as munge's key) and writable by nobody else, along every
//! directory of the path they lead to. Otherwise a user who can write one of them
//! chooses what root reads or what every job runs.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::unistd::User;

/// Accounts trusted to own the job-number secret besides root: the default secret is
/// munge's key, which munge owns.
pub const SECRET_OWNERS: &[&str] = &["munge"];

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{what} {}: {source}", .path.display())]
    Unreadable {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {}: {} {} is {why}", .path.display(), .kind, .at.display())]
    Untrusted {
        what: &'static str,
        path: PathBuf,
        /// "file" or "directory".
        kind: &'static str,
        /// The file itself, or the directory on its way that is not root's.
        at: PathBuf,
        why: String,
    },
}

/// Why a file or directory with this owner and mode is not trusted (`None`: it is).
/// `owners` are the accounts trusted besides root. A root-owned sticky directory
/// (`/tmp`) is fine on the way: others cannot rename or remove root's entries in it.
pub fn ownership_problem(uid: u32, mode: u32, owners: &[u32]) -> Option<String> {
    if uid != 0 && !owners.contains(&uid) {
        return Some(format!("owned by uid {uid}, not root"));
    }
    let sticky_root_dir = uid == 0 && mode & 0o170000 == 0o040000 && mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !sticky_root_dir {
        return Some(format!(
            "writable by {} (mode {:04o})",
            if mode & 0o002 != 0 {
                "everyone"
            } else {
                "its group"
            },
            mode & 0o7777
        ));
    }
    None
}

/// Checks `path` (links followed: the file they lead to, and every directory of that
/// path). `owners_by_name` are accounts trusted besides root (absent ones are ignored).
pub fn check_file(
    what: &'static str,
    path: &Path,
    owners_by_name: &[&str],
) -> Result<(), TrustError> {
    let unreadable = |source| TrustError::Unreadable {
        what,
        path: path.to_path_buf(),
        source,
    };
    let real = std::fs::canonicalize(path).map_err(unreadable)?;
    let owners: Vec<u32> = owners_by_name
        .iter()
        .filter_map(|n| User::from_name(n).ok().flatten())
        .map(|u| u.uid.as_raw())
        .collect();
    let mut at: Option<&Path> = Some(&real);
    let mut kind = "file";
    while let Some(p) = at {
        let m = std::fs::metadata(p).map_err(unreadable)?;
        if let Some(why) = ownership_problem(m.uid(), m.mode(), &owners) {
            return Err(TrustError::Untrusted {
                what,
                path: path.to_path_buf(),
                kind,
                at: p.to_path_buf(),
                why,
            });
        }
        kind = "directory";
        at = p.parent();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_root_or_a_trusted_owner_and_nobody_else_writing() {
        assert_eq!(ownership_problem(0, 0o100644, &[]), None);
        assert_eq!(ownership_problem(0, 0o040755, &[]), None);
        assert_eq!(ownership_problem(105, 0o100400, &[105]), None);
        assert_eq!(
            ownership_problem(1001, 0o100644, &[105]).as_deref(),
            Some("owned by uid 1001, not root")
        );
        assert_eq!(
            ownership_problem(0, 0o100664, &[]).as_deref(),
            Some("writable by its group (mode 0664)")
        );
        assert_eq!(
            ownership_problem(0, 0o040777, &[]).as_deref(),
            Some("writable by everyone (mode 0777)")
        );
        // /tmp: root's and sticky.
        assert_eq!(ownership_problem(0, 0o041777, &[]), None);
        assert_eq!(
            ownership_problem(0, 0o101666, &[]).as_deref(),
            Some("writable by everyone (mode 1666)")
        );
        assert_eq!(
            ownership_problem(1001, 0o041777, &[]).as_deref(),
            Some("owned by uid 1001, not root")
        );
    }

    #[test]
    fn a_file_others_can_write_is_not_trusted() {
        let f = std::env::temp_dir().join(format!("tre-trust-test-{}", std::process::id()));
        std::fs::write(&f, b"x").unwrap();
        std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
        let r = check_file("config", &f, &[]);
        std::fs::remove_file(&f).unwrap();
        let e = r.unwrap_err().to_string();
        assert!(
            e.contains("is writable by everyone (mode 0666)") || e.contains("not root"),
            "{e}"
        );
        assert!(matches!(
            check_file("config", Path::new("/nonexistent/x"), &[]),
            Err(TrustError::Unreadable { .. })
        ));
    }
}
