# Container jobs spanning two nodes (issue 6): partition multi = tbnode + tbnode2, with
# /home shared like a cluster's NFS homes and each node's own local state (t_multinode.sh
# checks the bed itself). One job, one NUMBER, one $HOME/outputs-N both nodes write to,
# scratch cleaned on every node, nothing left when one node's part fails.

# assert_job_gone_everywhere U J N: nothing of job J (NUMBER N) is left on any node.
# A node that left before the last one removes its record once the controller says
# the job ended (it asks every cleanup.poll_interval seconds): wait for that.
assert_job_gone_everywhere() {
  local user=$1 job=$2 n=$3 node
  wait_absent "/home/$user/scratch-$n" tbnode 20
  for node in "${NODES[@]}"; do
    wait_absent "/var/spool/tre-spank/job-$job.toml" "$node" 20
    assert_absent_on "$node" "/var/lib/tre-spank/jobs/job-$job"
  done
  assert_no_job_processes "$user"
  assert_nodes_idle
}

test_multinode_srun_on_two_nodes_writes_one_outputs_directory() {
  local out job n
  out=$(as alice srun -p multi -N2 --tre-container=$IMAGE sh -c \
    'echo "$SLURMD_NODENAME" > "/safe_outputs/$SLURMD_NODENAME"; echo "job=$SLURM_JOB_ID on $SLURMD_NODENAME: $TRE_OUTPUTS_DIR"; ls -a /scratch' 2>&1)
  job=$(sed -n 's/^job=\([0-9]*\) on tbnode: .*/\1/p' <<<"$out")
  [ -n "$job" ] || fail "no job id in the output: $out"
  n=$(number_of "$job")
  assert_line "$out" "job=$job on tbnode: /safe_outputs"
  assert_line "$out" "job=$job on tbnode2: /safe_outputs"
  # Printed once, by task 0; both nodes' tasks ran in the same pair of directories.
  assert_eq "$(grep -c '^tre-spank: outputs: ' <<<"$out")" 1 "summary lines"
  assert_line "$out" "tre-spank: outputs: /home/alice/outputs-$n -> /safe_outputs (kept after the job)"
  assert_eq "$(as alice sh -c "cat outputs-$n/tbnode outputs-$n/tbnode2" | paste -sd, -)" tbnode,tbnode2 "outputs of both nodes"
  assert_eq "$(as alice sh -c "ls outputs-$n" | paste -sd, -)" tbnode,tbnode2 "nothing else in outputs"
  # tbnode2 found the directories tbnode made (or the reverse) and checked the proof.
  assert_contains "$(bed exec cat /var/log/slurm/slurmd.log; node_slurmd_log tbnode2)" \
    "tre-spank: job $job: using /home/alice/outputs-$n made for this job by another step (proof checked)"
  assert_eq "$(job_field "$job" JobState)" COMPLETED
  assert_job_gone_everywhere alice "$job" "$n"
  as alice rm -rf "outputs-$n"
}

test_multinode_batch_on_the_host_with_steps_on_both_nodes() {
  local job out n
  as alice sh -c 'mkdir -p ~/tests && cat > ~/tests/mn-host.sh' <<'SCRIPT'
#!/bin/sh
echo "batch on $(hostname): $TRE_OUTPUTS_DIR"
srun sh -c 'echo "$SLURMD_NODENAME" > "/scratch/$SLURMD_NODENAME"; echo "step on $SLURMD_NODENAME in-container=$TRE_IN_CONTAINER"'
srun -N2 -n2 sh -c 'ls /scratch | paste -sd, - > "/safe_outputs/seen-by-$SLURMD_NODENAME"'
SCRIPT
  job=$(run_job alice -p multi -N2 --tre-container=$IMAGE --tre-batch=host mn-host.sh)
  out=$(job_output alice "$job")
  n=$(number_of "$job")
  assert_eq "$(job_field "$job" JobState)" COMPLETED "$out"
  assert_line "$out" "batch on tbnode: /home/alice/outputs-$n"
  assert_line "$out" "step on tbnode in-container=1"
  assert_line "$out" "step on tbnode2 in-container=1"
  # One scratch shared by both nodes' steps; one outputs directory.
  assert_eq "$(as alice cat "outputs-$n/seen-by-tbnode")" tbnode,tbnode2
  assert_eq "$(as alice cat "outputs-$n/seen-by-tbnode2")" tbnode,tbnode2
  assert_job_gone_everywhere alice "$job" "$n"
  assert_eq "$(as alice sh -c 'ls -d outputs-* scratch-* 2>/dev/null' | grep -c -- "-$n\$")" 1 "directories with NUMBER $n"
  as alice rm -rf "outputs-$n"
}

test_multinode_a_failing_node_fails_the_job_and_leaves_nothing_behind() {
  local job out n
  job=$(run_job alice -p multi -N2 --tre-container=$IMAGE --tre-batch=host --wrap \
    'srun -N2 sh -c "echo started > /scratch/\$SLURMD_NODENAME; if [ \$SLURMD_NODENAME = tbnode2 ]; then exit 3; fi; sleep 2; echo ok > /safe_outputs/ok"')
  out=$(job_output alice "$job")
  n=$(number_of "$job")
  assert_eq "$(job_field "$job" JobState)" FAILED "$out"
  assert_eq "$(job_field "$job" ExitCode)" 3:0 "$out"
  assert_job_gone_everywhere alice "$job" "$n"
  # What the healthy node wrote is kept.
  assert_eq "$(as alice cat "outputs-$n/ok")" ok
  as alice rm -rf "outputs-$n"
}

test_multinode_a_node_that_refuses_the_step_fails_it_and_leaves_nothing_behind() {
  local out job n name
  # tbnode2 offers only apptainer, so a podman step is refused there (in task_init,
  # after its directories were joined), while tbnode runs it.
  with_config '[[node]]
names = ["tbnode2"]
runtimes = ["apptainer"]'
  name=mn-refused-$$-$RANDOM
  out=$(as alice srun -p multi -N2 -J "$name" --tre-container=$IMAGE --tre-runtime=podman sh -c \
    'sleep 1; echo ran > "/safe_outputs/$SLURMD_NODENAME"' 2>&1) && fail "srun succeeded: $out"
  restore_config
  job=$(bed exec scontrol -o show job | sed -n "s/^JobId=\([0-9]*\) JobName=$name .*/\1/p")
  [ -n "$job" ] || fail "no job named $name"
  n=$(number_of "$job")
  assert_contains "$out" "tre-spank: podman is not offered on node tbnode2"
  assert_job_gone_everywhere alice "$job" "$n"
  as alice rm -rf "outputs-$n"
}

test_multinode_batch_in_the_container_on_two_nodes_says_to_use_host_batch() {
  local job out
  job=$(run_job alice -p multi -N2 --tre-container=$IMAGE --wrap 'echo "in-container=$TRE_IN_CONTAINER"')
  out=$(job_output alice "$job")
  assert_eq "$(job_field "$job" JobState)" COMPLETED "$out"
  assert_line "$out" "in-container=1"
  assert_line "$out" "tre-spank: note: this job has 2 nodes but its batch script runs in the container on this node, where there is no srun; use --tre-batch=host to run srun steps in the container on every node"
  as alice sh -c "rm -rf outputs-$(number_of "$job")"
  # One node: no note.
  job=$(run_job alice --tre-container=$IMAGE --wrap true)
  assert_not_contains "$(job_output alice "$job")" "tre-spank: note:"
  as alice sh -c "rm -rf outputs-$(number_of "$job")"
}

# wait_file PATH [SECONDS]: until PATH exists (tbnode's view).
wait_file() {
  local i
  for ((i = 0; i < ${2:-60} * 5; i++)); do bed exec test -e "$1" && return 0; sleep 0.2; done
  fail "$1 did not appear within ${2:-60}s"
}

# A host batch script that runs step 1 on both nodes, waits for ~/tests/go-JOB, then
# runs "$1" as step 2 (srun arguments and command).
two_step_script() {
  as alice sh -c 'mkdir -p ~/tests && cat > ~/tests/mn-two-steps.sh' <<SCRIPT
#!/bin/sh
srun -N2 -n2 sh -c 'echo keep > "/scratch/\$SLURMD_NODENAME"'
touch "\$TRE_SCRATCH_DIR/.step1-done"
while [ ! -e "\$HOME/tests/go-\$SLURM_JOB_ID" ]; do sleep 0.5; done
$1
SCRIPT
}

# finish_two_steps J: let two_step_script's job J go on; it must end COMPLETED with its
# second step printing what both nodes wrote in step 1.
finish_two_steps() {
  local out
  as alice touch "tests/go-$1"
  wait_job "$1"
  out=$(job_output alice "$1")
  assert_eq "$(job_field "$1" JobState)" COMPLETED "$out"
  assert_line "$out" "keep,keep"
}

# Finding 5 of the December review: tbnode2 has no slurmstepd of the job between its
# steps; its slurmd restarting (and a reconfigure) must not take the shared scratch.
test_multinode_host_batch_keeps_scratch_when_a_node_restarts_between_steps() {
  local job n out before
  two_step_script "srun -N2 -n2 sh -c 'cat /scratch/tbnode /scratch/tbnode2 | paste -sd, -'"
  job=$(submit alice -p multi -N2 --tre-container=$IMAGE --tre-batch=host mn-two-steps.sh)
  wait_running "$job"
  n=$(number_of "$job")
  wait_file "/home/alice/scratch-$n/.step1-done"
  before=$(sweeps_done tbnode2)
  on_node tbnode2 /opt/tre-testbed/bed restart_own_slurmd
  wait_sweep "$before" tbnode2
  reconfigure_and_wait tbnode2
  assert_contains "$(cleanup_log tbnode2)" "info: sweep: job $job kept: it is RUNNING on tbnode,tbnode2"
  as alice touch "tests/go-$job"
  wait_job "$job"
  out=$(job_output alice "$job")
  assert_eq "$(job_field "$job" JobState)" COMPLETED "$out"
  assert_eq "$(grep -c '^keep,keep$' <<<"$out")" 2 "both nodes read both files: $out"
  assert_not_contains "$(node_slurmd_log tbnode2; cleanup_log tbnode2)" "job $job ended"
  assert_job_gone_everywhere alice "$job" "$n"
  as alice rm -rf "outputs-$n" "tests/go-$job"
}

# Finding 12: tbnode's tasks exit at SIGTERM at once, tbnode2's handler still copies from
# /scratch during KillWait (5 s in the bed): the scratch goes after the last node is done.
test_multinode_a_sigterm_handler_copies_scratch_after_the_other_node_is_done() {
  local job n
  as alice sh -c 'mkdir -p ~/tests && cat > ~/tests/mn-term.sh' <<'SCRIPT'
#!/bin/sh
srun -N2 -n2 sh -c '
  echo "ckpt of $SLURMD_NODENAME" > "/scratch/ckpt-$SLURMD_NODENAME"
  if [ "$SLURMD_NODENAME" = tbnode2 ]; then
    trap "sleep 3; cp /scratch/ckpt-tbnode /scratch/ckpt-tbnode2 /safe_outputs/; exit 0" TERM
  else
    trap "exit 0" TERM
  fi
  touch "/scratch/ready-$SLURMD_NODENAME"
  sleep 300 & wait'
SCRIPT
  job=$(submit alice -p multi -N2 --tre-container=$IMAGE --tre-batch=host mn-term.sh)
  wait_running "$job"
  n=$(number_of "$job")
  wait_file "/home/alice/scratch-$n/ready-tbnode"
  wait_file "/home/alice/scratch-$n/ready-tbnode2"
  bed exec scancel "$job"
  wait_job "$job"
  assert_eq "$(as alice cat "outputs-$n/ckpt-tbnode")" "ckpt of tbnode" "copied by tbnode2's handler"
  assert_eq "$(as alice cat "outputs-$n/ckpt-tbnode2")" "ckpt of tbnode2"
  # tbnode was done first and left the scratch to the last node.
  assert_contains "$(slurmd_log)" "tre-spank: job $job: scratch kept while it is still completing on tbnode"
  assert_job_gone_everywhere alice "$job" "$n"
  as alice rm -rf "outputs-$n"
}

# A job shrunk while it runs: the released node's epilog leaves the scratch the job
# still uses; the last node removes it at the job's end.
test_multinode_shrinking_a_job_keeps_its_scratch() {
  local job n
  two_step_script "srun -N1 -n1 -w tbnode sh -c 'cat /scratch/tbnode /scratch/tbnode2 | paste -sd, -'"
  job=$(submit alice -p multi -N2 --tre-container=$IMAGE --tre-batch=host mn-two-steps.sh)
  wait_running "$job"
  n=$(number_of "$job")
  wait_file "/home/alice/scratch-$n/.step1-done"
  bed exec scontrol update JobId="$job" NodeList=tbnode
  for _ in $(seq 100); do
    grep -qF "job $job: scratch kept while it is RUNNING on tbnode" <<<"$(node_slurmd_log tbnode2)" && break
    sleep 0.2
  done
  assert_contains "$(node_slurmd_log tbnode2)" "tre-spank: job $job: scratch kept while it is RUNNING on tbnode"
  bed exec test -f "/home/alice/scratch-$n/tbnode2" || fail "the released node removed the job's scratch"
  finish_two_steps "$job"
  assert_job_gone_everywhere alice "$job" "$n"
  as alice rm -rf "outputs-$n" "tests/go-$job"
}

# --no-kill: tbnode2 goes down during the job, which goes on on tbnode; tbnode2 comes back
# (slurmd restarted, its sweep runs) while the job still runs: the scratch stays.
test_multinode_a_no_kill_node_that_comes_back_keeps_the_jobs_scratch() {
  local job n before
  two_step_script "srun -N1 -n1 -w tbnode sh -c 'cat /scratch/tbnode /scratch/tbnode2 | paste -sd, -'"
  job=$(submit alice -p multi -N2 --no-kill --tre-container=$IMAGE --tre-batch=host mn-two-steps.sh)
  wait_running "$job"
  n=$(number_of "$job")
  wait_file "/home/alice/scratch-$n/.step1-done"
  bed exec scontrol update NodeName=tbnode2 State=DOWN Reason=no-kill-test
  for _ in $(seq 50); do [ "$(job_field "$job" NodeList)" = tbnode ] && break; sleep 0.2; done
  assert_eq "$(job_field "$job" NodeList)" tbnode "the job without its down node"
  bed exec scontrol update NodeName=tbnode2 State=RESUME
  before=$(sweeps_done tbnode2)
  on_node tbnode2 /opt/tre-testbed/bed restart_own_slurmd
  wait_sweep "$before" tbnode2
  bed exec test -f "/home/alice/scratch-$n/tbnode2" || fail "the node that came back removed the job's scratch"
  finish_two_steps "$job"
  for _ in $(seq 50); do [ "$(nodes_state)" = idle ] && break; sleep 0.2; done
  assert_job_gone_everywhere alice "$job" "$n"
  as alice rm -rf "outputs-$n" "tests/go-$job"
}
