# Helpers for the integration tests: real jobs, submitted as real users, in a test bed
# started by scripts/testbed. Sourced by ./run; every helper works on $SUITE's bed.

ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
IMAGE=ghcr.io/mikej888/hello-tre:1.0
IMAGE_NONROOT=ghcr.io/mikej888/nonroot-tre:1.0
JOB_TIMEOUT=${JOB_TIMEOUT:-180}

bed() { "$ROOT_DIR/scripts/testbed" --suite "$SUITE" "$@"; }
# as U CMD...: run CMD in the bed as user U, in U's home.
as() { bed user "$@"; }

# Each failed check explains itself on stderr and returns 1; tests chain them with &&
# or rely on `set -e` inside the test's subshell.
fail() { echo "    $*" >&2; return 1; }

# submit U SBATCH-ARGS...: sbatch as U with output in ~/tests/<job>.out; prints the job id.
submit() {
  local user=$1; shift
  as "$user" sh -c 'mkdir -p ~/tests && cd ~/tests && sbatch --parsable -o "%j.out" "$@"' sbatch "$@"
}

# wait_job J [SECONDS]: until job J has left the queue.
wait_job() {
  local job=$1 limit=${2:-$JOB_TIMEOUT} i
  for ((i = 0; i < limit * 5; i++)); do
    bed exec squeue -h -j "$job" 2>/dev/null | grep -q . || return 0
    sleep 0.2
  done
  fail "job $job still queued or running after ${limit}s"
}

# wait_running J: until job J is RUNNING.
wait_running() {
  local job=$1 i
  for ((i = 0; i < 60 * 5; i++)); do
    [ "$(job_field "$job" JobState)" = RUNNING ] && return 0
    sleep 0.2
  done
  fail "job $job never started"
}

# run_job U SBATCH-ARGS...: submit, wait, print the job id.
run_job() {
  local job
  job=$(submit "$@") || { fail "sbatch refused: $*"; return 1; }
  wait_job "$job" || return 1
  echo "$job"
}

job_field() { bed exec scontrol -o show job "$1" | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1; }
job_output() { as "$1" cat "tests/$2.out"; }

# The job's NUMBER as printed in its output.
job_number() { job_output "$1" "$2" | sed -n 's|^tre-spank: outputs: .*/outputs-\([0-9]*\) .*|\1|p' | head -n 1; }

node_state() { bed exec sinfo -h -o %T | head -n 1; }

assert_eq() { [ "$1" = "$2" ] || fail "expected '$2', got '$1'${3:+ ($3)}"; }
assert_contains() { grep -qF -- "$2" <<<"$1" || fail "expected output to contain '$2'; got:"$'\n'"$1"; }
assert_not_contains() { ! grep -qF -- "$2" <<<"$1" || fail "expected output not to contain '$2'; got:"$'\n'"$1"; }
assert_line() { grep -qxF -- "$2" <<<"$1" || fail "expected a line exactly '$2'; got:"$'\n'"$1"; }
assert_exists() { bed exec test -e "$1" || fail "$1 does not exist"; }
assert_absent() { ! bed exec test -e "$1" || fail "$1 exists"; }
# assert_unmounted PATH: nothing is mounted on PATH (the job's run state tmpfs).
assert_unmounted() { ! bed exec awk -v p="$1" '$5 == p { f = 1 } END { exit !f }' /proc/self/mountinfo || fail "$1 is still mounted"; }
assert_node_idle() { assert_eq "$(node_state)" idle "node state"; }

# Multi-node: the bed has tbnode (partition debug, the default: every single-node test
# runs there) and tbnode2 (partition multi = tbnode,tbnode2). tbnode2 has its own
# hostname, pid and cgroup namespaces, /tmp, /run and node-local directories
# (/var/spool/slurmd, /var/spool/tre-spank, /var/lib/tre-spank, /var/log/slurm); /home,
# /safe_data, /etc are shared. `bed exec` runs on tbnode, which also sees tbnode2's
# processes (its pid namespace is nested): job_processes covers both nodes.
NODES=(tbnode tbnode2)
# on_node N CMD...: run CMD as root on node N (its namespaces, its node-local paths).
on_node() { bed node "$@"; }
# node_path N PATH: where node N's PATH is seen from tbnode (for bed exec, assert_exists,
# fingerprint...): node-local paths of tbnode2 live under /var/lib/tre-testbed/nodes/.
node_path() {
  case $1:$2 in
    tbnode:*) echo "$2" ;;
    *:/var/spool/slurmd|*:/var/spool/slurmd/*|*:/var/spool/tre-spank|*:/var/spool/tre-spank/*|\
    *:/var/lib/tre-spank|*:/var/lib/tre-spank/*|*:/var/log/slurm|*:/var/log/slurm/*)
      echo "/var/lib/tre-testbed/nodes/$1$2" ;;
    *) echo "$2" ;;
  esac
}
node_slurmd_log() { on_node "$1" cat /var/log/slurm/slurmd.log; }
assert_exists_on() { on_node "$1" test -e "$2" || fail "$2 does not exist on $1"; }
assert_absent_on() { ! on_node "$1" test -e "$2" || fail "$2 exists on $1"; }
# Every node's state, "idle" when all are idle (node_state is tbnode's).
nodes_state() { bed exec sinfo -h -N -o %T | sort -u | paste -sd, -; }
assert_nodes_idle() { assert_eq "$(nodes_state)" idle "state of the nodes"; }

# Processes of U that belong to jobs: the runtime, conmon, the container's commands and
# a job's podman pause process (podman started it with the job's runtime directory).
# The user's own pause process (podman outside Slurm) is not counted.
job_processes() {
  local pid args
  bed exec ps -u "$1" -o pid=,args= | grep -v '^ *[0-9]* ps ' | while read -r pid args; do
    case $args in
      'catatonit -P'|'podman pause'*) is_job_pause_process "$pid" || continue ;;
    esac
    echo "$pid $args"
  done
  return 0
}
is_job_pause_process() {
  bed exec cat "/proc/$1/environ" 2>/dev/null | tr '\0' '\n' |
    grep -q '^XDG_RUNTIME_DIR=/run/tre-spank/jobs/'
}

# wait_job_process U PATTERN: until a job process of U matches PATTERN (<= 15 s).
wait_job_process() {
  local i
  for ((i = 0; i < 75; i++)); do
    job_processes "$1" | grep -q -- "$2" && return 0
    sleep 0.2
  done
  fail "no job process of $1 matching '$2'"
}

assert_no_job_processes() {
  local left i
  for ((i = 0; i < 50; i++)); do
    left=$(job_processes "$1")
    [ -z "$left" ] && return 0
    sleep 0.2
  done
  fail "processes of $1 left after the job:"$'\n'"$left"
}

# Directories the plugin made in U's home (outputs-* and scratch-*).
job_dirs() { as "$1" sh -c 'ls -d outputs-* scratch-* 2>/dev/null || true'; }

# assert_no_new_job_dirs U BEFORE: U's home gained no outputs-*/scratch-* since BEFORE
# (a snapshot from job_dirs; entries that disappeared meanwhile are fine).
assert_no_new_job_dirs() {
  local added
  added=$(comm -13 <(sort <<<"$2") <(job_dirs "$1" | sort) | grep . || true)
  [ -z "$added" ] || fail "new directories in $1's home: $added"
}

# Attack and sweep helpers (t_attacks.sh, t_sweep.sh).
# make_canary DIR: a root-owned tree (dir 0700, file 0600, subdir 0755 + file 0644).
make_canary() {
  bed exec sh -c 'rm -rf "$1" && mkdir -m 0700 "$1" && echo "canary of $1" > "$1/canary" &&
    chmod 0600 "$1/canary" && mkdir -m 0755 "$1/sub" && echo deep > "$1/sub/file" &&
    chmod 0644 "$1/sub/file"' sh "$1"
}
# fingerprint PATH...: owner, group, mode, type, link count, size and checksum of every
# entry under each PATH (symbolic links are listed, never followed).
fingerprint() {
  bed exec sh -c 'for p; do find "$p" -printf "%p %u:%g %m %y %n %s %l\n" | sort
    find "$p" -type f -exec sha256sum {} + | sort; done' sh "$@"
}
drop_canary() { bed exec rm -rf "$1"; }

# wait_number U J: the job's NUMBER once the job has printed it.
wait_number() {
  local n i
  for ((i = 0; i < 150; i++)); do
    n=$(job_number "$1" "$2" 2>/dev/null || true)
    [ -n "$n" ] && { echo "$n"; return 0; }
    sleep 0.2
  done
  fail "job $2 printed no NUMBER"
}

# number_of J: the NUMBER job J will get, computed by root from the site secret.
number_of() { bed exec tre-spank number --job-id "$1"; }

slurmd_log() { bed exec cat /var/log/slurm/slurmd.log; }

# Cleanup that runs in the background (an epilog past its budget or waiting for the
# job's other nodes, the sweep at slurmd start) logs to the node's cleanup.log.
cleanup_log() { on_node "${1:-tbnode}" cat /var/spool/tre-spank/cleanup.log 2>/dev/null || true; }
# sweeps_done [NODE]: how many sweeps at slurmd start have finished on NODE.
sweeps_done() { cleanup_log "${1:-tbnode}" | grep -c 'info: sweep: done$' || true; }
# wait_sweep BEFORE [NODE]: until NODE has finished more sweeps than BEFORE.
wait_sweep() {
  local before=$1 node=${2:-tbnode} i
  for ((i = 0; i < 150; i++)); do
    [ "$(sweeps_done "$node")" -gt "$before" ] && return 0
    sleep 0.2
  done
  fail "no sweep finished on $node within 30s"
}
# reconfigure_and_wait [NODE]: scontrol reconfigure. From 23.11 on it re-executes slurmd,
# which sweeps: wait for NODE's sweep; 22.05 and 23.02 reconfigure in place.
reconfigure_and_wait() {
  local node=${1:-tbnode} before
  before=$(sweeps_done "$node")
  bed exec scontrol reconfigure
  case $(bed exec sinfo --version | grep -o '[0-9][0-9]*\.[0-9][0-9]*' | head -n 1) in
    2[0-2].* | 23.0*) sleep 2 ;;
    *) wait_sweep "$before" "$node" ;;
  esac
}
# wait_absent PATH [NODE] [SECONDS]: until PATH (NODE's view) is gone.
wait_absent() {
  local path=$1 node=${2:-tbnode} limit=${3:-30} i
  for ((i = 0; i < limit * 5; i++)); do
    on_node "$node" test -e "$path" || return 0
    sleep 0.2
  done
  fail "$path still exists on $node after ${limit}s"
}

# clean_slate: no job of an earlier run is left (a requeued leftover would start in the
# middle of this run), and the node is idle.
clean_slate() {
  local i
  bed exec scancel --user=alice --user=bob --user=carol --user=dave --user=mallory 2>/dev/null ||
    for u in alice bob carol dave mallory; do bed exec scancel --user="$u" 2>/dev/null || true; done
  for ((i = 0; i < 300; i++)); do
    [ -z "$(bed exec squeue -h)" ] && [ "$(nodes_state)" = idle ] && return 0
    sleep 0.2
  done
  echo "the $SUITE bed did not become idle with an empty queue" >&2
  return 1
}

# with_config TOML: the bed's /etc/slurm/tre-spank.toml for the rest of this test (each
# test runs in its own subshell); the previous file, or its absence, comes back when the
# test ends, or earlier with restore_config (idempotent). slurmstepd reads the config at
# every step, the client at every submission: no restart is needed.
#
# The bed's test images are in each user's own rootless storage (scripts/testbed
# images), which a site must opt into (podman.user_image_store, default false): the
# harness turns it on in TOML that does not set user_image_store itself (tests of the
# default set it, or use with_exact_config).
with_config() {
  with_exact_config "$(user_store_on "$1")"
}
with_exact_config() {
  bed exec sh -c 'c=/etc/slurm/tre-spank.toml
    if [ ! -e $c.test-saved ] && [ ! -e $c.test-absent ]; then
      if [ -e $c ]; then cp -p $c $c.test-saved; else : > $c.test-absent; fi; fi'
  trap restore_config EXIT
  printf '%s\n' "$1" | bed exec sh -c 'cat > /etc/slurm/tre-spank.toml'
}
# user_store_on TOML: the TOML with podman.user_image_store = true at the end of its
# [podman] table (or in a new one at the end), unless it sets user_image_store.
user_store_on() {
  if grep -q 'user_image_store' <<<"$1"; then
    printf '%s\n' "$1"
    return
  fi
  awk '/^\[/ { if (p && !done) { print "user_image_store = true"; done = 1 }; p = ($0 == "[podman]") }
    { print }
    END { if (!done) { if (!p) print "[podman]"; print "user_image_store = true" } }' <<<"$1"
}
# The run's base config: the installed one with the user's storage on (see
# with_config); the installed file comes back when the run ends.
base_config_on() {
  local c
  c=$(bed exec sh -c 'cat /etc/slurm/tre-spank.toml 2>/dev/null' || true)
  bed exec sh -c 'c=/etc/slurm/tre-spank.toml
    if [ ! -e $c.run-saved ] && [ ! -e $c.run-absent ]; then
      if [ -e $c ]; then cp -p $c $c.run-saved; else : > $c.run-absent; fi; fi'
  c=$(sed 's/^user_image_store = false$/user_image_store = true/' <<<"$c")
  user_store_on "$c" | bed exec sh -c 'cat > /etc/slurm/tre-spank.toml'
}
base_config_off() {
  bed exec sh -c 'c=/etc/slurm/tre-spank.toml
    if [ -e $c.run-saved ]; then mv $c.run-saved $c
    elif [ -e $c.run-absent ]; then rm -f $c $c.run-absent; fi'
}
restore_config() {
  bed exec sh -c 'c=/etc/slurm/tre-spank.toml
    if [ -e $c.test-saved ]; then mv $c.test-saved $c
    elif [ -e $c.test-absent ]; then rm -f $c $c.test-absent; fi'
}
