//! srun, sbatch and salloc: refuse bad values before the job is queued.
//!
//! The option callback cannot reject a value (slurm-spank stores it), so validation
//! happens here; an error makes the command exit before submitting anything.

use std::error::Error;

use slurm_spank::SpankHandle;

use super::{fail, raw_options};
use crate::host::audit as host_audit;
use crate::host::job;
use crate::rules::audit::{self, Event};
use crate::rules::options::RawOptions;
use crate::rules::{config, options};

pub fn init_post_opt(spank: &mut SpankHandle) -> Result<(), Box<dyn Error>> {
    let raw = raw_options(spank);
    if raw.container.is_none() && raw.runtime.is_none() && raw.project.is_none() {
        return Ok(());
    }
    let args = spank
        .plugin_argv()
        .map_err(|e| fail(format!("cannot read plugstack arguments: {e}")))?;
    let config = config::load(&args).map_err(fail)?;
    if let Err(e) = options::parse(&raw, &config) {
        let e = fail(e);
        audit_refusal(&raw, &e.to_string());
        return Err(e);
    }
    Ok(())
}

/// Refusals at submission go to the submission host's syslog (there is no slurmd log
/// here). A missing syslog daemon changes nothing for the user.
fn audit_refusal(raw: &RawOptions, reason: &str) {
    let text = |v: &Option<Vec<u8>>| {
        v.as_deref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    };
    let uid = nix::unistd::getuid();
    let user = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_default();
    let record = audit::format_record(
        Event::Refused,
        &[
            ("where", "submit".into()),
            ("user", user),
            ("uid", uid.to_string()),
            ("image", text(&raw.container)),
            ("runtime", text(&raw.runtime)),
            ("project", text(&raw.project)),
            ("node", job::node_name()),
            ("reason", reason.to_string()),
        ],
    );
    let _ = host_audit::send(&record);
}
