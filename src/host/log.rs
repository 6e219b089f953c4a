//! The plugin's own log lines, through the `log` facade.
//!
//! The plugin's backend, [`Logger`]: it puts the plugin's name in front of each line once
//! ([`prefixed`], also used for the errors and notes a job shows) and escapes every
//! control byte (a file name or value with a newline must not forge a line in slurmd's
//! log, nor rewrite the terminal of whoever reads it), then hands the line to its
//! sink: Slurm's log in the plugin (`spank::log`). The tool's stderr backend
//! (`src/bin/tre-spank/logger.rs`) uses [`prefixed`] too but does not escape: its lines
//! go to an administrator's terminal and some are several lines long (clap's usage).
//!
//! Audit records (target [`AUDIT_TARGET`]) carry their own tag and go out without the
//! prefix.

use std::fmt::Display;

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::rules::audit::log_line;
pub use crate::rules::vocab::prefixed;

/// The `log` target of the audit records' copy in slurmd's log.
pub const AUDIT_TARGET: &str = "tre_spank::audit";

/// The line a log record becomes (before the sink).
pub fn format_line(target: &str, message: &dyn Display) -> String {
    if target == AUDIT_TARGET {
        log_line(&message.to_string())
    } else {
        log_line(&prefixed(message))
    }
}

/// Where the lines go.
pub type Sink = fn(Level, &str);

/// The backend: formats each record and hands it to the sink.
pub struct Logger {
    sink: Sink,
}

impl Logger {
    pub const fn new(sink: Sink) -> Logger {
        Logger { sink }
    }

    /// Makes this the process's logger (a second call changes nothing).
    pub fn install(&'static self, max: LevelFilter) {
        if log::set_logger(self).is_ok() {
            log::set_max_level(max);
        }
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            (self.sink)(record.level(), &format_line(record.target(), record.args()));
        }
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_gets_the_plugin_name_once() {
        assert_eq!(
            format_line("tre_spank::host::step", &"job 7: kept"),
            "tre-spank: job 7: kept"
        );
    }

    #[test]
    fn a_newline_in_a_value_cannot_forge_a_log_line() {
        let name = "/home/a/x\nslurmd: fake";
        assert_eq!(
            format_line("x", &format_args!("removed {name}")),
            "tre-spank: removed /home/a/x\\x0aslurmd: fake"
        );
    }

    #[test]
    fn audit_records_keep_their_own_tag() {
        assert_eq!(
            format_line(AUDIT_TARGET, &"tre-spank-audit event=start"),
            "tre-spank-audit event=start"
        );
    }

    #[test]
    fn records_reach_the_sink_as_lines() {
        use std::sync::Mutex;
        static SEEN: Mutex<Vec<(Level, String)>> = Mutex::new(Vec::new());
        fn keep(level: Level, line: &str) {
            SEEN.lock().unwrap().push((level, line.to_string()));
        }
        static KEEP: Logger = Logger::new(keep);
        log::set_max_level(LevelFilter::Info);
        KEEP.log(
            &Record::builder()
                .level(Level::Error)
                .target("t")
                .args(format_args!("cannot {}", "clean up"))
                .build(),
        );
        KEEP.log(
            &Record::builder()
                .level(Level::Debug)
                .target("t")
                .args(format_args!("hidden"))
                .build(),
        );
        assert_eq!(
            *SEEN.lock().unwrap(),
            [(Level::Error, "tre-spank: cannot clean up".to_string())]
        );
    }
}
