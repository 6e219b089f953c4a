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
  PATH=$fake:$PATH sh "$fake/script.sh" >"$fake/stdout" || fail "the rendered script failed"
  echo "$fake"
}

test_ondemand_app_renders_the_tre_options_cores_memory_and_gpus() {
  local args tmp d
  tmp=$(mktemp)
  args=$(ood_render "$tmp" tre_runtime=podman tre_project=proj2 num_cores=4 memory_gb=8 num_gpus=2)
  assert_eq "$args" "--cpus-per-task=4
--mem=8G
--gpus=2
--tre-container=ghcr.io/mikej888/hello-tre:1.0
--tre-batch=host
--tre-runtime=podman
--tre-project=proj2"
  # The container step gets the form's cores, memory and GPUs too.
  d=$(srun_args "$(cat "$tmp")")
  assert_eq "$(cat "$d/arg.1") $(cat "$d/arg.2") $(cat "$d/arg.3") $(cat "$d/arg.4")" \
    "--ntasks=1 --cpus-per-task=4 --mem=8G --gpus=2"
  assert_eq "$(cat "$d/arg.5") $(cat "$d/arg.6")" "sh -c"
  rm -rf "$d"
  args=$(ood_render "$tmp" "tre_command=echo 'it''s' \"\$HOME\"; ls")
  assert_not_contains "$args" "--gpus"
  assert_not_contains "$args" "--tre-runtime"
  assert_not_contains "$args" "--tre-project"
  assert_not_contains "$(cat "$tmp")" "--gpus"
  d=$(srun_args "$(cat "$tmp")")
  rm -f "$tmp"
  # Without GPUs: srun --ntasks=1 --cpus-per-task=1 --mem=1G sh -c COMMANDS.
  assert_eq "$(cat "$d/arg.4") $(cat "$d/arg.5")" "sh -c"
  # The commands survive the shell quoting intact.
  assert_contains "$(cat "$d/arg.6")" 'echo "TRE job $SLURM_JOB_ID in $TRE_CONTAINER'
  assert_contains "$(cat "$d/arg.6")" "echo 'it''s' \"\$HOME\"; ls"
  rm -rf "$d"
}

test_ondemand_app_job_runs_in_the_container() {
  local tmp job out n i step stage=ondemand/data/sys/dashboard/batch_connect/sys/tre-container/output/t1
  tmp=$(mktemp)
  # The form's cores, memory and GPUs, and commands that show the step's GPU devices
  # and last long enough to read the step from the controller.
  mapfile -t args < <(ood_render "$tmp" tre_project=proj1 num_cores=2 memory_gb=1 num_gpus=1 \
    "tre_command=ls /dev/nvidia* | tr '\n' ' '; echo; date > /safe_outputs/done.txt; sleep 6")
  [ "${#args[@]}" -gt 0 ] || fail "nothing rendered"
  as alice sh -c "mkdir -p ~/$stage ~/tests && cat > ~/$stage/script.sh && chmod +x ~/$stage/script.sh" <"$tmp"
  rm -f "$tmp"
  # What OnDemand's basic template submits, reduced to its essence.
  as alice sh -c "printf '#!/bin/bash\ncd %s\n./script.sh\n' ~/$stage > ~/tests/ood-job.sh"
  job=$(submit alice "${args[@]}" ood-job.sh)
  wait_running "$job"
  for ((i = 0; i < 100; i++)); do
    step=$(bed exec scontrol -o show step "$job.0" 2>/dev/null) && [ -n "$step" ] && break
    sleep 0.2
  done
  # The step has the form's cores and GPU (the bed's Slurm allocates no memory: the
  # srun line's --mem is in the rendering test).
  assert_contains "$step" " CPUs=2 Tasks=1 "
  grep -qE ' TresPerStep=[^ ]*gpu[:=]1([, ]|$)' <<<"$step" || fail "the step has not the form's GPU: $step"
  wait_job "$job"
  out=$(job_output alice "$job")
  assert_eq "$(job_field "$job" JobState)" COMPLETED "$out"
  assert_line "$out" "TRE job $job in ghcr.io/mikej888/hello-tre:1.0 (project: proj1)"
  assert_line "$out" "/dev/nvidia0 "
  n=$(job_number alice "$job")
  [ -n "$n" ] || { fail "no outputs line: $out"; return 1; }
  # Told where the outputs went.
  assert_line "$out" "tre-spank session: files written to /safe_outputs are kept after the job in /home/alice/outputs-$n; /scratch is deleted at the end"
  assert_line "$out" "tre-spank: outputs: /home/alice/outputs-$n -> /safe_outputs (kept after the job)"
  assert_exists "/home/alice/outputs-$n/done.txt"
  assert_absent "/home/alice/scratch-$n"
  as alice rm -rf "$stage"
}

# Issue 18 (5): the RStudio Server app is NOT VERIFIED (no RStudio packages here), but
# it renders as OnDemand renders it, into valid shell, with the tre-spank options as
# native sbatch arguments, the form's resources on the step and the password off every
# command line.
test_ondemand_rstudio_app_renders_native_tre_options_and_the_steps_resources() {
  local d args f
  d=$(mktemp -d)
  command -v ruby >/dev/null || { fail "ruby is needed to render the OnDemand app (apt-get install ruby)"; return 1; }
  args=$(ruby "$ROOT_DIR/tests/integration/ondemand-render.rb" "$ROOT_DIR/examples/ondemand/tre-rstudio" "$d" \
    num_cores=3 memory_gb=6 tre_project=proj2)
  assert_contains "$args" "--cpus-per-task=3"
  assert_contains "$args" "--mem=6G"
  assert_line "$args" "--tre-batch=host"
  assert_line "$args" "--tre-env=RSTUDIO_PASSWORD"
  assert_line "$args" "--tre-project=proj2"
  [ -n "$(grep -x -- '--tre-container=.*' <<<"$args")" ] || fail "no --tre-container: $args"
  assert_contains "$(cat "$d/script.sh")" "exec srun --ntasks=1 --cpus-per-task=3 --mem=6G \\"
  assert_contains "$(cat "$d/script.sh")" "--server-working-dir=/safe_outputs"
  for f in "$d"/*.sh; do bash -n "$f" || fail "$(basename "$f") is not valid shell"; done
  # The password reaches rserver's helper by name only, never on a command line.
  assert_not_contains "$(grep -v '^ *#' "$d/script.sh" | grep -v 'RSTUDIO_PASSWORD')" '$password'
  args=$(ruby "$ROOT_DIR/tests/integration/ondemand-render.rb" "$ROOT_DIR/examples/ondemand/tre-rstudio" "$d" "tre_project=  ")
  assert_not_contains "$args" "--tre-project"
  rm -rf "$d"
}
