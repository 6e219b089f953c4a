//! `tre-spank image`: puts approved images into the node's site stores, lists and
//! removes them, as root (the command lines are `rules::image_store`'s).
//!
//! A store is root's and read-only to users: the podman store's directories are made
//! world-readable after each change (podman creates them 0700), with set-id bits and
//! device nodes (other than overlay's whiteouts) made harmless, because a layer's files
//! are root's on the host. SIF files are built under a temporary name and renamed, so
//! a job never sees half an image.

use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::trust::{check_owned, check_owned_dir};
use crate::rules::archive::{archive_kind, is_sif, tar_member, ArchiveKind};
use crate::rules::config::Config;
use crate::rules::image::ImageRef;
use crate::rules::image_store::{
    self, apptainer_build, image_id_in_list, names_to_restore, sif_digest_from_record,
    sif_digest_path, sif_digest_record, sif_target, sif_temporary, store_locked_dir_mode,
    store_mode, unapproved_names, xattr_kept, ApptainerSource, EntryKind, PodmanStore, SifStamp,
    StoreError, STORE_IMAGE_LIST,
};
use crate::rules::options::Runtime;
use crate::rules::runtime::display_command;

/// Root's podman run root for store work (podman's lock and state files).
const PODMAN_RUNROOT: &str = "/run/tre-spank/image-store";

#[derive(Debug, thiserror::Error)]
pub enum ImageStoreError {
    #[error(transparent)]
    Rule(#[from] StoreError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot run {command}: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("{command} failed ({status}){}", if stderr.is_empty() { String::new() } else { format!(": {stderr}") })]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("{path} is not a directory owned by root that only root can write")]
    Unsafe { path: PathBuf },
    #[error("image {image} is not in the {what} {store}")]
    NotThere {
        image: String,
        what: &'static str,
        store: PathBuf,
    },
    #[error("the image reference has no name")]
    NoName,
    #[error("{path}: refused: {why}")]
    UnsafeInput { path: PathBuf, why: &'static str },
    #[error("interrupted; the store was left readable by jobs")]
    Interrupted,
    #[error("{path} could not be made harmless, so it stays where no user reaches it (jobs of that image fail until it is cleaned: run the command again){}: {source}", if *more == 0 { String::new() } else { format!(" ({more} more such entries)") })]
    LeftPrivate {
        path: PathBuf,
        source: std::io::Error,
        more: usize,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ImageStoreError + '_ {
    move |source| ImageStoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The command for argv (no shell), stdin closed, and how to name it in errors.
fn command(argv: &[OsString]) -> Result<(Command, String), ImageStoreError> {
    let shown = display_command(argv);
    let Some((program, args)) = argv.split_first() else {
        return Err(ImageStoreError::Spawn {
            command: shown,
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command"),
        });
    };
    let mut c = Command::new(program);
    c.args(args).stdin(Stdio::null());
    Ok((c, shown))
}

fn spawn_error(command: &str) -> impl FnOnce(std::io::Error) -> ImageStoreError + '_ {
    move |source| ImageStoreError::Spawn {
        command: command.to_string(),
        source,
    }
}

/// Runs argv, its output captured; stdout on success.
fn run(argv: &[OsString]) -> Result<String, ImageStoreError> {
    let (mut c, command) = command(argv)?;
    let out = c.output().map_err(spawn_error(&command))?;
    if !out.status.success() {
        return Err(ImageStoreError::Failed {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs argv with its output shown (list).
fn show(argv: &[OsString]) -> Result<(), ImageStoreError> {
    let (mut c, command) = command(argv)?;
    let status = c.status().map_err(spawn_error(&command))?;
    if !status.success() {
        return Err(ImageStoreError::Failed {
            command,
            status: status.to_string(),
            stderr: String::new(),
        });
    }
    Ok(())
}

/// An archive opened once for `image load`: read from this one descriptor only (the
/// runtime gets `/proc/PID/fd/N`, the same open file), never opened again by path.
pub struct Input {
    file: File,
    path: PathBuf,
}

impl Input {
    /// Opens `path` without following a symbolic link anywhere on it, and refuses what
    /// cannot be read safely: anything but a regular file, a file someone other than
    /// root owns or can write (its bytes could change while root reads them), a file
    /// with another hard link (a root file linked into a user's directory).
    pub fn open(path: &Path) -> Result<Input, ImageStoreError> {
        let refuse = |why: &'static str| ImageStoreError::UnsafeInput {
            path: path.to_path_buf(),
            why,
        };
        let fd = open_nofollow_path(path).map_err(|e| match e {
            nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR => {
                refuse("a symbolic link is on its path (tre-spank image load follows none)")
            }
            e => io(path)(std::io::Error::from(e)),
        })?;
        let file = File::from(fd);
        let m = file.metadata().map_err(io(path))?;
        if !m.is_file() {
            return Err(refuse("not a regular file"));
        }
        if check_owned(m.uid(), m.mode(), &[0], false).is_err() {
            return Err(refuse(
                "someone other than root can write it; copy it as root into a directory only root can write, check the copy, and load that",
            ));
        }
        if m.nlink() != 1 {
            return Err(refuse("it has more than one hard link"));
        }
        Ok(Input {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The same open file, for a child process of this one.
    pub fn proc_path(&self) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            self.file.as_raw_fd()
        ))
    }

    /// What the file holds: a SIF, or a docker/OCI archive (tar members read from their
    /// headers, without unpacking anything).
    pub fn classify(&self) -> Result<ArchiveKind, ImageStoreError> {
        let path = self.path.as_path();
        let f = &self.file;
        let mut head = [0u8; 512];
        let got = read_full_at(f, &mut head, 0).map_err(io(path))?;
        if is_sif(&head[..got]) {
            return Ok(ArchiveKind::Sif);
        }
        let mut names = Vec::new();
        let mut offset = 0u64;
        // The top-level members are enough; a long archive is walked header to header.
        for _ in 0..100_000 {
            let mut block = [0u8; 512];
            if read_full_at(f, &mut block, offset).map_err(io(path))? < block.len() {
                break;
            }
            let Some((name, size)) = tar_member(&block) else {
                break;
            };
            names.push(name);
            offset += 512 + size.div_ceil(512) * 512;
        }
        archive_kind(names.iter().map(String::as_str)).ok_or_else(|| {
            ImageStoreError::Rule(StoreError::UnknownArchive {
                path: path.to_path_buf(),
            })
        })
    }

    /// Copies the whole file, from its start, into `to` (a new file, root-only).
    fn copy_to(&self, to: &Path) -> Result<(), ImageStoreError> {
        let mut out = create_new(to, 0o600)?;
        let mut offset = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = self
                .file
                .read_at(&mut buf, offset)
                .map_err(io(&self.path))?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n]).map_err(io(to))?;
            offset += n as u64;
        }
        out.sync_all().map_err(io(to))
    }
}

/// A new file for writing (an existing entry, a link included, is an error).
fn create_new(path: &Path, mode: u32) -> Result<File, ImageStoreError> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(io(path))
}

/// Reads into `buf` from `offset` until it is full or the file ends; the bytes read.
fn read_full_at(f: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read_at(&mut buf[got..], offset + got as u64)? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

/// Opens a file component by component, each `O_NOFOLLOW`: a symbolic link anywhere on
/// the path is refused (`ELOOP`, or `ENOTDIR` for a link to a file), never followed.
fn open_nofollow_path(path: &Path) -> nix::Result<OwnedFd> {
    use nix::fcntl::{open, openat, OFlag};
    use nix::sys::stat::Mode;
    use std::path::Component;
    let dir_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let file_flags = OFlag::O_RDONLY
        | OFlag::O_NOFOLLOW
        | OFlag::O_NONBLOCK
        | OFlag::O_NOCTTY
        | OFlag::O_CLOEXEC;
    let start = if path.is_absolute() { "/" } else { "." };
    let mut dir = open(start, dir_flags, Mode::empty())?;
    let parts: Vec<Component<'_>> = path
        .components()
        .filter(|c| !matches!(c, Component::RootDir | Component::CurDir))
        .collect();
    let Some((last, dirs)) = parts.split_last() else {
        return Err(nix::errno::Errno::EISDIR);
    };
    for c in dirs {
        dir = openat(dir.as_fd(), c.as_os_str(), dir_flags, Mode::empty())?;
    }
    openat(dir.as_fd(), last.as_os_str(), file_flags, Mode::empty())
}

/// Creates `dir` (and parents) root-owned 0755 if absent; refuses one that someone
/// other than root owns or can write, or a symbolic link.
fn ensure_root_dir(dir: &Path) -> Result<(), ImageStoreError> {
    if std::fs::symlink_metadata(dir).is_err() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(io(dir))?;
    }
    let m = std::fs::symlink_metadata(dir).map_err(io(dir))?;
    check_owned_dir(&m, 0).map_err(|_| ImageStoreError::Unsafe {
        path: dir.to_path_buf(),
    })?;
    Ok(())
}

/// What opening a store did: entries changed, and the entries that could not be made
/// clean (each left where no user reaches it: its directory stays private, 0700).
#[derive(Debug, Default)]
pub struct Opened {
    pub changed: usize,
    pub left_private: Vec<(PathBuf, std::io::Error)>,
}

impl Opened {
    /// The first entry left private as an error (the others are counted in it).
    pub fn into_result(mut self) -> Result<usize, ImageStoreError> {
        if self.left_private.is_empty() {
            return Ok(self.changed);
        }
        let more = self.left_private.len() - 1;
        let (path, source) = self.left_private.swap_remove(0);
        Err(ImageStoreError::LeftPrivate { path, source, more })
    }
}

fn entry_kind(m: &std::fs::Metadata) -> EntryKind {
    let ft = m.file_type();
    if ft.is_symlink() {
        EntryKind::Symlink
    } else if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_file() {
        EntryKind::File
    } else if ft.is_char_device() && m.rdev() == 0 {
        EntryKind::Whiteout
    } else {
        EntryKind::Special
    }
}

/// Root's (owner and group), no extended attribute that carries rights. Never follows
/// a symbolic link (`lchown`, `lremovexattr`).
fn disown(path: &Path, m: &std::fs::Metadata) -> std::io::Result<bool> {
    let mut changed = false;
    for name in xattr::list(path)? {
        if !xattr_kept(name.as_bytes()) {
            xattr::remove(path, &name)?;
            changed = true;
        }
    }
    if m.uid() != 0 || m.gid() != 0 {
        std::os::unix::fs::lchown(path, Some(0), Some(0))?;
        changed = true;
    }
    Ok(changed)
}

fn set_mode(path: &Path, have: u32, want: u32) -> std::io::Result<bool> {
    if have & 0o7777 == want {
        return Ok(false);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(want))?;
    Ok(true)
}

/// A directory that could not be made clean: root's and 0700, so that nobody reaches
/// what it holds. Whether that held.
fn make_private(path: &Path) -> bool {
    std::os::unix::fs::lchown(path, Some(0), Some(0)).is_ok()
        && std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).is_ok()
}

/// Cleans one entry that is not a directory: disowned, then its clean mode (after the
/// chown, which the kernel lets clear set-id bits too).
fn clean_leaf(path: &Path, m: &std::fs::Metadata) -> std::io::Result<bool> {
    let kind = entry_kind(m);
    let mut changed = disown(path, m)?;
    if let Some(want) = store_mode(kind, m.mode()) {
        // The parent is root's and writable by root only: the entry is still the one
        // just looked at, not a link swapped in.
        let have = std::fs::symlink_metadata(path)?.mode();
        changed |= set_mode(path, have, want)?;
    }
    Ok(changed)
}

struct Frame {
    dir: PathBuf,
    names: std::vec::IntoIter<OsString>,
    clean: bool,
}

/// Locks a directory before its contents are looked at (root's, writable by root only,
/// opened to nobody yet) and lists it.
fn enter(dir: &Path, m: &std::fs::Metadata, opened: &mut Opened) -> std::io::Result<Frame> {
    if disown(dir, m)? {
        opened.changed += 1;
    }
    if set_mode(dir, m.mode(), store_locked_dir_mode(m.mode()))? {
        opened.changed += 1;
    }
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir)? {
        names.push(e?.file_name());
    }
    Ok(Frame {
        dir: dir.to_path_buf(),
        names: names.into_iter(),
        clean: true,
    })
}

/// Makes the podman store readable by jobs and harmless: every entry root's, no
/// capability, ACL or other `security.*` attribute, no set-id bit, no usable device
/// node, nothing writable but by root (overlay whiteouts stay: they mean "deleted").
///
/// Depth first and children first: a directory is locked (root's, no one else writes)
/// when entered and opened to users only once everything under it is clean. A new
/// layer, which containers/storage creates 0700, thus stays private until it is clean;
/// an entry that cannot be cleaned keeps its directory private (0700), and the walk goes
/// on with the rest, so the store's other images stay readable.
pub fn open_store_for_reading(store: &Path) -> Opened {
    let mut opened = Opened::default();
    let root = match std::fs::symlink_metadata(store) {
        Ok(m) if m.is_dir() => m,
        Ok(_) => {
            let e = std::io::Error::other("not a directory");
            opened.left_private.push((store.to_path_buf(), e));
            return opened;
        }
        Err(e) => {
            opened.left_private.push((store.to_path_buf(), e));
            return opened;
        }
    };
    let mut stack = match enter(store, &root, &mut opened) {
        Ok(f) => vec![f],
        Err(e) => {
            opened.left_private.push((store.to_path_buf(), e));
            return opened;
        }
    };
    while let Some(top) = stack.last_mut() {
        let Some(name) = top.names.next() else {
            let Some(done) = stack.pop() else { break };
            let result = std::fs::symlink_metadata(&done.dir).and_then(|m| {
                if done.clean {
                    let want = store_mode(EntryKind::Dir, m.mode()).unwrap_or(0o755);
                    set_mode(&done.dir, m.mode(), want)
                } else {
                    Ok(false)
                }
            });
            let clean = match result {
                Ok(changed) => {
                    opened.changed += usize::from(changed);
                    done.clean
                }
                Err(e) => {
                    opened.left_private.push((done.dir.clone(), e));
                    false
                }
            };
            if !clean && !make_private(&done.dir) {
                if let Some(parent) = stack.last_mut() {
                    parent.clean = false;
                }
            }
            continue;
        };
        let path = top.dir.join(&name);
        let m = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                top.clean = false;
                opened.left_private.push((path, e));
                continue;
            }
        };
        if m.is_dir() {
            match enter(&path, &m, &mut opened) {
                Ok(frame) => stack.push(frame),
                Err(e) => {
                    opened.left_private.push((path.clone(), e));
                    if !make_private(&path) {
                        top.clean = false;
                    }
                }
            }
            continue;
        }
        match clean_leaf(&path, &m) {
            Ok(changed) => opened.changed += usize::from(changed),
            Err(e) => {
                top.clean = false;
                opened.left_private.push((path, e));
            }
        }
    }
    // The store itself stays open: its other images must stay readable.
    if let Ok(m) = std::fs::symlink_metadata(store) {
        if let Err(e) = set_mode(store, m.mode(), 0o755) {
            opened.left_private.push((store.to_path_buf(), e));
        }
    }
    opened
}

/// Where and how `tre-spank image` works for one runtime.
pub struct Site<'a> {
    pub config: &'a Config,
    pub runtime: Runtime,
    /// `--store`: one of the configured podman stores.
    pub store: Option<&'a Path>,
}

impl Site<'_> {
    fn podman_store(&self) -> Result<PathBuf, ImageStoreError> {
        Ok(image_store::podman_store(self.config, self.store)?)
    }

    fn podman<'b>(&'b self, store: &'b Path) -> Result<PodmanStore<'b>, ImageStoreError> {
        ensure_root_dir(store)?;
        let runroot = Path::new(PODMAN_RUNROOT);
        if std::fs::symlink_metadata(runroot).is_err() {
            std::fs::create_dir_all(runroot).map_err(io(runroot))?;
            std::fs::set_permissions(runroot, std::fs::Permissions::from_mode(0o700))
                .map_err(io(runroot))?;
        }
        Ok(PodmanStore {
            podman: &self.config.podman.path,
            store,
            runroot,
        })
    }

    /// Names the archive brought that were not approved go; the store then opens for
    /// reading. Returns the image ID.
    fn podman_finish(
        &self,
        p: &PodmanStore<'_>,
        before: &str,
        id: &str,
        image: &ImageRef,
    ) -> Result<String, ImageStoreError> {
        let names = run(&p.names(id))?;
        let removed = unapproved_names(&names, image);
        for name in &removed {
            run(&p.untag(id, name))?;
        }
        for (old, name) in names_to_restore(before, &removed, id) {
            run(&p.tag_id(&old, &name))?;
        }
        Ok(id.to_string())
    }

    /// `image load --archive FILE IMAGE`: the archive's image, under the approved name.
    /// The archive is opened once ([`Input::open`]) and read from that open file only.
    pub fn load(&self, image: &ImageRef, archive: &Path) -> Result<String, ImageStoreError> {
        image_store::check_archive_reference(self.runtime, image)?;
        let input = Input::open(archive)?;
        let kind = input.classify()?;
        let source = input.proc_path();
        match self.runtime {
            Runtime::Podman => {
                if kind == ArchiveKind::Sif {
                    return Err(StoreError::SifForPodman {
                        path: archive.to_path_buf(),
                    }
                    .into());
                }
                let store = self.podman_store()?;
                let p = self.podman(&store)?;
                let id = then_open(&store, || {
                    let before = run(&p.name_ids())?;
                    let id = run(&p.pull_archive(kind, &source))?.trim().to_string();
                    run(&p.tag(&id, image))?;
                    self.podman_finish(&p, &before, &id, image)
                })?;
                Ok(format!(
                    "loaded {image} (image {}) into the podman store {}",
                    short(&id),
                    store.display()
                ))
            }
            Runtime::Apptainer => {
                let sif = self.install_sif(image, |tmp| {
                    if kind == ArchiveKind::Sif {
                        input.copy_to(tmp)
                    } else {
                        run(&apptainer_build(
                            &self.config.apptainer.path,
                            tmp,
                            ApptainerSource::Archive(kind, &source),
                        ))
                        .map(|_| ())
                    }
                })?;
                Ok(format!("loaded {image} as {}", sif.display()))
            }
        }
    }

    /// `image pull IMAGE`: from the registry, where the node can reach it.
    pub fn pull(&self, image: &ImageRef) -> Result<String, ImageStoreError> {
        match self.runtime {
            Runtime::Podman => {
                let store = self.podman_store()?;
                let p = self.podman(&store)?;
                let id = then_open(&store, || {
                    let before = run(&p.name_ids())?;
                    let id = run(&p.pull_registry(image))?.trim().to_string();
                    self.podman_finish(&p, &before, &id, image)
                })?;
                Ok(format!(
                    "pulled {image} (image {}) into the podman store {}",
                    short(&id),
                    store.display()
                ))
            }
            Runtime::Apptainer => {
                let sif = self.install_sif(image, |tmp| {
                    run(&apptainer_build(
                        &self.config.apptainer.path,
                        tmp,
                        ApptainerSource::Registry(image),
                    ))
                    .map(|_| ())
                })?;
                Ok(format!("pulled {image} as {}", sif.display()))
            }
        }
    }

    /// Builds the SIF under a temporary name beside its final path, then renames it.
    fn install_sif(
        &self,
        image: &ImageRef,
        make: impl FnOnce(&Path) -> Result<(), ImageStoreError>,
    ) -> Result<PathBuf, ImageStoreError> {
        let sif = sif_target(self.config, image).ok_or(ImageStoreError::NoName)?;
        let sif_dir = &self.config.apptainer.sif_dir;
        ensure_root_dir(sif_dir)?;
        // Each directory between sif_dir and the file: root's, 0755.
        let mut dir = sif_dir.clone();
        if let Ok(rel) = sif.parent().unwrap_or(sif_dir).strip_prefix(sif_dir) {
            for c in rel.components() {
                dir.push(c);
                ensure_root_dir(&dir)?;
            }
        }
        let tmp = sif_temporary(&sif, std::process::id());
        let _ = std::fs::remove_file(&tmp);
        let record = sif_digest_path(&tmp);
        let _ = std::fs::remove_file(&record);
        let made = make(&tmp).and_then(|()| {
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))
                .map_err(io(&tmp))?;
            write_sif_digest(&tmp, &record)?;
            std::fs::rename(&tmp, &sif).map_err(io(&sif))?;
            // A rename keeps the modification time the record was made for.
            std::fs::rename(&record, sif_digest_path(&sif)).map_err(io(&sif))
        });
        if made.is_err() {
            let _ = std::fs::remove_file(&tmp);
            let _ = std::fs::remove_file(&record);
        }
        made.map(|()| sif)
    }

    /// `image list`: what the store holds.
    pub fn list(&self) -> Result<(), ImageStoreError> {
        match self.runtime {
            Runtime::Podman => {
                let store = self.podman_store()?;
                if std::fs::symlink_metadata(&store).is_err() {
                    println!("the podman store {} does not exist yet", store.display());
                    return Ok(());
                }
                println!("podman store {}:", store.display());
                let p = self.podman(&store)?;
                then_open(&store, || show(&p.list()))
            }
            Runtime::Apptainer => {
                let dir = &self.config.apptainer.sif_dir;
                println!("apptainer SIF directory {}:", dir.display());
                let mut found = Vec::new();
                let mut stack = vec![dir.clone()];
                while let Some(d) = stack.pop() {
                    let Ok(entries) = std::fs::read_dir(&d) else {
                        continue;
                    };
                    for e in entries.flatten() {
                        let path = e.path();
                        let Ok(m) = std::fs::symlink_metadata(&path) else {
                            continue;
                        };
                        if m.is_dir() {
                            stack.push(path);
                        } else if path.extension().is_some_and(|x| x == "sif")
                            && !e.file_name().to_string_lossy().starts_with('.')
                        {
                            found.push((
                                path.strip_prefix(dir).unwrap_or(&path).to_path_buf(),
                                m.len(),
                            ));
                        }
                    }
                }
                found.sort();
                for (p, len) in found {
                    println!("{}  {len} bytes", p.display());
                }
                Ok(())
            }
        }
    }

    /// `image remove IMAGE`.
    pub fn remove(&self, image: &ImageRef) -> Result<String, ImageStoreError> {
        match self.runtime {
            Runtime::Podman => {
                let store = self.podman_store()?;
                let not_there = || ImageStoreError::NotThere {
                    image: image.to_string(),
                    what: "podman store",
                    store: store.clone(),
                };
                if std::fs::symlink_metadata(&store).is_err() {
                    return Err(not_there());
                }
                let p = self.podman(&store)?;
                // podman rewrites the store's lists root-only (0600) as it removes.
                then_open(&store, || match run(&p.remove(image)) {
                    Ok(_) => Ok(()),
                    Err(ImageStoreError::Failed { stderr, .. })
                        if stderr.contains("image not known") =>
                    {
                        Err(not_there())
                    }
                    Err(e) => Err(e),
                })?;
                Ok(format!(
                    "removed {image} from the podman store {}",
                    store.display()
                ))
            }
            Runtime::Apptainer => {
                let sif = sif_target(self.config, image).ok_or(ImageStoreError::NoName)?;
                let _ = std::fs::remove_file(sif_digest_path(&sif));
                match std::fs::remove_file(&sif) {
                    Ok(()) => Ok(format!("removed {image} ({})", sif.display())),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        Err(ImageStoreError::NotThere {
                            image: image.to_string(),
                            what: "SIF directory",
                            store: self.config.apptainer.sif_dir.clone(),
                        })
                    }
                    Err(e) => Err(io(&sif)(e)),
                }
            }
        }
    }
}

fn stamp_of(m: &std::fs::Metadata) -> SifStamp {
    SifStamp {
        len: m.len(),
        mtime: m.mtime(),
        mtime_nsec: m.mtime_nsec(),
    }
}

/// Hashes the SIF (once, as root, at install) and writes its digest record, 0644.
fn write_sif_digest(sif: &Path, record: &Path) -> Result<(), ImageStoreError> {
    use sha2::{Digest, Sha256};
    let mut f = File::open(sif).map_err(io(sif))?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf).map_err(io(sif))?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    let hex: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let stamp = stamp_of(&f.metadata().map_err(io(sif))?);
    let mut out = create_new(record, 0o644)?;
    // Whatever the umask: jobs read it.
    out.set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(io(record))?;
    out.write_all(sif_digest_record(&hex, stamp).as_bytes())
        .map_err(io(record))
}

/// Reads a small root-managed file without following a link; `None` when absent,
/// unreadable or larger than `limit`.
fn read_small(path: &Path, limit: u64) -> Option<Vec<u8>> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .ok()?;
    let m = f.metadata().ok()?;
    if !m.is_file() || m.len() > limit {
        return None;
    }
    let mut bytes = Vec::with_capacity(m.len() as usize);
    std::io::Read::read_to_end(&mut std::io::Read::take(&f, limit), &mut bytes).ok()?;
    Some(bytes)
}

fn sif_digest(sif: &Path) -> Option<String> {
    let stamp = stamp_of(&std::fs::symlink_metadata(sif).ok()?);
    let record = read_small(&sif_digest_path(sif), 4096)?;
    sif_digest_from_record(std::str::from_utf8(&record).ok()?, stamp)
}

/// The image's immutable ID for the audit records: under podman, the image ID in the
/// first site store that has the reference (`unknown` if none does: the image comes
/// from the user's own storage, or is missing); under apptainer, the SHA-256 recorded
/// when `tre-spank image` installed the SIF (`unknown` for a SIF put there otherwise).
/// Reads root-managed files only; no runtime call.
pub fn image_id(config: &Config, runtime: Runtime, image: &ImageRef, sif: Option<&Path>) -> String {
    let found = match (runtime, sif) {
        (Runtime::Podman, _) => config.podman.image_stores.iter().find_map(|store| {
            let list = read_small(&store.join(STORE_IMAGE_LIST), 64 << 20)?;
            image_id_in_list(&list, image)
        }),
        (Runtime::Apptainer, Some(sif)) => sif_digest(sif),
        (Runtime::Apptainer, None) => None,
    };
    found.unwrap_or_else(|| "unknown".to_string())
}

/// Runs an admin command's work on a podman store, then opens the store for jobs
/// whatever the work did: podman rewrites the store's lists root-only (0600), and a
/// failed or interrupted pull leaves layers behind. SIGINT, SIGTERM and SIGHUP wait
/// until the store is open (the runtime, in the same process group, still gets a
/// terminal's Ctrl-C and stops).
fn then_open<T>(
    store: &Path,
    work: impl FnOnce() -> Result<T, ImageStoreError>,
) -> Result<T, ImageStoreError> {
    let held = crate::host::interrupt::Held::new();
    let result = work();
    let opened = open_store_for_reading(store).into_result();
    let interrupted = held.release();
    match (result, opened) {
        (Err(e), _) | (Ok(_), Err(e)) => Err(e),
        (Ok(_), Ok(_)) if interrupted => Err(ImageStoreError::Interrupted),
        (Ok(v), Ok(_)) => Ok(v),
    }
}

fn short(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rootfs_tar_is_not_an_image_archive_and_a_docker_archive_is() {
        let dir = tempfile::tempdir().unwrap();
        let tar = |names: &[&str]| {
            let mut bytes = Vec::new();
            for n in names {
                let mut b = [0u8; 512];
                b[..n.len()].copy_from_slice(n.as_bytes());
                b[100..108].copy_from_slice(b"0000644\0");
                b[124..136].copy_from_slice(b"00000000005\0");
                b[257..263].copy_from_slice(b"ustar\0");
                b[148..156].copy_from_slice(b"        ");
                let sum: u64 = b.iter().map(|x| u64::from(*x)).sum();
                b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
                bytes.extend_from_slice(&b);
                let mut data = [0u8; 512];
                data[..5].copy_from_slice(b"hello");
                bytes.extend_from_slice(&data);
            }
            bytes.extend_from_slice(&[0u8; 1024]);
            bytes
        };
        let p = dir.path().join("a.tar");
        let classify = |bytes: &[u8]| {
            let _ = std::fs::remove_file(&p);
            std::fs::write(&p, bytes).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
            let f = File::open(&p).unwrap();
            Input {
                file: f,
                path: p.clone(),
            }
            .classify()
        };
        assert_eq!(
            classify(&tar(&["abc/layer.tar", "manifest.json"])).unwrap(),
            ArchiveKind::DockerArchive
        );
        assert_eq!(
            classify(&tar(&["blobs/x", "index.json", "oci-layout"])).unwrap(),
            ArchiveKind::OciArchive
        );
        assert!(classify(&tar(&["./bin/sh", "./etc/passwd"]))
            .unwrap_err()
            .to_string()
            .contains("is neither an image archive"));
        assert!(classify(b"not a tar").is_err());
    }

    #[test]
    fn opening_a_store_drops_set_id_bits_and_keeps_it_root_writable_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("s");
        std::fs::create_dir(&store).unwrap();
        std::fs::create_dir(store.join("overlay")).unwrap();
        std::fs::set_permissions(
            store.join("overlay"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        let f = store.join("overlay/suid");
        std::fs::write(&f, b"x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o4700)).unwrap();
        let g = store.join("overlay/data");
        std::fs::write(&g, b"x").unwrap();
        std::fs::set_permissions(&g, std::fs::Permissions::from_mode(0o666)).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", store.join("overlay/link")).unwrap();
        open_store_for_reading(&store).into_result().unwrap();
        let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&store.join("overlay")), 0o755);
        assert_eq!(mode(&f), 0o755);
        assert_eq!(mode(&g), 0o644);
        assert_eq!(mode(&store), 0o755);
    }

    /// A v2 file capability (`setcap cap_dac_read_search+ep`), as the kernel stores it.
    fn capability() -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&0x0200_0001u32.to_le_bytes()); // revision 2, effective
        v.extend_from_slice(&(1u32 << 2).to_le_bytes()); // permitted: CAP_DAC_READ_SEARCH
        v.extend_from_slice(&[0u8; 12]);
        v
    }

    #[test]
    fn a_store_keeps_no_capability_acl_or_foreign_owner_and_opens_a_new_layer_last() {
        let root = nix::unistd::geteuid().is_root();
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("s");
        let layer = store.join("overlay/abc");
        std::fs::create_dir_all(layer.join("diff/opt/dir")).unwrap();
        std::fs::set_permissions(
            store.join("overlay"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::fs::set_permissions(&layer, std::fs::Permissions::from_mode(0o700)).unwrap();
        let tool = layer.join("diff/opt/tool");
        std::fs::write(&tool, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o4750)).unwrap();
        let fifo = layer.join("diff/opt/fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o666)).unwrap();
        xattr::set(&tool, "user.note", b"kept").unwrap();
        if root {
            xattr::set(&tool, "security.capability", &capability()).unwrap();
            xattr::set(&tool, "trusted.other", b"x").unwrap();
            xattr::set(layer.join("diff/opt/dir"), "trusted.overlay.opaque", b"y").unwrap();
            for p in [&tool, &layer.join("diff/opt/dir")] {
                std::os::unix::fs::lchown(p, Some(1005), Some(1005)).unwrap();
            }
        }
        let opened = open_store_for_reading(&store);
        let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().mode() & 0o7777;
        let names = |p: &Path| -> Vec<String> {
            let mut v: Vec<String> = xattr::list(p)
                .unwrap()
                .map(|n| n.to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        if root {
            assert!(opened.left_private.is_empty(), "{:?}", opened.left_private);
            assert_eq!(names(&tool), ["user.note"]);
            assert_eq!(
                names(&layer.join("diff/opt/dir")),
                ["trusted.overlay.opaque"]
            );
            for p in [&tool, &layer.join("diff/opt/dir"), &layer] {
                let m = std::fs::symlink_metadata(p).unwrap();
                assert_eq!((m.uid(), m.gid()), (0, 0), "{}", p.display());
            }
            assert_eq!(mode(&tool), 0o755);
            assert_eq!(mode(&fifo), 0);
            assert_eq!(mode(&layer), 0o755, "the clean layer is opened");
        } else {
            // Not root: the files stay the caller's, which a store must not hold, so the
            // layer stays private.
            assert!(!opened.left_private.is_empty());
            assert_eq!(
                mode(&layer),
                0o700,
                "a layer that is not clean stays private"
            );
        }
        assert_eq!(mode(&store), 0o755);
        assert_eq!(mode(&store.join("overlay")), 0o755);
    }

    #[test]
    fn load_input_is_opened_once_without_links_and_only_if_root_alone_writes_it() {
        let root = nix::unistd::geteuid().is_root();
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("img.tar");
        std::fs::write(&real, b"bytes").unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o644)).unwrap();
        let linked_dir = dir.path().join("via");
        std::os::unix::fs::symlink(dir.path(), &linked_dir).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("link.tar")).unwrap();
        let why = |p: &Path| match Input::open(p) {
            Err(ImageStoreError::UnsafeInput { why, .. }) => why.to_string(),
            Err(e) => format!("other error: {e}"),
            Ok(_) => "opened".to_string(),
        };
        assert!(why(&dir.path().join("link.tar")).contains("symbolic link"));
        assert!(why(&linked_dir.join("img.tar")).contains("symbolic link"));
        assert_eq!(why(dir.path()), "not a regular file");
        if root {
            assert_eq!(why(&real), "opened");
            let input = Input::open(&real).unwrap();
            // The runtime reads the same open file, whatever the path becomes.
            std::fs::remove_file(&real).unwrap();
            std::os::unix::fs::symlink("/etc/shadow", &real).unwrap();
            assert_eq!(std::fs::read(input.proc_path()).unwrap(), b"bytes");
            std::fs::remove_file(&real).unwrap();
            std::fs::write(&real, b"bytes").unwrap();
            std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o664)).unwrap();
            assert!(why(&real).contains("someone other than root can write it"));
            std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o644)).unwrap();
            std::fs::hard_link(&real, dir.path().join("second")).unwrap();
            assert_eq!(why(&real), "it has more than one hard link");
        } else {
            assert!(why(&real).contains("someone other than root can write it"));
        }
    }
}
