//! The probes of `tre-spank check`: each looks at one thing of this node (a directory's
//! owner and mode, a file, a mount, a filesystem) and returns what it found, one
//! [`Finding`] per line; printing them is the tool's job. Probes that need facts of the
//! whole host (the mount table, Slurm's spool, `/`) take them as arguments, so that
//! tests can give them temporary directories and made-up texts.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::host::job;
use crate::host::podman_version::podman_version;
use crate::host::runtime_dir;
use crate::host::trust;
use crate::rules::config::Config;
use crate::rules::image_store::mount_of;
use crate::rules::options::Runtime;
use crate::rules::runtime;

/// How much a finding matters: only problems make `check` fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Note,
    Warning,
    Problem,
}

impl Level {
    /// The word `check` starts the line with.
    pub fn label(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Note => "note",
            Level::Warning => "WARNING",
            Level::Problem => "PROBLEM",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    pub line: String,
}

impl Finding {
    pub fn ok(line: impl Into<String>) -> Self {
        Self::new(Level::Ok, line)
    }
    pub fn note(line: impl Into<String>) -> Self {
        Self::new(Level::Note, line)
    }
    pub fn warning(line: impl Into<String>) -> Self {
        Self::new(Level::Warning, line)
    }
    pub fn problem(line: impl Into<String>) -> Self {
        Self::new(Level::Problem, line)
    }
    fn new(level: Level, line: impl Into<String>) -> Self {
        Finding {
            level,
            line: line.into(),
        }
    }
}

/// The number of problems among `findings`.
pub fn problems(findings: &[Finding]) -> usize {
    findings
        .iter()
        .filter(|f| f.level == Level::Problem)
        .count()
}

/// Facts of the host the probes compare against.
#[derive(Debug, Clone)]
pub struct Host {
    /// The root filesystem (`/`).
    pub root: PathBuf,
    /// slurmd's spool (slurm.conf's `SlurmdSpoolDir`).
    pub spool: PathBuf,
    /// The text of `/proc/self/mountinfo`.
    pub mountinfo: String,
}

/// The device of `path`, or of its nearest existing ancestor (a directory the plugin
/// creates later lands on its parent's filesystem).
fn device_of(path: &Path) -> Option<u64> {
    path.ancestors()
        .find_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.dev())
}

/// A scratch root holds one directory per user: root's, and if everyone may write it
/// (users make their own directory there), sticky, so nobody renames another's away.
pub fn scratch_root(root: &Path) -> Finding {
    if root.as_os_str().is_empty() {
        return Finding::ok("scratch_root empty: scratch-N in each user's $HOME");
    }
    let shown = root.display();
    match std::fs::symlink_metadata(root) {
        Err(e) => Finding::problem(format!(
            "scratch_root {shown}: {e} (container jobs on this node would fail)"
        )),
        Ok(m) if !m.is_dir() => Finding::problem(format!(
            "scratch_root {shown} is not a directory (a symbolic link is refused too)"
        )),
        // The one ownership check; a sticky root directory others can write is fine.
        Ok(m) => match trust::check_owned(m.uid(), m.mode(), &[0], true) {
            Err(trust::Untrusted::Owner { uid, .. }) => Finding::problem(format!(
                "scratch_root {shown} is owned by uid {uid}, not root"
            )),
            Err(_) => Finding::problem(format!(
                "scratch_root {shown} has mode {:04o}: writable by others but not sticky (want 1777, or 0755 with a directory per user made by the site)",
                m.mode() & 0o7777
            )),
            Ok(()) => Finding::ok(format!(
                "scratch_root {shown} (root, mode {:04o}): scratch-N in {shown}/<user>",
                m.mode() & 0o7777
            )),
        },
    }
}

/// Containers write their writable layer (`/`, `/tmp`, `/root` inside) under
/// runtime_dir: on the root filesystem or Slurm's spool, one job can fill the node and
/// make slurmd drain it. Warned about, not refused: the default puts it on `/`.
pub fn runtime_dir_filesystem(runtime_dir: &Path, host: &Host) -> Option<Finding> {
    let dev = device_of(runtime_dir)?;
    let mut shared = Vec::new();
    if device_of(&host.root) == Some(dev) {
        shared.push(host.root.display().to_string());
    }
    if device_of(&host.spool) == Some(dev) {
        shared.push(format!("Slurm's spool {}", host.spool.display()));
    }
    Some(if shared.is_empty() {
        Finding::ok(format!(
            "runtime_dir {} is on its own filesystem (not {} nor {})",
            runtime_dir.display(),
            host.root.display(),
            host.spool.display()
        ))
    } else {
        Finding::warning(format!(
            "runtime_dir {} shares a filesystem with {}: a container writing to its / or /tmp can fill it and drain the node (put runtime_dir on its own filesystem: docs/threat-model.md, Filesystems)",
            runtime_dir.display(),
            shared.join(" and ")
        ))
    })
}

/// A root-owned directory nobody else can write (`mode`: what the plugin creates it
/// with); one that does not exist yet is a note.
pub fn root_dir(what: &str, path: &Path, mode: u32) -> Finding {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Finding::note(format!(
            "{what} {} does not exist yet (the plugin creates it with mode {mode:04o})",
            path.display()
        )),
        Err(e) => Finding::problem(format!("{what} {}: {e}", path.display())),
        // The one ownership check (root's, writable by neither group nor others).
        Ok(m) => match trust::check_owned_dir(&m, 0) {
            Err(trust::Untrusted::NotADirectory) => Finding::problem(format!(
                "{what} {} is not a directory (a symbolic link is refused too)",
                path.display()
            )),
            Err(trust::Untrusted::Owner { uid, .. }) => Finding::problem(format!(
                "{what} {} is owned by uid {uid}, not root",
                path.display()
            )),
            Err(trust::Untrusted::Writable { .. }) => Finding::problem(format!(
                "{what} {} has mode {:04o}: group or others can write it (want {mode:04o})",
                path.display(),
                m.mode() & 0o7777
            )),
            Ok(()) => Finding::ok(format!(
                "{what} {} (root, mode {:04o})",
                path.display(),
                m.mode() & 0o7777
            )),
        },
    }
}

/// A site store must be on a `nosuid,nodev` mount: whatever an image brought, no file
/// in it raises privileges (set-id, file capabilities) and no device node opens.
pub fn store_mount(what: &str, path: &Path, mountinfo: &str) -> Finding {
    let real = match std::fs::canonicalize(path) {
        Ok(p) => p,
        Err(e) => return Finding::problem(format!("{what} {}: {e}", path.display())),
    };
    match mount_of(mountinfo, &real) {
        Some(m) if m.nosuid && m.nodev => Finding::ok(format!(
            "{what} {} is on a nosuid,nodev mount ({})",
            path.display(),
            m.mount_point.display()
        )),
        Some(m) => Finding::problem(format!(
            "{what} {} is on the mount {} without {}: mount the store's filesystem nosuid,nodev (docs/images.md)",
            path.display(),
            m.mount_point.display(),
            match (m.nosuid, m.nodev) {
                (false, false) => "nosuid and nodev",
                (false, true) => "nosuid",
                _ => "nodev",
            }
        )),
        None => Finding::problem(format!(
            "{what} {}: its mount is not in /proc/self/mountinfo",
            path.display()
        )),
    }
}

/// The config file: srun/sbatch/salloc read it as the submitting user.
pub fn config_file(path: &Path) -> Finding {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Finding::note(format!(
            "config file {} does not exist: the defaults and the plugstack arguments apply",
            path.display()
        )),
        Err(e) => Finding::problem(format!("config file {}: {e}", path.display())),
        Ok(m) if m.mode() & 0o004 == 0 => Finding::problem(format!(
            "config file {} has mode {:04o}: users cannot read it, and srun/sbatch/salloc read it as the submitting user (every --tre-container submission fails)",
            path.display(),
            m.mode() & 0o7777
        )),
        Ok(_) => Finding::ok(format!("config file {} (readable by users)", path.display())),
    }
}

/// The runtimes the node offers. One it lacks is a problem only for jobs that rely on
/// it by default; a job asking for it gets a clear error.
pub fn runtimes(config: &Config, node: &str) -> Vec<Finding> {
    let default = config.default_runtime.named();
    let mut found = Vec::new();
    for r in &config.runtimes {
        found.push(match job::check_runtime(config, *r, node) {
            Ok(()) => Finding::ok(format!(
                "runtime {r} ({})",
                match r {
                    Runtime::Podman => config.podman.path.display(),
                    Runtime::Apptainer => config.apptainer.path.display(),
                }
            )),
            Err(e) if default == Some(*r) => {
                Finding::problem(format!("runtime {r} (the default): {e}"))
            }
            Err(e) => Finding::ok(format!(
                "runtime {r}: {e} (jobs asking for it fail with this)"
            )),
        });
    }
    // A named default that is offered was checked above; one that is not offered, or
    // `auto` with nothing installed, is checked here.
    let checked_above = default.is_some_and(|r| config.runtimes.contains(&r));
    if !checked_above {
        if let Err(e) = job::choose_runtime(config, config.default_runtime, node) {
            found.push(Finding::problem(format!(
                "default_runtime: jobs without --tre-runtime would fail: {e}"
            )));
        }
    }
    found
}

pub fn allowed_registries(registries: &[String]) -> Finding {
    if registries.is_empty() {
        Finding::problem("allowed_registries is empty: every container job would be refused")
    } else {
        Finding::ok(format!("allowed registries: {}", registries.join(", ")))
    }
}

/// The project data root, where the node has project data.
pub fn safe_data(config: &Config) -> Vec<Finding> {
    if !config.safe_data {
        return vec![Finding::ok(
            "safe_data = false on this node: jobs get no /safe_data",
        )];
    }
    let root = &config.safe_data_root;
    match std::fs::metadata(root) {
        Ok(m) if m.is_dir() => {
            let projects = std::fs::read_dir(root)
                .map(|d| {
                    d.filter(|e| e.as_ref().is_ok_and(|e| e.path().is_dir()))
                        .count()
                })
                .unwrap_or(0);
            let mut found = vec![Finding::ok(format!(
                "safe_data_root {} ({projects} project directories)",
                root.display()
            ))];
            if m.mode() & 0o002 != 0 {
                found.push(Finding::problem(format!(
                    "safe_data_root {} is writable by everyone",
                    root.display()
                )));
            }
            found
        }
        Ok(_) => vec![Finding::problem(format!(
            "safe_data_root {} is not a directory",
            root.display()
        ))],
        Err(e) => vec![Finding::problem(format!(
            "safe_data_root {}: {e} (set safe_data = false for this node if it has no project data)",
            root.display()
        ))],
    }
}

/// The site image stores: podman's (with the program that mounts them) and
/// apptainer's SIF directory.
pub fn image_stores(config: &Config, mountinfo: &str) -> Vec<Finding> {
    let mut found = Vec::new();
    for store in &config.podman.image_stores {
        if store.exists() {
            found.push(root_dir("podman image store", store, 0o755));
            found.push(store_mount("podman image store", store, mountinfo));
        } else {
            found.push(Finding::note(format!(
                "podman image store {} does not exist on this node (jobs leave it out; `tre-spank image load` creates it)",
                store.display()
            )));
        }
    }
    let program = &config.podman.store_mount_program;
    if !config.podman.image_stores.is_empty()
        && !program.as_os_str().is_empty()
        && config.runtimes.contains(&Runtime::Podman)
    {
        found.push(if program.is_file() {
            Finding::ok(format!("podman.store_mount_program {}", program.display()))
        } else {
            Finding::problem(format!(
                "podman.store_mount_program {} is not installed: podman jobs reading a site store would fail (install fuse-overlayfs)",
                program.display()
            ))
        });
    }
    let sif_dir = &config.apptainer.sif_dir;
    if sif_dir.exists() {
        found.push(root_dir("apptainer.sif_dir", sif_dir, 0o755));
        found.push(store_mount("apptainer.sif_dir", sif_dir, mountinfo));
    }
    found
}

/// The job-number secret: not empty, unreadable by users, and root's (or munge's)
/// along its path, as jobs require.
pub fn secret_file(path: &Path) -> Finding {
    match std::fs::read(path) {
        Ok(bytes) if bytes.is_empty() => {
            Finding::problem(format!("secret_file {} is empty", path.display()))
        }
        Ok(_) => {
            let mode = std::fs::metadata(path)
                .map(|m| m.mode() & 0o7777)
                .unwrap_or(0);
            if mode & 0o044 != 0 {
                Finding::problem(format!(
                    "secret_file {} has mode {mode:04o}: users could compute job numbers",
                    path.display()
                ))
            } else if let Err(e) = trust::check_file("secret_file", path, trust::SECRET_OWNERS) {
                Finding::problem(format!("{e}: jobs refuse it"))
            } else {
                Finding::ok(format!("secret_file {} readable", path.display()))
            }
        }
        Err(e) => Finding::problem(format!("secret_file {}: {e}", path.display())),
    }
}

/// The tool every container task runs: executable by everyone, and root's along its
/// path, as jobs require.
pub fn tool_path(path: &Path) -> Finding {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o001 != 0 => {
            match trust::check_file("tool_path", path, &[]) {
                Ok(()) => Finding::ok(format!("tool_path {}", path.display())),
                Err(e) => Finding::problem(format!("{e}: jobs refuse it")),
            }
        }
        Ok(_) => Finding::problem(format!(
            "tool_path {} is not a file everyone can execute",
            path.display()
        )),
        Err(e) => Finding::problem(format!("tool_path {}: {e}", path.display())),
    }
}

/// Each container job gets a tmpfs of its own on `run_dir/job-N` for podman's run
/// state (host::runtime_dir): the plugin must be able to mount one. Tried on a fresh
/// directory (removed again), as the plugin would.
pub fn run_dir_mount(run_dir: &Path) -> Finding {
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    let probe = std::env::temp_dir().join(format!("tre-spank-check-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir(&probe) {
        return Finding::problem(format!(
            "cannot try a tmpfs mount on {}: {e}",
            probe.display()
        ));
    }
    let mounted = mount(
        Some("tre-spank-check"),
        &probe,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(runtime_dir::RUN_TMPFS_OPTIONS),
    );
    if mounted.is_ok() {
        let _ = umount2(&probe, MntFlags::MNT_DETACH);
    }
    let _ = std::fs::remove_dir(&probe);
    match mounted {
        Ok(()) => Finding::ok(format!(
            "run_dir {}: each container job gets a tmpfs of its own there ({}; a test mount worked)",
            run_dir.display(),
            runtime_dir::RUN_TMPFS_OPTIONS
        )),
        Err(errno) => Finding::problem(format!(
            "run_dir {}: cannot mount a tmpfs ({errno}): container jobs on this node would fail",
            run_dir.display()
        )),
    }
}

/// Whether the node's podman keeps its database in run_dir (`--transient-store`).
pub fn podman_transient_store(config: &Config) -> Option<Finding> {
    let v = podman_version(&config.podman.path, &config.run_dir)?;
    Some(if runtime::podman_has_transient_store(&v) {
        Finding::ok(format!(
            "{v}: jobs run it with --transient-store (its database in run_dir)"
        ))
    } else {
        Finding::note(format!(
            "{v} has no --transient-store (podman 4.4 and later): its database stays in runtime_dir, on disk, and container jobs start slower"
        ))
    })
}

/// `site_mounts`: bound by the runtime, as the user; one that is missing fails every
/// container job.
pub fn site_mounts(paths: &[PathBuf]) -> Vec<Finding> {
    paths
        .iter()
        .map(|path| match std::fs::metadata(path) {
            Ok(_) => Finding::ok(format!(
                "site mount {} (read-only in every container job)",
                path.display()
            )),
            Err(e) => Finding::problem(format!(
                "site mount {}: {e} (container jobs on this node would fail)",
                path.display()
            )),
        })
        .collect()
}

/// Every probe of a loaded config on this node, in the order `check` prints them.
pub fn node(config: &Config, node: &str, host: &Host) -> Vec<Finding> {
    let mut found = runtimes(config, node);
    found.push(allowed_registries(&config.allowed_registries));
    found.extend(safe_data(config));
    found.push(root_dir("state_dir", &config.state_dir, 0o700));
    found.push(root_dir("runtime_dir", &config.runtime_dir, 0o711));
    found.extend(runtime_dir_filesystem(&config.runtime_dir, host));
    found.push(root_dir("run_dir", &config.run_dir, 0o711));
    if config.runtimes.contains(&Runtime::Podman) {
        found.push(run_dir_mount(&config.run_dir));
        found.extend(podman_transient_store(config));
    }
    found.push(scratch_root(&config.scratch_root));
    found.extend(site_mounts(&config.site_mounts));
    found.extend(image_stores(config, &host.mountinfo));
    found.push(secret_file(&config.secret_file));
    found.push(tool_path(&config.tool_path));
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{self, Permissions};
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, Permissions::from_mode(mode)).unwrap();
    }

    fn root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    /// A directory owned by someone other than root (only root can make one).
    fn chown_to_nobody(path: &Path) {
        std::os::unix::fs::chown(path, Some(65534), Some(65534)).unwrap();
    }

    fn level(f: &Finding) -> Level {
        f.level
    }

    #[test]
    fn a_root_dir_must_be_roots_a_directory_and_not_writable_by_others() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("state");
        let f = root_dir("state_dir", &d, 0o700);
        assert_eq!(
            f,
            Finding::note(format!(
                "state_dir {} does not exist yet (the plugin creates it with mode 0700)",
                d.display()
            ))
        );
        symlink("/", &d).unwrap();
        let f = root_dir("state_dir", &d, 0o700);
        assert_eq!(level(&f), Level::Problem);
        assert!(
            f.line
                .ends_with("is not a directory (a symbolic link is refused too)"),
            "{f:?}"
        );
        fs::remove_file(&d).unwrap();
        fs::create_dir(&d).unwrap();
        if !root() {
            // Owned by the user running the tests: not root's.
            let f = root_dir("state_dir", &d, 0o700);
            assert!(f.line.contains(", not root"), "{f:?}");
            return;
        }
        chmod(&d, 0o775);
        assert_eq!(
            root_dir("state_dir", &d, 0o700),
            Finding::problem(format!(
                "state_dir {} has mode 0775: group or others can write it (want 0700)",
                d.display()
            ))
        );
        chmod(&d, 0o700);
        assert_eq!(
            root_dir("state_dir", &d, 0o700),
            Finding::ok(format!("state_dir {} (root, mode 0700)", d.display()))
        );
        chown_to_nobody(&d);
        assert_eq!(
            root_dir("state_dir", &d, 0o700),
            Finding::problem(format!(
                "state_dir {} is owned by uid 65534, not root",
                d.display()
            ))
        );
    }

    #[test]
    fn a_scratch_root_others_write_must_be_sticky() {
        assert_eq!(
            scratch_root(Path::new("")),
            Finding::ok("scratch_root empty: scratch-N in each user's $HOME")
        );
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("scratch");
        let f = scratch_root(&d);
        assert_eq!(level(&f), Level::Problem);
        assert!(f.line.ends_with("(container jobs on this node would fail)"));
        fs::create_dir(&d).unwrap();
        if !root() {
            assert!(scratch_root(&d).line.contains(", not root"));
            return;
        }
        chmod(&d, 0o777);
        assert_eq!(
            scratch_root(&d),
            Finding::problem(format!(
                "scratch_root {} has mode 0777: writable by others but not sticky (want 1777, or 0755 with a directory per user made by the site)",
                d.display()
            ))
        );
        chmod(&d, 0o1777);
        assert_eq!(
            scratch_root(&d),
            Finding::ok(format!(
                "scratch_root {0} (root, mode 1777): scratch-N in {0}/<user>",
                d.display()
            ))
        );
        chmod(&d, 0o755);
        assert_eq!(level(&scratch_root(&d)), Level::Ok);
    }

    #[test]
    fn runtime_dir_on_the_filesystem_of_root_or_the_spool_is_warned_about() {
        let t = tempfile::tempdir().unwrap();
        let jobs = t.path().join("jobs/not-yet");
        // The spool on the same filesystem (the temporary directory's), / elsewhere.
        let host = Host {
            root: PathBuf::from("/proc"),
            spool: t.path().join("spool"),
            mountinfo: String::new(),
        };
        let f = runtime_dir_filesystem(&jobs, &host).unwrap();
        assert_eq!(
            f,
            Finding::warning(format!(
                "runtime_dir {} shares a filesystem with Slurm's spool {}: a container writing to its / or /tmp can fill it and drain the node (put runtime_dir on its own filesystem: docs/threat-model.md, Filesystems)",
                jobs.display(),
                host.spool.display()
            ))
        );
        let both = Host {
            root: t.path().to_path_buf(),
            ..host.clone()
        };
        let f = runtime_dir_filesystem(&jobs, &both).unwrap();
        assert!(
            f.line.contains(&format!(
                "shares a filesystem with {} and Slurm's spool ",
                t.path().display()
            )),
            "{f:?}"
        );
        // /proc is a filesystem of its own.
        let apart = Host {
            root: t.path().to_path_buf(),
            spool: t.path().join("spool"),
            mountinfo: String::new(),
        };
        assert_eq!(
            runtime_dir_filesystem(Path::new("/proc/self"), &apart).unwrap(),
            Finding::ok(format!(
                "runtime_dir /proc/self is on its own filesystem (not {0} nor {0}/spool)",
                t.path().display()
            ))
        );
    }

    #[test]
    fn a_store_must_be_on_a_nosuid_nodev_mount() {
        let t = tempfile::tempdir().unwrap();
        let store = t.path().join("images");
        fs::create_dir(&store).unwrap();
        let real = fs::canonicalize(&store).unwrap();
        let line = |point: &Path, opts: &str| {
            format!(
                "36 1 0:30 / {} {opts} shared:1 - ext4 /dev/sda1 rw\n",
                point.display()
            )
        };
        let top = line(Path::new("/"), "rw,relatime");
        let safe = format!("{top}{}", line(&real, "rw,nosuid,nodev"));
        assert_eq!(
            store_mount("podman image store", &store, &safe),
            Finding::ok(format!(
                "podman image store {} is on a nosuid,nodev mount ({})",
                store.display(),
                real.display()
            ))
        );
        let nodev = format!("{top}{}", line(&real, "rw,nodev"));
        assert_eq!(
            store_mount("podman image store", &store, &nodev),
            Finding::problem(format!(
                "podman image store {} is on the mount {} without nosuid: mount the store's filesystem nosuid,nodev (docs/images.md)",
                store.display(),
                real.display()
            ))
        );
        assert!(store_mount("apptainer.sif_dir", &store, &top)
            .line
            .contains("on the mount / without nosuid and nodev:"));
        assert_eq!(
            store_mount("podman image store", &store, ""),
            Finding::problem(format!(
                "podman image store {}: its mount is not in /proc/self/mountinfo",
                store.display()
            ))
        );
        let gone = store_mount("podman image store", &t.path().join("gone"), &safe);
        assert_eq!(level(&gone), Level::Problem);
    }

    #[test]
    fn a_config_file_users_cannot_read_fails_every_submission() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("tre-spank.toml");
        assert_eq!(level(&config_file(&f)), Level::Note);
        fs::write(&f, "").unwrap();
        chmod(&f, 0o600);
        assert_eq!(
            config_file(&f),
            Finding::problem(format!(
                "config file {} has mode 0600: users cannot read it, and srun/sbatch/salloc read it as the submitting user (every --tre-container submission fails)",
                f.display()
            ))
        );
        chmod(&f, 0o644);
        assert_eq!(
            config_file(&f),
            Finding::ok(format!("config file {} (readable by users)", f.display()))
        );
    }

    #[test]
    fn the_secret_must_be_unreadable_by_users_and_not_empty() {
        let t = tempfile::tempdir().unwrap();
        let s = t.path().join("secret");
        assert!(secret_file(&s).line.starts_with("secret_file "));
        assert_eq!(level(&secret_file(&s)), Level::Problem);
        fs::write(&s, "").unwrap();
        assert_eq!(
            secret_file(&s),
            Finding::problem(format!("secret_file {} is empty", s.display()))
        );
        fs::write(&s, "key").unwrap();
        chmod(&s, 0o640);
        assert_eq!(
            secret_file(&s),
            Finding::problem(format!(
                "secret_file {} has mode 0640: users could compute job numbers",
                s.display()
            ))
        );
        chmod(&s, 0o400);
        // Under the test's temporary directory: root's only when the tests run as root
        // (and /tmp is root's and sticky).
        let f = secret_file(&s);
        if root() {
            assert_eq!(
                f,
                Finding::ok(format!("secret_file {} readable", s.display()))
            );
            chown_to_nobody(&s);
            let f = secret_file(&s);
            assert_eq!(level(&f), Level::Problem);
            assert!(
                f.line
                    .ends_with("is owned by uid 65534, not root: jobs refuse it"),
                "{f:?}"
            );
        } else {
            assert!(f.line.ends_with(": jobs refuse it"), "{f:?}");
        }
    }

    #[test]
    fn the_tool_must_be_executable_by_everyone() {
        let t = tempfile::tempdir().unwrap();
        let tool = t.path().join("tre-spank");
        fs::write(&tool, "").unwrap();
        chmod(&tool, 0o750);
        assert_eq!(
            tool_path(&tool),
            Finding::problem(format!(
                "tool_path {} is not a file everyone can execute",
                tool.display()
            ))
        );
        assert_eq!(level(&tool_path(t.path())), Level::Problem);
        chmod(&tool, 0o755);
        let f = tool_path(&tool);
        if root() {
            assert_eq!(f, Finding::ok(format!("tool_path {}", tool.display())));
        } else {
            assert!(f.line.ends_with(": jobs refuse it"), "{f:?}");
        }
    }

    #[test]
    fn registries_and_project_data() {
        assert_eq!(
            allowed_registries(&[]),
            Finding::problem("allowed_registries is empty: every container job would be refused")
        );
        assert_eq!(
            allowed_registries(&["ghcr.io/".into(), "quay.io/x/".into()]),
            Finding::ok("allowed registries: ghcr.io/, quay.io/x/")
        );
        let t = tempfile::tempdir().unwrap();
        let mut config = Config {
            safe_data_root: t.path().join("safe_data"),
            ..Config::default()
        };
        let f = safe_data(&config);
        assert_eq!(f.len(), 1);
        assert!(f[0]
            .line
            .ends_with("(set safe_data = false for this node if it has no project data)"));
        fs::create_dir_all(config.safe_data_root.join("proj1")).unwrap();
        fs::create_dir_all(config.safe_data_root.join("proj2")).unwrap();
        fs::write(config.safe_data_root.join("README"), "").unwrap();
        assert_eq!(
            safe_data(&config),
            vec![Finding::ok(format!(
                "safe_data_root {} (2 project directories)",
                config.safe_data_root.display()
            ))]
        );
        chmod(&config.safe_data_root, 0o777);
        assert_eq!(problems(&safe_data(&config)), 1);
        config.safe_data = false;
        assert_eq!(
            safe_data(&config),
            vec![Finding::ok(
                "safe_data = false on this node: jobs get no /safe_data"
            )]
        );
    }

    #[test]
    fn a_missing_store_is_a_note_and_a_missing_mount_program_a_problem() {
        let t = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.podman.image_stores = vec![t.path().join("absent")];
        config.podman.store_mount_program = t.path().join("fuse-overlayfs");
        config.apptainer.sif_dir = t.path().join("no-sif");
        config.runtimes = vec![Runtime::Podman];
        let f = image_stores(&config, "");
        assert_eq!(f.len(), 2, "{f:?}");
        assert_eq!(level(&f[0]), Level::Note);
        assert_eq!(
            f[1],
            Finding::problem(format!(
                "podman.store_mount_program {}/fuse-overlayfs is not installed: podman jobs reading a site store would fail (install fuse-overlayfs)",
                t.path().display()
            ))
        );
        config.runtimes = vec![Runtime::Apptainer];
        assert_eq!(problems(&image_stores(&config, "")), 0);
    }

    #[test]
    fn labels_are_the_words_check_prints() {
        let words: Vec<&str> = [Level::Ok, Level::Note, Level::Warning, Level::Problem]
            .iter()
            .map(|l| l.label())
            .collect();
        assert_eq!(words, ["ok", "note", "WARNING", "PROBLEM"]);
    }
}
