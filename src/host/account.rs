//! The job's user as the password and group databases see them (never the job's
//! environment, which the user controls).

use std::path::PathBuf;

use nix::unistd::{Gid, Group, Uid, User};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    pub primary_group: String,
    pub supplementary_groups: Vec<String>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum AccountError {
    #[error("cannot look up uid {uid}: {source}")]
    Lookup { uid: u32, source: nix::Error },
    #[error("uid {0} is not in the password database")]
    Unknown(u32),
    #[error("the home directory of {0} is not an absolute path")]
    BadHome(String),
    #[error("cannot look up user {name}: {source}")]
    LookupName { name: String, source: nix::Error },
    #[error("no user {0} in the password database")]
    NoSuchUser(String),
}

fn group_name(gid: u32) -> String {
    match Group::from_gid(Gid::from_raw(gid)) {
        Ok(Some(g)) => g.name,
        // An unnamed group cannot name a project; keep it visible in messages.
        _ => gid.to_string(),
    }
}

/// `supplementary_gids` are the job's, as Slurm's credential gives them.
pub fn lookup(uid: u32, gid: u32, supplementary_gids: &[u32]) -> Result<Account, AccountError> {
    let user = User::from_uid(Uid::from_raw(uid))
        .map_err(|source| AccountError::Lookup { uid, source })?
        .ok_or(AccountError::Unknown(uid))?;
    if !user.dir.is_absolute() {
        return Err(AccountError::BadHome(user.name));
    }
    Ok(Account {
        name: user.name,
        uid,
        gid,
        home: user.dir,
        primary_group: group_name(gid),
        supplementary_groups: supplementary_gids
            .iter()
            .filter(|g| **g != gid)
            .map(|g| group_name(*g))
            .collect(),
    })
}

/// The account with its groups from the group database (where Slurm gives none: the
/// submission side, and `tre-spank plan`).
pub fn lookup_with_group_database(uid: u32) -> Result<Account, AccountError> {
    let (gid, gids) = group_database_ids(uid)?;
    lookup(uid, gid, &gids)
}

/// The primary gid and every gid the group database gives `uid`.
fn group_database_ids(uid: u32) -> Result<(u32, Vec<u32>), AccountError> {
    let user = User::from_uid(Uid::from_raw(uid))
        .map_err(|source| AccountError::Lookup { uid, source })?
        .ok_or(AccountError::Unknown(uid))?;
    let name =
        std::ffi::CString::new(user.name.as_bytes()).map_err(|_| AccountError::Unknown(uid))?;
    let gids: Vec<u32> = nix::unistd::getgrouplist(&name, user.gid)
        .map_err(|source| AccountError::Lookup { uid, source })?
        .into_iter()
        .map(|g| g.as_raw())
        .collect();
    Ok((user.gid.as_raw(), gids))
}

/// The uid, gid and groups of a user by name, as Slurm's credential carries them by
/// default (the group database's). For `tre-spank plan`.
pub fn ids_by_name(name: &str) -> Result<(u32, u32, Vec<u32>), AccountError> {
    let user = User::from_name(name)
        .map_err(|source| AccountError::LookupName {
            name: name.to_string(),
            source,
        })?
        .ok_or_else(|| AccountError::NoSuchUser(name.to_string()))?;
    let uid = user.uid.as_raw();
    let (gid, gids) = group_database_ids(uid)?;
    Ok((uid, gid, gids))
}

/// The account by name, with the groups the group database gives it.
pub fn lookup_name(name: &str) -> Result<Account, AccountError> {
    let (uid, gid, gids) = ids_by_name(name)?;
    lookup(uid, gid, &gids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_found_with_its_home() {
        let a = lookup(0, 0, &[0]).unwrap();
        assert_eq!(a.name, "root");
        assert!(a.home.is_absolute());
        assert!(a.supplementary_groups.is_empty());
    }

    #[test]
    fn groups_come_from_the_group_database() {
        let a = lookup_with_group_database(0).unwrap();
        assert_eq!(a.primary_group, "root");
    }

    #[test]
    fn an_unknown_user_name_says_so() {
        assert_eq!(
            lookup_name("no-such-user-here").unwrap_err().to_string(),
            "no user no-such-user-here in the password database"
        );
    }

    #[test]
    fn unknown_uid_is_an_error() {
        assert!(matches!(
            lookup(3_999_999_999, 0, &[]),
            Err(AccountError::Unknown(_))
        ));
    }
}
