# The Open OnDemand example app (examples/ondemand/tre-container), rendered with Ruby's
# ERB as OnDemand renders it, and the resulting job submitted to the bed. Needs ruby on
# the host running the tests.

OOD_APP=$ROOT_DIR/examples/ondemand/tre-container

# ood_render OUT-SCRIPT key=value...: prints the sbatch arguments, one per line.
ood_render() {
  command -v ruby >/dev/null || { fail "ruby is needed to render the OnDemand app (apt-get install ruby)"; return 1; }
  ruby "$ROOT_DIR/tests/integration/ondemand-render.rb" "$OOD_APP" "$@"
}

test_ondemand_app_renders_the_tre_options_cores_memory_and_gpus() {
  local args tmp
  tmp=$(mktemp)
  args=$(ood_render "$tmp" tre_runtime=podman tre_project=proj2 num_cores=4 memory_gb=8 num_gpus=2)
  rm -f "$tmp"
  assert_line "$args" "--tre-container=ghcr.io/mikej888/hello-tre:1.0"
  assert_line "$args" "--tre-runtime=podman"
  assert_line "$args" "--tre-project=proj2"
  assert_line "$args" "--cpus-per-task=4"
  assert_line "$args" "--mem=8G"
  assert_line "$args" "--gpus=2"
  args=$(ood_render /dev/null)
  assert_not_contains "$args" "--tre-runtime"
  assert_not_contains "$args" "--tre-project"
  assert_not_contains "$args" "--gpus"
}

test_ondemand_app_job_runs_in_the_container() {
  local tmp job out n
  tmp=$(mktemp)
  mapfile -t args < <(ood_render "$tmp" tre_project=proj1 num_cores=1 memory_gb=1)
  [ "${#args[@]}" -gt 0 ] || fail "nothing rendered"
  as alice sh -c 'mkdir -p ~/tests && cat > ~/tests/ood-script.sh' <"$tmp"
  rm -f "$tmp"
  job=$(submit alice "${args[@]}" ood-script.sh)
  wait_job "$job"
  out=$(job_output alice "$job")
  assert_contains "$out" "TRE job $job in ghcr.io/mikej888/hello-tre:1.0 (project: proj1)"
  assert_eq "$(job_field "$job" JobState)" COMPLETED
  n=$(job_number alice "$job")
  assert_exists "/home/alice/outputs-$n/done.txt"
}
