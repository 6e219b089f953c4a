#!/bin/bash
# Helper run inside the bed, installed as /opt/tre-testbed/bed by scripts/testbed (which
# fills in the placeholders between at signs): "init" (PID 1's child), "images", "rundirs", ...
set -eu
export PATH=@BED_PATH@ LANG=C.UTF-8
TEST_USERS="@TEST_USERS@"
IMAGE_HELLO=@IMAGE_HELLO@
IMAGE_NONROOT=@IMAGE_NONROOT@
EXTRA_NODES="@EXTRA_NODES@"
rundirs() {
  local u n uid
  for u in $TEST_USERS; do
    n=${u%%:*}; uid=${u#*:}; uid=${uid%%:*}
    install -d -m 0700 -o "$n" -g "$n" "/run/user/$uid"
  done
}
images() {  # import the test images into every test user's rootless storage if absent
  local u n uid p tar=/opt/tre-testbed/tre-image.tar
  rundirs
  for u in $TEST_USERS; do
    n=${u%%:*}
    runuser -u "$n" -- env -i PATH="$PATH" HOME="/home/$n" USER="$n" LOGNAME="$n" sh -c '
      cd "$HOME"
      podman image exists "$2" || podman import -q \
        --change "CMD [\"/bin/sh\",\"-c\",\"echo hello from the TRE container\"]" \
        --change "ENV PATH=/bin" "$1" "$2" >/dev/null
      podman image exists "$3" || podman import -q \
        --change "CMD [\"/bin/sh\",\"-c\",\"echo hello from the TRE container\"]" \
        --change "ENV PATH=/bin" --change "USER=app" "$1" "$3" >/dev/null' \
      sh "$tar" "$IMAGE_HELLO" "$IMAGE_NONROOT"
  done
  sifs
  for n in $EXTRA_NODES; do  # each node's own copy, like an admin's per-node image store
    p=/var/lib/tre-spank/sif/${IMAGE_HELLO%:*}_${IMAGE_HELLO##*:}.sif
    [ ! -f "$p" ] || [ -f "$(node_dir "$n")$p" ] || install -D -m 0644 "$p" "$(node_dir "$n")$p"
  done
  # podman leaves a per-user "catatonit -P" pause process; end those started here so
  # that tests can expect no processes of a user outside their jobs.
  for u in $TEST_USERS; do
    uid=${u#*:}; uid=${uid%%:*}
    p=$(cat "/run/user/$uid/libpod/tmp/pause.pid" 2>/dev/null) || continue
    grep -q catatonit "/proc/$p/cmdline" 2>/dev/null && kill "$p" 2>/dev/null || true
  done
}
sifs() {  # apptainer (sid only): the hello image as a SIF at tre-spank's documented path
  local d sif=/var/lib/tre-spank/sif/${IMAGE_HELLO%:*}_${IMAGE_HELLO##*:}.sif
  [ -x /usr/bin/apptainer ] || return 0
  [ -f "$sif" ] && return 0
  d=$(mktemp -d)
  tar -C "$d" -xf /opt/tre-testbed/tre-image.tar
  # Like a SIF built from an OCI image: arguments replace the default command.
  mkdir -p "$d/.singularity.d"
  printf '#!/bin/sh\n[ $# -gt 0 ] && exec "$@"\necho hello from the TRE container\n' >"$d/.singularity.d/runscript"
  chmod 0755 "$d/.singularity.d/runscript"
  install -d -m 0755 "${sif%/*}"
  apptainer -q build "$sif" "$d/" >/dev/null
  rm -rf "$d"
}
wait_slurmd() {  # wait_slurmd LOGOFFSET: until slurmd answers (0) or gave up (1); <= 60 s
  local i log=/var/log/slurm/slurmd.log
  for i in $(seq 600); do
    scontrol show slurmd >/dev/null 2>&1 && return 0
    tail -c +"$((${1:-0} + 1))" "$log" 2>/dev/null | grep -q -e 'initialization failed' -e 'fatal:' && return 1
    sleep 0.1
  done
  return 1
}
logsize() { stat -c %s /var/log/slurm/slurmd.log 2>/dev/null || echo 0; }
restart_slurmd() {  # this node's slurmd; from tbnode, every node's
  local n
  restart_own_slurmd || return 1
  [ "$(hostname)" = tbnode ] || return 0
  for n in $EXTRA_NODES; do ( on_node "$n" /opt/tre-testbed/bed restart_own_slurmd ) || return 1; done
}
restart_own_slurmd() {
  local i p off
  if p=$(cat /run/slurmd.pid 2>/dev/null); then
    kill "$p" 2>/dev/null || true
    for i in $(seq 150); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f /run/slurmd.pid
  off=$(logsize)
  slurmd
  wait_slurmd "$off"
}
init() {
  exec >>/var/log/tre-testbed-init.log 2>&1
  echo "=== bed start $(date)"
  mkdir -p /run/munge /run/lock /var/lib/munge /var/log/munge
  chown munge:munge /run/munge /var/lib/munge /var/log/munge /etc/munge /etc/munge/munge.key
  rundirs
  # Fresh Slurm state at each start (job ids restart at 1); up has moved the old logs.
  rm -rf /var/spool/slurmctld/* /var/spool/slurmd/*
  [ -e /dev/nvidia0 ] || mknod -m 666 /dev/nvidia0 c 195 0
  [ -e /dev/nvidia1 ] || mknod -m 666 /dev/nvidia1 c 195 1
  node_conf >/etc/slurm/node.conf
  runuser -u munge -- /usr/sbin/munged
  slurmctld
  rm -f /run/slurmd.pid
  slurmd
  for n in $EXTRA_NODES; do start_node "$n"; done
  exec sleep infinity
}
node_conf() {  # one NodeName line per node, same hardware as this machine
  local hw i=2 n
  hw=$(slurmd -C | head -n 1 | sed 's/^NodeName=[^ ]* //')
  echo "NodeName=tbnode NodeAddr=127.0.1.1 Port=6818 $hw Gres=gpu:2 State=UNKNOWN"
  for n in $EXTRA_NODES; do
    echo "NodeName=$n NodeAddr=127.0.1.$i Port=$((6817 + i)) $hw Gres=gpu:2 State=UNKNOWN"
    i=$((i + 1))
  done
}
# Extra compute nodes. Node N's node-local directories live in the shared rootfs at
# $(node_dir N)/<path> and are bind-mounted at <path> in N's own mount namespace.
NODE_LOCAL="/var/spool/slurmd /var/spool/tre-spank /var/lib/tre-spank /var/log/slurm"
node_dir() { echo "/var/lib/tre-testbed/nodes/$1"; }
node_pidfile() { echo "/run/tre-testbed-node-$1.pid"; }
start_node() {  # start_node N (from tbnode's init): N's namespaces, catatonit, slurmd
  local n=$1 d h p c='' i
  d=$(node_dir "$n")
  [ -d /var/lib/tre-spank ] || mkdir -m 0711 /var/lib/tre-spank   # a mount point
  for p in $NODE_LOCAL; do install -d -m "$(stat -c %a "$p")" "$d$p"; done
  install -d -m 0711 "$d/var/lib/tre-spank/jobs"   # as the package's postinst does
  # Its own cgroups (a child of the bed's), the root of its cgroup namespace: the two
  # slurmds' slurm/uid_U/job_J trees cannot collide.
  for h in freezer unified; do mkdir -p "/sys/fs/cgroup/$h/$n"; done
  ( for h in freezer unified; do echo "$BASHPID" >"/sys/fs/cgroup/$h/$n/cgroup.procs"; done
    exec unshare --mount --uts --pid --fork --cgroup --kill-child \
      /usr/bin/catatonit -- /opt/tre-testbed/bed node_init "$n" ) </dev/null &
  p=$!
  for i in $(seq 100); do c=$(pgrep -P "$p" | head -n 1) && [ -n "$c" ] && break; sleep 0.05; done
  [ -n "$c" ] || { echo "node $n did not start"; return 1; }
  echo "$c" >"$(node_pidfile "$n")"   # its PID 1 (catatonit), as seen from tbnode
}
node_init() {  # node_init N: PID 1's child in N's new namespaces
  local n=$1 d p
  d=$(node_dir "$n")
  hostname "$n"
  mount -t proc proc /proc
  mount -t tmpfs -o mode=755 tmpfs /sys/fs/cgroup
  mkdir /sys/fs/cgroup/freezer /sys/fs/cgroup/unified
  mount -t cgroup -o freezer freezer /sys/fs/cgroup/freezer
  mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified
  for p in $NODE_LOCAL; do mount --bind "$d$p" "$p"; done
  mount -o remount,bind,nosuid,nodev /var/lib/tre-spank   # as on tbnode
  mount -t tmpfs -o mode=1777 tmpfs /tmp
  # Its own /run, with tbnode's munge socket directory in it.
  mkdir /tmp/.run
  mount -t tmpfs -o mode=755 tmpfs /tmp/.run
  mkdir -p /tmp/.run/munge /tmp/.run/lock
  mount --bind /run/munge /tmp/.run/munge
  mount -n --move /tmp/.run /run   # -n: /run/mount/utab moves away with it
  rmdir /tmp/.run
  mount --make-rshared /
  exec >>/var/log/slurm/tre-testbed-node.log 2>&1
  echo "=== node $n start $(date)"
  rundirs
  rm -rf /var/spool/slurmd/*
  [ -f /var/log/slurm/slurmd.log ] && mv -f /var/log/slurm/slurmd.log /var/log/slurm/slurmd.log.1
  slurmd
  exec sleep infinity
}
on_node() {  # on_node N CMD...: exec CMD as root on node N (from tbnode)
  local n=$1 p h
  shift
  [ "$n" = "$(hostname)" ] && exec "$@"
  p=$(cat "$(node_pidfile "$n")" 2>/dev/null) && [ -e "/proc/$p/ns/cgroup" ] && [ -d "/sys/fs/cgroup/freezer/$n" ] ||
    { echo "no such node: $n" >&2; exit 1; }
  for h in freezer unified; do echo "$BASHPID" >"/sys/fs/cgroup/$h/$n/cgroup.procs"; done
  exec nsenter -t "$p" -m -u -p -C -r -w -- "$@"
}
stop_nodes() {  # stop the extra nodes' slurmds (up to 5 s each)
  local n
  for n in $EXTRA_NODES; do
    ( on_node "$n" sh -c 'p=$(cat /run/slurmd.pid) && kill "$p" || exit 0
      for i in $(seq 50); do kill -0 "$p" 2>/dev/null || exit 0; sleep 0.1; done' ) || true
  done
}
"$@"
