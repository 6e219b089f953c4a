//! The SPANK layer: gathers facts from Slurm, asks [`crate::rules`] what to do, and
//! applies it through [`crate::host`]. One module per Slurm context:
//!
//! - [`client`]: srun, sbatch and salloc on the submission host (validation only).
//! - [`stepd`]: slurmstepd, for every job step (directories, wrapping the task).
//! - [`epilog`]: the job epilog on each node (scratch removal), and the sweep at slurmd
//!   start for jobs whose epilog never ran on this node.
//! - [`start`]: how the task becomes the runtime command (per Slurm series).
//!
//! Rule of this layer: user mistakes fail the job (client side or `task_init`), never
//! the node, so no remote callback returns an error before `task_init`.

mod client;
mod epilog;
mod log;
mod start;
mod stepd;

/// The Slurm series the plugin is built for, from the headers (build.rs): Slurm loads
/// the plugin only if this has its own major.minor.
mod slurm_version {
    include!(concat!(env!("OUT_DIR"), "/slurm_version.rs"));
}

use std::error::Error;
use std::os::unix::ffi::OsStrExt;

use slurm_spank::{spank_log_error, Context, Plugin, SpankHandle, SpankOption, SPANK_PLUGIN};

use crate::host::log::prefixed;
use crate::host::step::StepError;
use crate::rules::options::{
    RawOptions, OPTIONS, OPT_BATCH, OPT_CONTAINER, OPT_ENTRYPOINT, OPT_ENV, OPT_INPUTS,
    OPT_PROJECT, OPT_RUNTIME,
};

// Not the crate's SLURM_VERSION_NUMBER: with SKIP_SLURM_BINDINGS (Slurm before 23.11)
// that is the version of the crate's own pre-generated bindings.
SPANK_PLUGIN!(b"tre_spank", slurm_version::SLURM_VERSION_NUMBER, TreSpank);

#[derive(Default)]
struct TreSpank {
    step: stepd::Step,
}

/// Errors shown to users and admins carry the plugin's name.
fn fail(message: impl std::fmt::Display) -> Box<dyn Error> {
    prefixed(&message).into()
}

fn raw_options(spank: &SpankHandle) -> RawOptions {
    let value = |name: &str| {
        spank
            .get_option_value_os(name)
            .map(|v| v.as_bytes().to_vec())
    };
    RawOptions {
        container: value(OPT_CONTAINER),
        runtime: value(OPT_RUNTIME),
        project: value(OPT_PROJECT),
        env: value(OPT_ENV),
        entrypoint: value(OPT_ENTRYPOINT),
        batch: value(OPT_BATCH),
        inputs: value(OPT_INPUTS),
    }
}

fn register_options(spank: &mut SpankHandle) -> Result<(), StepError> {
    for (name, arg, usage) in OPTIONS {
        spank
            .register_option(SpankOption::new(name).takes_value(arg).usage(usage))
            .map_err(|e| StepError::cannot(format!("register --{name}"), e))?;
    }
    Ok(())
}

// SAFETY: the crate calls these methods from Slurm's single-threaded callbacks only; no
// method panics across the FFI edge (each returns its error) or keeps a SpankHandle.
unsafe impl Plugin for TreSpank {
    /// No tracing subscriber: logging from `exit()` in client contexts has crashed.
    /// The plugin's own `log` lines go to Slurm's log on the node (see [`log`]); the
    /// client contexts log nothing.
    fn setup(&mut self, spank: &mut SpankHandle) -> Result<(), Box<dyn Error>> {
        if !matches!(spank.context(), Ok(Context::Local | Context::Allocator)) {
            log::install();
        }
        Ok(())
    }

    fn report_error(&self, spank: &mut SpankHandle, error: &dyn Error) {
        // On the node the line goes to slurmd's log: a file name or value with a
        // newline must not forge lines there. srun shows it to the user as it is.
        match spank.context() {
            Ok(Context::Local | Context::Allocator) => spank_log_error!("{}", error),
            _ => spank_log_error!("{}", crate::rules::audit::log_line(&error.to_string())),
        }
    }

    fn init(&mut self, spank: &mut SpankHandle) -> Result<(), Box<dyn Error>> {
        match spank.context()? {
            Context::Local | Context::Allocator => register_options(spank).map_err(fail),
            Context::Remote => {
                // A failure here would fail the step launch (and can drain the node).
                if let Err(e) = register_options(spank) {
                    self.step.hold_error(e);
                }
                Ok(())
            }
            Context::Slurmd => {
                epilog::slurmd_sweep(spank);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn init_post_opt(&mut self, spank: &mut SpankHandle) -> Result<(), Box<dyn Error>> {
        match spank.context()? {
            Context::Local | Context::Allocator => client::init_post_opt(spank),
            Context::Remote => {
                self.step.init_post_opt(spank);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn user_init(&mut self, spank: &mut SpankHandle) -> Result<(), Box<dyn Error>> {
        self.step.user_init(spank);
        Ok(())
    }

    fn task_init_privileged(&mut self, spank: &mut SpankHandle) -> Result<(), Box<dyn Error>> {
        self.step.task_init_privileged(spank);
        Ok(())
    }

    fn task_init(&mut self, spank: &mut SpankHandle) -> Result<(), Box<dyn Error>> {
        self.step.task_init(spank)
    }

    fn task_exit(&mut self, spank: &mut SpankHandle) -> Result<(), Box<dyn Error>> {
        self.step.task_exit(spank);
        Ok(())
    }

    fn job_epilog(&mut self, spank: &mut SpankHandle) -> Result<(), Box<dyn Error>> {
        epilog::job_epilog(spank);
        Ok(())
    }
}
