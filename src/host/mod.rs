//! The privileged edge: accounts, directories under users' homes, removal, and the
//! node-local job records. Everything works from directory handles and never follows
//! a symbolic link the user could have planted.

pub mod account;
pub mod as_user;
pub mod audit;
pub mod check;
pub mod cleanup;
pub mod config_file;
pub mod devices;
pub mod dirs;
pub mod image_store;
pub mod inputs;
pub mod interrupt;
pub mod job;
pub mod launch;
pub mod liveness;
pub mod podman_version;
pub mod remove;
pub mod runtime_dir;
pub mod state;
pub mod sweep;
pub mod trust;
