//! What a container job gets: its directories, mounts and environment.
//!
//! This is the one place that decides the mounts; the runtime modules only spell them.

use std::path::{Path, PathBuf};

use super::image::ImageRef;
use super::project::{Resolution, SafeData};
use super::vocab::{prefixed, Runtime};

// The container's own paths and the check of a site mount against them are shared
// vocabulary (`rules::vocab`): the config checks `site_mounts` without importing the plan.
pub use super::vocab::{
    check_site_mount, SiteMountError, CONTAINER_INPUTS, CONTAINER_OUTPUTS, CONTAINER_SAFE_DATA,
    CONTAINER_SCRATCH,
};

/// Set inside the container so that a step started from inside is not wrapped again.
pub const IN_CONTAINER_VAR: &str = "TRE_IN_CONTAINER";

/// The per-job directories under the user's home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobDirs {
    pub number: u32,
    pub outputs: PathBuf,
    pub scratch: PathBuf,
}

impl JobDirs {
    pub fn new(home: &Path, number: u32) -> JobDirs {
        JobDirs::with_scratch_in(home, home, number)
    }

    /// Outputs in `home`, scratch in `scratch_parent` (the site's `scratch_root`).
    pub fn with_scratch_in(home: &Path, scratch_parent: &Path, number: u32) -> JobDirs {
        JobDirs {
            number,
            outputs: home.join(outputs_name(number)),
            scratch: scratch_parent.join(scratch_name(number)),
        }
    }
}

/// The directory holding `scratch-N`: `home`, or `<scratch_root>/<user>` when the site
/// sets a scratch root.
pub fn scratch_parent(home: &Path, scratch_root: &Path, user: &str) -> PathBuf {
    if scratch_root.as_os_str().is_empty() {
        home.to_path_buf()
    } else {
        scratch_root.join(user)
    }
}

pub fn outputs_name(number: u32) -> String {
    format!("outputs-{number}")
}

pub fn scratch_name(number: u32) -> String {
    format!("scratch-{number}")
}

/// The one name of a job's node-local, root-managed entries, by Slurm job id: its
/// runtime directory `job-N` under `runtime_dir`, its record `job-N.toml` in the state
/// directory. A `Display` so that the tool can show the placeholder `job-JOBID`.
pub fn job_dir_name(job_id: impl std::fmt::Display) -> String {
    format!("job-{job_id}")
}

/// The job id a `job-N` name (see [`job_dir_name`]) stands for; `None`: not such a name.
pub fn job_id_of_dir_name(name: &str) -> Option<u32> {
    name.strip_prefix("job-")?.parse().ok()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub host: PathBuf,
    pub container: PathBuf,
    pub read_only: bool,
}

/// Everything about one container run that does not depend on the task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPlan {
    pub image: ImageRef,
    pub runtime: Runtime,
    pub mounts: Vec<Mount>,
    /// Variables set to fixed values inside the container.
    pub env: Vec<(String, String)>,
    pub workdir: PathBuf,
}

fn safe_data_host(resolution: &Resolution) -> Option<&Path> {
    match &resolution.safe_data {
        SafeData::Disabled => None,
        SafeData::Home(p) | SafeData::ProjectDir(p) => Some(p),
    }
}

pub fn container_plan(
    image: &ImageRef,
    runtime: Runtime,
    resolution: &Resolution,
    dirs: &JobDirs,
) -> ContainerPlan {
    let mut mounts = Vec::new();
    if let Some(host) = safe_data_host(resolution) {
        mounts.push(Mount {
            host: host.to_path_buf(),
            container: CONTAINER_SAFE_DATA.into(),
            read_only: resolution.read_only,
        });
    }
    mounts.push(Mount {
        host: dirs.outputs.clone(),
        container: CONTAINER_OUTPUTS.into(),
        read_only: false,
    });
    mounts.push(Mount {
        host: dirs.scratch.clone(),
        container: CONTAINER_SCRATCH.into(),
        read_only: false,
    });
    let project = resolution
        .project
        .as_ref()
        .map(|p| p.name.clone())
        .unwrap_or_default();
    let safe_data = if safe_data_host(resolution).is_some() {
        CONTAINER_SAFE_DATA
    } else {
        ""
    };
    let env = vec![
        ("TRE_OUTPUTS_DIR".to_string(), CONTAINER_OUTPUTS.to_string()),
        ("TRE_SCRATCH_DIR".to_string(), CONTAINER_SCRATCH.to_string()),
        ("TRE_SAFE_DATA".to_string(), safe_data.to_string()),
        ("TRE_PROJECT".to_string(), project),
        ("TRE_CONTAINER".to_string(), image.to_string()),
        (IN_CONTAINER_VAR.to_string(), "1".to_string()),
        // Temporary files go to the job's scratch, which is removed at the job's end.
        ("TMPDIR".to_string(), CONTAINER_SCRATCH.to_string()),
        ("TMP".to_string(), CONTAINER_SCRATCH.to_string()),
    ];
    ContainerPlan {
        image: image.clone(),
        runtime,
        mounts,
        env,
        workdir: CONTAINER_SCRATCH.into(),
    }
}

/// The site's `site_mounts` (checked by [`check_site_mount`] when the config is read):
/// each host path read-only at the same path, under either runtime. Nothing else of
/// the host is mounted (apptainer's `bind path` entries included).
pub fn site_mounts(paths: &[PathBuf]) -> Vec<Mount> {
    paths
        .iter()
        .map(|p| Mount {
            host: p.clone(),
            container: p.clone(),
            read_only: true,
        })
        .collect()
}

/// Read-only mounts of earlier jobs' outputs (checked by host::inputs) at
/// `/inputs/<directory name>`.
pub fn input_mounts(inputs: &[PathBuf]) -> Vec<Mount> {
    inputs
        .iter()
        .filter_map(|host| {
            let name = host.file_name()?;
            Some(Mount {
                host: host.clone(),
                container: Path::new(CONTAINER_INPUTS).join(name),
                read_only: true,
            })
        })
        .collect()
}

/// The lines naming the inputs in the job output.
pub fn input_lines(inputs: &[Mount]) -> Vec<String> {
    inputs
        .iter()
        .map(|m| {
            prefixed(&format_args!(
                "input: {} -> {} read-only (an earlier job's outputs)",
                m.host.display(),
                m.container.display()
            ))
        })
        .collect()
}

/// The host-side view, exported to the job and printed in its output.
pub fn host_env(resolution: &Resolution, dirs: &JobDirs) -> Vec<(String, String)> {
    let show = |p: &Path| p.to_string_lossy().into_owned();
    vec![
        ("TRE_OUTPUTS_DIR".to_string(), show(&dirs.outputs)),
        ("TRE_SCRATCH_DIR".to_string(), show(&dirs.scratch)),
        (
            "TRE_SAFE_DATA".to_string(),
            safe_data_host(resolution).map(show).unwrap_or_default(),
        ),
        (
            "TRE_PROJECT".to_string(),
            resolution
                .project
                .as_ref()
                .map(|p| p.name.clone())
                .unwrap_or_default(),
        ),
    ]
}

/// The lines printed at the top of the job output.
pub fn summary_lines(resolution: &Resolution, dirs: &JobDirs) -> Vec<String> {
    let mut lines = Vec::new();
    match safe_data_host(resolution) {
        Some(p) => lines.push(prefixed(&format_args!(
            "safe data: {} -> {CONTAINER_SAFE_DATA}{} ({})",
            p.display(),
            if resolution.read_only {
                " read-only"
            } else {
                ""
            },
            resolution.reason
        ))),
        None => lines.push(prefixed(&format_args!(
            "safe data: none ({})",
            resolution.reason
        ))),
    }
    if let Some(p) = &resolution.project {
        lines.push(prefixed(&format_args!("project: {}", p.name)));
    }
    lines.push(prefixed(&format_args!(
        "outputs: {} -> {CONTAINER_OUTPUTS} (kept after the job)",
        dirs.outputs.display()
    )));
    lines.push(prefixed(&format_args!(
        "scratch: {} -> {CONTAINER_SCRATCH} (deleted when the job ends)",
        dirs.scratch.display()
    )));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::project::Project;

    #[test]
    fn a_jobs_node_local_entries_have_one_name_by_job_id() {
        assert_eq!(job_dir_name(42), "job-42");
        assert_eq!(job_dir_name("JOBID"), "job-JOBID");
        assert_eq!(job_id_of_dir_name(&job_dir_name(u32::MAX)), Some(u32::MAX));
        for other in [
            "job-",
            "job-x",
            "jobs-1",
            "outputs-1",
            "job-1.toml",
            "job--1",
        ] {
            assert_eq!(job_id_of_dir_name(other), None, "{other}");
        }
    }

    fn resolution(safe: SafeData) -> Resolution {
        Resolution {
            safe_data: safe,
            project: Some(Project {
                name: "proj1".into(),
                group: "proj1".into(),
            }),
            reason: "r".into(),
            read_only: false,
        }
    }

    #[test]
    fn read_only_project_data_is_mounted_read_only() {
        let image = ImageRef::parse("ghcr.io/a/b:1").unwrap();
        let dirs = JobDirs::new(Path::new("/home/alice"), 1234567);
        let mut r = resolution(SafeData::ProjectDir("/safe_data/proj1".into()));
        r.read_only = true;
        let plan = container_plan(&image, Runtime::Podman, &r, &dirs);
        let ro: Vec<bool> = plan.mounts.iter().map(|m| m.read_only).collect();
        assert_eq!(ro, vec![true, false, false]);
    }

    #[test]
    fn site_mounts_are_read_only_at_the_same_path() {
        let m = site_mounts(&[PathBuf::from("/etc/localtime")]);
        assert_eq!(
            m,
            vec![Mount {
                host: "/etc/localtime".into(),
                container: "/etc/localtime".into(),
                read_only: true,
            }]
        );
    }

    #[test]
    fn inputs_are_mounted_read_only_under_inputs() {
        let m = input_mounts(&[PathBuf::from("/home/alice/outputs-42")]);
        assert_eq!(
            m,
            vec![Mount {
                host: "/home/alice/outputs-42".into(),
                container: "/inputs/outputs-42".into(),
                read_only: true,
            }]
        );
        assert_eq!(
            input_lines(&m),
            vec!["tre-spank: input: /home/alice/outputs-42 -> /inputs/outputs-42 read-only (an earlier job's outputs)"]
        );
    }

    #[test]
    fn dirs_share_one_number() {
        let d = JobDirs::new(Path::new("/home/alice"), 3320888);
        let elsewhere = JobDirs::with_scratch_in(
            Path::new("/home/alice"),
            &scratch_parent(
                Path::new("/home/alice"),
                Path::new("/local/scratch"),
                "alice",
            ),
            3320888,
        );
        assert_eq!(elsewhere.outputs, d.outputs);
        assert_eq!(
            elsewhere.scratch,
            Path::new("/local/scratch/alice/scratch-3320888")
        );
        assert_eq!(
            scratch_parent(Path::new("/home/alice"), Path::new(""), "alice"),
            Path::new("/home/alice")
        );
        assert_eq!(d.outputs, PathBuf::from("/home/alice/outputs-3320888"));
        assert_eq!(d.scratch, PathBuf::from("/home/alice/scratch-3320888"));
    }

    #[test]
    fn three_mounts_with_project_data() {
        let image = ImageRef::parse("ghcr.io/a/b:1").unwrap();
        let dirs = JobDirs::new(Path::new("/home/alice"), 1234567);
        let plan = container_plan(
            &image,
            Runtime::Podman,
            &resolution(SafeData::ProjectDir("/safe_data/proj1".into())),
            &dirs,
        );
        let pairs: Vec<(String, String)> = plan
            .mounts
            .iter()
            .map(|m| {
                (
                    m.host.display().to_string(),
                    m.container.display().to_string(),
                )
            })
            .collect();
        assert_eq!(
            pairs,
            vec![
                ("/safe_data/proj1".to_string(), "/safe_data".to_string()),
                (
                    "/home/alice/outputs-1234567".to_string(),
                    "/safe_outputs".to_string()
                ),
                (
                    "/home/alice/scratch-1234567".to_string(),
                    "/scratch".to_string()
                ),
            ]
        );
        assert!(plan
            .env
            .contains(&("TRE_OUTPUTS_DIR".into(), "/safe_outputs".into())));
        assert!(plan.env.contains(&("TRE_PROJECT".into(), "proj1".into())));
        assert!(plan.env.contains(&("TMPDIR".into(), "/scratch".into())));
        assert!(plan.env.contains(&("TMP".into(), "/scratch".into())));
        assert_eq!(plan.workdir, PathBuf::from("/scratch"));
    }

    #[test]
    fn no_safe_data_mount_where_the_node_has_none() {
        let image = ImageRef::parse("ghcr.io/a/b:1").unwrap();
        let dirs = JobDirs::new(Path::new("/home/alice"), 1234567);
        let plan = container_plan(
            &image,
            Runtime::Podman,
            &resolution(SafeData::Disabled),
            &dirs,
        );
        assert_eq!(plan.mounts.len(), 2);
        assert!(plan
            .mounts
            .iter()
            .all(|m| m.container != Path::new("/safe_data")));
        assert!(plan.env.contains(&("TRE_SAFE_DATA".into(), String::new())));
    }

    #[test]
    fn host_env_and_summary_name_host_paths() {
        let dirs = JobDirs::new(Path::new("/home/alice"), 1234567);
        let r = resolution(SafeData::ProjectDir("/safe_data/proj1".into()));
        assert!(host_env(&r, &dirs).contains(&(
            "TRE_SCRATCH_DIR".into(),
            "/home/alice/scratch-1234567".into()
        )));
        let lines = summary_lines(&r, &dirs);
        assert!(lines.iter().any(|l| l == "tre-spank: outputs: /home/alice/outputs-1234567 -> /safe_outputs (kept after the job)"));
    }
}
