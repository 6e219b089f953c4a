# Load (issue 6): an array of LOAD_JOBS container jobs through one node (tbnode,
# partition debug), as many at once as it takes (-c1 --oversubscribe: up to 4 jobs per
# core). Every job must end COMPLETED with exit 0, with its own outputs-N holding intact
# files, its scratch-N gone, no runtime dir or record left on the node, no process of
# the user left, and the node idle. CI runs a small size; the full run is
# `LOAD_JOBS=200 tests/integration/run --suite trixie load` (docs/testing.md, "Load").

LOAD_JOBS=${LOAD_JOBS:-40}

# Runs inside each container (busybox): a unique file and a random blob with its
# checksum in /safe_outputs, a tree in /scratch.
LOAD_SCRIPT='#!/bin/sh
set -e
head -c 200000 /dev/urandom > /scratch/blob
mkdir -p /scratch/d/e && echo s > /scratch/d/e/f
cp /scratch/blob /safe_outputs/blob
sha256sum /scratch/blob | cut -d" " -f1 > /safe_outputs/blob.sha256
echo "task $SLURM_ARRAY_TASK_ID job $SLURM_JOB_ID" > /safe_outputs/task.txt
echo "load task $SLURM_ARRAY_TASK_ID done"
'

# load_check A: as root on tbnode, one line per task of array A from its output file,
# "OK task job number" or "BAD task ... why"; reads the job ids from stdin ("task job").
LOAD_CHECK='
d=/home/alice/tests/load
while read -r t j; do
  n=$(sed -n "s|^tre-spank: outputs: .*/outputs-\([0-9]*\) .*|\1|p" "$d/$1_$t.out" | head -n 1)
  o=/home/alice/outputs-$n
  if [ -z "$n" ]; then echo "BAD $t no NUMBER in $d/$1_$t.out"
  elif [ "$(cat "$o/task.txt" 2>/dev/null)" != "task $t job $j" ]; then echo "BAD $t $o/task.txt: $(cat "$o/task.txt" 2>&1)"
  elif [ "$(sha256sum < "$o/blob" | cut -d" " -f1)" != "$(cat "$o/blob.sha256")" ]; then echo "BAD $t $o/blob is not intact"
  elif [ "$(stat -c %U "$o/blob")" != alice ]; then echo "BAD $t $o/blob not owned by alice"
  elif ! grep -qx "load task $t done" "$d/$1_$t.out"; then echo "BAD $t no done line in $d/$1_$t.out"
  elif [ -e "/home/alice/scratch-$n" ]; then echo "BAD $t scratch-$n left"
  elif [ -e "/var/lib/tre-spank/jobs/job-$j" ]; then echo "BAD $t runtime dir job-$j left"
  elif ls /var/spool/tre-spank | grep -q "^job-$j\."; then echo "BAD $t record of job $j left"
  else echo "OK $t $j $n"; fi
done'

# load_cleanup: remove what the load test made, however it ended (later tests see a clean
# home): the array if still queued, the outputs-N it created, its output files.
load_cleanup() {
  local d
  [ -z "${LOAD_ARRAY:-}" ] || bed exec scancel "$LOAD_ARRAY" 2>/dev/null || true
  for d in $(comm -13 <(sort <<<"$LOAD_BEFORE") <(job_dirs alice | sort) | grep '^outputs-[0-9]*$'); do
    bed exec rm -rf "/home/alice/$d"
  done
  bed exec rm -rf /home/alice/tests/load /home/alice/tests/load.sh
}

test_load_array_of_container_jobs_on_one_node_all_complete_intact_and_clean() {
  local n=$LOAD_JOBS arr start limit now peak=0 r tasks bad ok dirs before wall
  before=$(job_dirs alice)
  LOAD_BEFORE=$before
  trap load_cleanup EXIT
  as alice sh -c 'mkdir -p ~/tests && cat > ~/tests/load.sh' <<<"$LOAD_SCRIPT"
  start=$SECONDS
  arr=$(as alice sh -c 'rm -rf ~/tests/load && mkdir -p ~/tests/load && cd ~/tests &&
    sbatch --parsable --array=1-'"$n"' -c1 --oversubscribe -p debug \
      -o "load/%A_%a.out" --tre-container='"$IMAGE"' load.sh') || fail "sbatch of the array refused"
  LOAD_ARRAY=$arr
  # Max wait: scales with the size (a job takes about 1-2 s; 2 cores, 8 at once).
  limit=$((120 + 4 * n))
  while :; do
    now=$SECONDS
    r=$(bed exec squeue -h -r -t R -j "$arr" 2>/dev/null | wc -l)
    [ "$r" -le "$peak" ] || peak=$r
    bed exec squeue -h -j "$arr" 2>/dev/null | grep -q . || break
    [ $((now - start)) -lt "$limit" ] || fail "array $arr not done after ${limit}s"
    sleep 0.5
  done
  wall=$((SECONDS - start))
  echo "INFO load: $n container jobs (array $arr) in ${wall}s, peak $peak running at once"
  # Every task COMPLETED with exit 0 (no accounting: the records stay MinJobAge).
  tasks=$(bed exec scontrol -o show job "$arr" | tr ' ' '\n' |
    awk -F= '$1=="JobId"{j=$2} $1=="ArrayTaskId"{t=$2} $1=="JobState"{s=$2} $1=="ExitCode"{print t, j, s, $2}')
  assert_eq "$(wc -l <<<"$tasks")" "$n" "tasks of array $arr"
  bad=$(awk '$3 != "COMPLETED" || $4 != "0:0"' <<<"$tasks")
  [ -z "$bad" ] || fail "tasks not COMPLETED with 0:0 (task job state exit):"$'\n'"$bad"
  # Each task's outputs-N intact, its scratch, runtime dir and record gone.
  r=$(awk '{print $1, $2}' <<<"$tasks" | bed exec sh -c "$LOAD_CHECK" sh "$arr")
  bad=$(grep -v '^OK ' <<<"$r" || true)
  [ -z "$bad" ] || fail "$(wc -l <<<"$bad") tasks not clean:"$'\n'"$(head -n 20 <<<"$bad")"
  ok=$(grep -c '^OK ' <<<"$r" || true)
  assert_eq "$ok" "$n" "tasks checked"
  assert_eq "$(awk '{print $4}' <<<"$r" | sort -u | wc -l)" "$n" "distinct NUMBERs"
  dirs=$(comm -13 <(sort <<<"$before") <(job_dirs alice | sort))
  assert_eq "$(grep -c '^outputs-' <<<"$dirs" || true)" "$n" "new outputs-N directories"
  assert_eq "$(grep -c '^scratch-' <<<"$dirs" || true)" 0 "scratch-N directories left"
  assert_no_job_processes alice
  assert_node_idle
}
