//! Files root acts on (the config, the job-number secret, the `tool_path` every
//! container task runs) must be root's: owned by root (or by the account a daemon's
//! file belongs to, such as munge's key) and writable by nobody else, along every
//! directory of the path they lead to. Otherwise a user who can write one of them
//! chooses what root reads or what every job runs.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::unistd::User;

use super::dirs::is_dir;

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
        why: Untrusted,
    },
}

/// Why root does not trust a file or directory (see [`check_owned`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Untrusted {
    /// Owned by `uid`, not by `want` (the first trusted owner) nor another trusted one.
    #[error("owned by uid {uid}, not {}", if *.want == 0 { "root".to_string() } else { format!("uid {}", .want) })]
    Owner { uid: u32, want: u32 },
    /// Its group or everyone can write it (`mode`: its permission bits).
    #[error("writable by {} (mode {:04o})", if .mode & 0o002 != 0 { "everyone" } else { "its group" }, .mode & 0o7777)]
    Writable { mode: u32 },
    /// Not a directory (a symbolic link is not one: it is never followed).
    #[error("not a directory")]
    NotADirectory,
}

/// The one ownership check of what root acts on: owned by one of `owners` (root is not
/// implied: `&[0]` for root's), and writable by neither its group nor others. With
/// `sticky_ok`, a root-owned sticky directory others can write is fine (`/tmp`:
/// others cannot rename or remove root's entries in it). `uid` and `mode` are the
/// `st_uid` and `st_mode` of a `stat` (std's `MetadataExt` or nix's `FileStat`).
pub fn check_owned(uid: u32, mode: u32, owners: &[u32], sticky_ok: bool) -> Result<(), Untrusted> {
    if !owners.contains(&uid) {
        let want = owners.first().copied().unwrap_or(0);
        return Err(Untrusted::Owner { uid, want });
    }
    let sticky_root_dir = sticky_ok && uid == 0 && is_dir(mode) && mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !sticky_root_dir {
        return Err(Untrusted::Writable { mode });
    }
    Ok(())
}

/// A directory (`meta` from `symlink_metadata`: a link is not one) owned by `owner`
/// and writable by nobody else: the state directory, the runtime directories' parent,
/// the site image store's directories.
pub fn check_owned_dir(meta: &std::fs::Metadata, owner: u32) -> Result<(), Untrusted> {
    if !meta.is_dir() {
        return Err(Untrusted::NotADirectory);
    }
    check_owned(meta.uid(), meta.mode(), &[owner], false)
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
    let owners: Vec<u32> = std::iter::once(0)
        .chain(
            owners_by_name
                .iter()
                .filter_map(|n| User::from_name(n).ok().flatten())
                .map(|u| u.uid.as_raw()),
        )
        .collect();
    let mut at: Option<&Path> = Some(&real);
    let mut kind = "file";
    while let Some(p) = at {
        let m = std::fs::metadata(p).map_err(unreadable)?;
        if let Err(why) = check_owned(m.uid(), m.mode(), &owners, true) {
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

    fn why(uid: u32, mode: u32, owners: &[u32], sticky_ok: bool) -> Option<String> {
        check_owned(uid, mode, owners, sticky_ok)
            .err()
            .map(|e| e.to_string())
    }

    #[test]
    fn only_a_trusted_owner_and_nobody_else_writing() {
        assert_eq!(why(0, 0o100644, &[0], true), None);
        assert_eq!(why(0, 0o040755, &[0], false), None);
        assert_eq!(why(105, 0o100400, &[0, 105], true), None);
        assert_eq!(
            why(1001, 0o100644, &[0, 105], true).as_deref(),
            Some("owned by uid 1001, not root")
        );
        assert_eq!(
            why(0, 0o100664, &[0], true).as_deref(),
            Some("writable by its group (mode 0664)")
        );
        assert_eq!(
            why(0, 0o040777, &[0], true).as_deref(),
            Some("writable by everyone (mode 0777)")
        );
        assert_eq!(
            why(0, 0o040757, &[0], true).as_deref(),
            Some("writable by everyone (mode 0757)")
        );
        // Root is not implied: a directory the plugin's user must own.
        assert_eq!(
            why(0, 0o040700, &[1001], false).as_deref(),
            Some("owned by uid 0, not uid 1001")
        );
        assert_eq!(why(1001, 0o040700, &[1001], false), None);
    }

    #[test]
    fn a_sticky_directory_only_where_allowed_and_only_roots() {
        // /tmp: root's and sticky, fine on the way to a file.
        assert_eq!(why(0, 0o041777, &[0], true), None);
        // Not for a directory root keeps its own entries in (others could plant names).
        assert_eq!(
            check_owned(0, 0o041777, &[0], false),
            Err(Untrusted::Writable { mode: 0o041777 })
        );
        // The sticky bit makes a file nothing.
        assert_eq!(
            why(0, 0o101666, &[0], true).as_deref(),
            Some("writable by everyone (mode 1666)")
        );
        assert_eq!(
            why(1001, 0o041777, &[0, 1001], true).as_deref(),
            Some("writable by everyone (mode 1777)")
        );
        assert_eq!(
            why(1001, 0o041777, &[0], true).as_deref(),
            Some("owned by uid 1001, not root")
        );
    }

    #[test]
    fn an_owned_directory_is_a_directory_not_a_link_and_nobody_elses() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let me = nix::unistd::geteuid().as_raw();
        let dir = t.path().join("d");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let meta = |p: &Path| std::fs::symlink_metadata(p).unwrap();
        assert_eq!(check_owned_dir(&meta(&dir), me), Ok(()));
        assert_eq!(
            check_owned_dir(&meta(&dir), me + 1),
            Err(Untrusted::Owner {
                uid: me,
                want: me + 1
            })
        );
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o770)).unwrap();
        assert_eq!(
            check_owned_dir(&meta(&dir), me),
            Err(Untrusted::Writable { mode: 0o040770 })
        );
        let link = t.path().join("l");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert_eq!(
            check_owned_dir(&meta(&link), me),
            Err(Untrusted::NotADirectory)
        );
        let file = t.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(
            check_owned_dir(&meta(&file), me),
            Err(Untrusted::NotADirectory)
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
