//! `tre-spank sweep [--config PATH] [--dry-run]`: removes what jobs that no longer
//! exist left on this node.

use std::path::Path;
use std::process::ExitCode;

use tre_spank::host::cleanup::{self, Event};
use tre_spank::host::liveness::ask_controller;
use tre_spank::host::sweep;
use tre_spank::rules::liveness::ended_everywhere;

use crate::plugin_config::load;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The config file, instead of the plugstack line's
    #[arg(long, value_name = "PATH")]
    pub config: Option<String>,
    /// List the jobs it would sweep, and remove nothing
    #[arg(long)]
    pub dry_run: bool,
}

pub fn run(args: &Args) -> ExitCode {
    let config = match load(args.config.as_deref()) {
        Ok((c, _, _)) => c,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::from(1);
        }
    };
    if args.dry_run {
        let state = match tre_spank::host::state::StateDir::open(&config.state_dir) {
            Ok(s) => s,
            Err(e) => {
                log::error!("sweep: {e}");
                return ExitCode::from(1);
            }
        };
        let jobs = sweep::known_jobs(&config, &state).unwrap_or_default();
        let here = sweep::jobs_with_a_stepd(Path::new("/proc"));
        let candidates: Vec<u32> = jobs.into_iter().filter(|j| !here.contains(j)).collect();
        for (j, view) in ask_controller(&config.cleanup, &candidates) {
            if ended_everywhere(&view) {
                println!("would sweep job {j}");
            }
        }
        return ExitCode::SUCCESS;
    }
    let mut problems = false;
    let mut print = |e: Event| match e {
        Event::Note(n) if n.problem => {
            problems = true;
            log::error!("{}", n.line);
        }
        Event::Note(n) => println!("{}", n.line),
        Event::Background(l) => println!("{l}"),
    };
    // An administrator's sweep asks the controller once.
    match cleanup::sweep_ended_jobs(&config, None, std::time::Instant::now(), &mut print) {
        Ok(report) => {
            println!(
                "swept {} job(s), {} still alive",
                report.swept.len(),
                report.alive.len()
            );
            if problems {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            log::error!("sweep: {e}");
            ExitCode::from(1)
        }
    }
}
