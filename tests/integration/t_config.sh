# Options and site configuration as an administrator and a researcher meet them.

test_options_are_listed_in_help_of_sbatch_srun_and_salloc() {
  local cmd out
  for cmd in sbatch srun salloc; do
    out=$(as alice "$cmd" --help 2>&1)
    assert_contains "$out" "--tre-container=IMAGE"
    assert_contains "$out" "--tre-runtime=RUNTIME"
    assert_contains "$out" "--tre-project=PROJECT"
  done
}

test_options_work_as_sbatch_directives() {
  local job
  as alice sh -c 'mkdir -p ~/tests && printf "#!/bin/sh\n#SBATCH --tre-container='"$IMAGE"'\necho \"in \$container\"\n" > ~/tests/directive.sh'
  job=$(submit alice directive.sh)
  wait_job "$job"
  assert_line "$(job_output alice "$job")" "in podman"
}

test_a_broken_config_fails_container_jobs_clearly_and_leaves_other_jobs_alone() {
  local out job rc
  with_config 'allowed_registries = ["ghcr.io/"]
nonsense_key = 1'
  out=$(as alice sbatch --parsable -o /dev/null --tre-container=$IMAGE --wrap true 2>&1) && rc=0 || rc=$?
  job=$(run_job alice --wrap 'echo plain job ran') || { restore_config; return 1; }
  restore_config
  [ "$rc" -ne 0 ] || fail "a container job was accepted with a broken config"
  assert_contains "$out" "tre-spank: config /etc/slurm/tre-spank.toml line 2"
  assert_contains "$out" "nonsense_key"
  assert_line "$(job_output alice "$job")" "plain job ran"
  assert_node_idle
}

test_site_allow_list_comes_from_the_config_file() {
  local out rc
  with_config 'allowed_registries = ["ghcr.io/otherorg"]'
  out=$(as alice sbatch --parsable -o /dev/null --tre-container=$IMAGE --wrap true 2>&1) && rc=0 || rc=$?
  restore_config
  [ "$rc" -ne 0 ] || fail "an image outside the configured allow-list was accepted"
  assert_contains "$out" "is not from an allowed registry (allowed: ghcr.io/otherorg)"
}
