# Audit records: syslog (a busybox syslogd started in the bed for these tests; the bed
# has no syslog daemon of its own) and the slurmd log.

AUDIT_LOG=/var/log/tre-audit.log

start_syslogd() {
  bed exec sh -c 'test -S /dev/log && pgrep -f "^busybox syslogd -O '"$AUDIT_LOG"'" >/dev/null && exit 0
    rm -f /dev/log
    # -s: rotate late (the bookworm busybox never rotates and has no -s)
    rot=; busybox syslogd --help 2>&1 | grep -q -- "-s SIZE" && rot="-s 10000"
    busybox syslogd -O '"$AUDIT_LOG"' $rot
    for i in $(seq 50); do test -S /dev/log && exit 0; sleep 0.1; done; exit 1' ||
    fail "busybox syslogd did not start in the bed"
}

# audit_lines WHERE PATTERN: lines of the audit log (syslog) or slurmd log matching.
audit_lines() {
  case $1 in
    syslog) bed exec grep -a -- "$2" "$AUDIT_LOG" || true ;;
    slurmd) bed exec grep -a -- "$2" /var/log/slurm/slurmd.log || true ;;
  esac
}

wait_for_line() {  # wait_for_line WHERE PATTERN
  for _ in $(seq 50); do [ -n "$(audit_lines "$1" "$2")" ] && return 0; sleep 0.2; done
  fail "no line matching '$2' in the $1 log"
}

test_audit_records_start_and_end_of_a_container_run_in_syslog_and_slurmd_log() {
  local job n line
  start_syslogd
  job=$(run_job alice --tre-container=$IMAGE --wrap 'exit 3')
  n=$(job_number alice "$job")
  for where in syslog slurmd; do
    wait_for_line $where "tre-spank-audit event=start job=$job step=batch "
    wait_for_line $where "tre-spank-audit event=end job=$job step=batch "
  done
  line=$(audit_lines syslog "event=start job=$job ")
  assert_contains "$line" "tre-spank["
  assert_contains "$line" " task=0 user=alice uid=1001 project=proj1 safe_data=/safe_data/proj1 image=$IMAGE image_id="
  assert_contains "$line" " runtime=podman node="
  assert_contains "$line" " outputs=/home/alice/outputs-$n start=20"
  line=$(audit_lines syslog "event=end job=$job ")
  assert_contains "$line" " outputs=/home/alice/outputs-$n start=20"
  assert_contains "$line" " exit=3"
}

test_audit_records_a_refusal_on_the_node() {
  local job line
  start_syslogd
  job=$(run_job bob --tre-container=$IMAGE --wrap true)
  wait_for_line syslog "event=refused where=node job=$job "
  line=$(audit_lines syslog "event=refused where=node job=$job ")
  assert_contains "$line" "user=bob uid=1002 image=$IMAGE "
  assert_contains "$line" 'reason="Cannot open project data: '
  wait_for_line slurmd "event=refused where=node job=$job "
}

test_audit_records_a_refusal_at_submission() {
  start_syslogd
  as mallory sbatch --tre-container=docker.io/evil/x:1 --wrap true >/dev/null 2>&1 && fail "sbatch accepted"
  wait_for_line syslog 'event=refused where=submit user=mallory uid=1005 image=docker.io/evil/x:1 '
}
