//! The plugin's log backend: [`crate::host::log::Logger`] with Slurm's log as its sink
//! (slurmd's log on the node; Slurm filters by its own debug level).

use log::{Level, LevelFilter};
use slurm_spank::{spank_log, LogLevel};

use crate::host::log::Logger;

fn to_slurm(level: Level, line: &str) {
    let level = match level {
        Level::Error | Level::Warn => LogLevel::Error,
        Level::Info => LogLevel::Info,
        Level::Debug => LogLevel::Verbose,
        Level::Trace => LogLevel::Debug,
    };
    spank_log(level, line);
}

static SLURM: Logger = Logger::new(to_slurm);

/// Sends this process's `log` records to Slurm's log.
pub fn install() {
    SLURM.install(LevelFilter::Trace);
}
