//! `tre-spank`: the plugin's command-line companion.
//!
//! `tre-spank launch --image IMAGE -- RUNTIME-COMMAND...` is what the plugin makes
//! each container task run: it supervises the runtime (see `host::launch`).
//!
//! `tre-spank number --job-id J [--restart-count R] [--config PATH]` (not in the usage
//! text: an administrator's and the test harness's tool) prints job J's NUMBER. It reads
//! the root-only secret, so only root can use it.

use std::ffi::OsString;
use std::process::ExitCode;

use tre_spank::host::launch::{supervise, Launch};
use tre_spank::rules::{config, job_number::job_number};

const USAGE: &str = "usage: tre-spank launch --image IMAGE -- COMMAND [ARGS...]";

fn parse_launch(mut args: impl Iterator<Item = OsString>) -> Result<Launch, String> {
    let mut image = None;
    loop {
        match args.next().as_ref().and_then(|a| a.to_str()) {
            Some("--image") => image = args.next().and_then(|v| v.into_string().ok()),
            Some("--") => break,
            Some(other) => return Err(format!("unexpected argument {other:?}")),
            None => return Err("missing -- COMMAND".into()),
        }
    }
    let image = image.ok_or("missing --image")?;
    Ok(Launch {
        image,
        argv: args.collect(),
    })
}

/// `number --job-id J [--restart-count R] [--config PATH]`: the job's NUMBER.
fn number(mut args: impl Iterator<Item = OsString>) -> Result<u32, String> {
    let (mut job_id, mut restarts, mut config_arg) = (None, 0u32, None);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .and_then(|v| v.into_string().ok())
                .ok_or(format!("{a:?} needs a value"))
        };
        match a.to_str() {
            Some("--job-id") => {
                job_id = Some(
                    value()?
                        .parse::<u32>()
                        .map_err(|e| format!("--job-id: {e}"))?,
                )
            }
            Some("--restart-count") => {
                restarts = value()?
                    .parse::<u32>()
                    .map_err(|e| format!("--restart-count: {e}"))?
            }
            Some("--config") => config_arg = Some(format!("config={}", value()?)),
            _ => return Err(format!("unexpected argument {a:?}")),
        }
    }
    let job_id = job_id.ok_or("missing --job-id")?;
    let args: Vec<&str> = config_arg.iter().map(String::as_str).collect();
    let config = config::load(&args).map_err(|e| e.to_string())?;
    let secret = std::fs::read(&config.secret_file).map_err(|e| {
        format!(
            "cannot read the job number secret {}: {e}",
            config.secret_file.display()
        )
    })?;
    job_number(&secret, job_id, restarts).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    match args.next().as_ref().and_then(|a| a.to_str()) {
        Some("launch") => match parse_launch(args) {
            Ok(launch) => ExitCode::from(u8::try_from(supervise(&launch)).unwrap_or(125)),
            Err(e) => {
                eprintln!("tre-spank: {e}\n{USAGE}");
                ExitCode::from(125)
            }
        },
        Some("number") => match number(args) {
            Ok(n) => {
                println!("{n}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tre-spank: {e}");
                ExitCode::from(2)
            }
        },
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
