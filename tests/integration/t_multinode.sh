# The multi-node bed itself (issue 6): two compute nodes with their own hostnames and
# node-local state, sharing /home like a cluster's NFS homes. No plugin option here: these
# checks prove the bed that the plugin's multi-node tests stand on.

# same_dir_on PATH: "same" when PATH is one directory on both nodes, else "separate".
same_dir_on() {
  local a b
  a=$(on_node tbnode stat -c %d:%i "$1") && b=$(on_node tbnode2 stat -c %d:%i "$1") || return 1
  if [ "$a" = "$b" ]; then echo same; else echo separate; fi
}

test_multinode_bed_two_nodes_with_own_hostnames_and_shared_home() {
  local out tag p
  out=$(as alice srun -p multi -N2 hostname | sort | paste -sd, -)
  assert_eq "$out" tbnode,tbnode2 "hostnames of a two-node step"
  assert_eq "$(on_node tbnode2 hostname)" tbnode2
  # A file written in $HOME by a step on tbnode2 is there for tbnode, and back.
  tag=mn-$$-$RANDOM
  as alice srun -p multi -w tbnode2 -N1 sh -c 'mkdir -p ~/tests && hostname > ~/tests/'"$tag"
  assert_eq "$(bed exec cat "/home/alice/tests/$tag")" tbnode2 "written on tbnode2, read on tbnode"
  as alice sh -c 'echo from-tbnode > ~/tests/'"$tag"
  assert_eq "$(as alice srun -p multi -w tbnode2 -N1 cat "tests/$tag")" from-tbnode "written on tbnode, read on tbnode2"
  as alice rm -f "tests/$tag"
  for p in /home /home/alice /safe_data /etc /usr/lib/slurm-tre; do
    assert_eq "$(same_dir_on "$p")" same "$p on both nodes"
  done
  for p in /var/spool/tre-spank /var/lib/tre-spank /var/spool/slurmd /var/log/slurm /tmp /run; do
    assert_eq "$(same_dir_on "$p")" separate "$p on both nodes"
  done
  # tbnode2's node-local directories, seen from tbnode, are its own.
  assert_eq "$(bed exec stat -c %d:%i "$(node_path tbnode2 /var/spool/tre-spank)")" \
    "$(on_node tbnode2 stat -c %d:%i /var/spool/tre-spank)" "node_path of tbnode2's /var/spool/tre-spank"
  assert_eq "$(on_node tbnode2 stat -c %a /var/spool/tre-spank)" 700 "mode of tbnode2's /var/spool/tre-spank"
  # munge works on both (one key, tbnode's munged).
  on_node tbnode2 sh -c 'munge -n | unmunge >/dev/null' || fail "munge on tbnode2"
  assert_nodes_idle
}

test_multinode_bed_batch_job_on_two_nodes_runs_steps_on_both() {
  local job out
  as alice sh -c 'mkdir -p ~/tests && cat > ~/tests/multinode.sh' <<'SCRIPT'
#!/bin/sh
srun hostname
# Each node's step is in a job cgroup of its own freezer tree (its cgroup namespace).
srun -N2 sh -c 'p=$(sed -n "s/^[0-9]*:freezer://p" /proc/self/cgroup)
  test -d "/sys/fs/cgroup/freezer$p" && echo "cgroup $(hostname) $p"'
SCRIPT
  job=$(run_job alice -p multi -N2 multinode.sh)
  out=$(job_output alice "$job")
  assert_eq "$(grep -x 'tbnode2\|tbnode' <<<"$out" | sort | paste -sd, -)" tbnode,tbnode2 "hostnames of the job's step"
  grep -q "^cgroup tbnode /.*/job_$job/step_[0-9]*\$" <<<"$out" || fail "no step cgroup on tbnode: $out"
  grep -q "^cgroup tbnode2 /.*/job_$job/step_[0-9]*\$" <<<"$out" || fail "no step cgroup on tbnode2: $out"
  assert_eq "$(job_field "$job" JobState)" COMPLETED
  assert_eq "$(job_field "$job" ExitCode)" 0:0
  assert_eq "$(job_field "$job" NodeList)" tbnode,tbnode2
  assert_no_job_processes alice
  assert_nodes_idle
}

test_multinode_bed_slurmd_restart_restarts_both_nodes() {
  local a b
  a=$(on_node tbnode cat /run/slurmd.pid)
  b=$(on_node tbnode2 cat /run/slurmd.pid)
  bed exec /opt/tre-testbed/bed restart_slurmd
  [ "$(on_node tbnode cat /run/slurmd.pid)" != "$a" ] || fail "tbnode's slurmd was not restarted"
  [ "$(on_node tbnode2 cat /run/slurmd.pid)" != "$b" ] || fail "tbnode2's slurmd was not restarted"
  for _ in $(seq 50); do [ "$(nodes_state)" = idle ] && break; sleep 0.2; done
  assert_nodes_idle
  assert_eq "$(as alice srun -p multi -N2 hostname | sort | paste -sd, -)" tbnode,tbnode2 "after the restart"
}
