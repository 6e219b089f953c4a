//! `tre-spank`: the plugin's command-line companion.
//!
//! - `tre-spank launch --image IMAGE -- RUNTIME-COMMAND...` is what the plugin makes
//!   each container task run: it supervises the runtime (see `host::launch`).
//! - `tre-spank check`: validates the config and this node.
//! - `tre-spank plan --user U --container IMAGE [--runtime R] [--project P] [-- CMD...]`:
//!   what a job of that user would get on this node, without running anything.
//! - `tre-spank sweep [--dry-run]`: removes what jobs that no longer exist left here.
//! - `tre-spank image load|pull|list|remove`: the node's site image stores (approved
//!   images only: the same reference grammar and registry allow-list as jobs).
//! - `tre-spank number --job-id J [--restart-count R] [--config PATH]` (not in the
//!   usage text: for administrators and the test harness) prints job J's NUMBER; it
//!   reads the root-only secret, so only root can use it.
//!
//! The config is found as the plugin finds it: the arguments of the tre_spank.so line
//! in the plugstack.conf slurmd reads (slurm.conf's `PlugStackConfig`, by default
//! plugstack.conf beside slurm.conf; slurm.conf is `$SLURM_CONF`, else
//! /etc/slurm/slurm.conf, else configless slurmd's cache /run/slurm/conf/slurm.conf)
//! and the files its `include` lines name, unless `--config PATH` is given.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tre_spank::host::account::{self, Account};
use tre_spank::host::cleanup::{self, Event};
use tre_spank::host::dirs;
use tre_spank::host::image_store::Site;
use tre_spank::host::job;
use tre_spank::host::launch::{supervise, Launch};
use tre_spank::host::liveness::ask_controller;
use tre_spank::host::sweep;
use tre_spank::host::trust;
use tre_spank::rules::config::{self, Config};
use tre_spank::rules::image_store::{approved, mount_of};
use tre_spank::rules::job_number::job_number;
use tre_spank::rules::liveness::ended_everywhere;
use tre_spank::rules::options::{self, RawOptions, Runtime};
use tre_spank::rules::plan::{self, JobDirs};
use tre_spank::rules::runtime::{self, PodmanStorage, Target, TaskLaunch};

const USAGE: &str = "usage:
  tre-spank launch --image IMAGE [--runtime podman|apptainer] [--drop-args START,COUNT] -- COMMAND [ARGS...]
  tre-spank check [--config PATH]
  tre-spank plan [--config PATH] --user USER --container IMAGE [--runtime R] [--project P] [-- COMMAND...]
  tre-spank sweep [--config PATH] [--dry-run]
  tre-spank image load [--config PATH] [--runtime podman|apptainer] [--store DIR] --archive FILE IMAGE
  tre-spank image pull [--config PATH] [--runtime podman|apptainer] [--store DIR] IMAGE
  tre-spank image list [--config PATH] [--runtime podman|apptainer] [--store DIR]
  tre-spank image remove [--config PATH] [--runtime podman|apptainer] [--store DIR] IMAGE";

const SLURM_CONF: &str = "/etc/slurm/slurm.conf";
/// Where a configless slurmd keeps the files slurmctld sent (Slurm >= 20.02).
const CONFIGLESS_SLURM_CONF: &str = "/run/slurm/conf/slurm.conf";
/// How deep `include` lines are followed.
const INCLUDE_DEPTH: usize = 8;

fn parse_launch(mut args: impl Iterator<Item = OsString>) -> Result<Launch, String> {
    let mut image = None;
    let mut runtime = Runtime::Podman;
    let mut drop = None;
    loop {
        match args.next().as_ref().and_then(|a| a.to_str()) {
            Some("--image") => image = args.next().and_then(|v| v.into_string().ok()),
            Some("--runtime") => {
                runtime = match args.next().as_ref().and_then(|a| a.to_str()) {
                    Some("podman") => Runtime::Podman,
                    Some("apptainer") => Runtime::Apptainer,
                    _ => return Err("--runtime needs podman or apptainer".into()),
                }
            }
            Some("--drop-args") => {
                let v = args.next().and_then(|v| v.into_string().ok());
                let parsed = v.as_deref().and_then(|v| {
                    let (a, b) = v.split_once(',')?;
                    Some((a.parse().ok()?, b.parse().ok()?))
                });
                drop = Some(parsed.ok_or("--drop-args needs START,COUNT")?);
            }
            Some("--") => break,
            Some(other) => return Err(format!("unexpected argument {other:?}")),
            None => return Err("missing -- COMMAND".into()),
        }
    }
    let image = image.ok_or("missing --image")?;
    Ok(Launch {
        image,
        runtime,
        argv: args.collect(),
        drop,
    })
}

/// Options of the admin subcommands: `--name value` pairs, flags, and a trailing
/// `-- COMMAND...`.
#[derive(Default)]
struct Opts {
    config: Option<String>,
    user: Option<String>,
    container: Option<String>,
    runtime: Option<String>,
    project: Option<String>,
    dry_run: bool,
    command: Vec<OsString>,
}

fn parse_opts(sub: &str, args: impl Iterator<Item = OsString>) -> Result<Opts, String> {
    let mut o = Opts::default();
    let mut args = args.peekable();
    while let Some(a) = args.next() {
        let a = a
            .into_string()
            .map_err(|a| format!("argument {a:?} is not UTF-8"))?;
        if a == "--" {
            o.command = args.by_ref().collect();
            break;
        }
        if a == "--dry-run" && sub == "sweep" {
            o.dry_run = true;
            continue;
        }
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (a.clone(), None),
        };
        let slot = match (sub, name.as_str()) {
            (_, "--config") => &mut o.config,
            ("plan", "--user") => &mut o.user,
            ("plan", "--container") => &mut o.container,
            ("plan", "--runtime") => &mut o.runtime,
            ("plan", "--project") => &mut o.project,
            _ => return Err(format!("{sub}: unexpected argument {a:?}")),
        };
        let value = match inline {
            Some(v) => v,
            None => args
                .next()
                .and_then(|v| v.into_string().ok())
                .ok_or_else(|| format!("{sub}: {name} needs a value"))?,
        };
        *slot = Some(value);
    }
    Ok(o)
}

/// slurm.conf as Slurm's commands find it: `$SLURM_CONF` (the administrator's own
/// environment: this tool runs as root), else the usual path, else a configless
/// slurmd's cache.
fn slurm_conf() -> PathBuf {
    if let Some(p) = std::env::var_os("SLURM_CONF").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    [SLURM_CONF, CONFIGLESS_SLURM_CONF]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(SLURM_CONF))
}

/// Where the plugin's arguments came from.
struct ArgsSource {
    /// `--config`, or the file that holds the tre_spank.so line, or what was searched.
    what: String,
    /// A tre_spank.so line was found (or `--config` given).
    found: bool,
    /// slurm.conf and the plugstack.conf it names (`None` with `--config`).
    searched: Option<(PathBuf, PathBuf)>,
}

/// The plugin's arguments: `--config PATH`, or those of its line in the plugstack
/// configuration slurmd reads (the file first, then its includes in order).
fn plugin_args(opts: &Opts) -> (Vec<String>, ArgsSource) {
    if let Some(c) = &opts.config {
        let what = "--config".to_string();
        let source = ArgsSource {
            what,
            found: true,
            searched: None,
        };
        return (vec![format!("config={c}")], source);
    }
    let conf = slurm_conf();
    let top = tre_spank::rules::plugstack::plugstack_path(
        &conf,
        &std::fs::read_to_string(&conf).unwrap_or_default(),
    );
    let mut queue = vec![(top.clone(), 0)];
    let mut seen = BTreeSet::new();
    while !queue.is_empty() {
        let (file, depth) = queue.remove(0);
        if !seen.insert(file.clone()) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        if let Some(args) = config::plugstack_args(&text) {
            let what = file.display().to_string();
            let searched = Some((conf, top));
            return (
                args,
                ArgsSource {
                    what,
                    found: true,
                    searched,
                },
            );
        }
        if depth >= INCLUDE_DEPTH {
            continue;
        }
        for pattern in tre_spank::rules::plugstack::includes(&file, &text) {
            let mut files: Vec<PathBuf> = glob::glob(&pattern)
                .map(|g| g.filter_map(Result::ok).collect())
                .unwrap_or_default();
            files.sort();
            queue.extend(files.into_iter().map(|f| (f, depth + 1)));
        }
    }
    let what = format!(
        "no tre_spank.so line in {} (PlugStackConfig of {}) or its includes: defaults",
        top.display(),
        conf.display()
    );
    let searched = Some((conf, top));
    (
        Vec::new(),
        ArgsSource {
            what,
            found: false,
            searched,
        },
    )
}

fn load(opts: &Opts) -> Result<(Config, String, Vec<String>), String> {
    let (args, source) = plugin_args(opts);
    let source = source.what;
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let node = job::node_name();
    let config = job::load_node_config(&refs, &node).map_err(|e| format!("tre-spank: {e}"))?;
    let mut about = vec![format!(
        "config {} (plugin arguments from {source}: {})",
        config::config_path(&refs).display(),
        if args.is_empty() {
            "none".to_string()
        } else {
            args.join(" ")
        }
    )];
    let base = config::load(&refs).map_err(|e| format!("tre-spank: {e}"))?;
    let sections = base.matching_sections(&node);
    about.push(if sections.is_empty() {
        format!("node {node}: no [[node]] section applies")
    } else {
        format!(
            "node {node}: [[node]] sections {} apply",
            sections
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    });
    Ok((config, node, about))
}

// ---------------------------------------------------------------------------- check

struct Checks {
    problems: usize,
}

impl Checks {
    fn ok(&self, line: &str) {
        println!("ok       {line}");
    }
    fn note(&self, line: &str) {
        println!("note     {line}");
    }
    fn problem(&mut self, line: &str) {
        self.problems += 1;
        println!("PROBLEM  {line}");
    }
    fn warn(&self, line: &str) {
        println!("WARNING  {line}");
    }
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
fn check_scratch_root(c: &mut Checks, root: &Path) {
    if root.as_os_str().is_empty() {
        c.ok("scratch_root empty: scratch-N in each user's $HOME");
        return;
    }
    let shown = root.display();
    match std::fs::symlink_metadata(root) {
        Err(e) => c.problem(&format!(
            "scratch_root {shown}: {e} (container jobs on this node would fail)"
        )),
        Ok(m) if !m.is_dir() => c.problem(&format!(
            "scratch_root {shown} is not a directory (a symbolic link is refused too)"
        )),
        Ok(m) if m.uid() != 0 => c.problem(&format!(
            "scratch_root {shown} is owned by uid {}, not root",
            m.uid()
        )),
        Ok(m) if m.mode() & 0o022 != 0 && m.mode() & 0o1000 == 0 => c.problem(&format!(
            "scratch_root {shown} has mode {:04o}: writable by others but not sticky (want 1777, or 0755 with a directory per user made by the site)",
            m.mode() & 0o7777
        )),
        Ok(m) => c.ok(&format!(
            "scratch_root {shown} (root, mode {:04o}): scratch-N in {shown}/<user>",
            m.mode() & 0o7777
        )),
    }
}

/// Containers write their writable layer (`/`, `/tmp`, `/root` inside) under
/// runtime_dir: on the root filesystem or Slurm's spool, one job can fill the node and
/// make slurmd drain it. Warned about, not refused: the default puts it on `/`.
fn check_runtime_dir_filesystem(c: &Checks, runtime_dir: &Path) {
    let slurm_conf = std::env::var_os("SLURM_CONF")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/etc/slurm/slurm.conf".into());
    let spool = config::slurmd_spool_dir(&std::fs::read_to_string(slurm_conf).unwrap_or_default());
    let Some(dev) = device_of(runtime_dir) else {
        return;
    };
    let mut shared = Vec::new();
    if device_of(Path::new("/")) == Some(dev) {
        shared.push("/".to_string());
    }
    if device_of(&spool) == Some(dev) {
        shared.push(format!("Slurm's spool {}", spool.display()));
    }
    if shared.is_empty() {
        c.ok(&format!(
            "runtime_dir {} is on its own filesystem (not / nor {})",
            runtime_dir.display(),
            spool.display()
        ));
    } else {
        c.warn(&format!(
            "runtime_dir {} shares a filesystem with {}: a container writing to its / or /tmp can fill it and drain the node (put runtime_dir on its own filesystem: docs/threat-model.md, Filesystems)",
            runtime_dir.display(),
            shared.join(" and ")
        ));
    }
}

/// A root-owned directory nobody else can write; `None` if it does not exist.
fn check_root_dir(c: &mut Checks, what: &str, path: &Path, mode: u32) {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => c.note(&format!(
            "{what} {} does not exist yet (the plugin creates it with mode {mode:04o})",
            path.display()
        )),
        Err(e) => c.problem(&format!("{what} {}: {e}", path.display())),
        Ok(m) if !m.is_dir() => c.problem(&format!(
            "{what} {} is not a directory (a symbolic link is refused too)",
            path.display()
        )),
        Ok(m) if m.uid() != 0 => c.problem(&format!(
            "{what} {} is owned by uid {}, not root",
            path.display(),
            m.uid()
        )),
        Ok(m) if m.mode() & 0o022 != 0 => c.problem(&format!(
            "{what} {} has mode {:04o}: group or others can write it (want {mode:04o})",
            path.display(),
            m.mode() & 0o7777
        )),
        Ok(m) => c.ok(&format!(
            "{what} {} (root, mode {:04o})",
            path.display(),
            m.mode() & 0o7777
        )),
    }
}

/// A site store must be on a `nosuid,nodev` mount: whatever an image brought, no file
/// in it raises privileges (set-id, file capabilities) and no device node opens.
fn check_store_mount(c: &mut Checks, what: &str, path: &Path, mountinfo: &str) {
    let real = match std::fs::canonicalize(path) {
        Ok(p) => p,
        Err(e) => return c.problem(&format!("{what} {}: {e}", path.display())),
    };
    match mount_of(mountinfo, &real) {
        Some(m) if m.nosuid && m.nodev => c.ok(&format!(
            "{what} {} is on a nosuid,nodev mount ({})",
            path.display(),
            m.mount_point.display()
        )),
        Some(m) => c.problem(&format!(
            "{what} {} is on the mount {} without {}: mount the store's filesystem nosuid,nodev (docs/images.md)",
            path.display(),
            m.mount_point.display(),
            match (m.nosuid, m.nodev) {
                (false, false) => "nosuid and nodev",
                (false, true) => "nosuid",
                _ => "nodev",
            }
        )),
        None => c.problem(&format!(
            "{what} {}: its mount is not in /proc/self/mountinfo",
            path.display()
        )),
    }
}

/// The plugstack line and the config file: what a missing line, a missing file or one
/// the users cannot read means for jobs.
fn check_config_file(c: &mut Checks, opts: &Opts) {
    let (args, source) = plugin_args(opts);
    if let Some((conf, top)) = &source.searched {
        c.ok(&format!(
            "slurm.conf {}: PlugStackConfig {}",
            conf.display(),
            top.display()
        ));
    }
    if !source.found {
        c.problem(&format!(
            "{}: slurmd and the clients do not load the plugin here",
            source.what
        ));
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let path = config::config_path(&refs);
    match std::fs::metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => c.note(&format!(
            "config file {} does not exist: the defaults and the plugstack arguments apply",
            path.display()
        )),
        Err(e) => c.problem(&format!("config file {}: {e}", path.display())),
        Ok(m) if m.mode() & 0o004 == 0 => c.problem(&format!(
            "config file {} has mode {:04o}: users cannot read it, and srun/sbatch/salloc read it as the submitting user (every --tre-container submission fails)",
            path.display(),
            m.mode() & 0o7777
        )),
        Ok(_) => c.ok(&format!("config file {} (readable by users)", path.display())),
    }
}

fn check(opts: &Opts) -> ExitCode {
    let mut c = Checks { problems: 0 };
    let (config, node, about) = match load(opts) {
        Ok(x) => x,
        Err(e) => {
            c.problem(&format!(
                "{e} (container jobs fail with this message; jobs without --tre-container run as usual)"
            ));
            println!("1 problem");
            return ExitCode::from(1);
        }
    };
    for line in &about {
        c.ok(line);
    }
    check_config_file(&mut c, opts);
    // A runtime the node offers but lacks is a problem only for jobs that rely on it
    // by default; a job asking for it gets a clear error.
    let default = config.default_runtime.named();
    for r in &config.runtimes {
        match job::check_runtime(&config, *r, &node) {
            Ok(()) => c.ok(&format!(
                "runtime {r} ({})",
                match r {
                    Runtime::Podman => config.podman.path.display(),
                    Runtime::Apptainer => config.apptainer.path.display(),
                }
            )),
            Err(e) if default == Some(*r) => c.problem(&format!("runtime {r} (the default): {e}")),
            Err(e) => c.ok(&format!(
                "runtime {r}: {e} (jobs asking for it fail with this)"
            )),
        }
    }
    // A named default that is offered was checked above; one that is not offered, or
    // `auto` with nothing installed, is checked here.
    let checked_above = default.is_some_and(|r| config.runtimes.contains(&r));
    if !checked_above {
        if let Err(e) = job::choose_runtime(&config, config.default_runtime, &node) {
            c.problem(&format!(
                "default_runtime: jobs without --tre-runtime would fail: {e}"
            ));
        }
    }
    if config.allowed_registries.is_empty() {
        c.problem("allowed_registries is empty: every container job would be refused");
    } else {
        c.ok(&format!(
            "allowed registries: {}",
            config.allowed_registries.join(", ")
        ));
    }
    if config.safe_data {
        match std::fs::metadata(&config.safe_data_root) {
            Ok(m) if m.is_dir() => {
                let projects = std::fs::read_dir(&config.safe_data_root)
                    .map(|d| d.filter(|e| e.as_ref().is_ok_and(|e| e.path().is_dir())).count())
                    .unwrap_or(0);
                c.ok(&format!(
                    "safe_data_root {} ({projects} project directories)",
                    config.safe_data_root.display()
                ));
                if m.mode() & 0o002 != 0 {
                    c.problem(&format!(
                        "safe_data_root {} is writable by everyone",
                        config.safe_data_root.display()
                    ));
                }
            }
            Ok(_) => c.problem(&format!(
                "safe_data_root {} is not a directory",
                config.safe_data_root.display()
            )),
            Err(e) => c.problem(&format!(
                "safe_data_root {}: {e} (set safe_data = false for this node if it has no project data)",
                config.safe_data_root.display()
            )),
        }
    } else {
        c.ok("safe_data = false on this node: jobs get no /safe_data");
    }
    check_root_dir(&mut c, "state_dir", &config.state_dir, 0o700);
    check_root_dir(&mut c, "runtime_dir", &config.runtime_dir, 0o711);
    check_runtime_dir_filesystem(&c, &config.runtime_dir);
    check_scratch_root(&mut c, &config.scratch_root);
    // Bound by the runtime, as the user: one that is missing fails every container job.
    for path in &config.site_mounts {
        match std::fs::metadata(path) {
            Ok(_) => c.ok(&format!(
                "site mount {} (read-only in every container job)",
                path.display()
            )),
            Err(e) => c.problem(&format!(
                "site mount {}: {e} (container jobs on this node would fail)",
                path.display()
            )),
        }
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for store in &config.podman.image_stores {
        if store.exists() {
            check_root_dir(&mut c, "podman image store", store, 0o755);
            check_store_mount(&mut c, "podman image store", store, &mountinfo);
        } else {
            c.note(&format!(
                "podman image store {} does not exist on this node (jobs leave it out; `tre-spank image load` creates it)",
                store.display()
            ));
        }
    }
    let program = &config.podman.store_mount_program;
    if !config.podman.image_stores.is_empty()
        && !program.as_os_str().is_empty()
        && config.runtimes.contains(&Runtime::Podman)
    {
        if program.is_file() {
            c.ok(&format!("podman.store_mount_program {}", program.display()));
        } else {
            c.problem(&format!(
                "podman.store_mount_program {} is not installed: podman jobs reading a site store would fail (install fuse-overlayfs)",
                program.display()
            ));
        }
    }
    if config.apptainer.sif_dir.exists() {
        check_root_dir(
            &mut c,
            "apptainer.sif_dir",
            &config.apptainer.sif_dir,
            0o755,
        );
        check_store_mount(
            &mut c,
            "apptainer.sif_dir",
            &config.apptainer.sif_dir,
            &mountinfo,
        );
    }
    match std::fs::read(&config.secret_file) {
        Ok(bytes) if bytes.is_empty() => c.problem(&format!(
            "secret_file {} is empty",
            config.secret_file.display()
        )),
        Ok(_) => {
            let mode = std::fs::metadata(&config.secret_file)
                .map(|m| m.mode() & 0o7777)
                .unwrap_or(0);
            if mode & 0o044 != 0 {
                c.problem(&format!(
                    "secret_file {} has mode {mode:04o}: users could compute job numbers",
                    config.secret_file.display()
                ));
            } else if let Err(e) =
                trust::check_file("secret_file", &config.secret_file, trust::SECRET_OWNERS)
            {
                c.problem(&format!("{e}: jobs refuse it"));
            } else {
                c.ok(&format!(
                    "secret_file {} readable",
                    config.secret_file.display()
                ));
            }
        }
        Err(e) => c.problem(&format!(
            "secret_file {}: {e}",
            config.secret_file.display()
        )),
    }
    match std::fs::metadata(&config.tool_path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o001 != 0 => {
            match trust::check_file("tool_path", &config.tool_path, &[]) {
                Ok(()) => c.ok(&format!("tool_path {}", config.tool_path.display())),
                Err(e) => c.problem(&format!("{e}: jobs refuse it")),
            }
        }
        Ok(_) => c.problem(&format!(
            "tool_path {} is not a file everyone can execute",
            config.tool_path.display()
        )),
        Err(e) => c.problem(&format!("tool_path {}: {e}", config.tool_path.display())),
    }
    match c.problems {
        0 => {
            println!("all checks passed");
            ExitCode::SUCCESS
        }
        n => {
            println!("{n} problem{}", if n == 1 { "" } else { "s" });
            ExitCode::from(1)
        }
    }
}

// ----------------------------------------------------------------------------- plan

/// Runs `f` in a child process with the user's identity (groups, gid, uid), as the
/// job's `user_init` does, and returns its exit code.
fn as_user(account: &Account, f: impl FnOnce() -> i32) -> Result<i32, String> {
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, setgroups, setresgid, setresuid, ForkResult, Gid, Uid};
    let mut gids: Vec<Gid> = vec![Gid::from_raw(account.gid)];
    for g in &account.supplementary_groups {
        if let Ok(Some(gr)) = nix::unistd::Group::from_name(g) {
            gids.push(gr.gid);
        }
    }
    let _ = std::io::Write::flush(&mut std::io::stdout());
    // SAFETY: the tool is single-threaded; the child only calls async-signal-safe
    // credential calls, then Rust code that owns no lock held by another thread.
    match unsafe { fork() }.map_err(|e| format!("cannot fork: {e}"))? {
        ForkResult::Child => {
            let (uid, gid) = (Uid::from_raw(account.uid), Gid::from_raw(account.gid));
            let code = match setgroups(&gids)
                .and_then(|_| setresgid(gid, gid, gid))
                .and_then(|_| setresuid(uid, uid, uid))
            {
                Ok(()) => f(),
                Err(e) => {
                    eprintln!(
                        "tre-spank: plan: cannot take the identity of {}: {e}",
                        account.name
                    );
                    3
                }
            };
            let _ = std::io::Write::flush(&mut std::io::stdout());
            std::process::exit(code)
        }
        ForkResult::Parent { child } => match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => Ok(code),
            Ok(other) => Err(format!("the check as the user ended with {other:?}")),
            Err(e) => Err(format!("cannot wait: {e}")),
        },
    }
}

fn would_fail(line: &str) -> i32 {
    println!("job would fail with: {line}");
    1
}

fn plan_cmd(opts: &Opts) -> ExitCode {
    let (Some(user), Some(container)) = (&opts.user, &opts.container) else {
        eprintln!("tre-spank: plan needs --user and --container\n{USAGE}");
        return ExitCode::from(2);
    };
    let code = plan_for(opts, user, container);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn plan_for(opts: &Opts, user: &str, container: &str) -> i32 {
    // The same steps, in the same order, as slurmstepd (spank/stepd.rs).
    let (mut config, node, about) = match load(opts) {
        Ok(x) => x,
        Err(e) => return would_fail(&e),
    };
    job::keep_present_image_stores(&mut config);
    for line in &about {
        println!("{line}");
    }
    let raw = RawOptions {
        container: Some(container.as_bytes().to_vec()),
        runtime: opts.runtime.as_ref().map(|r| r.as_bytes().to_vec()),
        project: opts.project.as_ref().map(|p| p.as_bytes().to_vec()),
        ..RawOptions::default()
    };
    let request = match options::parse(&raw, &config) {
        Ok(Some(r)) => r,
        Ok(None) => return would_fail("tre-spank: --tre-container is missing"),
        // sbatch itself refuses these before the job is queued, with the same line.
        Err(e) => return would_fail(&format!("tre-spank: {e}")),
    };
    let runtime = match job::choose_runtime(&config, request.runtime, &node) {
        Ok(r) => r,
        Err(e) => return would_fail(&format!("tre-spank: {e}")),
    };
    let account = match account::lookup_name(user) {
        Ok(a) => a,
        Err(e) => return would_fail(&format!("tre-spank: {e}")),
    };
    if let Err(e) = std::fs::read(&config.secret_file) {
        return would_fail(&format!(
            "tre-spank: cannot read the job number secret {}: {e}",
            config.secret_file.display()
        ));
    }
    println!(
        "user {} (uid {}), groups: {}",
        account.name,
        account.uid,
        std::iter::once(account.primary_group.as_str())
            .chain(account.supplementary_groups.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("image {} (runtime {runtime})", request.image);
    let result = as_user(&account, || {
        let home_fd = match dirs::open_home(&account.home) {
            Ok(fd) => fd,
            Err(e) => return would_fail(&format!("tre-spank: {e}")),
        };
        let resolution =
            match job::resolve_project(&home_fd, &account, &config, request.project.as_deref()) {
                Ok(r) => r,
                Err(e) => return would_fail(&e),
            };
        // The job number is secret-keyed per job: shown as N; the job id as JOBID.
        let dirs = JobDirs {
            number: 0,
            outputs: account.home.join("outputs-N"),
            scratch: plan::scratch_parent(&account.home, &config.scratch_root, &account.name)
                .join("scratch-N"),
        };
        let job_dir = config.runtime_dir.join("job-JOBID");
        let script = PathBuf::from("/var/spool/slurmd/jobJOBID/slurm_script");
        let (argv, batch): (Vec<OsString>, Option<&Path>) = if opts.command.is_empty() {
            (vec![script.clone().into()], Some(&script))
        } else {
            (opts.command.clone(), None)
        };
        let launch = TaskLaunch {
            argv: &argv,
            batch_script: batch,
            task_env_names: &[],
            tty: false,
            user_env: &request.env,
            entrypoint: request.entrypoint,
            gpus: &[],
        };
        let mut container = plan::container_plan(&request.image, runtime, &resolution, &dirs);
        container
            .mounts
            .extend(plan::site_mounts(&config.site_mounts));
        let sif = runtime::sif_path(&config.apptainer.sif_dir, &request.image).unwrap_or_default();
        let scratch = PathBuf::from(plan::CONTAINER_SCRATCH);
        let target = match runtime {
            Runtime::Podman => Target::Podman(PodmanStorage {
                job_dir: &job_dir,
                home: &account.home,
                user_store_exists: runtime::user_image_store(&account.home).is_dir(),
            }),
            Runtime::Apptainer => Target::Apptainer {
                sif: &sif,
                workdir: &scratch,
                home: &account.home,
                gpu_control: &[],
            },
        };
        let command = match runtime::job_command(&config, &container, &target, &launch) {
            Ok(c) => c,
            Err(e) => return would_fail(&format!("tre-spank: {e}")),
        };
        println!(
            "project: {} ({})",
            resolution
                .project
                .as_ref()
                .map(|p| format!("{} via group {}", p.name, p.group))
                .unwrap_or_else(|| "none".into()),
            resolution.reason
        );
        println!("mounts:");
        for m in &container.mounts {
            println!(
                "  {} -> {}{}",
                m.host.display(),
                m.container.display(),
                if m.read_only { " (read-only)" } else { "" }
            );
        }
        println!("job output would start with:");
        for line in plan::summary_lines(&resolution, &dirs) {
            println!("  {line}");
        }
        println!(
            "  Running: {}",
            runtime::display_command(&command.runtime_argv)
        );
        // Slurm appends the task's own arguments to what the plugin prepends.
        let mut task = command.task_prefix.clone();
        task.extend(argv.iter().cloned());
        println!("task command: {}", runtime::display_command(&task));
        println!("(N: the job's number, JOBID: its Slurm job id; nothing was created or run)");
        0
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tre-spank: plan: {e}");
            2
        }
    }
}

// ---------------------------------------------------------------------------- sweep

fn sweep_cmd(opts: &Opts) -> ExitCode {
    let config = match load(opts) {
        Ok((c, _, _)) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    if opts.dry_run {
        let state = match tre_spank::host::state::StateDir::open(&config.state_dir) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("tre-spank: sweep: {e}");
                return ExitCode::from(1);
            }
        };
        let jobs = sweep::known_jobs(&config, &state).unwrap_or_default();
        let here = sweep::jobs_with_a_stepd(Path::new("/proc"));
        let candidates: Vec<u32> = jobs.into_iter().filter(|j| !here.contains(j)).collect();
        for (j, view) in ask_controller(&config.cleanup, &candidates) {
            if ended_everywhere(&view) {
                println!("would sweep job {j}");
            }
        }
        return ExitCode::SUCCESS;
    }
    let mut problems = false;
    let mut print = |e: Event| match e {
        Event::Note(n) if n.problem => {
            problems = true;
            eprintln!("tre-spank: {}", n.line);
        }
        Event::Note(n) => println!("{}", n.line),
        Event::Background(l) => println!("{l}"),
    };
    // An administrator's sweep asks the controller once.
    match cleanup::sweep_ended_jobs(&config, None, std::time::Instant::now(), &mut print) {
        Ok(report) => {
            println!(
                "swept {} job(s), {} still alive",
                report.swept.len(),
                report.alive.len()
            );
            if problems {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("tre-spank: sweep: {e}");
            ExitCode::from(1)
        }
    }
}

// -------------------------------------------------------------------------- cleanup

/// `tre-spank cleanup (--epilog JOB | --at-slurmd-start) [--detach] -- PLUGIN-ARGS...`
/// (not in the usage text: the plugin runs it). The job epilog and slurmd's start hand
/// their cleanup to it, so that neither waits on a removal or a hung home.
/// `--detach`: start the cleanup in a new session and return at once (its events go
/// to `<state_dir>/cleanup.log`).
fn cleanup_cmd(args: impl Iterator<Item = OsString>) -> ExitCode {
    let all: Vec<OsString> = args.collect();
    let mut words = all.iter().map(|a| a.to_str());
    let mut job = None;
    let mut at_start = false;
    let mut detach = false;
    let mut to_file = false;
    let mut plugin: Vec<String> = Vec::new();
    while let Some(w) = words.next() {
        match w {
            Some("--epilog") => job = words.next().flatten().and_then(|j| j.parse::<u32>().ok()),
            Some("--at-slurmd-start") => at_start = true,
            Some("--detach") => detach = true,
            Some("--to-log") => to_file = true,
            Some("--") => {
                plugin = words.by_ref().flatten().map(str::to_string).collect();
                break;
            }
            _ => {
                eprintln!("tre-spank: cleanup: unexpected arguments {all:?}");
                return ExitCode::from(2);
            }
        }
    }
    if job.is_some() == at_start {
        eprintln!("tre-spank: cleanup needs --epilog JOB or --at-slurmd-start");
        return ExitCode::from(2);
    }
    if detach {
        let rest = all.iter().filter(|a| a.to_str() != Some("--detach"));
        let me = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
        use std::os::unix::process::CommandExt;
        let spawned = std::process::Command::new(me)
            .arg("cleanup")
            .arg("--to-log")
            .args(rest)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn();
        return match spawned {
            Ok(child) => {
                println!("{}", child.id());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tre-spank: cleanup: cannot start: {e}");
                ExitCode::from(1)
            }
        };
    }
    let refs: Vec<&str> = plugin.iter().map(String::as_str).collect();
    let node = job::node_name();
    let config = match job::load_node_config(&refs, &node) {
        Ok(c) => c,
        Err(e) => {
            println!("problem: cleanup: {e}");
            return ExitCode::from(1);
        }
    };
    let limit = config.cleanup.background_limit.max(1);
    bound_lifetime(limit.saturating_add(60));
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(limit);
    let mut log = cleanup::Log::new(&config.state_dir, to_file);
    let state = match tre_spank::host::state::StateDir::open(&config.state_dir) {
        Ok(s) => s,
        Err(e) => {
            log.write(&Event::Note(sweep::Note {
                problem: true,
                line: format!("cleanup: {e}"),
            }));
            return ExitCode::from(1);
        }
    };
    let mut out = |e: Event| log.write(&e);
    match job {
        Some(job_id) => cleanup::after_epilog(&config, &state, &node, job_id, give_up, &mut out),
        None => {
            if let Err(e) = cleanup::sweep_ended_jobs(&config, Some(&node), give_up, &mut out) {
                for (problem, line) in
                    [(true, format!("sweep: {e}")), (false, "sweep: done".into())]
                {
                    out(Event::Note(sweep::Note { problem, line }));
                }
            }
        }
    }
    ExitCode::SUCCESS
}

/// Ends this process `seconds` from now whatever it is doing (SIGALRM's default
/// action), with every signal unblocked: slurmd's mask is inherited across exec.
fn bound_lifetime(seconds: u64) {
    use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow};
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    // SAFETY: restoring the default disposition of SIGALRM installs no handler, and
    // alarm only arms the process's timer; neither touches memory.
    unsafe {
        libc::signal(libc::SIGALRM, libc::SIG_DFL);
        libc::alarm(u32::try_from(seconds).unwrap_or(u32::MAX));
    }
}

// ---------------------------------------------------------------------------- image

struct ImageOpts {
    action: String,
    config: Option<String>,
    runtime: Runtime,
    store: Option<PathBuf>,
    archive: Option<PathBuf>,
    image: Option<String>,
}

fn parse_image(mut args: impl Iterator<Item = OsString>) -> Result<ImageOpts, String> {
    let action = args
        .next()
        .and_then(|a| a.into_string().ok())
        .filter(|a| ["load", "pull", "list", "remove"].contains(&a.as_str()))
        .ok_or("image needs load, pull, list or remove")?;
    let mut o = ImageOpts {
        action,
        config: None,
        runtime: Runtime::Podman,
        store: None,
        archive: None,
        image: None,
    };
    while let Some(a) = args.next() {
        let a = a
            .into_string()
            .map_err(|a| format!("argument {a:?} is not UTF-8"))?;
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        if !name.starts_with("--") {
            if o.image.replace(a.clone()).is_some() {
                return Err(format!("image {}: one IMAGE only ({a:?})", o.action));
            }
            continue;
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next().and_then(|v| v.into_string().ok()))
                .ok_or_else(|| format!("image {}: {name} needs a value", o.action))
        };
        match name.as_str() {
            "--config" => o.config = Some(value()?),
            "--runtime" => {
                o.runtime = match value()?.as_str() {
                    "podman" => Runtime::Podman,
                    "apptainer" => Runtime::Apptainer,
                    other => {
                        return Err(format!(
                            "--runtime needs podman or apptainer, not {other:?}"
                        ))
                    }
                }
            }
            "--store" => o.store = Some(PathBuf::from(value()?)),
            "--archive" if o.action == "load" => o.archive = Some(PathBuf::from(value()?)),
            _ => return Err(format!("image {}: unexpected argument {a:?}", o.action)),
        }
    }
    let needs_image = o.action != "list";
    if needs_image != o.image.is_some() {
        return Err(if needs_image {
            format!("image {} needs the IMAGE reference", o.action)
        } else {
            "image list takes no IMAGE".to_string()
        });
    }
    if o.action == "load" && o.archive.is_none() {
        return Err("image load needs --archive FILE".into());
    }
    if o.store.is_some() && o.runtime == Runtime::Apptainer {
        return Err("--store is for podman; apptainer's SIF files go to apptainer.sif_dir".into());
    }
    Ok(o)
}

fn image_cmd(args: impl Iterator<Item = OsString>) -> ExitCode {
    let o = match parse_image(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("tre-spank: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!(
            "tre-spank: image {}: only root manages the site image stores",
            o.action
        );
        return ExitCode::from(2);
    }
    let opts = Opts {
        config: o.config.clone(),
        ..Opts::default()
    };
    let config = match load(&opts) {
        Ok((c, _, _)) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let site = Site {
        config: &config,
        runtime: o.runtime,
        store: o.store.as_deref(),
    };
    let image = match o.image.as_deref().map(|r| approved(&config, r)).transpose() {
        Ok(i) => i,
        Err(e) => {
            eprintln!("tre-spank: image {}: {e}", o.action);
            return ExitCode::from(1);
        }
    };
    let result = match (o.action.as_str(), &image, &o.archive) {
        ("load", Some(image), Some(archive)) => site.load(image, archive).map(Some),
        ("pull", Some(image), _) => site.pull(image).map(Some),
        ("remove", Some(image), _) => site.remove(image).map(Some),
        _ => site.list().map(|()| None),
    };
    match result {
        Ok(line) => {
            if let Some(line) = line {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tre-spank: image {}: {e}", o.action);
            ExitCode::from(1)
        }
    }
}

/// `number --job-id J [--restart-count R] [--config PATH]`: the job's NUMBER.
fn number(mut args: impl Iterator<Item = OsString>) -> Result<u32, String> {
    let (mut job_id, mut restarts, mut config_arg) = (None, 0u32, None);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .and_then(|v| v.into_string().ok())
                .ok_or(format!("{a:?} needs a value"))
        };
        match a.to_str() {
            Some("--job-id") => {
                job_id = Some(
                    value()?
                        .parse::<u32>()
                        .map_err(|e| format!("--job-id: {e}"))?,
                )
            }
            Some("--restart-count") => {
                restarts = value()?
                    .parse::<u32>()
                    .map_err(|e| format!("--restart-count: {e}"))?
            }
            Some("--config") => config_arg = Some(format!("config={}", value()?)),
            _ => return Err(format!("unexpected argument {a:?}")),
        }
    }
    let job_id = job_id.ok_or("missing --job-id")?;
    let args: Vec<&str> = config_arg.iter().map(String::as_str).collect();
    let config = job::load_node_config(&args, &job::node_name()).map_err(|e| e.to_string())?;
    trust::check_file("secret_file", &config.secret_file, trust::SECRET_OWNERS)
        .map_err(|e| format!("refusing {e}"))?;
    let secret = std::fs::read(&config.secret_file).map_err(|e| {
        format!(
            "cannot read the job number secret {}: {e}",
            config.secret_file.display()
        )
    })?;
    job_number(&secret, job_id, restarts).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let sub = args.next().and_then(|a| a.into_string().ok());
    let admin = |sub: &str, args, f: fn(&Opts) -> ExitCode| match parse_opts(sub, args) {
        Ok(o) => f(&o),
        Err(e) => {
            eprintln!("tre-spank: {e}\n{USAGE}");
            ExitCode::from(2)
        }
    };
    match sub.as_deref() {
        Some("launch") => match parse_launch(args) {
            Ok(launch) => ExitCode::from(u8::try_from(supervise(&launch)).unwrap_or(125)),
            Err(e) => {
                eprintln!("tre-spank: {e}\n{USAGE}");
                ExitCode::from(125)
            }
        },
        Some("check") => admin("check", args, check),
        Some("plan") => admin("plan", args, plan_cmd),
        Some("sweep") => admin("sweep", args, sweep_cmd),
        Some("cleanup") => cleanup_cmd(args),
        Some("image") => image_cmd(args),
        Some("number") => match number(args) {
            Ok(n) => {
                println!("{n}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tre-spank: {e}");
                ExitCode::from(2)
            }
        },
        Some("--help" | "-h" | "help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
