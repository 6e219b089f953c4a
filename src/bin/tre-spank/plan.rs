//! `tre-spank plan [--config PATH] --user USER --container IMAGE [--runtime R]
//! [--project P] [-- COMMAND...]`: what a job of that user would get on this node,
//! without running anything.

use std::ffi::OsString;
use std::process::ExitCode;

use tre_spank::host::account::Account;
use tre_spank::host::step;
use tre_spank::rules::options::RawOptions;
use tre_spank::rules::runtime;
use tre_spank::rules::vocab::prefixed;

use crate::plugin_config;

#[derive(clap::Args, Debug)]
pub struct Opts {
    /// The config file, instead of the plugstack line's
    #[arg(long, value_name = "PATH")]
    pub config: Option<String>,
    /// The job's user
    #[arg(long, value_name = "USER")]
    pub user: String,
    /// The job's --tre-container
    #[arg(long, value_name = "IMAGE")]
    pub container: String,
    /// The job's --tre-runtime (podman, apptainer or auto)
    #[arg(long, value_name = "R")]
    pub runtime: Option<String>,
    /// The job's --tre-project
    #[arg(long, value_name = "P")]
    pub project: Option<String>,
    /// The srun command (without it: a batch script)
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// The config as `load` gives it, its error as the job would show it.
fn load(opts: &Opts) -> Result<(tre_spank::rules::config::Config, String, Vec<String>), String> {
    plugin_config::load(opts.config.as_deref()).map_err(|e| prefixed(&e))
}

/// Runs `f` in a child process with the user's identity (groups, gid, uid), as the
/// job's `user_init` does, and returns its exit code.
fn as_user(account: &Account, f: impl FnOnce() -> i32) -> Result<i32, String> {
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, setgroups, setresgid, setresuid, ForkResult, Gid, Uid};
    let mut gids: Vec<Gid> = vec![Gid::from_raw(account.gid)];
    for g in &account.supplementary_groups {
        if let Ok(Some(gr)) = nix::unistd::Group::from_name(g) {
            gids.push(gr.gid);
        }
    }
    let _ = std::io::Write::flush(&mut std::io::stdout());
    // SAFETY: the tool is single-threaded; the child only calls async-signal-safe
    // credential calls, then Rust code that owns no lock held by another thread.
    match unsafe { fork() }.map_err(|e| format!("cannot fork: {e}"))? {
        ForkResult::Child => {
            let (uid, gid) = (Uid::from_raw(account.uid), Gid::from_raw(account.gid));
            let code = match setgroups(&gids)
                .and_then(|_| setresgid(gid, gid, gid))
                .and_then(|_| setresuid(uid, uid, uid))
            {
                Ok(()) => f(),
                Err(e) => {
                    log::error!("plan: cannot take the identity of {}: {e}", account.name);
                    3
                }
            };
            let _ = std::io::Write::flush(&mut std::io::stdout());
            std::process::exit(code)
        }
        ForkResult::Parent { child } => match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => Ok(code),
            Ok(other) => Err(format!("the check as the user ended with {other:?}")),
            Err(e) => Err(format!("cannot wait: {e}")),
        },
    }
}

fn would_fail(line: &str) -> i32 {
    println!("job would fail with: {line}");
    1
}

pub fn plan_cmd(opts: &Opts) -> ExitCode {
    let code = plan_for(opts, &opts.user, &opts.container);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// What slurmstepd would do for this job (the same pipeline, `host::step`), printed.
fn plan_for(opts: &Opts, user: &str, container: &str) -> i32 {
    let about = match load(opts) {
        Ok((_, _, about)) => about,
        Err(e) => return would_fail(&e),
    };
    for line in &about {
        println!("{line}");
    }
    let bytes = |v: &Option<String>| v.as_ref().map(|v| v.as_bytes().to_vec());
    let options = RawOptions {
        container: Some(container.as_bytes().to_vec()),
        runtime: bytes(&opts.runtime),
        project: bytes(&opts.project),
        ..RawOptions::default()
    };
    let args = plugin_config::plugin_args(opts.config.as_deref()).0;
    let facts = step::PlannedJob::new(args, user, options, opts.command.clone());
    // As root, like the plugin (podman's version is cached in run_dir, root's).
    let prepared = match step::prepare(&facts, &step::NodeHost) {
        Ok(p) => p,
        Err(e) => return would_fail(&e.line()),
    };
    let account = prepared.account.clone();
    println!(
        "user {} (uid {}), groups: {}",
        account.name,
        account.uid,
        std::iter::once(account.primary_group.as_str())
            .chain(account.supplementary_groups.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "image {} (runtime {})",
        prepared.request.image, prepared.runtime
    );
    let result = as_user(&account, || {
        let (resolved, plan) = match step::plan_task(prepared, &facts, &step::NodeHost) {
            Ok(x) => x,
            Err(e) => return would_fail(&e.line()),
        };
        let r = &resolved.resolution;
        println!(
            "project: {} ({})",
            (r.project.as_ref())
                .map(|p| format!("{} via group {}", p.name, p.group))
                .unwrap_or_else(|| "none".into()),
            r.reason
        );
        println!("mounts:");
        for m in plan.command.iter().flat_map(|c| &c.mounts) {
            let ro = if m.read_only { " (read-only)" } else { "" };
            println!("  {} -> {}{ro}", m.host.display(), m.container.display());
        }
        println!("job output would start with:");
        for line in &plan.lines {
            println!("  {line}");
        }
        match &plan.command {
            // Slurm appends the task's own arguments to what the plugin prepends.
            Some(c) => println!(
                "task command: {}",
                runtime::display_command(&[&c.task_prefix[..], &c.task_argv[..]].concat())
            ),
            None => println!("task command: the batch script itself, on the host"),
        }
        println!("(N: the job's number, JOBID: its Slurm job id; nothing was created or run)");
        0
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            log::error!("plan: {e}");
            2
        }
    }
}
