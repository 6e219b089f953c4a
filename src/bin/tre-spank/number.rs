//! `tre-spank number --job-id J [--restart-count R] [--submit-time SECONDS]
//! [--config PATH]` (hidden from the usage text: for administrators and the test
//! harness) prints job J's NUMBER; it reads the root-only secret, so only root can use
//! it. Without `--submit-time` it asks the controller for the job's submit time, as the
//! plugin does.

use std::process::ExitCode;

use tre_spank::host::job;
use tre_spank::host::liveness::submit_time;
use tre_spank::rules::job_number::{job_number, JobIdentity};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The Slurm job id
    #[arg(long, value_name = "J")]
    pub job_id: u32,
    /// The job's restart count (scontrol show job: Restarts)
    #[arg(long, value_name = "R", default_value_t = 0)]
    pub restart_count: u32,
    /// The job's submit time in seconds since the epoch (default: asked of the
    /// controller, as the plugin does)
    #[arg(long, value_name = "SECONDS")]
    pub submit_time: Option<u64>,
    /// The config file, instead of the default one
    #[arg(long, value_name = "PATH")]
    pub config: Option<String>,
}

fn number(args: &Args) -> Result<u32, String> {
    let config_arg = args.config.as_ref().map(|c| format!("config={c}"));
    let plugin_args: Vec<&str> = config_arg.iter().map(String::as_str).collect();
    let config =
        job::load_node_config(&plugin_args, &job::node_name()).map_err(|e| e.to_string())?;
    let secret = job::read_secret(&config).map_err(|e| e.to_string())?;
    let submitted = match args.submit_time {
        Some(s) => s,
        None => submit_time(&config.cleanup, args.job_id).map_err(|e| e.to_string())?,
    };
    let identity = JobIdentity {
        job_id: args.job_id,
        restart_count: args.restart_count,
        submitted,
    };
    job_number(&secret, &identity).map_err(|e| e.to_string())
}

pub fn run(args: &Args) -> ExitCode {
    match number(args) {
        Ok(n) => {
            println!("{n}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!("{e}");
            ExitCode::from(2)
        }
    }
}
