# Issue 16 point 9: job ids that come back. A controller that lost its state numbers
# jobs from FirstJobId again, and ids wrap at MaxJobId: a later job then has the id of
# an earlier one. Its NUMBER (a keyed hash of the id, the restart count and the submit
# time the controller recorded) is its own, so it never fails on, nor adopts, what the
# earlier job left: its outputs-N, its node record, its scratch. docs/threat-model.md.

# reset_slurmctld [KEY=VALUE...]: slurmctld stopped, its state (StateSaveLocation)
# cleared, started again (with these slurm.conf settings, in place of the bed's, for as
# long as this test runs); returns once every node is idle. The next job gets
# FirstJobId (1 by default).
reset_slurmctld() {
  clean_slate || return 1
  if [ $# -gt 0 ]; then
    bed exec sh -c 'c=/etc/slurm/slurm.conf; [ -e $c.jobids-saved ] || cp -p $c $c.jobids-saved
      cp -p $c.jobids-saved $c && for kv; do sed -i "/^${kv%%=*}=/d" $c; echo "$kv" >> $c; done' sh "$@"
    trap 'restore_slurm_conf_after_jobids' EXIT
  fi
  bed exec sh -c 'p=$(cat /run/slurmctld.pid) && kill "$p" &&
    for i in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    ! kill -0 "$p" 2>/dev/null && rm -rf /var/spool/slurmctld/* && slurmctld' ||
    fail "slurmctld did not restart"
  # Job ids start again at the first: the output files of earlier jobs with those ids
  # (~/tests/<id>.out) would be read as the new jobs' by the tests that follow, before
  # the new job has written its own. The queue is empty here (clean_slate).
  bed exec sh -c 'rm -f /home/*/tests/*.out'
  local i
  for ((i = 0; i < 300; i++)); do
    [ "$(nodes_state 2>/dev/null)" = idle ] && return 0
    sleep 0.2
  done
  fail "the nodes did not come back idle after the controller reset: $(nodes_state)"
}
# The bed's slurm.conf again, and a controller that reads it (its state cleared too:
# the ids the test used are the test's business).
restore_slurm_conf_after_jobids() {
  bed exec sh -c 'c=/etc/slurm/slurm.conf; [ ! -e $c.jobids-saved ] || mv $c.jobids-saved $c'
  reset_slurmctld >/dev/null 2>&1 || true
}

test_a_job_that_reuses_an_id_after_a_controller_reset_completes_with_its_own_number() {
  local old new n_old n_new before out
  reset_slurmctld
  old=$(run_job alice --tre-container=$IMAGE --wrap 'echo earlier > /safe_outputs/which')
  assert_eq "$(job_field "$old" JobState)" COMPLETED "$(job_output alice "$old")"
  n_old=$(job_number alice "$old")
  [ -n "$n_old" ] || fail "job $old printed no NUMBER"
  before=$(fingerprint "/home/alice/outputs-$n_old")
  reset_slurmctld
  new=$(run_job alice --tre-container=$IMAGE --wrap 'echo later > /safe_outputs/which')
  assert_eq "$new" "$old" "the job id after the reset"
  out=$(job_output alice "$new")
  assert_eq "$(job_field "$new" JobState)" COMPLETED "$out"
  assert_not_contains "$out" "already exists"
  n_new=$(job_number alice "$new")
  { [ -n "$n_new" ] && [ "$n_new" != "$n_old" ]; } ||
    fail "NUMBER of the later job: '$n_new' (the earlier job's: $n_old)"
  assert_eq "$(number_of "$new")" "$n_new" "tre-spank number for the later job"
  assert_eq "$(as alice cat "outputs-$n_new/which")" later
  assert_eq "$(fingerprint "/home/alice/outputs-$n_old")" "$before" "the earlier job's outputs"
  assert_absent "/home/alice/scratch-$n_new"
  assert_node_idle
  as alice rm -rf "outputs-$n_old" "outputs-$n_new"
}

# The earlier job's cleanup could not finish (here: a directory of bob's in its scratch,
# which root does not empty), so its record stays on the node and its scratch, with
# what is left, in the home. The later job with its id neither takes that record for
# its own nor adopts those directories; the record is set aside for the sweep.
test_a_job_that_reuses_an_id_never_adopts_the_earlier_jobs_record_or_directories() {
  local old new n_old n_new before out
  reset_slurmctld
  old=$(submit alice --tre-container=$IMAGE --wrap 'echo earlier > /safe_outputs/which; echo s > /scratch/s
    i=0; while [ ! -e /scratch/.go ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done')
  wait_running "$old"
  n_old=$(wait_number alice "$old")
  for _ in $(seq 100); do bed exec test -e "/home/alice/scratch-$n_old/s" && break; sleep 0.2; done
  bed exec install -d -o bob -m 0755 "/home/alice/scratch-$n_old/bobs"
  as alice touch "scratch-$n_old/.go"
  wait_job "$old"
  assert_eq "$(job_field "$old" JobState)" COMPLETED
  assert_exists "/var/spool/tre-spank/job-$old.toml"
  assert_eq "$(bed exec ls -A "/home/alice/scratch-$n_old")" bobs "what the earlier job's cleanup left"
  before=$(fingerprint "/home/alice/outputs-$n_old" "/home/alice/scratch-$n_old")
  reset_slurmctld
  new=$(run_job alice --tre-container=$IMAGE --wrap 'echo later > /safe_outputs/which; echo "scratch: $(ls -A /scratch | tr "\n" " ")"')
  assert_eq "$new" "$old" "the job id after the reset"
  out=$(job_output alice "$new")
  assert_eq "$(job_field "$new" JobState)" COMPLETED "$out"
  n_new=$(job_number alice "$new")
  { [ -n "$n_new" ] && [ "$n_new" != "$n_old" ]; } ||
    fail "NUMBER of the later job: '$n_new' (the earlier job's: $n_old)"
  assert_line "$out" "scratch: .tre-spank-job "
  assert_eq "$(as alice cat "outputs-$n_new/which")" later
  assert_eq "$(fingerprint "/home/alice/outputs-$n_old" "/home/alice/scratch-$n_old")" "$before" "the earlier job's directories"
  assert_contains "$(slurmd_log)" "tre-spank: job $new: the record on this node was an earlier job's with the same id: kept as retired-$old-$n_old.toml for the sweep"
  assert_absent "/var/spool/tre-spank/job-$new.toml"
  assert_absent "/home/alice/scratch-$n_new"
  assert_node_idle
  # Once bob's directory is gone, the sweep removes what the retired record names.
  bed exec rm -rf "/home/alice/scratch-$n_old/bobs"
  bed exec tre-spank sweep >/dev/null
  assert_absent "/home/alice/scratch-$n_old"
  assert_absent "/var/spool/tre-spank/retired-$old-$n_old.toml"
  assert_eq "$(as alice cat "outputs-$n_old/which")" earlier
  as alice rm -rf "outputs-$n_old" "outputs-$n_new"
}

# A real wrap: ids run from FirstJobId to MaxJobId and start again, once the controller
# has purged the earlier job (MinJobAge). The job that gets the id again completes with
# its own NUMBER; the earlier job's outputs stay as they were.
test_a_job_that_gets_an_id_again_after_maxjobid_completes_with_its_own_number() {
  local old new n_old n_new before out i fillers=()
  reset_slurmctld FirstJobId=7001 MaxJobId=7002 MinJobAge=2
  old=$(run_job alice --tre-container=$IMAGE --wrap 'echo earlier > /safe_outputs/which')
  assert_eq "$old" 7001 "the first id"
  n_old=$(job_number alice "$old")
  assert_eq "$(as alice cat "outputs-$n_old/which")" earlier "$(job_output alice "$old")"
  before=$(fingerprint "/home/alice/outputs-$n_old")
  # Two ids: once the controller has purged job 7001 (MinJobAge), it hands that id out
  # again. A job that gets 7002 on the way is a filler (its outputs go at the end).
  for ((i = 0; i < 4; i++)); do
    new=$(run_job alice --tre-container=$IMAGE --wrap 'echo later > /safe_outputs/which')
    [ "$new" = "$old" ] && break
    fillers+=("outputs-$(job_number alice "$new")")
  done
  assert_eq "$new" "$old" "the id after the wrap (fillers: ${fillers[*]})"
  out=$(job_output alice "$new")
  assert_not_contains "$out" "already exists"
  n_new=$(job_number alice "$new")
  { [ -n "$n_new" ] && [ "$n_new" != "$n_old" ]; } ||
    fail "NUMBER of the later job: '$n_new' (the earlier job's: $n_old)"$'\n'"$out"
  assert_eq "$(as alice cat "outputs-$n_new/which")" later "$out"
  assert_eq "$(fingerprint "/home/alice/outputs-$n_old")" "$before" "the earlier job's outputs"
  assert_absent "/home/alice/scratch-$n_new"
  assert_node_idle
  as alice rm -rf "outputs-$n_old" "outputs-$n_new" "${fillers[@]}"
}
