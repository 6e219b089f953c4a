//! The step pipeline driven with a fake slurmstepd and a fake node: no Slurm, no root.

use std::cell::RefCell;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::*;
use crate::rules::options::RawOptions;
use crate::rules::project::{Project, ProjectError, Resolution, SafeData};

const IMAGE: &str = "ghcr.io/tre/analysis:1.0";
const JOB: u32 = 4242;
/// The job's submit time as the fake controller has it.
const SUBMITTED: u64 = 1_764_640_000;

/// What slurmstepd would say about one step.
#[derive(Clone)]
struct FakeStep {
    options: RawOptions,
    job_id: Option<u32>,
    step_id: Option<u32>,
    env: Vec<(String, String)>,
    argv: Vec<OsString>,
    task_id: u32,
}

impl FakeStep {
    /// An srun step (step 0) of job 4242 running `python3 run.py`.
    fn srun(image: &str) -> FakeStep {
        FakeStep {
            options: RawOptions {
                container: Some(image.as_bytes().to_vec()),
                ..RawOptions::default()
            },
            job_id: Some(JOB),
            step_id: Some(0),
            env: vec![("SLURM_JOB_ID".into(), JOB.to_string())],
            argv: vec!["python3".into(), "run.py".into()],
            task_id: 0,
        }
    }

    fn batch(image: &str) -> FakeStep {
        FakeStep {
            step_id: Some(BATCH_STEP_ID),
            argv: vec!["/var/spool/slurmd/job4242/slurm_script".into()],
            ..FakeStep::srun(image)
        }
    }

    fn with(mut self, name: &str, value: &str) -> FakeStep {
        self.env.push((name.into(), value.into()));
        self
    }

    fn option(mut self, set: impl FnOnce(&mut RawOptions)) -> FakeStep {
        set(&mut self.options);
        self
    }
}

impl StepFacts for FakeStep {
    fn plugin_args(&self) -> Result<Vec<String>, StepError> {
        Ok(Vec::new())
    }
    fn options(&self) -> RawOptions {
        self.options.clone()
    }
    fn job_id(&self) -> Result<Option<u32>, StepError> {
        Ok(self.job_id)
    }
    fn step_id(&self) -> Option<u32> {
        self.step_id
    }
    fn restart_count(&self) -> u32 {
        0
    }
    fn uid(&self) -> Result<u32, StepError> {
        Ok(1001)
    }
    fn gid(&self) -> Result<u32, StepError> {
        Ok(1001)
    }
    fn supplementary_gids(&self) -> Vec<u32> {
        vec![2001]
    }
    fn getenv(&self, name: &str) -> Option<OsString> {
        self.env
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.into())
    }
    fn env_names(&self) -> Vec<OsString> {
        self.env.iter().map(|(n, _)| n.into()).collect()
    }
    fn task_argv(&self) -> Result<Vec<OsString>, StepError> {
        Ok(self.argv.clone())
    }
    fn task_id(&self) -> Option<u32> {
        Some(self.task_id)
    }
    fn tty(&self) -> bool {
        false
    }
    fn cwd(&self) -> Option<PathBuf> {
        Some("/home/alice/work".into())
    }
}

/// A node that records what it is asked to make.
struct FakeNode {
    config: Config,
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
    record: Option<JobRecord>,
    /// The controller's answer for the job's submit time (`None`: not listed).
    submitted: Option<u64>,
    /// The node's podman has `--transient-store`.
    transient_store: bool,
    /// The exit guard applies on the node.
    exit_guard: bool,
    /// The GPU control devices the node has.
    gpu_control: Vec<PathBuf>,
    project: Result<Resolution, ProjectError>,
    save_fails: bool,
    origin: Origin,
    retired: RefCell<Vec<u32>>,
    made: RefCell<Vec<String>>,
    saved: RefCell<Vec<JobRecord>>,
}

fn proj1() -> Resolution {
    Resolution {
        safe_data: SafeData::ProjectDir("/safe_data/proj1".into()),
        project: Some(Project {
            name: "proj1".into(),
            group: "proj1".into(),
        }),
        reason: "your only project".into(),
        read_only: false,
    }
}

fn id(ino: u64) -> DirId {
    DirId { dev: 1, ino }
}

impl FakeNode {
    /// podman and apptainer installed, one site image store, alice in proj1.
    fn new() -> FakeNode {
        FakeNode {
            config: Config {
                runtime_dir: "/var/lib/tre-jobs".into(),
                run_dir: "/run/tre-jobs".into(),
                ..Config::default()
            },
            files: vec!["/usr/bin/podman".into(), "/usr/bin/apptainer".into()],
            dirs: vec![],
            record: None,
            submitted: Some(SUBMITTED),
            transient_store: false,
            exit_guard: false,
            gpu_control: vec![],
            project: Ok(proj1()),
            save_fails: false,
            origin: Origin::Created,
            retired: RefCell::default(),
            made: RefCell::default(),
            saved: RefCell::default(),
        }
    }
}

impl StepHost for FakeNode {
    type Home = ();
    fn node_name(&self) -> String {
        "node1".into()
    }
    fn load_config(&self, _args: &[&str], _node: &str) -> Result<Config, StepError> {
        Ok(self.config.clone())
    }
    fn is_file(&self, path: &Path) -> bool {
        self.files.iter().any(|f| f == path)
    }
    fn is_dir(&self, path: &Path) -> bool {
        self.dirs.iter().any(|d| d == path)
    }
    fn account(&self, uid: u32, gid: u32, _gids: &[u32]) -> Result<Account, StepError> {
        Ok(Account {
            name: "alice".into(),
            uid,
            gid,
            home: "/home/alice".into(),
            primary_group: "alice".into(),
            supplementary_groups: vec!["proj1".into()],
        })
    }
    fn secret(&self, _config: &Config) -> Result<Vec<u8>, StepError> {
        Ok(b"site secret".to_vec())
    }
    fn record(&self, _config: &Config, _job_id: u32) -> Result<Option<JobRecord>, StepError> {
        Ok(self.record.clone())
    }
    fn retire(&self, _config: &Config, record: &JobRecord) -> Result<String, StepError> {
        self.retired.borrow_mut().push(record.number);
        Ok(format!("retired-{}", record.job_id))
    }
    fn save_record(&self, _config: &Config, record: &JobRecord) -> Result<(), StepError> {
        if self.save_fails {
            return Err(StepError::State(StateError::Io {
                path: "/var/spool/tre-spank/job-4242.toml".into(),
                source: std::io::Error::from_raw_os_error(28),
            }));
        }
        self.saved.borrow_mut().push(record.clone());
        Ok(())
    }
    fn runtime_dir(
        &self,
        config: &Config,
        job_id: u32,
        _uid: u32,
        _gid: u32,
    ) -> Result<PathBuf, StepError> {
        Ok(config
            .runtime_dir
            .join(crate::rules::plan::job_dir_name(job_id)))
    }
    fn submit_time(&self, _config: &Config, job_id: u32) -> Result<u64, StepError> {
        Ok(self
            .submitted
            .ok_or(crate::rules::job_number::SubmitTimeError::NotListed(job_id))?)
    }
    fn run_dir(
        &self,
        config: &Config,
        job_id: u32,
        _uid: u32,
        _gid: u32,
    ) -> Result<PathBuf, StepError> {
        Ok(config
            .run_dir
            .join(crate::rules::plan::job_dir_name(job_id)))
    }
    fn podman_features(&self, _config: &Config) -> PodmanFeatures {
        PodmanFeatures {
            transient_store: self.transient_store,
            exit_guard: self.exit_guard,
        }
    }
    fn gpu_control(&self) -> Vec<PathBuf> {
        self.gpu_control.clone()
    }
    fn image_id(
        &self,
        _config: &Config,
        _runtime: Runtime,
        _image: &ImageRef,
        _sif: Option<&Path>,
    ) -> String {
        "sha256:feed".into()
    }
    fn open_home(&self, _home: &Path) -> Result<(), StepError> {
        Ok(())
    }
    fn resolve_project(
        &self,
        _home: &(),
        _account: &Account,
        _config: &Config,
        _requested: Option<&str>,
    ) -> Result<Resolution, StepError> {
        Ok(self.project.clone()?)
    }
    fn check_inputs(
        &self,
        _home: &(),
        account: &Account,
        numbers: &[u32],
        _number: u32,
        _key: &ProofKey,
    ) -> Result<Vec<PathBuf>, StepError> {
        Ok(numbers
            .iter()
            .map(|n| account.home.join(format!("outputs-{n}")))
            .collect())
    }
    fn make_dirs(&self, _home: &(), plan: &DirPlan<'_>) -> Result<MadeDirs, StepError> {
        let what = match &plan.action {
            DirAction::Confirm { .. } => "confirm",
            DirAction::CreateOrJoin { .. } => "create",
        };
        self.made.borrow_mut().push(format!(
            "{what} {}/{} {}/{}",
            plan.home.display(),
            plan.outputs,
            plan.scratch_parent.display(),
            plan.scratch
        ));
        Ok(match plan.action {
            DirAction::Confirm { outputs, scratch } => MadeDirs {
                outputs,
                scratch,
                origin: Origin::Earlier,
            },
            DirAction::CreateOrJoin { .. } => MadeDirs {
                outputs: id(10),
                scratch: id(11),
                origin: self.origin,
            },
        })
    }
}

/// Runs slurmstepd's callbacks up to `task_init`.
fn run(facts: &FakeStep, node: &FakeNode) -> Step {
    let mut step = Step::default();
    step.init_post_opt(facts, node);
    step.user_init(node);
    step.task_init_privileged(node);
    step
}

/// The line the job shows.
fn refusal(facts: &FakeStep, node: &FakeNode) -> String {
    match run(facts, node).task_init(facts, node) {
        TaskOutcome::Refused(e) => e.line(),
        TaskOutcome::Failed(e) => format!("failed: {}", e.line()),
        TaskOutcome::NotContainer => "not a container step".into(),
        TaskOutcome::Run(..) => "ran".into(),
    }
}

fn task_plan(facts: &FakeStep, node: &FakeNode) -> TaskPlan {
    let step = run(facts, node);
    match step.task_init(facts, node) {
        TaskOutcome::Run(_, plan) => plan,
        TaskOutcome::Refused(e) => panic!("refused: {e}"),
        TaskOutcome::Failed(e) => panic!("failed: {e}"),
        TaskOutcome::NotContainer => panic!("not a container step"),
    }
}

fn number_of(facts: &FakeStep) -> u32 {
    let id = JobIdentity {
        job_id: facts.job_id.unwrap(),
        restart_count: 0,
        submitted: SUBMITTED,
    };
    job_number(b"site secret", &id).unwrap()
}

fn text(argv: &[OsString]) -> String {
    runtime::display_command(argv)
}

fn sets<'a>(plan: &'a TaskPlan, name: &str) -> Option<&'a OsString> {
    plan.env.iter().rev().find_map(|c| match c {
        EnvChange::Set(n, v) if n == name => Some(v),
        _ => None,
    })
}

#[test]
fn a_step_without_tre_options_is_not_a_container_step() {
    let facts = FakeStep {
        options: RawOptions::default(),
        ..FakeStep::srun(IMAGE)
    };
    let node = FakeNode::new();
    assert_eq!(refusal(&facts, &node), "not a container step");
    assert!(node.made.borrow().is_empty());
}

#[test]
fn a_step_started_inside_the_container_runs_as_it_is() {
    let facts = FakeStep::srun(IMAGE).with(IN_CONTAINER_VAR, "1");
    let node = FakeNode::new();
    assert_eq!(refusal(&facts, &node), "not a container step");
}

#[test]
fn an_image_from_another_registry_is_refused_before_anything_is_made() {
    let facts = FakeStep::srun("docker.io/library/ubuntu:22.04");
    let node = FakeNode::new();
    assert_eq!(
        refusal(&facts, &node),
        "tre-spank: --tre-container: image docker.io/library/ubuntu:22.04 is not from an allowed registry (allowed: ghcr.io/)"
    );
    assert!(node.made.borrow().is_empty());
}

#[test]
fn a_project_refusal_is_the_real_services_line_without_the_plugin_name() {
    let facts = FakeStep::srun(IMAGE);
    let node = FakeNode {
        project: Err(ProjectError::NotYours {
            requested: "proj2".into(),
            yours: vec!["proj1".into()],
        }),
        ..FakeNode::new()
    };
    assert_eq!(
        refusal(&facts, &node),
        "--tre-project=proj2 is not one of your projects (yours: proj1)"
    );
    assert!(
        node.made.borrow().is_empty(),
        "no directory for a refused job"
    );
}

#[test]
fn a_runtime_that_is_not_installed_is_refused() {
    let facts = FakeStep::srun(IMAGE).option(|o| o.runtime = Some(b"apptainer".to_vec()));
    let node = FakeNode {
        files: vec!["/usr/bin/podman".into()],
        ..FakeNode::new()
    };
    assert_eq!(
        refusal(&facts, &node),
        "tre-spank: apptainer is not installed on node node1"
    );
}

#[test]
fn an_apptainer_image_without_its_sif_file_is_refused() {
    let facts = FakeStep::srun(IMAGE).option(|o| o.runtime = Some(b"apptainer".to_vec()));
    let node = FakeNode::new();
    assert_eq!(
        refusal(&facts, &node),
        "tre-spank: image ghcr.io/tre/analysis:1.0 is not on node node1: no SIF file /var/lib/tre-spank/sif/ghcr.io/tre/analysis_1.0.sif (images reach the nodes only through the site's approved process, and jobs never pull)"
    );
}

#[test]
fn the_first_step_creates_the_directories_and_records_them() {
    let facts = FakeStep::srun(IMAGE);
    let node = FakeNode::new();
    let n = number_of(&facts);
    let step = run(&facts, &node);
    assert_eq!(
        *node.made.borrow(),
        [format!(
            "create /home/alice/outputs-{n} /home/alice/scratch-{n}"
        )]
    );
    let saved = node.saved.borrow();
    assert_eq!(saved.len(), 1);
    assert_eq!(
        (saved[0].job_id, saved[0].uid, saved[0].number),
        (JOB, 1001, n)
    );
    assert_eq!((saved[0].outputs, saved[0].scratch), (id(10), id(11)));
    assert_eq!(saved[0].scratch_parent, None, "scratch is in the home");
    assert!(step.container_run().is_some());
}

#[test]
fn scratch_goes_to_the_sites_scratch_root_when_it_has_one() {
    let facts = FakeStep::srun(IMAGE);
    let node = FakeNode {
        config: Config {
            scratch_root: "/local/scratch".into(),
            ..FakeNode::new().config
        },
        ..FakeNode::new()
    };
    let n = number_of(&facts);
    run(&facts, &node);
    assert_eq!(
        *node.made.borrow(),
        [format!(
            "create /home/alice/outputs-{n} /local/scratch/alice/scratch-{n}"
        )]
    );
    assert_eq!(
        node.saved.borrow()[0].scratch_parent,
        Some(PathBuf::from("/local/scratch/alice"))
    );
}

#[test]
fn a_later_step_confirms_the_recorded_directories_and_writes_no_record() {
    let facts = FakeStep::srun(IMAGE);
    let n = number_of(&facts);
    let node = FakeNode {
        record: Some(JobRecord {
            job_id: JOB,
            submitted: Some(SUBMITTED),
            uid: 1001,
            number: n,
            home: "/home/alice".into(),
            outputs: id(20),
            scratch: id(21),
            scratch_parent: None,
        }),
        ..FakeNode::new()
    };
    run(&facts, &node);
    assert_eq!(
        *node.made.borrow(),
        [format!(
            "confirm /home/alice/outputs-{n} /home/alice/scratch-{n}"
        )]
    );
    assert!(node.saved.borrow().is_empty());
    assert!(node.retired.borrow().is_empty());
}

#[test]
fn an_earlier_jobs_record_with_the_same_id_is_set_aside_not_adopted() {
    let facts = FakeStep::srun(IMAGE);
    let node = FakeNode {
        record: Some(JobRecord {
            job_id: JOB,
            submitted: Some(SUBMITTED - 86_400),
            uid: 1002,
            number: 7,
            home: "/home/bob".into(),
            outputs: id(20),
            scratch: id(21),
            scratch_parent: None,
        }),
        ..FakeNode::new()
    };
    run(&facts, &node);
    assert_eq!(*node.retired.borrow(), [7]);
    assert!(node.made.borrow()[0].starts_with("create "));
    assert_eq!(node.saved.borrow().len(), 1);
}

#[test]
fn a_step_that_cannot_record_its_directories_does_not_run() {
    let facts = FakeStep::srun(IMAGE);
    let node = FakeNode {
        save_fails: true,
        ..FakeNode::new()
    };
    assert!(refusal(&facts, &node).starts_with("tre-spank: cannot record the job's directories: "));
}

#[test]
fn a_joined_step_records_the_directories_too() {
    let facts = FakeStep::srun(IMAGE);
    let node = FakeNode {
        origin: Origin::Joined,
        ..FakeNode::new()
    };
    run(&facts, &node);
    assert_eq!(node.saved.borrow().len(), 1);
}

#[test]
fn a_podman_task_runs_under_the_supervisor_with_the_sites_config_only() {
    let facts = FakeStep::srun(IMAGE).with("CONTAINERS_CONF", "/home/alice/evil.conf");
    let mut node = FakeNode::new();
    node.files.push("/etc/containers/containers.conf".into());
    let plan = task_plan(&facts, &node);
    let n = number_of(&facts);
    let command = plan.command.as_ref().expect("a container command");
    let running = text(&command.runtime_argv);
    assert!(
        running.starts_with(
            "/usr/bin/podman --root=/var/lib/tre-jobs/job-4242/storage --runroot=/run/tre-jobs/job-4242/run "
        ),
        "{running}"
    );
    assert!(
        running.ends_with(" ghcr.io/tre/analysis:1.0 python3 run.py"),
        "{running}"
    );
    assert!(
        text(&command.task_prefix).starts_with(
            "/usr/sbin/tre-spank launch --image ghcr.io/tre/analysis:1.0 --runtime podman --user-namespace -- /usr/bin/podman "
        ),
        "{}",
        text(&command.task_prefix)
    );
    assert_eq!(command.task_argv, facts.argv);
    // The user's CONTAINERS_CONF goes, and the site's is set after it.
    let unset = plan
        .env
        .iter()
        .position(|c| *c == EnvChange::Unset("CONTAINERS_CONF".into()))
        .expect("the user's CONTAINERS_CONF is removed");
    let set = plan
        .env
        .iter()
        .position(|c| {
            *c == EnvChange::Set(
                "CONTAINERS_CONF".into(),
                "/etc/containers/containers.conf".into(),
            )
        })
        .expect("the site's containers.conf is set");
    assert!(unset < set);
    assert_eq!(
        sets(&plan, "XDG_RUNTIME_DIR").map(|v| v.as_os_str()),
        Some("/run/tre-jobs/job-4242".as_ref())
    );
    assert_eq!(
        sets(&plan, "TRE_OUTPUTS_DIR").map(|v| v.as_os_str()),
        Some(PathBuf::from(format!("/home/alice/outputs-{n}")).as_os_str())
    );
    assert_eq!(
        plan.lines.last().map(String::as_str),
        Some(format!("Running: {running}").as_str())
    );
    assert!(plan
        .lines
        .contains(&"tre-spank: project: proj1".to_string()));
}

#[test]
fn without_a_site_containers_conf_podman_gets_the_shipped_one() {
    let plan = task_plan(&FakeStep::srun(IMAGE), &FakeNode::new());
    assert_eq!(
        sets(&plan, "CONTAINERS_CONF").map(|v| v.as_os_str()),
        Some(runtime::SHIPPED_CONTAINERS_CONF.as_ref())
    );
}

#[test]
fn an_apptainer_task_runs_the_sif_with_the_users_control_variables_removed() {
    let facts = FakeStep::srun(IMAGE)
        .option(|o| o.runtime = Some(b"apptainer".to_vec()))
        .with("APPTAINER_BIND", "/etc:/mnt")
        .with("LANG", "C.UTF-8");
    let sif = "/var/lib/tre-spank/sif/ghcr.io/tre/analysis_1.0.sif";
    let mut node = FakeNode::new();
    node.files.push(sif.into());
    let plan = task_plan(&facts, &node);
    let command = plan.command.as_ref().unwrap();
    let running = text(&command.runtime_argv);
    assert!(running.starts_with("/usr/bin/apptainer "), "{running}");
    assert!(running.contains(sif), "{running}");
    assert!(!running.contains("/etc:/mnt"), "{running}");
    assert!(plan
        .env
        .contains(&EnvChange::Unset("APPTAINER_BIND".into())));
    // Passed by name, with the task's own values.
    assert!(plan.env.contains(&EnvChange::Pass {
        name: "SLURM_JOB_ID".into(),
        value: JOB.to_string().into(),
    }));
    assert!(plan.env.contains(&EnvChange::Pass {
        name: "LANG".into(),
        value: "C.UTF-8".into(),
    }));
    assert!(sets(&plan, "CONTAINERS_CONF").is_none());
}

#[test]
fn a_batch_step_runs_its_script_and_hints_at_host_batch_on_several_nodes() {
    let facts = FakeStep::batch(IMAGE).with("SLURM_JOB_NUM_NODES", "2");
    let plan = task_plan(&facts, &FakeNode::new());
    let command = plan.command.as_ref().unwrap();
    assert!(text(&command.runtime_argv).ends_with(" /var/spool/slurmd/job4242/slurm_script"));
    assert_eq!(
        plan.lines.last().map(String::as_str),
        Some("tre-spank: note: this job has 2 nodes but its batch script runs in the container on this node, where there is no srun; use --tre-batch=host to run srun steps in the container on every node")
    );
}

#[test]
fn an_srun_step_on_several_nodes_gets_no_hint() {
    let facts = FakeStep::srun(IMAGE).with("SLURM_JOB_NUM_NODES", "2");
    let plan = task_plan(&facts, &FakeNode::new());
    assert!(plan.lines.last().unwrap().starts_with("Running: "));
}

#[test]
fn the_batch_step_takes_its_gpus_from_the_job_and_an_srun_step_from_the_step() {
    let with_gpus = |f: FakeStep| f.with("SLURM_JOB_GPUS", "0,1").with("SLURM_STEP_GPUS", "3");
    let batch = task_plan(&with_gpus(FakeStep::batch(IMAGE)), &FakeNode::new());
    let srun = task_plan(&with_gpus(FakeStep::srun(IMAGE)), &FakeNode::new());
    let batch = text(&batch.command.unwrap().runtime_argv);
    let srun = text(&srun.command.unwrap().runtime_argv);
    assert!(
        batch.contains("nvidia.com/gpu=0") && batch.contains("nvidia.com/gpu=1"),
        "{batch}"
    );
    assert!(!batch.contains("nvidia.com/gpu=3"), "{batch}");
    assert!(
        srun.contains("nvidia.com/gpu=3") && !srun.contains("gpu=0"),
        "{srun}"
    );
}

#[test]
fn the_batch_script_of_a_host_batch_job_runs_on_the_host_with_its_variables() {
    let facts = FakeStep::batch(IMAGE).option(|o| o.batch = Some(b"host".to_vec()));
    let node = FakeNode::new();
    let step = run(&facts, &node);
    assert!(step.container_run().is_none(), "no container run to record");
    let TaskOutcome::Run(_, plan) = step.task_init(&facts, &node) else {
        panic!("the host batch step runs");
    };
    assert!(plan.command.is_none());
    assert!(sets(&plan, "TRE_SCRATCH_DIR").is_some());
    assert!(sets(&plan, "XDG_RUNTIME_DIR").is_none());
    assert_eq!(
        plan.lines.last().map(String::as_str),
        Some("tre-spank: the batch script runs on the host (--tre-batch=host); its srun steps run in ghcr.io/tre/analysis:1.0")
    );
    assert_eq!(node.made.borrow().len(), 1, "its directories are made");
}

#[test]
fn an_srun_step_of_a_host_batch_job_runs_in_the_container() {
    let facts = FakeStep::srun(IMAGE).option(|o| o.batch = Some(b"host".to_vec()));
    assert!(task_plan(&facts, &FakeNode::new()).command.is_some());
}

#[test]
fn a_plan_makes_nothing_and_names_the_job_n_and_jobid() {
    let facts = PlannedJob {
        plugin_args: Vec::new(),
        options: FakeStep::srun(IMAGE).options,
        ids: Ok((1001, 1001, vec![2001])),
        command: Vec::new(),
    };
    let node = FakeNode::new();
    let prepared = prepare(&facts, &node).unwrap();
    assert!(matches!(prepared.identity, Identity::Planned));
    assert!(dir_plan(&prepared).is_none());
    let resolved = resolve(prepared, &node, &()).unwrap();
    assert_eq!(
        resolved.dirs.outputs,
        PathBuf::from("/home/alice/outputs-N")
    );
    assert_eq!(
        resolved.dirs.scratch,
        PathBuf::from("/home/alice/scratch-N")
    );
    let plan = task(&resolved, &facts, &node).unwrap();
    let command = plan.command.unwrap();
    assert!(text(&command.runtime_argv)
        .starts_with("/usr/bin/podman --root=/var/lib/tre-jobs/job-JOBID/storage --runroot=/run/tre-jobs/job-JOBID/run "));
    assert!(text(&command.runtime_argv).ends_with(PLANNED_SCRIPT));
    assert!(node.made.borrow().is_empty() && node.saved.borrow().is_empty());
}

#[test]
fn a_plan_for_an_unknown_user_fails_as_the_job_would() {
    let facts = PlannedJob::new(
        Vec::new(),
        "no-such-user-here",
        FakeStep::srun(IMAGE).options,
        Vec::new(),
    );
    let e = prepare(&facts, &FakeNode::new()).err().unwrap();
    assert_eq!(
        e.to_string(),
        "no user no-such-user-here in the password database"
    );
}

#[test]
fn the_audit_fields_name_the_run() {
    let facts = FakeStep::srun(IMAGE);
    let node = FakeNode::new();
    let step = run(&facts, &node);
    let ready = step.container_run().unwrap();
    let fields = run_fields(ready, &facts);
    let get = |k: &str| {
        fields
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("job"), Some("4242"));
    assert_eq!(get("step"), Some("0"));
    assert_eq!(get("project"), Some("proj1"));
    assert_eq!(get("image_id"), Some("sha256:feed"));
    assert_eq!(get("safe_data"), Some("/safe_data/proj1"));
}

#[test]
fn a_refusal_is_audited_with_what_slurm_says() {
    let facts = FakeStep::batch("docker.io/x:1");
    let fields = refusal_fields(&facts, &FakeNode::new(), "bad image");
    let get = |k: &str| {
        fields
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("step"), Some("batch"));
    assert_eq!(get("image"), Some("docker.io/x:1"));
    assert_eq!(get("node"), Some("node1"));
    assert_eq!(get("reason"), Some("bad image"));
}

#[test]
fn the_job_number_is_keyed_by_the_controllers_submit_time() {
    let facts = FakeStep::srun(IMAGE);
    let node = FakeNode::new();
    run(&facts, &node);
    let saved = node.saved.borrow();
    assert_eq!(saved[0].number, number_of(&facts));
    assert_eq!(saved[0].submitted, Some(SUBMITTED));
    // The same id submitted at another time is another job, with another NUMBER.
    let later = FakeNode {
        submitted: Some(SUBMITTED + 1),
        ..FakeNode::new()
    };
    run(&facts, &later);
    assert_ne!(later.saved.borrow()[0].number, saved[0].number);
}

#[test]
fn a_job_the_controller_does_not_list_does_not_run() {
    let node = FakeNode {
        submitted: None,
        ..FakeNode::new()
    };
    assert_eq!(
        refusal(&FakeStep::srun(IMAGE), &node),
        "tre-spank: cannot tell this job from an earlier one with its id: the controller does not list job 4242"
    );
    assert!(node.made.borrow().is_empty());
}

#[test]
fn a_record_of_the_same_id_uid_and_number_but_another_submit_time_is_set_aside() {
    let facts = FakeStep::srun(IMAGE);
    let n = number_of(&facts);
    for submitted in [None, Some(SUBMITTED - 1)] {
        let node = FakeNode {
            record: Some(JobRecord {
                job_id: JOB,
                submitted,
                uid: 1001,
                number: n,
                home: "/home/alice".into(),
                outputs: id(20),
                scratch: id(21),
                scratch_parent: None,
            }),
            ..FakeNode::new()
        };
        run(&facts, &node);
        assert_eq!(*node.retired.borrow(), [n], "{submitted:?}");
        assert!(
            node.made.borrow()[0].starts_with("create "),
            "{submitted:?}"
        );
    }
}

#[test]
fn podman_run_state_is_on_the_tmpfs_and_transient_where_podman_has_it() {
    let facts = FakeStep::srun(IMAGE);
    let node = FakeNode {
        transient_store: true,
        ..FakeNode::new()
    };
    let plan = task_plan(&facts, &node);
    let running = text(&plan.command.as_ref().unwrap().runtime_argv);
    assert!(
        running.starts_with(
            "/usr/bin/podman --root=/var/lib/tre-jobs/job-4242/storage --runroot=/run/tre-jobs/job-4242/run --transient-store "
        ),
        "{running}"
    );
    assert_eq!(
        sets(&plan, "XDG_RUNTIME_DIR").map(|v| v.as_os_str()),
        Some("/run/tre-jobs/job-4242".as_ref())
    );
    // Without it (podman before 4.4): no flag.
    let plan = task_plan(&facts, &FakeNode::new());
    let running = text(&plan.command.as_ref().unwrap().runtime_argv);
    assert!(!running.contains("--transient-store"), "{running}");
}

#[test]
fn an_apptainer_step_is_never_asked_for_the_transient_store() {
    let facts = FakeStep::srun(IMAGE).option(|o| o.runtime = Some(b"apptainer".to_vec()));
    let mut node = FakeNode {
        transient_store: true,
        ..FakeNode::new()
    };
    node.files
        .push("/var/lib/tre-spank/sif/ghcr.io/tre/analysis_1.0.sif".into());
    let mut step = Step::default();
    step.init_post_opt(&facts, &node);
    let Step::Prepared(p) = &step else {
        panic!("not prepared");
    };
    assert!(!p.transient_store);
}

#[test]
fn site_mounts_are_read_only_at_the_same_path_under_both_runtimes() {
    let sif = "/var/lib/tre-spank/sif/ghcr.io/tre/analysis_1.0.sif";
    for runtime in ["podman", "apptainer"] {
        let facts = FakeStep::srun(IMAGE).option(|o| o.runtime = Some(runtime.into()));
        let mut node = FakeNode::new();
        node.config.site_mounts = vec!["/etc/krb5.conf".into(), "/opt/site".into()];
        node.files.push(sif.into());
        let plan = task_plan(&facts, &node);
        let command = plan.command.as_ref().unwrap();
        for path in ["/etc/krb5.conf", "/opt/site"] {
            let m = command
                .mounts
                .iter()
                .find(|m| m.host == Path::new(path))
                .unwrap_or_else(|| panic!("{runtime}: no mount of {path}"));
            assert_eq!(m.container, Path::new(path), "{runtime}");
            assert!(m.read_only, "{runtime}: {path}");
            assert!(
                text(&command.runtime_argv).contains(path),
                "{runtime}: {}",
                text(&command.runtime_argv)
            );
        }
    }
}

#[test]
fn an_apptainer_gpu_step_binds_its_gpus_and_the_nodes_control_devices_only() {
    let sif = "/var/lib/tre-spank/sif/ghcr.io/tre/analysis_1.0.sif";
    let mut node = FakeNode {
        gpu_control: vec!["/dev/nvidiactl".into(), "/dev/nvidia-uvm".into()],
        ..FakeNode::new()
    };
    node.files.push(sif.into());
    let apptainer = |o: &mut RawOptions| o.runtime = Some(b"apptainer".to_vec());
    let facts = FakeStep::srun(IMAGE)
        .option(apptainer)
        .with("SLURM_STEP_GPUS", "1");
    let running = text(&task_plan(&facts, &node).command.unwrap().runtime_argv);
    for dev in ["/dev/nvidia1", "/dev/nvidiactl", "/dev/nvidia-uvm"] {
        assert!(
            running.contains(&format!("--bind={dev}:{dev}")),
            "{dev}: {running}"
        );
    }
    assert!(!running.contains("/dev/nvidia0"), "{running}");
    // No GPUs: no device at all, control devices included.
    let facts = FakeStep::srun(IMAGE).option(apptainer);
    let running = text(&task_plan(&facts, &node).command.unwrap().runtime_argv);
    assert!(!running.contains("/dev/nvidia"), "{running}");
}

#[test]
fn podman_runs_the_exit_guards_conmon_where_the_node_takes_it() {
    let facts = FakeStep::srun(IMAGE);
    let running = |node: &FakeNode| {
        let plan = task_plan(&facts, node);
        text(
            &plan
                .command
                .as_ref()
                .expect("a container command")
                .runtime_argv,
        )
    };
    let guarded = running(&FakeNode {
        exit_guard: true,
        ..FakeNode::new()
    });
    assert!(
        guarded.contains(" --conmon=/usr/libexec/tre-spank/conmon "),
        "{guarded}"
    );
    let plain = running(&FakeNode::new());
    assert!(!plain.contains("--conmon"), "{plain}");
}
