//! What a runtime's exit status means (runtime failures, a missing image).

use crate::rules::vocab::{prefixed, Runtime};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// How the runtime's own failures look in its exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeFailure {
    /// 125: the runtime failed before the command ran (missing image, bad mount, ...).
    RuntimeError,
    /// 126: the command was found but could not be executed.
    CannotExecute,
    /// 127: the command was not found in the image.
    NotFound,
}
impl RuntimeFailure {
    pub fn describe(self) -> &'static str {
        match self {
            RuntimeFailure::RuntimeError => {
                "the container runtime failed before your command ran (see its message above)"
            }
            RuntimeFailure::CannotExecute => {
                "your command was found in the image but could not be executed"
            }
            RuntimeFailure::NotFound => "your command was not found in the image",
        }
    }
}
/// The runtime's documented statuses (a command's own `exit 125` looks the same; the
/// message says what the runtime means by it). podman: 125-127; apptainer: 255 for
/// its own fatal errors (including a command missing from the image).
pub fn diagnose_runtime_exit(runtime: Runtime, code: i32) -> Option<RuntimeFailure> {
    match (runtime, code) {
        (Runtime::Podman, 125) | (Runtime::Apptainer, 255) => Some(RuntimeFailure::RuntimeError),
        (Runtime::Podman, 126) => Some(RuntimeFailure::CannotExecute),
        (Runtime::Podman, 127) => Some(RuntimeFailure::NotFound),
        _ => None,
    }
}
/// The site stores a podman command line reads (its `additionalimagestore` options,
/// before `run`).
pub fn image_stores_of(argv: &[OsString]) -> Vec<PathBuf> {
    argv.iter()
        .take_while(|a| *a != "run")
        .filter_map(|a| {
            a.as_bytes()
                .strip_prefix(b"--storage-opt=additionalimagestore=")
                .map(|s| PathBuf::from(OsStr::from_bytes(s)))
        })
        .collect()
}
/// The job's message when podman did not find the image: it names the image and every
/// store the failed command looked in (its `additionalimagestore` options), so that
/// users and administrators know where the image was expected.
pub fn missing_image_message(image: &str, argv: &[OsString]) -> String {
    let stores: Vec<String> = image_stores_of(argv)
        .iter()
        .map(|s| s.display().to_string())
        .collect();
    let looked = if stores.is_empty() {
        "no image store is configured on this node".to_string()
    } else {
        format!("looked in {}", stores.join(", "))
    };
    prefixed(&format_args!(
        "image {image} is not on this node: images reach the nodes only through the site's approved process, and jobs never pull ({looked}; ask your TRE administrators to approve it)"
    ))
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::*;
    use super::*;

    use crate::rules::config::PodmanConfig;
    use std::ffi::OsString;

    #[test]
    fn missing_image_message_names_the_stores_looked_in() {
        let argv = storage().global_flags(&PodmanConfig {
            user_image_store: true,
            ..PodmanConfig::default()
        });
        let mut full = vec![OsString::from("/usr/bin/podman")];
        full.extend(argv);
        full.extend(os(&[
            "run",
            "--storage-opt=additionalimagestore=/not/this",
            "x",
        ]));
        assert_eq!(
            missing_image_message("ghcr.io/a/b:1", &full),
            "tre-spank: image ghcr.io/a/b:1 is not on this node: images reach the nodes only through the site's approved process, and jobs never pull (looked in /var/lib/tre-spank/images, /home/alice/.local/share/containers/storage; ask your TRE administrators to approve it)"
        );
        assert!(
            missing_image_message("ghcr.io/a/b:1", &os(&["podman", "run"]))
                .contains("(no image store is configured on this node;")
        );
    }
    #[test]
    fn exit_statuses_are_diagnosed_per_runtime() {
        assert_eq!(
            diagnose_runtime_exit(Runtime::Podman, 125),
            Some(RuntimeFailure::RuntimeError)
        );
        assert_eq!(diagnose_runtime_exit(Runtime::Podman, 255), None);
        assert_eq!(
            diagnose_runtime_exit(Runtime::Apptainer, 255),
            Some(RuntimeFailure::RuntimeError)
        );
        assert_eq!(diagnose_runtime_exit(Runtime::Apptainer, 125), None);
        assert_eq!(diagnose_runtime_exit(Runtime::Apptainer, 3), None);
    }
}
