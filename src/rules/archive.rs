//! Telling image archives apart: a SIF file by its magic, a tar by its header blocks,
//! and a docker-archive from an oci-archive by the tar's member names. Pure: the host
//! reads the bytes (`host::image_store`), this decides what they are.

/// What an archive file holds, from its first bytes and its tar member names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    /// `podman save --format docker-archive` (the default), `docker save`.
    DockerArchive,
    /// `podman save --format oci-archive`, `skopeo copy ... oci-archive:`.
    OciArchive,
    /// An apptainer/singularity image file.
    Sif,
}

impl ArchiveKind {
    /// The containers-image transport that reads this kind of archive.
    pub fn transport(self) -> &'static str {
        match self {
            ArchiveKind::DockerArchive => "docker-archive",
            ArchiveKind::OciArchive => "oci-archive",
            ArchiveKind::Sif => "sif",
        }
    }
}

/// A SIF file starts with a 32-byte launch line, then `SIF_MAGIC`.
pub fn is_sif(head: &[u8]) -> bool {
    head.get(32..41) == Some(b"SIF_MAGIC".as_slice())
}

/// One tar header block: the member's name and size, or `None` for the end of the
/// archive or a block that is not a tar header (its checksum does not match). The
/// fields are read by the `tar` crate (ustar prefixes, base-256 sizes).
pub fn tar_member(block: &[u8; 512]) -> Option<(String, u64)> {
    if block.iter().all(|b| *b == 0) {
        return None;
    }
    let mut header = tar::Header::new_old();
    header.as_mut_bytes().copy_from_slice(block);
    let stored = header.cksum().ok()?;
    let mut summed = header.clone();
    summed.set_cksum();
    if summed.cksum().ok()? != stored {
        return None;
    }
    let name = String::from_utf8_lossy(&header.path_bytes()).into_owned();
    let size = header.entry_size().ok()?;
    Some((name, size))
}

/// Which image archive a tar holds, from its member names: an OCI layout has
/// `oci-layout`, a docker archive `manifest.json` (both at the top).
pub fn archive_kind<'a>(members: impl IntoIterator<Item = &'a str>) -> Option<ArchiveKind> {
    let mut docker = false;
    for m in members {
        match m.trim_start_matches("./") {
            "oci-layout" => return Some(ArchiveKind::OciArchive),
            "manifest.json" => docker = true,
            _ => {}
        }
    }
    docker.then_some(ArchiveKind::DockerArchive)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, size: u64) -> [u8; 512] {
        let mut b = [0u8; 512];
        b[..name.len()].copy_from_slice(name.as_bytes());
        let sz = format!("{size:011o}\0");
        b[124..136].copy_from_slice(sz.as_bytes());
        b[257..263].copy_from_slice(b"ustar\0");
        b[148..156].copy_from_slice(b"        ");
        let sum: u64 = b.iter().map(|x| u64::from(*x)).sum();
        b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        b
    }

    #[test]
    fn tar_headers_give_names_and_sizes() {
        assert_eq!(
            tar_member(&header("manifest.json", 1234)),
            Some(("manifest.json".into(), 1234))
        );
        assert_eq!(tar_member(&[0u8; 512]), None);
        let mut bad = header("x", 1);
        bad[0] = b'y';
        assert_eq!(tar_member(&bad), None, "a wrong checksum is not a header");
        // A long name in a ustar header: its prefix, then its name.
        let long = format!("{}/blobs/sha256/{}", "d".repeat(90), "e".repeat(64));
        let mut ustar = tar::Header::new_ustar();
        ustar.set_path(&long).unwrap();
        ustar.set_size(5 << 33);
        ustar.set_cksum();
        assert_eq!(tar_member(ustar.as_bytes()), Some((long, 5 << 33)));
    }

    #[test]
    fn archives_are_told_apart_by_their_members() {
        assert_eq!(
            archive_kind(["blobs/", "oci-layout", "index.json"]),
            Some(ArchiveKind::OciArchive)
        );
        assert_eq!(
            archive_kind(["abc.tar", "manifest.json", "repositories"]),
            Some(ArchiveKind::DockerArchive)
        );
        assert_eq!(archive_kind(["./bin/", "./etc/passwd"]), None);
        let mut sif = vec![b'#'; 32];
        sif.extend_from_slice(b"SIF_MAGIC\0");
        assert!(is_sif(&sif));
        assert!(!is_sif(b"ustar"));
    }
}
