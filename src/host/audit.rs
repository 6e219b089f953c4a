//! Sends audit records to the local syslog socket (`/dev/log`) through the `syslog`
//! crate: RFC 5424, facility authpriv, severity info, APP-NAME `tre-spank`, MSGID the
//! event's number, the record's fields as structured data, and the message
//! `tre-spank-audit` (the fields are not repeated there: that would double a record,
//! and small syslog daemons such as busybox's cut long datagrams). Format:
//! docs/audit-log.md.
//!
//! The socket is written directly (a datagram per record) rather than through
//! openlog/syslog(3): those change process-wide state of slurmstepd, which has its own
//! logging. A missing syslog daemon is not an error for the job: the record still goes
//! to the slurmd log (the caller logs it there too) and the failure is returned for
//! that log.

use std::path::{Path, PathBuf};

use syslog::{Facility, Formatter5424};

use crate::host::job;
use crate::rules::audit::{structured_data, Event, StructuredData, TAG};

pub const SYSLOG_SOCKET: &str = "/dev/log";

/// The APP-NAME of every record.
pub const APP_NAME: &str = "tre-spank";

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot reach the syslog socket {}: {source}", .socket.display())]
    Connect {
        socket: PathBuf,
        source: syslog::Error,
    },
    #[error("cannot send to the syslog socket {}: {source}", .socket.display())]
    Send {
        socket: PathBuf,
        source: syslog::Error,
    },
}

/// The RFC 5424 formatter of this process's records: this host's name (the daemon
/// would otherwise write `localhost`), this process's id.
pub fn formatter() -> Formatter5424 {
    let host = job::node_name();
    Formatter5424 {
        facility: Facility::LOG_AUTHPRIV,
        hostname: (!host.is_empty()).then_some(host),
        process: APP_NAME.to_string(),
        pid: std::process::id(),
    }
}

/// The message (MSGID, structured data, MSG) the formatter writes for one record.
pub fn message(event: Event, fields: &[(&str, String)]) -> (u32, StructuredData, &'static str) {
    (event.msg_id(), structured_data(event, fields), TAG)
}

pub fn send_to(socket: &Path, event: Event, fields: &[(&str, String)]) -> Result<(), AuditError> {
    let mut logger =
        syslog::unix_custom(formatter(), socket).map_err(|source| AuditError::Connect {
            socket: socket.to_path_buf(),
            source,
        })?;
    logger
        .info(message(event, fields))
        .map_err(|source| AuditError::Send {
            socket: socket.to_path_buf(),
            source,
        })
}

pub fn send(event: Event, fields: &[(&str, String)]) -> Result<(), AuditError> {
    send_to(Path::new(SYSLOG_SOCKET), event, fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::audit::SD_ID;
    use std::os::unix::net::UnixDatagram;

    fn fields() -> Vec<(&'static str, String)> {
        vec![
            ("job", "1".into()),
            ("user", "alice".into()),
            ("project", String::new()),
            ("reason", "a \"quoted\" ] \\ line\nforged".into()),
        ]
    }

    #[test]
    fn a_record_reaches_a_datagram_socket_as_rfc_5424() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("log");
        let server = UnixDatagram::bind(&path).unwrap();
        send_to(&path, Event::Refused, &fields()).unwrap();
        let mut buf = [0u8; 2048];
        let n = server.recv(&mut buf).unwrap();
        let got = std::str::from_utf8(&buf[..n]).unwrap();
        // <PRI>VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG; authpriv.info
        // is 10 * 8 + 6.
        let words: Vec<&str> = got.splitn(7, ' ').collect();
        assert_eq!(words[0], "<86>1", "{got}");
        assert!(
            words[1].ends_with('Z') && words[1].starts_with("20"),
            "{got}"
        );
        assert_eq!(words[3], "tre-spank");
        assert_eq!(words[4], std::process::id().to_string());
        assert_eq!(words[5], "3");
        let rest = words[6];
        let sd = format!(
            "[{SD_ID} event=\"refused\" job=\"1\" project=\"\" reason=\"a \\\"quoted\\\" \\] \\\\\\\\ line\\\\x0aforged\" user=\"alice\"]"
        );
        assert_eq!(rest, format!("{sd} tre-spank-audit"));
        assert!(!got.contains('\n'), "{got}");
    }

    #[test]
    fn no_daemon_is_an_error_not_a_panic() {
        let t = tempfile::tempdir().unwrap();
        let e = send_to(&t.path().join("absent"), Event::Start, &fields()).unwrap_err();
        assert!(
            e.to_string().starts_with("cannot reach the syslog socket "),
            "{e}"
        );
    }
}
