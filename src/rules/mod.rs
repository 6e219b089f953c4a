pub mod config;
pub mod image;
pub mod job_number;
pub mod options;
pub mod project;
