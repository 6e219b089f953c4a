# The sweep at slurmd start: scratch of a job whose epilog never ran on this node (slurmd
# down, slurmstepd killed, node "rebooted") goes once slurmd is back; a job that still
# runs (it has a slurmstepd) keeps everything.

restart_slurmd() { bed exec /opt/tre-testbed/bed restart_slurmd; }

# pids_of_stepd J: root's slurmstepd processes of job J.
pids_of_stepd() { bed exec ps -eo pid=,user=,args= | awk -v j="[$1." '$2 == "root" && $3 == "slurmstepd:" && index($4, j) == 1 {print $1}'; }

# started_sleeper U: a container job that keeps outputs and scratch busy; prints "job n".
started_sleeper() {
  local job n
  job=$(submit "$1" --tre-container=$IMAGE --wrap 'echo kept > /safe_outputs/kept.txt; mkdir -p /scratch/a; echo s > /scratch/a/s; chmod 000 /scratch/a; sleep 300')
  wait_running "$job"
  n=$(wait_number "$1" "$job")
  for _ in $(seq 100); do bed exec test -e "/home/$1/outputs-$n/kept.txt" && break; sleep 0.2; done
  echo "$job $n"
}

test_sweep_at_slurmd_start_removes_scratch_of_a_job_gone_with_a_node_reboot() {
  local job n sums p
  read -r job n < <(started_sleeper alice)
  [ -n "$n" ] || fail "the sleeper job did not start"
  bed exec test -d "/home/alice/scratch-$n/a"
  sums=$(fingerprint "/home/alice/outputs-$n")
  # The "reboot": slurmd stops, the job's slurmstepd and processes die without an
  # epilog, then slurmd starts again.
  p=$(bed exec cat /run/slurmd.pid)
  bed exec kill "$p"
  for _ in $(seq 100); do bed exec kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  for p in $(pids_of_stepd "$job"); do bed exec kill -KILL "$p"; done
  for p in $(job_processes alice | awk '{print $1}'); do bed exec kill -KILL "$p" 2>/dev/null || true; done
  assert_eq "$(pids_of_stepd "$job")" "" "slurmstepd of job $job"
  bed exec test -d "/home/alice/scratch-$n/a"
  restart_slurmd
  assert_absent "/home/alice/scratch-$n"
  assert_absent "/var/lib/tre-spank/jobs/job-$job"
  assert_absent "/var/spool/tre-spank/job-$job.toml"
  assert_eq "$(fingerprint "/home/alice/outputs-$n")" "$sums" "outputs after the sweep"
  assert_contains "$(slurmd_log)" "tre-spank: sweep: job $job has no slurmstepd on this node: cleaning up"
  assert_contains "$(slurmd_log)" "tre-spank: job $job: removed /home/alice/scratch-$n ("
  bed exec scancel "$job"
  wait_job "$job"
  assert_eq "$(fingerprint "/home/alice/outputs-$n")" "$sums" "outputs after the job ended"
  assert_no_job_processes alice
  for _ in $(seq 50); do [ "$(node_state)" = idle ] && break; sleep 0.2; done
  assert_node_idle
}

test_sweep_at_slurmd_restart_leaves_a_running_job_alone() {
  local job n sums
  read -r job n < <(started_sleeper alice)
  [ -n "$n" ] || fail "the sleeper job did not start"
  sums=$(fingerprint "/home/alice/outputs-$n" "/home/alice/scratch-$n")
  restart_slurmd
  assert_eq "$(fingerprint "/home/alice/outputs-$n" "/home/alice/scratch-$n")" "$sums" "the running job's directories"
  bed exec test -d "/var/lib/tre-spank/jobs/job-$job"
  bed exec test -f "/var/spool/tre-spank/job-$job.toml"
  assert_eq "$(job_field "$job" JobState)" RUNNING
  job_processes alice | grep -q 'sleep 300' || fail "the container's sleep is gone"
  bed exec scancel "$job"
  wait_job "$job"
  assert_absent "/home/alice/scratch-$n"
  assert_eq "$(bed exec cat "/home/alice/outputs-$n/kept.txt")" kept
  assert_no_job_processes alice
  assert_node_idle
}
