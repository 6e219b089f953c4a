# Audit records: syslog (a busybox syslogd started in the bed for these tests; the bed
# has no syslog daemon of its own) and the slurmd log. Syslog gets RFC 5424 records
# (the fields as structured data, parameters in name order); slurmd's log the
# `tre-spank-audit event=...` line (docs/audit-log.md).

AUDIT_LOG=/var/log/tre-audit.log
SD_ID='tre-spank-audit@32473'

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

# sd_pattern EVENT PARAM=VALUE...: a regex for a syslog record of EVENT whose
# structured data has these parameters (in name order, as RFC 5424 records have them
# here), e.g. sd_pattern start job=12 step=batch.
sd_pattern() {
  local p=" authpriv\\.info 1 [^ ]+ [^ ]+ tre-spank [0-9]+ [0-9]+ \\[$SD_ID .*event=\"$1\"" kv
  shift
  for kv in "$@"; do p+=".* ${kv%%=*}=\"${kv#*=}\""; done
  printf '%s' "$p"
}

# syslog_record PATTERN: the one syslog record matching the sd_pattern PATTERN.
syslog_record() { bed exec grep -a -E -- "$1" "$AUDIT_LOG" || true; }

wait_for_line() {  # wait_for_line WHERE PATTERN (syslog: an sd_pattern)
  local lines
  for _ in $(seq 50); do
    case $1 in
      syslog) lines=$(syslog_record "$2") ;;
      *) lines=$(audit_lines "$1" "$2") ;;
    esac
    [ -n "$lines" ] && return 0
    sleep 0.2
  done
  fail "no line matching '$2' in the $1 log"
}

test_audit_records_start_and_end_of_a_container_run_in_syslog_and_slurmd_log() {
  local job n line
  start_syslogd
  job=$(run_job alice --tre-container=$IMAGE --wrap 'exit 3')
  n=$(job_number alice "$job")
  wait_for_line slurmd "tre-spank-audit event=start job=$job step=batch "
  wait_for_line slurmd "tre-spank-audit event=end job=$job step=batch "
  wait_for_line syslog "$(sd_pattern start job="$job" step=batch)"
  wait_for_line syslog "$(sd_pattern end job="$job" step=batch)"
  line=$(syslog_record "$(sd_pattern start job="$job")")
  # MSGID 1 (start), the fields as parameters, MSG tre-spank-audit.
  [[ $line =~ " tre-spank "[0-9]+" 1 [$SD_ID " ]] || fail "not an RFC 5424 start record: $line"
  assert_contains "$line" "] tre-spank-audit"
  for kv in task=0 user=alice uid=1001 project=proj1 safe_data=/safe_data/proj1 "image=$IMAGE" \
    runtime=podman "outputs=/home/alice/outputs-$n"; do
    assert_contains "$line" " ${kv%%=*}=\"${kv#*=}\""
  done
  [[ $line =~ \ image_id=\"(sha256:[0-9a-f]{64}|unknown)\" ]] || fail "no image_id in $line"
  [[ $line =~ \ node=\"[^\"]+\" ]] || fail "no node in $line"
  [[ $line =~ \ start=\"20[0-9-]+T[0-9:]+Z\" ]] || fail "no start time in $line"
  line=$(syslog_record "$(sd_pattern end job="$job")")
  [[ $line =~ " tre-spank "[0-9]+" 2 [$SD_ID " ]] || fail "not an RFC 5424 end record: $line"
  assert_contains "$line" " outputs=\"/home/alice/outputs-$n\""
  [[ $line =~ \ end=\"20[0-9-]+T[0-9:]+Z\" ]] || fail "no end time in $line"
  assert_contains "$line" ' exit="3"'
  # slurmd's log has the line, in the documented order.
  line=$(audit_lines slurmd "tre-spank-audit event=start job=$job ")
  assert_contains "$line" " task=0 user=alice uid=1001 project=proj1 safe_data=/safe_data/proj1 image=$IMAGE image_id="
  assert_contains "$line" " outputs=/home/alice/outputs-$n start=20"
}

test_audit_records_a_refusal_on_the_node() {
  local job line
  start_syslogd
  job=$(run_job bob --tre-container=$IMAGE --wrap true)
  wait_for_line syslog "$(sd_pattern refused job="$job" where=node)"
  line=$(syslog_record "$(sd_pattern refused job="$job" where=node)")
  [[ $line =~ " tre-spank "[0-9]+" 3 [$SD_ID " ]] || fail "not an RFC 5424 refusal: $line"
  for kv in user=bob uid=1002 "image=$IMAGE"; do
    assert_contains "$line" " ${kv%%=*}=\"${kv#*=}\""
  done
  assert_contains "$line" ' reason="Cannot open project data: '
  wait_for_line slurmd "event=refused where=node job=$job "
}

test_audit_records_a_refusal_at_submission() {
  start_syslogd
  as mallory sbatch --tre-container=docker.io/evil/x:1 --wrap true >/dev/null 2>&1 && fail "sbatch accepted"
  wait_for_line syslog "$(sd_pattern refused image=docker.io/evil/x:1 uid=1005 user=mallory where=submit)"
}

test_audit_records_keep_a_hostile_value_on_one_line() {
  local line tag
  start_syslogd
  # A project with a newline, quotes and a bracket is refused at submission; its
  # record can neither start a line nor end its parameter early. (The tag tells this
  # run's record from earlier runs' in the same log.)
  tag=forged-$(date +%s%N)
  as mallory sbatch --tre-container=$IMAGE "--tre-project=$(printf 'x"] %s\nuser="root' "$tag")" \
    --wrap true >/dev/null 2>&1 && fail "sbatch accepted"
  for _ in $(seq 50); do
    line=$(syslog_record "$(sd_pattern refused user=mallory)" | grep -F -- "$tag" || true)
    [ -n "$line" ] && break
    sleep 0.2
  done
  [ -n "$line" ] || fail "no refusal record with the hostile project"
  assert_eq "$(grep -c . <<<"$line")" 1 "records with the hostile project"
  assert_contains "$line" "project=\"x\\\"\\] $tag\\\\x0auser=\\\"root\""
  [ -z "$(bed exec grep -a 'authpriv.info user=' "$AUDIT_LOG")" ] || fail "a forged line in the audit log"
}
