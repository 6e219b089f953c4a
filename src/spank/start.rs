//! How a task's command becomes the supervised runtime command, per Slurm series.
//!
//! - Slurm 23.11 and later: `spank_prepend_task_argv`; slurmstepd keeps the task's own
//!   argv after the prefix, finishes its own preparation (TaskProlog, the `task_init`
//!   of the plugins listed after this one, limits) and runs the result.
//! - Slurm before 23.11 (cfg `tre_slurm_no_prepend`, set by build.rs from the headers'
//!   version): there is no such call, so `task_init` runs the same command itself with
//!   `execve`, with the task's environment as the plugins left it. Whatever slurmstepd
//!   would have done after this plugin's `task_init` does not happen: TaskProlog, the
//!   `task_init` of plugins listed after tre-spank in plugstack.conf, and the resource
//!   limits propagated from the submission host. docs/slurm-versions.md tells admins to
//!   list tre-spank last.
//!
//! Either way the task runs `prefix ++ task argv`, and `execve` is given an argv,
//! never a shell string.

use std::ffi::OsString;

use slurm_spank::SpankHandle;

use crate::host::step::StepError;

#[cfg(not(tre_slurm_no_prepend))]
pub fn start_task(
    spank: &mut SpankHandle,
    prefix: &[OsString],
    _task_argv: &[OsString],
) -> Result<(), StepError> {
    spank
        .prepend_task_argv_os(prefix.iter().map(|a| a.as_os_str()).collect())
        .map_err(|e| StepError::cannot("start the container", e))
}

/// Returns only on failure: on success the task is the supervised runtime command.
#[cfg(tre_slurm_no_prepend)]
pub fn start_task(
    spank: &mut SpankHandle,
    prefix: &[OsString],
    task_argv: &[OsString],
) -> Result<(), StepError> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;

    let c_string = |s: &std::ffi::OsStr| {
        CString::new(s.as_bytes()).map_err(|_| {
            StepError::cannot("start the container", format_args!("a NUL byte in {s:?}"))
        })
    };
    // What slurmstepd does after the plugins: TMPDIR is /tmp if the task has none, and
    // created (mode 0700) if it names a missing directory. This runs as the user.
    match spank.getenv_os("TMPDIR") {
        Ok(Some(dir)) => {
            use std::os::unix::fs::DirBuilderExt;
            let _ = std::fs::DirBuilder::new().mode(0o700).create(dir);
        }
        _ => spank
            .setenv("TMPDIR", "/tmp", true)
            .map_err(|e| StepError::cannot("set TMPDIR", e))?,
    }
    let argv = prefix
        .iter()
        .chain(task_argv)
        .map(|a| c_string(a))
        .collect::<Result<Vec<_>, _>>()?;
    let env = spank
        .job_env_os()
        .map_err(|e| StepError::cannot("read the task's environment", e))?
        .into_iter()
        .map(c_string)
        .collect::<Result<Vec<_>, _>>()?;
    let Some(program) = argv.first() else {
        return Err(StepError::cannot("start the container", "empty command"));
    };
    let e = match nix::unistd::execve(program, &argv, &env) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    Err(StepError::cannot(
        "start the container",
        format_args!("{}: {e}", program.to_string_lossy()),
    ))
}

/// Slurm before 23.11 has no `spank_prepend_task_argv`, but the slurm-spank crate
/// refers to it, and a Rust cdylib binds every symbol when it is loaded: this stand-in
/// lets the plugin load. It is never called ([`start_task`] uses `execve` there) and
/// says "not available" if it were.
#[cfg(tre_slurm_no_prepend)]
#[no_mangle]
pub extern "C" fn spank_prepend_task_argv(
    _spank: slurm_spank::spank_sys::spank_t,
    _argc: std::os::raw::c_int,
    _argv: *mut *const std::os::raw::c_char,
) -> slurm_spank::spank_sys::spank_err_t {
    slurm_spank::spank_sys::slurm_err_t_ESPANK_NOT_AVAIL
}
