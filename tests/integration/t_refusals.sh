# Bad input is refused at submission, before anything is queued.

# refused U EXPECTED SBATCH-ARGS...: sbatch fails, prints EXPECTED, queues nothing.
refused() {
  local user=$1 want=$2 out rc; shift 2
  out=$(as "$user" sbatch --parsable -o /dev/null "$@" --wrap true 2>&1) && rc=0 || rc=$?
  [ "$rc" -ne 0 ] || fail "sbatch accepted: $* (job $out)"
  assert_contains "$out" "$want"
  assert_eq "$(bed exec squeue -h -u "$user")" "" "queue of $user"
}

test_unknown_runtime_is_refused_at_submission() {
  refused alice '--tre-runtime="docker" is not a runtime: use podman, apptainer or auto' --tre-container=$IMAGE --tre-runtime=docker
}

test_disallowed_registry_is_refused_at_submission() {
  refused alice 'image docker.io/library/ubuntu:22.04 is not from an allowed registry (allowed: ghcr.io/)' --tre-container=docker.io/library/ubuntu:22.04
}

test_malformed_image_is_refused_at_submission() {
  refused alice 'is malformed' --tre-container=ghcr.io/Org/../x
  refused alice 'must start with its registry' --tre-container=ubuntu
}

test_runtime_without_container_is_refused_at_submission() {
  refused alice '--tre-runtime only makes sense with --tre-container' --tre-runtime=podman
}

test_srun_refuses_bad_values_too() {
  local out rc
  out=$(as alice srun --tre-container= true 2>&1) && rc=0 || rc=$?
  [ "$rc" -ne 0 ] || fail "srun accepted an empty image"
  assert_contains "$out" "--tre-container needs a value"
}
