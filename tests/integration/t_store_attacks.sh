# Issue 14 (points 1, 2, 9): the site image store holds nothing that carries rights,
# whatever an approved image brings, and every admin command leaves it readable by
# jobs. Each test is the attack, tried for real in the bed: root loads the image as an
# administrator would, the users then try what the image offered.
# Uses t_images.sh's store ($STORE, $STORE_CONFIG, store_ready, no_processes_of).

EVIL_IMAGE=ghcr.io/tre-approved/evil:1
EVIL_ARCHIVE=/var/tmp/tre-store-attacks/evil.tar

# make_evil_archive: a docker-archive (what `podman save` writes) of the test image plus
# /opt/cap/cat (busybox with `setcap cap_dac_read_search+ep`), /opt/suid/cat (busybox,
# 4755 root), /opt/disk (a 0666 block device 8:0, the node's first disk), /opt/mallory/ and
# /opt/mallory/tool owned by mallory (uid 1005), 0755, and a 0600 root-only file.
make_evil_archive() {
  bed exec sh -c 'a=$1; d=${a%/*}; [ -f "$a" ] && exit 0
    rm -rf "$d"; mkdir -p "$d/root"
    tar -xf /opt/tre-testbed/tre-image.tar -C "$d/root"
    r=$d/root; mkdir -p "$r/opt/mallory" "$r/opt/cap" "$r/opt/suid"
    cp /bin/busybox "$r/opt/cap/cat"; setcap cap_dac_read_search+ep "$r/opt/cap/cat"
    cp /bin/busybox "$r/opt/suid/cat"; chmod 4755 "$r/opt/suid/cat"
    mknod -m 0666 "$r/opt/disk" b 8 0
    printf "original\n" > "$r/opt/mallory/tool"; chmod 0755 "$r/opt/mallory/tool"
    chown -R 1005:1005 "$r/opt/mallory"
    printf "root only\n" > "$r/opt/private"; chmod 0600 "$r/opt/private"
    getcap "$r/opt/cap/cat" | grep -q cap_dac_read_search || { echo "setcap did not take"; exit 1; }
    tar --xattrs --xattrs-include="*" --numeric-owner -C "$r" -cf "$d/rootfs.tar" .
    set -- podman --root="$d/storage" --runroot="$d/run" --storage-driver=overlay
    "$@" import -q --change "ENV PATH=/bin" "$d/rootfs.tar" localhost/build/evil:1 >/dev/null
    "$@" save -q -o "$a" localhost/build/evil:1
    "$@" rmi -a -f >/dev/null 2>&1 || true
    rm -rf "$d/storage" "$d/run" "$d/root" "$d/rootfs.tar"' sh "$EVIL_ARCHIVE"
}

# store_problems: every entry of the store that carries a right: a file capability, a
# set-id bit, a foreign owner or group, write for group/other, a device node (not a 0/0
# whiteout) or fifo anyone but root could open. (The beds have no getfattr: that other
# extended attributes go is the unit tests' part, src/host/image_store.rs.)
store_problems() {
  bed exec sh -c 's=$1
    getcap -r "$s" 2>/dev/null
    find "$s" \( ! -user root -o ! -group root -o -perm /6000 \) -printf "owner/set-id: %p %u:%g %m\n"
    find "$s" ! -type l -perm /022 -printf "writable: %p %m\n"
    find "$s" \( -type b -o -type p -o -type s \) ! -perm 0 -printf "device: %p %m\n"
    find "$s" -type c ! -perm 0 -printf "%p %m\n" | while read -r p m; do
      [ "$(stat -c %t:%T "$p")" = 0:0 ] || echo "device: $p $m"; done
    true' sh "$STORE"
}

# load_evil: the store ready (t_images.sh) with the evil image loaded afresh.
load_evil() {
  store_ready
  make_evil_archive
  bed exec sh -c "tre-spank image remove $EVIL_IMAGE >/dev/null 2>&1 || true"
  bed exec tre-spank image load --archive "$EVIL_ARCHIVE" "$EVIL_IMAGE" >/dev/null
}

# layer_file F: the store's copy of the image file F (the layer holding it).
layer_file() {
  bed exec sh -c 'for f in "$1"/overlay/*/diff"$2"; do [ -e "$f" ] && echo "$f"; done' sh "$STORE" "$1" | head -n 1
}

test_store_attack_a_capability_file_set_id_file_device_and_foreign_owners_carry_no_rights() {
  local capcat suid disk tool out job
  load_evil
  capcat=$(layer_file /opt/cap/cat) suid=$(layer_file /opt/suid/cat)
  disk=$(layer_file /opt/disk) tool=$(layer_file /opt/mallory/tool)
  [ -n "$capcat" ] && [ -n "$suid" ] && [ -n "$disk" ] && [ -n "$tool" ] || fail "the evil image's files are not in the store"
  assert_eq "$(store_problems)" "" "entries of the store carrying rights"
  # As the attackers, from the host.
  out=$(as alice sh -c '"$1" /etc/shadow 2>&1; echo "rc=$?"' sh "$capcat")
  assert_not_contains "$out" "root:"
  assert_contains "$out" "Permission denied"
  out=$(as alice sh -c '"$1" /etc/shadow 2>&1; echo "rc=$?"' sh "$suid")
  assert_not_contains "$out" "root:"
  assert_contains "$out" "Permission denied"
  out=$(as alice sh -c 'head -c 1 "$1" 2>&1; echo "rc=$?"' sh "$disk")
  assert_contains "$out" "Permission denied"
  out=$(as mallory sh -c '{ echo pwned > "$1"; } 2>&1; chmod 777 "$1" 2>&1; echo done' sh "$tool")
  assert_contains "$out" "Permission denied"
  assert_contains "$out" "Operation not permitted"
  assert_eq "$(bed exec cat "$tool")" "original"
  # A job of another user runs the image as approved.
  job=$(run_job frank --tre-container=$EVIL_IMAGE --wrap 'cat /opt/mallory/tool; cat /opt/private; echo ran')
  out=$(job_output frank "$job")
  assert_eq "$(job_field "$job" ExitCode)" 0:0 "exit code; output: $out"
  assert_line "$out" "original"
  assert_line "$out" "root only"
  assert_line "$out" "ran"
  no_processes_of frank
}

test_store_attack_no_user_sees_a_new_layer_before_it_is_clean() {
  local seen
  load_evil
  bed exec tre-spank image remove "$EVIL_IMAGE" >/dev/null
  # alice polls the store as fast as she can for anything of the new image: every
  # /opt entry she can reach, with its mode and owner, is written down.
  bed exec rm -f /tmp/poll.stop /tmp/poll.log
  as alice sh -c 'while [ ! -e /tmp/poll.stop ]; do
      for f in '"$STORE"'/overlay/*/diff/opt/* '"$STORE"'/overlay/*/diff/opt/*/*; do [ -e "$f" ] && stat -c "%n %a %U %t:%T" "$f"; done
    done > /tmp/poll.log 2>/dev/null' &
  local poller=$!
  sleep 0.5
  bed exec tre-spank image load --archive "$EVIL_ARCHIVE" "$EVIL_IMAGE" >/dev/null
  sleep 0.5
  bed exec touch /tmp/poll.stop
  wait "$poller" || true
  seen=$(bed exec cat /tmp/poll.log)
  # The poller did see the image once it was published (so it was looking).
  assert_contains "$seen" "/diff/opt/cap/cat 755 root"
  # And never anything with a right: a set-id or foreign-owned file, an open device.
  local bad
  bad=$(grep -E "/opt/suid/cat [4-7][0-7]{3} |/opt/disk [0-7]*[1-7][0-7]* | mallory " <<<"$seen" | sort -u || true)
  assert_eq "$bad" "" "what alice saw during the load"
}

test_store_attack_a_symlink_swapped_into_the_archive_path_is_never_followed() {
  local out canary=/root/canary.tar
  store_ready
  make_evil_archive
  bed exec sh -c "tre-spank image remove $EVIL_IMAGE >/dev/null 2>&1 || true"
  # A root-only file the load must never publish.
  bed exec sh -c 'cp "$1" "$2" && chmod 0600 "$2"' sh "$EVIL_ARCHIVE" "$canary"
  # alice's upload in her home: a link to the canary, and a directory link on the path.
  as alice sh -c 'rm -rf ~/up ~/upl; mkdir ~/up && ln -s /root/canary.tar ~/up/img.tar && ln -s ~/up ~/upl'
  out=$(bed exec tre-spank image load --archive /home/alice/up/img.tar "$EVIL_IMAGE" 2>&1) && fail "loaded through a link: $out"
  assert_contains "$out" "/home/alice/up/img.tar: refused: a symbolic link is on its path"
  as alice sh -c 'rm ~/up/img.tar; cp /etc/hostname ~/up/img.tar'
  out=$(bed exec tre-spank image load --archive /home/alice/upl/img.tar "$EVIL_IMAGE" 2>&1) && fail "loaded through a link: $out"
  assert_contains "$out" "refused: a symbolic link is on its path"
  # A file alice owns (she could change its bytes while root reads it).
  out=$(bed exec tre-spank image load --archive /home/alice/up/img.tar "$EVIL_IMAGE" 2>&1) && fail "loaded alice's file: $out"
  assert_contains "$out" "refused: someone other than root can write it"
  # The swap during the load: root's good archive, opened once; alice's watcher (here
  # root, standing in for any writer of the directory) replaces the path with a link
  # to the canary while podman reads. The store gets the archive's image, not the canary.
  bed exec sh -c 'rm -rf /var/tmp/swap && mkdir /var/tmp/swap && cp "$1" /var/tmp/swap/img.tar' sh "$EVIL_ARCHIVE"
  bed exec sh -c 'for i in $(seq 2000); do ln -sfn /root/canary.tar /var/tmp/swap/img.tar.new && mv -T /var/tmp/swap/img.tar.new /var/tmp/swap/img.tar && exit 0; done' &
  local swapper=$!
  out=$(bed exec tre-spank image load --archive /var/tmp/swap/img.tar "$EVIL_IMAGE" 2>&1) || true
  wait "$swapper" || true
  # Either it was refused (the link came first) or it loaded from the one open file.
  case $out in
    *"refused: a symbolic link is on its path"*) ;;
    "loaded $EVIL_IMAGE (image "*) ;;
    *) fail "unexpected: $out" ;;
  esac
  assert_eq "$(bed exec readlink /var/tmp/swap/img.tar)" /root/canary.tar "the swap happened"
  assert_eq "$(store_problems)" "" "entries of the store carrying rights"
  bed exec rm -rf /var/tmp/swap "$canary"
  as alice sh -c 'rm -rf ~/up ~/upl'
}

test_store_attack_remove_failed_and_interrupted_commands_leave_the_store_readable() {
  local job out
  load_evil
  # podman rewrites images.json 0600 as it removes: jobs must still read the store.
  bed exec tre-spank image remove "$EVIL_IMAGE" >/dev/null
  assert_eq "$(bed exec stat -c %a "$STORE/overlay-images/images.json")" 644
  job=$(run_job erin --tre-container=$STORE_IMAGE --wrap 'echo after-remove')
  out=$(job_output erin "$job")
  assert_eq "$(job_field "$job" ExitCode)" 0:0 "exit code after remove; output: $out"
  assert_line "$out" "after-remove"
  # A failed load (an archive podman refuses half way) leaves it readable too.
  bed exec sh -c 'cd /var/tmp && echo "[{\"Config\":\"x.json\",\"Layers\":[\"l.tar\"]}]" > manifest.json &&
    tar -cf broken.tar manifest.json && rm manifest.json' 
  bed exec sh -c "chmod 600 $STORE/overlay-images/images.json"
  bed exec tre-spank image load --archive /var/tmp/broken.tar "$EVIL_IMAGE" >/dev/null 2>&1 && fail "a broken archive loaded"
  assert_eq "$(bed exec stat -c %a "$STORE/overlay-images/images.json")" 644 "after a failed load"
  # An interrupted one (SIGTERM to the tool while podman works).
  bed exec sh -c "chmod 600 $STORE/overlay-images/images.json"
  bed exec sh -c 'tre-spank image load --archive "$1" "$2" >/var/tmp/int.out 2>&1 & p=$!
    sleep 0.3; kill -TERM $p; wait $p; echo "rc=$?" >> /var/tmp/int.out' sh "$EVIL_ARCHIVE" "$EVIL_IMAGE"
  out=$(bed exec cat /var/tmp/int.out)
  assert_not_contains "$out" "rc=0"
  assert_eq "$(bed exec stat -c %a "$STORE/overlay-images/images.json")" 644 "after an interrupted load; $out"
  assert_eq "$(store_problems)" "" "entries of the store carrying rights"
  job=$(run_job erin --tre-container=$STORE_IMAGE --wrap 'echo after-interrupt')
  assert_line "$(job_output erin "$job")" "after-interrupt"
  # A store a job still cannot read: the job says so and names it.
  bed exec sh -c "chmod 600 $STORE/overlay-images/images.json"
  job=$(run_job erin --tre-container=$STORE_IMAGE --wrap 'echo STARTED')
  out=$(job_output erin "$job")
  bed exec sh -c "chmod 644 $STORE/overlay-images/images.json"
  assert_not_contains "$out" "STARTED"
  assert_contains "$out" "tre-spank: the site image store $STORE cannot be read by this job"
  bed exec rm -f /var/tmp/broken.tar /var/tmp/int.out
  no_processes_of erin
}

test_store_audit_records_carry_the_images_immutable_id() {
  local job id line
  store_ready
  id=$(bed exec podman --root="$STORE" --runroot=/run/tre-spank/image-store --storage-driver=overlay \
    images --no-trunc --format '{{.ID}}' "$STORE_IMAGE")
  id=sha256:${id#sha256:}
  [[ $id =~ ^sha256:[0-9a-f]{64}$ ]] || fail "no image ID for $STORE_IMAGE: $id"
  job=$(run_job erin --tre-container=$STORE_IMAGE --wrap 'echo ran')
  assert_line "$(job_output erin "$job")" "ran"
  for event in start end; do
    # The last: job ids start again after a controller reset (t_jobids), and on a bed
    # kept up between runs the log holds earlier runs' jobs too.
    line=$(bed exec grep -a "tre-spank-audit event=$event job=$job " /var/log/slurm/slurmd.log | tail -n 1)
    assert_contains "$line" " image=$STORE_IMAGE image_id=$id runtime=podman "
  done
  # Another image under the same tag: the records tell the two runs apart.
  make_evil_archive
  bed exec tre-spank image load --archive "$EVIL_ARCHIVE" "$STORE_IMAGE" >/dev/null
  job=$(run_job erin --tre-container=$STORE_IMAGE --wrap 'echo ran')
  line=$(bed exec grep -a "tre-spank-audit event=start job=$job " /var/log/slurm/slurmd.log | tail -n 1)
  assert_contains "$line" " image=$STORE_IMAGE image_id=sha256:"
  assert_not_contains "$line" "image_id=$id"
  bed exec tre-spank image remove "$STORE_IMAGE" >/dev/null
  bed exec tre-spank image load --archive "$ARCHIVES/docker.tar" "$STORE_IMAGE" >/dev/null
  no_processes_of erin
}

test_store_check_reports_a_store_not_on_a_nosuid_nodev_mount() {
  local out rc
  store_ready
  bed exec sh -c 'install -d -m 0755 /var/tmp/tre-plain-store && printf "[podman]\nimage_stores = [\"/var/tmp/tre-plain-store\", \"%s\"]\n" "$1" > /tmp/plain-store.toml' sh "$STORE"
  out=$(bed exec tre-spank check --config /tmp/plain-store.toml 2>&1) && rc=0 || rc=$?
  assert_eq "$rc" 1 "check's status; output: $out"
  assert_contains "$out" "podman image store /var/tmp/tre-plain-store is on the mount / without nosuid and nodev: mount the store's filesystem nosuid,nodev (docs/images.md)"
  assert_contains "$out" "podman image store $STORE is on a nosuid,nodev mount (/var/lib/tre-spank)"
  bed exec rm -rf /var/tmp/tre-plain-store /tmp/plain-store.toml
}

test_store_audit_records_carry_the_sifs_digest_under_apptainer() {
  local sif job line sum
  bed exec test -x /usr/bin/apptainer || { echo "apptainer is not installed in the $SUITE bed (only sid has it)"; exit 77; }
  store_ready
  sif=/var/lib/tre-spank/sif/ghcr.io/tre-approved/hello-store_1.0.sif
  bed exec rm -f "$sif" "$sif.sha256"
  bed exec tre-spank image load --runtime apptainer --archive "$ARCHIVES/docker.tar" "$STORE_IMAGE" >/dev/null
  sum=$(bed exec sha256sum "$sif" | cut -d' ' -f1)
  assert_eq "$(bed exec stat -c '%U %a' "$sif.sha256")" "root 644"
  assert_not_contains "$(bed exec tre-spank image list --runtime apptainer)" ".sha256"
  job=$(run_job erin --tre-runtime=apptainer --tre-container=$STORE_IMAGE --wrap 'echo ran')
  assert_line "$(job_output erin "$job")" "ran"
  line=$(bed exec grep -a "tre-spank-audit event=start job=$job " /var/log/slurm/slurmd.log | tail -n 1)
  assert_contains "$line" " image=$STORE_IMAGE image_id=sha256:$sum runtime=apptainer "
  # A SIF changed behind tre-spank's back has no known digest.
  bed exec touch "$sif"
  job=$(run_job erin --tre-runtime=apptainer --tre-container=$STORE_IMAGE --wrap 'echo ran')
  line=$(bed exec grep -a "tre-spank-audit event=start job=$job " /var/log/slurm/slurmd.log | tail -n 1)
  assert_contains "$line" " image_id=unknown runtime=apptainer "
  assert_contains "$(bed exec tre-spank image remove --runtime apptainer "$STORE_IMAGE")" "removed $STORE_IMAGE ("
  assert_absent "$sif.sha256"
}
