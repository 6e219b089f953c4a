//! `tre-spank check [--config PATH]`: validates the config and this node. The probes
//! are `host::check`'s; this prints their findings and counts the problems.

use std::path::Path;
use std::process::ExitCode;

use tre_spank::host::check::{self, Finding, Host};
use tre_spank::rules::config;
use tre_spank::rules::vocab::prefixed;

use crate::plugin_config::{load, plugin_args, slurm_conf_for_spool};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The config file to check, instead of the plugstack line's
    #[arg(long, value_name = "PATH")]
    pub config: Option<String>,
}

fn print(f: &Finding) {
    println!("{:<9}{}", f.level.label(), f.line);
}

/// The plugstack line and the config file: what a missing line, a missing file or one
/// the users cannot read means for jobs.
fn config_findings(config_arg: Option<&str>) -> Vec<Finding> {
    let mut found = Vec::new();
    let (args, source) = plugin_args(config_arg);
    if let Some((conf, top)) = &source.searched {
        found.push(Finding::ok(format!(
            "slurm.conf {}: PlugStackConfig {}",
            conf.display(),
            top.display()
        )));
    }
    if !source.found {
        found.push(Finding::problem(format!(
            "{}: slurmd and the clients do not load the plugin here",
            source.what
        )));
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    found.push(check::config_file(&config::config_path(&refs)));
    found
}

pub fn run(args: &Args) -> ExitCode {
    let config_arg = args.config.as_deref();
    let (config, node, about) = match load(config_arg) {
        Ok(x) => x,
        Err(e) => {
            print(&Finding::problem(format!(
                "{} (container jobs fail with this message; jobs without --tre-container run as usual)",
                prefixed(&e)
            )));
            println!("1 problem");
            return ExitCode::from(1);
        }
    };
    let mut findings: Vec<Finding> = about.into_iter().map(Finding::ok).collect();
    findings.extend(config_findings(config_arg));
    let slurm_conf = std::fs::read_to_string(slurm_conf_for_spool()).unwrap_or_default();
    let host = Host {
        root: Path::new("/").to_path_buf(),
        spool: config::slurmd_spool_dir(&slurm_conf),
        mountinfo: std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default(),
    };
    findings.extend(check::node(&config, &node, &host));
    for f in &findings {
        print(f);
    }
    match check::problems(&findings) {
        0 => {
            println!("all checks passed");
            ExitCode::SUCCESS
        }
        n => {
            println!("{n} problem{}", if n == 1 { "" } else { "s" });
            ExitCode::from(1)
        }
    }
}
