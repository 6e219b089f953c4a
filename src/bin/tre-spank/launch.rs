//! `tre-spank launch --image IMAGE [--runtime podman|apptainer] [--drop-args
//! START,COUNT] -- COMMAND [ARGS...]`: what the plugin makes each container task run
//! (the argv is `rules::runtime::supervised_argv`'s); it supervises the runtime (see
//! `host::launch`). Anything else on its command line is refused (exit 125).

use std::ffi::OsString;
use std::process::ExitCode;

use tre_spank::host::launch::{supervise, Launch};
use tre_spank::rules::options::Runtime;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The image reference, as the plugin validated it
    #[arg(long, value_name = "IMAGE")]
    pub image: String,
    /// The runtime COMMAND runs
    #[arg(long, value_name = "podman|apptainer", default_value = "podman", value_parser = crate::runtime_arg)]
    pub runtime: Runtime,
    /// COUNT task arguments from index START of COMMAND are not the runtime's
    #[arg(long, value_name = "START,COUNT", value_parser = drop_args)]
    pub drop_args: Option<(usize, usize)>,
    /// Make podman's rootless user namespace before starting it (host::userns)
    #[arg(long)]
    pub user_namespace: bool,
    /// The runtime's command line (the plugin's prefix, then what Slurm appends)
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// `START,COUNT`, two decimal numbers.
fn drop_args(s: &str) -> Result<(usize, usize), String> {
    let (a, b) = s.split_once(',').ok_or("needs START,COUNT")?;
    let number = |n: &str| {
        n.parse::<usize>()
            .map_err(|e| format!("needs START,COUNT ({n:?}: {e})"))
    };
    Ok((number(a)?, number(b)?))
}

pub fn run(args: Args) -> ExitCode {
    let launch = Launch {
        image: args.image,
        runtime: args.runtime,
        argv: args.command,
        drop: args.drop_args,
        user_namespace: args.user_namespace,
    };
    ExitCode::from(u8::try_from(supervise(&launch)).unwrap_or(125))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_args_are_two_numbers() {
        assert_eq!(drop_args("12,1"), Ok((12, 1)));
        assert!(drop_args("12").is_err());
        assert!(drop_args("12,x").is_err());
        assert!(drop_args("-1,1").is_err());
        assert!(drop_args("1,2,3").is_err());
    }
}
