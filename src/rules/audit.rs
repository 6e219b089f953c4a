//! Audit records (format: docs/audit-log.md): one line per event, `key=value` pairs in
//! a fixed order (the slurmd log's line, and the message of the syslog record), and the
//! same fields as RFC 5424 structured data (the syslog record's, for parsers).
//!
//! Values come partly from the job (image, requested project, error text): they are
//! quoted and escaped so that no value can forge another field or another record.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// First word of every record's message.
pub const TAG: &str = "tre-spank-audit";

/// The SD-ID of the records' structured data: RFC 5424 wants `name@<private
/// enterprise number>` for ids not registered with IANA; tre-spank has no number of
/// its own and uses 32473, the one RFC 5612 reserves for documentation and examples.
pub const SD_ID: &str = "tre-spank-audit@32473";

/// RFC 5424 structured data: SD-ID, then its parameters (the `syslog` crate's
/// `StructuredData`).
pub type StructuredData = BTreeMap<String, BTreeMap<String, String>>;

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

    /// The syslog record's MSGID (the `syslog` crate writes it as a number).
    pub fn msg_id(self) -> u32 {
        match self {
            Event::Start => 1,
            Event::End => 2,
            Event::Refused => 3,
        }
    }
}

/// The record's fields as structured data: one element, [`SD_ID`], with `event` and
/// every field as parameters (values as [`sd_value`] gives them).
pub fn structured_data(event: Event, fields: &[(&str, String)]) -> StructuredData {
    let mut params = BTreeMap::new();
    params.insert("event".to_string(), event.name().to_string());
    for (key, value) in fields {
        params.insert((*key).to_string(), sd_value(value));
    }
    BTreeMap::from([(SD_ID.to_string(), params)])
}

/// A structured-data value before RFC 5424's own escaping (of `"`, `\` and `]`, which
/// the `syslog` crate adds): `\` doubled and every control character as `\xNN`, so that
/// no value breaks the record's line (a syslog daemon writes one line per record, and
/// splits a message at a newline) and the escapes read back unambiguously.
pub fn sd_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if c == '\\' {
            out.push_str("\\\\");
        } else {
            push_escaped(&mut out, c);
        }
    }
    out
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
        push_escaped(&mut out, c);
    }
    out
}

/// `c` as it is, or a control character as `\xNN` per byte of its UTF-8.
fn push_escaped(out: &mut String, c: char) {
    if c.is_control() {
        let mut buf = [0u8; 4];
        for b in c.encode_utf8(&mut buf).bytes() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    } else {
        out.push(c);
    }
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
    fn structured_data_has_every_field_and_no_line_break() {
        let sd = structured_data(
            Event::Refused,
            &[
                ("where", "submit".into()),
                ("user", "mallory".into()),
                ("reason", "x\"] user=root\nfake \\x0a caf\u{e9}".into()),
            ],
        );
        let params = &sd[SD_ID];
        assert_eq!(sd.len(), 1);
        assert_eq!(params["event"], "refused");
        assert_eq!(params["where"], "submit");
        assert_eq!(params["user"], "mallory");
        // The crate escapes `"`, `\\` and `]`; the newline and the backslash are ours.
        assert_eq!(
            params["reason"],
            "x\"] user=root\\x0afake \\\\x0a caf\u{e9}"
        );
        assert_eq!(
            params.keys().collect::<Vec<_>>(),
            ["event", "reason", "user", "where"]
        );
        assert_eq!(
            [Event::Start, Event::End, Event::Refused].map(Event::msg_id),
            [1, 2, 3]
        );
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
