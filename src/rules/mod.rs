//! The rules of a TRE container job, free of Slurm and of the filesystem: options,
//! config, project resolution, the job's directories and mounts, runtime command lines.
//! Everything here is unit-tested without root.

pub mod archive;
pub mod audit;
pub mod config;
pub mod image;
pub mod image_store;
pub mod job_number;
pub mod liveness;
pub mod options;
pub mod plan;
pub mod plugstack;
pub mod project;
pub mod proof;
pub mod runtime;
pub mod subid;
pub mod vocab;
