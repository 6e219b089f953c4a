//! When a job's leftovers go: after the job's epilog on a node, and at slurmd start.
//! Both run in a `tre-spank cleanup` process, never in slurmd or in the epilog itself,
//! so that neither a huge scratch nor a hung home mount can delay slurmd or drain a
//! node (the epilog waits at most `cleanup.epilog_budget` seconds for it).
//!
//! Liveness comes from the controller ([`crate::rules::liveness`]):
//! - node-local runtime state goes at the end of the job on this node (no step of the
//!   job runs here any more: the epilog comes after the last one);
//! - the scratch all nodes share, and this node's record of it, go when this node is the
//!   last of the job still completing, or once the job ended everywhere; until then the
//!   process waits (polling the controller every `cleanup.poll_interval` seconds, less
//!   often the longer it waits);
//! - a controller that cannot be asked means "alive": nothing shared is removed.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use super::liveness::ask_controller;
use super::state::{StateDir, StateError};
use super::sweep::{self, clean_runtime_state, clean_scratch, jobs_with_a_stepd, Note};
use crate::rules::config::Config;
use crate::rules::liveness::{ended_everywhere, last_node_out, released, JobView};

/// What a cleanup reports as it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Note(Note),
    /// The rest happens in the background (waiting for other nodes, or a long
    /// removal): an epilog need not wait any longer.
    Background(String),
}

fn show(view: &JobView) -> String {
    match view {
        JobView::Unknown => "the controller cannot say whether it still runs".into(),
        JobView::Gone => "the controller no longer knows it".into(),
        JobView::Listed { state, nodes } if state == "COMPLETING" => {
            format!("it is still completing on {nodes}")
        }
        JobView::Listed { state, nodes } => format!("it is {state} on {nodes}"),
    }
}

/// After the epilog of `job_id` on `node`: runtime state now, shared scratch once
/// this node is the last out (waiting until `give_up` at most).
pub fn after_epilog(
    config: &Config,
    state: &StateDir,
    node: &str,
    job_id: u32,
    give_up: Instant,
    out: &mut dyn FnMut(Event),
) {
    for n in clean_runtime_state(config, job_id) {
        out(Event::Note(n));
    }
    let mut waiting = false;
    let mut attempts = 0;
    let mut polls = 0;
    loop {
        // No record: no container step ran here, or another cleanup finished it. (An
        // unreadable record is reported by clean_scratch.)
        if matches!(state.load(job_id), Ok(None)) {
            return;
        }
        let view = ask_controller(&config.cleanup, &[job_id])
            .remove(&job_id)
            .unwrap_or(JobView::Unknown);
        if last_node_out(&view, node) {
            let notes = clean_scratch(state, job_id, true);
            let failed = notes.iter().any(|n| n.problem);
            for n in notes {
                out(Event::Note(n));
            }
            attempts += 1;
            // Another node may be removing the same tree at this moment: one more
            // pass once it is done.
            let kept = matches!(state.load(job_id), Ok(Some(_)));
            if !(failed && kept && attempts < 3 && Instant::now() < give_up) {
                return;
            }
        } else if !waiting {
            waiting = true;
            out(Event::Background(format!(
                "job {job_id}: scratch kept while {}: removed once the job's last node is done",
                show(&view)
            )));
        }
        if Instant::now() >= give_up {
            out(Event::Note(Note {
                problem: true,
                line: format!(
                    "job {job_id}: scratch still kept ({}) after waiting {}s: left for the next sweep",
                    show(&view),
                    config.cleanup.background_limit
                ),
            }));
            return;
        }
        std::thread::sleep(backoff(config.cleanup.poll_interval, polls));
        polls += 1;
    }
}

/// The wait before controller query `n + 1` of a node waiting for the job's other
/// nodes: `poll_interval`, doubling from the fourth query on, at most 5 minutes, so
/// that the nodes of a big job waiting for its last one (or for a shrunk job's end)
/// do not keep the controller busy.
pub fn backoff(poll_interval: u64, n: u32) -> Duration {
    let first = poll_interval.max(1);
    let doubled = first.saturating_mul(1u64 << n.saturating_sub(3).min(16));
    Duration::from_secs(doubled.min(300.max(first)))
}

/// The sweep: every job with a record or runtime state here that has no slurmstepd
/// on this node and that the controller says ended everywhere. While the controller
/// cannot be asked it retries until `give_up`, then keeps everything. With `node`,
/// jobs that run on without this node (it was released, or lost by a `--no-kill`
/// job, and got no epilog) are then handled as after their epilog here.
pub fn sweep_ended_jobs(
    config: &Config,
    node: Option<&str>,
    give_up: Instant,
    out: &mut dyn FnMut(Event),
) -> Result<sweep::SweepReport, StateError> {
    let state = StateDir::open(&config.state_dir)?;
    let here = jobs_with_a_stepd(Path::new("/proc"));
    let candidates: Vec<u32> = sweep::known_jobs(config, &state)?
        .into_iter()
        .filter(|j| !here.contains(j))
        .collect();
    let mut views = ask_controller(&config.cleanup, &candidates);
    while !candidates.is_empty()
        && views.values().all(|v| *v == JobView::Unknown)
        && Instant::now() < give_up
    {
        out(Event::Note(Note {
            problem: true,
            line: format!(
                "sweep: the controller cannot be asked about {} job(s): nothing removed yet, trying again",
                candidates.len()
            ),
        }));
        std::thread::sleep(Duration::from_secs(config.cleanup.poll_interval.max(1) * 6));
        views = ask_controller(&config.cleanup, &candidates);
    }
    let ended: BTreeSet<u32> = views
        .iter()
        .filter(|(_, v)| ended_everywhere(v))
        .map(|(j, _)| *j)
        .collect();
    for (job_id, view) in &views {
        let line = if ended.contains(job_id) {
            format!("sweep: job {job_id} ended ({}): cleaning up", show(view))
        } else {
            format!("sweep: job {job_id} kept: {}", show(view))
        };
        out(Event::Note(Note {
            problem: false,
            line,
        }));
    }
    let report = sweep::sweep(config, &|j| !ended.contains(&j))?;
    for n in &report.notes {
        out(Event::Note(n.clone()));
    }
    out(Event::Note(Note {
        problem: false,
        line: "sweep: done".into(),
    }));
    if let Some(node) = node {
        for (job_id, view) in &views {
            if released(view, node) {
                out(Event::Note(Note {
                    problem: false,
                    line: format!(
                        "sweep: job {job_id} runs on without {node}: its part here is done"
                    ),
                }));
                after_epilog(config, &state, node, *job_id, give_up, out);
            }
        }
    }
    Ok(report)
}

/// The name of the log, in the state directory, of cleanups nobody waits for.
pub const LOG_NAME: &str = "cleanup.log";
/// Past this size the log is renamed to `cleanup.log.old` before a cleanup appends.
const LOG_LIMIT: u64 = 4 << 20;

/// Where a cleanup process writes its events: lines `info: …`, `problem: …`,
/// `background: …` on standard output while someone reads them (the epilog), else
/// (`to_file`, or once nobody reads) appended to `<state_dir>/cleanup.log`.
pub struct Log {
    state_dir: std::path::PathBuf,
    to_file: bool,
}

impl Log {
    pub fn new(state_dir: &Path, to_file: bool) -> Log {
        Log {
            state_dir: state_dir.to_path_buf(),
            to_file,
        }
    }

    pub fn write(&mut self, event: &Event) {
        use std::io::Write;
        let line = match event {
            Event::Note(n) if n.problem => format!("problem: {}", n.line),
            Event::Note(n) => format!("info: {}", n.line),
            Event::Background(l) => format!("background: {l}"),
        };
        if !self.to_file {
            let mut stdout = std::io::stdout().lock();
            if writeln!(stdout, "{line}")
                .and_then(|_| stdout.flush())
                .is_ok()
            {
                return;
            }
            self.to_file = true;
        }
        let _ = self.append(&line);
    }

    fn append(&self, line: &str) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.state_dir.join(LOG_NAME);
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.len() > LOG_LIMIT) {
            std::fs::rename(&path, self.state_dir.join(format!("{LOG_NAME}.old")))?;
        }
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        writeln!(f, "{now} tre-spank[{}]: {line}", std::process::id())
    }
}

/// Reads one line of a cleanup process's output back: `(problem, text)`, or the text
/// of a `background:` line as `Err`.
pub fn read_line(line: &str) -> Result<(bool, &str), &str> {
    if let Some(rest) = line.strip_prefix("background: ") {
        return Err(rest);
    }
    match line.strip_prefix("problem: ") {
        Some(rest) => Ok((true, rest)),
        None => Ok((false, line.strip_prefix("info: ").unwrap_or(line))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_nodes_ask_the_controller_less_and_less_often() {
        let waits: Vec<u64> = (0..12).map(|n| backoff(5, n).as_secs()).collect();
        assert_eq!(waits, [5, 5, 5, 5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(backoff(0, 0).as_secs(), 1);
        assert_eq!(backoff(600, 40).as_secs(), 600);
    }

    #[test]
    fn lines_read_back() {
        assert_eq!(
            read_line("info: job 1: removed x"),
            Ok((false, "job 1: removed x"))
        );
        assert_eq!(read_line("problem: job 1: y"), Ok((true, "job 1: y")));
        assert_eq!(read_line("background: job 1: z"), Err("job 1: z"));
        assert_eq!(read_line("odd"), Ok((false, "odd")));
    }

    #[test]
    fn the_file_log_is_private_and_bounded() {
        use std::os::unix::fs::MetadataExt;
        let t = tempfile::tempdir().unwrap();
        let mut log = Log::new(t.path(), true);
        log.write(&Event::Background("job 3: waiting".into()));
        let path = t.path().join(LOG_NAME);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("background: job 3: waiting"), "{text}");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        std::fs::write(&path, vec![b'x'; (LOG_LIMIT + 1) as usize]).unwrap();
        log.write(&Event::Note(Note {
            problem: true,
            line: "job 4: kept".into(),
        }));
        assert!(t.path().join(format!("{LOG_NAME}.old")).exists());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("problem: job 4: kept") && text.len() < 200,
            "{text}"
        );
    }
}
