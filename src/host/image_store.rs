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
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::rules::config::Config;
use crate::rules::image::ImageRef;
use crate::rules::image_store::{
    self, apptainer_build, archive_kind, is_sif, names_to_restore, sif_target, sif_temporary,
    tar_member, unapproved_names, ApptainerSource, ArchiveKind, PodmanStore, StoreError,
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

/// What the file holds: a SIF, or a docker/OCI archive (tar members read from their
/// headers, without unpacking anything).
pub fn classify(path: &Path) -> Result<ArchiveKind, ImageStoreError> {
    let mut f = File::open(path).map_err(io(path))?;
    let mut head = [0u8; 512];
    let mut got = 0;
    while got < head.len() {
        match f.read(&mut head[got..]).map_err(io(path))? {
            0 => break,
            n => got += n,
        }
    }
    if is_sif(&head[..got]) {
        return Ok(ArchiveKind::Sif);
    }
    let unknown = || {
        ImageStoreError::Rule(StoreError::UnknownArchive {
            path: path.to_path_buf(),
        })
    };
    let mut names = Vec::new();
    let mut offset = 0u64;
    // The top-level members are enough; a long archive is walked header to header.
    for _ in 0..100_000 {
        f.seek(SeekFrom::Start(offset)).map_err(io(path))?;
        let mut block = [0u8; 512];
        if f.read_exact(&mut block).is_err() {
            break;
        }
        let Some((name, size)) = tar_member(&block) else {
            break;
        };
        names.push(name);
        offset += 512 + size.div_ceil(512) * 512;
    }
    archive_kind(names.iter().map(String::as_str)).ok_or_else(unknown)
}

/// Creates `dir` (and parents) root-owned 0755 if absent; refuses one that someone
/// other than root owns or can write, or a symbolic link.
fn ensure_root_dir(dir: &Path) -> Result<(), ImageStoreError> {
    if std::fs::symlink_metadata(dir).is_err() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(io(dir))?;
    }
    let m = std::fs::symlink_metadata(dir).map_err(io(dir))?;
    if !m.is_dir() || m.uid() != 0 || m.mode() & 0o022 != 0 {
        return Err(ImageStoreError::Unsafe {
            path: dir.to_path_buf(),
        });
    }
    Ok(())
}

/// Makes the podman store readable by everyone and writable by root only: directories
/// 0755-like, files readable, no set-id bits, no usable device nodes or fifos (overlay
/// whiteouts, character devices 0/0, stay: they mean "deleted").
pub fn open_store_for_reading(store: &Path) -> Result<usize, ImageStoreError> {
    let mut changed = 0;
    let mut stack = vec![store.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let path = entry.map_err(io(&dir))?.path();
            // The store is root's and only root writes it: no one can swap entries.
            let m = std::fs::symlink_metadata(&path).map_err(io(&path))?;
            let ft = m.file_type();
            let mode = m.mode() & 0o7777;
            let want = if ft.is_symlink() {
                continue;
            } else if ft.is_dir() {
                stack.push(path.clone());
                (mode | 0o555) & !0o022 & !0o6000
            } else if ft.is_file() {
                let x = if mode & 0o100 != 0 { 0o111 } else { 0 };
                (mode | 0o444 | x) & !0o022 & !0o6000
            } else if ft.is_char_device() && m.rdev() == 0 {
                mode
            } else {
                0
            };
            if want != mode {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(want))
                    .map_err(io(&path))?;
                changed += 1;
            }
        }
    }
    let m = std::fs::symlink_metadata(store).map_err(io(store))?;
    if m.mode() & 0o7777 != 0o755 {
        std::fs::set_permissions(store, std::fs::Permissions::from_mode(0o755))
            .map_err(io(store))?;
    }
    Ok(changed)
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
        store: &Path,
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
        open_store_for_reading(store)?;
        Ok(id.to_string())
    }

    /// `image load --archive FILE IMAGE`: the archive's image, under the approved name.
    pub fn load(&self, image: &ImageRef, archive: &Path) -> Result<String, ImageStoreError> {
        image_store::check_archive_reference(self.runtime, image)?;
        let kind = classify(archive)?;
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
                let before = run(&p.name_ids())?;
                let id = run(&p.pull_archive(kind, archive))?.trim().to_string();
                run(&p.tag(&id, image))?;
                let id = self.podman_finish(&store, &p, &before, &id, image)?;
                Ok(format!(
                    "loaded {image} (image {}) into the podman store {}",
                    short(&id),
                    store.display()
                ))
            }
            Runtime::Apptainer => {
                let sif = self.install_sif(image, |tmp| {
                    if kind == ArchiveKind::Sif {
                        std::fs::copy(archive, tmp).map(|_| ()).map_err(io(tmp))
                    } else {
                        run(&apptainer_build(
                            &self.config.apptainer.path,
                            tmp,
                            ApptainerSource::Archive(kind, archive),
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
                let before = run(&p.name_ids())?;
                let id = run(&p.pull_registry(image))?.trim().to_string();
                let id = self.podman_finish(&store, &p, &before, &id, image)?;
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
        let made = make(&tmp).and_then(|()| {
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))
                .map_err(io(&tmp))?;
            std::fs::rename(&tmp, &sif).map_err(io(&sif))
        });
        if made.is_err() {
            let _ = std::fs::remove_file(&tmp);
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
                show(&p.list())
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
                match run(&p.remove(image)) {
                    Ok(_) => {}
                    Err(ImageStoreError::Failed { stderr, .. })
                        if stderr.contains("image not known") =>
                    {
                        return Err(not_there())
                    }
                    Err(e) => return Err(e),
                }
                Ok(format!(
                    "removed {image} from the podman store {}",
                    store.display()
                ))
            }
            Runtime::Apptainer => {
                let sif = sif_target(self.config, image).ok_or(ImageStoreError::NoName)?;
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
        std::fs::write(&p, tar(&["abc/layer.tar", "manifest.json"])).unwrap();
        assert_eq!(classify(&p).unwrap(), ArchiveKind::DockerArchive);
        std::fs::write(&p, tar(&["blobs/x", "index.json", "oci-layout"])).unwrap();
        assert_eq!(classify(&p).unwrap(), ArchiveKind::OciArchive);
        std::fs::write(&p, tar(&["./bin/sh", "./etc/passwd"])).unwrap();
        assert!(classify(&p)
            .unwrap_err()
            .to_string()
            .contains("is neither an image archive"));
        std::fs::write(&p, b"not a tar").unwrap();
        assert!(classify(&p).is_err());
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
        open_store_for_reading(&store).unwrap();
        let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&store.join("overlay")), 0o755);
        assert_eq!(mode(&f), 0o755);
        assert_eq!(mode(&g), 0o644);
        assert_eq!(mode(&store), 0o755);
    }
}
