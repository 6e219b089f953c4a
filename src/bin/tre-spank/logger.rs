//! The tool's `log` backend: every record to stderr as a `tre-spank: MESSAGE` line, the
//! prefix from `rules::vocab::prefixed` (as in the plugin's backend). No environment
//! variable changes it (the tool runs as root, and inside slurmstepd with the job's
//! environment cleared or not).

use std::io::Write;

use log::{LevelFilter, Log, Metadata, Record};
use tre_spank::rules::vocab::prefixed;

struct Stderr;

static STDERR: Stderr = Stderr;

impl Log for Stderr {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::Level::Info
    }

    fn log(&self, record: &Record) {
        if self.enabled(record.metadata()) {
            // Nothing to do if stderr is gone.
            let _ = writeln!(std::io::stderr().lock(), "{}", prefixed(record.args()));
        }
    }

    fn flush(&self) {}
}

/// Installs the backend (once; a second call changes nothing).
pub fn init() {
    if log::set_logger(&STDERR).is_ok() {
        log::set_max_level(LevelFilter::Info);
    }
}
