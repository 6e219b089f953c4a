//! The privileged edge: accounts, directories under users' homes, removal, and the
//! node-local job records. Everything works from directory handles and never follows
//! a symbolic link the user could have planted.

pub mod account;
pub mod cleanup;
pub mod dirs;
pub mod launch;
pub mod remove;
pub mod runtime_dir;
pub mod state;
