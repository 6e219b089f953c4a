//! `tre-spank`: the plugin's command-line companion. One file per subcommand, over
//! one argument parser (clap); the work is the library's.
//!
//! - `launch` ([`launch`]): what the plugin makes each container task run; it
//!   supervises the runtime (see `host::launch`).
//! - `check` ([`check`]): validates the config and this node (probes: `host::check`).
//! - `plan` ([`plan`]): what a job of that user would get on this node, without
//!   running anything.
//! - `sweep` ([`sweep`]): removes what jobs that no longer exist left here.
//! - `image load|pull|list|remove` ([`image`]): the node's site image stores.
//! - `cleanup` ([`cleanup`], hidden: the plugin runs it) and `number` ([`number`],
//!   hidden: for administrators and the test harness).
//!
//! The config is found as the plugin finds it ([`plugin_config`]). Messages for the
//! administrator go through the `log` facade to stderr ([`logger`]); what a command
//! reports goes to stdout.

mod check;
mod cleanup;
mod image;
mod launch;
mod logger;
mod number;
mod plan;
mod plugin_config;
mod sweep;

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{Parser, Subcommand};
use tre_spank::host::conmon;
use tre_spank::rules::options::{self, Runtime};
use tre_spank::rules::runtime;

/// Every form of the command, as `--help` shows it.
const USAGE: &str = "
  tre-spank launch --image IMAGE [--runtime podman|apptainer] [--drop-args START,COUNT] -- COMMAND [ARGS...]
  tre-spank check [--config PATH]
  tre-spank plan [--config PATH] --user USER --container IMAGE [--runtime R] [--project P] [-- COMMAND...]
  tre-spank sweep [--config PATH] [--dry-run]
  tre-spank image load [--config PATH] [--runtime podman|apptainer] [--store DIR] --archive FILE IMAGE
  tre-spank image pull [--config PATH] [--runtime podman|apptainer] [--store DIR] IMAGE
  tre-spank image list [--config PATH] [--runtime podman|apptainer] [--store DIR]
  tre-spank image remove [--config PATH] [--runtime podman|apptainer] [--store DIR] IMAGE";

/// Exit status of a command line `launch` cannot take: the runtime's own "the
/// container could not be started" status, as `host::launch` uses it.
const LAUNCH_USAGE_EXIT: u8 = 125;
/// Exit status of any other command line the tool cannot take.
const USAGE_EXIT: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "tre-spank",
    about = "The tre-spank plugin's companion: checks a node, shows what a job would get, cleans up, manages the site image stores",
    override_usage = USAGE,
    arg_required_else_help = true,
    after_help = "The config is the one the plugin reads: the arguments of the tre_spank.so line in the plugstack configuration slurmd reads, unless --config PATH is given. See tre-spank(8)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Internal: the plugin makes each container task run this; it supervises the
    /// runtime (signals, exit status, explanations of runtime failures)
    Launch(launch::Args),
    /// Validate the config and this node (exit 1 on problems)
    Check(check::Args),
    /// Print what a job of USER would get on this node, running nothing (exit 1: the
    /// job would fail)
    Plan(plan::Opts),
    /// Remove what jobs that no longer exist left on this node
    Sweep(sweep::Args),
    /// Internal: the job epilog's and slurmd start's cleanup
    #[command(hide = true)]
    Cleanup(cleanup::Args),
    /// Manage the node's site image stores (root only)
    Image(image::Args),
    /// Print job J's NUMBER (root only: reads the secret)
    #[command(hide = true)]
    Number(number::Args),
    /// Internal: the cleanup starts it as the job's user where root is refused
    /// (root-squashed homes); its arguments are host::as_user's own
    #[command(hide = true, name = "remove-as-user")]
    RemoveAsUser(RawArgs),
    /// Internal: conmon runs it when a container exits; its arguments are
    /// host::conmon's own
    #[command(hide = true, name = "exit-guard")]
    ExitGuard(RawArgs),
}

#[derive(clap::Args, Debug)]
struct RawArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    raw: Vec<OsString>,
}

/// `--runtime` of `launch` and `image`: podman or apptainer (the options' own words).
fn runtime_arg(s: &str) -> Result<Runtime, String> {
    options::parse_runtime(s)
        .ok()
        .and_then(|r| r.named())
        .ok_or_else(|| format!("needs podman or apptainer, not {s:?}"))
}

/// A command line the tool cannot take: its help (asked for) on stdout with status 0,
/// or what is wrong on stderr.
fn refuse(e: &clap::Error, args: &[OsString]) -> ExitCode {
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let _ = e.print();
    } else {
        let text = e.render().to_string();
        log::error!("{}", text.trim_end().trim_start_matches("error: "));
    }
    let launch = args.get(1).is_some_and(|a| a == "launch");
    ExitCode::from(if launch {
        LAUNCH_USAGE_EXIT
    } else {
        USAGE_EXIT
    })
}

fn main() -> ExitCode {
    logger::init();
    let args: Vec<OsString> = std::env::args_os().collect();
    // Started by podman as its conmon (`podman --conmon=`, the exit guard).
    let name = args.first().map(Path::new).and_then(Path::file_name);
    if name.is_some_and(|n| n == runtime::CONMON_NAME) {
        return ExitCode::from(conmon::run_wrapper(&args[1..]));
    }
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => return refuse(&e, &args),
    };
    match cli.command {
        Command::Launch(a) => launch::run(a),
        Command::Check(a) => check::run(&a),
        Command::Plan(a) => plan::plan_cmd(&a),
        Command::Sweep(a) => sweep::run(&a),
        Command::Cleanup(a) => cleanup::run(&a),
        Command::Image(a) => image::run(&a),
        Command::Number(a) => number::run(&a),
        Command::RemoveAsUser(a) => tre_spank::host::as_user::subcommand(a.raw.into_iter()),
        Command::ExitGuard(a) => ExitCode::from(conmon::run_guard(&a.raw)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::os::unix::ffi::OsStringExt;
    use std::path::Path;
    use tre_spank::rules::image::ImageRef;
    use tre_spank::rules::runtime::supervised_argv;

    fn parse(words: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from(std::iter::once("tre-spank").chain(words.iter().copied()))
            .map(|c| c.command)
    }

    #[test]
    fn remove_as_user_passes_its_arguments_on_as_given() {
        assert_eq!(
            tre_spank::host::as_user::SUBCOMMAND,
            "remove-as-user",
            "the name the cleanup starts"
        );
        let Ok(Command::RemoveAsUser(a)) = parse(&[
            "remove-as-user",
            "--in-userns",
            "/home/alice",
            "scratch-1",
            "2049",
            "77",
        ]) else {
            panic!("remove-as-user not parsed");
        };
        assert_eq!(
            a.raw,
            ["--in-userns", "/home/alice", "scratch-1", "2049", "77"]
        );
    }

    #[test]
    fn the_parser_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn launch_takes_exactly_what_the_plugin_passes() {
        let image = ImageRef::parse("ghcr.io/mikej888/hello-tre:1.0").unwrap();
        let prefix: Vec<OsString> = ["/usr/bin/podman", "run", "--rm", "--", "-x"]
            .iter()
            .map(OsString::from)
            .chain([OsString::from_vec(b"caf\xe9".to_vec())])
            .collect();
        for (runtime, dropped) in [(Runtime::Podman, 0), (Runtime::Apptainer, 2)] {
            let argv = supervised_argv(
                Path::new("/usr/sbin/tre-spank"),
                &image,
                runtime,
                dropped,
                runtime == Runtime::Podman,
                prefix.clone(),
            );
            let Command::Launch(a) = Cli::try_parse_from(&argv).unwrap().command else {
                panic!("not launch");
            };
            assert_eq!(a.image, image.to_string());
            assert_eq!(a.runtime, runtime);
            assert_eq!(
                a.drop_args,
                (dropped > 0).then_some((prefix.len(), dropped))
            );
            assert_eq!(a.user_namespace, runtime == Runtime::Podman);
            // Everything after `--` is the runtime's, bytes and dashes included.
            assert_eq!(a.command, prefix);
        }
    }

    #[test]
    fn exit_guard_takes_every_word_conmon_passes_dashes_included() {
        let words = [
            "exit-guard",
            "4242",
            "99",
            "--",
            "/usr/bin/podman",
            "--root",
            "/r",
            "--log-level",
            "warning",
            "container",
            "cleanup",
            "--rm",
            "89d0",
        ];
        let Ok(Command::ExitGuard(a)) = parse(&words) else {
            panic!("exit-guard not parsed");
        };
        let raw: Vec<String> = a
            .raw
            .iter()
            .map(|w| w.to_string_lossy().into_owned())
            .collect();
        assert_eq!(raw, words[1..]);
    }

    #[test]
    fn launch_refuses_junk() {
        let ok = ["launch", "--image", "x", "--", "/usr/bin/podman"];
        assert!(parse(&ok).is_ok());
        for bad in [
            &["launch", "--image", "x"][..],
            &["launch", "--image", "x", "--"],
            &["launch", "--", "/usr/bin/podman"],
            &["launch", "--image", "x", "/usr/bin/podman"],
            &["launch", "--image", "x", "--runtime", "docker", "--", "p"],
            &["launch", "--image", "x", "--runtime", "auto", "--", "p"],
            &["launch", "--image", "x", "--drop-args", "3", "--", "p"],
            &["launch", "--image", "x", "--bogus", "--", "p"],
            &["launch", "--image", "x", "--image", "y", "--", "p"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn cleanup_takes_what_the_epilog_and_slurmd_start_pass() {
        let epilog = [
            "cleanup",
            "--epilog",
            "17",
            "--",
            "config=/etc/x.toml",
            "-a",
        ];
        let Ok(Command::Cleanup(a)) = parse(&epilog) else {
            panic!("epilog refused");
        };
        assert_eq!(a.epilog, Some(17));
        assert!(!a.at_slurmd_start && !a.detach);
        assert_eq!(a.plugin, ["config=/etc/x.toml", "-a"]);
        let start = ["cleanup", "--at-slurmd-start", "--detach", "--"];
        let Ok(Command::Cleanup(a)) = parse(&start) else {
            panic!("slurmd start refused");
        };
        assert!(a.at_slurmd_start && a.detach && a.plugin.is_empty());
        assert!(parse(&["cleanup", "--to-log", "--at-slurmd-start", "--"]).is_ok());
        for bad in [
            &["cleanup", "--"][..],
            &["cleanup", "--epilog", "x", "--"],
            &["cleanup", "--epilog", "1", "--at-slurmd-start", "--"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn admin_commands_take_their_documented_options() {
        let Ok(Command::Plan(p)) = parse(&[
            "plan",
            "--user=alice",
            "--container",
            "ghcr.io/a/b:1",
            "--project",
            "p1",
            "--",
            "python3",
            "-c",
            "x",
        ]) else {
            panic!("plan refused");
        };
        assert_eq!(
            (p.user.as_str(), p.container.as_str()),
            ("alice", "ghcr.io/a/b:1")
        );
        assert_eq!(p.project.as_deref(), Some("p1"));
        assert_eq!(p.command, ["python3", "-c", "x"]);
        assert!(parse(&["plan", "--user", "alice"]).is_err());
        let Ok(Command::Sweep(s)) = parse(&["sweep", "--dry-run", "--config", "/x"]) else {
            panic!("sweep refused");
        };
        assert!(s.dry_run && s.config.as_deref() == Some("/x"));
        assert!(parse(&["check", "--dry-run"]).is_err());
        assert!(parse(&["check", "--config"]).is_err());
        let Ok(Command::Number(n)) = parse(&["number", "--job-id", "5"]) else {
            panic!("number refused");
        };
        assert_eq!((n.job_id, n.restart_count), (5, 0));
        assert!(parse(&["number"]).is_err());
        assert!(parse(&["number", "--job-id", "-1"]).is_err());
    }

    #[test]
    fn image_commands_take_options_before_or_after_the_image() {
        let Ok(Command::Image(i)) = parse(&[
            "image",
            "load",
            "ghcr.io/a/b:1",
            "--runtime",
            "apptainer",
            "--archive=/srv/b.tar",
        ]) else {
            panic!("image load refused");
        };
        let image::Action::Load {
            store,
            archive,
            image,
        } = i.action
        else {
            panic!("not load");
        };
        assert_eq!(store.runtime, Runtime::Apptainer);
        assert_eq!(archive, Path::new("/srv/b.tar"));
        assert_eq!(image, "ghcr.io/a/b:1");
        assert!(parse(&["image", "list", "--store", "/var/lib/x"]).is_ok());
        for bad in [
            &["image"][..],
            &["image", "load", "ghcr.io/a/b:1"],
            &["image", "pull"],
            &["image", "list", "ghcr.io/a/b:1"],
            &["image", "remove", "a", "b"],
            &["image", "pull", "--archive", "/x", "ghcr.io/a/b:1"],
            &["image", "prune"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn help_documents_every_command_and_hides_the_internal_ones() {
        let help = Cli::command().render_help().to_string();
        for word in [
            "tre-spank launch --image IMAGE",
            "tre-spank check [--config PATH]",
            "tre-spank plan [--config PATH] --user USER --container IMAGE",
            "tre-spank sweep [--config PATH] [--dry-run]",
            "tre-spank image load [--config PATH]",
            "tre-spank image remove",
        ] {
            assert!(help.contains(word), "{word} not in {help}");
        }
        assert!(
            !help.contains("cleanup") && !help.contains("number"),
            "{help}"
        );
    }

    #[test]
    fn a_bad_launch_line_exits_125_and_others_2() {
        let words = |w: &[&str]| -> Vec<OsString> { w.iter().map(OsString::from).collect() };
        let launch = words(&["tre-spank", "launch", "--image"]);
        let e = Cli::try_parse_from(&launch).unwrap_err();
        assert_eq!(refuse(&e, &launch), ExitCode::from(125));
        let check = words(&["tre-spank", "check", "--bogus"]);
        let e = Cli::try_parse_from(&check).unwrap_err();
        assert_eq!(refuse(&e, &check), ExitCode::from(2));
    }
}
