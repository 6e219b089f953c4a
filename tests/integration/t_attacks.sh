# Issue 5: an unprivileged attacker (alice, mallory) tries to make the plugin's root
# side delete, chown, create or expose what is not theirs. Every canary is checked for
# owner, mode and content (not just existence), and the node must stay idle.
# What needs privileges (a mount inside scratch, a hard link the kernel would refuse
# the user) is staged by the harness as root; docs/threat-model.md maps case -> test.

# The attack happens while this much of the job is left.
SLEEPER='echo kept > /safe_outputs/kept.txt; echo s > /scratch/s; i=0; while [ ! -e /scratch/.go ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done'

test_attack_scratch_swapped_for_a_symlink_to_a_root_dir_while_the_job_runs() {
  local job n before
  make_canary /root/canary-swap
  before=$(fingerprint /root/canary-swap)
  job=$(submit alice --tre-container=$IMAGE --wrap "$SLEEPER")
  wait_running "$job"
  n=$(wait_number alice "$job")
  # Once the container runs (it wrote /scratch/s): podman has mounted scratch already.
  for _ in $(seq 100); do bed exec test -e "/home/alice/scratch-$n/s" && break; sleep 0.2; done
  bed exec test -e "/home/alice/scratch-$n/s"
  as alice sh -c "mv scratch-$n moved-$n && ln -s /root/canary-swap scratch-$n && touch moved-$n/.go"
  wait_job "$job"
  assert_eq "$(job_field "$job" JobState)" COMPLETED
  assert_eq "$(fingerprint /root/canary-swap)" "$before" "the canary after the epilog"
  # The planted link is left as it was (root neither followed nor removed it).
  assert_eq "$(bed exec stat -c '%U %F' "/home/alice/scratch-$n")" "alice symbolic link"
  assert_eq "$(bed exec readlink "/home/alice/scratch-$n")" /root/canary-swap
  assert_eq "$(bed exec cat "/home/alice/outputs-$n/kept.txt")" kept
  assert_contains "$(slurmd_log)" "tre-spank: job $job: /home/alice/scratch-$n is not the directory this job created; left alone"
  assert_eq "$(bed exec sh -c "ls /var/spool/tre-spank | grep -c '^job-$job.toml\$' || true")" 0 "record left for job $job"
  assert_node_idle
  as alice rm -rf "scratch-$n" "moved-$n"
  drop_canary /root/canary-swap
}

test_attack_symlinks_inside_scratch_pointing_outside_are_unlinked_not_followed() {
  local job n before
  make_canary /root/canary-links
  before=$(fingerprint /root/canary-links)
  # From inside the container (its /root means the host's /root to the remover) and
  # from the host, as alice, while the job runs.
  job=$(submit alice --tre-container=$IMAGE --wrap "ln -s /root/canary-links /scratch/dir-link
    ln -s /root/canary-links/canary /scratch/file-link
    mkdir -p /scratch/a/b && ln -s /root/canary-links/sub /scratch/a/b/deep-link
    ln -s ../../../../../root/canary-links /scratch/a/rel-link
    $SLEEPER")
  wait_running "$job"
  n=$(wait_number alice "$job")
  as alice sh -c "ln -s /root/canary-links scratch-$n/host-link && ln -s / scratch-$n/slash && touch scratch-$n/.go"
  wait_job "$job"
  assert_eq "$(job_field "$job" JobState)" COMPLETED
  assert_eq "$(fingerprint /root/canary-links)" "$before" "the canary after the epilog"
  assert_absent "/home/alice/scratch-$n"
  assert_eq "$(bed exec stat -c '%U %a' /etc/passwd)" "root 644" "/etc/passwd (reachable via the / link)"
  assert_node_idle
  drop_canary /root/canary-links
}

test_attack_bind_mount_inside_scratch_is_not_crossed_and_the_node_stays_idle() {
  local job n before
  make_canary /root/canary-mount
  before=$(fingerprint /root/canary-mount)
  job=$(submit alice --tre-container=$IMAGE --wrap "mkdir /scratch/mnt; $SLEEPER")
  wait_running "$job"
  n=$(wait_number alice "$job")
  for _ in $(seq 50); do bed exec test -d "/home/alice/scratch-$n/mnt" && break; sleep 0.2; done
  # Only root can mount: the harness stages it (a bind mount of the same filesystem,
  # so the device number does not change at the mount point).
  bed exec mount --bind /root/canary-mount "/home/alice/scratch-$n/mnt"
  assert_eq "$(bed exec stat -c %d /root/canary-mount)" "$(bed exec stat -c %d "/home/alice/scratch-$n")" "device numbers (same filesystem)"
  as alice touch "scratch-$n/.go"
  wait_job "$job"
  assert_eq "$(job_field "$job" JobState)" COMPLETED
  assert_eq "$(job_field "$job" ExitCode)" 0:0
  assert_eq "$(fingerprint /root/canary-mount)" "$before" "the canary after the epilog"
  # What is left: scratch-N holding only the mount point, still mounted; logged.
  assert_eq "$(bed exec ls -A "/home/alice/scratch-$n")" mnt "what is left in scratch"
  bed exec mountpoint -q "/home/alice/scratch-$n/mnt"
  assert_contains "$(slurmd_log)" "tre-spank: job $job: scratch cleanup: could not remove 1 entries under /home/alice/scratch-$n (first: /home/alice/scratch-$n/mnt: a filesystem is mounted here; left in place)"
  assert_node_idle
  bed exec umount "/home/alice/scratch-$n/mnt"
  assert_eq "$(fingerprint /root/canary-mount)" "$before" "the canary after umount"
  as alice rm -rf "scratch-$n"
  bed exec rm -f "/var/spool/tre-spank/job-$job.toml"
  drop_canary /root/canary-mount
}

test_attack_hard_links_in_scratch_leave_their_targets_owner_mode_and_content() {
  local job n before protected
  protected=$(bed exec sysctl -n fs.protected_hardlinks)
  bed exec sh -c 'mkdir -p /var/tmp/hl && chmod 0755 /var/tmp/hl
    echo "root secret" > /var/tmp/hl/root-only && chmod 0600 /var/tmp/hl/root-only
    echo "root shared" > /var/tmp/hl/root-rw && chmod 0666 /var/tmp/hl/root-rw
    echo "setuid" > /var/tmp/hl/root-suid && chmod 4755 /var/tmp/hl/root-suid'
  as alice sh -c 'rm -f precious.txt && echo precious > precious.txt && chmod 0400 precious.txt'
  before=$(fingerprint /var/tmp/hl /home/alice/precious.txt)
  job=$(submit alice --tre-container=$IMAGE --wrap "$SLEEPER")
  wait_running "$job"
  n=$(wait_number alice "$job")
  # What the user may link: their own file, and (protected_hardlinks=1) a root file
  # they can read and write.
  as alice ln precious.txt "scratch-$n/own"
  as alice ln /var/tmp/hl/root-rw "scratch-$n/root-rw"
  if [ "$protected" = 1 ]; then
    ! as alice ln /var/tmp/hl/root-only "scratch-$n/x" 2>/dev/null || fail "the kernel let alice link a root-only file"
  fi
  # What only protected_hardlinks=0 would allow: staged by root.
  bed exec ln /var/tmp/hl/root-only "/home/alice/scratch-$n/root-only"
  bed exec ln /var/tmp/hl/root-suid "/home/alice/scratch-$n/root-suid"
  # The directory is alice's (root's own directories in scratch are not entered).
  as alice mkdir -p "scratch-$n/d"
  bed exec ln /var/tmp/hl/root-only "/home/alice/scratch-$n/d/again"
  assert_eq "$(bed exec stat -c %h /var/tmp/hl/root-only)" 3 "links to root-only while the job runs"
  as alice touch "scratch-$n/.go"
  wait_job "$job"
  assert_eq "$(job_field "$job" JobState)" COMPLETED
  assert_absent "/home/alice/scratch-$n"
  # Owner, mode, link count (back to 1), size and content of every target.
  assert_eq "$(fingerprint /var/tmp/hl /home/alice/precious.txt)" "$before" "hard-link targets"
  assert_eq "$(bed exec stat -c '%U:%G %a %h' /var/tmp/hl/root-only)" "root:root 600 1"
  assert_eq "$(bed exec stat -c '%U:%G %a %h' /var/tmp/hl/root-suid)" "root:root 4755 1"
  assert_node_idle
  bed exec rm -rf /var/tmp/hl
  as alice rm -f precious.txt
}

# Stage an entry at $HOME/<kind>-N before a held job starts (the harness computes N as
# root; a user cannot, the secret is root's), then release the job.
# held_job U: submit a held job as U; prints the job id.
held_job() { submit "$1" --hold --tre-container=$IMAGE --wrap 'echo CONTAINER STARTED > /safe_outputs/started'; }

# refused_collision U J N PATH: job J ran and failed on PATH, nothing adopted.
assert_collision_refused() {
  local user=$1 job=$2 n=$3 path=$4 out
  out=$(job_output "$user" "$job")
  assert_line "$out" "tre-spank: $path already exists; tre-spank never reuses a directory it did not create for this job"
  assert_not_contains "$out" "CONTAINER STARTED"
  assert_not_contains "$out" "Running:"
  assert_eq "$(job_field "$job" JobState)" FAILED
  [ "$(job_field "$job" ExitCode)" != 0:0 ] || fail "exit code 0:0"
  assert_eq "$(bed exec sh -c "ls /var/spool/tre-spank | grep -c '^job-$job.toml\$' || true")" 0 "record for job $job"
  assert_node_idle
}

test_attack_outputs_planted_as_a_symlink_before_the_job_is_refused_not_adopted() {
  local job n before
  make_canary /root/canary-outputs
  before=$(fingerprint /root/canary-outputs)
  job=$(held_job alice)
  n=$(number_of "$job")
  [[ $n =~ ^[0-9]{7}$ ]] || fail "tre-spank number printed '$n'"
  as alice ln -s /root/canary-outputs "outputs-$n"
  bed exec scontrol release "$job"
  wait_job "$job"
  assert_collision_refused alice "$job" "$n" "/home/alice/outputs-$n"
  assert_eq "$(job_number alice "$job")" "" "a NUMBER printed for a refused job"
  assert_eq "$(bed exec stat -c '%U %F' "/home/alice/outputs-$n")" "alice symbolic link"
  assert_eq "$(bed exec readlink "/home/alice/outputs-$n")" /root/canary-outputs
  assert_absent "/home/alice/scratch-$n"
  assert_eq "$(fingerprint /root/canary-outputs)" "$before" "the canary"
  as alice rm -f "outputs-$n"
  drop_canary /root/canary-outputs
}

test_attack_scratch_planted_before_the_job_is_refused_and_nothing_half_made() {
  local job n before
  job=$(held_job alice)
  n=$(number_of "$job")
  as alice sh -c "mkdir -m 0750 scratch-$n && echo mine > scratch-$n/mine.txt && chmod 0640 scratch-$n/mine.txt"
  before=$(fingerprint "/home/alice/scratch-$n")
  bed exec scontrol release "$job"
  wait_job "$job"
  assert_collision_refused alice "$job" "$n" "/home/alice/scratch-$n"
  # The planted directory is neither adopted nor removed; the new outputs went again.
  assert_eq "$(fingerprint "/home/alice/scratch-$n")" "$before" "the planted scratch"
  assert_absent "/home/alice/outputs-$n"
  as alice rm -rf "scratch-$n"
}

test_attack_number_colliding_with_an_older_jobs_outputs_fails_and_keeps_them() {
  local old old_n job n before
  old=$(run_job alice --tre-container=$IMAGE --wrap 'echo result > /safe_outputs/result.txt; mkdir /safe_outputs/sub; echo deep > /safe_outputs/sub/f')
  old_n=$(job_number alice "$old")
  job=$(held_job alice)
  n=$(number_of "$job")
  # The older job's outputs now carry the new job's NUMBER.
  as alice mv "outputs-$old_n" "outputs-$n"
  before=$(fingerprint "/home/alice/outputs-$n")
  bed exec scontrol release "$job"
  wait_job "$job"
  assert_collision_refused alice "$job" "$n" "/home/alice/outputs-$n"
  assert_eq "$(fingerprint "/home/alice/outputs-$n")" "$before" "the older job's outputs"
  assert_eq "$(bed exec cat "/home/alice/outputs-$n/result.txt")" result
  assert_absent "/home/alice/scratch-$n"
  as alice rm -rf "outputs-$n"
}

test_attack_number_of_another_users_directory_is_no_collision() {
  # NUMBERs are per job, directories per home: mallory planting outputs-N in her own
  # home changes nothing for alice's job N.
  local job n
  job=$(held_job alice)
  n=$(number_of "$job")
  as mallory mkdir "outputs-$n" "scratch-$n"
  bed exec scontrol release "$job"
  wait_job "$job"
  assert_eq "$(job_field "$job" JobState)" COMPLETED
  assert_eq "$(bed exec cat "/home/alice/outputs-$n/started")" "CONTAINER STARTED"
  assert_eq "$(bed exec stat -c '%U %a %h' "/home/mallory/outputs-$n" "/home/mallory/scratch-$n")" $'mallory 755 2\nmallory 755 2'
  assert_node_idle
  as mallory rmdir "outputs-$n" "scratch-$n"
}

test_attack_home_safe_data_linked_to_another_projects_data_stays_unreadable() {
  local job out before
  # mallory is in proj2; proj1's data is root:proj1 2770.
  before=$(job_dirs mallory)
  as mallory ln -s /safe_data/proj1 safe_data
  job=$(run_job mallory --tre-container=$IMAGE --wrap 'cat /safe_data/README.txt; echo CONTAINER STARTED')
  out=$(job_output mallory "$job")
  as mallory rm -f safe_data
  assert_line "$out" "Cannot open project data: /home/mallory/safe_data"
  assert_not_contains "$out" "data of proj1"
  assert_not_contains "$out" "CONTAINER STARTED"
  assert_eq "$(job_field "$job" JobState)" FAILED
  assert_eq "$(job_dirs mallory)" "$before" "directories made in mallory's home"
  assert_eq "$(bed exec stat -c '%U:%G %a' /safe_data/proj1 /safe_data/proj1/README.txt)" $'root:proj1 2770\nroot:proj1 640'
  assert_node_idle
}

test_attack_safe_data_with_a_link_inside_to_another_project_stays_unreadable() {
  local job out
  # A readable $HOME/safe_data holding a link to proj1: inside the container the link
  # names a container path, and the data is not mounted; as the user it is unreadable.
  as mallory sh -c 'mkdir safe_data && ln -s /safe_data/proj1/README.txt safe_data/other && ln -s /home/alice safe_data/alice'
  job=$(run_job mallory --tre-container=$IMAGE --wrap 'cat /safe_data/other; ls /safe_data/alice/; echo CONTAINER RAN')
  out=$(job_output mallory "$job")
  as mallory rm -rf safe_data
  assert_line "$out" "CONTAINER RAN"
  assert_not_contains "$out" "data of proj1"
  assert_not_contains "$out" ".bashrc"
  assert_node_idle
}

# tampered_step DESCRIPTION VALUE EXPECTED: a step inside a plain host job with a forged
# option variable, in the two forms that reach the plugin: the one a batch job passes
# on to its sruns (srun's own plugin checks it first) and the one srun hands to
# slurmstepd (set directly in the environment, it skips the client: slurmstepd checks).
tampered_step() {
  local value=$2 want=$3 var job out before
  for var in SLURM_SPANK__SLURM_SPANK_OPTION_tre_spank_tre_container _SLURM_SPANK_OPTION_tre_spank_tre_container; do
    before=$(job_dirs alice)
    as alice sh -c 'mkdir -p tests && printf "%s" "$1" > tests/forged-value' sh "$value"
    job=$(run_job alice --wrap "export $var=\"\$(cat forged-value)\"; srun sh -c 'echo STEP RAN: \$container'; echo \"srun rc=\$?\"")
    out=$(job_output alice "$job")
    assert_contains "$out" "$want"
    assert_not_contains "$out" "STEP RAN"
    assert_not_contains "$out" "Running:"
    assert_contains "$out" "srun rc="
    assert_not_contains "$out" "srun rc=0"
    assert_eq "$(job_field "$job" JobState)" COMPLETED "the host job itself ($1, $var)"
    assert_eq "$(job_dirs alice)" "$before" "alice's job directories ($1, $var)"
    assert_node_idle
  done
}

test_attack_forged_option_variable_with_dot_dot_is_refused() {
  tampered_step dotdot 'ghcr.io/../x' 'is malformed'
}

test_attack_forged_option_variable_with_a_newline_is_refused() {
  tampered_step newline $'ghcr.io/mikej888/hello-tre:1.0\n--privileged' 'control characters'
}

test_attack_forged_option_variable_over_4_kib_is_refused() {
  tampered_step long "ghcr.io/mikej888/$(printf 'a%.0s' $(seq 4100)):1.0" 'longer than 4096 bytes'
}

test_attack_forged_option_variable_that_is_not_utf8_is_refused() {
  tampered_step utf8 $'ghcr.io/mikej888/hello-tre:1.0\xff' 'not valid UTF-8'
}

test_attack_forged_option_variable_from_another_registry_is_refused() {
  tampered_step registry 'docker.io/library/busybox:latest' 'not from an allowed registry'
}

test_files_left_under_subordinate_uids_in_scratch_are_removed() {
  local job n owner
  job=$(submit alice --tre-container=$IMAGE --wrap '
    mkdir -p /scratch/d/e && echo x > /scratch/d/e/f && mkfifo /scratch/d/fifo
    chown -R 1234:1234 /scratch/d && chmod 000 /scratch/d/e /scratch/d/e/f /scratch/d
    touch /scratch/ready; '"$SLEEPER")
  wait_running "$job"
  n=$(wait_number alice "$job")
  for _ in $(seq 100); do bed exec test -e "/home/alice/scratch-$n/ready" && break; sleep 0.2; done
  owner=$(bed exec stat -c '%u %a' "/home/alice/scratch-$n/d")
  [ "${owner% *}" != 1001 ] && [ "${owner% *}" != 0 ] || fail "d is owned by ${owner% *}, not a subordinate uid"
  assert_eq "${owner#* }" 0 "mode of d"
  ! as alice rm -rf "scratch-$n/d" 2>/dev/null || fail "alice could remove the subordinate-owned tree herself"
  as alice touch "scratch-$n/.go"
  wait_job "$job"
  assert_eq "$(job_field "$job" JobState)" COMPLETED
  assert_absent "/home/alice/scratch-$n"
  assert_node_idle
}
