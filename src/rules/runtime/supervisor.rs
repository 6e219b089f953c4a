//! The supervisor's own command line (`tre-spank launch ...`).

use crate::rules::image::ImageRef;
use crate::rules::vocab::Runtime;
use std::ffi::OsString;
use std::path::Path;

/// `tre-spank launch`'s flag for a user namespace the supervisor makes.
pub const USER_NAMESPACE_FLAG: &str = "--user-namespace";

/// The task's real command line: the `tre-spank` tool supervising the runtime.
/// `prefix` is the runtime command line without the task's own arguments (Slurm
/// appends those); `dropped` of them, right after the prefix, are removed by the tool
/// (see [`TaskLaunch::dropped_args`]). `user_namespace`: the supervisor makes podman's
/// user namespace itself (`podman.user_namespace = "tre-spank"`).
pub fn supervised_argv(
    tool: &Path,
    image: &ImageRef,
    runtime: Runtime,
    dropped: usize,
    user_namespace: bool,
    prefix: Vec<OsString>,
) -> Vec<OsString> {
    let mut argv: Vec<OsString> = vec![
        tool.into(),
        "launch".into(),
        "--image".into(),
        image.to_string().into(),
        "--runtime".into(),
        runtime.name().into(),
    ];
    if dropped > 0 {
        argv.extend([
            "--drop-args".into(),
            format!("{},{dropped}", prefix.len()).into(),
        ]);
    }
    if user_namespace {
        argv.push(USER_NAMESPACE_FLAG.into());
    }
    argv.push("--".into());
    argv.extend(prefix);
    argv
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::*;
    use super::*;
    use crate::rules::image::ImageRef;

    use std::path::Path;

    #[test]
    fn supervised_command_line_says_what_to_drop() {
        let image = ImageRef::parse("ghcr.io/mikej888/hello-tre:1.0").unwrap();
        let got = strings(&supervised_argv(
            Path::new("/usr/sbin/tre-spank"),
            &image,
            Runtime::Apptainer,
            1,
            false,
            os(&["apptainer", "run", "/x.sif"]),
        ));
        assert_eq!(
            got,
            [
                "/usr/sbin/tre-spank",
                "launch",
                "--image",
                "ghcr.io/mikej888/hello-tre:1.0",
                "--runtime",
                "apptainer",
                "--drop-args",
                "3,1",
                "--",
                "apptainer",
                "run",
                "/x.sif"
            ]
        );
        let got = strings(&supervised_argv(
            Path::new("/t"),
            &image,
            Runtime::Podman,
            0,
            true,
            os(&["podman"]),
        ));
        assert_eq!(
            got,
            [
                "/t",
                "launch",
                "--image",
                "ghcr.io/mikej888/hello-tre:1.0",
                "--runtime",
                "podman",
                "--user-namespace",
                "--",
                "podman"
            ]
        );
    }
}
