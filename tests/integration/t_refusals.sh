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

test_values_over_4_kib_are_refused_at_submission() {
  local long
  long="ghcr.io/org/$(head -c 5000 /dev/zero | tr '\0' a):1"
  refused alice "--tre-container value is longer than 4096 bytes" "--tre-container=$long"
}

test_non_utf8_values_are_refused_at_submission() {
  refused alice "--tre-container value is not valid UTF-8" "--tre-container=ghcr.io/org/$(printf '\xff'):1"
}

test_bad_values_in_the_environment_are_refused_on_the_node() {
  local out
  out=$(as alice env SLURM_SPANK__SLURM_SPANK_OPTION_tre_spank_tre_runtime=docker \
    srun --tre-container=$IMAGE echo STARTED 2>&1) || true
  assert_contains "$out" 'tre-spank: --tre-runtime="docker" is not a runtime: use podman, apptainer or auto'
  assert_not_contains "$out" "STARTED"
  assert_node_idle
}
