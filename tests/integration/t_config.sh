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

# put_snippet LINE: the bed's plugstack snippet for the rest of the test (restored by
# restore_snippet, which also restarts slurmd when asked to).
put_snippet() {
  bed exec sh -c 's=/etc/slurm/plugstack.conf.d/tre-spank.conf
    [ -e $s.test-saved ] || cp -p $s $s.test-saved; printf "%s\n" "$1" > $s' sh "$1"
}
restore_snippet() {
  bed exec sh -c 's=/etc/slurm/plugstack.conf.d/tre-spank.conf
    [ ! -e $s.test-saved ] || mv $s.test-saved $s'
}

test_a_missing_named_config_fails_container_jobs_and_check_says_so() {
  local out rc job
  put_snippet 'required /usr/lib/slurm-tre/tre_spank.so config=/etc/slurm/tre-spank-absent.toml'
  trap restore_snippet EXIT
  out=$(bed exec /usr/sbin/tre-spank check) && rc=0 || rc=$?
  assert_eq "$rc" 1 "exit status of check"
  assert_contains "$out" "PROBLEM  tre-spank: config /etc/slurm/tre-spank-absent.toml (config= on the plugstack line) does not exist (container jobs fail with this message; jobs without --tre-container run as usual)"
  out=$(as alice sbatch --parsable -o /dev/null --tre-container=$IMAGE --wrap true 2>&1) && rc=0 || rc=$?
  [ "$rc" -ne 0 ] || fail "a container job was accepted with the named config missing"
  assert_contains "$out" "config /etc/slurm/tre-spank-absent.toml (config= on the plugstack line) does not exist"
  job=$(run_job alice --wrap 'echo plain job ran')
  assert_line "$(job_output alice "$job")" "plain job ran"
  restore_snippet
  # Unreadable by users: sbatch reads it as the submitting user.
  with_config 'allowed_registries = ["ghcr.io/"]'
  bed exec chmod 0600 /etc/slurm/tre-spank.toml
  out=$(bed exec /usr/sbin/tre-spank check) && rc=0 || rc=$?
  assert_eq "$rc" 1 "exit status of check"
  assert_contains "$out" "PROBLEM  config file /etc/slurm/tre-spank.toml has mode 0600: users cannot read it"
  out=$(as alice sbatch --parsable -o /dev/null --tre-container=$IMAGE --wrap true 2>&1) && rc=0 || rc=$?
  restore_config
  [ "$rc" -ne 0 ] || fail "a container job was accepted with an unreadable config"
  assert_contains "$out" "cannot read config /etc/slurm/tre-spank.toml: Permission denied"
}

# Configless Slurm distributes no files beside slurm.conf and plugstack.conf: no config
# file, every setting on the plugstack line, for slurmd (restarted) and the clients.
test_configless_every_setting_from_the_plugstack_line() {
  local out rc job
  with_config 'allowed_registries = ["ghcr.io/"]'
  bed exec rm -f /etc/slurm/tre-spank.toml
  # podman.user_image_store=true: the bed's test images are in the users' own storage.
  put_snippet 'required /usr/lib/slurm-tre/tre_spank.so safe_data=false allowed_registries=["ghcr.io/mikej888/"] podman.user_image_store=true'
  trap 'restore_snippet; restore_config; bed exec /opt/tre-testbed/bed restart_slurmd >/dev/null' EXIT
  bed exec /opt/tre-testbed/bed restart_slurmd >/dev/null
  out=$(bed exec /usr/sbin/tre-spank check)
  assert_contains "$out" "note     config file /etc/slurm/tre-spank.toml does not exist: the defaults and the plugstack arguments apply"
  assert_contains "$out" "ok       allowed registries: ghcr.io/mikej888/"
  job=$(run_job alice --tre-container=$IMAGE --wrap 'echo ran')
  assert_line "$(job_output alice "$job")" "tre-spank: safe data: none (this node has no project data)"
  assert_line "$(job_output alice "$job")" "ran"
  assert_eq "$(job_field "$job" JobState)" COMPLETED
  out=$(as alice sbatch --parsable -o /dev/null --tre-container=ghcr.io/otherorg/x:1 --wrap true 2>&1) && rc=0 || rc=$?
  [ "$rc" -ne 0 ] || fail "an image outside the plugstack line's allow-list was accepted"
  assert_contains "$out" "is not from an allowed registry (allowed: ghcr.io/mikej888/)"
}

# A real configless slurmd: slurmctld with enable_configless, slurm.conf without
# PlugStackConfig (so slurmd reads plugstack.conf from its config cache, /run/slurm/conf)
# and with a relative Include (slurmctld sends node.conf along),
# tbnode's slurmd started with --conf-server in a mount namespace where /etc/slurm holds
# only the package's plugstack.conf.d (no slurm.conf, no tre-spank.toml). The cached
# plugstack.conf includes /etc/slurm/plugstack.conf.d/*.conf, the node's own snippet.
# restart_slurmctld: SlurmctldParameters takes effect at slurmctld's start (Slurm 22.05
# ignores it on `scontrol reconfigure`); jobs and state survive (StateSaveLocation).
restart_slurmctld() {
  bed exec sh -c 'p=$(cat /run/slurmctld.pid) && kill "$p"
    for i in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    slurmctld && for i in $(seq 100); do scontrol ping >/dev/null 2>&1 && break; sleep 0.2; done'
}
configless_restore() {
  bed exec sh -c 'p=$(cat /run/slurmd.pid 2>/dev/null) && kill "$p"; sleep 1
    [ ! -e /etc/slurm/slurm.conf.test-saved ] || mv /etc/slurm/slurm.conf.test-saved /etc/slurm/slurm.conf' >/dev/null 2>&1 || true
  restart_slurmctld >/dev/null 2>&1 || true
  restore_snippet
  restore_config
  bed exec /opt/tre-testbed/bed restart_slurmd >/dev/null
}
test_a_real_configless_slurmd_takes_every_setting_from_the_plugstack_line() {
  local out job pid
  with_config 'allowed_registries = ["ghcr.io/"]'
  bed exec rm -f /etc/slurm/tre-spank.toml
  # podman.user_image_store=true: the bed's test images are in the users' own storage.
  put_snippet 'required /usr/lib/slurm-tre/tre_spank.so safe_data=false allowed_registries=["ghcr.io/mikej888/"] podman.user_image_store=true'
  trap configless_restore EXIT
  bed exec sh -c 'cp -p /etc/slurm/slurm.conf /etc/slurm/slurm.conf.test-saved &&
    sed -i -e "/^PlugStackConfig=/d" -e "s|^Include /etc/slurm/node.conf|Include node.conf|" /etc/slurm/slurm.conf &&
    echo SlurmctldParameters=enable_configless >> /etc/slurm/slurm.conf'
  restart_slurmctld
  bed exec sh -c 'kill "$(cat /run/slurmd.pid)"; for i in $(seq 50); do [ -e /run/slurmd.pid ] || break; sleep 0.1; done
    rm -rf /var/spool/slurmd/conf-cache /run/slurmd.pid; mkdir -p /run/tre-configless/orig
    setsid -f unshare -m --propagation private sh -c "mount --bind /etc/slurm /run/tre-configless/orig &&
      mount -t tmpfs tmpfs /etc/slurm && mkdir /etc/slurm/plugstack.conf.d &&
      mount --bind /run/tre-configless/orig/plugstack.conf.d /etc/slurm/plugstack.conf.d &&
      umount /run/tre-configless/orig && exec slurmd --conf-server tbnode" >/var/log/slurm/configless.log 2>&1'
  for _ in $(seq 300); do pid=$(bed exec cat /run/slurmd.pid 2>/dev/null) && [ "$(nodes_state)" = idle ] && break; sleep 0.2; done
  [ -n "$pid" ] || fail "the configless slurmd did not start: $(bed exec cat /var/log/slurm/configless.log)"
  # slurmd's view: no slurm.conf or config file of its own, the cache from slurmctld.
  bed exec nsenter -t "$pid" -m test ! -e /etc/slurm/slurm.conf
  bed exec nsenter -t "$pid" -m test ! -e /etc/slurm/tre-spank.toml
  bed exec nsenter -t "$pid" -m test -f /run/slurm/conf/plugstack.conf
  out=$(bed exec nsenter -t "$pid" -m /usr/sbin/tre-spank check)
  assert_contains "$out" "ok       slurm.conf /run/slurm/conf/slurm.conf: PlugStackConfig /run/slurm/conf/plugstack.conf"
  assert_contains "$out" "(plugin arguments from /etc/slurm/plugstack.conf.d/tre-spank.conf: safe_data=false allowed_registries=[\"ghcr.io/mikej888/\"] podman.user_image_store=true)"
  assert_contains "$out" "note     config file /etc/slurm/tre-spank.toml does not exist: the defaults and the plugstack arguments apply"
  job=$(run_job alice --tre-container=$IMAGE --wrap 'echo ran configless')
  assert_line "$(job_output alice "$job")" "tre-spank: safe data: none (this node has no project data)"
  assert_line "$(job_output alice "$job")" "ran configless"
  assert_eq "$(job_field "$job" JobState)" COMPLETED
  assert_eq "$(job_field "$job" BatchHost)" tbnode
}
