//! The privileged edge: accounts, directories under users' homes, removal, the
//! node-local job records, the site image store and the files root trusts.
//!
//! Two kinds of tree, two ways of working:
//!
//! - **Trees a user can write** (homes: `outputs-N`, `scratch-N`, `safe_data`, the
//!   proof and outputs record files, `--tre-inputs`; a scratch root's `<user>`
//!   directories; the per-job runtime directory the user owns) are worked on from a
//!   directory handle, [`dirs::Dir`]: names relative to it, no symbolic link followed
//!   (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`, `openat2` in [`remove`]), and a directory's
//!   identity (device and inode, [`dirs::DirId`]) checked before it is used or removed.
//!   A user can rename, swap or plant entries there at any moment; a path would be
//!   resolved again each time.
//! - **Trees only root writes** (the state directory, `runtime_dir` itself, the site
//!   image store, the config, the secret and `tool_path`) are worked on by path. Each
//!   is first checked by the one ownership check, [`trust::check_owned`] /
//!   [`trust::check_owned_dir`] (owned by root or the plugin's user, writable by
//!   nobody else, the config and the other trusted files along every directory of
//!   their path): with nobody else able to write along the path, it cannot change
//!   under root. A file an administrator loads into the store (`tre-spank image load`)
//!   must be root's too, and is opened component by component, following no link.

pub mod account;
pub mod as_user;
pub mod audit;
pub mod check;
pub mod cleanup;
pub mod config_file;
pub mod conmon;
pub mod devices;
pub mod dirs;
pub mod image_store;
pub mod inputs;
pub mod interrupt;
pub mod job;
pub mod launch;
pub mod liveness;
pub mod log;
pub mod podman_version;
pub mod poll;
pub mod remove;
pub mod runtime_dir;
pub mod state;
pub mod step;
pub mod sweep;
pub mod trust;
pub mod userns;
