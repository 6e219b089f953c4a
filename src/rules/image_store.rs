//! The site image stores: what `tre-spank image load|pull|list|remove` runs.
//!
//! Only the command lines and the decisions live here (pure, unit-tested); the
//! `host::image_store` module runs them as root. The image reference and the registry
//! allow-list are `rules::image`'s, the same as for jobs.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::archive::ArchiveKind;
use super::config::Config;
use super::image::{ImageError, ImageRef};
use super::runtime::sif_path;
use super::vocab::{prefixed, Runtime};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("podman.image_stores is empty: this node has no site image store to load into")]
    NoPodmanStore,
    #[error(
        "{store} is not one of this node's podman.image_stores ({configured}): jobs would never read it"
    )]
    NotAStore { store: PathBuf, configured: String },
    #[error("{image}: an image archive carries no registry digest; approve it by tag, or pull it by digest from the registry")]
    DigestFromArchive { image: String },
    #[error("{path} is neither an image archive (docker-archive or oci-archive tar, as `podman save` writes) nor a SIF file")]
    UnknownArchive { path: PathBuf },
    #[error("{path} is a SIF file: podman cannot load it (use --runtime apptainer)")]
    SifForPodman { path: PathBuf },
}

/// The reference an administrator approves: parsed by the job's grammar and checked
/// against the same allow-list jobs are checked against.
pub fn approved(config: &Config, reference: &str) -> Result<ImageRef, StoreError> {
    let image = ImageRef::parse(reference)?;
    image.check_allowed(&config.allowed_registries)?;
    Ok(image)
}

/// The podman store `tre-spank image` works on: `--store` if given (it must be one of
/// the node's `podman.image_stores`, or jobs would never read it), else the first.
pub fn podman_store(config: &Config, chosen: Option<&Path>) -> Result<PathBuf, StoreError> {
    let stores = &config.podman.image_stores;
    match chosen {
        None => stores.first().cloned().ok_or(StoreError::NoPodmanStore),
        Some(s) if stores.iter().any(|c| c == s) => Ok(s.to_path_buf()),
        Some(s) => Err(StoreError::NotAStore {
            store: s.to_path_buf(),
            configured: if stores.is_empty() {
                "none".into()
            } else {
                stores
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        }),
    }
}

/// Root's podman working on one store: the store is its graph root, with a run root of
/// its own; overlay, the driver jobs read it with.
pub struct PodmanStore<'a> {
    pub podman: &'a Path,
    pub store: &'a Path,
    pub runroot: &'a Path,
}

fn os(parts: &[&str]) -> Vec<OsString> {
    parts.iter().map(OsString::from).collect()
}

fn joined(prefix: &str, path: &Path) -> OsString {
    let mut s = OsString::from(prefix);
    s.push(path);
    s
}

impl PodmanStore<'_> {
    fn base(&self) -> Vec<OsString> {
        vec![
            self.podman.into(),
            joined("--root=", self.store),
            joined("--runroot=", self.runroot),
            "--storage-driver=overlay".into(),
        ]
    }

    fn with(&self, rest: Vec<OsString>) -> Vec<OsString> {
        let mut argv = self.base();
        argv.extend(rest);
        argv
    }

    /// Copies the archive's image into the store; prints the image ID.
    pub fn pull_archive(&self, kind: ArchiveKind, archive: &Path) -> Vec<OsString> {
        let mut source = OsString::from(format!("{}:", kind.transport()));
        source.push(archive);
        self.with(vec!["pull".into(), "--quiet".into(), source])
    }

    /// Pulls from the registry (never from a short name: the reference is complete).
    pub fn pull_registry(&self, image: &ImageRef) -> Vec<OsString> {
        self.with(os(&["pull", "--quiet", &format!("docker://{image}")]))
    }

    pub fn tag(&self, id: &str, image: &ImageRef) -> Vec<OsString> {
        self.tag_id(id, &image.to_string())
    }

    /// Gives a name back to the image it named before a load.
    pub fn tag_id(&self, id: &str, name: &str) -> Vec<OsString> {
        self.with(os(&["tag", id, name]))
    }

    /// The names an image has in the store, one a line.
    pub fn names(&self, id: &str) -> Vec<OsString> {
        self.with(os(&[
            "image",
            "inspect",
            "--format",
            "{{range .RepoTags}}{{println .}}{{end}}",
            id,
        ]))
    }

    pub fn untag(&self, id: &str, name: &str) -> Vec<OsString> {
        self.with(os(&["untag", id, name]))
    }

    /// Every name in the store with its image ID, `ID NAME` a line (for
    /// [`names_to_restore`]).
    pub fn name_ids(&self) -> Vec<OsString> {
        self.with(os(&[
            "images",
            "--no-trunc",
            "--format",
            "{{.ID}} {{.Repository}}:{{.Tag}}",
        ]))
    }

    pub fn list(&self) -> Vec<OsString> {
        self.with(os(&["images", "--digests"]))
    }

    /// Removes the name; the image's layers go with its last name.
    pub fn remove(&self, image: &ImageRef) -> Vec<OsString> {
        self.with(os(&["rmi", &image.to_string()]))
    }
}

/// Names an archive brought along that the administrator did not approve: they are
/// removed, so the store holds only approved references.
pub fn unapproved_names(names: &str, image: &ImageRef) -> Vec<String> {
    let wanted = image.to_string();
    names
        .lines()
        .map(str::trim)
        .filter(|n| !n.is_empty() && *n != wanted)
        .map(str::to_string)
        .collect()
}

/// A name an archive carried that the store already held for another image: podman
/// moved it to the loaded image; it goes back to the image it named before (the
/// `ID NAME` lines of the store from before the load).
pub fn names_to_restore(
    before: &str,
    removed: &[String],
    loaded_id: &str,
) -> Vec<(String, String)> {
    let loaded = loaded_id.trim_start_matches("sha256:");
    before
        .lines()
        .filter_map(|l| l.trim().split_once(' '))
        .map(|(id, name)| (id.trim_start_matches("sha256:"), name.trim()))
        .filter(|(id, name)| *id != loaded && removed.iter().any(|r| r == name))
        .map(|(id, name)| (id.to_string(), name.to_string()))
        .collect()
}

/// `apptainer build` of the approved image into `target` (a temporary name beside the
/// final SIF, renamed once complete so that a job never sees half a file).
pub fn apptainer_build(
    apptainer: &Path,
    target: &Path,
    source: ApptainerSource<'_>,
) -> Vec<OsString> {
    let mut argv: Vec<OsString> = vec![apptainer.into(), "build".into(), target.into()];
    argv.push(match source {
        ApptainerSource::Archive(kind, path) => joined(&format!("{}:", kind.transport()), path),
        ApptainerSource::Registry(image) => format!("docker://{image}").into(),
    });
    argv
}

pub enum ApptainerSource<'a> {
    Archive(ArchiveKind, &'a Path),
    Registry(&'a ImageRef),
}

/// Where the SIF of an approved image goes (the job's own mapping).
pub fn sif_target(config: &Config, image: &ImageRef) -> Option<PathBuf> {
    sif_path(&config.apptainer.sif_dir, image)
}

/// The temporary name a SIF is built under, in the same directory.
pub fn sif_temporary(sif: &Path, pid: u32) -> PathBuf {
    let name = sif
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    sif.with_file_name(format!(".{name}.tmp-{pid}"))
}

/// What a store entry is, for [`store_mode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File,
    Symlink,
    /// overlay's whiteout (a character device 0/0): it means "deleted" and must stay.
    Whiteout,
    /// Any other device node, a fifo or a socket.
    Special,
}

/// The mode a store entry gets once clean: readable by everyone, writable by root only,
/// no set-id bits; a file executable by its owner is executable by all (jobs read the
/// store as a user the store's root files do not belong to; with no capability or
/// set-id left, executing is harmless). Device nodes other than whiteouts, fifos and
/// sockets get no permission at all. `None`: nothing to change (a symbolic link).
pub fn store_mode(kind: EntryKind, mode: u32) -> Option<u32> {
    let mode = mode & 0o7777;
    let cleared = mode & !0o6022;
    match kind {
        EntryKind::Symlink => None,
        EntryKind::Dir => Some(cleared | 0o555),
        EntryKind::File => {
            let x = if mode & 0o100 != 0 { 0o111 } else { 0 };
            Some(cleared | 0o444 | x)
        }
        EntryKind::Whiteout => Some(cleared & 0o644),
        EntryKind::Special => Some(0),
    }
}

/// The mode a directory has while its contents are being cleaned: root's and writable
/// by root only (so that nobody can swap its entries), not yet opened to anyone.
pub fn store_locked_dir_mode(mode: u32) -> u32 {
    mode & 0o7777 & !0o6022
}

/// Extended attributes a store entry keeps: `user.*` (no rights: any owner sets them)
/// and overlay's own `trusted.overlay.*` (opaque directories, redirects), without which
/// a layer would show files its image deleted. Everything else goes: file capabilities
/// (`security.capability`), `security.*` labels and IMA/EVM data, POSIX ACLs
/// (`system.posix_acl_*`), other `trusted.*` names. An allow-list: a name added to the
/// kernel later is removed too.
pub fn xattr_kept(name: &[u8]) -> bool {
    name.starts_with(b"user.") || name.starts_with(b"trusted.overlay.")
}

/// The files of a podman store a job reads (containers/storage's image and layer
/// lists), relative to the store.
pub const STORE_FILES_JOBS_READ: [&str; 2] = [STORE_IMAGE_LIST, "overlay-layers/layers.json"];

/// The job's message when a site store is there but the job cannot read it.
pub fn unreadable_store_message(store: &Path, entry: &Path, error: &str) -> String {
    prefixed(&format_args!(
        "the site image store {} cannot be read by this job ({}: {error}); ask your TRE administrators to run `tre-spank image list` on this node, which makes the store readable again",
        store.display(),
        entry.display()
    ))
}

/// The mount a path is on, from `/proc/self/mountinfo`: its mount point and whether it
/// is `nosuid` and `nodev` (the per-mount options, field 6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountFlags {
    pub mount_point: PathBuf,
    pub nosuid: bool,
    pub nodev: bool,
}

/// The mount holding `path` (an absolute path without symbolic links): the longest
/// mount point that is a whole-component prefix of it; of equal ones, the last (the
/// mount on top).
pub fn mount_of(mountinfo: &str, path: &Path) -> Option<MountFlags> {
    let mut best: Option<MountFlags> = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (Some(point), Some(options)) = (fields.get(4), fields.get(5)) else {
            continue;
        };
        let point = PathBuf::from(unescape_mount(point));
        if !path.starts_with(&point) {
            continue;
        }
        let longer = match &best {
            None => true,
            Some(b) => point.components().count() >= b.mount_point.components().count(),
        };
        if longer {
            let has = |o: &str| options.split(',').any(|x| x == o);
            best = Some(MountFlags {
                nosuid: has("nosuid"),
                nodev: has("nodev"),
                mount_point: point,
            });
        }
    }
    best
}

/// mountinfo writes space, tab, newline and backslash as `\NNN` (octal).
fn unescape_mount(field: &str) -> std::ffi::OsString {
    use std::os::unix::ffi::OsStringExt;
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push(d.iter().fold(0u8, |n, c| n.wrapping_mul(8) + (c - b'0')));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    std::ffi::OsString::from_vec(out)
}

/// The image's immutable ID (`sha256:<hex>`, what `podman images --no-trunc` shows)
/// from a podman store's image list (`overlay-images/images.json`): the image that has
/// the reference as a name (`:latest` when it has neither tag nor digest), or, for a
/// digest reference, the image of that repository with that manifest digest.
pub fn image_id_in_list(images_json: &[u8], image: &ImageRef) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Entry {
        id: String,
        #[serde(default)]
        names: Vec<String>,
        #[serde(default)]
        digest: Option<String>,
        #[serde(default)]
        digests: Vec<String>,
    }
    let entries: Vec<Entry> = serde_json::from_slice(images_json).ok()?;
    let mut wanted = vec![image.to_string()];
    if image.tag.is_none() && image.digest.is_none() {
        wanted.push(format!("{image}:latest"));
    }
    let repo_prefix = format!("{}:", image.repository());
    let repo_at = format!("{}@", image.repository());
    let digest = image.digest.as_ref().map(|d| format!("sha256:{d}"));
    let found = entries.iter().find(|e| {
        e.names.iter().any(|n| wanted.contains(n))
            || digest.as_ref().is_some_and(|d| {
                (e.digest.as_ref() == Some(d) || e.digests.contains(d))
                    && e.names
                        .iter()
                        .any(|n| n.starts_with(&repo_prefix) || n.starts_with(&repo_at))
            })
    })?;
    let hex = found.id.strip_prefix("sha256:").unwrap_or(&found.id);
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| format!("sha256:{}", hex.to_ascii_lowercase()))
}

/// Where a podman store lists its images.
pub const STORE_IMAGE_LIST: &str = "overlay-images/images.json";

/// Beside each SIF `tre-spank image` installs: its SHA-256, for the audit records (a
/// job does not hash a multi-gigabyte file). `NAME.sif.sha256`, which `image list` does
/// not show.
pub fn sif_digest_path(sif: &Path) -> PathBuf {
    let mut name = sif.as_os_str().to_owned();
    name.push(".sha256");
    PathBuf::from(name)
}

/// The SIF file's identity a digest record is valid for: size and modification time
/// (seconds, nanoseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SifStamp {
    pub len: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
}

/// `sha256:<hex> <len> <mtime>.<nsec>` a line.
pub fn sif_digest_record(hex: &str, stamp: SifStamp) -> String {
    format!(
        "sha256:{hex} {} {}.{:09}\n",
        stamp.len, stamp.mtime, stamp.mtime_nsec
    )
}

/// The digest of a record, if the SIF is still the file it was made for (a SIF copied
/// in by hand, or rebuilt, is not: its digest is unknown).
pub fn sif_digest_from_record(record: &str, stamp: SifStamp) -> Option<String> {
    let mut it = record.trim_end_matches('\n').split(' ');
    let digest = it.next()?;
    let hex = digest.strip_prefix("sha256:")?;
    let len: u64 = it.next()?.parse().ok()?;
    let (s, ns) = it.next()?.split_once('.')?;
    let (s, ns): (i64, i64) = (s.parse().ok()?, ns.parse().ok()?);
    let valid = it.next().is_none()
        && hex.len() == 64
        && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && SifStamp {
            len,
            mtime: s,
            mtime_nsec: ns,
        } == stamp;
    valid.then(|| digest.to_string())
}

/// A digest names one exact image in a registry; an archive cannot prove it has it.
pub fn check_archive_reference(runtime: Runtime, image: &ImageRef) -> Result<(), StoreError> {
    if runtime == Runtime::Podman && image.digest.is_some() {
        return Err(StoreError::DigestFromArchive {
            image: image.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[OsString]) -> Vec<String> {
        v.iter().map(|s| s.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn approval_uses_the_jobs_grammar_and_allow_list() {
        let config = Config::default();
        assert!(approved(&config, "ghcr.io/mikej888/hello-tre:1.0").is_ok());
        assert_eq!(
            approved(&config, "docker.io/library/ubuntu:22.04")
                .unwrap_err()
                .to_string(),
            "image docker.io/library/ubuntu:22.04 is not from an allowed registry (allowed: ghcr.io/)"
        );
        assert!(approved(&config, "ubuntu").is_err());
        assert!(approved(&config, "ghcr.io/org/../x:1").is_err());
    }

    #[test]
    fn the_store_is_a_configured_one() {
        let mut config = Config::default();
        assert_eq!(
            podman_store(&config, None).unwrap(),
            PathBuf::from("/var/lib/tre-spank/images")
        );
        assert_eq!(
            podman_store(&config, Some(Path::new("/tmp/x")))
                .unwrap_err()
                .to_string(),
            "/tmp/x is not one of this node's podman.image_stores (/var/lib/tre-spank/images): jobs would never read it"
        );
        config.podman.image_stores.clear();
        assert_eq!(podman_store(&config, None), Err(StoreError::NoPodmanStore));
    }

    #[test]
    fn podman_commands_work_on_the_store_only() {
        let s = PodmanStore {
            podman: Path::new("/usr/bin/podman"),
            store: Path::new("/var/lib/tre-spank/images"),
            runroot: Path::new("/run/tre-spank/images"),
        };
        let image = ImageRef::parse("ghcr.io/org/tool:2.0").unwrap();
        let base = [
            "/usr/bin/podman",
            "--root=/var/lib/tre-spank/images",
            "--runroot=/run/tre-spank/images",
            "--storage-driver=overlay",
        ];
        let with = |rest: &[&str]| {
            base.iter()
                .chain(rest)
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            strings(&s.pull_archive(ArchiveKind::DockerArchive, Path::new("/tmp/t.tar"))),
            with(&["pull", "--quiet", "docker-archive:/tmp/t.tar"])
        );
        assert_eq!(
            strings(&s.pull_archive(ArchiveKind::OciArchive, Path::new("/tmp/t.tar"))),
            with(&["pull", "--quiet", "oci-archive:/tmp/t.tar"])
        );
        assert_eq!(
            strings(&s.pull_registry(&image)),
            with(&["pull", "--quiet", "docker://ghcr.io/org/tool:2.0"])
        );
        assert_eq!(
            strings(&s.tag("abc", &image)),
            with(&["tag", "abc", "ghcr.io/org/tool:2.0"])
        );
        assert_eq!(
            strings(&s.remove(&image)),
            with(&["rmi", "ghcr.io/org/tool:2.0"])
        );
        assert_eq!(strings(&s.list()), with(&["images", "--digests"]));
    }

    #[test]
    fn only_the_approved_name_stays() {
        let image = ImageRef::parse("ghcr.io/org/tool:2.0").unwrap();
        assert_eq!(
            unapproved_names("ghcr.io/org/tool:2.0\nlocalhost/other:latest\n\n", &image),
            vec!["localhost/other:latest".to_string()]
        );
    }

    #[test]
    fn a_name_the_archive_took_from_another_image_goes_back() {
        let before = "sha256:aaa ghcr.io/org/a:1\nsha256:bbb ghcr.io/org/b:1\n";
        let removed = vec!["ghcr.io/org/a:1".to_string(), "localhost/x:1".to_string()];
        assert_eq!(
            names_to_restore(before, &removed, "ccc"),
            vec![("aaa".to_string(), "ghcr.io/org/a:1".to_string())]
        );
        // The same image loaded again: nothing to give back.
        assert!(names_to_restore(before, &removed, "sha256:aaa").is_empty());
    }

    #[test]
    fn apptainer_builds_beside_the_mapped_sif() {
        let config = Config::default();
        let image = ImageRef::parse("ghcr.io/org/tool:2.0").unwrap();
        let sif = sif_target(&config, &image).unwrap();
        assert_eq!(
            sif,
            PathBuf::from("/var/lib/tre-spank/sif/ghcr.io/org/tool_2.0.sif")
        );
        let tmp = sif_temporary(&sif, 7);
        assert_eq!(
            tmp,
            PathBuf::from("/var/lib/tre-spank/sif/ghcr.io/org/.tool_2.0.sif.tmp-7")
        );
        assert_eq!(
            strings(&apptainer_build(
                Path::new("/usr/bin/apptainer"),
                &tmp,
                ApptainerSource::Archive(ArchiveKind::OciArchive, Path::new("/tmp/t.tar"))
            )),
            [
                "/usr/bin/apptainer",
                "build",
                "/var/lib/tre-spank/sif/ghcr.io/org/.tool_2.0.sif.tmp-7",
                "oci-archive:/tmp/t.tar"
            ]
        );
        assert_eq!(
            strings(&apptainer_build(
                Path::new("apptainer"),
                &tmp,
                ApptainerSource::Registry(&image)
            ))[3],
            "docker://ghcr.io/org/tool:2.0"
        );
    }

    #[test]
    fn clean_store_entries_carry_no_rights() {
        use EntryKind::*;
        // Set-id and write for group/other go; owner-executable files stay executable.
        assert_eq!(store_mode(File, 0o104755), Some(0o755));
        assert_eq!(store_mode(File, 0o6711), Some(0o755));
        assert_eq!(store_mode(File, 0o600), Some(0o644));
        assert_eq!(store_mode(File, 0o666), Some(0o644));
        assert_eq!(store_mode(File, 0o070), Some(0o454));
        assert_eq!(store_mode(Dir, 0o700), Some(0o755));
        assert_eq!(store_mode(Dir, 0o2777), Some(0o755));
        // A directory the image made sticky (its /tmp) keeps that: it carries no right.
        assert_eq!(store_mode(Dir, 0o1777), Some(0o1755));
        assert_eq!(store_mode(Whiteout, 0o666), Some(0o644));
        assert_eq!(store_mode(Whiteout, 0o4600), Some(0o600));
        assert_eq!(store_mode(Special, 0o666), Some(0));
        assert_eq!(store_mode(Special, 0o600), Some(0));
        assert_eq!(store_mode(Symlink, 0o777), None);
        // While being cleaned: nobody else writes, nothing is opened yet.
        assert_eq!(store_locked_dir_mode(0o40777), 0o755);
        assert_eq!(store_locked_dir_mode(0o700), 0o700);
        assert_eq!(store_locked_dir_mode(0o2770), 0o750);
    }

    #[test]
    fn only_rightless_extended_attributes_stay() {
        for gone in [
            "security.capability",
            "security.ima",
            "security.evm",
            "security.selinux",
            "security.apparmor",
            "system.posix_acl_access",
            "system.posix_acl_default",
            "trusted.foo",
            "trusted.overlayx",
            "",
        ] {
            assert!(!xattr_kept(gone.as_bytes()), "{gone} must be removed");
        }
        for kept in [
            "user.mime_type",
            "trusted.overlay.opaque",
            "trusted.overlay.redirect",
        ] {
            assert!(xattr_kept(kept.as_bytes()), "{kept} must stay");
        }
    }

    #[test]
    fn an_unreadable_store_is_named() {
        assert_eq!(
            unreadable_store_message(
                Path::new("/var/lib/tre-spank/images"),
                Path::new("/var/lib/tre-spank/images/overlay-images/images.json"),
                "Permission denied (os error 13)"
            ),
            "tre-spank: the site image store /var/lib/tre-spank/images cannot be read by this job (/var/lib/tre-spank/images/overlay-images/images.json: Permission denied (os error 13)); ask your TRE administrators to run `tre-spank image list` on this node, which makes the store readable again"
        );
    }

    #[test]
    fn the_mount_of_a_store_and_its_flags() {
        let info = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
            30 22 8:2 / /var/lib rw,nosuid,relatime shared:2 - ext4 /dev/sda2 rw\n\
            31 30 8:3 / /var/lib/tre-spank rw,nosuid,nodev shared:3 - xfs /dev/sdb rw\n\
            32 22 8:4 / /var/lib/tre\\040x rw,nodev - xfs /dev/sdc rw\n\
            33 22 0:5 / /var/lib/tre-spank rw,relatime - tmpfs tmpfs rw\n";
        let m = |p: &str| mount_of(info, Path::new(p)).unwrap();
        assert_eq!(
            m("/var/lib/tre-spank-other/images"),
            MountFlags {
                mount_point: "/var/lib".into(),
                nosuid: true,
                nodev: false
            }
        );
        // The mount on top (the last of equal mount points) decides.
        assert_eq!(
            m("/var/lib/tre-spank/images"),
            MountFlags {
                mount_point: "/var/lib/tre-spank".into(),
                nosuid: false,
                nodev: false
            }
        );
        assert_eq!(
            m("/var/lib/tre x/s").mount_point,
            PathBuf::from("/var/lib/tre x")
        );
        assert!(m("/var/lib/tre x/s").nodev);
        assert_eq!(m("/srv/images").mount_point, PathBuf::from("/"));
        assert_eq!(mount_of("", Path::new("/x")), None);
    }

    #[test]
    fn the_image_id_comes_from_the_stores_list() {
        let id = "a".repeat(64);
        let other = "b".repeat(64);
        let d = "c".repeat(64);
        let list = format!(
            r#"[{{"id":"{other}","names":["ghcr.io/org/tool:1.0"],"digest":"sha256:{}"}},
                {{"id":"{id}","names":["ghcr.io/org/tool:2.0","ghcr.io/org/x:latest"],
                  "digest":"sha256:{d}","digests":["sha256:{d}"],"layer":"z"}}]"#,
            "e".repeat(64)
        );
        let find = |r: &str| image_id_in_list(list.as_bytes(), &ImageRef::parse(r).unwrap());
        assert_eq!(find("ghcr.io/org/tool:2.0"), Some(format!("sha256:{id}")));
        assert_eq!(
            find("ghcr.io/org/tool:1.0"),
            Some(format!("sha256:{other}"))
        );
        assert_eq!(find("ghcr.io/org/x"), Some(format!("sha256:{id}")));
        assert_eq!(
            find(&format!("ghcr.io/org/tool@sha256:{d}")),
            Some(format!("sha256:{id}"))
        );
        // The digest of another repository's image does not name it.
        assert_eq!(find(&format!("ghcr.io/org/y@sha256:{d}")), None);
        assert_eq!(find("ghcr.io/org/tool:3.0"), None);
        assert_eq!(
            image_id_in_list(b"not json", &ImageRef::parse("ghcr.io/a/b:1").unwrap()),
            None
        );
        let bad = r#"[{"id":"../../x","names":["ghcr.io/a/b:1"]}]"#;
        assert_eq!(
            image_id_in_list(bad.as_bytes(), &ImageRef::parse("ghcr.io/a/b:1").unwrap()),
            None
        );
    }

    #[test]
    fn a_sif_digest_holds_for_the_file_it_was_made_for_only() {
        let hex = "0a".repeat(32);
        let stamp = SifStamp {
            len: 4096,
            mtime: 1_795_651_200,
            mtime_nsec: 7,
        };
        let record = sif_digest_record(&hex, stamp);
        assert_eq!(record, format!("sha256:{hex} 4096 1795651200.000000007\n"));
        assert_eq!(
            sif_digest_from_record(&record, stamp),
            Some(format!("sha256:{hex}"))
        );
        let changed = SifStamp { len: 4097, ..stamp };
        assert_eq!(sif_digest_from_record(&record, changed), None);
        let touched = SifStamp {
            mtime_nsec: 8,
            ..stamp
        };
        assert_eq!(sif_digest_from_record(&record, touched), None);
        assert_eq!(sif_digest_from_record("sha256:xyz 1 1.0", stamp), None);
        assert_eq!(sif_digest_from_record("", stamp), None);
        assert_eq!(
            sif_digest_path(Path::new("/s/ghcr.io/o/t_1.sif")),
            PathBuf::from("/s/ghcr.io/o/t_1.sif.sha256")
        );
    }

    #[test]
    fn digests_come_from_registries_for_podman() {
        let d = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let image = ImageRef::parse(&format!("ghcr.io/org/tool@sha256:{d}")).unwrap();
        assert!(check_archive_reference(Runtime::Podman, &image).is_err());
        assert!(check_archive_reference(Runtime::Apptainer, &image).is_ok());
    }
}
