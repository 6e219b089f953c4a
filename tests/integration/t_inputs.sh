# Issue 18 (6): --tre-inputs=outputs-N[,...] gives a later job read-only access under
# /inputs/ to outputs directories tre-spank created for the same user's earlier jobs,
# and refuses anything else with a clear message.

# inputs_job U ARGS... -- COMMANDS: a container job with --tre-inputs ARGS; prints its id.
inputs_job() {
  local user=$1 inputs=$2 cmds=$3
  run_job "$user" --tre-container="$IMAGE" --tre-inputs="$inputs" --wrap="$cmds"
}

test_inputs_an_earlier_jobs_outputs_are_mounted_read_only_under_inputs() {
  local j1 j2 n1 n2 out
  j1=$(run_job alice --tre-container="$IMAGE" --wrap='echo "result of the first job" > /safe_outputs/r.txt')
  assert_eq "$(job_field "$j1" JobState)" COMPLETED
  n1=$(job_number alice "$j1")
  # The record tre-spank wrote when it created the directory: the user's, read-only.
  assert_eq "$(bed exec stat -c '%U %a' "/home/alice/outputs-$n1/.tre-spank-outputs")" "alice 400"
  j2=$(inputs_job alice "outputs-$n1" "cat /inputs/outputs-$n1/r.txt; (echo x > /inputs/outputs-$n1/new.txt) 2>/dev/null && echo WRITABLE || echo READ-ONLY; ls /inputs")
  out=$(job_output alice "$j2")
  assert_eq "$(job_field "$j2" JobState)" COMPLETED "$out"
  n2=$(job_number alice "$j2")
  assert_line "$out" "tre-spank: input: /home/alice/outputs-$n1 -> /inputs/outputs-$n1 read-only (an earlier job's outputs)"
  assert_line "$out" "result of the first job"
  assert_line "$out" "READ-ONLY"
  assert_line "$out" "outputs-$n1"
  assert_absent "/home/alice/outputs-$n1/new.txt"
  # The second job's own outputs are an input in turn (a chain), alongside the first.
  j1=$(inputs_job alice "outputs-$n2,outputs-$n1" "ls /inputs | tr '\n' ' '; echo")
  out=$(job_output alice "$j1")
  assert_eq "$(job_field "$j1" JobState)" COMPLETED "$out"
  assert_line "$out" "$(printf '%s\n' "outputs-$n1" "outputs-$n2" | sort | tr '\n' ' ')"
}

# refused_input U INPUTS MESSAGE: the job fails, its output says MESSAGE, nothing ran.
refused_input() {
  local job out
  job=$(inputs_job "$1" "$2" "echo SHOULD NOT RUN")
  out=$(job_output "$1" "$job")
  assert_eq "$(job_field "$job" JobState)" FAILED "$out"
  assert_contains "$out" "$3"
  assert_not_contains "$out" "SHOULD NOT RUN"
}

test_inputs_refuses_what_tre_spank_did_not_make_for_this_user() {
  local j n nb out rc
  j=$(run_job alice --tre-container="$IMAGE" --wrap='echo mine > /safe_outputs/r.txt')
  n=$(job_number alice "$j")
  j=$(run_job mallory --tre-container="$IMAGE" --wrap="echo hers > /safe_outputs/r.txt")
  nb=$(job_number mallory "$j")
  # Missing; a directory the user made; one with a record copied from a real one; a
  # symbolic link to a real one; another user's (staged by root in alice's home).
  as alice sh -c 'rm -rf outputs-1111111 outputs-2222222 outputs-3333333 outputs-4444444'
  bed exec rm -rf "/home/alice/outputs-$nb"
  refused_input alice outputs-3333333 "tre-spank: --tre-inputs: /home/alice/outputs-3333333 does not exist"
  as alice mkdir outputs-1111111
  refused_input alice outputs-1111111 "tre-spank: --tre-inputs: /home/alice/outputs-1111111 is not an outputs directory tre-spank created for your jobs (no valid record .tre-spank-outputs in it)"
  as alice sh -c "mkdir outputs-2222222 && cp outputs-$n/.tre-spank-outputs outputs-2222222/"
  refused_input alice outputs-2222222 "/home/alice/outputs-2222222 is not an outputs directory tre-spank created for your jobs"
  as alice ln -s "outputs-$n" outputs-4444444
  refused_input alice outputs-4444444 "tre-spank: --tre-inputs: /home/alice/outputs-4444444 is a symbolic link; only outputs directories tre-spank created for your jobs can be inputs"
  bed exec cp -a "/home/mallory/outputs-$nb" "/home/alice/outputs-$nb"
  refused_input alice "outputs-$nb" "tre-spank: --tre-inputs: /home/alice/outputs-$nb belongs to another user"
  # mallory naming alice's NUMBER gets her own home's (absent) directory, never alice's.
  refused_input mallory "outputs-$n" "tre-spank: --tre-inputs: /home/mallory/outputs-$n does not exist"
  # One bad entry refuses the whole job, a good one alongside notwithstanding.
  refused_input alice "outputs-$n,outputs-1111111" "outputs-1111111 is not an outputs directory"
  # Not a name of an outputs directory: refused by sbatch, nothing queued.
  out=$(submit alice --tre-container="$IMAGE" --tre-inputs="../outputs-$n" --wrap=true 2>&1) && rc=0 || rc=$?
  assert_eq "$rc" 1 "$out"
  assert_contains "$out" "tre-spank: --tre-inputs: \"../outputs-$n\" is not the name of a job's outputs directory (outputs-N, as printed in the job's output)"
  bed exec rm -rf "/home/alice/outputs-$nb"
  as alice sh -c 'rm -rf outputs-1111111 outputs-2222222 outputs-4444444'
}
