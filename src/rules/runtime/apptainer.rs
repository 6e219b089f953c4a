//! apptainer's command line: the SIF a reference names, binds, `apptainer exec|run`.

use super::{flag, gpu_device, TaskLaunch};
use crate::rules::config::ApptainerConfig;
use crate::rules::image::ImageRef;
use crate::rules::plan::ContainerPlan;
use crate::rules::vocab::Entrypoint;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Where an approved image lives as a SIF file:
/// `<sif_dir>/<registry>/<path...>/<name>_<tag>.sif` (tag `latest` when none is
/// given), or `<name>@sha256_<hex>.sif` for a digest (the digest wins over a tag).
/// A registry port `host:5000` becomes `host_5000`. The parsed reference has no
/// empty, `.` or `..` components, so the result always lies under `sif_dir`.
pub fn sif_path(sif_dir: &Path, image: &ImageRef) -> Option<PathBuf> {
    let mut path = sif_dir.join(image.registry.replace(':', "_"));
    let (last, dirs) = image.path.split_last()?;
    for d in dirs {
        path.push(d);
    }
    let file = match (&image.digest, &image.tag) {
        (Some(hex), _) => format!("{last}@sha256_{hex}.sif"),
        (None, Some(tag)) => format!("{last}_{tag}.sif"),
        (None, None) => format!("{last}_latest.sif"),
    };
    path.push(file);
    Some(path)
}
/// Working directory under apptainer: the submission directory when it is visible in
/// the container (home mounted and the directory inside it), else `/scratch`.
pub fn apptainer_workdir(
    plan: &ContainerPlan,
    config: &ApptainerConfig,
    home: &Path,
    cwd: Option<&Path>,
) -> PathBuf {
    match cwd {
        Some(c) if config.mount_home && c.is_absolute() && c.starts_with(home) => c.to_path_buf(),
        _ => plan.workdir.clone(),
    }
}
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApptainerError {
    #[error("cannot bind {0}: apptainer's --bind cannot express a path containing ',' or ':'")]
    UnbindablePath(String),
}
/// The node's hosts file, which apptainer jobs get read-only (podman jobs get podman's
/// copy of it).
pub const NODE_HOSTS: &str = "/etc/hosts";
/// The apptainer command line. Images come from SIF files only (a path, never a
/// `docker://` URI, so nothing is ever pulled); the user keeps their uid.
/// `gpu_control`: the [`NVIDIA_CONTROL_DEVICES`] present on the node, bound only
/// for a step with GPUs.
pub fn apptainer_argv(
    plan: &ContainerPlan,
    config: &ApptainerConfig,
    sif: &Path,
    workdir: &Path,
    home: &Path,
    gpu_control: &[PathBuf],
    task: &TaskLaunch<'_>,
) -> Result<Vec<OsString>, ApptainerError> {
    let mut argv: Vec<OsString> = vec![config.path.clone().into()];
    argv.push(
        match task.entrypoint {
            Entrypoint::Command => "exec",
            Entrypoint::Image => "run",
        }
        .into(),
    );
    argv.push("--cleanenv".into());
    // Values (and arguments) reach the container as they are: no shell evaluation.
    argv.push("--no-eval".into());
    if config.userns {
        argv.push("--userns".into());
    }
    // What podman gives: a minimal /dev, an empty /tmp and /var/tmp of the container's
    // own, no host file systems, no current directory. `bind-paths`: none of the
    // `bind path` entries of apptainer.conf, and not the node's /etc/hosts and
    // /etc/localtime, which --contain alone still binds (apptainer 1.4); a site
    // that wants host files in jobs lists them in `site_mounts` (rules::plan), for
    // both runtimes. Home is bound only while mount_home is on.
    argv.push("--contain".into());
    argv.push(if config.mount_home {
        "--no-mount=cwd,hostfs,bind-paths".into()
    } else {
        "--no-mount=home,cwd,hostfs,bind-paths".into()
    });
    // Not even where apptainer.conf says `always use nv` or `always use rocm`: those
    // bind every GPU device node of the node. `apptainer.nv`: the site takes that for
    // the driver libraries, for steps with GPUs only.
    let nv = config.nv && !task.gpus.is_empty();
    argv.push(if nv { "--nv" } else { "--no-nv" }.into());
    argv.push("--no-rocm".into());
    if config.mount_home {
        argv.push(home_flag(home)?);
    }
    // podman writes its own /etc/hosts from the node's: apptainer gets the node's
    // file, read-only (unless the site mounts one itself).
    let hosts = Path::new(NODE_HOSTS);
    if !plan.mounts.iter().any(|m| m.container == hosts) {
        argv.push(bind(hosts, hosts, true)?);
    }
    // The step's GPUs only, as podman's --device=nvidia.com/gpu=N: never --nv, which
    // binds every /dev/nvidia* of the node.
    if !task.gpus.is_empty() && !nv {
        for gpu in task.gpus {
            let dev = gpu_device(*gpu);
            argv.push(bind(&dev, &dev, false)?);
        }
        for dev in gpu_control {
            argv.push(bind(dev, dev, false)?);
        }
    }
    argv.push(flag("pwd", workdir));
    for m in &plan.mounts {
        argv.push(bind(&m.host, &m.container, m.read_only)?);
    }
    if let Some(script) = task.batch_script {
        argv.push(bind(script, script, true)?);
    }
    for (name, value) in &plan.env {
        argv.push(flag("env", format!("{name}={value}")));
    }
    argv.push(sif.into());
    argv.extend(task.container_args().iter().cloned());
    Ok(argv)
}
/// `--home=HOME`: with `--contain`, only a home given by name is bound.
fn home_flag(home: &Path) -> Result<OsString, ApptainerError> {
    if home.as_os_str().as_bytes().contains(&b':') {
        return Err(ApptainerError::UnbindablePath(home.display().to_string()));
    }
    Ok(flag("home", home))
}
fn bind(host: &Path, container: &Path, read_only: bool) -> Result<OsString, ApptainerError> {
    for p in [host, container] {
        if p.as_os_str()
            .as_bytes()
            .iter()
            .any(|b| *b == b',' || *b == b':')
        {
            return Err(ApptainerError::UnbindablePath(p.display().to_string()));
        }
    }
    let mut v = OsString::from("--bind=");
    v.push(host);
    v.push(":");
    v.push(container);
    if read_only {
        v.push(":ro");
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::*;
    use super::*;
    use crate::rules::image::ImageRef;

    use crate::rules::config::ApptainerConfig;

    use std::path::{Path, PathBuf};

    #[test]
    fn apptainer_srun_command_line() {
        let argv = os(&["cat", "/safe_data/README.txt"]);
        let names: Vec<String> = ["SLURM_JOB_ID", "AWS_SECRET", "TERM", "MY_VAR"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let t = task(&argv, &names);
        let got = strings(
            &apptainer_argv(
                &app_plan(),
                &ApptainerConfig::default(),
                Path::new(SIF),
                Path::new("/home/alice/work"),
                Path::new("/home/alice"),
                &[],
                &t,
            )
            .unwrap(),
        );
        let want = [
            "/usr/bin/apptainer",
            "exec",
            "--cleanenv",
            "--no-eval",
            "--userns",
            "--contain",
            "--no-mount=cwd,hostfs,bind-paths",
            "--no-nv",
            "--no-rocm",
            "--home=/home/alice",
            "--bind=/etc/hosts:/etc/hosts:ro",
            "--pwd=/home/alice/work",
            "--bind=/safe_data/proj1:/safe_data",
            "--bind=/home/alice/outputs-1234567:/safe_outputs",
            "--bind=/home/alice/scratch-1234567:/scratch",
            "--env=TRE_OUTPUTS_DIR=/safe_outputs",
            "--env=TRE_SCRATCH_DIR=/scratch",
            "--env=TRE_SAFE_DATA=/safe_data",
            "--env=TRE_PROJECT=proj1",
            "--env=TRE_CONTAINER=ghcr.io/mikej888/hello-tre:1.0",
            "--env=TRE_IN_CONTAINER=1",
            "--env=TMPDIR=/scratch",
            "--env=TMP=/scratch",
            SIF,
            "cat",
            "/safe_data/README.txt",
        ];
        assert_eq!(got, want);
        assert!(!got
            .iter()
            .any(|a| a.contains("docker://") || a.contains("pull")));
        // Passed by name through APPTAINERENV_ (values never on the command line).
        assert_eq!(apptainer_passed_env(&t), ["SLURM_JOB_ID", "TERM"]);
        let user = vec!["MY_VAR".to_string(), "ABSENT".to_string()];
        let t = TaskLaunch {
            user_env: &user,
            ..task(&argv, &names)
        };
        assert_eq!(apptainer_passed_env(&t), ["SLURM_JOB_ID", "TERM", "MY_VAR"]);
    }
    #[test]
    fn apptainer_batch_home_off_gpus_and_image_entrypoint() {
        let script = Path::new("/var/spool/slurmd/job00042/slurm_script");
        let argv = os(&["/var/spool/slurmd/job00042/slurm_script", "arg 1"]);
        let names = vec![
            "CUDA_VISIBLE_DEVICES".to_string(),
            "SLURM_JOB_GPUS".to_string(),
        ];
        let cfg = ApptainerConfig {
            mount_home: false,
            userns: false,
            ..ApptainerConfig::default()
        };
        let t = TaskLaunch {
            batch_script: Some(script),
            entrypoint: Entrypoint::Image,
            gpus: &[1],
            ..task(&argv, &names)
        };
        let control = [
            PathBuf::from("/dev/nvidiactl"),
            PathBuf::from("/dev/nvidia-uvm"),
        ];
        let got = batch_argv(&cfg, &control, &t);
        assert_eq!(
            got[..13],
            [
                "/usr/bin/apptainer",
                "run",
                "--cleanenv",
                "--no-eval",
                "--contain",
                "--no-mount=home,cwd,hostfs,bind-paths",
                "--no-nv",
                "--no-rocm",
                "--bind=/etc/hosts:/etc/hosts:ro",
                "--bind=/dev/nvidia1:/dev/nvidia1",
                "--bind=/dev/nvidiactl:/dev/nvidiactl",
                "--bind=/dev/nvidia-uvm:/dev/nvidia-uvm",
                "--pwd=/scratch"
            ]
        );
        // Never --nv: it binds every /dev/nvidia* of the node.
        assert!(!got.iter().any(|a| a == "--nv" || a == "--nvccli"));
        assert!(got.contains(&format!("--bind={0}:{0}:ro", script.display())));
        assert_eq!(&got[got.len() - 2..], [SIF, "arg 1"]);
        assert_eq!(
            apptainer_passed_env(&t),
            ["SLURM_JOB_GPUS", "CUDA_VISIBLE_DEVICES"]
        );
        // Two GPUs: both device nodes, in the step's order.
        let t2 = TaskLaunch { gpus: &[0, 3], ..t };
        let got = batch_argv(&cfg, &[], &t2);
        assert_eq!(
            got[9..11],
            [
                "--bind=/dev/nvidia0:/dev/nvidia0",
                "--bind=/dev/nvidia3:/dev/nvidia3"
            ]
        );
        // Without GPUs: no device at all (not even the control devices the node
        // has), and CUDA_VISIBLE_DEVICES is not passed.
        let t = TaskLaunch { gpus: &[], ..t };
        let got = batch_argv(&cfg, &control, &t);
        assert!(!got
            .iter()
            .any(|a| a.contains("/dev/") || a == "--nv" || a == "--nvccli"));
        assert_eq!(apptainer_passed_env(&t), ["SLURM_JOB_GPUS"]);
    }
    #[test]
    fn apptainer_nv_is_the_sites_choice_and_only_for_steps_with_gpus() {
        let argv = os(&["true"]);
        let cfg = ApptainerConfig {
            nv: true,
            ..ApptainerConfig::default()
        };
        let control = [PathBuf::from("/dev/nvidiactl")];
        let gpu = TaskLaunch {
            gpus: &[1],
            ..task(&argv, &[])
        };
        let got = batch_argv(&cfg, &control, &gpu);
        // --nv binds the devices (all of them) and the driver libraries itself.
        assert!(got.contains(&"--nv".to_string()), "{got:?}");
        assert!(!got.iter().any(|a| a == "--no-nv" || a.contains("/dev/")));
        // Without GPUs nothing changes: --no-nv, no device.
        let none = task(&argv, &[]);
        let got = batch_argv(&cfg, &control, &none);
        assert!(got.contains(&"--no-nv".to_string()));
        assert!(!got.iter().any(|a| a == "--nv" || a.contains("/dev/")));
        // The default: the step's device nodes, never --nv.
        let got = batch_argv(&ApptainerConfig::default(), &control, &gpu);
        assert!(got.contains(&"--no-nv".to_string()));
        assert!(got.contains(&"--bind=/dev/nvidia1:/dev/nvidia1".to_string()));
    }
    #[test]
    fn apptainer_gets_site_mounts_read_only_and_one_hosts_file() {
        let mut p = app_plan();
        p.mounts
            .extend(crate::rules::plan::site_mounts(&["/etc/localtime".into()]));
        let got = batch_argv(&ApptainerConfig::default(), &[], &task(&[], &[]));
        assert!(got.contains(&"--bind=/etc/hosts:/etc/hosts:ro".to_string()));
        let got = strings(
            &apptainer_argv(
                &p,
                &ApptainerConfig::default(),
                Path::new(SIF),
                Path::new("/scratch"),
                Path::new("/home/alice"),
                &[],
                &task(&[], &[]),
            )
            .unwrap(),
        );
        assert!(got.contains(&"--bind=/etc/localtime:/etc/localtime:ro".to_string()));
        // A site that mounts /etc/hosts itself: that one only.
        p.mounts
            .extend(crate::rules::plan::site_mounts(&["/etc/hosts".into()]));
        let got = strings(
            &apptainer_argv(
                &p,
                &ApptainerConfig::default(),
                Path::new(SIF),
                Path::new("/scratch"),
                Path::new("/home/alice"),
                &[],
                &task(&[], &[]),
            )
            .unwrap(),
        );
        assert_eq!(got.iter().filter(|a| a.contains("/etc/hosts")).count(), 1);
    }
    #[test]
    fn apptainer_refuses_paths_its_bind_syntax_cannot_express() {
        let mut p = app_plan();
        p.mounts[1].host = "/home/a,b/outputs-1".into();
        let e = apptainer_argv(
            &p,
            &ApptainerConfig::default(),
            Path::new(SIF),
            Path::new("/scratch"),
            Path::new("/home/alice"),
            &[],
            &task(&[], &[]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("/home/a,b/outputs-1"), "{e}");
        p.mounts[1].host = "/home/a:b/outputs-1".into();
        assert!(apptainer_argv(
            &p,
            &ApptainerConfig::default(),
            Path::new(SIF),
            Path::new("/scratch"),
            Path::new("/home/alice"),
            &[],
            &task(&[], &[])
        )
        .is_err());
        // A home apptainer's --home cannot express.
        assert!(apptainer_argv(
            &app_plan(),
            &ApptainerConfig::default(),
            Path::new(SIF),
            Path::new("/scratch"),
            Path::new("/home/a:b"),
            &[],
            &task(&[], &[])
        )
        .is_err());
    }
    #[test]
    fn apptainer_workdir_is_the_submission_dir_only_when_home_is_mounted() {
        let p = app_plan();
        let on = ApptainerConfig::default();
        let off = ApptainerConfig {
            mount_home: false,
            ..ApptainerConfig::default()
        };
        let home = Path::new("/home/alice");
        let wd = |c: &ApptainerConfig, cwd: Option<&str>| {
            apptainer_workdir(&p, c, home, cwd.map(Path::new))
        };
        assert_eq!(
            wd(&on, Some("/home/alice/proj")),
            PathBuf::from("/home/alice/proj")
        );
        assert_eq!(wd(&on, Some("/home/alice")), PathBuf::from("/home/alice"));
        assert_eq!(wd(&on, Some("/home/alicex")), PathBuf::from("/scratch"));
        assert_eq!(wd(&on, Some("/tmp")), PathBuf::from("/scratch"));
        assert_eq!(wd(&on, None), PathBuf::from("/scratch"));
        assert_eq!(
            wd(&off, Some("/home/alice/proj")),
            PathBuf::from("/scratch")
        );
    }
    #[test]
    fn sif_files_are_named_from_the_reference() {
        let dir = Path::new("/var/lib/tre-spank/sif");
        let sif = |r: &str| {
            sif_path(dir, &ImageRef::parse(r).unwrap())
                .unwrap()
                .display()
                .to_string()
        };
        assert_eq!(
            sif("ghcr.io/mikej888/hello-tre:1.0"),
            "/var/lib/tre-spank/sif/ghcr.io/mikej888/hello-tre_1.0.sif"
        );
        assert_eq!(
            sif("GHCR.IO/org/team/tool"),
            "/var/lib/tre-spank/sif/ghcr.io/org/team/tool_latest.sif"
        );
        let hex = "0123456789abcdef".repeat(4);
        assert_eq!(
            sif(&format!("ghcr.io/org/tool:2.0@sha256:{hex}")),
            format!("/var/lib/tre-spank/sif/ghcr.io/org/tool@sha256_{hex}.sif")
        );
        assert_eq!(
            sif("registry.example.org:5000/a/b:v1"),
            "/var/lib/tre-spank/sif/registry.example.org_5000/a/b_v1.sif"
        );
        // Never outside the directory: no component is empty, "." or "..".
        for r in [
            "ghcr.io/a/b:1",
            "ghcr.io/a.b/c.d:x..y",
            "ghcr.io/a__b/c-d:_x",
        ] {
            let p = sif_path(dir, &ImageRef::parse(r).unwrap()).unwrap();
            assert!(p.starts_with(dir));
            assert!(p.components().all(|c| matches!(
                c,
                std::path::Component::RootDir | std::path::Component::Normal(_)
            )));
        }
        for bad in ["ghcr.io/../x:1", "ghcr.io/a/./b", "ghcr.io//b"] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }
}
