# The administrators' tool, run inside the bed as a site would (/usr/sbin/tre-spank,
# installed by `scripts/testbed install-plugin --tool`).

admin() { bed exec /usr/sbin/tre-spank "$@"; }

# put_file PATH TEXT: write TEXT to PATH inside the bed (as root).
put_file() { bed exec sh -c 'printf "%s" "$2" > "$1"' sh "$1" "$2"; }

test_check_passes_on_the_configured_node() {
  local out
  out=$(admin check)
  assert_contains "$out" "ok       runtime podman (/usr/bin/podman)"
  assert_contains "$out" "ok       safe_data_root /safe_data"
  assert_contains "$out" "ok       secret_file /etc/munge/munge.key readable"
  assert_line "$out" "all checks passed"
}

test_check_names_file_line_and_key_of_a_config_typo() {
  local out rc
  put_file /tmp/typo.toml $'safe_data = true\n[podman]\nnetwrk = "none"\n'
  out=$(admin check --config /tmp/typo.toml) && rc=0 || rc=$?
  assert_eq "$rc" 1 "exit status"
  assert_contains "$out" "PROBLEM  tre-spank: config /tmp/typo.toml line 3, key podman.netwrk: unknown field \`netwrk\`"
}

test_check_reports_a_missing_runtime_and_an_unsafe_state_dir() {
  local out rc
  bed exec install -d -m 0777 /tmp/open-state
  put_file /tmp/broken.toml $'state_dir = "/tmp/open-state"\n[podman]\npath = "/opt/none/podman"\n'
  out=$(admin check --config /tmp/broken.toml) && rc=0 || rc=$?
  assert_eq "$rc" 1 "exit status"
  assert_contains "$out" "PROBLEM  runtime podman (the default): podman is not installed on node"
  assert_contains "$out" "PROBLEM  state_dir /tmp/open-state has mode 0777"
  assert_line "$out" "2 problems"
}

test_check_applies_the_node_section_for_this_host() {
  local out host
  host=$(bed exec hostname)
  put_file /tmp/nodes.toml "$(printf '[[node]]\nnames = ["nomatch*"]\nsafe_data_root = "/x"\n[[node]]\nnames = ["%s"]\nsafe_data = false\n' "$host")"
  out=$(admin check --config /tmp/nodes.toml)
  assert_contains "$out" "node $host: [[node]] sections 2 apply"
  assert_contains "$out" "safe_data = false on this node"
}

test_plan_shows_project_mounts_and_command_without_running_anything() {
  local out before
  before=$(job_dirs alice)
  out=$(admin plan --user alice --container $IMAGE)
  assert_contains "$out" "project: proj1 via group proj1 ("
  assert_line "$out" "  /safe_data/proj1 -> /safe_data"
  assert_line "$out" "  /home/alice/outputs-N -> /safe_outputs"
  assert_line "$out" "  /home/alice/scratch-N -> /scratch"
  assert_contains "$out" "  Running: /usr/bin/podman --root=/var/lib/tre-spank/jobs/job-JOBID/storage "
  assert_contains "$out" "task command: /usr/sbin/tre-spank launch --image $IMAGE --runtime podman --user-namespace -- /usr/bin/podman "
  assert_eq "$(job_dirs alice)" "$before" "alice's directories"
}

# plan's error line is the one the job really fails with.
plan_error_matches_job() {  # plan_error_matches_job USER
  local user=$1 plan_line job
  plan_line=$(admin plan --user "$user" --container $IMAGE | sed -n 's/^job would fail with: //p') || true
  [ -n "$plan_line" ] || fail "plan did not predict a failure for $user"
  job=$(run_job "$user" --tre-container=$IMAGE --wrap true)
  assert_line "$(job_output "$user" "$job")" "$plan_line"
}

test_plan_predicts_the_exact_error_of_a_user_without_a_project() {
  plan_error_matches_job bob
}

test_plan_predicts_the_exact_error_of_a_user_with_several_projects() {
  plan_error_matches_job carol
}

test_plan_agrees_with_a_real_job_on_the_safe_data_line() {
  local job want got
  job=$(run_job dave --tre-container=$IMAGE --wrap true)
  want=$(job_output dave "$job" | grep '^tre-spank: safe data:')
  got=$(admin plan --user dave --container=$IMAGE | sed -n 's/^  \(tre-spank: safe data:.*\)/\1/p')
  assert_eq "$got" "$want"
}

test_plan_refuses_an_image_from_another_registry_like_sbatch() {
  local out rc
  out=$(admin plan --user alice --container docker.io/library/ubuntu:22.04) && rc=0 || rc=$?
  assert_eq "$rc" 1 "exit status"
  assert_line "$out" "job would fail with: tre-spank: --tre-container: image docker.io/library/ubuntu:22.04 is not from an allowed registry (allowed: ghcr.io/)"
}

# A leftover as a crashed node would leave it: a record naming alice's scratch
# directory (by device and inode), and a per-job runtime directory.
fake_leftover() {  # fake_leftover JOBID NUMBER
  local id=$1 n=$2 dev ino
  as alice sh -c "mkdir -m 0700 scratch-$n && echo x > scratch-$n/f"
  read -r dev ino < <(bed exec stat -c '%d %i' "/home/alice/scratch-$n")
  bed exec install -d -m 0700 /var/spool/tre-spank
  put_file "/var/spool/tre-spank/job-$id.toml" "$(printf 'job_id = %s\nuid = 1001\nnumber = %s\nhome = "/home/alice"\n[outputs]\ndev = 0\nino = 0\n[scratch]\ndev = %s\nino = %s\n' "$id" "$n" "$dev" "$ino")"
  bed exec install -d -m 0711 /var/lib/tre-spank/jobs
  bed exec install -d -m 0700 -o alice "/var/lib/tre-spank/jobs/job-$id"
}

test_sweep_removes_leftovers_of_jobs_that_no_longer_exist_and_keeps_live_ones() {
  local live n out
  fake_leftover 990001 4242001
  live=$(submit alice --tre-container=$IMAGE --wrap 'sleep 120')
  wait_running "$live"
  for _ in $(seq 50); do job_dirs alice | grep -q scratch- && bed exec test -e /var/spool/tre-spank/job-"$live".toml && break; sleep 0.2; done
  out=$(admin sweep)
  assert_contains "$out" "job 990001: removed /home/alice/scratch-4242001 (1 entries)"
  assert_contains "$out" "job 990001: removed /var/lib/tre-spank/jobs/job-990001"
  assert_absent /home/alice/scratch-4242001
  assert_absent /var/spool/tre-spank/job-990001.toml
  assert_absent /var/lib/tre-spank/jobs/job-990001
  assert_exists /var/spool/tre-spank/job-"$live".toml
  assert_exists /var/lib/tre-spank/jobs/job-"$live"
  bed exec scancel "$live"
  wait_job "$live"
}

test_sweep_leaves_a_directory_that_replaced_the_recorded_one() {
  local out
  fake_leftover 990002 4242002
  # Made while the original still exists, so it cannot reuse its inode number.
  as alice sh -c 'mv scratch-4242002 old-4242002 && mkdir scratch-4242002 && echo mine > scratch-4242002/keep && rm -r old-4242002'
  out=$(admin sweep 2>&1) || true
  assert_contains "$out" "job 990002:"
  assert_exists /home/alice/scratch-4242002/keep
  assert_absent /var/spool/tre-spank/job-990002.toml
  as alice rm -r scratch-4242002
}

test_a_node_section_for_this_host_applies_to_real_jobs() {
  local host job out
  host=$(bed exec hostname)
  with_config "$(printf '[[node]]\nnames = ["other*"]\npodman_network = "private"\n[[node]]\nnames = ["%s"]\nsafe_data = false\npodman_network = "none"\n' "$host")"
  job=$(run_job alice --tre-container=$IMAGE --wrap 'echo "safe=[$TRE_SAFE_DATA]"')
  out=$(job_output alice "$job")
  assert_contains "$out" "tre-spank: safe data: none"
  assert_contains "$out" " --network=none "
  assert_not_contains "$out" "/safe_data/proj1"
  assert_line "$out" "safe=[]"
}

test_a_config_typo_is_reported_with_file_line_and_key_at_submission() {
  local out rc
  with_config $'safe_data = true\n[podman]\nnetwrk = "none"\n'
  out=$(as alice sbatch --parsable -o /dev/null --tre-container=$IMAGE --wrap true 2>&1) && rc=0 || rc=$?
  [ "$rc" -ne 0 ] || fail "sbatch accepted a job under a broken config (job $out)"
  assert_contains "$out" "tre-spank: config /etc/slurm/tre-spank.toml line 3, key podman.netwrk: unknown field \`netwrk\`"
  assert_eq "$(bed exec squeue -h -u alice)" "" "queue of alice"
  # Jobs without a container are not affected.
  out=$(as alice srun true 2>&1) || fail "srun without a container failed: $out"
  assert_node_idle
}

# The plugstack configuration slurmd reads: slurm.conf's PlugStackConfig (here a
# non-default one, through SLURM_CONF as Slurm's commands take it) and its includes,
# not a fixed path.
test_the_tool_reads_the_plugstack_config_slurm_conf_names() {
  local out rc
  bed exec sh -c 'rm -rf /tmp/tre-alt && mkdir -p /tmp/tre-alt/inc &&
    grep -iv "^PlugStackConfig" /etc/slurm/slurm.conf > /tmp/tre-alt/slurm.conf &&
    echo PlugStackConfig=/tmp/tre-alt/plug.conf >> /tmp/tre-alt/slurm.conf &&
    echo "include inc/*.conf" > /tmp/tre-alt/plug.conf &&
    echo "required /usr/lib/slurm-tre/tre_spank.so config=/tmp/tre-alt/alt.toml safe_data=false" > /tmp/tre-alt/inc/x.conf &&
    echo "allowed_registries = [\"ghcr.io/mikej888/\"]" > /tmp/tre-alt/alt.toml'
  out=$(bed exec env SLURM_CONF=/tmp/tre-alt/slurm.conf /usr/sbin/tre-spank check)
  assert_contains "$out" "(plugin arguments from /tmp/tre-alt/inc/x.conf: config=/tmp/tre-alt/alt.toml safe_data=false)"
  assert_contains "$out" "ok       allowed registries: ghcr.io/mikej888/"
  assert_contains "$out" "ok       safe_data = false on this node"
  assert_contains "$out" "ok       config file /tmp/tre-alt/alt.toml (readable by users)"
  # Without SLURM_CONF: /etc/slurm/slurm.conf's (the bed's snippet in plugstack.conf.d).
  assert_contains "$(admin check)" "(plugin arguments from /etc/slurm/plugstack.conf.d/tre-spank.conf: "
  # No tre_spank.so line where slurmd looks: a problem (the plugin is not loaded).
  bed exec sh -c 'echo "# nothing" > /tmp/tre-alt/inc/x.conf'
  out=$(bed exec env SLURM_CONF=/tmp/tre-alt/slurm.conf /usr/sbin/tre-spank check) && rc=0 || rc=$?
  bed exec rm -rf /tmp/tre-alt
  assert_eq "$rc" 1 "exit status of check without a plugin line"
  assert_line "$out" "PROBLEM  no tre_spank.so line in /tmp/tre-alt/plug.conf (PlugStackConfig of /tmp/tre-alt/slurm.conf) or its includes: defaults: slurmd and the clients do not load the plugin here"
}
