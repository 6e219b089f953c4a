//! Whether a job's leftovers may go: what the controller says about the job, read from
//! `squeue --noheader --states=all --jobs=LIST --format=%A|%T|%N`, and the rules that
//! turn it into a decision.
//!
//! "No slurmstepd on this node" is not "job gone": a job has no step on a node between
//! its steps (an `salloc`, the other nodes of a `--tre-batch=host` job), and its scratch
//! lives in a home every node of the job shares. Only the controller knows. When it
//! cannot be asked (down, slow, an error), the answer is [`JobView::Unknown`] and
//! nothing is removed.

use std::collections::BTreeMap;

/// The squeue arguments for `jobs` (the caller passes the program and runs it).
pub fn squeue_args(jobs: &[u32]) -> Vec<String> {
    let list: Vec<String> = jobs.iter().map(u32::to_string).collect();
    vec![
        "--noheader".into(),
        "--states=all".into(),
        format!("--jobs={}", list.join(",")),
        "--format=%A|%T|%N".into(),
    ]
}

/// What the controller says about one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobView {
    /// The controller could not be asked or gave an answer we do not understand.
    Unknown,
    /// The controller does not know the job (purged after `MinJobAge`, or a controller
    /// that was rebuilt).
    Gone,
    /// The job's state (`%T`) and its nodes (`%N`: for a completing job, the nodes that
    /// are still completing).
    Listed { state: String, nodes: String },
}

/// States in which the job runs nowhere any more: its final states, and pending (a
/// requeued job waits again; a pending job has no processes, and its next run gets a
/// new NUMBER). Everything else (running, completing, suspended, configuring, states
/// this list does not know) counts as alive.
const ENDED: &[&str] = &[
    "PENDING",
    "COMPLETED",
    "CANCELLED",
    "FAILED",
    "TIMEOUT",
    "NODE_FAIL",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
    "OUT_OF_MEMORY",
];

/// Reads squeue's answer for `jobs`. `success`: squeue's exit status was 0. A job the
/// answer does not list is gone only when squeue succeeded (several jobs asked) or said
/// "Invalid job id specified" (one job asked); any other failure makes every job
/// unknown, and so does a line that does not parse.
pub fn parse_squeue(
    jobs: &[u32],
    success: bool,
    stdout: &str,
    stderr: &str,
) -> BTreeMap<u32, JobView> {
    let unknown = || jobs.iter().map(|j| (*j, JobView::Unknown)).collect();
    let invalid_id = !success && jobs.len() == 1 && stderr.contains("Invalid job id specified");
    if !success && !invalid_id {
        return unknown();
    }
    let mut views: BTreeMap<u32, JobView> = jobs.iter().map(|j| (*j, JobView::Gone)).collect();
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = line.trim().splitn(3, '|');
        let (Some(id), Some(state), Some(nodes)) = (fields.next(), fields.next(), fields.next())
        else {
            return unknown();
        };
        let Ok(id) = id.parse::<u32>() else {
            return unknown();
        };
        let valid_state = !state.is_empty()
            && state
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b == b'_' || b == b'+');
        if !valid_state {
            return unknown();
        }
        if let Some(view) = views.get_mut(&id) {
            *view = JobView::Listed {
                state: state.to_string(),
                nodes: nodes.to_string(),
            };
        }
    }
    views
}

/// The job runs on no node any more: everything it left anywhere may go.
pub fn ended_everywhere(view: &JobView) -> bool {
    match view {
        JobView::Unknown => false,
        JobView::Gone => true,
        JobView::Listed { state, .. } => ENDED.contains(&state.as_str()),
    }
}

/// At the end of the job on `node` (its epilog): may this node remove the scratch all
/// the job's nodes share? Yes when the job ended everywhere, or when it is completing
/// and `node` is the only node still completing (the last one out). Not while another
/// node is still completing (its tasks may still copy from `/scratch` during
/// `KillWait`), nor while the job runs on (a node released by shrinking the job, a
/// `--no-kill` node), nor when the controller cannot say.
pub fn last_node_out(view: &JobView, node: &str) -> bool {
    match view {
        JobView::Listed { state, nodes } if state == "COMPLETING" => {
            !node.is_empty() && nodes == node
        }
        other => ended_everywhere(other),
    }
}

/// The job runs on, but no longer on `node` (a shrink released it, a `--no-kill` job
/// lost it): no step of the job comes here again. Only for a plain comma-separated
/// node list that names nodes one by one; a hostlist range (`n[1-4]`) might include
/// `node`, so it says no.
pub fn released(view: &JobView, node: &str) -> bool {
    match view {
        JobView::Listed { state, nodes } if !ended_everywhere(view) && state != "COMPLETING" => {
            !node.is_empty()
                && !nodes.contains('[')
                && !nodes.is_empty()
                && nodes.split(',').all(|n| n != node)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(state: &str, nodes: &str) -> JobView {
        JobView::Listed {
            state: state.into(),
            nodes: nodes.into(),
        }
    }

    #[test]
    fn arguments_name_every_job() {
        assert_eq!(
            squeue_args(&[7, 12]),
            [
                "--noheader",
                "--states=all",
                "--jobs=7,12",
                "--format=%A|%T|%N"
            ]
        );
    }

    #[test]
    fn answers_are_read_per_job() {
        let v = parse_squeue(
            &[1, 2, 3],
            true,
            "1|RUNNING|tbnode,tbnode2\n3|COMPLETED|tbnode\n",
            "",
        );
        assert_eq!(v[&1], listed("RUNNING", "tbnode,tbnode2"));
        assert_eq!(v[&2], JobView::Gone);
        assert_eq!(v[&3], listed("COMPLETED", "tbnode"));
    }

    #[test]
    fn one_unknown_job_is_gone_only_on_squeues_own_words() {
        let gone = parse_squeue(
            &[5],
            false,
            "",
            "slurm_load_jobs error: Invalid job id specified\n",
        );
        assert_eq!(gone[&5], JobView::Gone);
        let down = parse_squeue(
            &[5],
            false,
            "",
            "slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n",
        );
        assert_eq!(down[&5], JobView::Unknown);
        // Several jobs: squeue does not say which id was invalid.
        let several = parse_squeue(&[5, 6], false, "", "Invalid job id specified");
        assert_eq!(several[&5], JobView::Unknown);
    }

    #[test]
    fn output_that_does_not_parse_makes_every_job_unknown() {
        for out in [
            "garbage\n",
            "x|RUNNING|n\n",
            "1|running|n\n",
            "1||n\n",
            "1|RUNNING\n",
        ] {
            let v = parse_squeue(&[1, 2], true, out, "");
            assert!(v.values().all(|j| *j == JobView::Unknown), "{out:?}: {v:?}");
        }
    }

    #[test]
    fn only_ended_jobs_may_be_swept() {
        assert!(ended_everywhere(&JobView::Gone));
        assert!(!ended_everywhere(&JobView::Unknown));
        for s in ["COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "PENDING"] {
            assert!(ended_everywhere(&listed(s, "tbnode")), "{s}");
        }
        for s in [
            "RUNNING",
            "COMPLETING",
            "SUSPENDED",
            "CONFIGURING",
            "RESIZING",
            "NEW_STATE",
        ] {
            assert!(!ended_everywhere(&listed(s, "tbnode")), "{s}");
        }
    }

    #[test]
    fn a_node_is_released_only_when_the_list_plainly_leaves_it_out() {
        assert!(released(&listed("RUNNING", "tbnode"), "tbnode2"));
        assert!(released(&listed("RUNNING", "a,b"), "c"));
        assert!(!released(&listed("RUNNING", "tbnode,tbnode2"), "tbnode2"));
        assert!(!released(&listed("RUNNING", "tbnode[1-3]"), "tbnode2"));
        assert!(!released(&listed("RUNNING", ""), "tbnode2"));
        assert!(!released(&listed("COMPLETING", "tbnode"), "tbnode2"));
        assert!(!released(&listed("COMPLETED", "tbnode"), "tbnode2"));
        assert!(!released(&JobView::Unknown, "tbnode2"));
        assert!(!released(&JobView::Gone, "tbnode2"));
    }

    #[test]
    fn the_last_completing_node_removes_shared_scratch() {
        assert!(last_node_out(&listed("COMPLETING", "tbnode2"), "tbnode2"));
        assert!(!last_node_out(
            &listed("COMPLETING", "tbnode,tbnode2"),
            "tbnode2"
        ));
        assert!(!last_node_out(
            &listed("COMPLETING", "tbnode[1-2]"),
            "tbnode1"
        ));
        assert!(!last_node_out(&listed("COMPLETING", "tbnode"), "tbnode2"));
        assert!(!last_node_out(&listed("COMPLETING", ""), ""));
        // Released by a shrink, or a --no-kill node: the job goes on elsewhere.
        assert!(!last_node_out(&listed("RUNNING", "tbnode"), "tbnode2"));
        assert!(!last_node_out(&listed("RUNNING", "tbnode2"), "tbnode2"));
        assert!(!last_node_out(&JobView::Unknown, "tbnode"));
        assert!(last_node_out(&JobView::Gone, "tbnode"));
        assert!(last_node_out(
            &listed("CANCELLED", "tbnode,tbnode2"),
            "tbnode"
        ));
    }
}
