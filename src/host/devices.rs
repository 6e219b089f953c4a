//! Which device nodes exist on this node (for the GPU devices a job is given).

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// Those of `paths` that are character devices on this node. Each path is looked at
/// itself (`lstat`): a link is never followed, and anything else is left out.
pub fn present_char_devices(paths: &[&str]) -> Vec<PathBuf> {
    paths
        .iter()
        .map(Path::new)
        .filter(|p| {
            p.symlink_metadata()
                .is_ok_and(|m| m.file_type().is_char_device())
        })
        .map(Path::to_path_buf)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_existing_character_devices_are_present() {
        let dir = std::env::temp_dir().join(format!("tre-devices-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("file");
        std::fs::write(&file, "x").unwrap();
        let link = dir.join("null-link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("/dev/null", &link).unwrap();
        let got = present_char_devices(&[
            "/dev/null",
            "/dev/tre-spank-no-such-device",
            file.to_str().unwrap(),
            link.to_str().unwrap(),
            "/dev",
        ]);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(got, [PathBuf::from("/dev/null")]);
    }
}
