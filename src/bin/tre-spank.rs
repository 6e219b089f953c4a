//! `tre-spank`: the plugin's command-line companion.
//!
//! `tre-spank launch --image IMAGE -- RUNTIME-COMMAND...` is what the plugin makes
//! each container task run: it supervises the runtime (see `host::launch`).

use std::ffi::OsString;
use std::process::ExitCode;

use tre_spank::host::launch::{supervise, Launch};
use tre_spank::rules::options::Runtime;

const USAGE: &str = "usage: tre-spank launch --image IMAGE [--runtime podman|apptainer] [--drop-args START,COUNT] -- COMMAND [ARGS...]";

fn parse_launch(mut args: impl Iterator<Item = OsString>) -> Result<Launch, String> {
    let mut image = None;
    let mut runtime = Runtime::Podman;
    let mut drop = None;
    loop {
        match args.next().as_ref().and_then(|a| a.to_str()) {
            Some("--image") => image = args.next().and_then(|v| v.into_string().ok()),
            Some("--runtime") => {
                runtime = match args.next().as_ref().and_then(|a| a.to_str()) {
                    Some("podman") => Runtime::Podman,
                    Some("apptainer") => Runtime::Apptainer,
                    _ => return Err("--runtime needs podman or apptainer".into()),
                }
            }
            Some("--drop-args") => {
                let v = args.next().and_then(|v| v.into_string().ok());
                let parsed = v.as_deref().and_then(|v| {
                    let (a, b) = v.split_once(',')?;
                    Some((a.parse().ok()?, b.parse().ok()?))
                });
                drop = Some(parsed.ok_or("--drop-args needs START,COUNT")?);
            }
            Some("--") => break,
            Some(other) => return Err(format!("unexpected argument {other:?}")),
            None => return Err("missing -- COMMAND".into()),
        }
    }
    let image = image.ok_or("missing --image")?;
    Ok(Launch {
        image,
        runtime,
        argv: args.collect(),
        drop,
    })
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
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
