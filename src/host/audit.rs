//! Sends audit records to the local syslog socket (`/dev/log`), facility authpriv,
//! as `tre-spank[PID]: tre-spank-audit event=...`.
//!
//! The socket is written directly rather than through openlog/syslog(3): those change
//! process-wide state of slurmstepd, which has its own logging. A missing syslog
//! daemon is not an error for the job: the record still goes to the slurmd log (the
//! caller logs it there too) and the failure is returned for that log.

use std::os::unix::net::UnixDatagram;
use std::path::Path;

pub const SYSLOG_SOCKET: &str = "/dev/log";

/// LOG_AUTHPRIV (10) * 8 + LOG_INFO (6).
const PRIORITY: u32 = 10 * 8 + 6;

/// One datagram in the traditional syslog format without a timestamp (the daemon
/// adds its own).
pub fn datagram(record: &str, pid: u32) -> String {
    format!("<{PRIORITY}>tre-spank[{pid}]: {record}")
}

pub fn send_to(socket: &Path, record: &str) -> std::io::Result<()> {
    let s = UnixDatagram::unbound()?;
    s.send_to(datagram(record, std::process::id()).as_bytes(), socket)?;
    Ok(())
}

pub fn send(record: &str) -> std::io::Result<()> {
    send_to(Path::new(SYSLOG_SOCKET), record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reaches_a_datagram_socket() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("log");
        let server = UnixDatagram::bind(&path).unwrap();
        send_to(&path, "tre-spank-audit event=start job=1").unwrap();
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        let got = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(got.starts_with("<86>tre-spank["), "{got}");
        assert!(
            got.ends_with("]: tre-spank-audit event=start job=1"),
            "{got}"
        );
    }

    #[test]
    fn no_daemon_is_an_error_not_a_panic() {
        let t = tempfile::tempdir().unwrap();
        assert!(send_to(&t.path().join("absent"), "x").is_err());
    }
}
