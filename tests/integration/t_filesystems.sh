# Issue 16, filesystems: whose directories root may empty, where a container's writes
# land (the writable layer, /dev/shm), and where scratch lives. Real jobs as real users;
# docs/threat-model.md ("Filesystems") maps each case to its test.

# The attack happens while this much of the job is left (as in t_attacks.sh).
FS_SLEEPER='echo s > /scratch/s; i=0; while [ ! -e /scratch/.go ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done'

# Issue 16 point 5 (review finding 7, "rename-in"): a group-writable tree of bob's that
# alice may rename is moved into her scratch while her job runs. Root must not empty
# it at job end (alice could not have), while her own files there go.
test_attack_another_users_tree_renamed_into_scratch_survives() {
  local job n before
  bed exec sh -c 'rm -rf /home/shared-rename && mkdir -m 0755 /home/shared-rename &&
    mkdir -m 2775 /home/shared-rename/run1 && mkdir -m 0755 /home/shared-rename/run1/raw &&
    echo "bob data" > /home/shared-rename/run1/raw/data && chmod 0644 /home/shared-rename/run1/raw/data &&
    chown -R bob:proj1 /home/shared-rename/run1 && chown alice:proj1 /home/shared-rename &&
    chmod 0775 /home/shared-rename'
  before=$(fingerprint /home/shared-rename/run1/raw)
  job=$(submit alice --tre-container=$IMAGE --wrap "mkdir -p /scratch/mine/deeper && echo m > /scratch/mine/deeper/f; $FS_SLEEPER")
  wait_running "$job"
  n=$(wait_number alice "$job")
  for _ in $(seq 100); do bed exec test -e "/home/alice/scratch-$n/s" && break; sleep 0.2; done
  # bob's tree, alice cannot empty it herself; a same-filesystem rename keeps its owner.
  ! as alice rm -rf /home/shared-rename/run1/raw 2>/dev/null || fail "alice could empty bob's raw/ herself"
  as alice mv /home/shared-rename/run1 "scratch-$n/run1"
  assert_eq "$(bed exec stat -c %U "/home/alice/scratch-$n/run1/raw")" bob "owner of raw/ after the rename"
  as alice touch "scratch-$n/.go"
  wait_job "$job"
  assert_eq "$(job_field "$job" JobState)" COMPLETED
  assert_eq "$(fingerprint "/home/alice/scratch-$n/run1/raw" | sed "s|/home/alice/scratch-$n/run1/raw|/home/shared-rename/run1/raw|")" "$before" "bob's raw/ after the epilog"
  assert_absent "/home/alice/scratch-$n/mine"
  assert_absent "/home/alice/scratch-$n/s"
  assert_eq "$(bed exec ls -A "/home/alice/scratch-$n")" run1 "what is left in scratch"
  assert_contains "$(slurmd_log)" "tre-spank: job $job: scratch cleanup: could not remove 1 entries under /home/alice/scratch-$n (first: /home/alice/scratch-$n/run1: a directory of uid 1002, not the job's user's; left in place)"
  assert_exists "/var/spool/tre-spank/job-$job.toml"
  assert_node_idle
  bed exec rm -rf "/home/alice/scratch-$n" /home/shared-rename "/var/spool/tre-spank/job-$job.toml"
}

# Point 7: the site put runtime_dir (the containers' writable layers) on its own
# filesystem, here a small tmpfs the harness mounts. A job writing more than that
# filesystem holds fails with "no space", and nothing else notices: the node stays
# idle, / and slurmd's spool keep their free space, and the next job completes.
test_a_container_filling_its_writable_layer_leaves_the_node_idle_and_the_next_job_runs() {
  local job next avail root_before root_after out
  bed exec sh -c 'mkdir -p /var/lib/tre-spank/jobs && ! mountpoint -q /var/lib/tre-spank/jobs &&
    mount -t tmpfs -o size=64m,mode=0711,uid=0,gid=0 tre-spank-jobs /var/lib/tre-spank/jobs'
  trap 'bed exec umount /var/lib/tre-spank/jobs' EXIT
  assert_contains "$(bed exec tre-spank check)" "ok       runtime_dir /var/lib/tre-spank/jobs is on its own filesystem (not / nor /var/spool/slurmd)"
  avail=$(bed exec df --output=avail -BM /var/lib/tre-spank/jobs | tail -n 1 | tr -dc 0-9)
  root_before=$(bed exec df --output=avail -BM / | tail -n 1 | tr -dc 0-9)
  # podman 4.3 (bookworm) used to hang at the container's exit with its storage full,
  # when its run root was on the same filesystem; the run root is on the job's own
  # tmpfs now, and every podman returns (no time limit needed).
  job=$(run_job alice --tre-container=$IMAGE --wrap "dd if=/dev/zero of=/root/fill bs=1M count=$((avail + 100)); echo dd=\$?; ls -l /root/fill")
  out=$(job_output alice "$job")
  assert_eq "$(job_field "$job" JobState)" COMPLETED "the filling job (podman returned)"
  assert_contains "$out" "No space left on device"
  assert_contains "$out" "dd=1"
  root_after=$(bed exec df --output=avail -BM / | tail -n 1 | tr -dc 0-9)
  [ $((root_before - root_after)) -lt 50 ] || fail "/ lost $((root_before - root_after)) MiB to the job"
  assert_absent "/var/lib/tre-spank/jobs/job-$job"
  assert_absent "/run/tre-spank/jobs/job-$job"
  assert_eq "$(bed exec sh -c 'ls -A /var/lib/tre-spank/jobs')" "" "runtime_dir after the epilog"
  assert_node_idle
  next=$(run_job alice --tre-container=$IMAGE --wrap 'echo next > /safe_outputs/next; echo NEXT-RAN')
  assert_eq "$(job_field "$next" JobState)" COMPLETED
  assert_contains "$(job_output alice "$next")" NEXT-RAN
  next=$(run_job bob --wrap 'echo plain')
  assert_eq "$(job_field "$next" JobState)" COMPLETED
  assert_node_idle
}

# Issue 17 (with issue 16 point 7): podman's run state is on a tmpfs of the job's own
# (run_dir/job-N, 16 MiB), and the container can write there: its /etc/hosts is a file
# of the run root. Writing more than the mount holds fails with "no space" inside the
# job; /run keeps its free space, the mount goes with the job, the node stays idle.
test_a_container_filling_its_run_state_is_bounded_by_the_jobs_tmpfs() {
  local job next out run_before run_after limit=()
  # podman 4.3 (bookworm) does not return at the container's exit when its run root is
  # full (docs/threat-model.md, "Knowingly left"): there the job ends at its time
  # limit, and the rest must still hold.
  [[ $(bed exec podman --version) != "podman version 4."* ]] || limit=(--time=1)
  run_before=$(bed exec df --output=avail -BK /run | tail -n 1 | tr -dc 0-9)
  job=$(run_job alice "${limit[@]}" --tre-container=$IMAGE --wrap 'df -k /etc/hosts | tail -n 1; dd if=/dev/zero of=/etc/hosts bs=1M count=64; echo dd=$?')
  out=$(job_output alice "$job")
  assert_contains "$out" "No space left on device"
  assert_contains "$out" "dd=1"
  # The filesystem under /etc/hosts is the job's 16 MiB tmpfs (16384 1K-blocks).
  assert_contains "$out" " 16384 "
  run_after=$(bed exec df --output=avail -BK /run | tail -n 1 | tr -dc 0-9)
  [ $((run_before - run_after)) -lt 1024 ] || fail "/run lost $((run_before - run_after)) KiB to the job"
  assert_absent "/run/tre-spank/jobs/job-$job"
  assert_absent "/var/lib/tre-spank/jobs/job-$job"
  assert_unmounted "/run/tre-spank/jobs/job-$job"
  assert_node_idle
  next=$(run_job alice --tre-container=$IMAGE --wrap 'echo NEXT-RAN')
  assert_eq "$(job_field "$next" JobState)" COMPLETED
  assert_contains "$(job_output alice "$next")" NEXT-RAN
}

# The default (runtime_dir on /) is what `check` warns about.
test_check_warns_when_runtime_dir_shares_the_root_filesystem() {
  bed exec sh -c '! mountpoint -q /var/lib/tre-spank/jobs' || fail "runtime_dir is a mount point in this bed"
  assert_contains "$(bed exec tre-spank check)" "WARNING  runtime_dir /var/lib/tre-spank/jobs shares a filesystem with / and Slurm's spool /var/spool/slurmd: a container writing to its / or /tmp can fill it and drain the node"
}

# Point 8: /dev/shm in the container is podman.shm_size (default 1g), not podman's
# 64 MiB: a data loader's 100 MiB in /dev/shm fits.
test_dev_shm_in_the_container_has_the_sites_size() {
  local job out
  job=$(run_job alice --tre-container=$IMAGE --wrap 'df -k /dev/shm | tail -n 1; dd if=/dev/zero of=/dev/shm/x bs=1M count=100 && echo SHM-100M-OK')
  out=$(job_output alice "$job")
  assert_eq "$(job_field "$job" JobState)" COMPLETED
  assert_eq "$(awk '$1 == "shm" {print $2}' <<<"$out")" 1048576 "/dev/shm size in KiB (default 1g)"
  assert_contains "$out" SHM-100M-OK
  with_config $'[podman]\nshm_size = "256m"'
  job=$(run_job alice --tre-container=$IMAGE --wrap 'df -k /dev/shm | tail -n 1')
  assert_eq "$(awk '$1 == "shm" {print $2}' <<<"$(job_output alice "$job")")" 262144 "/dev/shm size in KiB (256m)"
  assert_node_idle
}

# Point 10: scratch on node-local disk (`scratch_root`, a sticky world-writable
# directory like /tmp): scratch-N is made as the user in <scratch_root>/<user>, holds
# the job's /scratch, and goes at job end; outputs stay in $HOME.
test_scratch_root_on_node_local_disk_holds_scratch_and_is_cleaned() {
  local job n out
  bed exec sh -c 'rm -rf /var/tmp/tre-scratch && mkdir -m 1777 /var/tmp/tre-scratch'
  with_config 'scratch_root = "/var/tmp/tre-scratch"'
  assert_contains "$(bed exec tre-spank check)" "ok       scratch_root /var/tmp/tre-scratch (root, mode 1777): scratch-N in /var/tmp/tre-scratch/<user>"
  bed exec chmod 0777 /var/tmp/tre-scratch
  assert_contains "$(bed exec tre-spank check)" "PROBLEM  scratch_root /var/tmp/tre-scratch has mode 0777: writable by others but not sticky"
  bed exec chmod 1777 /var/tmp/tre-scratch
  job=$(submit alice --tre-container=$IMAGE --wrap "echo in-scratch > /scratch/f; echo out > /safe_outputs/o; $FS_SLEEPER")
  wait_running "$job"
  n=$(wait_number alice "$job")
  for _ in $(seq 100); do bed exec test -e "/var/tmp/tre-scratch/alice/scratch-$n/s" && break; sleep 0.2; done
  assert_eq "$(bed exec cat "/var/tmp/tre-scratch/alice/scratch-$n/f")" in-scratch "scratch content on node-local disk"
  assert_eq "$(bed exec stat -c '%U %a' /var/tmp/tre-scratch/alice)" "alice 700" "the user's directory in the scratch root"
  assert_eq "$(bed exec stat -c '%U %a' "/var/tmp/tre-scratch/alice/scratch-$n")" "alice 700"
  assert_absent "/home/alice/scratch-$n"
  as alice touch "/var/tmp/tre-scratch/alice/scratch-$n/.go"
  wait_job "$job"
  out=$(job_output alice "$job")
  assert_eq "$(job_field "$job" JobState)" COMPLETED
  assert_contains "$out" "/var/tmp/tre-scratch/alice/scratch-$n"
  assert_absent "/var/tmp/tre-scratch/alice/scratch-$n"
  assert_eq "$(bed exec cat "/home/alice/outputs-$n/o")" out "outputs in \$HOME"
  assert_contains "$(slurmd_log)" "tre-spank: job $job: removed /var/tmp/tre-scratch/alice/scratch-$n"
  assert_absent "/var/spool/tre-spank/job-$job.toml"
  assert_node_idle
  bed exec rm -rf /var/tmp/tre-scratch
}

# The same safety rules there: another user's link (or directory) under the job user's
# name in a shared scratch root is refused, nothing made through it, no outputs left.
test_scratch_root_entry_planted_by_another_user_is_refused() {
  local job out before_dave before_alice
  before_dave=$(job_dirs dave)
  before_alice=$(job_dirs alice)
  bed exec sh -c 'rm -rf /var/tmp/tre-scratch && mkdir -m 1777 /var/tmp/tre-scratch'
  as mallory sh -c 'rm -rf trap && mkdir trap && chmod 0777 trap && ln -s "$HOME/trap" /var/tmp/tre-scratch/dave && mkdir /var/tmp/tre-scratch/alice'
  with_config 'scratch_root = "/var/tmp/tre-scratch"'
  job=$(run_job dave --tre-container=$IMAGE --wrap 'echo CONTAINER-RAN')
  out=$(job_output dave "$job")
  assert_contains "$out" "tre-spank: /var/tmp/tre-scratch/dave is not a directory of the job's user; scratch is not made there"
  assert_not_contains "$out" CONTAINER-RAN
  assert_eq "$(bed exec sh -c 'ls -A /home/mallory/trap')" "" "mallory's trap"
  assert_no_new_job_dirs dave "$before_dave"
  job=$(run_job alice --tre-container=$IMAGE --wrap 'echo CONTAINER-RAN')
  out=$(job_output alice "$job")
  assert_contains "$out" "tre-spank: /var/tmp/tre-scratch/alice is not a directory of the job's user; scratch is not made there"
  assert_not_contains "$out" CONTAINER-RAN
  assert_no_new_job_dirs alice "$before_alice"
  assert_eq "$(bed exec sh -c 'ls -A /var/tmp/tre-scratch/alice')" "" "mallory's directory under alice's name"
  assert_node_idle
  bed exec rm -rf /var/tmp/tre-scratch /home/mallory/trap
}

# Point 6, root-squashed homes (NFS/GPFS with root_squash; these kernels have no NFS):
# tests/rootsquash-fs, a FUSE passthrough that runs every request as its caller and
# treats uid 0 as nobody, mounted over the bed's /home for the rest of the test.
ROOTSQUASH_BIN="$ROOT_DIR/target/rootsquash-fs/release/rootsquash-fs"
# rootsquash_home [MS]: MS, each unlink and rmdir there takes at least MS milliseconds.
rootsquash_home() {
  local delay=${1:-0}
  bed exec test -c /dev/fuse || { echo "SKIP: the bed has no /dev/fuse" >&2; exit 77; }
  # Built every time (a no-op when nothing changed): a cached binary may be older than its source.
  (cd "$ROOT_DIR/tests/rootsquash-fs" && CARGO_TARGET_DIR="$ROOT_DIR/target/rootsquash-fs" \
    cargo build --release --locked -q) || fail "cannot build tests/rootsquash-fs"
  bed exec sh -c 'cat > /usr/local/sbin/rootsquash-fs && chmod 0755 /usr/local/sbin/rootsquash-fs' < "$ROOTSQUASH_BIN"
  bed exec sh -c '! mountpoint -q /home && { ROOTSQUASH_FS_REMOVE_DELAY_MS=$1 setsid /usr/local/sbin/rootsquash-fs /home > /var/log/rootsquash-fs.log 2>&1 < /dev/null & }' sh "$delay"
  trap 'bed exec umount /home; restore_config' EXIT
  for _ in $(seq 50); do bed exec mountpoint -q /home && break; sleep 0.1; done
  bed exec mountpoint -q /home || fail "rootsquash-fs did not mount over /home"
  # Root is nobody there now: it cannot even list alice's 0700 home.
  ! bed exec ls /home/alice > /dev/null 2>&1 || fail "root can read /home/alice: not squashed"
  as alice test -r .bashrc || fail "alice cannot read her own home through rootsquash-fs"
}

# With scratch on node-local disk (scratch_root), a root-squashed home works: the
# directories in $HOME are created as the user, the container writes outputs there,
# and the epilog (root) never needs the home: scratch goes, the record goes.
test_rootsquash_home_with_scratch_root_runs_and_cleans_up() {
  local job n out
  bed exec sh -c 'rm -rf /var/tmp/tre-scratch && mkdir -m 1777 /var/tmp/tre-scratch'
  with_config 'scratch_root = "/var/tmp/tre-scratch"'
  rootsquash_home
  job=$(run_job alice --tre-container=$IMAGE --wrap 'echo out > /safe_outputs/o; echo s > /scratch/s; ls -ld /safe_outputs; echo RAN')
  out=$(job_output alice "$job")
  assert_eq "$(job_field "$job" JobState)" COMPLETED "job state ($out)"
  assert_contains "$out" RAN
  n=$(job_number alice "$job")
  [ -n "$n" ] || fail "no NUMBER in the output: $out"
  assert_eq "$(as alice cat "outputs-$n/o")" out "outputs on the squashed home"
  assert_eq "$(as alice stat -c '%U %a' "outputs-$n")" "alice 700"
  assert_absent "/var/tmp/tre-scratch/alice/scratch-$n"
  assert_absent "/var/spool/tre-spank/job-$job.toml"
  assert_node_idle
  bed exec rm -rf /var/tmp/tre-scratch
}

# On the squashed home root is nobody: `bed exec test -e` there is false for anything
# under a 0700 home, so presence is checked as the user (who sees her own home).
rs_exists() { as alice test -e "$1" || fail "$1 does not exist (seen as alice)"; }
rs_absent() {
  as alice test -r .bashrc || fail "alice cannot read her own home: the check would prove nothing"
  ! as alice test -e "$1" || fail "$1 exists (seen as alice)"
}
# rs_wait_absent PATH [SECONDS]: as alice, until PATH is gone.
rs_wait_absent() {
  local i
  for ((i = 0; i < ${2:-30} * 5; i++)); do
    as alice test -e "$1" || break
    sleep 0.2
  done
  rs_absent "$1"
}
# The epilog's line for a scratch removed as the user (root was refused).
rs_removed_line() { echo "job $1: removed /home/alice/scratch-$2 ([0-9]* entries, as the user: root is refused there)"; }

# Scratch in a squashed $HOME goes at the end of a batch job: root is refused, the
# removal runs as alice (her read-only directory included), outputs stay, the record
# goes, the node stays idle.
test_rootsquash_home_scratch_in_home_is_removed_as_the_user_after_a_batch_job() {
  local job n out
  rootsquash_home
  job=$(run_job alice --tre-container=$IMAGE --wrap 'echo out > /safe_outputs/o; mkdir -p /scratch/a/b && echo s > /scratch/a/b/s && chmod 500 /scratch/a; echo RAN')
  out=$(job_output alice "$job")
  assert_eq "$(job_field "$job" JobState)" COMPLETED "job state ($out)"
  n=$(job_number alice "$job")
  [ -n "$n" ] || fail "no NUMBER in the output: $out"
  assert_eq "$(as alice cat "outputs-$n/o")" out "outputs on the squashed home"
  rs_wait_absent "scratch-$n"
  grep -q "tre-spank: $(rs_removed_line "$job" "$n")" <<<"$(slurmd_log)" || fail "no removal as the user in slurmd's log: $(slurmd_log | grep "job $job" | tail -n 3)"
  assert_absent "/var/spool/tre-spank/job-$job.toml"
  assert_node_idle
  as alice rm -rf "outputs-$n"
}

# The same for a job that is one srun (no batch script).
test_rootsquash_home_scratch_of_an_srun_job_is_removed_as_the_user() {
  local out n
  rootsquash_home
  out=$(as alice srun --tre-container=$IMAGE sh -c 'mkdir /scratch/d && echo s > /scratch/d/s && echo SRUN-RAN' 2>&1)
  assert_contains "$out" SRUN-RAN
  n=$(sed -n 's|^tre-spank: outputs: .*/outputs-\([0-9]*\) .*|\1|p' <<<"$out" | head -n 1)
  [ -n "$n" ] || fail "no NUMBER in srun's output: $out"
  rs_wait_absent "scratch-$n"
  grep -q "tre-spank: job [0-9]*: removed /home/alice/scratch-$n ([0-9]* entries, as the user: root is refused there)" <<<"$(slurmd_log)" || fail "no removal as the user in slurmd's log"
  rs_exists "outputs-$n"
  assert_node_idle
  as alice rm -rf "outputs-$n"
}

# A container leaves a tree under a subordinate uid of alice's (its user `app`, uid 1000
# inside; a squashing server refuses the container root's chown, so a process of that
# uid writes it): alice cannot remove it herself, the epilog removes it as that uid,
# in a user namespace mapping alice's range (mode 000 and 500 directories, a FIFO).
test_rootsquash_home_files_a_container_left_under_subordinate_uids_are_removed() {
  local job n sub
  rootsquash_home
  sub=$(bed exec awk -F: '$1 == "alice" {print $2 + 999}' /etc/subuid)
  job=$(submit alice --tre-container=$IMAGE --wrap 'chmod 0755 /scratch && mkdir -m 0777 /scratch/pub &&
    su app -c "mkdir -p /scratch/pub/d/e && echo x > /scratch/pub/d/e/f && mkfifo /scratch/pub/d/fifo && chmod 000 /scratch/pub/d/e && chmod 500 /scratch/pub/d" &&
    touch /scratch/ready; '"$FS_SLEEPER")
  wait_running "$job"
  n=$(wait_number alice "$job")
  for _ in $(seq 100); do as alice test -e "scratch-$n/ready" && break; sleep 0.2; done
  rs_exists "scratch-$n/ready"
  assert_eq "$(as alice stat -c '%u %a' "scratch-$n/pub/d")" "$sub 500" "owner and mode of pub/d"
  ! as alice rm -rf "scratch-$n/pub/d" 2>/dev/null || fail "alice could remove the subordinate-owned tree herself"
  as alice touch "scratch-$n/.go"
  wait_job "$job"
  assert_eq "$(job_field "$job" JobState)" COMPLETED
  rs_wait_absent "scratch-$n"
  grep -q "tre-spank: $(rs_removed_line "$job" "$n")" <<<"$(slurmd_log)" || fail "no removal as the user in slurmd's log: $(slurmd_log | grep "job $job" | tail -n 3)"
  assert_absent "/var/spool/tre-spank/job-$job.toml"
  assert_node_idle
  as alice rm -rf "outputs-$n"
}

# Links in scratch on the squashed home are unlinked, never followed: one to a tree of
# alice's own (which she, and so the remover as her, could delete), one to root's file.
test_rootsquash_home_symlinks_in_scratch_are_not_followed() {
  local job n
  bed exec sh -c 'mkdir -p /var/tmp/rs-root && echo root-data > /var/tmp/rs-root/canary && chmod 0644 /var/tmp/rs-root/canary'
  rootsquash_home
  as alice sh -c 'rm -rf keep && mkdir -p keep/sub && echo mine > keep/sub/f'
  job=$(submit alice --tre-container=$IMAGE --wrap "$FS_SLEEPER")
  wait_running "$job"
  n=$(wait_number alice "$job")
  for _ in $(seq 100); do as alice test -e "scratch-$n/s" && break; sleep 0.2; done
  as alice sh -c "ln -s \$HOME/keep scratch-$n/to-mine && ln -s /var/tmp/rs-root scratch-$n/to-root && ln -s /var/tmp/rs-root/canary scratch-$n/to-canary && touch scratch-$n/.go"
  wait_job "$job"
  assert_eq "$(job_field "$job" JobState)" COMPLETED
  rs_wait_absent "scratch-$n"
  grep -q "tre-spank: $(rs_removed_line "$job" "$n")" <<<"$(slurmd_log)" || fail "no removal as the user in slurmd's log"
  assert_eq "$(as alice cat keep/sub/f)" mine "alice's tree behind a link"
  assert_eq "$(bed exec cat /var/tmp/rs-root/canary)" root-data "root's file behind a link"
  assert_node_idle
  as alice rm -rf keep "outputs-$n"
  bed exec rm -rf /var/tmp/rs-root
}

# Another user's tree renamed into scratch on the squashed home survives: the remover
# (as alice and her subordinate uids only) does not enter bob's directory, says so,
# and keeps the record; alice's own files there go.
test_rootsquash_home_another_users_tree_renamed_into_scratch_survives() {
  local job n
  bed exec sh -c 'rm -rf /home/shared-rename && mkdir -m 0755 /home/shared-rename &&
    mkdir -m 2775 /home/shared-rename/run1 && mkdir -m 0755 /home/shared-rename/run1/raw &&
    echo "bob data" > /home/shared-rename/run1/raw/data && chmod 0644 /home/shared-rename/run1/raw/data &&
    chown -R bob:proj1 /home/shared-rename/run1 && chown alice:proj1 /home/shared-rename &&
    chmod 0775 /home/shared-rename'
  rootsquash_home
  # bob's tree is reachable by root only once /home is root's again.
  trap 'bed exec umount /home; bed exec sh -c "rm -rf /home/alice/scratch-* /home/shared-rename"; restore_config' EXIT
  job=$(submit alice --tre-container=$IMAGE --wrap "mkdir -p /scratch/mine/deeper && echo m > /scratch/mine/deeper/f; $FS_SLEEPER")
  wait_running "$job"
  n=$(wait_number alice "$job")
  for _ in $(seq 100); do as alice test -e "scratch-$n/s" && break; sleep 0.2; done
  as alice mv /home/shared-rename/run1 "scratch-$n/run1"
  assert_eq "$(as alice stat -c %U "scratch-$n/run1/raw")" bob "owner of raw/ after the rename"
  as alice touch "scratch-$n/.go"
  wait_job "$job"
  assert_eq "$(job_field "$job" JobState)" COMPLETED
  for _ in $(seq 50); do as alice test -e "scratch-$n/mine" || break; sleep 0.2; done
  assert_eq "$(as alice cat "scratch-$n/run1/raw/data")" "bob data" "bob's data after the epilog"
  assert_eq "$(as alice ls -A "scratch-$n")" run1 "what is left in scratch"
  assert_contains "$(slurmd_log)" "tre-spank: job $job: scratch cleanup: root is refused (cannot open home directory /home/alice: EACCES: Permission denied); as the user: could not remove 1 entries under /home/alice/scratch-$n (first: /home/alice/scratch-$n/run1: a directory of a uid outside the user's ranges, not the job's user's; left in place)"
  assert_exists "/var/spool/tre-spank/job-$job.toml"
  assert_node_idle
  bed exec rm -f "/var/spool/tre-spank/job-$job.toml"
  as alice rm -rf "outputs-$n"
}

# Fault: a squashed scratch too big for the epilog's budget is finished in the
# background, as the user; the node never drains.
test_rootsquash_home_removal_past_the_epilog_budget_goes_on_in_the_background() {
  local job n
  with_config $'[cleanup]\nepilog_budget = 1'
  # 3000 removals of at least 1 ms each: past the 1 s budget on any machine.
  rootsquash_home 1
  job=$(run_job alice --tre-container=$IMAGE --wrap 'mkdir /scratch/many && cd /scratch/many && seq 3000 | xargs touch && echo made')
  n=$(number_of "$job")
  assert_eq "$(job_field "$job" JobState)" COMPLETED "$(job_output alice "$job")"
  assert_contains "$(slurmd_log)" "tre-spank: job $job: cleanup still running after 1s (cleanup.epilog_budget): it goes on in the background"
  for _ in $(seq 50); do [ "$(node_state)" = idle ] && break; sleep 0.2; done
  assert_node_idle
  rs_wait_absent "scratch-$n" 180
  wait_absent "/var/spool/tre-spank/job-$job.toml"
  grep -q "info: $(rs_removed_line "$job" "$n")" <<<"$(cleanup_log)" || fail "no removal as the user in the cleanup log"
  assert_node_idle
  as alice rm -rf "outputs-$n"
}

# The sweep at slurmd start uses the same path: the leftovers of a job the controller
# no longer knows, in a squashed home, are removed as the user.
test_rootsquash_home_sweep_at_slurmd_start_removes_as_the_user() {
  local before dev ino
  rootsquash_home
  as alice sh -c "rm -rf scratch-9000005 && mkdir -m 700 scratch-9000005 && mkdir scratch-9000005/d && touch scratch-9000005/d/x"
  read -r dev ino < <(as alice stat -c "%d %i" scratch-9000005)
  bed exec sh -c "umask 077; printf 'job_id = 4000005\nuid = %s\nnumber = 9000005\nhome = \"/home/alice\"\n\n[outputs]\ndev = %s\nino = %s\n\n[scratch]\ndev = %s\nino = %s\n' \"\$(id -u alice)\" $dev $ino $dev $ino > /var/spool/tre-spank/job-4000005.toml"
  before=$(sweeps_done)
  restart_slurmd
  wait_sweep "$before"
  rs_wait_absent scratch-9000005
  assert_absent /var/spool/tre-spank/job-4000005.toml
  grep -q "info: job 4000005: removed /home/alice/scratch-9000005 ([0-9]* entries, as the user: root is refused there)" <<<"$(cleanup_log)" || fail "no removal as the user in the sweep's log"
  assert_node_idle
}

# A job over both nodes (partition multi) on a squashed home: tbnode2's slurmd has its
# own mount namespace, so it gets its own rootsquash-fs over the same homes (two NFS
# clients of one export). The shared scratch goes once, as the user, after the last
# node is done.
test_rootsquash_home_scratch_of_a_two_node_job_is_removed_as_the_user() {
  local out job n logs
  rootsquash_home
  on_node tbnode2 sh -c '! mountpoint -q /home && { setsid /usr/local/sbin/rootsquash-fs /home > /var/log/rootsquash-fs2.log 2>&1 < /dev/null & }'
  trap 'on_node tbnode2 umount /home; bed exec umount /home; restore_config' EXIT
  for _ in $(seq 50); do on_node tbnode2 mountpoint -q /home && break; sleep 0.1; done
  on_node tbnode2 mountpoint -q /home || fail "rootsquash-fs did not mount over tbnode2's /home"
  ! on_node tbnode2 ls /home/alice > /dev/null 2>&1 || fail "root can read /home/alice on tbnode2: not squashed"
  out=$(as alice srun -p multi -N2 --tre-container=$IMAGE sh -c \
    'mkdir -p "/scratch/$SLURMD_NODENAME/d" && echo x > "/scratch/$SLURMD_NODENAME/d/f"; echo "job=$SLURM_JOB_ID on $SLURMD_NODENAME"' 2>&1)
  job=$(sed -n 's/^job=\([0-9]*\) on tbnode$/\1/p' <<<"$out")
  [ -n "$job" ] || fail "no job id in the output: $out"
  assert_line "$out" "job=$job on tbnode2"
  n=$(number_of "$job")
  rs_wait_absent "scratch-$n" 60
  for _ in $(seq 50); do
    logs=$(slurmd_log; node_slurmd_log tbnode2; cleanup_log; cleanup_log tbnode2)
    grep -q "$(rs_removed_line "$job" "$n")" <<<"$logs" && break
    sleep 0.2
  done
  grep -q "$(rs_removed_line "$job" "$n")" <<<"$logs" || fail "no removal as the user in either node's logs: $(grep "job $job" <<<"$logs" | tail -n 4)"
  assert_eq "$(job_field "$job" JobState)" COMPLETED
  # The other node's record goes once it hears from the controller that the job ended.
  wait_absent "/var/spool/tre-spank/job-$job.toml" tbnode 30
  wait_absent "/var/spool/tre-spank/job-$job.toml" tbnode2 30
  assert_nodes_idle
  as alice rm -rf "outputs-$n"
}
