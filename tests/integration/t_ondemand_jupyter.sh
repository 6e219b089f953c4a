# Issue 18: the JupyterLab interactive app (examples/ondemand/tre-jupyter), rendered
# with Ruby's ERB as OnDemand renders it, staged in the user's home as OnDemand stages
# a session, submitted to the bed, and used from a real headless Chromium (Debian's
# package, driven by chromedriver) in the bed's network namespace. The image is built
# and cached by `scripts/testbed jupyter-image`.

JUPYTER_APP=$ROOT_DIR/examples/ondemand/tre-jupyter
JUPYTER_ARTIFACTS=$ROOT_DIR/target/test-artifacts/ondemand-jupyter/$SUITE

# jupyter_render DIR key=value...: before.sh and script.sh into DIR; prints the
# sbatch arguments one per line.
jupyter_render() {
  command -v ruby >/dev/null || { echo "ruby is needed to render the OnDemand app (scripts/testbed deps)"; exit 77; }
  ruby "$ROOT_DIR/tests/integration/ondemand-render.rb" "$JUPYTER_APP" "$@"
}

test_ondemand_jupyter_app_renders_native_tre_options_and_the_steps_resources() {
  local d args
  d=$(mktemp -d)
  args=$(jupyter_render "$d" num_cores=4 memory_gb=8 num_gpus=2 tre_project=proj2 tre_inputs=outputs-1234567)
  assert_eq "$args" "--cpus-per-task=4
--mem=8G
--gpus=2
--tre-container=ghcr.io/tre-approved/jupyterlab:4.6.6
--tre-batch=host
--tre-env=JUPYTER_TOKEN
--tre-project=proj2
--tre-inputs=outputs-1234567"
  assert_contains "$(cat "$d/script.sh")" "exec srun --ntasks=1 --cpus-per-task=4 --mem=8G --gpus=2 \\"
  assert_contains "$(cat "$d/script.sh")" "--ServerApp.root_dir=/safe_outputs"
  # The password never appears on a command line.
  assert_not_contains "$(grep -v '^ *#' "$d/script.sh" | grep -v JUPYTER_TOKEN=)" 'password'
  args=$(jupyter_render "$d" "tre_project=  " "num_gpus=0")
  assert_not_contains "$args" "--gpus"
  assert_not_contains "$args" "--tre-project"
  assert_not_contains "$args" "--tre-inputs"
  assert_not_contains "$(cat "$d/script.sh")" "--gpus"
  # before.sh picks a free port and a password and writes a private connection file.
  (cd "$d" && host=127.0.0.1 bash -c '. ./before.sh >/dev/null; echo "$port $password"') >"$d/chosen"
  read -r port password <"$d/chosen"
  [[ $port =~ ^[0-9]+$ ]] && [ "$port" -ge 20000 ] && [ "$port" -lt 40000 ] || fail "port '$port'"
  [[ $password =~ ^[A-Za-z0-9]{24}$ ]] || fail "password '$password'"
  assert_eq "$(stat -c %a "$d/connection.yml")" 600
  assert_eq "$(ruby -ryaml -e 'c = YAML.safe_load(File.read(ARGV[0])); puts [c["host"], c["port"], c["password"]].join(" ")' "$d/connection.yml")" "127.0.0.1 $port $password"
  rm -rf "$d"
}

# jupyter_start U key=value...: the rendered app staged under U's home as OnDemand
# stages a session, with a job script like OnDemand's basic template (source
# before.sh, run script.sh); prints "JOB STAGE".
jupyter_start() {
  local user=$1 d stage job
  shift
  stage=ondemand/data/sys/dashboard/batch_connect/sys/tre-jupyter/output/s$RANDOM$RANDOM
  d=$(mktemp -d)
  mapfile -t args < <(jupyter_render "$d" "$@")
  [ "${#args[@]}" -gt 0 ] || { fail "nothing rendered"; return 1; }
  printf '#!/bin/bash\ncd "$HOME/%s" || exit 1\nsource ./before.sh\n./script.sh\n' "$stage" >"$d/job.sh"
  chmod 0755 "$d/job.sh"
  tar -C "$d" -cf - . | as "$user" sh -c "mkdir -p ~/$stage && tar -C ~/$stage -xf -"
  rm -rf "$d"
  job=$(submit "$user" "${args[@]}" "/home/$user/$stage/job.sh") || { fail "sbatch refused: ${args[*]}"; return 1; }
  echo "$job $stage"
}

# conn_field U STAGE KEY: a value of the session's connection.yml.
conn_field() { as "$1" sed -n "s/^$3: //p" "$2/connection.yml"; }

# http_status_as U PORT PATH [TOKEN]: the status line JupyterLab gives, asked as user U
# from inside the bed (bash's /dev/tcp: no client needed).
http_status_as() {
  as "$1" bash -c 'exec 3<>"/dev/tcp/127.0.1.1/$1" || exit 1
    { printf "GET %s HTTP/1.0\r\nHost: tbnode:%s\r\n" "$2" "$1"
      [ -z "$3" ] || printf "Authorization: token %s\r\n" "$3"
      printf "\r\n"; } >&3
    head -n 1 <&3 | tr -d "\r"' sh "$2" "$3" "${4:-}"
}

test_ondemand_jupyter_lab_in_a_real_browser_saves_to_outputs_and_scancel_ends_it() {
  local job stage port password host n i out log shot
  command -v chromium >/dev/null && command -v chromedriver >/dev/null ||
    { echo "chromium and chromium-driver are needed (scripts/testbed deps installs them)"; exit 77; }
  bed jupyter-image >/dev/null || { fail "the JupyterLab image could not be built or loaded"; return 1; }
  read -r job stage < <(jupyter_start alice num_cores=1 memory_gb=2) || return 1
  [ -n "$stage" ] || { fail "no session"; return 1; }
  # A failing check leaves no session running (the test runs in its own subshell).
  # shellcheck disable=SC2064 # the job id is known now
  trap "bed exec scancel $job 2>/dev/null || true" EXIT
  wait_running "$job"
  for ((i = 0; i < 300; i++)); do
    as alice test -s "$stage/connection.yml" && break
    sleep 0.2
  done
  port=$(conn_field alice "$stage" port)
  password=$(conn_field alice "$stage" password)
  host=$(conn_field alice "$stage" host)
  n=$(job_number alice "$job")
  [ -n "$port" ] && [ -n "$password" ] && [ -n "$n" ] || { fail "no connection file or NUMBER: $(job_output alice "$job")"; return 1; }
  assert_eq "$host" tbnode
  # The connection file is the user's alone; bob cannot read the password.
  ! as bob cat "/home/alice/$stage/connection.yml" >/dev/null 2>&1 || fail "bob read alice's connection file"
  # Until the server answers (the image's first start takes a few seconds).
  for ((i = 0; i < 600; i++)); do
    [ -n "$(http_status_as alice "$port" "/node/$host/$port/login" 2>/dev/null)" ] && break
    [ "$(job_field "$job" JobState)" = RUNNING ] || break
    sleep 0.2
  done
  out=$(job_output alice "$job")
  assert_eq "$(http_status_as alice "$port" "/node/$host/$port/login")" "HTTP/1.1 200 OK" "$out"
  # The JupyterLab step has the form's cores, the job its memory (the bed's Slurm does
  # not allocate memory, so a step's memory shows as 0; the srun line has --mem, see
  # the rendering test).
  assert_contains "$(bed exec scontrol -o show step "$job.0")" " CPUs=1 Tasks=1 Name=env "
  assert_contains "$(bed exec scontrol -o show job "$job")" " MinMemoryNode=2G "
  # Told where the notebooks go.
  assert_line "$out" "tre-spank session: files saved in /safe_outputs are kept after the session in /home/alice/outputs-$n; /scratch is deleted at the end"
  assert_line "$out" "tre-spank: outputs: /home/alice/outputs-$n -> /safe_outputs (kept after the job)"
  # A second user, without the password or with a wrong one, gets nothing.
  assert_eq "$(http_status_as bob "$port" "/node/$host/$port/api/contents")" "HTTP/1.1 403 Forbidden"
  assert_eq "$(http_status_as bob "$port" "/node/$host/$port/api/contents" wrong-password)" "HTTP/1.1 403 Forbidden"
  assert_contains "$(http_status_as bob "$port" "/node/$host/$port/lab")" "HTTP/1.1 302"
  assert_eq "$(http_status_as alice "$port" "/node/$host/$port/api/contents" "$password")" "HTTP/1.1 200 OK"
  # A notebook in /safe_outputs whose cell reads the project data and writes a file.
  as alice sh -c 'cat > "outputs-$1/tre-test.ipynb"' sh "$n" <<'EOF_NB'
{"cells": [{"cell_type": "code", "execution_count": null, "id": "c1", "metadata": {}, "outputs": [],
  "source": ["import os\n", "data = open('/safe_data/README.txt').read().strip()\n",
             "open('/safe_outputs/from-browser.txt', 'w').write('written in the Lab: ' + data + '\\n')\n",
             "print('TRE-OK', data, 'uid', os.getuid(), 'cwd', os.getcwd())"]}],
 "metadata": {"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}},
 "nbformat": 4, "nbformat_minor": 5}
EOF_NB
  mkdir -p "$JUPYTER_ARTIFACTS"
  shot=$JUPYTER_ARTIFACTS/jupyterlab-cell.png
  rm -f "$shot" "${shot%.png}-last.png"
  log=$(bed netns ruby "$ROOT_DIR/tests/integration/ondemand-browser.rb" \
    "http://127.0.1.1:$port/node/$host/$port/" "$password" tre-test.ipynb "TRE-OK data of proj1" "$shot" 2>&1) ||
    { fail "the browser failed: $log"; return 1; }
  printf '%s\n' "$log" >"$JUPYTER_ARTIFACTS/browser.log"
  echo "INFO browser: $(head -n 1 <<<"$log"); screenshot $shot"
  assert_contains "$log" "without the password: BASE/login"
  assert_contains "$log" "cell output: TRE-OK data of proj1 uid 0 cwd /safe_outputs"
  assert_contains "$(file -b "$shot" 2>/dev/null || head -c 8 "$shot" | od -c)" "PNG"
  # The cell's file and the saved notebook (with the output) are in the job's outputs, the user's.
  assert_eq "$(bed exec cat "/home/alice/outputs-$n/from-browser.txt")" "written in the Lab: data of proj1"
  assert_eq "$(bed exec stat -c %U "/home/alice/outputs-$n/from-browser.txt" "/home/alice/outputs-$n/tre-test.ipynb")" $'alice\nalice'
  assert_contains "$(bed exec cat "/home/alice/outputs-$n/tre-test.ipynb")" "TRE-OK data of proj1"
  # Jupyter's working files are in scratch, not among the outputs.
  assert_exists "/home/alice/scratch-$n/.jupyter/runtime"
  assert_absent "/home/alice/outputs-$n/.ipynb_checkpoints"
  # scancel ends the server; scratch is gone, outputs stay.
  bed exec scancel "$job"
  wait_job "$job"
  assert_eq "$(job_field "$job" JobState)" CANCELLED
  assert_eq "$(http_status_as alice "$port" "/node/$host/$port/login" 2>/dev/null)" ""
  assert_no_job_processes alice
  assert_absent "/home/alice/scratch-$n"
  assert_exists "/home/alice/outputs-$n/from-browser.txt"
  as alice rm -rf "$stage"
}
