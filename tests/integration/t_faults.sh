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
  local job n sums p
  read -r job n < <(started_sleeper alice)
  [ -n "$n" ] || fail "the sleeper job did not start"
  sums=$(fingerprint "/home/alice/outputs-$n")
  for p in $(pids_of_stepd "$job"); do bed exec kill -KILL "$p"; done
  for p in $(job_processes alice | awk '{print $1}'); do bed exec kill -KILL "$p" 2>/dev/null || true; done
  bed exec scancel "$job" 2>/dev/null || true
  wait_job "$job" || true
  # Whatever Slurm made of it, the node coming back (slurmd start) sweeps.
  restart_slurmd
  assert_absent "/home/alice/scratch-$n"
  assert_absent "/var/lib/tre-spank/jobs/job-$job"
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
