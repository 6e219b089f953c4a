# The sweep at slurmd start (it runs in the background: see cleanup_log): leftovers of
# a job the controller says ended everywhere, or no longer knows, go; a job the
# controller still runs keeps everything, whether or not it has a slurmstepd here
# (between the steps of an allocation it has none).
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

# fake_leftovers U JOB N FILES: what a job the controller does not know (purged, or a
# controller rebuilt after a reset) left on tbnode: U's outputs-N and scratch-N with FILES
# files, and the record as the plugin writes it, naming them by device and inode.
fake_leftovers() {
  local user=$1 job=$2 n=$3 files=$4
  as "$user" rm -rf "outputs-$n" "scratch-$n"  # left by an earlier, failed run
  as "$user" sh -c "mkdir -m 700 outputs-$n scratch-$n && echo old > outputs-$n/old.txt && cd scratch-$n && seq $files | xargs touch"
  bed exec sh -c '
    set -- "$@" $(stat -c "%d %i" "/home/$1/outputs-$3") $(stat -c "%d %i" "/home/$1/scratch-$3")
    umask 077
    printf "job_id = %s\nuid = %s\nnumber = %s\nhome = \"/home/%s\"\n\n[outputs]\ndev = %s\nino = %s\n\n[scratch]\ndev = %s\nino = %s\n" \
      "$2" "$(id -u "$1")" "$3" "$1" "$4" "$5" "$6" "$7" > "/var/spool/tre-spank/job-$2.toml"' sh "$user" "$job" "$n"
}

test_sweep_at_slurmd_start_keeps_a_job_the_controller_still_runs_after_a_node_reboot() {
  local job n sums p before
  read -r job n < <(started_sleeper alice)
  [ -n "$n" ] || fail "the sleeper job did not start"
  bed exec test -d "/home/alice/scratch-$n/a"
  sums=$(fingerprint "/home/alice/outputs-$n")
  # The "reboot": slurmd stops, the job's slurmstepd and processes die without an
  # epilog, then slurmd starts again. The controller still has the job RUNNING here.
  p=$(bed exec cat /run/slurmd.pid)
  bed exec kill "$p"
  for _ in $(seq 100); do bed exec kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  for p in $(pids_of_stepd "$job"); do bed exec kill -KILL "$p"; done
  for p in $(job_processes alice | awk '{print $1}'); do bed exec kill -KILL "$p" 2>/dev/null || true; done
  assert_eq "$(pids_of_stepd "$job")" "" "slurmstepd of job $job"
  before=$(sweeps_done)
  restart_slurmd
  wait_sweep "$before"
  assert_contains "$(cleanup_log)" "info: sweep: job $job kept: it is RUNNING on tbnode"
  bed exec test -d "/home/alice/scratch-$n/a"
  bed exec test -f "/var/spool/tre-spank/job-$job.toml"
  # The job's end on the node (its epilog) removes it.
  bed exec scancel "$job"
  wait_job "$job"
  assert_absent "/home/alice/scratch-$n"
  assert_absent "/var/lib/tre-spank/jobs/job-$job"
  assert_absent "/var/spool/tre-spank/job-$job.toml"
  assert_contains "$(slurmd_log)" "tre-spank: job $job: removed /home/alice/scratch-$n ("
  assert_eq "$(fingerprint "/home/alice/outputs-$n")" "$sums" "outputs after the job ended"
  assert_no_job_processes alice
  for _ in $(seq 50); do [ "$(node_state)" = idle ] && break; sleep 0.2; done
  assert_node_idle
}

# Issue 16's reproduction: an allocation has no slurmstepd here between its steps.
test_sweep_keeps_an_allocation_between_steps_across_reconfigure_and_restart() {
  local job n out before
  as alice salloc --no-shell --tre-container=$IMAGE -N1 >/dev/null 2>&1 || fail "salloc refused"
  job=$(bed exec squeue -h -u alice -t running -o %A | head -n 1)
  [ -n "$job" ] || fail "no allocation"
  out=$(as alice srun --jobid="$job" --tre-container=$IMAGE sh -c 'echo keep > /scratch/kept; echo step1 > /safe_outputs/step1' 2>&1)
  n=$(number_of "$job")
  bed exec test -f "/home/alice/scratch-$n/kept" || fail "step 1 wrote nothing: $out"
  assert_eq "$(pids_of_stepd "$job")" "" "slurmstepd of the allocation between steps"
  reconfigure_and_wait
  before=$(sweeps_done)
  restart_slurmd
  wait_sweep "$before"
  assert_not_contains "$(cleanup_log)" "sweep: job $job ended"
  out=$(as alice srun --jobid="$job" --tre-container=$IMAGE sh -c 'cat /scratch/kept' 2>&1)
  assert_line "$out" keep
  assert_eq "$(bed exec cat "/home/alice/scratch-$n/kept")" keep "scratch after reconfigure and restart"
  bed exec scancel "$job"
  wait_job "$job"
  assert_absent "/home/alice/scratch-$n"
  assert_absent "/var/spool/tre-spank/job-$job.toml"
  assert_eq "$(bed exec cat "/home/alice/outputs-$n/step1")" step1
  as alice rm -rf "outputs-$n"
  assert_node_idle
}

# A controller reset (or a record kept past MinJobAge): the controller does not know the
# job, so its leftovers go; outputs stay.
test_sweep_removes_leftovers_of_a_job_the_controller_does_not_know() {
  local before
  fake_leftovers alice 4000001 9000001 50
  before=$(sweeps_done)
  restart_slurmd
  wait_sweep "$before"
  assert_contains "$(cleanup_log)" "info: sweep: job 4000001 ended (the controller no longer knows it): cleaning up"
  assert_contains "$(cleanup_log)" "info: job 4000001: removed /home/alice/scratch-9000001 (50 entries)"
  assert_absent /home/alice/scratch-9000001
  assert_absent /var/spool/tre-spank/job-4000001.toml
  assert_eq "$(bed exec cat /home/alice/outputs-9000001/old.txt)" old "outputs of the old job"
  as alice rm -rf outputs-9000001
}

# Whatever the sweep waits on (here a controller query that takes 15 s, as a hung home
# mount or a huge scratch would), slurmd is up at once.
test_sweep_does_not_delay_slurmd_start() {
  local before t0 took
  bed exec sh -c 'printf "#!/bin/sh\nsleep 15\nexec /usr/bin/squeue \"\$@\"\n" > /usr/local/bin/slow-squeue && chmod 755 /usr/local/bin/slow-squeue'
  with_config $'[cleanup]\nsqueue = "/usr/local/bin/slow-squeue"\ncontroller_timeout = 30'
  fake_leftovers alice 4000002 9000002 2000
  before=$(sweeps_done)
  t0=$(date +%s%N)
  restart_slurmd
  for _ in $(seq 50); do [ "$(node_state)" = idle ] && break; sleep 0.1; done
  took=$((($(date +%s%N) - t0) / 1000000))
  assert_node_idle
  [ "$took" -lt 5000 ] || fail "slurmd took ${took} ms to be idle again"
  echo "    slurmd restart to idle: ${took} ms (sweep still asking the controller)" >&2
  bed exec test -d /home/alice/scratch-9000002 || fail "the sweep finished before slurmd was up: the test proves nothing"
  wait_sweep "$before"
  assert_absent /home/alice/scratch-9000002
  assert_absent /var/spool/tre-spank/job-4000002.toml
  as alice rm -rf outputs-9000002
  restore_config
  bed exec rm -f /usr/local/bin/slow-squeue
}

test_sweep_at_slurmd_restart_leaves_a_running_job_alone() {
  local job n sums before
  read -r job n < <(started_sleeper alice)
  [ -n "$n" ] || fail "the sleeper job did not start"
  sums=$(fingerprint "/home/alice/outputs-$n" "/home/alice/scratch-$n")
  before=$(sweeps_done)
  restart_slurmd
  wait_sweep "$before"
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

# Job ids wrap (MaxJobId) and controllers get rebuilt: a record left by an earlier job
# with this id (here bob's, its cleanup unfinished) neither fails the new job nor is
# adopted; it is retired, and the sweep removes what it names.
test_sweep_a_record_of_an_earlier_job_with_the_same_id_is_retired_not_adopted() {
  local job n out before
  as alice salloc --no-shell --tre-container=$IMAGE -N1 >/dev/null 2>&1 || fail "salloc refused"
  job=$(bed exec squeue -h -u alice -t running -o %A | head -n 1)
  [ -n "$job" ] || fail "no allocation"
  fake_leftovers bob "$job" 9000004 5
  out=$(as alice srun --jobid="$job" --tre-container=$IMAGE sh -c 'echo new > /scratch/f; ls /scratch' 2>&1)
  n=$(number_of "$job")
  assert_line "$out" f
  assert_contains "$(slurmd_log)" "tre-spank: job $job: the record on this node was an earlier job's with the same id: kept as retired-$job-9000004.toml for the sweep"
  assert_eq "$(bed exec sh -c "grep '^uid' /var/spool/tre-spank/job-$job.toml")" "uid = $(bed exec id -u alice)" "the new record"
  bed exec test -f /home/bob/scratch-9000004/1 || fail "the old scratch went before a sweep"
  before=$(sweeps_done)
  restart_slurmd
  wait_sweep "$before"
  assert_absent /home/bob/scratch-9000004
  assert_absent "/var/spool/tre-spank/retired-$job-9000004.toml"
  assert_eq "$(bed exec cat /home/bob/outputs-9000004/old.txt)" old "the earlier job's outputs"
  assert_eq "$(bed exec cat "/home/alice/scratch-$n/f")" new "the live job's scratch"
  bed exec scancel "$job"
  wait_job "$job"
  assert_absent "/home/alice/scratch-$n"
  as bob rm -rf outputs-9000004
  as alice rm -rf "outputs-$n"
  assert_node_idle
}
