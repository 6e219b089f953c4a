# Issue 14 (points 3-5): what reaches the runtime. Nothing of the job's environment
# or of the user's own configuration changes what podman or apptainer mounts, reads or
# runs; jobs see approved images only unless the site turns the user's storage on.
# Each attack is first shown to work against the runtime run by the user outside
# Slurm (the control), so that a pass cannot come from an attack that does nothing.

# A directory in alice's home whose name holds the byte 0xff (not UTF-8).
BAD_DIR='/home/alice/tre-\377'

# control_podman U CMD...: the runtime run by U outside Slurm on the bed's image
# (U's own storage and configuration), then U's pause process ended.
control_podman() {
  local u=$1 uid out
  shift
  uid=$(bed exec id -u "$u")
  out=$(as "$u" "$@" 2>&1) || true
  bed exec sh -c 'p=$(cat /run/user/'"$uid"'/libpod/tmp/pause.pid 2>/dev/null) &&
    grep -q catatonit /proc/$p/cmdline 2>/dev/null && kill $p; true'
  printf '%s\n' "$out"
}

test_runtime_podman_ignores_a_non_utf8_containers_conf_override() {
  local out
  as alice sh -c 'd=$(printf "'"$BAD_DIR"'"); mkdir -p "$d"
    printf "[containers]\nvolumes = [\"/etc:/hostetc\"]\n" > "$d/o.conf"'
  trap 'as alice sh -c '\''rm -rf "$(printf "'"$BAD_DIR"'")"'\''' EXIT
  # The control: podman itself honours the variable, byte 0xff and all.
  out=$(control_podman alice sh -c 'CONTAINERS_CONF_OVERRIDE=$(printf "'"$BAD_DIR"'/o.conf") \
    podman run --rm --pull=never '"$IMAGE"' sh -c "test -e /hostetc/passwd && echo EXTRA-MOUNT"')
  assert_contains "$out" "EXTRA-MOUNT" || return 1
  out=$(as alice sh -c 'export CONTAINERS_CONF_OVERRIDE=$(printf "'"$BAD_DIR"'/o.conf")
    srun --tre-container='"$IMAGE"' sh -c "test -e /hostetc && echo EXTRA-MOUNT; echo ran"' 2>&1)
  assert_line "$out" "ran"
  assert_not_contains "$(grep -v '^Running:' <<<"$out")" "EXTRA-MOUNT"
}

test_runtime_podman_ignores_the_users_mounts_conf() {
  local out
  as alice sh -c 'mkdir -p ~/.config/containers && printf "/usr/share/doc:/hostdoc\n" > ~/.config/containers/mounts.conf'
  trap 'as alice rm -f .config/containers/mounts.conf' EXIT
  out=$(control_podman alice podman run --rm --pull=never "$IMAGE" sh -c 'test -e /hostdoc && echo EXTRA-MOUNT')
  assert_contains "$out" "EXTRA-MOUNT" || return 1
  out=$(as alice srun --tre-container=$IMAGE sh -c 'test -e /hostdoc && echo EXTRA-MOUNT; echo ran' 2>&1)
  assert_line "$out" "ran"
  assert_not_contains "$(grep -v '^Running:' <<<"$out")" "EXTRA-MOUNT"
}

test_runtime_podman_ignores_the_users_containers_conf_when_the_site_has_none() {
  local out
  bed exec mv /etc/containers/containers.conf /etc/containers/containers.conf.t-runtime
  trap 'bed exec mv /etc/containers/containers.conf.t-runtime /etc/containers/containers.conf
    as alice rm -rf .config/containers/containers.conf .config/containers/containers.conf.d' EXIT
  as alice sh -c 'mkdir -p ~/.config/containers/containers.conf.d
    printf "[containers]\nvolumes = [\"/etc:/hostetc\"]\n" > ~/.config/containers/containers.conf
    printf "[containers]\nvolumes = [\"/usr/share/doc:/hostdoc\"]\n" > ~/.config/containers/containers.conf.d/x.conf'
  out=$(control_podman alice podman run --rm --pull=never --cgroups=disabled "$IMAGE" \
    sh -c 'test -e /hostetc/passwd && echo EXTRA-MOUNT-1; test -e /hostdoc && echo EXTRA-MOUNT-2')
  assert_contains "$out" "EXTRA-MOUNT-1" || return 1
  out=$(as alice srun --tre-container=$IMAGE sh -c 'test -e /hostetc && echo EXTRA-MOUNT; test -e /hostdoc && echo EXTRA-MOUNT; echo ran' 2>&1)
  assert_line "$out" "ran"
  assert_not_contains "$(grep -v '^Running:' <<<"$out")" "EXTRA-MOUNT"
}

test_runtime_podman_gets_none_of_the_jobs_runtime_variables() {
  local out
  # Each would change what podman does (another podman service, a user storage
  # configuration, a preloaded library); the values hold a byte that is not UTF-8.
  out=$(as alice sh -c 'b=$(printf "\377")
    export CONTAINER_HOST="unix:///home/alice/$b.sock" CONTAINERS_STORAGE_CONF="/home/alice/$b.conf"
    export STORAGE_DRIVER="vfs$b" LD_PRELOAD="/home/alice/$b.so" XDG_CONFIG_HOME="/home/alice/$b"
    export CONTAINERS_REGISTRIES_CONF="/home/alice/$b" PODMAN_USERNS=host
    srun --tre-container='"$IMAGE"' sh -c "echo uid=\$(id -u); echo ran"' 2>&1)
  assert_line "$out" "ran"
  assert_line "$out" "uid=0"
  assert_not_contains "$out" "Error"
}

test_runtime_a_user_tagged_image_is_refused_by_default() {
  local out job
  # No user_image_store in the config: the default (approved images only). $IMAGE
  # exists only in alice's own storage (scripts/testbed images).
  with_exact_config ''
  assert_exists /home/alice/.local/share/containers/storage/overlay-images/images.json
  job=$(run_job alice --tre-container=$IMAGE --wrap 'echo STARTED')
  out=$(job_output alice "$job")
  assert_contains "$out" "tre-spank: image $IMAGE is not on this node"
  assert_not_contains "$out" "additionalimagestore=/home/alice"
  assert_not_contains "$out" "STARTED"
  assert_eq "$(job_field "$job" ExitCode)" 125:0
  # The site's opt-in brings the user's storage back.
  with_exact_config $'[podman]\nuser_image_store = true'
  job=$(run_job alice --tre-container=$IMAGE --wrap 'echo STARTED')
  assert_line "$(job_output alice "$job")" "STARTED"
}
