# The fault suite: however a job ends, scratch goes once the node is back and every
# output file is intact (fingerprints: owner, mode, size, checksum, taken before the
# fault). The node is idle after every case. (scancel, the time limit, slurmd restarts
# and the "reboot" are in t_container_job.sh and t_sweep.sh.)

test_fault_task_killed_with_sigkill_leaves_outputs_intact_and_scratch_gone() {
  local job n sums pid
  read -r job n < <(started_sleeper alice)
  [ -n "$n" ] || fail "the sleeper job did not start"
  sums=$(fingerprint "/home/alice/outputs-$n")
  # The task's first process is the supervisor (`tre-spank launch`).
  pid=$(bed exec pgrep -u alice -f '^/usr/sbin/tre-spank launch' | head -n 1)
  [ -n "$pid" ] || fail "no supervisor process found"
  bed exec kill -KILL "$pid"
  wait_job "$job"
  assert_absent "/home/alice/scratch-$n"
  assert_absent "/var/lib/tre-spank/jobs/job-$job"
  assert_absent "/run/tre-spank/jobs/job-$job"
  assert_unmounted "/run/tre-spank/jobs/job-$job"
  assert_eq "$(fingerprint "/home/alice/outputs-$n")" "$sums" "outputs after SIGKILL"
  [ "$(job_field "$job" JobState)" != COMPLETED ] || fail "a killed job reported COMPLETED"
  assert_no_job_processes alice
  assert_node_idle
}

test_fault_container_process_killed_with_sigkill_ends_the_job_cleanly() {
  local job n sums pid
  read -r job n < <(started_sleeper alice)
  [ -n "$n" ] || fail "the sleeper job did not start"
  sums=$(fingerprint "/home/alice/outputs-$n")
  pid=$(bed exec pgrep -u alice -x sleep | head -n 1)
  [ -n "$pid" ] || fail "no container process found"
  bed exec kill -KILL "$pid"
  wait_job "$job"
  # podman reports a container killed by signal N as exit status 128+N.
  assert_eq "$(job_field "$job" ExitCode)" 137:0 "a command killed by SIGKILL"
  assert_absent "/home/alice/scratch-$n"
  assert_eq "$(fingerprint "/home/alice/outputs-$n")" "$sums" "outputs after SIGKILL"
  assert_no_job_processes alice
  assert_node_idle
}

test_fault_slurmstepd_killed_scratch_goes_once_the_node_is_back() {
  local job n sums p before
  read -r job n < <(started_sleeper alice)
  [ -n "$n" ] || fail "the sleeper job did not start"
  sums=$(fingerprint "/home/alice/outputs-$n")
  for p in $(pids_of_stepd "$job"); do bed exec kill -KILL "$p"; done
  for p in $(job_processes alice | awk '{print $1}'); do bed exec kill -KILL "$p" 2>/dev/null || true; done
  bed exec scancel "$job" 2>/dev/null || true
  wait_job "$job" || true
  # Whatever Slurm made of it, the node coming back (slurmd start) sweeps, in the
  # background, once the controller says the job ended.
  before=$(sweeps_done)
  restart_slurmd
  wait_sweep "$before"
  wait_absent "/home/alice/scratch-$n"
  assert_absent "/var/lib/tre-spank/jobs/job-$job"
  assert_absent "/run/tre-spank/jobs/job-$job"
  assert_unmounted "/run/tre-spank/jobs/job-$job"
  assert_eq "$(fingerprint "/home/alice/outputs-$n")" "$sums" "outputs"
  assert_no_job_processes alice
  for _ in $(seq 50); do [ "$(node_state)" = idle ] && break; sleep 0.2; done
  assert_node_idle
}

# A home the job cannot write: read-only (staged by root with a read-only bind mount).
test_fault_read_only_home_fails_clearly_and_makes_nothing() {
  local job out before
  before=$(job_dirs dave)
  bed exec mount --bind /home/dave /home/dave
  bed exec mount -o remount,ro,bind /home/dave
  job=$(bed exec runuser -u dave -- sh -c 'cd /tmp && sbatch --parsable -o /tmp/dave-ro-%j.out --tre-container='"$IMAGE"' --wrap "echo STARTED"') ||
    { bed exec umount /home/dave; fail "sbatch refused"; }
  wait_job "$job" || true
  bed exec umount /home/dave
  out=$(bed exec cat "/tmp/dave-ro-$job.out")
  assert_contains "$out" "tre-spank: cannot create /home/dave/outputs-"
  assert_contains "$out" "EROFS"
  assert_not_contains "$out" "STARTED"
  assert_eq "$(job_field "$job" JobState)" FAILED
  assert_no_new_job_dirs dave "$before"
  assert_node_idle
}

# A full home: a tiny filesystem over the home, filled up (staged by root).
test_fault_full_home_fails_clearly_and_makes_nothing() {
  local job out
  bed exec mount -t tmpfs -o size=64k,nr_inodes=16,mode=0700,uid=1004,gid=1004 tmpfs /home/dave
  bed exec runuser -u dave -- sh -c 'i=0; while touch /home/dave/f$i 2>/dev/null; do i=$((i+1)); done; dd if=/dev/zero of=/home/dave/fill bs=4k 2>/dev/null || true'
  job=$(bed exec runuser -u dave -- sh -c 'cd /tmp && sbatch --parsable -o /tmp/dave-full-%j.out --tre-container='"$IMAGE"' --wrap "echo STARTED"') ||
    { bed exec umount /home/dave; fail "sbatch refused"; }
  wait_job "$job" || true
  out=$(bed exec cat "/tmp/dave-full-$job.out")
  local left
  left=$(bed exec sh -c 'ls -d /home/dave/outputs-* /home/dave/scratch-* 2>/dev/null || true')
  bed exec umount /home/dave
  assert_contains "$out" "tre-spank: cannot create /home/dave/outputs-"
  assert_contains "$out" "ENOSPC"
  assert_not_contains "$out" "STARTED"
  assert_eq "$(job_field "$job" JobState)" FAILED
  assert_eq "$left" "" "directories made in the full home"
  assert_node_idle
}

# Epilog time is user-controlled (a scratch of many files): past cleanup.epilog_budget the
# epilog returns, the removal (200 000 files) goes on in the background, the node never
# drains.
test_fault_epilog_past_its_budget_leaves_removal_to_the_background() {
  local job n
  with_config $'[cleanup]\nepilog_budget = 1'
  job=$(run_job alice --tre-container=$IMAGE --wrap 'mkdir /scratch/many && cd /scratch/many && seq 200000 | xargs touch && echo made')
  n=$(number_of "$job")
  assert_eq "$(job_field "$job" JobState)" COMPLETED "$(job_output alice "$job")"
  assert_contains "$(slurmd_log)" "tre-spank: job $job: cleanup still running after 1s (cleanup.epilog_budget): it goes on in the background"
  for _ in $(seq 50); do [ "$(node_state)" = idle ] && break; sleep 0.2; done
  assert_node_idle
  wait_absent "/home/alice/scratch-$n" tbnode 120
  wait_absent "/var/spool/tre-spank/job-$job.toml"
  assert_contains "$(cleanup_log)" "info: job $job: removed /home/alice/scratch-$n ("
  # The next job runs normally.
  job=$(run_job alice --tre-container=$IMAGE --wrap 'echo next')
  assert_eq "$(job_field "$job" JobState)" COMPLETED
  as alice rm -rf "outputs-$n" "outputs-$(number_of "$job")"
  assert_node_idle
}

# A controller that cannot be asked is "the job may still run": nothing is removed, and
# the sweep gives up at cleanup.background_limit; once it can be asked, the leftovers go.
test_fault_controller_unreachable_at_slurmd_start_removes_nothing() {
  local before
  # Leftovers of a job the controller does not know: a record as the plugin writes
  # it, naming a scratch.
  as alice sh -c "mkdir -m 700 scratch-9000003 && touch scratch-9000003/x"
  bed exec sh -c 'set -- $(stat -c "%d %i" /home/alice/scratch-9000003)
    umask 077
    printf "job_id = 4000003\nuid = %s\nnumber = 9000003\nhome = \"/home/alice\"\n\n[outputs]\ndev = %s\nino = %s\n\n[scratch]\ndev = %s\nino = %s\n" \
      "$(id -u alice)" "$1" "$2" "$1" "$2" > /var/spool/tre-spank/job-4000003.toml'
  with_config $'[cleanup]\nsqueue = "/nonexistent/squeue"\nbackground_limit = 4\npoll_interval = 1'
  before=$(sweeps_done)
  restart_slurmd
  wait_sweep "$before"
  assert_contains "$(cleanup_log)" "problem: sweep: the controller cannot be asked about 1 job(s): nothing removed yet, trying again"
  assert_contains "$(cleanup_log)" "info: sweep: job 4000003 kept: the controller cannot say whether it still runs"
  bed exec test -f /home/alice/scratch-9000003/x || fail "scratch removed without the controller's word"
  bed exec test -f /var/spool/tre-spank/job-4000003.toml
  restore_config
  before=$(sweeps_done)
  restart_slurmd
  wait_sweep "$before"
  assert_absent /home/alice/scratch-9000003
  assert_absent /var/spool/tre-spank/job-4000003.toml
  assert_node_idle
}
