//! `tre-spank cleanup (--epilog JOB | --at-slurmd-start) [--detach] -- PLUGIN-ARGS...`
//! (hidden from the usage text: the plugin runs it, see `spank/epilog.rs`). The job
//! epilog and slurmd's start hand their cleanup to it, so that neither waits on a
//! removal or a hung home. `--detach`: start the cleanup in a new session and return
//! at once (its events go to `<state_dir>/cleanup.log`).

use std::path::PathBuf;
use std::process::ExitCode;

use tre_spank::host::cleanup::{self, Event};
use tre_spank::host::job;
use tre_spank::host::sweep;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Clean up after job JOB's epilog on this node
    #[arg(long, value_name = "JOB", conflicts_with = "at_slurmd_start")]
    pub epilog: Option<u32>,
    /// Sweep the jobs that ended, as slurmd starts
    #[arg(long, required_unless_present = "epilog")]
    pub at_slurmd_start: bool,
    /// Start the cleanup in a new session, print its pid and return
    #[arg(long)]
    pub detach: bool,
    /// Write the events to <state_dir>/cleanup.log, not stdout
    #[arg(long)]
    pub to_log: bool,
    /// The plugin's own arguments (its plugstack line's), to read the config it reads
    #[arg(last = true, value_name = "PLUGIN-ARGS")]
    pub plugin: Vec<String>,
}

/// The same cleanup in a new session, its events to the log.
fn detach(args: &Args) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let me = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    let mut cmd = std::process::Command::new(me);
    cmd.args(["cleanup", "--to-log"]);
    match args.epilog {
        Some(job) => cmd.arg("--epilog").arg(job.to_string()),
        None => cmd.arg("--at-slurmd-start"),
    };
    let spawned = cmd
        .arg("--")
        .args(&args.plugin)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn();
    match spawned {
        Ok(child) => {
            println!("{}", child.id());
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!("cleanup: cannot start: {e}");
            ExitCode::from(1)
        }
    }
}

pub fn run(args: &Args) -> ExitCode {
    if args.detach {
        return detach(args);
    }
    let refs: Vec<&str> = args.plugin.iter().map(String::as_str).collect();
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
    let mut log = cleanup::Log::new(&config.state_dir, args.to_log);
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
    match args.epilog {
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
