//! What the node's podman can do, where the job's command line depends on it: podman
//! 4.4 brought `--transient-store` (its database and container records in the run
//! root, on the tmpfs). Asked once per podman binary (`podman --version`) and
//! remembered in `run_dir`, keyed by the binary's identity (device, inode, size,
//! change time), so that an upgrade is noticed and a step pays one `stat` and one
//! small read.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

const CACHE_NAME: &str = ".podman-version";

fn identity(podman: &Path) -> Option<String> {
    let m = std::fs::metadata(podman).ok()?;
    Some(format!(
        "{}:{}:{}:{}.{}",
        m.dev(),
        m.ino(),
        m.size(),
        m.ctime(),
        m.ctime_nsec()
    ))
}

/// The first line `podman --version` prints (`podman version 5.4.2`), or `None` when
/// podman cannot be asked (then the caller assumes the oldest podman).
pub fn podman_version(podman: &Path, run_dir: &Path) -> Option<String> {
    let id = identity(podman)?;
    let cache = run_dir.join(CACHE_NAME);
    if let Ok(text) = std::fs::read_to_string(&cache) {
        if let Some((key, line)) = text.split_once('\n') {
            if key == id {
                return Some(line.trim_end().to_string());
            }
        }
    }
    let out = Command::new(podman)
        .arg("--version")
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let line = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()?
        .trim()
        .to_string();
    // Best effort: without the cache the next step asks again. Written whole, then
    // renamed over the old one, in run_dir (root's, 0711).
    let tmp = run_dir.join(format!("{CACHE_NAME}.{}.tmp", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .and_then(|mut f| f.write_all(format!("{id}\n{line}\n").as_bytes()))
        .and_then(|_| std::fs::rename(&tmp, &cache));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asked_once_then_read_back_until_the_binary_changes() {
        let t = tempfile::tempdir().unwrap();
        let bin = t.path().join("podman");
        let log = t.path().join("asked");
        let script = format!(
            "#!/bin/sh\necho x >> {}\necho 'podman version 5.4.2'\n",
            log.display()
        );
        // Written aside and renamed: no file this process has open for writing is run.
        let install = |text: &str| {
            let tmp = t.path().join("podman.new");
            std::fs::write(&tmp, text).unwrap();
            std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
            std::fs::rename(&tmp, &bin).unwrap();
        };
        install(&script);
        let asked = || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .count()
        };
        let v = Some("podman version 5.4.2".to_string());
        assert_eq!(podman_version(&bin, t.path()), v);
        assert_eq!(podman_version(&bin, t.path()), v);
        assert_eq!(asked(), 1, "the second step reads the cache");
        // An upgrade: a new binary (another inode, size and change time).
        install(&script.replace("5.4.2", "5.8.10"));
        assert_eq!(
            podman_version(&bin, t.path()),
            Some("podman version 5.8.10".to_string())
        );
        assert_eq!(asked(), 2);
        assert_eq!(podman_version(&t.path().join("none"), t.path()), None);
    }
}
