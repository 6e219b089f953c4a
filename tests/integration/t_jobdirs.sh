# One job, one pair of directories: steps that start together, --tre-batch=host, and the
# proof that lets a step adopt directories another step of the same job created
# (docs/design.md, "One job, several nodes"). Multi-node jobs: t_multinode.sh.

test_two_steps_starting_together_share_one_outputs_directory() {
  local job out n
  # The batch script is not in a container; both steps are, and start at the same time.
  job=$(run_job alice --wrap "srun --tre-container=$IMAGE sh -c 'echo a > /safe_outputs/a' &
    srun --tre-container=$IMAGE sh -c 'echo b > /safe_outputs/b' & wait")
  out=$(job_output alice "$job")
  assert_eq "$(job_field "$job" JobState)" COMPLETED "$out"
  n=$(number_of "$job")
  assert_eq "$(as alice cat "outputs-$n/a" "outputs-$n/b" | tr '\n' ' ')" "a b " "$out"
  assert_not_contains "$out" "already exists"
  assert_absent "/home/alice/scratch-$n"
  assert_eq "$(bed exec sh -c "ls /var/spool/tre-spank | grep -c '^job-$job.toml\$' || true")" 0 "record left"
  assert_absent "/var/lib/tre-spank/jobs/job-$job"
  as alice rm -rf "outputs-$n"
}

test_batch_on_the_host_runs_its_srun_steps_in_the_container() {
  local job out n
  job=$(run_job alice --tre-container=$IMAGE --tre-batch=host --wrap \
    'echo "host: $TRE_OUTPUTS_DIR $TRE_SCRATCH_DIR in-container=${TRE_IN_CONTAINER:-no}"
     test -x /usr/bin/sbatch && echo "host: slurm is here"
     echo from-host > "$TRE_OUTPUTS_DIR/host.txt"
     srun sh -c "echo step: \$TRE_OUTPUTS_DIR in-container=\$TRE_IN_CONTAINER; cat /safe_outputs/host.txt; echo from-step > /safe_outputs/step.txt"')
  out=$(job_output alice "$job")
  assert_eq "$(job_field "$job" JobState)" COMPLETED "$out"
  n=$(number_of "$job")
  assert_line "$out" "host: /home/alice/outputs-$n /home/alice/scratch-$n in-container=no"
  assert_line "$out" "host: slurm is here"
  assert_line "$out" "tre-spank: the batch script runs on the host (--tre-batch=host); its srun steps run in $IMAGE"
  assert_line "$out" "step: /safe_outputs in-container=1"
  assert_line "$out" "from-host"
  assert_eq "$(as alice cat "outputs-$n/step.txt")" from-step
  # One NUMBER for the batch step and its steps: one Running: line (the srun step's).
  assert_eq "$(grep -c '^Running: ' <<<"$out")" 1 "Running: lines"
  assert_absent "/home/alice/scratch-$n"
  assert_absent "/var/lib/tre-spank/jobs/job-$job"
  as alice rm -rf "outputs-$n"
}

test_batch_in_the_container_is_still_the_default() {
  local job out
  job=$(run_job alice --tre-container=$IMAGE --wrap 'echo "in-container=$TRE_IN_CONTAINER"')
  out=$(job_output alice "$job")
  assert_line "$out" "in-container=1"
  assert_not_contains "$out" "runs on the host"
  as alice rm -rf "outputs-$(number_of "$job")"
}

test_a_site_may_make_host_batch_the_default() {
  local job out
  with_config 'batch = "host"'
  job=$(run_job alice --tre-container=$IMAGE --wrap 'echo "in-container=${TRE_IN_CONTAINER:-no}"; srun sh -c "echo step-in-container=\$TRE_IN_CONTAINER"')
  out=$(job_output alice "$job")
  assert_line "$out" "in-container=no"
  assert_line "$out" "step-in-container=1"
  # The job's own option wins over the site's default.
  job=$(run_job alice --tre-container=$IMAGE --tre-batch=container --wrap 'echo "in-container=$TRE_IN_CONTAINER"')
  assert_line "$(job_output alice "$job")" "in-container=1"
  restore_config
}

test_attack_a_proof_copied_from_another_job_does_not_make_planted_directories_adopted() {
  local running held n_run n_held before out
  # A running job of alice's: its scratch holds a genuine proof.
  running=$(submit alice --tre-container=$IMAGE --wrap 'while [ ! -e /scratch/.go ]; do sleep 0.2; done')
  n_run=$(wait_number alice "$running")
  as alice test -f "scratch-$n_run/.tre-spank-job" || fail "no proof in scratch-$n_run"
  # A held job: alice plants its directories and copies the proof into them.
  held=$(submit alice --hold --tre-container=$IMAGE --wrap 'echo CONTAINER STARTED > /safe_outputs/started')
  n_held=$(number_of "$held")
  # (the same line with this job's id and NUMBER: the MAC no longer matches; and the
  # inodes are those of the running job's directories anyway)
  as alice sh -c "mkdir -m 0700 outputs-$n_held scratch-$n_held &&
    sed 's/job=$running /job=$held /; s/number=$n_run /number=$n_held /' scratch-$n_run/.tre-spank-job > scratch-$n_held/.tre-spank-job"
  before=$(fingerprint "/home/alice/outputs-$n_held" "/home/alice/scratch-$n_held")
  bed exec scontrol release "$held"
  wait_job "$held"
  out=$(job_output alice "$held")
  assert_line "$out" "tre-spank: /home/alice/outputs-$n_held already exists; tre-spank never reuses a directory it did not create for this job"
  assert_not_contains "$out" "CONTAINER STARTED"
  assert_eq "$(job_field "$held" JobState)" FAILED
  # Neither adopted nor removed.
  assert_eq "$(fingerprint "/home/alice/outputs-$n_held" "/home/alice/scratch-$n_held")" "$before" "the planted directories"
  as alice touch "scratch-$n_run/.go"
  wait_job "$running"
  assert_eq "$(job_field "$running" JobState)" COMPLETED
  as alice rm -rf "outputs-$n_held" "scratch-$n_held" "outputs-$n_run"
  assert_node_idle
}
