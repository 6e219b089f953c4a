//! srun, sbatch and salloc: refuse bad values before the job is queued.
//!
//! The option callback cannot reject a value (slurm-spank stores it), so validation
//! happens here; an error makes the command exit before submitting anything.

use std::error::Error;

use slurm_spank::SpankHandle;

use super::{fail, raw_options};
use crate::rules::{config, options};

pub fn init_post_opt(spank: &mut SpankHandle) -> Result<(), Box<dyn Error>> {
    let raw = raw_options(spank);
    if !raw.any() {
        return Ok(());
    }
    let args = spank
        .plugin_argv()
        .map_err(|e| fail(format!("cannot read plugstack arguments: {e}")))?;
    let config = config::load(&args).map_err(fail)?;
    options::parse(&raw, &config).map_err(fail)?;
    Ok(())
}
