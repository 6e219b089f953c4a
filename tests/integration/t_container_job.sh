# Issue 2: what a container job gets, end to end (podman).

test_batch_job_gets_outputs_and_scratch_with_one_seven_digit_number() {
  local job n out
  job=$(submit alice --tre-container=$IMAGE --wrap 'sleep 4; echo "inside: $TRE_OUTPUTS_DIR $TRE_SCRATCH_DIR"')
  wait_running "$job"
  sleep 1.5
  out=$(job_output alice "$job")
  n=$(job_number alice "$job")
  [[ $n =~ ^[0-9]{7}$ ]] || fail "no 7-digit NUMBER in: $out"
  assert_contains "$out" "tre-spank: scratch: /home/alice/scratch-$n -> /scratch (deleted when the job ends)"
  # While the job runs both exist, owned by alice, mode 0700.
  assert_eq "$(bed exec stat -c '%U %a %F' /home/alice/outputs-$n)" "alice 700 directory"
  assert_eq "$(bed exec stat -c '%U %a %F' /home/alice/scratch-$n)" "alice 700 directory"
  wait_job "$job"
  assert_contains "$(job_output alice "$job")" "inside: /safe_outputs /scratch"
}

test_host_paths_are_exported_and_container_paths_set_inside() {
  local job out
  job=$(run_job alice --tre-container=$IMAGE --wrap 'env | grep ^TRE_ | sort')
  out=$(job_output alice "$job")
  assert_line "$out" "TRE_OUTPUTS_DIR=/safe_outputs"
  assert_line "$out" "TRE_SCRATCH_DIR=/scratch"
  assert_line "$out" "TRE_SAFE_DATA=/safe_data"
  assert_line "$out" "TRE_PROJECT=proj1"
}

test_every_step_of_a_job_shares_one_number() {
  local out a b
  out=$(as alice salloc -Q --tre-container=$IMAGE sh -c 'srun true; srun true' 2>&1)
  a=$(grep '^tre-spank: outputs:' <<<"$out" | sed -n 1p)
  b=$(grep '^tre-spank: outputs:' <<<"$out" | sed -n 2p)
  [ -n "$a" ] || fail "no outputs line in: $out"
  assert_eq "$b" "$a" "second step's outputs line"
}

test_container_runs_as_the_user_with_the_three_mounts_and_no_home() {
  local job out n
  job=$(run_job alice --tre-container=$IMAGE --wrap '
    echo "uid=$(id -u)"
    cat /safe_data/README.txt
    echo result > /safe_outputs/result.txt
    echo shared > /safe_data/written-by-alice-$SLURM_JOB_ID
    test -e /home/alice && echo "HOME MOUNTED" || echo "no home"
    echo "cwd=$(pwd)"')
  out=$(job_output alice "$job")
  n=$(job_number alice "$job")
  assert_line "$out" "uid=0"
  assert_line "$out" "data of proj1"
  assert_line "$out" "no home"
  assert_line "$out" "cwd=/scratch"
  assert_eq "$(bed exec stat -c %U /home/alice/outputs-$n/result.txt)" alice "owner of a file written to /safe_outputs"
  assert_eq "$(bed exec stat -c %U /safe_data/proj1/written-by-alice-$job)" alice "owner of a file written to /safe_data"
  bed exec rm -f "/safe_data/proj1/written-by-alice-$job"
}

test_image_user_is_overridden_so_files_land_as_the_user() {
  local job n
  job=$(run_job alice --tre-container=$IMAGE_NONROOT --wrap 'id -u; touch /safe_outputs/f')
  n=$(job_number alice "$job")
  assert_line "$(job_output alice "$job")" "0"
  assert_eq "$(bed exec stat -c %U /home/alice/outputs-$n/f)" alice
}

test_srun_runs_its_command_inside_the_container() {
  local out
  out=$(as alice srun --tre-container=$IMAGE sh -c 'echo "container=$container"; test -e /etc/debian_version && echo host-fs || echo image-fs' 2>&1)
  assert_line "$out" "container=podman"
  assert_line "$out" "image-fs"
}

test_batch_script_runs_inside_the_container() {
  local job out
  as alice sh -c 'mkdir -p ~/tests && printf "#!/bin/sh\necho \"script in \$container\"\ntest -e /etc/debian_version || echo no-host-files\necho args: \"\$@\"\n" > ~/tests/script.sh'
  job=$(submit alice --tre-container=$IMAGE script.sh one two)
  wait_job "$job"
  out=$(job_output alice "$job")
  assert_line "$out" "script in podman"
  assert_line "$out" "no-host-files"
  assert_line "$out" "args: one two"
}

test_job_output_shows_the_running_command() {
  local job out
  job=$(run_job alice --tre-container=$IMAGE --wrap true)
  out=$(job_output alice "$job")
  assert_contains "$out" "Running: /usr/bin/podman --root=/var/lib/tre-spank/jobs/job-$job/storage "
  assert_contains "$out" " run --rm --pull=never "
  assert_contains "$out" " ghcr.io/mikej888/hello-tre:1.0 /var/spool/slurmd/"
}

test_a_step_started_from_inside_the_container_is_not_wrapped_again() {
  local out
  out=$(as alice env TRE_IN_CONTAINER=1 srun --tre-container=$IMAGE sh -c 'test -e /etc/debian_version && echo host-fs' 2>&1)
  assert_line "$out" "host-fs"
  assert_not_contains "$out" "Running:"
}

# Cleanup, however the job ends.
check_cleaned_up() {  # check_cleaned_up JOB
  local n
  n=$(job_number alice "$1")
  [ -n "$n" ] || fail "job $1 printed no NUMBER"
  assert_absent "/home/alice/scratch-$n"
  assert_exists "/home/alice/outputs-$n/kept.txt"
  assert_no_job_processes alice
  assert_node_idle
}

test_scratch_is_removed_and_outputs_kept_after_success() {
  local job
  job=$(run_job alice --tre-container=$IMAGE --wrap 'echo k > /safe_outputs/kept.txt; mkdir -p /scratch/a/b; echo x > /scratch/a/b/f')
  assert_eq "$(job_field "$job" JobState)" COMPLETED
  check_cleaned_up "$job"
}

test_scratch_is_removed_and_outputs_kept_after_a_failure() {
  local job
  job=$(run_job alice --tre-container=$IMAGE --wrap 'echo k > /safe_outputs/kept.txt; echo x > /scratch/f; exit 3')
  assert_eq "$(job_field "$job" JobState)" FAILED
  assert_eq "$(job_field "$job" ExitCode)" 3:0
  check_cleaned_up "$job"
}

test_scratch_is_removed_and_processes_gone_after_scancel() {
  local job
  job=$(submit alice --tre-container=$IMAGE --wrap 'echo k > /safe_outputs/kept.txt; echo x > /scratch/f; sleep 300')
  wait_running "$job"
  wait_job_process alice 'sleep 300'
  bed exec scancel "$job"
  wait_job "$job"
  assert_eq "$(job_field "$job" JobState)" CANCELLED
  check_cleaned_up "$job"
}

test_scratch_is_removed_and_processes_gone_after_the_time_limit() {
  local job
  job=$(submit alice --tre-container=$IMAGE --time=1 --wrap 'echo k > /safe_outputs/kept.txt; echo x > /scratch/f; sleep 600')
  wait_job "$job" 200
  assert_eq "$(job_field "$job" JobState)" TIMEOUT
  check_cleaned_up "$job"
}

test_no_project_fails_the_job_with_the_services_exact_line() {
  local job out
  job=$(run_job bob --tre-container=$IMAGE --wrap 'echo CONTAINER STARTED')
  out=$(job_output bob "$job")
  assert_line "$out" "Cannot open project data: /safe_data/cannot_determine_project_from_groups"
  assert_not_contains "$out" "CONTAINER STARTED"
  assert_not_contains "$out" "Running:"
  assert_eq "$(job_field "$job" JobState)" FAILED
  [ "$(job_field "$job" ExitCode)" != 0:0 ] || fail "exit code 0:0"
  assert_no_new_job_dirs bob ""
  assert_node_idle
}

test_jobs_without_a_container_are_untouched() {
  local job out before
  before=$(job_dirs alice)
  job=$(run_job alice --wrap 'echo "tre=${TRE_OUTPUTS_DIR:-unset}"; test -e /etc/debian_version && echo host-fs')
  out=$(job_output alice "$job")
  assert_eq "$out" $'tre=unset\nhost-fs' "the whole job output"
  assert_eq "$(job_dirs alice)" "$before" "alice's job directories"
}

test_missing_image_fails_the_job_naming_the_image_and_never_pulls() {
  local job out
  job=$(run_job alice --tre-container=ghcr.io/mikej888/not-approved:9.9 --wrap 'echo STARTED')
  out=$(job_output alice "$job")
  assert_contains "$out" "tre-spank: image ghcr.io/mikej888/not-approved:9.9 is not on this node: images reach the nodes only through the site's approved process, and jobs never pull"
  assert_not_contains "$out" "STARTED"
  assert_not_contains "$out" "Trying to pull"
  assert_eq "$(job_field "$job" JobState)" FAILED
  assert_eq "$(job_field "$job" ExitCode)" 125:0
  assert_absent "/home/alice/scratch-$(job_number alice "$job")"
  assert_node_idle
}

test_the_commands_exit_code_reaches_slurm_unchanged() {
  local out rc
  out=$(as alice srun --tre-container=$IMAGE sh -c 'exit 42' 2>&1) && rc=0 || rc=$?
  assert_eq "$rc" 42 "srun's exit status"
}
