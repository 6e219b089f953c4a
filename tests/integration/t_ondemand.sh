# The Open OnDemand example app (examples/ondemand/tre-container), rendered with Ruby's
# ERB as OnDemand renders it, and the resulting job submitted to the bed the way
# OnDemand's batch_connect "basic" template runs it (a job script that changes to the
# staging directory under $HOME and runs script.sh). Needs ruby on the test host.

OOD_APP=$ROOT_DIR/examples/ondemand/tre-container

# ood_render OUT-SCRIPT key=value...: prints the sbatch arguments, one per line.
ood_render() {
  command -v ruby >/dev/null || { fail "ruby is needed to render the OnDemand app (apt-get install ruby)"; return 1; }
  ruby "$ROOT_DIR/tests/integration/ondemand-render.rb" "$OOD_APP" "$@"
}

# srun_args SCRIPT-TEXT: runs the rendered script with an srun that saves its arguments
# in files; prints the directory (arg.1, arg.2, ...).
srun_args() {
  local fake
  fake=$(mktemp -d)
  printf '#!/bin/bash\ni=0\nfor a in "$@"; do i=$((i+1)); printf "%%s" "$a" > "%s/arg.$i"; done\n' "$fake" >"$fake/srun"
  chmod +x "$fake/srun"
  printf '%s\n' "$1" >"$fake/script.sh"
  PATH=$fake:$PATH sh "$fake/script.sh" || fail "the rendered script failed"
  echo "$fake"
}

test_ondemand_app_renders_the_tre_options_cores_memory_and_gpus() {
  local args tmp d
  tmp=$(mktemp)
  args=$(ood_render "$tmp" tre_runtime=podman tre_project=proj2 num_cores=4 memory_gb=8 num_gpus=2)
  assert_line "$args" "--cpus-per-task=4"
  assert_line "$args" "--mem=8G"
  assert_line "$args" "--gpus=2"
  d=$(srun_args "$(cat "$tmp")")
  assert_eq "$(cat "$d/arg.1") $(cat "$d/arg.2") $(cat "$d/arg.3") $(cat "$d/arg.4")" \
    "--ntasks=1 --tre-container=ghcr.io/mikej888/hello-tre:1.0 --tre-runtime=podman --tre-project=proj2"
  assert_eq "$(cat "$d/arg.5") $(cat "$d/arg.6")" "sh -c"
  rm -rf "$d"
  args=$(ood_render "$tmp" "tre_command=echo 'it''s' \"\$HOME\"; ls")
  assert_not_contains "$args" "--gpus"
  d=$(srun_args "$(cat "$tmp")")
  rm -f "$tmp"
  # Without runtime and project: srun --ntasks=1 --tre-container=I sh -c COMMANDS.
  assert_eq "$(cat "$d/arg.3") $(cat "$d/arg.4")" "sh -c"
  # The commands survive the shell quoting intact.
  assert_contains "$(cat "$d/arg.5")" 'echo "TRE job $SLURM_JOB_ID in $TRE_CONTAINER'
  assert_contains "$(cat "$d/arg.5")" "echo 'it''s' \"\$HOME\"; ls"
  rm -rf "$d"
}

test_ondemand_app_job_runs_in_the_container() {
  local tmp job out n stage=ondemand/data/sys/dashboard/batch_connect/sys/tre-container/output/t1
  tmp=$(mktemp)
  mapfile -t args < <(ood_render "$tmp" tre_project=proj1 num_cores=1 memory_gb=1)
  [ "${#args[@]}" -gt 0 ] || fail "nothing rendered"
  as alice sh -c "mkdir -p ~/$stage ~/tests && cat > ~/$stage/script.sh && chmod +x ~/$stage/script.sh" <"$tmp"
  rm -f "$tmp"
  # What OnDemand's basic template submits, reduced to its essence.
  as alice sh -c "printf '#!/bin/bash\ncd %s\n./script.sh\n' ~/$stage > ~/tests/ood-job.sh"
  job=$(submit alice "${args[@]}" ood-job.sh)
  wait_job "$job"
  out=$(job_output alice "$job")
  assert_line "$out" "TRE job $job in ghcr.io/mikej888/hello-tre:1.0 (project: proj1)"
  assert_eq "$(job_field "$job" JobState)" COMPLETED
  n=$(job_number alice "$job")
  assert_exists "/home/alice/outputs-$n/done.txt"
}
