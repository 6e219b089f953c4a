//! `tre-spank plan [--config PATH] --user USER --container IMAGE [--runtime R]
//! [--project P] [-- COMMAND...]`: what a job of that user would get on this node,
//! without running anything.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tre_spank::host::account::{self, Account};
use tre_spank::host::dirs;
use tre_spank::host::job;
use tre_spank::host::podman_version::podman_version;
use tre_spank::rules::options::{self, RawOptions, Runtime};
use tre_spank::rules::plan::{self, JobDirs};
use tre_spank::rules::runtime::{self, PodmanStorage, Target, TaskLaunch};

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
    plugin_config::load(opts.config.as_deref()).map_err(|e| format!("tre-spank: {e}"))
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

fn plan_for(opts: &Opts, user: &str, container: &str) -> i32 {
    // The same steps, in the same order, as slurmstepd (spank/stepd.rs).
    let (mut config, node, about) = match load(opts) {
        Ok(x) => x,
        Err(e) => return would_fail(&e),
    };
    job::keep_present_image_stores(&mut config);
    for line in &about {
        println!("{line}");
    }
    let raw = RawOptions {
        container: Some(container.as_bytes().to_vec()),
        runtime: opts.runtime.as_ref().map(|r| r.as_bytes().to_vec()),
        project: opts.project.as_ref().map(|p| p.as_bytes().to_vec()),
        ..RawOptions::default()
    };
    let request = match options::parse(&raw, &config) {
        Ok(Some(r)) => r,
        Ok(None) => return would_fail("tre-spank: --tre-container is missing"),
        // sbatch itself refuses these before the job is queued, with the same line.
        Err(e) => return would_fail(&format!("tre-spank: {e}")),
    };
    let runtime = match job::choose_runtime(&config, request.runtime, &node) {
        Ok(r) => r,
        Err(e) => return would_fail(&format!("tre-spank: {e}")),
    };
    let account = match account::lookup_name(user) {
        Ok(a) => a,
        Err(e) => return would_fail(&format!("tre-spank: {e}")),
    };
    if let Err(e) = std::fs::read(&config.secret_file) {
        return would_fail(&format!(
            "tre-spank: cannot read the job number secret {}: {e}",
            config.secret_file.display()
        ));
    }
    println!(
        "user {} (uid {}), groups: {}",
        account.name,
        account.uid,
        std::iter::once(account.primary_group.as_str())
            .chain(account.supplementary_groups.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("image {} (runtime {runtime})", request.image);
    // As root, like the plugin (the answer is cached in run_dir, root's).
    let transient_store = runtime == Runtime::Podman
        && podman_version(&config.podman.path, &config.run_dir)
            .is_some_and(|v| runtime::podman_has_transient_store(&v));
    let result = as_user(&account, || {
        let home_fd = match dirs::Dir::open(&account.home) {
            Ok(fd) => fd,
            Err(e) => return would_fail(&format!("tre-spank: {e}")),
        };
        let resolution =
            match job::resolve_project(&home_fd, &account, &config, request.project.as_deref()) {
                Ok(r) => r,
                Err(e) => return would_fail(&e),
            };
        // The job number is secret-keyed per job: shown as N; the job id as JOBID.
        let dirs = JobDirs {
            number: 0,
            outputs: account.home.join("outputs-N"),
            scratch: plan::scratch_parent(&account.home, &config.scratch_root, &account.name)
                .join("scratch-N"),
        };
        let job_dir = config.runtime_dir.join("job-JOBID");
        let run_dir = config.run_dir.join("job-JOBID");
        let script = PathBuf::from("/var/spool/slurmd/jobJOBID/slurm_script");
        let (argv, batch): (Vec<OsString>, Option<&Path>) = if opts.command.is_empty() {
            (vec![script.clone().into()], Some(&script))
        } else {
            (opts.command.clone(), None)
        };
        let launch = TaskLaunch {
            argv: &argv,
            batch_script: batch,
            task_env_names: &[],
            tty: false,
            user_env: &request.env,
            entrypoint: request.entrypoint,
            gpus: &[],
        };
        let mut container = plan::container_plan(&request.image, runtime, &resolution, &dirs);
        container
            .mounts
            .extend(plan::site_mounts(&config.site_mounts));
        let sif = runtime::sif_path(&config.apptainer.sif_dir, &request.image).unwrap_or_default();
        let scratch = PathBuf::from(plan::CONTAINER_SCRATCH);
        let target = match runtime {
            Runtime::Podman => Target::Podman(PodmanStorage {
                job_dir: &job_dir,
                run_dir: &run_dir,
                home: &account.home,
                user_store_exists: runtime::user_image_store(&account.home).is_dir(),
                transient_store,
            }),
            Runtime::Apptainer => Target::Apptainer {
                sif: &sif,
                workdir: &scratch,
                home: &account.home,
                gpu_control: &[],
            },
        };
        let command = match runtime::job_command(&config, &container, &target, &launch) {
            Ok(c) => c,
            Err(e) => return would_fail(&format!("tre-spank: {e}")),
        };
        println!(
            "project: {} ({})",
            resolution
                .project
                .as_ref()
                .map(|p| format!("{} via group {}", p.name, p.group))
                .unwrap_or_else(|| "none".into()),
            resolution.reason
        );
        println!("mounts:");
        for m in &container.mounts {
            println!(
                "  {} -> {}{}",
                m.host.display(),
                m.container.display(),
                if m.read_only { " (read-only)" } else { "" }
            );
        }
        println!("job output would start with:");
        for line in plan::summary_lines(&resolution, &dirs) {
            println!("  {line}");
        }
        println!(
            "  Running: {}",
            runtime::display_command(&command.runtime_argv)
        );
        // Slurm appends the task's own arguments to what the plugin prepends.
        let mut task = command.task_prefix.clone();
        task.extend(argv.iter().cloned());
        println!("task command: {}", runtime::display_command(&task));
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
