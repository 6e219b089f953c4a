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
  # podman 4.3 (bookworm) does not read the variable at all: no attack to stop there.
  if [[ $out != *EXTRA-MOUNT* && $(bed exec podman --version) == "podman version 4."* ]]; then
    echo "$(bed exec podman --version) does not read CONTAINERS_CONF_OVERRIDE (the control mounted nothing)"
    exit 77
  fi
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
  # (A containers.conf.d file's volumes replace those of containers.conf: the two
  # files use different keys, so that the control shows each is read.)
  as alice sh -c 'mkdir -p ~/.config/containers/containers.conf.d
    printf "[containers]\nenv = [\"FROM_USER_CONF=yes\"]\n" > ~/.config/containers/containers.conf
    printf "[containers]\nvolumes = [\"/etc:/hostetc\"]\n" > ~/.config/containers/containers.conf.d/x.conf'
  out=$(control_podman alice podman run --rm --pull=never --cgroups=disabled "$IMAGE" \
    sh -c 'echo "from-user-conf=${FROM_USER_CONF:-no}"; test -e /hostetc/passwd && echo EXTRA-MOUNT')
  assert_line "$out" "from-user-conf=yes" || return 1
  assert_contains "$out" "EXTRA-MOUNT" || return 1
  out=$(as alice srun --tre-container=$IMAGE sh -c 'echo "from-user-conf=${FROM_USER_CONF:-no}"; test -e /hostetc && echo EXTRA-MOUNT; echo ran' 2>&1)
  assert_line "$out" "ran"
  assert_line "$out" "from-user-conf=no"
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
  # scripts/demo approves $IMAGE into the site store of the same bed (README: demo, then
  # the tests): take it out again, so the user's copy is the only one.
  # (`image list` prints podman's REPOSITORY and TAG columns.)
  in_site_store() { bed exec tre-spank image list | awk -v r="${IMAGE%:*}" -v t="${IMAGE##*:}" '$1 == r && $2 == t { n++ } END { exit !n }'; }
  if in_site_store; then
    bed exec tre-spank image remove "$IMAGE" > /dev/null
  fi
  ! in_site_store || fail "$IMAGE is still in the site store"
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

test_runtime_a_safe_data_link_to_a_read_only_project_is_read_only() {
  local job out
  with_config 'read_only_projects = ["proj1"]'
  as alice ln -sfn /safe_data/proj1 safe_data
  trap 'as alice rm -f safe_data; restore_config' EXIT
  job=$(run_job alice --tre-container=$IMAGE --wrap 'cat /safe_data/README.txt; touch /safe_data/x-$SLURM_JOB_ID 2>/dev/null && echo WROTE || echo READ-ONLY')
  out=$(job_output alice "$job")
  assert_contains "$out" "read-only ("
  assert_line "$out" "data of proj1"
  assert_line "$out" "READ-ONLY"
  assert_absent "/safe_data/proj1/x-$job"
  # A link to a project the site leaves writable stays writable (the rule is per
  # project, not "every link").
  with_config 'read_only_projects = ["proj2"]'
  trap 'as alice rm -f safe_data; restore_config' EXIT
  job=$(run_job alice --tre-container=$IMAGE --wrap 'touch /safe_data/x-$SLURM_JOB_ID 2>/dev/null && echo WROTE || echo READ-ONLY')
  assert_line "$(job_output alice "$job")" "WROTE"
  bed exec rm -f "/safe_data/proj1/x-$job"
}

test_runtime_a_config_others_can_write_is_refused_and_check_names_it() {
  local out job
  with_config ''
  bed exec chmod 0666 /etc/slurm/tre-spank.toml
  trap 'bed exec chmod 0644 /etc/slurm/tre-spank.toml; restore_config' EXIT
  out=$(bed exec tre-spank check 2>&1) && fail "check passed a world-writable config" || true
  assert_contains "$out" "refusing config /etc/slurm/tre-spank.toml: file /etc/slurm/tre-spank.toml is writable by everyone (mode 0666)"
  job=$(run_job alice --tre-container=$IMAGE --wrap 'echo STARTED')
  out=$(job_output alice "$job")
  assert_contains "$out" "refusing config /etc/slurm/tre-spank.toml"
  assert_not_contains "$out" "STARTED"
  assert_node_idle
  # A config owned by a user.
  bed exec sh -c 'chmod 0644 /etc/slurm/tre-spank.toml; chown alice /etc/slurm/tre-spank.toml'
  out=$(bed exec tre-spank check 2>&1) || true
  bed exec chown root /etc/slurm/tre-spank.toml
  assert_contains "$out" "is owned by uid $(bed exec id -u alice), not root"
}

# refused_file KEY PATH: with KEY = "PATH" in the config, check names PATH as not
# root's and a job fails naming it (and never starts).
refused_file() {
  local out job
  with_config "$1 = \"$2\""
  # shellcheck disable=SC2064 # the cleanup command is built now, on purpose
  trap "$CLEANUP" EXIT
  out=$(bed exec tre-spank check 2>&1) || true
  assert_contains "$out" "$1 $2: file $2 is owned by uid $(bed exec id -u alice), not root: jobs refuse it"
  job=$(run_job alice --tre-container=$IMAGE --wrap 'echo STARTED')
  out=$(job_output alice "$job")
  assert_contains "$out" "tre-spank: refusing $1 $2: file $2 is owned by uid"
  assert_not_contains "$out" "STARTED"
}

test_runtime_a_tool_path_or_secret_that_is_not_roots_is_refused() {
  CLEANUP='bed exec rm -f /usr/local/sbin/tre-spank-copy /etc/tre-secret-test; restore_config'
  bed exec sh -c 'cp -p /usr/sbin/tre-spank /usr/local/sbin/tre-spank-copy; chown alice /usr/local/sbin/tre-spank-copy
    head -c 32 /dev/urandom > /etc/tre-secret-test; chmod 0400 /etc/tre-secret-test; chown alice /etc/tre-secret-test'
  refused_file tool_path /usr/local/sbin/tre-spank-copy
  refused_file secret_file /etc/tre-secret-test
  assert_node_idle
}

# ---- apptainer (the sid bed: real apptainer 1.4, stand-in /dev/nvidia0 and 1)

need_apptainer_here() {
  bed exec test -x /usr/bin/apptainer && return 0
  echo "    apptainer is not installed in the $SUITE bed (only sid has it): not run here" >&2
  exit 77
}
SIF=/var/lib/tre-spank/sif/ghcr.io/mikej888/hello-tre_1.0.sif

test_runtime_apptainer_ignores_a_non_utf8_apptainer_bind() {
  need_apptainer_here
  local out
  # apptainer reads the 0xff of a bind source as U+FFFD: the twin directory with that
  # name makes the bind succeed (the variable's value still holds byte 0xff).
  TWIN='/home/alice/tre-\357\277\275'
  as alice sh -c 'mkdir -p "$(printf "'"$BAD_DIR"'")" "$(printf "'"$TWIN"'")"'
  trap 'as alice sh -c '\''rm -rf "$(printf "'"$BAD_DIR"'")" "$(printf "'"$TWIN"'")"'\''' EXIT
  out=$(as alice sh -c 'APPTAINER_BIND="/etc:/hostetc,$(printf "'"$BAD_DIR"'"):/x" \
    apptainer -s exec --userns '"$SIF"' sh -c "test -e /hostetc/passwd && echo EXTRA-MOUNT"' 2>&1)
  assert_contains "$out" "EXTRA-MOUNT" || return 1
  out=$(as alice sh -c 'export APPTAINER_BIND="/etc:/hostetc,$(printf "'"$BAD_DIR"'"):/x"
    export SINGULARITY_BIND="$APPTAINER_BIND" APPTAINERENV_INJECTED="$(printf "\377")"
    srun --tre-container='"$IMAGE"' --tre-runtime=apptainer sh -c "test -e /hostetc && echo EXTRA-MOUNT; echo injected=\${INJECTED:-no}; echo ran"' 2>&1)
  assert_line "$out" "ran"
  assert_line "$out" "injected=no"
  assert_not_contains "$(grep -v '^Running:' <<<"$out")" "EXTRA-MOUNT"
}

test_runtime_no_gpu_device_without_gpus_under_either_runtime() {
  local out conf=/etc/apptainer/apptainer.conf
  bed exec sh -c 'ls /dev/nvidia0 /dev/nvidia1' >/dev/null 2>&1 ||
    { echo "    the $SUITE bed has no stand-in /dev/nvidia* devices" >&2; exit 77; }
  out=$(as alice srun --tre-container=$IMAGE sh -c 'ls /dev/nvidia* 2>/dev/null; echo end' 2>&1)
  assert_eq "$(grep -v -e '^Running:' -e '^tre-spank:' -e '^INFO:' -e '^srun: ' <<<"$out")" "end" "podman"
  need_apptainer_here
  out=$(as alice srun --tre-container=$IMAGE --tre-runtime=apptainer sh -c 'ls /dev/nvidia* 2>/dev/null; echo end' 2>&1)
  assert_eq "$(grep -v -e '^Running:' -e '^tre-spank:' -e '^INFO:' -e '^srun: ' <<<"$out")" "end" "apptainer"
  # A site's apptainer.conf saying `always use nv = yes` does not bring them back.
  bed exec sh -c 'cp -p '"$conf"' '"$conf"'.t-runtime && sed -i "s/^always use nv = .*/always use nv = yes/" '"$conf"
  trap 'bed exec mv '"$conf"'.t-runtime '"$conf" EXIT
  # The control: with it, apptainer binds every /dev/nvidia* even without --nv.
  out=$(as alice apptainer -s exec --userns --contain "$SIF" sh -c 'ls /dev/nvidia*' 2>&1)
  assert_contains "$out" "/dev/nvidia1" || return 1
  out=$(as alice srun --tre-container=$IMAGE --tre-runtime=apptainer sh -c 'ls /dev/nvidia* 2>/dev/null; echo end' 2>&1)
  assert_eq "$(grep -v -e '^Running:' -e '^tre-spank:' -e '^INFO:' -e '^srun: ' <<<"$out")" "end" "apptainer with always use nv"
}

# Issue 14, point 6: apptainer gives what podman gives. Neither the host's /tmp and
# /var/tmp, nor the `bind path` entries of apptainer.conf, nor the node's /etc/localtime
# (which --contain alone still binds); /etc/hosts holds the node's entries, as podman's
# own copy of it does. A site adds host files with site_mounts, for both runtimes.
test_runtime_apptainer_gives_no_host_tmp_and_no_site_bind_paths() {
  need_apptainer_here
  local out rt conf=/etc/apptainer/apptainer.conf
  bed exec sh -c 'echo host > /tmp/tre-host-tmp-marker; echo host > /var/tmp/tre-host-vartmp-marker
    mkdir -p /opt/tre-site-bind && echo site > /opt/tre-site-bind/marker
    cp -p '"$conf"' '"$conf"'.t-runtime && echo "bind path = /opt/tre-site-bind" >> '"$conf"
  CLEANUP='bed exec sh -c "mv '"$conf"'.t-runtime '"$conf"'; rm -rf /tmp/tre-host-tmp-marker /var/tmp/tre-host-vartmp-marker /opt/tre-site-bind"'
  # shellcheck disable=SC2064 # the cleanup command is built now, on purpose
  trap "$CLEANUP" EXIT
  # The controls: apptainer's own defaults bring all three; --contain alone (what the
  # plugin passed before) still binds the node's /etc/hosts and /etc/localtime.
  out=$(as alice apptainer -s exec --userns "$SIF" sh -c 'cat /tmp/tre-host-tmp-marker /var/tmp/tre-host-vartmp-marker /opt/tre-site-bind/marker' 2>&1)
  assert_eq "$out" $'host\nhost\nsite' "apptainer outside Slurm" || return 1
  out=$(as alice apptainer -s exec --userns --contain "$SIF" sh -c 'grep -c -e " /etc/localtime " -e " /etc/hosts " /proc/self/mountinfo' 2>&1)
  assert_eq "$out" 2 "mounts of /etc/localtime and /etc/hosts under --contain" || return 1
  out=$(as alice srun --tre-container=$IMAGE --tre-runtime=apptainer sh -c '
    for f in /tmp/tre-host-tmp-marker /var/tmp/tre-host-vartmp-marker /opt/tre-site-bind/marker; do
      test -e $f && printf "S%sN %s\\n" EE $f; done
    grep -q " /etc/localtime " /proc/self/mountinfo && printf "LOCALTIME-%s\\n" MOUNTED
    grep -q " /etc/hosts ro," /proc/self/mountinfo && echo hosts-read-only
    cat /etc/hosts
    test -e /home/alice/.bashrc && echo home-mounted; echo end' 2>&1)
  assert_not_contains "$out" "SEEN"
  assert_not_contains "$out" "LOCALTIME-MOUNTED"
  assert_line "$out" "home-mounted"
  assert_line "$out" "end"
  # /etc/hosts: the node's entries (podman's copy has them too), bound read-only by
  # tre-spank itself, not by apptainer.conf.
  assert_line "$out" "$(bed exec grep tbnode /etc/hosts | head -n 1)"
  assert_line "$out" "hosts-read-only"
  assert_contains "$out" " --bind=/etc/hosts:/etc/hosts:ro "
  # The site's choice: the node's time zone file, read-only, under both runtimes.
  with_config 'site_mounts = ["/etc/localtime"]'
  # shellcheck disable=SC2064
  trap "restore_config; $CLEANUP" EXIT
  for rt in apptainer podman; do
    out=$(as alice srun --tre-container=$IMAGE --tre-runtime=$rt sh -c 'grep -q " /etc/localtime ro," /proc/self/mountinfo && echo localtime-read-only; echo end' 2>&1)
    assert_line "$out" "localtime-read-only"
  done
}

# A site mount the node lacks would fail every container job: check names it. An entry
# that overlaps what the container has of its own is refused with the key.
test_runtime_check_names_a_missing_or_overlapping_site_mount() {
  local out rc
  bed exec sh -c 'printf "%s\n" "site_mounts = [\"/etc/hosts\", \"/opt/tre-no-such-file\"]" > /tmp/site-mounts.toml'
  out=$(bed exec tre-spank check --config /tmp/site-mounts.toml) && rc=0 || rc=$?
  assert_eq "$rc" 1 "exit status"
  assert_contains "$out" "ok       site mount /etc/hosts (read-only in every container job)"
  assert_contains "$out" "PROBLEM  site mount /opt/tre-no-such-file: No such file or directory (os error 2) (container jobs on this node would fail)"
  bed exec sh -c 'printf "%s\n" "site_mounts = [\"/var/tmp\"]" > /tmp/site-mounts.toml'
  out=$(bed exec tre-spank check --config /tmp/site-mounts.toml) && rc=0 || rc=$?
  assert_eq "$rc" 1 "exit status"
  assert_contains "$out" 'PROBLEM  tre-spank: config /tmp/site-mounts.toml key site_mounts: "/var/tmp" overlaps /var/tmp, which the container has of its own'
}
