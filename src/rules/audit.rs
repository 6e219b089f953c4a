//! Audit records: one line per event, `key=value` pairs in a fixed order, so that
//! syslog filters and log shippers can parse them (format: docs/audit-log.md).
//!
//! Values come partly from the job (image, requested project, error text): they are
//! quoted and escaped so that no value can forge another field or another record.

use std::time::{SystemTime, UNIX_EPOCH};

/// First word of every record's message.
pub const TAG: &str = "tre-spank-audit";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A container task starts (slurmstepd, per task).
    Start,
    /// It ended, with its exit status.
    End,
    /// A container job or step was refused (at submission or on the node).
    Refused,
}

impl Event {
    pub fn name(self) -> &'static str {
        match self {
            Event::Start => "start",
            Event::End => "end",
            Event::Refused => "refused",
        }
    }
}

/// One record: `tre-spank-audit event=E key=value ...`.
pub fn format_record(event: Event, fields: &[(&str, String)]) -> String {
    let mut line = format!("{TAG} event={}", event.name());
    for (key, value) in fields {
        line.push(' ');
        line.push_str(key);
        line.push('=');
        line.push_str(&quote(value));
    }
    line
}

/// Bare when plain; otherwise in double quotes with `"`, `\` and every control or
/// non-ASCII byte escaped (`\"`, `\\`, `\xNN`).
pub fn quote(value: &str) -> String {
    let plain = |b: u8| b.is_ascii_graphic() && !matches!(b, b'"' | b'\\' | b'=');
    if !value.is_empty() && value.bytes().all(plain) {
        return value.to_string();
    }
    let mut out = String::from("\"");
    for b in value.bytes() {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b' ' | b'=' => out.push(b as char),
            b if b.is_ascii_graphic() => out.push(b as char),
            b => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push('"');
    out
}

/// A line for slurmd's log: every control byte (newline, carriage return, escape,
/// ...) of a file name or user value escaped as `\xNN`, so that no value can start a
/// forged log line or rewrite the terminal of whoever reads the log.
pub fn log_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("\\x{b:02x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `YYYY-MM-DDTHH:MM:SSZ` (UTC).
pub fn utc_time(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A task's wait status as `exit=N` or `signal=N`.
pub fn exit_fields(wait_status: i32) -> (&'static str, String) {
    if libc::WIFSIGNALED(wait_status) {
        ("signal", libc::WTERMSIG(wait_status).to_string())
    } else {
        ("exit", libc::WEXITSTATUS(wait_status).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn records_are_one_line_of_ordered_fields() {
        let r = format_record(
            Event::Start,
            &[
                ("job", "12".into()),
                ("user", "alice".into()),
                ("project", String::new()),
                ("image", "ghcr.io/a/b:1".into()),
            ],
        );
        assert_eq!(
            r,
            "tre-spank-audit event=start job=12 user=alice project=\"\" image=ghcr.io/a/b:1"
        );
    }

    #[test]
    fn hostile_values_cannot_forge_fields_or_lines() {
        let r = format_record(
            Event::Refused,
            &[("reason", "x\" user=root\nfake=1 \\ é".into())],
        );
        assert_eq!(
            r,
            "tre-spank-audit event=refused reason=\"x\\\" user=root\\x0afake=1 \\\\ \\xc3\\xa9\""
        );
        assert!(!r.contains('\n'));
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(utc_time(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_651_200 + 3_723);
        assert_eq!(utc_time(t), "2026-11-26T01:02:03Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(utc_time(leap), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn exit_statuses() {
        assert_eq!(exit_fields(3 << 8), ("exit", "3".to_string()));
        assert_eq!(exit_fields(9), ("signal", "9".to_string()));
        assert_eq!(exit_fields(0), ("exit", "0".to_string()));
    }

    #[test]
    fn log_lines_cannot_be_forged() {
        assert_eq!(log_line("plain /home/alice/x y"), "plain /home/alice/x y");
        assert_eq!(
            log_line("x\n[2026-12-01T00:00:00] error: forged\r\u{1b}[2J"),
            "x\\x0a[2026-12-01T00:00:00] error: forged\\x0d\\x1b[2J"
        );
        assert_eq!(log_line("caf\u{e9} \u{85}"), "caf\u{e9} \\xc2\\x85");
    }
}
