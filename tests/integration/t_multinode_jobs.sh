# Container jobs spanning two nodes (issue 6): partition multi = tbnode + tbnode2, with
# /home shared like a cluster's NFS homes and each node's own local state (t_multinode.sh
# checks the bed itself). One job, one NUMBER, one $HOME/outputs-N both nodes write to,
# scratch cleaned on every node, nothing left when one node's part fails.

# assert_job_gone_everywhere U J N: nothing of job J (NUMBER N) is left on any node.
assert_job_gone_everywhere() {
  local user=$1 job=$2 n=$3 node
  assert_absent "/home/$user/scratch-$n"
  for node in "${NODES[@]}"; do
    assert_absent_on "$node" "/var/spool/tre-spank/job-$job.toml"
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
  assert_eq "$(as alice sh -c 'ls -d outputs-* scratch-* 2>/dev/null' | grep -c -- "-$n\$")" 1 "directories with NUMBER $n"
  assert_job_gone_everywhere alice "$job" "$n"
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
