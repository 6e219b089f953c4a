# Steps end at once and leave nothing (issue 17): what podman leaves behind when a
# container exits (conmon's clean-up, the rootless pause process) must not stay in the
# step, or slurmstepd's process tracking kills it and sleeps a whole second before the
# step can end. These run several steps and tasks of one job side by side: each step
# has a user namespace of its own (the supervisor's, see
# test_the_supervisor_makes_podmans_user_namespace_...), or, where podman makes its own,
# they share one pause process per job runtime directory.

# step_end_gap J STEP: milliseconds from the plugin's audit record of the container's
# end to slurmstepd's "done with step" (Slurm 22.05: "done with job") for step J.STEP,
# from slurmd's log. slurmstepd sleeps one second after killing what is left in a step
# (proctrack's first poll), so a gap under 900 ms means nothing was left; load can only
# make the gap longer.
# The last such pair in the log: job ids start again after the controller resets of
# t_jobids, so an earlier job may have had this id. awk reads the whole log (exiting at
# the first match would end `cat` with SIGPIPE, a failure under pipefail).
step_end_gap() {
  bed exec cat /var/log/slurm/slurmd.log | awk -v s="[$1.$2]" '
    function ms(l,  t) { t = substr(l, 13, 12); return ((substr(t,1,2)*60 + substr(t,4,2))*60 + substr(t,7,6))*1000 }
    index($0, s " tre-spank-audit event=end ") { e = ms($0) }
    (index($0, s " done with step") || index($0, s " done with job")) && e { g = int(ms($0) - e); e = 0 }
    END { if (g != "") print g }'
}

assert_step_ended_without_the_poll() {
  local gap
  gap=$(step_end_gap "$1" "$2")
  [ -n "$gap" ] || fail "no end record and 'done with step/job' for $1.$2 in slurmd's log"
  [ "$gap" -lt 900 ] || fail "step $1.$2 took $gap ms after its container ended (slurmstepd waited for leftovers)"
}

test_a_container_step_ends_as_soon_as_its_container() {
  local out job
  out=$(as alice srun --tre-container=$IMAGE sh -c 'echo "job=$SLURM_JOB_ID"' 2>&1)
  job=$(sed -n 's/^job=//p' <<<"$out")
  [ -n "$job" ] || fail "no job id in: $out"
  assert_step_ended_without_the_poll "$job" 0
  assert_no_job_processes alice
}

test_a_container_batch_job_ends_as_soon_as_its_container() {
  local job
  job=$(run_job alice --tre-container=$IMAGE --wrap 'echo done')
  assert_eq "$(job_field "$job" JobState)" COMPLETED
  assert_contains "$(job_output alice "$job")" "done"
  assert_step_ended_without_the_poll "$job" batch
  assert_no_job_processes alice
}

# Two steps of one job at once, in both orders of ending, over the job's one storage; a
# third step afterwards still runs.
test_concurrent_steps_of_one_job_all_end_cleanly() {
  local job out
  job=$(run_job alice -n2 --tre-container=$IMAGE --tre-batch=host --wrap '
    srun -n1 --exact sh -c "sleep 3; echo long-first" &
    sleep 1
    srun -n1 --exact sh -c "echo short-second" &
    wait
    srun -n1 --exact sh -c "sleep 1; echo short-first" &
    sleep 0.3
    srun -n1 --exact sh -c "sleep 3; echo long-second" &
    wait
    srun -n1 sh -c "echo after; ls /safe_outputs >/dev/null && echo mounts-ok"
    echo "steps done"')
  out=$(job_output alice "$job")
  assert_eq "$(job_field "$job" JobState)" COMPLETED "$out"
  for l in long-first short-second short-first long-second after mounts-ok "steps done"; do
    assert_line "$out" "$l"
  done
  assert_not_contains "$out" "Error"
  # Step 2 is not checked: where podman makes its own namespace (a user without
  # subordinate ids), step 2 made the pause process that step 3 still uses, leaves it,
  # and Slurm ends it with step 2 after its poll.
  assert_step_ended_without_the_poll "$job" 0
  assert_step_ended_without_the_poll "$job" 1
  assert_step_ended_without_the_poll "$job" 3
  assert_step_ended_without_the_poll "$job" 4
  assert_no_job_processes alice
}

# Tasks of one step share the pause process: the task that ends last ends it, so the
# step ends without the poll whichever task made it.
test_a_multi_task_step_with_tasks_ending_apart_ends_cleanly() {
  local out job delay
  for delay in 'SLURM_PROCID * 2' '(1 - SLURM_PROCID) * 2'; do
    out=$(as alice srun -n2 --tre-container=$IMAGE sh -c "sleep \$(($delay)); echo task \$SLURM_PROCID of \$SLURM_JOB_ID" 2>&1)
    job=$(sed -n 's/^task 0 of //p' <<<"$out")
    [ -n "$job" ] || fail "task 0 did not run: $out"
    assert_line "$out" "task 1 of $job"
    assert_step_ended_without_the_poll "$job" 0
  done
  assert_no_job_processes alice
}

# Two jobs of one user on one node at once: each has its own runtime directory and
# pause process, and neither ending disturbs the other.
test_two_jobs_of_one_user_on_one_node_at_once_both_complete() {
  local a b
  a=$(submit alice --tre-container=$IMAGE -w tbnode --wrap 'sleep 4; echo first')
  b=$(submit alice --tre-container=$IMAGE -w tbnode --wrap 'sleep 1; echo second')
  wait_job "$a"
  wait_job "$b"
  assert_eq "$(job_field "$a" JobState)" COMPLETED "$(job_output alice "$a")"
  assert_eq "$(job_field "$b" JobState)" COMPLETED "$(job_output alice "$b")"
  assert_line "$(job_output alice "$a")" first
  assert_line "$(job_output alice "$b")" second
  assert_step_ended_without_the_poll "$a" batch
  assert_step_ended_without_the_poll "$b" batch
  assert_no_job_processes alice
}

# scancel while a step runs: the container is killed and nothing is left (Slurm kills
# the step; the pause process goes with it).
test_scancel_of_a_running_srun_step_leaves_no_process() {
  local job
  job=$(submit alice --tre-container=$IMAGE --tre-batch=host --wrap 'srun sleep 300')
  wait_running "$job"
  wait_job_process alice 'sleep 300'
  bed exec scancel "$job"
  wait_job "$job"
  assert_eq "$(job_field "$job" JobState)" CANCELLED
  assert_no_job_processes alice
}

# The supervisor makes podman's user namespace (podman.user_namespace = "tre-spank",
# the default): podman is its direct child, in a namespace of its own mapped as podman
# maps it (the user at 0, the user's /etc/subuid range from 1), started once (no copy of
# itself waiting outside), and no pause process is made. The user's groups still reach
# the project's data.
test_the_supervisor_makes_podmans_user_namespace_with_podmans_maps_and_no_pause_process() {
  local job sup pod uid sub want got
  job=$(submit alice --tre-container=$IMAGE --wrap 'cat /safe_data/README.txt >/dev/null && echo data-ok; sleep 4; echo done')
  wait_job_process alice 'sleep 4'
  sup=$(bed exec pgrep -o -u alice -f '^/usr/sbin/tre-spank launch .* --user-namespace --') || fail "no supervisor with --user-namespace"
  pod=$(bed exec pgrep -u alice -P "$sup" -x podman) || fail "podman is not the supervisor's child"
  [ "$(wc -w <<<"$pod")" = 1 ] || fail "more than one podman under the supervisor: $pod"
  [ -z "$(bed exec pgrep -u alice -P "$pod" -x podman)" ] || fail "podman started a copy of itself"
  [ "$(bed exec readlink "/proc/$sup/ns/user")" != "$(bed exec readlink "/proc/$pod/ns/user")" ] ||
    fail "podman runs in the supervisor's user namespace"
  uid=$(bed exec id -u alice)
  sub=$(bed exec awk -F: '$1 == "alice" { print $2, $3; exit }' /etc/subuid)
  want="0 $uid 1|1 $sub"
  got=$(bed exec cat "/proc/$pod/uid_map" | awk '{ print $1, $2, $3 }' | paste -sd'|')
  assert_eq "$got" "$want" "podman's uid map"
  bed exec cat "/proc/$pod/environ" | tr '\0' '\n' | grep -qx '_CONTAINERS_USERNS_CONFIGURED=done' ||
    fail "podman was not told its namespace is made"
  for p in $(bed exec pgrep -u alice -x catatonit) $(bed exec pgrep -u alice -f '^podman pause'); do
    ! is_job_pause_process "$p" || fail "a pause process for the job: $(bed exec ps -o args= -p "$p")"
  done
  wait_job "$job"
  assert_eq "$(job_field "$job" JobState)" COMPLETED "$(job_output alice "$job")"
  assert_line "$(job_output alice "$job")" data-ok
  assert_line "$(job_output alice "$job")" "done"
  assert_step_ended_without_the_poll "$job" batch
  assert_no_job_processes alice
}

# podman.user_namespace = "podman": podman makes its own namespace and pause process,
# as by hand; the supervisor still ends the pause process, so steps end at once, alone
# and side by side.
test_with_podmans_own_user_namespace_steps_still_end_at_once_and_leave_nothing() {
  local job out
  with_config '[podman]
user_namespace = "podman"'
  job=$(submit alice -n2 --tre-container=$IMAGE --tre-batch=host --wrap '
    srun -n1 --exact sh -c "sleep 3; echo long" &
    sleep 1
    srun -n1 --exact sh -c "echo short" &
    wait
    srun -n2 sh -c "sleep \$((SLURM_PROCID * 2)); echo task \$SLURM_PROCID"
    echo "steps done"')
  # The container's own sleep (srun's argv on the host names it too, before any step).
  wait_job_process alice ' sleep 3$'
  bed exec pgrep -u alice -f '^/usr/sbin/tre-spank launch ' >/dev/null || fail "no supervisor"
  ! bed exec pgrep -u alice -f '^/usr/sbin/tre-spank launch .* --user-namespace --' >/dev/null ||
    fail "the supervisor was asked to make the namespace"
  local p found=
  for p in $(bed exec pgrep -u alice -x catatonit) $(bed exec pgrep -u alice -f '^podman pause'); do
    is_job_pause_process "$p" && found=1
  done
  [ -n "$found" ] || fail "podman made no pause process of its own"
  wait_job "$job"
  out=$(job_output alice "$job")
  assert_eq "$(job_field "$job" JobState)" COMPLETED "$out"
  for l in long short "task 0" "task 1" "steps done"; do assert_line "$out" "$l"; done
  assert_step_ended_without_the_poll "$job" 0
  assert_step_ended_without_the_poll "$job" 1
  assert_step_ended_without_the_poll "$job" 2
  assert_no_job_processes alice
}

# The exit guard (podman.exit_guard, default on; podman 5 and later): podman runs the
# package's conmon wrapper, whose conmon has the guard as its exit command instead of a
# second podman;
# the step still removes its container (its record is gone from the job's run root
# after the step) and leaves nothing. With the guard off, conmon runs podman's own
# clean-up, as by hand.
podman_major() { bed exec podman --version | sed -n 's/^podman version \([0-9]*\)\..*/\1/p'; }
conmon_args_of_the_job() {  # U JOB: the args of JOB's running conmon (<= 15 s), a word per line
  local pid i args
  # Only JOB's: its conmon names the job's run root (another job of U may still be ending).
  for ((i = 0; i < 75; i++)); do
    for pid in $(bed exec pgrep -u "$1" -x conmon); do
      args=$(bed exec cat "/proc/$pid/cmdline" 2>/dev/null | tr '\0' '\n') || continue
      grep -q "/jobs/job-$2/" <<<"$args" && { printf '%s\n' "$args"; return 0; }
    done
    sleep 0.2
  done
  fail "no conmon of $1's job $2"
}
test_the_exit_guard_replaces_conmons_exit_command_and_the_container_is_still_removed() {
  local job out args
  job=$(submit alice --tre-container=$IMAGE --tre-batch=host --wrap '
    srun sh -c "sleep 3; echo step-one"
    for d in /run/tre-spank/jobs/job-$SLURM_JOB_ID/run /var/lib/tre-spank/jobs/job-$SLURM_JOB_ID/storage; do
      ls "$d/overlay-containers" 2>/dev/null; done | grep -v -e "^containers.lock$" -e "^volatile-containers.json$" -e "^containers.json$" || echo "no container left"
    srun sh -c "echo step-two"')
  wait_job_process alice 'sleep 3'
  args=$(conmon_args_of_the_job alice "$job")
  if [ "$(podman_major)" -ge 5 ]; then
    assert_line "$args" "exit-guard"
    assert_eq "$(sed -n '/^--exit-command$/{n;p;q}' <<<"$args")" /usr/sbin/tre-spank "conmon's exit command"
  else
    # podman 4 waits for its own clean-up before `podman run` exits: no guard there.
    assert_eq "$(sed -n '/^--exit-command$/{n;p;q}' <<<"$args")" /usr/bin/podman "conmon's exit command (podman 4)"
  fi
  wait_job "$job"
  out=$(job_output alice "$job")
  assert_eq "$(job_field "$job" JobState)" COMPLETED "$out"
  assert_line "$out" step-one
  assert_line "$out" "no container left"
  assert_line "$out" step-two
  assert_step_ended_without_the_poll "$job" 0
  assert_step_ended_without_the_poll "$job" 1
  assert_no_job_processes alice
}

test_with_the_exit_guard_off_conmon_runs_podmans_own_clean_up() {
  local job args
  with_config '[podman]
exit_guard = false'
  job=$(submit alice --tre-container=$IMAGE --wrap 'sleep 3; echo done-off')
  wait_job_process alice 'sleep 3'
  args=$(conmon_args_of_the_job alice "$job")
  assert_eq "$(sed -n '/^--exit-command$/{n;p;q}' <<<"$args")" /usr/bin/podman "conmon's exit command"
  ! grep -qx 'exit-guard' <<<"$args" || fail "the guard is there with exit_guard = false"
  wait_job "$job"
  assert_eq "$(job_field "$job" JobState)" COMPLETED "$(job_output alice "$job")"
  assert_line "$(job_output alice "$job")" done-off
  assert_step_ended_without_the_poll "$job" batch
  assert_no_job_processes alice
}

# The guard itself, as conmon runs it: once the podman it names is gone, it runs the
# clean-up command (every word as given) only while the container's record is there.
test_the_exit_guard_runs_podmans_clean_up_only_while_the_container_is_there() {
  local d=/tmp/tre-guard-test out
  bed exec rm -rf "$d"
  bed exec install -d -o alice "$d" "$d/root" "$d/run"
  printf '#!/bin/sh\nfor a; do echo "$a"; done > %s/ran\n' "$d" | bed exec sh -c "cat > $d/fake-podman; chmod 755 $d/fake-podman"
  # The guard answers at once and leaves a child to wait: wait for that child too.
  guard() {
    local i
    as alice /usr/sbin/tre-spank exit-guard 999999 1 -- "$d/fake-podman" --root "$d/root" \
      --runroot "$d/run" --log-level warning container cleanup --rm 89d0a1 || return 1
    for ((i = 0; i < 100; i++)); do
      bed exec pgrep -u alice -f '^/usr/sbin/tre-spank exit-guard' >/dev/null || return 0
      sleep 0.05
    done
    fail "the guard's child is still there after 5 s"
  }
  guard || fail "the guard failed with no record"
  assert_absent "$d/ran"
  bed exec install -d -o alice "$d/run/overlay-containers/89d0a1"
  guard || fail "the guard failed with a record"
  out=$(bed exec cat "$d/ran")
  assert_eq "$(paste -sd' ' <<<"$out")" "--root $d/root --runroot $d/run --log-level warning container cleanup --rm 89d0a1"
  bed exec rm -rf "$d"
}
