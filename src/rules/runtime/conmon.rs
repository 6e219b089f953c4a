//! The exit guard (`podman.exit_guard`, on by default; docs/job-semantics.md, "When a
//! step ends"). When a container exits, conmon starts podman's clean-up of it (its
//! exit command, a second `podman ... container cleanup --rm ID`), while the step's own
//! `podman run --rm` removes the same container: the two race for the container's lock,
//! and the step waits for both (docs/benchmarks.md measured 35 ms of every step). The
//! plugin gives podman a conmon of its own (`podman --conmon=CONMON_WRAPPER`), which
//! executes the real conmon with the exit command replaced by the guard
//! (`tre-spank exit-guard PID START -- EXIT-COMMAND...`): the guard waits for that
//! podman to end and runs podman's clean-up only if the container is still there
//! (podman was killed, or its removal failed). So nothing races the step's podman, and
//! nothing is lost when it dies.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Where the package installs the wrapper: a link to the `tre-spank` tool, which acts
/// as the wrapper when started under the file name [`CONMON_NAME`].
pub const CONMON_WRAPPER: &str = "/usr/libexec/tre-spank/conmon";
pub const CONMON_NAME: &str = "conmon";
/// The tool's subcommand conmon runs as the exit command.
pub const EXIT_GUARD: &str = "exit-guard";
/// Where the real conmon is looked for, in the order containers.conf's default
/// `conmon_path` has.
pub const REAL_CONMON: &[&str] = &[
    "/usr/libexec/podman/conmon",
    "/usr/local/libexec/podman/conmon",
    "/usr/local/lib/podman/conmon",
    "/usr/bin/conmon",
    "/usr/sbin/conmon",
    "/usr/local/bin/conmon",
    "/usr/local/sbin/conmon",
];

const EXIT_COMMAND: &str = "--exit-command";
const EXIT_COMMAND_ARG: &str = "--exit-command-arg";

/// conmon's arguments with its exit command replaced by the guard: `tool exit-guard
/// PID START -- COMMAND ARGS...`, where PID and START (its start time in clock ticks,
/// `/proc/PID/stat`) name the podman that started conmon. `None` when conmon was given
/// no exit command (podman's `--version` probe): it runs unchanged.
pub fn guarded_conmon_args(
    args: &[OsString],
    tool: &Path,
    podman_pid: u32,
    podman_start: u64,
) -> Option<Vec<OsString>> {
    let mut kept = Vec::with_capacity(args.len() + 8);
    let mut command: Option<OsString> = None;
    let mut command_args = Vec::new();
    let mut words = args.iter();
    while let Some(word) = words.next() {
        let bytes = word.as_bytes();
        if word == EXIT_COMMAND {
            command = Some(words.next()?.clone());
        } else if word == EXIT_COMMAND_ARG {
            command_args.push(words.next()?.clone());
        } else if let Some(value) = value_of(bytes, EXIT_COMMAND) {
            command = Some(value);
        } else if let Some(value) = value_of(bytes, EXIT_COMMAND_ARG) {
            command_args.push(value);
        } else {
            kept.push(word.clone());
        }
    }
    let command = command?;
    let guard: Vec<OsString> = [
        EXIT_GUARD.into(),
        podman_pid.to_string().into(),
        podman_start.to_string().into(),
        "--".into(),
        command,
    ]
    .into_iter()
    .chain(command_args)
    .collect();
    kept.extend([EXIT_COMMAND.into(), tool.as_os_str().to_owned()]);
    for arg in guard {
        kept.extend([EXIT_COMMAND_ARG.into(), arg]);
    }
    Some(kept)
}

/// `VALUE` of a `--name=VALUE` word.
fn value_of(word: &[u8], name: &str) -> Option<OsString> {
    let rest = word.strip_prefix(name.as_bytes())?.strip_prefix(b"=")?;
    Some(OsStr::from_bytes(rest).to_owned())
}

/// The guard's arguments after `exit-guard`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    pub podman_pid: u32,
    pub podman_start: u64,
    /// podman's exit command: the program, then its arguments.
    pub command: Vec<OsString>,
}

pub fn parse_guard(args: &[OsString]) -> Option<Guard> {
    let [pid, start, dashes, command @ ..] = args else {
        return None;
    };
    if dashes != "--" || command.is_empty() {
        return None;
    }
    Some(Guard {
        podman_pid: pid.to_str()?.parse().ok()?,
        podman_start: start.to_str()?.parse().ok()?,
        command: command.to_vec(),
    })
}

/// Where the container's storage record is while it exists, from podman's exit
/// command (`podman --root R --runroot RR [--storage-driver D] ... container cleanup
/// ... ID`): `R/D-containers/ID` and `RR/D-containers/ID` (the run root holds it with
/// `--transient-store`). `None` if the command does not say (the guard then runs it).
pub fn container_records(command: &[OsString]) -> Option<Vec<PathBuf>> {
    let id = command.last()?.to_str()?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let value = |name: &str| -> Option<PathBuf> {
        let mut words = command.iter();
        while let Some(w) = words.next() {
            if w == name {
                return words.next().map(PathBuf::from);
            }
            if let Some(v) = value_of(w.as_bytes(), name) {
                return Some(PathBuf::from(v));
            }
        }
        None
    };
    let driver = value("--storage-driver")
        .map(|d| d.into_os_string())
        .unwrap_or_else(|| "overlay".into());
    let driver = driver.to_str()?;
    if driver.is_empty() || driver.contains('/') {
        return None;
    }
    let records = format!("{driver}-containers");
    let dirs: Vec<PathBuf> = [value("--root")?, value("--runroot")?]
        .into_iter()
        .filter(|d| d.is_absolute())
        .map(|d| d.join(&records).join(id))
        .collect();
    (dirs.len() == 2).then_some(dirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    const CLEANUP: &[&str] = &[
        "/usr/bin/podman",
        "--root",
        "/var/lib/tre-spank/jobs/job-7/storage",
        "--runroot",
        "/run/tre-spank/jobs/job-7/run",
        "--storage-driver",
        "overlay",
        "--events-backend",
        "none",
        "container",
        "cleanup",
        "--rm",
        "89d097790ec2bb5e",
    ];

    #[test]
    fn the_exit_command_becomes_the_guard_and_everything_else_stays() {
        let mut args = os(&["--api-version", "1", "-c", "89d0", "--exit-dir", "/x"]);
        args.extend([EXIT_COMMAND.into(), CLEANUP[0].into()]);
        for a in &CLEANUP[1..] {
            args.extend([EXIT_COMMAND_ARG.into(), (*a).into()]);
        }
        args.extend(os(&["--log-level", "warning"]));
        let got = guarded_conmon_args(&args, Path::new("/usr/sbin/tre-spank"), 4242, 99).unwrap();
        let mut want = os(&["--api-version", "1", "-c", "89d0", "--exit-dir", "/x"]);
        want.extend(os(&["--log-level", "warning"]));
        want.extend(os(&["--exit-command", "/usr/sbin/tre-spank"]));
        for a in ["exit-guard", "4242", "99", "--"].iter().chain(CLEANUP) {
            want.extend([EXIT_COMMAND_ARG.into(), (*a).into()]);
        }
        assert_eq!(got, want);
        let guard = parse_guard(
            &got.iter()
                .skip_while(|w| *w != "exit-guard")
                .skip(1)
                .filter(|w| *w != EXIT_COMMAND_ARG)
                .cloned()
                .collect::<Vec<_>>(),
        )
        .unwrap();
        assert_eq!(
            guard,
            Guard {
                podman_pid: 4242,
                podman_start: 99,
                command: os(CLEANUP)
            }
        );
    }

    #[test]
    fn the_equals_form_is_understood_and_a_probe_runs_unchanged() {
        let args = os(&[
            "--exit-command=/usr/bin/podman",
            "--exit-command-arg=x",
            "-c",
            "i",
        ]);
        let got = guarded_conmon_args(&args, Path::new("/t"), 1, 2).unwrap();
        assert_eq!(
            got,
            os(&[
                "-c",
                "i",
                "--exit-command",
                "/t",
                "--exit-command-arg",
                "exit-guard",
                "--exit-command-arg",
                "1",
                "--exit-command-arg",
                "2",
                "--exit-command-arg",
                "--",
                "--exit-command-arg",
                "/usr/bin/podman",
                "--exit-command-arg",
                "x"
            ])
        );
        assert_eq!(
            guarded_conmon_args(&os(&["--version"]), Path::new("/t"), 1, 2),
            None
        );
        // A dangling option is not guessed at.
        assert_eq!(
            guarded_conmon_args(&os(&["--exit-command"]), Path::new("/t"), 1, 2),
            None
        );
    }

    #[test]
    fn guard_arguments_are_two_numbers_dashes_and_a_command() {
        assert!(parse_guard(&os(&["1", "2", "--", "/usr/bin/podman"])).is_some());
        assert!(parse_guard(&os(&["1", "2", "--"])).is_none());
        assert!(parse_guard(&os(&["1", "2", "x", "/usr/bin/podman"])).is_none());
        assert!(parse_guard(&os(&["-1", "2", "--", "p"])).is_none());
        assert!(parse_guard(&os(&["1"])).is_none());
    }

    #[test]
    fn the_containers_records_are_in_the_graph_root_and_the_run_root() {
        assert_eq!(
            container_records(&os(CLEANUP)).unwrap(),
            [
                PathBuf::from(
                    "/var/lib/tre-spank/jobs/job-7/storage/overlay-containers/89d097790ec2bb5e"
                ),
                PathBuf::from("/run/tre-spank/jobs/job-7/run/overlay-containers/89d097790ec2bb5e"),
            ]
        );
        let mut no_id = os(CLEANUP);
        no_id.pop();
        no_id.push("../x".into());
        assert_eq!(container_records(&no_id), None);
        let no_root: Vec<OsString> = os(CLEANUP)
            .into_iter()
            .filter(|w| w != "--root" && w != "/var/lib/tre-spank/jobs/job-7/storage")
            .collect();
        assert_eq!(container_records(&no_root), None);
        let mut odd_driver = os(CLEANUP);
        odd_driver[6] = "../../etc".into();
        assert_eq!(container_records(&odd_driver), None);
    }
}
