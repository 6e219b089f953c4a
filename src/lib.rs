//! tre-spank: a Slurm SPANK plugin that runs Trusted Research Environment jobs in
//! rootless containers with the project's data, a kept outputs directory and a scratch
//! directory mounted in.
//!
//! - [`rules`]: what a job gets, decided from facts; knows nothing of Slurm.
//! - [`host`]: the privileged edge (accounts, directories, removal, job records).
//! - `spank`: the thin SPANK layer, one module per Slurm context.

pub mod host;
pub mod rules;

#[cfg(feature = "plugin")]
mod spank;
