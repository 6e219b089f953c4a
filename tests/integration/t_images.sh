# Issue 9: images on the nodes. Root puts approved images into the site store with
# `tre-spank image`; jobs read them from there with per-job node-local podman state.
# erin and frank are users no other test uses, whose own podman storage stays empty.

STORE=/var/lib/tre-spank/test-images
STORE_IMAGE=ghcr.io/tre-approved/hello-store:1.0
ARCHIVES=/var/tmp/tre-images-test
STORE_CONFIG="[podman]
image_stores = [\"$STORE\"]"

# store_users: erin and frank exist (useradd fills /etc/subuid), members of project
# proj1, with no podman storage.
store_users() {
  local changed i
  changed=$(bed exec sh -c 'for u in erin frank; do
    id -u "$u" >/dev/null 2>&1 || { useradd -m -U -G proj1 -s /bin/bash "$u"; echo "$u"; }
    id -nG "$u" | grep -qw proj1 || { usermod -aG proj1 "$u"; echo "$u"; }; done')
  if [ -n "$changed" ]; then
    # Slurm caches users' groups: a reconfigure makes it read them again.
    bed exec scontrol reconfigure
    for ((i = 0; i < 150; i++)); do
      bed exec scontrol ping >/dev/null 2>&1 && [ "$(node_state)" = idle ] && break
      sleep 0.2
    done
  fi
  for u in erin frank; do
    assert_absent "/home/$u/.local/share/containers" || return 1
  done
}

# make_archives: what `podman save` writes (docker-archive and oci-archive) of the
# bed's busybox image, built by root in a scratch storage that is removed afterwards.
make_archives() {
  bed exec sh -c 'd=$1 named=$2; [ -f "$d/docker.tar" ] && [ -f "$d/oci.tar" ] && [ -f "$d/named.tar" ] && exit 0
    rm -rf "$d"; mkdir -p "$d"
    set -- podman --root="$d/storage" --runroot="$d/run" --storage-driver=overlay
    "$@" import -q --change "CMD [\"/bin/sh\",\"-c\",\"echo hello from the approved image\"]" \
      --change "ENV PATH=/bin" /opt/tre-testbed/tre-image.tar localhost/build/hello:1 >/dev/null
    "$@" save -q -o "$d/docker.tar" localhost/build/hello:1
    "$@" save -q --format oci-archive -o "$d/oci.tar" localhost/build/hello:1
    # Another image carrying the name of an approved one.
    "$@" import -q --change "ENV PATH=/bin" --change "ENV OTHER=1" /opt/tre-testbed/tre-image.tar "$named" >/dev/null
    "$@" save -q -o "$d/named.tar" "$named"
    "$@" rmi -a -f >/dev/null 2>&1 || true
    rm -rf "$d/storage" "$d/run"' sh "$ARCHIVES" "$STORE_IMAGE"
}

# store_ready: the test config, users, and the approved image in the store.
store_ready() {
  with_config "$STORE_CONFIG"
  store_users
  make_archives
  bed exec tre-spank image list | grep -q "^ghcr.io/tre-approved/hello-store *1.0 " ||
    bed exec tre-spank image load --archive "$ARCHIVES/docker.tar" "$STORE_IMAGE" >/dev/null
}

# no_processes_of U: nothing of U runs, not even podman's pause process.
no_processes_of() {
  local left i
  for ((i = 0; i < 50; i++)); do
    left=$(bed exec ps -u "$1" -o pid=,args= | grep -v '^ *[0-9]* ps ' || true)
    [ -z "$left" ] && return 0
    sleep 0.2
  done
  fail "processes of $1 left:"$'\n'"$left"
}

test_images_admin_loads_an_archive_and_jobs_run_it_with_the_users_own_storage_empty() {
  local out job n list
  with_config "$STORE_CONFIG"
  store_users
  make_archives
  bed exec sh -c "tre-spank image remove $STORE_IMAGE >/dev/null 2>&1 || true"
  out=$(bed exec tre-spank image load --archive "$ARCHIVES/docker.tar" "$STORE_IMAGE")
  assert_contains "$out" "loaded $STORE_IMAGE (image "
  assert_contains "$out" ") into the podman store $STORE"
  list=$(bed exec tre-spank image list)
  assert_contains "$list" "podman store $STORE:"
  grep -q "^ghcr.io/tre-approved/hello-store *1.0 " <<<"$list" || fail "not listed: $list"
  # The archive's own name is not kept: the store holds approved references only.
  assert_not_contains "$list" "localhost/build"
  # Root's, readable by all, writable by root only, no set-id bits.
  assert_eq "$(bed exec stat -c '%U %a' "$STORE")" "root 755"
  assert_eq "$(bed exec find "$STORE" ! -type l \( -perm /022 -o -perm /6000 \) -print)" "" "group/other-writable or set-id entries"
  job=$(run_job erin --tre-container=$STORE_IMAGE --wrap 'id -u; echo made > /safe_outputs/made.txt; echo hello-from-the-store')
  out=$(job_output erin "$job")
  n=$(job_number erin "$job")
  assert_eq "$(job_field "$job" ExitCode)" 0:0 "exit code; output: $out"
  assert_line "$out" "0"
  assert_line "$out" "hello-from-the-store"
  assert_contains "$out" "--storage-opt=additionalimagestore=$STORE "
  assert_contains "$out" "--storage-opt=overlay.mount_program=/usr/bin/fuse-overlayfs"
  # erin never ran podman: her own storage is left out (podman would refuse a missing
  # store) and stays absent.
  assert_not_contains "$out" "additionalimagestore=/home/erin"
  assert_absent /home/erin/.local/share/containers
  assert_eq "$(bed exec stat -c %U "/home/erin/outputs-$n/made.txt")" erin "owner of the output"
  assert_absent "/var/lib/tre-spank/jobs/job-$job"
  no_processes_of erin
  # An archive carrying the name of an image already in the store, loaded under
  # another name, does not take that name away from it.
  local id_before
  id_before=$(bed exec tre-spank image list | awk '$1 == "ghcr.io/tre-approved/hello-store" {print $4}')
  [ -n "$id_before" ] || fail "no image ID in the list"
  bed exec tre-spank image load --archive "$ARCHIVES/named.tar" ghcr.io/tre-approved/other:1 >/dev/null
  list=$(bed exec tre-spank image list)
  assert_eq "$(awk '$1 == "ghcr.io/tre-approved/hello-store" {print $4}' <<<"$list")" "$id_before" "image ID of $STORE_IMAGE"
  grep -q "^ghcr.io/tre-approved/other *1 " <<<"$list" || fail "other:1 not listed: $list"
  bed exec tre-spank image remove ghcr.io/tre-approved/other:1 >/dev/null
  # The OCI form of the archive loads too, under another approved name; remove works.
  out=$(bed exec tre-spank image load --archive "$ARCHIVES/oci.tar" ghcr.io/tre-approved/hello-oci:2.0)
  assert_contains "$out" "loaded ghcr.io/tre-approved/hello-oci:2.0 (image "
  job=$(run_job frank --tre-container=ghcr.io/tre-approved/hello-oci:2.0 --wrap 'echo oci-ok')
  assert_line "$(job_output frank "$job")" "oci-ok"
  assert_eq "$(bed exec tre-spank image remove ghcr.io/tre-approved/hello-oci:2.0)" \
    "removed ghcr.io/tre-approved/hello-oci:2.0 from the podman store $STORE"
  assert_not_contains "$(bed exec tre-spank image list)" "hello-oci"
  out=$(bed exec tre-spank image remove ghcr.io/tre-approved/hello-oci:2.0 2>&1) && fail "removed twice" || true
  assert_eq "$out" "tre-spank: image remove: image ghcr.io/tre-approved/hello-oci:2.0 is not in the podman store $STORE"
}

test_images_admin_command_enforces_the_jobs_allow_list_and_refuses_what_is_not_an_image() {
  local out rc
  store_ready
  out=$(bed exec tre-spank image load --archive "$ARCHIVES/docker.tar" docker.io/library/busybox:1 2>&1) && rc=0 || rc=$?
  assert_eq "$rc" 1
  assert_eq "$out" "tre-spank: image load: image docker.io/library/busybox:1 is not from an allowed registry (allowed: ghcr.io/)"
  out=$(bed exec tre-spank image pull docker.io/library/busybox:1 2>&1) && rc=0 || rc=$?
  assert_eq "$rc" 1
  assert_contains "$out" "is not from an allowed registry"
  out=$(bed exec tre-spank image load --archive "$ARCHIVES/docker.tar" 'ghcr.io/Bad/Name:1' 2>&1) && rc=0 || rc=$?
  assert_eq "$rc" 1
  assert_contains "$out" "tre-spank: image load: image reference \"ghcr.io/Bad/Name:1\" is malformed"
  # A root filesystem tar is not an image archive.
  out=$(bed exec tre-spank image load --archive /opt/tre-testbed/tre-image.tar ghcr.io/tre-approved/x:1 2>&1) && rc=0 || rc=$?
  assert_eq "$rc" 1
  assert_eq "$out" "tre-spank: image load: /opt/tre-testbed/tre-image.tar is neither an image archive (docker-archive or oci-archive tar, as \`podman save\` writes) nor a SIF file"
  # No registry is reachable from the bed: the pull fails with podman's own reason.
  out=$(bed exec tre-spank image pull ghcr.io/tre-approved/unreachable:1 2>&1) && rc=0 || rc=$?
  assert_eq "$rc" 1
  assert_contains "$out" "tre-spank: image pull: /usr/bin/podman --root=$STORE --runroot=/run/tre-spank/image-store --storage-driver=overlay pull --quiet docker://ghcr.io/tre-approved/unreachable:1 failed"
  # Users cannot use it.
  out=$(as erin /usr/sbin/tre-spank image list 2>&1) && rc=0 || rc=$?
  assert_eq "$rc" 2
  assert_eq "$out" "tre-spank: image list: only root manages the site image stores"
  # Nothing unapproved got in.
  assert_not_contains "$(bed exec tre-spank image list)" "docker.io"
}

test_images_job_whose_image_is_not_in_the_store_fails_naming_the_image_and_the_store() {
  local job out
  with_config "$STORE_CONFIG
user_image_store = false"
  store_users
  make_archives
  bed exec tre-spank image list | grep -q hello-store ||
    bed exec tre-spank image load --archive "$ARCHIVES/docker.tar" "$STORE_IMAGE" >/dev/null
  job=$(run_job erin --tre-container=ghcr.io/tre-approved/not-loaded:1.0 --wrap 'echo STARTED')
  out=$(job_output erin "$job")
  assert_contains "$out" "tre-spank: image ghcr.io/tre-approved/not-loaded:1.0 is not on this node: images reach the nodes only through the site's approved process, and jobs never pull (looked in $STORE; ask your TRE administrators to approve it)"
  assert_not_contains "$out" "STARTED"
  assert_eq "$(job_field "$job" ExitCode)" 125:0
  # alice's own images are not used when the site turns the user's storage off.
  job=$(run_job alice --tre-container=$IMAGE --wrap 'echo STARTED')
  out=$(job_output alice "$job")
  assert_contains "$out" "tre-spank: image $IMAGE is not on this node"
  assert_contains "$out" "(looked in $STORE;"
  assert_not_contains "$out" "STARTED"
  assert_absent "/var/lib/tre-spank/jobs/job-$job"
  no_processes_of erin
}

test_images_jobs_never_write_the_store() {
  local before job out
  store_ready
  before=$(fingerprint "$STORE")
  # Inside: the image's own files change in the job's layer only.
  job=$(run_job erin --tre-container=$STORE_IMAGE --wrap 'echo changed >> /etc/passwd && echo x > /bin/new-file && rm /bin/cat && echo inside-ok')
  out=$(job_output erin "$job")
  assert_line "$out" "inside-ok"
  # On the host, from a job without a container: the store is not erin's to write.
  job=$(run_job erin --wrap "touch $STORE/x 2>&1; echo y >> $STORE/overlay-images/images.json 2>&1; mkdir $STORE/overlay/x 2>&1; echo host-done")
  out=$(job_output erin "$job")
  assert_contains "$out" "touch: cannot touch '$STORE/x': Permission denied"
  assert_contains "$out" "Permission denied"
  assert_line "$out" "host-done"
  assert_eq "$(fingerprint "$STORE")" "$before" "the store after the jobs"
  # The image is still whole for the next job.
  job=$(run_job erin --tre-container=$STORE_IMAGE --wrap 'cat /etc/passwd; ls /bin/cat')
  out=$(job_output erin "$job")
  assert_not_contains "$out" "changed"
  assert_line "$out" "/bin/cat"
}

test_images_per_job_state_goes_after_the_job_after_scancel_and_after_the_sweep() {
  local job p before
  store_ready
  # After the job.
  job=$(run_job erin --tre-container=$STORE_IMAGE --wrap 'echo ran')
  assert_line "$(job_output erin "$job")" "ran"
  assert_absent "/var/lib/tre-spank/jobs/job-$job"
  no_processes_of erin
  # After scancel: the state existed while the job ran (with the container's layer).
  job=$(submit erin --tre-container=$STORE_IMAGE --wrap 'echo started; sleep 300')
  wait_running "$job"
  for _ in $(seq 100); do job_output erin "$job" 2>/dev/null | grep -q '^started$' && break; sleep 0.2; done
  bed exec test -d "/var/lib/tre-spank/jobs/job-$job/storage/overlay-containers"
  assert_eq "$(bed exec stat -c '%U %a' "/var/lib/tre-spank/jobs/job-$job")" "erin 700"
  bed exec pgrep -u erin -x conmon >/dev/null || fail "no conmon while the job runs"
  bed exec scancel "$job"
  wait_job "$job"
  assert_absent "/var/lib/tre-spank/jobs/job-$job"
  no_processes_of erin
  # After the sweep: the job's slurmstepd and processes die without an epilog.
  job=$(submit erin --tre-container=$STORE_IMAGE --wrap 'echo started; sleep 300')
  wait_running "$job"
  for _ in $(seq 100); do job_output erin "$job" 2>/dev/null | grep -q '^started$' && break; sleep 0.2; done
  bed exec test -d "/var/lib/tre-spank/jobs/job-$job/storage"
  p=$(bed exec cat /run/slurmd.pid)
  bed exec kill "$p"
  for _ in $(seq 100); do bed exec kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  for p in $(pids_of_stepd "$job"); do bed exec kill -KILL "$p"; done
  for p in $(bed exec ps -u erin -o pid=); do bed exec kill -KILL "$p" 2>/dev/null || true; done
  bed exec test -d "/var/lib/tre-spank/jobs/job-$job/storage"
  before=$(sweeps_done)
  restart_slurmd
  wait_sweep "$before"
  # The controller still runs the job: the sweep keeps its state, the job's end (its
  # epilog) removes it.
  assert_contains "$(cleanup_log)" "info: sweep: job $job kept: it is RUNNING on tbnode"
  bed exec test -d "/var/lib/tre-spank/jobs/job-$job/storage"
  bed exec scancel "$job"
  wait_job "$job"
  assert_absent "/var/lib/tre-spank/jobs/job-$job"
  no_processes_of erin
  for _ in $(seq 50); do [ "$(node_state)" = idle ] && break; sleep 0.2; done
  assert_node_idle
}

test_images_many_jobs_of_two_users_at_once_run_from_the_store_without_lock_contention() {
  local jobs=() j out s e last_start first_end u
  store_ready
  # tbnode has 2 CPUs; partition debug (OverSubscribe=YES) lets up to 8 jobs that ask
  # for it (--oversubscribe) share them.
  local script='echo "start $SLURM_JOB_ID"; for i in 1 2 3 4 5; do echo "$SLURM_JOB_ID-$i" >> /safe_outputs/lines; echo "$SLURM_JOB_ID-$i" > /scratch/s-$i; done; sleep 8; cat /safe_outputs/lines; cat /scratch/s-5; echo "end $SLURM_JOB_ID"'
  for _ in 1 2 3 4 5 6; do jobs+=("erin:$(submit erin --oversubscribe --tre-container=$STORE_IMAGE --wrap "$script")"); done
  for _ in 1 2; do jobs+=("frank:$(submit frank --oversubscribe --tre-container=$STORE_IMAGE --wrap "$script")"); done
  for j in "${jobs[@]}"; do wait_job "${j#*:}"; done
  last_start=0 first_end=99999999999
  for j in "${jobs[@]}"; do
    u=${j%%:*} j=${j#*:}
    out=$(job_output "$u" "$j")
    assert_eq "$(job_field "$j" JobState)" COMPLETED "job $j of $u; output: $out"
    assert_eq "$(job_field "$j" ExitCode)" 0:0 "job $j"
    assert_line "$out" "start $j"
    assert_line "$out" "end $j"
    for i in 1 2 3 4 5; do assert_line "$out" "$j-$i"; done
    # Each job's outputs hold its own lines only, intact.
    assert_eq "$(grep -c -- "-[1-5]$" <<<"$out")" 6 "lines in job $j's output"
    for bad in "database is locked" "locked" "lock" "Error" "error"; do
      assert_not_contains "$out" "$bad"
    done
    s=$(bed exec date -d "$(job_field "$j" StartTime)" +%s)
    e=$(bed exec date -d "$(job_field "$j" EndTime)" +%s)
    ((s > last_start)) && last_start=$s
    ((e < first_end)) && first_end=$e
    assert_absent "/var/lib/tre-spank/jobs/job-$j"
  done
  # They really ran at once: the last started before the first ended.
  ((last_start < first_end)) || fail "the jobs did not overlap (last start $last_start, first end $first_end)"
  no_processes_of erin
  no_processes_of frank
  assert_node_idle
}

test_images_admin_loads_a_sif_for_apptainer_and_jobs_run_it() {
  local out job sif digest=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
  bed exec test -x /usr/bin/apptainer || { echo "apptainer is not installed in the $SUITE bed (only sid has it)"; exit 77; }
  store_ready
  sif=/var/lib/tre-spank/sif/ghcr.io/tre-approved/hello-store_1.0.sif
  bed exec rm -f "$sif"
  out=$(bed exec tre-spank image load --runtime apptainer --archive "$ARCHIVES/docker.tar" "$STORE_IMAGE")
  assert_eq "$out" "loaded $STORE_IMAGE as $sif"
  assert_eq "$(bed exec stat -c '%U %a' "$sif")" "root 644"
  assert_contains "$(bed exec tre-spank image list --runtime apptainer)" "ghcr.io/tre-approved/hello-store_1.0.sif"
  job=$(run_job erin --tre-runtime=apptainer --tre-container=$STORE_IMAGE --wrap 'id -un; echo "img=$APPTAINER_CONTAINER"')
  out=$(job_output erin "$job")
  assert_line "$out" "erin"
  assert_line "$out" "img=$sif"
  # A digest reference maps to its own file; a SIF file is copied as it is.
  out=$(bed exec tre-spank image load --runtime apptainer --archive "$sif" "ghcr.io/tre-approved/hello-store@sha256:$digest")
  assert_eq "$out" "loaded ghcr.io/tre-approved/hello-store@sha256:$digest as /var/lib/tre-spank/sif/ghcr.io/tre-approved/hello-store@sha256_$digest.sif"
  job=$(run_job erin --tre-runtime=apptainer --tre-container="ghcr.io/tre-approved/hello-store@sha256:$digest" --wrap 'echo digest-ok')
  assert_line "$(job_output erin "$job")" "digest-ok"
  # The OCI archive builds too.
  out=$(bed exec tre-spank image load --runtime apptainer --archive "$ARCHIVES/oci.tar" ghcr.io/tre-approved/hello-oci:2.0)
  assert_eq "$out" "loaded ghcr.io/tre-approved/hello-oci:2.0 as /var/lib/tre-spank/sif/ghcr.io/tre-approved/hello-oci_2.0.sif"
  # Remove: gone, and a job asking for it fails naming the file it looked for.
  for r in "ghcr.io/tre-approved/hello-store@sha256:$digest" ghcr.io/tre-approved/hello-oci:2.0 "$STORE_IMAGE"; do
    assert_contains "$(bed exec tre-spank image remove --runtime apptainer "$r")" "removed $r ("
  done
  assert_absent "$sif"
  job=$(run_job erin --tre-runtime=apptainer --tre-container=$STORE_IMAGE --wrap 'echo STARTED')
  out=$(job_output erin "$job")
  assert_contains "$out" "tre-spank: image $STORE_IMAGE is not on node tbnode: no SIF file $sif"
  assert_not_contains "$out" "STARTED"
  bed exec rmdir /var/lib/tre-spank/sif/ghcr.io/tre-approved 2>/dev/null || true
}

# A user without subordinate ids (no line in /etc/subuid or /etc/subgid): the supervisor
# leaves the user namespace to podman, which says why it cannot run an image whose files
# belong to other ids, as it would by hand; nothing is left behind.
test_images_a_user_without_subordinate_ids_gets_podmans_own_namespace_and_its_message() {
  local out rc=0
  store_ready
  bed exec sh -c 'id -u nina >/dev/null 2>&1 || useradd -m -U -G proj1 -K SUB_UID_COUNT=0 -K SUB_GID_COUNT=0 -s /bin/bash nina
    sed -i "/^nina:/d" /etc/subuid /etc/subgid'
  reconfigure_and_wait
  out=$(as nina srun --tre-container=$STORE_IMAGE sh -c 'echo "in the container"' 2>&1) || rc=$?
  [ "$rc" -ne 0 ] || fail "srun succeeded: $out"
  assert_contains "$out" 'cannot find UID/GID for user nina: no subuid ranges found'
  assert_contains "$out" "exit code 125"
  ! grep -qx "in the container" <<<"$out" || fail "the command ran: $out"
  assert_no_job_processes nina
}
