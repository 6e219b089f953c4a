//! srun, sbatch and salloc: refuse bad values before the job is queued.
//!
//! The option callback cannot reject a value (slurm-spank stores it), so validation
//! happens here; an error makes the command exit before submitting anything.

use std::error::Error;

use slurm_spank::SpankHandle;

use super::{fail, raw_options};
use crate::host::audit as host_audit;
use crate::host::{account, config_file, dirs, job};
use crate::rules::audit::Event;
use crate::rules::options::RawOptions;
use crate::rules::project::{self, ProjectError};
use crate::rules::{config, options};

pub fn init_post_opt(spank: &mut SpankHandle) -> Result<(), Box<dyn Error>> {
    let raw = raw_options(spank);
    if !raw.any() {
        return Ok(());
    }
    let args = spank
        .plugin_argv()
        .map_err(|e| fail(format!("cannot read plugstack arguments: {e}")))?;
    let config = config_file::load(&args).map_err(fail)?;
    validate(&raw, &config).inspect_err(|e| audit_refusal(&raw, &e.to_string()))
}

fn validate(raw: &RawOptions, config: &config::Config) -> Result<(), Box<dyn Error>> {
    let request = options::parse(raw, config).map_err(fail)?;
    if let Some(project) = request.as_ref().and_then(|r| r.project.as_deref()) {
        check_project_is_theirs(project, config)?;
    }
    Ok(())
}

/// `--tre-project` must name one of the user's own projects. Checked here when this host
/// sees the project directories (login nodes of a TRE may not); the node checks again.
fn check_project_is_theirs(project: &str, config: &config::Config) -> Result<(), Box<dyn Error>> {
    if !dirs::is_directory(&config.safe_data_root) {
        return Ok(());
    }
    let uid = nix::unistd::getuid().as_raw();
    let account = account::lookup_with_group_database(uid).map_err(fail)?;
    let groups = project::ordered_groups(&account.primary_group, &account.supplementary_groups);
    let yours: Vec<String> = project::user_projects(&groups, config, &dirs::is_directory)
        .into_iter()
        .map(|p| p.name)
        .collect();
    if yours.iter().any(|p| p == project) {
        return Ok(());
    }
    Err(fail(ProjectError::NotYours {
        requested: project.to_string(),
        yours,
    }))
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
    let fields = [
        ("where", "submit".into()),
        ("user", user),
        ("uid", uid.to_string()),
        ("image", text(&raw.container)),
        ("runtime", text(&raw.runtime)),
        ("project", text(&raw.project)),
        ("node", job::node_name()),
        ("reason", reason.to_string()),
    ];
    let _ = host_audit::send(Event::Refused, &fields);
}
