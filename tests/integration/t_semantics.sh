# Issue 10: everyday job semantics in a container (exit codes, stdin, interactive
# shells, signals, several tasks, environment, network, cgroups). Each test is a real job.

# The test image's own PATH (its config says PATH=/bin; the bed's users have
# /usr/sbin:/usr/bin:/sbin:/bin, so the host's PATH would show).
IMAGE_PATH=/bin

# A line describing the container environment; compared with sem_env_line.
# SEM_LEAK is set on the submitting side: it must not reach the container.
SEM_ENV_PROBE='echo "env: job=${SLURM_JOB_ID:+set} procid=${SLURM_PROCID:-unset} lang=${LANG:-unset} out=${TRE_OUTPUTS_DIR:-unset} in=${TRE_IN_CONTAINER:-unset} home=$HOME path=$PATH leak=${SEM_LEAK:-none}"'
sem_env_line() {  # sem_env_line PROCID
  echo "env: job=set procid=$1 lang=C.UTF-8 out=/safe_outputs in=1 home=/root path=$IMAGE_PATH leak=none"
}

# The job id of the most recent job of alice named NAME.
job_id_named() {
  bed exec scontrol -o show job | grep -F " JobName=$1 " | grep -o '^JobId=[0-9]*' | cut -d= -f2 | sort -n | tail -n 1
}

# run_in_pty U CMD: run CMD as U on a pseudo-terminal (script(1)), typing the lines
# of stdin one every PTY_PACE (default 1.5) seconds after a start-up pause (a line
# typed while a step runs would be that step's stdin); prints what the terminal showed.
run_in_pty() {
  local user=$1 cmd=$2
  as "$user" sh -c 'mkdir -p ~/tests && cat > ~/tests/pty-input'
  as "$user" env SEM_LEAK=secret PACE="${PTY_PACE:-1.5}" sh -c '(sleep 4; while IFS= read -r l; do printf "%s\n" "$l"; sleep $PACE; done < ~/tests/pty-input; sleep 3) | script -qec "$0" /dev/null' "$cmd" 2>&1
}

# The NUMBER of job J once its output shows it.
wait_number() {  # wait_number U J
  local n i
  for ((i = 0; i < 300; i++)); do
    n=$(job_number "$1" "$2" 2>/dev/null || true)
    [ -n "$n" ] && { echo "$n"; return 0; }
    sleep 0.2
  done
  fail "job $2 printed no NUMBER"
}

wait_file() {  # wait_file PATH (in the bed)
  local i
  for ((i = 0; i < 300; i++)); do
    bed exec test -e "$1" && return 0
    sleep 0.2
  done
  fail "$1 never appeared"
}

# ---- exit status ----

test_exit_3_in_a_batch_container_is_the_jobs_exit_code() {
  local job out
  job=$(run_job alice --tre-container=$IMAGE --wrap 'echo before; exit 3')
  out=$(job_output alice "$job")
  assert_line "$out" "before"
  assert_eq "$(job_field "$job" ExitCode)" 3:0
  assert_eq "$(job_field "$job" JobState)" FAILED
  # The user's own code is not dressed up as a runtime failure.
  assert_not_contains "$out" "tre-spank: /usr/bin/podman exited"
}

test_exit_3_in_an_srun_container_is_sruns_status_and_the_jobs_exit_code() {
  local out rc job name=sem-exit3-$$
  out=$(as alice srun -J "$name" --tre-container=$IMAGE sh -c 'echo step-ran; exit 3' 2>&1) && rc=0 || rc=$?
  assert_eq "$rc" 3 "srun's exit status"
  assert_line "$out" "step-ran"
  assert_not_contains "$out" "tre-spank: /usr/bin/podman exited"
  job=$(job_id_named "$name")
  [ -n "$job" ] || fail "no job named $name"
  assert_eq "$(job_field "$job" ExitCode)" 3:0
}

test_exit_3_of_a_step_inside_an_allocation_is_sruns_status() {
  local out
  # salloc runs its command on the host; the srun step is the container.
  out=$(as alice salloc -Q --tre-container=$IMAGE sh -c 'srun sh -c "exit 3"; echo "step status $?"' 2>&1)
  assert_line "$out" "step status 3"
}

test_a_command_missing_from_the_image_exits_127_with_the_supervisors_explanation() {
  local out rc job name=sem-127-$$
  out=$(as alice srun -J "$name" --tre-container=$IMAGE no-such-command-xyz 2>&1) && rc=0 || rc=$?
  assert_eq "$rc" 127 "srun's exit status"
  assert_contains "$out" "tre-spank: /usr/bin/podman exited with status 127: your command was not found in the image"
  job=$(job_id_named "$name")
  assert_eq "$(job_field "$job" ExitCode)" 127:0
}

test_a_batch_script_that_cannot_be_executed_fails_with_the_runtimes_message() {
  local job out
  as alice sh -c 'mkdir -p ~/tests && printf "#!/no/such/interpreter\necho NEVER-PRINTED\n" > ~/tests/badshebang.sh'
  job=$(run_job alice --tre-container=$IMAGE badshebang.sh)
  out=$(job_output alice "$job")
  # The runtime's own message names the script it could not execute.
  assert_contains "$out" "exec container process"
  assert_not_contains "$out" "NEVER-PRINTED"
  assert_eq "$(job_field "$job" JobState)" FAILED
}

# ---- stdin ----

test_stdin_reaches_the_container() {
  local out
  out=$(as alice sh -c 'echo data | srun --tre-container='$IMAGE' cat' 2>&1)
  assert_line "$out" "data"
}

test_multi_line_stdin_reaches_the_container_whole() {
  local out
  out=$(as alice sh -c 'seq 1 2000 | srun --tre-container='$IMAGE' sh -c "wc -l; echo in=\$container"' 2>&1)
  assert_line "$out" "2000"
  assert_line "$out" "in=podman"
}

# ---- interactive ----

test_srun_pty_gives_a_shell_in_the_container() {
  local out rc
  out=$(run_in_pty alice "srun --pty --tre-container=$IMAGE /bin/sh" <<EOF
echo IN=\$container TTY=\$(tty) TERM=\$TERM
$SEM_ENV_PROBE
exit 4
EOF
) && rc=0 || rc=$?
  assert_contains "$out" "IN=podman TTY=/dev/pts/"
  assert_not_contains "$out" "TERM= "
  assert_contains "$out" "$(sem_env_line 0)"
  assert_eq "$rc" 4 "exit status of the interactive step"
}

test_salloc_then_srun_steps_run_in_the_container() {
  local out
  out=$(PTY_PACE=5 run_in_pty alice "salloc -Q --tre-container=$IMAGE" <<'EOF'
srun sh -c 'echo step1=$container'
srun sh -c 'echo step2=$container; exit 5'; echo status=$?
exit
EOF
)
  assert_contains "$out" "step1=podman"
  assert_contains "$out" "step2=podman"
  assert_contains "$out" "status=5"
}

# ---- signals ----

# A trap that appends one line per delivery, and a loop that keeps the shell
# responsive until the stop file appears: a shell runs a trap only between commands,
# but `wait` returns at once for a trapped signal, so deliveries a few milliseconds
# apart (a second copy passed on by a runtime) each run the trap.
SEM_TRAP_LOOP='trap "echo got >> /safe_outputs/usr1" USR1; touch /safe_outputs/ready; i=0; while [ $i -lt 120 ] && [ ! -e /safe_outputs/stop ]; do sleep 0.5 & wait $!; i=$((i+1)); done; echo loop-done'

# signal_and_count U JOB N SCANCEL-ARGS...: wait for the trap, signal, stop, count.
signal_and_count() {
  local user=$1 job=$2 n=$3; shift 3
  wait_file "/home/$user/outputs-$n/ready"
  bed exec scancel "$@" "$job"
  sleep 3
  bed exec runuser -u "$user" -- touch "/home/$user/outputs-$n/stop"
  wait_job "$job"
  bed exec sh -c "cat /home/$user/outputs-$n/usr1 2>/dev/null | wc -l"
}

# Step-wide signals (scancel --signal, --full, srun's Ctrl-C) reach every process of the
# step directly, and podman's signal proxy passes the copy podman got to the container
# too: a trap may run twice (docs/job-semantics.md); the supervisor adds no third.
assert_once_or_twice() {  # assert_once_or_twice COUNT WHAT
  [ "$1" -ge 1 ] && [ "$1" -le 2 ] || fail "expected the trap to run once or twice ($2), ran $1 times"
}

test_scancel_usr1_reaches_a_trap_in_an_srun_step() {
  local job n count
  # The batch step runs on the host; the srun step is the container.
  job=$(submit alice --wrap "srun --tre-container=$IMAGE sh -c '$SEM_TRAP_LOOP'")
  n=$(wait_number alice "$job")
  count=$(signal_and_count alice "$job" "$n" --signal=USR1)
  assert_once_or_twice "$count" "scancel --signal=USR1"
  assert_contains "$(job_output alice "$job")" "loop-done"
}

test_scancel_batch_usr1_reaches_a_trap_in_the_batch_script_exactly_once_each_time() {
  local job n count
  job=$(submit alice --tre-container=$IMAGE --wrap "$SEM_TRAP_LOOP")
  n=$(wait_number alice "$job")
  wait_file "/home/alice/outputs-$n/ready"
  # Two separate signals are two deliveries (the supervisor's step-wide check does not
  # swallow the second).
  bed exec scancel --batch --signal=USR1 "$job"
  sleep 2
  count=$(signal_and_count alice "$job" "$n" --batch --signal=USR1)
  assert_eq "$count" 2 "trap runs once for each of two scancel -b --signal=USR1"
  assert_contains "$(job_output alice "$job")" "loop-done"
  assert_eq "$(job_field "$job" ExitCode)" 0:0
}

test_scancel_full_usr1_reaches_a_trap_in_the_batch_script() {
  local job n count
  job=$(submit alice --tre-container=$IMAGE --wrap "$SEM_TRAP_LOOP")
  n=$(wait_number alice "$job")
  count=$(signal_and_count alice "$job" "$n" --full --signal=USR1)
  assert_once_or_twice "$count" "scancel --full --signal=USR1"
  assert_contains "$(job_output alice "$job")" "loop-done"
}

test_time_limit_sigterm_reaches_a_trap_once_within_killwait() {
  local job n count
  job=$(submit alice --tre-container=$IMAGE --time=1 --wrap '
    trap "echo term >> /safe_outputs/term; exit 0" TERM
    touch /safe_outputs/ready
    while :; do sleep 0.5; done')
  n=$(wait_number alice "$job")
  wait_file "/home/alice/outputs-$n/ready"
  wait_job "$job" 200
  assert_eq "$(job_field "$job" JobState)" TIMEOUT
  count=$(bed exec sh -c "cat /home/alice/outputs-$n/term 2>/dev/null | wc -l")
  assert_eq "$count" 1 "trap runs once for the time limit's SIGTERM"
  assert_no_job_processes alice
}

# ---- several tasks ----

test_two_tasks_each_run_in_the_container_with_their_procid() {
  local out
  out=$(as alice env SEM_LEAK=secret srun -n2 --tre-container=$IMAGE sh -c 'echo "task=$SLURM_PROCID c=$container"; '"$SEM_ENV_PROBE" 2>&1)
  assert_line "$out" "task=0 c=podman"
  assert_line "$out" "task=1 c=podman"
  assert_line "$out" "$(sem_env_line 0)"
  assert_line "$out" "$(sem_env_line 1)"
  assert_eq "$(grep -c '^Running:' <<<"$out")" 1 "Running: lines (task 0 prints it)"
}

test_two_tasks_starting_at_once_share_the_jobs_runtime_dir_repeatedly() {
  local out i
  for i in 1 2 3; do
    out=$(as alice srun -n2 --tre-container=$IMAGE sh -c 'echo "ok $SLURM_PROCID"' 2>&1) || fail "run $i failed: $out"
    assert_line "$out" "ok 0"
    assert_line "$out" "ok 1"
  done
  out=$(as alice salloc -Q -n2 --tre-container=$IMAGE sh -c 'srun -n2 sh -c "echo a\$SLURM_PROCID"; srun -n2 sh -c "echo b\$SLURM_PROCID"' 2>&1)
  for i in a0 a1 b0 b1; do assert_line "$out" "$i"; done
}

# ---- environment ----

test_batch_container_environment_is_the_documented_one() {
  local job out
  job=$(as alice env SEM_LEAK=secret TZ=Europe/London sh -c "mkdir -p ~/tests && cd ~/tests && sbatch --parsable -o %j.out --tre-container=$IMAGE --wrap '$SEM_ENV_PROBE; echo tz=\$TZ'")
  wait_job "$job"
  out=$(job_output alice "$job")
  assert_line "$out" "$(sem_env_line 0)"
  assert_line "$out" "tz=Europe/London"
}

test_srun_container_environment_is_the_documented_one() {
  local out
  out=$(as alice env SEM_LEAK=secret srun --tre-container=$IMAGE sh -c "$SEM_ENV_PROBE; env | grep -c '^SLURM_' | sed 's/^/slurm-vars=/'" 2>&1)
  assert_line "$out" "$(sem_env_line 0)"
  grep -q '^slurm-vars=[1-9][0-9]' <<<"$out" || fail "few SLURM_ variables inside: $out"
}

# ---- network ----

interfaces_probe='tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d " " | sort | tr "\n" " "; echo'

test_network_none_leaves_only_loopback() {
  local out
  with_config $'[podman]\nnetwork = "none"'
  out=$(as alice srun --tre-container=$IMAGE sh -c "echo ifs: \$($interfaces_probe)" 2>&1)
  assert_contains "$out" "--network=none"
  assert_line "$out" "ifs: lo"
}

test_network_private_has_its_own_namespace() {
  local out host
  with_config $'[podman]\nnetwork = "private"'
  host=$(bed exec readlink /proc/self/ns/net)
  out=$(as alice srun --tre-container=$IMAGE sh -c 'echo "netns: $(readlink /proc/self/ns/net)"' 2>&1)
  assert_contains "$out" "--network=private"
  grep -q '^netns: net:' <<<"$out" || fail "the container did not run: $out"
  assert_not_contains "$out" "netns: $host"
}

test_network_host_server_in_the_container_is_reachable_from_the_node() {
  local job n reply i port=18$((RANDOM % 900 + 100))
  with_config $'[podman]\nnetwork = "host"'
  job=$(submit alice --tre-container=$IMAGE --wrap "echo served-from-container > /scratch/index.html; touch /safe_outputs/ready; exec httpd -f -p 127.0.0.1:$port -h /scratch")
  n=$(wait_number alice "$job")
  wait_file "/home/alice/outputs-$n/ready"
  for ((i = 0; i < 50; i++)); do
    reply=$(bed exec bash -c "exec 3<>/dev/tcp/127.0.0.1/$port && printf 'GET /index.html HTTP/1.0\r\n\r\n' >&3 && cat <&3" 2>/dev/null || true)
    grep -q served-from-container <<<"$reply" && break
    sleep 0.2
  done
  bed exec scancel "$job"
  wait_job "$job"
  assert_contains "$reply" "served-from-container"
  assert_contains "$(job_output alice "$job")" "--network=host"
}

test_network_default_is_host() {
  local out host
  with_config ''
  host=$(bed exec readlink /proc/self/ns/net)
  out=$(as alice srun --tre-container=$IMAGE sh -c 'echo "netns: $(readlink /proc/self/ns/net)"' 2>&1)
  assert_contains "$out" "--network=host"
  assert_line "$out" "netns: $host"
}

# ---- resources ----

test_container_processes_stay_in_the_jobs_cgroup() {
  local job pid sup cg supcg i
  job=$(submit alice --tre-container=$IMAGE --wrap 'sleep 123')
  # shellcheck disable=SC2064 # the job id is known now, and is what the trap must cancel
  trap "bed exec scancel $job" EXIT
  wait_running "$job"
  for ((i = 0; i < 100; i++)); do
    pid=$(job_processes alice | awk '$2 == "sleep" && $3 == "123" {print $1}' | head -n 1)
    [ -n "$pid" ] && break
    sleep 0.2
  done
  [ -n "$pid" ] || fail "the container's sleep 123 never started"
  sup=$(job_processes alice | awk '$2 ~ /tre-spank$/ && $3 == "launch" {print $1}' | head -n 1)
  [ -n "$sup" ] || fail "no tre-spank launch process"
  cg=$(bed exec grep freezer "/proc/$pid/cgroup")
  supcg=$(bed exec grep freezer "/proc/$sup/cgroup")
  bed exec scancel "$job"
  wait_job "$job"
  assert_contains "$cg" "/job_$job/step_batch"
  assert_eq "$cg" "$supcg" "the container's freezer cgroup vs the task's"
  assert_no_job_processes alice
}
