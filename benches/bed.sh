#!/bin/bash
# The in-bed half of benches/run: runs as root inside the test bed, measures, and prints
# one raw sample per line ("KEY SIDE VALUE"); benches/run computes the medians.
#
#   bed.sh p1p5 PAIRS RUNS RSSRUNS IMAGE   P1 (srun true) and P5 (slurmstepd peak RSS),
#                                          plugin loaded / not loaded, in alternated
#                                          batches (each a slurmd restart)
#   bed.sh p2 REPS IMAGE                   P2: srun --tre-container vs srun podman by hand
#   bed.sh p4 REPS IMAGE                   P4: spank prolog/epilog time from slurmd's own
#                                          debug log (slurmd restarted with -vv meanwhile)
#   bed.sh size                            P5: size of the installed plugin
#   bed.sh s1 REPS IMAGE [SIF]             S1: srun --tre-container vs srun true and the
#                                          bare runtime run by the user outside Slurm
#   bed.sh s2 REPS IMAGE                   S2: container batch job vs a batch job that
#                                          runs the bare podman run itself, to COMPLETED
#   bed.sh s3 TASKS PAIRS IMAGE            S3: a job array of container jobs vs the same
#                                          array running the bare podman run by hand
#
# Everything runs as the bed's user alice, one job at a time: before each timed run the
# queue is empty and the previous job's epilog has finished. Times are wall-clock, taken
# by the user's shell around the one command ($EPOCHREALTIME, microseconds). Any failed
# run aborts the whole benchmark: no sample is ever made up or skipped.
set -euo pipefail
export PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8

U=alice
UHOME=/home/alice
CONF=/etc/slurm/plugstack.conf.d/tre-spank.conf
PARKED=/etc/slurm/tre-spank.conf.bench-off
LOG=/var/log/slurm/slurmd.log
JOBS_DIR=/var/lib/tre-spank/jobs
RUN_DIR=/run/tre-spank/jobs
# This node (tbnode): the default partition's node, whose slurmd /run/slurmd.pid is.
# Other nodes of the bed are left alone; no job of the benchmark goes to them.
NODE=$(hostname)

die() { echo "bed.sh: $*" >&2; exit 1; }

# as_user CMD...: run CMD as alice in her home, with a login-like environment.
as_user() {
  runuser -u "$U" -- env -i -C "$UHOME" HOME="$UHOME" USER="$U" LOGNAME="$U" PATH="$PATH" \
    LANG=C.UTF-8 "$@"
}

# The timing shell, run as the user: prints "START END" around "$@" (stdin from
# /dev/null, output dropped); exits non-zero if the command failed.
# shellcheck disable=SC2016 # expanded by the user's shell
TIMED='t0=$EPOCHREALTIME; "$@" </dev/null >/dev/null 2>&1 || exit $?; t1=$EPOCHREALTIME; echo "$t0 $t1"'

# timed KEY SIDE [VAR=VALUE...] -- CMD...: one timed run as the user; prints "KEY SIDE SECONDS".
timed() {
  local key=$1 side=$2 envs=() t
  shift 2
  while [ "$1" != -- ]; do envs+=("$1"); shift; done
  shift
  t=$(as_user "${envs[@]}" bash -c "$TIMED" bash "$@") || die "$key $side: '$*' failed"
  awk -v k="$key" -v s="$side" '{ printf "%s %s %.6f\n", k, s, $2 - $1 }' <<<"$t"
}

wait_queue_empty() {  # the previous job is gone, including its epilog (<= 300 s)
  # A time bound, not a count of polls: on a loaded machine (load 30+) each poll takes
  # a while, and 200 epilogs after an array can take minutes.
  local until=$((SECONDS + 300))
  while [ "$SECONDS" -lt "$until" ]; do
    [ -z "$(squeue -h 2>/dev/null)" ] && [ "$(sinfo -h -n "$NODE" -o %T)" = idle ] && return 0
    sleep 0.05
  done
  die "the queue did not empty in 300 s"
}

restart_slurmd() {  # restart_slurmd [SLURMD-ARGS...]: and wait until the node is idle
  local p i
  if p=$(cat /run/slurmd.pid 2>/dev/null); then
    kill "$p" 2>/dev/null || true
    for i in $(seq 300); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
    kill -0 "$p" 2>/dev/null && die "slurmd $p did not stop"
  fi
  rm -f /run/slurmd.pid
  slurmd "$@"
  for i in $(seq 600); do scontrol show slurmd >/dev/null 2>&1 && break; sleep 0.1; done
  scontrol show slurmd >/dev/null 2>&1 || die "slurmd did not start"
  wait_queue_empty
}

plugin_on() { [ -e "$CONF" ] || mv "$PARKED" "$CONF"; }
plugin_off() { [ -e "$PARKED" ] || mv "$CONF" "$PARKED"; }

# Whatever happens, the bed is left with the plugin loaded and slurmd at its usual level.
restore() {
  local rc=$?
  if [ -e "$PARKED" ] || [ -n "${RESTART_ON_EXIT:-}" ]; then
    [ -e "$CONF" ] || mv "$PARKED" "$CONF"
    restart_slurmd || rc=1
  fi
  # Outputs directories of the benchmark's jobs (kept by design) and by-hand state.
  if [ -n "${OUTPUTS_BEFORE+x}" ]; then
    comm -13 <(printf '%s\n' "$OUTPUTS_BEFORE") <(outputs_dirs) | while read -r d; do
      if [ -n "$d" ]; then rm -rf -- "${UHOME:?}/$d"; fi
    done
  fi
  rm -rf -- "$UHOME/outputs-bench" "$UHOME/scratch-bench" "$JOBS_DIR/job-bench" "$JOBS_DIR/job-bench-cold" \
    "$RUN_DIR/job-bench" "$RUN_DIR/job-bench-cold"
  exit $rc
}
outputs_dirs() { find "$UHOME" -mindepth 1 -maxdepth 1 -name 'outputs-*' -printf '%f\n' | sort; }

# The main slurmstepd of step J.0 (not its forked task children): prints its pid.
step_stepd() {
  local p c pp
  for p in /proc/[0-9]*; do
    c=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue
    case $c in "slurmstepd: ["*".0]"*) ;; *) continue ;; esac
    pp=$(awk '{ print $4 }' "$p/stat" 2>/dev/null) || continue
    [ "$(cat "/proc/$pp/comm" 2>/dev/null)" = slurmstepd ] && continue
    echo "${p#/proc/}"
    return 0
  done
  return 1
}

# rss SIDE SRUN-ARGS...: peak RSS (VmHWM, kB) of the step's slurmstepd, sampled every
# 20 ms while the step runs; prints "P5 SIDE KB".
rss() {
  local side=$1 pid stepd='' max=0 v
  shift
  as_user srun "$@" </dev/null >/dev/null 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    if [ -z "$stepd" ]; then stepd=$(step_stepd) || stepd=; fi
    if [ -n "$stepd" ]; then
      v=$(awk '/^VmHWM:/ { print $2 }' "/proc/$stepd/status" 2>/dev/null) || v=
      if [ -n "$v" ] && [ "$v" -gt "$max" ]; then max=$v; fi
    fi
    sleep 0.02
  done
  wait "$pid" || die "P5 $side: srun $* failed"
  [ "$max" -gt 0 ] || die "P5 $side: the step's slurmstepd was never seen"
  echo "P5 $side $max"
}

cmd_p1p5() {
  local pairs=$1 runs=$2 rssruns=$3 image=$4 pair side i
  [ -e "$CONF" ] || die "the plugin is not installed ($CONF)"
  trap restore EXIT
  OUTPUTS_BEFORE=$(outputs_dirs)
  for pair in $(seq "$pairs"); do
    # ABBA order: each side goes first in half of the pairs.
    if [ $((pair % 2)) -eq 1 ]; then set -- on off; else set -- off on; fi
    for side; do
      if [ "$side" = on ]; then plugin_on; else plugin_off; fi
      restart_slurmd
      # One warm-up job after each restart (caches, first registration), not counted.
      as_user srun true </dev/null >/dev/null 2>&1 || die "warm-up srun failed"
      wait_queue_empty
      for i in $(seq "$runs"); do
        timed P1 "$side" -- srun true
        wait_queue_empty
      done
      for i in $(seq "$rssruns"); do
        if [ "$side" = on ]; then
          rss on --tre-container="$image" sleep 1
        else
          rss off sleep 1
        fi
        wait_queue_empty
      done
    done
  done
}

cmd_p2() {
  local reps=$1 image=$2 line cmd i argv
  [ -e "$CONF" ] || die "the plugin is not installed ($CONF)"
  trap restore EXIT
  OUTPUTS_BEFORE=$(outputs_dirs)
  wait_queue_empty
  # The exact runtime command of a real job (its "Running:" line), made the by-hand
  # command by replacing only what is per job: the NUMBER and the job's runtime dirs.
  line=$(as_user srun --tre-container="$image" true 2>&1 </dev/null | sed -n 's/^Running: //p')
  [ -n "$line" ] || die "no Running: line from a container job"
  cmd=$(sed -E -e 's|/outputs-[0-9]+:|/outputs-bench:|; s|/scratch-[0-9]+:|/scratch-bench:|' \
    -e "s|$JOBS_DIR/job-[0-9]+/|$JOBS_DIR/job-bench/|g; s|$RUN_DIR/job-[0-9]+/|$RUN_DIR/job-bench/|g" <<<"$line")
  echo "P2 command $cmd"
  # The line is the plugin's own shell-quoted rendering of an argv (one word per
  # argument, single quotes where needed); no globbing.
  set -f
  eval "argv=($cmd)"
  set +f
  wait_queue_empty
  byhand_prepare() {
    install -d -m 0700 -o "$U" -g "$U" "$UHOME/outputs-bench" "$UHOME/scratch-bench" \
      "$JOBS_DIR/job-bench" "$RUN_DIR/job-bench"
  }
  byhand_clean() {
    rm -rf -- "$UHOME/outputs-bench" "$UHOME/scratch-bench" "$JOBS_DIR/job-bench" "$RUN_DIR/job-bench"
  }
  # One warm-up of each, not counted.
  as_user srun --tre-container="$image" true </dev/null >/dev/null 2>&1 || die "warm-up failed"
  wait_queue_empty
  byhand_prepare
  as_user XDG_RUNTIME_DIR="$RUN_DIR/job-bench" CONTAINERS_CONF=/etc/containers/containers.conf \
    srun "${argv[@]}" </dev/null >/dev/null 2>&1 || die "by-hand warm-up failed: ${argv[*]}"
  wait_queue_empty
  byhand_clean
  for i in $(seq "$reps"); do
    for side in plugin byhand; do
      if [ $((i % 2)) -eq 0 ]; then side=$([ "$side" = plugin ] && echo byhand || echo plugin); fi
      if [ "$side" = plugin ]; then
        timed P2 plugin -- srun --tre-container="$image" true
      else
        byhand_prepare
        timed P2 byhand XDG_RUNTIME_DIR="$RUN_DIR/job-bench" \
          CONTAINERS_CONF=/etc/containers/containers.conf -- srun "${argv[@]}"
      fi
      wait_queue_empty
      if [ "$side" = byhand ]; then byhand_clean; fi
    done
  done
}

# Milliseconds since midnight of a slurmd log line's [YYYY-MM-DDTHH:MM:SS.mmm] stamp.
LOGMS='function ms(l,  t) { t = substr(l, 13, 12); return ((substr(t,1,2)*60 + substr(t,4,2))*60 + substr(t,7,6))*1000 }'

cmd_p4() {
  local reps=$1 image=$2 off i
  [ -e "$CONF" ] || die "the plugin is not installed ($CONF)"
  trap restore EXIT
  RESTART_ON_EXIT=1
  OUTPUTS_BEFORE=$(outputs_dirs)
  restart_slurmd -vv   # debug level: slurmd logs when it calls and ends each spank script
  as_user srun --tre-container="$image" true </dev/null >/dev/null 2>&1 || die "warm-up failed"
  wait_queue_empty
  off=$(stat -c %s "$LOG")
  for i in $(seq "$reps"); do
    as_user srun --tre-container="$image" true </dev/null >/dev/null 2>&1 || die "container job failed"
    wait_queue_empty
    as_user srun true </dev/null >/dev/null 2>&1 || die "plain job failed"
    wait_queue_empty
  done
  # Jobs ran one at a time, so slurmd's lines are in order. A spank prolog starts at
  # "calling ... spank prolog" and ends at slurmd's next line of its own (the step's
  # launch); it is job J's by its "Running spank/prolog for jobid [J]" line. An epilog
  # starts at "calling ... spank epilog" and ends at "completed epilog for jobid J";
  # "Running spank/epilog" splits it into starting slurmstepd (exec, libraries, the
  # config from slurmd, loading the plugin stack) and the plugins' work. Container jobs
  # are the ones whose epilog removed a scratch directory.
  # Prints "P4 KIND PROLOG_MS EPILOG_START_MS EPILOG_MS" per job (prolog 0: none ran).
  tail -c +"$((off + 1))" "$LOG" | awk "$LOGMS"'
    function id(l) { sub(/.*jobid \[?/, "", l); sub(/[^0-9].*/, "", l); return l }
    /_run_spank_job_script: calling .* spank prolog/ { ps = ms($0); inpro = 1; pj = ""; next }
    inpro && /Running spank\/prolog for jobid/ { pj = id($0); next }
    inpro && !/spank: |plugstack\.conf/ { pro[pj] = ms($0) - ps; inpro = 0 }
    /_run_spank_job_script: calling .* spank epilog/ { es = ms($0); next }
    /Running spank\/epilog for jobid/ { est[id($0)] = ms($0) - es }
    /tre-spank: job [0-9]+: removed .*\/scratch-/ { j = $0; sub(/.*tre-spank: job /, "", j); sub(/:.*/, "", j); cont[j] = 1 }
    /completed epilog for jobid/ { j = id($0); ep[j] = ms($0) - es; done[j] = 1 }
    END { for (j in done) printf "P4 %s %d %d %d\n", (j in cont) ? "container" : "plain", pro[j], est[j], ep[j] }'
  echo "P4 jobs $((2 * reps))"
}

cmd_size() { echo "P5 size $(stat -L -c %s /usr/lib/slurm-tre/tre_spank.so)"; }

# The user's own podman outside Slurm, as the user runs it from a login shell: the
# user's storage, runtime directory and (already running) pause process.
UID_U=$(id -u "$U")
USER_PODMAN=(XDG_RUNTIME_DIR="/run/user/$UID_U")

# S1 (issue 17): A `srun --tre-container=IMG true`; B1 `srun true`; B2 the bare
# `podman run --rm IMG true` by the user outside Slurm (warm: the user's own storage,
# as a user runs it); also, as references, B3 the same bare run cold, from a fresh
# per-job state laid out as a job's (graph root on the runtime_dir's disk, run root and
# XDG_RUNTIME_DIR on the run_dir's tmpfs, `--transient-store` when the job's command
# line has it: a new user namespace and pause process, a new database and storage),
# B3' the same with everything on the runtime_dir's disk (the layout before issue 17's
# second change) and, with a SIF, apptainer:
# A' `srun --tre-container=IMG --tre-runtime=apptainer true`, B4 bare `apptainer exec
# SIF true`. All interleaved, the order rotating each round.
cmd_s1() {
  local reps=$1 image=$2 sif=${3:-} i sides side cold run ts=() line
  trap restore EXIT
  OUTPUTS_BEFORE=$(outputs_dirs)
  cold=$JOBS_DIR/job-bench-cold run=$RUN_DIR/job-bench-cold
  sides=(plugin srun bare cold colddisk)
  [ -n "$sif" ] && sides+=(aplugin abare)
  wait_queue_empty
  # Warm-ups, not counted: the user's pause process and storage exist afterwards.
  as_user "${USER_PODMAN[@]}" podman run --rm "$image" true </dev/null >/dev/null 2>&1 ||
    die "S1: the bare podman run failed"
  line=$(as_user srun --tre-container="$image" true 2>&1 </dev/null) || die "S1 warm-up failed"
  case $line in *"Running: "*--transient-store*) ts=(--transient-store) ;; esac
  echo "S1 transient-store ${#ts[@]}"
  wait_queue_empty
  # cold_run XDG ROOT RUNROOT [FLAGS...]: one timed cold run; then (untimed) conmon's
  # clean-up ends and the pause process goes, as the job's supervisor ends a job's.
  cold_run() {
    local key=$1 xdg=$2 root=$3 runroot=$4
    shift 4
    rm -rf "$cold" "$run"; install -d -m 0700 -o "$U" -g "$U" "$cold" "$run"
    timed S1 "$key" XDG_RUNTIME_DIR="$xdg" -- podman --root="$root" --runroot="$runroot" "$@" \
      --storage-opt=additionalimagestore="$UHOME/.local/share/containers/storage" \
      run --rm "$image" true
    for _ in $(seq 200); do pgrep -u "$U" -f -- "$xdg" >/dev/null || break; sleep 0.05; done
    pkill -KILL -u "$U" -F "$xdg/libpod/tmp/pause.pid" 2>/dev/null || true
    rm -rf "$cold" "$run"
  }
  for i in $(seq "$reps"); do
    # Rotate: each side takes each place in the order equally often.
    sides=("${sides[@]:1}" "${sides[0]}")
    for side in "${sides[@]}"; do
      case $side in
        plugin) timed S1 plugin -- srun --tre-container="$image" true ;;
        srun) timed S1 srun -- srun true ;;
        bare) timed S1 bare "${USER_PODMAN[@]}" -- podman run --rm "$image" true ;;
        cold) cold_run cold "$run" "$cold/storage" "$run/run" "${ts[@]}" ;;
        colddisk) cold_run colddisk "$cold" "$cold/storage" "$cold/run" ;;
        aplugin) timed S1 aplugin -- srun --tre-container="$image" --tre-runtime=apptainer true ;;
        abare) timed S1 abare -- apptainer exec "$sif" true ;;
      esac
      wait_queue_empty
    done
  done
}

# submit_wait KEY SIDE SBATCH-ARGS...: sbatch as the user, then poll (20 ms) until the
# job is COMPLETED (any other end state aborts); prints "KEY SIDE SECONDS" from just
# before sbatch to the first poll that saw COMPLETED.
submit_wait() {
  local key=$1 side=$2 t0 job st
  shift 2
  t0=$EPOCHREALTIME
  job=$(as_user sbatch --parsable -o /dev/null "$@") || die "$key $side: sbatch $* failed"
  while :; do
    st=$(scontrol -o show job "$job" 2>/dev/null | tr ' ' '\n' | sed -n 's/^JobState=//p')
    case $st in
      COMPLETED) break ;;
      PENDING|CONFIGURING|RUNNING|COMPLETING|"") sleep 0.02 ;;
      *) die "$key $side: job $job ended $st" ;;
    esac
  done
  awk -v k="$key" -v s="$side" -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%s %s %.6f\n", k, s, b - a }'
}

# alternate N A B: N pairs of runs of the commands A and B (ABBA order: B goes first in
# every second pair), each with the queue empty before and after it.
alternate() {
  local n=$1 a=$2 b=$3 i
  wait_queue_empty
  for i in $(seq "$n"); do
    if [ $((i % 2)) -eq 1 ]; then "$a"; wait_queue_empty; "$b"; else "$b"; wait_queue_empty; "$a"; fi
    wait_queue_empty
  done
}

# The user's own podman inside a batch job, as a user would write it.
# shellcheck disable=SC2054 # --export takes a comma-separated list
BYHAND_JOB=(--export=ALL,XDG_RUNTIME_DIR="/run/user/$UID_U" --wrap)

# S2 (issue 17): A `sbatch --tre-container=IMG --wrap true`; B `sbatch --wrap 'podman
# run --rm IMG true'`.
cmd_s2() {
  IMAGE_ARG=$2
  trap restore EXIT
  OUTPUTS_BEFORE=$(outputs_dirs)
  s2_plugin() { submit_wait S2 plugin --tre-container="$IMAGE_ARG" --wrap true; }
  s2_byhand() { submit_wait S2 byhand "${BYHAND_JOB[@]}" "podman run --rm $IMAGE_ARG true"; }
  alternate "$1" s2_plugin s2_byhand
}

# array_run SIDE TASKS SBATCH-ARGS...: one array of TASKS jobs, from sbatch until every
# task has left the queue; every task must be COMPLETED. Prints "S3 SIDE SECONDS".
array_run() {
  local side=$1 tasks=$2 t0 job done_n
  shift 2
  t0=$EPOCHREALTIME
  job=$(as_user sbatch --parsable -o /dev/null --array="1-$tasks" "$@") || die "S3 $side: sbatch failed"
  while [ -n "$(squeue -h -j "$job" 2>/dev/null)" ]; do sleep 0.05; done
  local t1=$EPOCHREALTIME
  done_n=$(scontrol -o show job "$job" | grep -c ' JobState=COMPLETED ' || true)
  [ "$done_n" -eq "$tasks" ] || die "S3 $side: $done_n of $tasks tasks of array $job COMPLETED"
  awk -v s="$side" -v a="$t0" -v b="$t1" 'BEGIN { printf "S3 %s %.6f\n", s, b - a }'
}

# S3 (issue 17): an array of TASKS container jobs (`--tre-container=IMG --wrap true`)
# against the same array running the bare `podman run --rm IMG true` by hand; PAIRS
# pairs in ABBA order.
cmd_s3() {
  S3_TASKS_ARG=$1 IMAGE_ARG=$3
  trap restore EXIT
  OUTPUTS_BEFORE=$(outputs_dirs)
  s3_plugin() { array_run plugin "$S3_TASKS_ARG" --tre-container="$IMAGE_ARG" --wrap true; }
  s3_byhand() { array_run byhand "$S3_TASKS_ARG" "${BYHAND_JOB[@]}" "podman run --rm $IMAGE_ARG true"; }
  alternate "$2" s3_plugin s3_byhand
}

case ${1:-} in
  p1p5) shift; cmd_p1p5 "$@" ;;
  p2) shift; cmd_p2 "$@" ;;
  p4) shift; cmd_p4 "$@" ;;
  size) cmd_size ;;
  s1) shift; cmd_s1 "$@" ;;
  s2) shift; cmd_s2 "$@" ;;
  s3) shift; cmd_s3 "$@" ;;
  *) die "usage: bed.sh p1p5|p2|p4|size|s1|s2|s3 ARGS" ;;
esac
