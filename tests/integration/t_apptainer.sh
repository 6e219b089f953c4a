# Issue 4: apptainer (real apptainer 1.4.5 in the sid bed), the container environment,
# entrypoints, and arguments - with real jobs.
#
# Apptainer exists in the sid bed only. Tests that need it print SKIP with the reason
# on a bed without it (exit 77: the runner counts them as skipped, never as passed);
# there, test_apptainer_missing_on_the_node_is_a_clear_error proves the plugin's error.

SIF_DIR=/var/lib/tre-spank/sif
SIF_HELLO=$SIF_DIR/ghcr.io/mikej888/hello-tre_1.0.sif
SITE_CONFIG=/etc/slurm/tre-spank.toml

have_apptainer() { bed exec test -x /usr/bin/apptainer; }
need_apptainer() {
  have_apptainer && return 0
  echo "    apptainer is not installed in the $SUITE bed (only sid has it): not run here" >&2
  exit 77
}

write_script() {  # write_script U NAME CONTENT: ~/tests/NAME, executable
  as "$1" sh -c 'mkdir -p ~/tests && cat > ~/tests/"$1" && chmod +x ~/tests/"$1"' sh "$2" <<<"$3"
}

# Arguments that a shell anywhere on the way would change.
TRICKY_ARGS=("a b" '$HOME' "it's \"quoted\"" $'line1\nline2' '*' '')
expect_tricky_output() {  # the printf '[%s]\n' of TRICKY_ARGS
  printf '[%s]\n' "${TRICKY_ARGS[@]}"
}

test_apptainer_job_runs_as_the_user_with_the_three_mounts_and_home() {
  need_apptainer
  local job out n uid
  uid=$(bed exec id -u alice)
  job=$(run_job alice --tre-container=$IMAGE --tre-runtime=apptainer --wrap '
    echo "uid=$(id -u)"
    cat /safe_data/README.txt
    echo result > /safe_outputs/result.txt
    echo s > /scratch/s
    test -d /home/alice/tests && echo home-mounted
    echo "cwd=$(pwd)"
    echo "tmp=$TMPDIR $TMP"
    echo "in=$APPTAINER_CONTAINER"
    test -e /etc/debian_version && echo host-fs || echo image-fs')
  out=$(job_output alice "$job")
  n=$(job_number alice "$job")
  assert_eq "$(job_field "$job" JobState)" COMPLETED
  assert_line "$out" "uid=$uid"
  assert_line "$out" "data of proj1"
  assert_line "$out" "home-mounted"
  assert_line "$out" "cwd=/home/alice/tests"
  assert_line "$out" "tmp=/scratch /scratch"
  assert_line "$out" "in=$SIF_HELLO"
  assert_line "$out" "image-fs"
  assert_eq "$(bed exec stat -c %U /home/alice/outputs-$n/result.txt)" alice "owner of a file written to /safe_outputs"
  assert_contains "$out" "Running: /usr/bin/apptainer exec --cleanenv --no-eval --userns --contain --no-mount=cwd,hostfs,bind-paths --no-nv --no-rocm --home=/home/alice --bind=/etc/hosts:/etc/hosts:ro --pwd=/home/alice/tests --bind=/safe_data/proj1:/safe_data --bind=/home/alice/outputs-$n:/safe_outputs --bind=/home/alice/scratch-$n:/scratch "
  assert_contains "$out" " $SIF_HELLO /var/spool/slurmd/"
  assert_not_contains "$out" "docker://"
  assert_absent "/home/alice/scratch-$n"
  assert_no_job_processes alice
}

test_apptainer_home_is_not_mounted_when_the_site_turns_it_off() {
  need_apptainer
  local job out
  with_config $'[apptainer]\nmount_home = false'
  job=$(run_job alice --tre-container=$IMAGE --tre-runtime=apptainer --wrap '
    test -e /home/alice/tests && echo home-mounted || echo no-home
    echo "cwd=$(pwd)"; echo x > /safe_outputs/x')
  out=$(job_output alice "$job")
  assert_line "$out" "no-home"
  assert_line "$out" "cwd=/scratch"
  assert_contains "$out" " --contain --no-mount=home,cwd,hostfs,bind-paths --no-nv --no-rocm --bind=/etc/hosts:/etc/hosts:ro --pwd=/scratch "
  assert_eq "$(job_field "$job" JobState)" COMPLETED
}

test_apptainer_missing_sif_fails_naming_the_file_it_looked_for() {
  need_apptainer
  local job out before
  before=$(job_dirs alice)
  job=$(run_job alice --tre-container=ghcr.io/mikej888/not-approved:9.9 --tre-runtime=apptainer --wrap 'echo STARTED')
  out=$(job_output alice "$job")
  assert_contains "$out" "tre-spank: image ghcr.io/mikej888/not-approved:9.9 is not on node tbnode: no SIF file $SIF_DIR/ghcr.io/mikej888/not-approved_9.9.sif"
  assert_not_contains "$out" "STARTED"
  assert_not_contains "$out" "Running:"
  assert_not_contains "$out" "docker://"
  assert_not_contains "$out" "Pulling"
  assert_eq "$(job_field "$job" JobState)" FAILED
  assert_eq "$(job_dirs alice)" "$before" "alice's job directories"
  assert_node_idle
}

test_apptainer_batch_script_runs_inside_the_container_with_its_arguments() {
  need_apptainer
  local job out
  write_script alice app-script.sh $'#!/bin/sh\necho "script in $APPTAINER_NAME"\ntest -e /etc/debian_version || echo no-host-files\nprintf "[%s]\\n" "$@"'
  job=$(submit alice --tre-container=$IMAGE --tre-runtime=apptainer app-script.sh "${TRICKY_ARGS[@]}")
  wait_job "$job"
  out=$(job_output alice "$job")
  assert_line "$out" "script in hello-tre_1.0.sif"
  assert_line "$out" "no-host-files"
  assert_contains "$out" "$(expect_tricky_output)"
  assert_contains "$out" "--bind=/var/spool/slurmd/job$(printf %05d "$job")/slurm_script:/var/spool/slurmd/job$(printf %05d "$job")/slurm_script:ro"
}

test_apptainer_exit_codes_pass_through_and_its_own_failures_are_named() {
  need_apptainer
  local out rc
  out=$(as alice srun --tre-container=$IMAGE --tre-runtime=apptainer sh -c 'exit 42' 2>&1) && rc=0 || rc=$?
  assert_eq "$rc" 42 "srun's exit status"
  out=$(as alice srun --tre-container=$IMAGE --tre-runtime=apptainer no-such-command 2>&1) && rc=0 || rc=$?
  assert_eq "$rc" 255 "srun's exit status for a missing command"
  assert_contains "$out" "tre-spank: /usr/bin/apptainer exited with status 255: the container runtime failed before your command ran"
}

test_apptainer_arguments_and_forwarded_variables_arrive_unchanged_and_unprinted() {
  need_apptainer
  local out
  out=$(as alice env MY_SECRET='s3cr3t $x "y" z' NOT_ASKED=leak srun --tre-container=$IMAGE --tre-runtime=apptainer \
    --tre-env=MY_SECRET sh -c 'echo "secret=$MY_SECRET"; echo "other=${NOT_ASKED:-unset}"; echo "job=$SLURM_JOB_ID"; printf "[%s]\n" "$@"' x "${TRICKY_ARGS[@]}" 2>&1)
  assert_line "$out" 'secret=s3cr3t $x "y" z'
  assert_line "$out" "other=unset"
  grep -qx 'job=[0-9]*' <<<"$out" || fail "SLURM_JOB_ID not passed: $out"
  assert_contains "$out" "$(expect_tricky_output)"
  assert_not_contains "$(grep '^Running:' <<<"$out")" "s3cr3t"
}

test_apptainer_image_entrypoint_runs_the_runscript_with_the_script_arguments() {
  need_apptainer
  local job out
  write_script alice ignored.sh $'#!/bin/sh\necho SCRIPT BODY RAN'
  job=$(run_job alice --tre-container=$IMAGE --tre-runtime=apptainer --tre-entrypoint=image ignored.sh)
  out=$(job_output alice "$job")
  assert_line "$out" "hello from the TRE container"
  assert_not_contains "$out" "SCRIPT BODY RAN"
  assert_contains "$out" "Running: /usr/bin/apptainer run "
  job=$(run_job alice --tre-container=$IMAGE --tre-runtime=apptainer --tre-entrypoint=image ignored.sh echo "from args")
  out=$(job_output alice "$job")
  assert_line "$out" "from args"
  assert_eq "$(job_field "$job" JobState)" COMPLETED
}

test_apptainer_missing_on_the_node_is_a_clear_error() {
  if have_apptainer; then
    echo "    apptainer is installed in the $SUITE bed: this is the test for beds without it" >&2
    exit 77
  fi
  local job out
  job=$(run_job alice --tre-container=$IMAGE --tre-runtime=apptainer --wrap 'echo STARTED')
  out=$(job_output alice "$job")
  assert_line "$out" "tre-spank: apptainer is not installed on node tbnode"
  assert_not_contains "$out" "STARTED"
  assert_eq "$(job_field "$job" JobState)" FAILED
}

# Both runtimes (and both beds).

test_auto_runtime_takes_the_first_installed_in_the_sites_order() {
  local job out
  with_config $'default_runtime = "auto"\nruntimes = ["apptainer", "podman"]'
  job=$(run_job alice --tre-container=$IMAGE --wrap true)
  out=$(job_output alice "$job")
  if have_apptainer; then
    assert_contains "$out" "Running: /usr/bin/apptainer exec "
  else
    assert_contains "$out" "Running: /usr/bin/podman "
  fi
  assert_eq "$(job_field "$job" JobState)" COMPLETED
}

test_a_runtime_the_node_does_not_offer_is_a_clear_error() {
  local job out
  with_config 'runtimes = ["apptainer"]'
  job=$(run_job alice --tre-container=$IMAGE --tre-runtime=podman --wrap 'echo STARTED')
  out=$(job_output alice "$job")
  assert_line "$out" "tre-spank: podman is not offered on node tbnode (this node offers: apptainer)"
  assert_not_contains "$out" "STARTED"
  assert_eq "$(job_field "$job" JobState)" FAILED
}

test_podman_arguments_and_forwarded_variables_arrive_unchanged_and_unprinted() {
  local out
  out=$(as alice env MY_SECRET='s3cr3t $x "y" z' NOT_ASKED=leak srun --tre-container=$IMAGE --tre-runtime=podman \
    --tre-env=MY_SECRET sh -c 'echo "secret=$MY_SECRET"; echo "other=${NOT_ASKED:-unset}"; echo "tmp=$TMPDIR"; printf "[%s]\n" "$@"' x "${TRICKY_ARGS[@]}" 2>&1)
  assert_line "$out" 'secret=s3cr3t $x "y" z'
  assert_line "$out" "other=unset"
  assert_line "$out" "tmp=/scratch"
  assert_contains "$out" "$(expect_tricky_output)"
  assert_contains "$out" " --env=MY_SECRET "
  assert_not_contains "$(grep '^Running:' <<<"$out")" "s3cr3t"
}

test_podman_image_entrypoint_runs_the_images_command_with_the_script_arguments() {
  local job out
  write_script alice ignored.sh $'#!/bin/sh\necho SCRIPT BODY RAN'
  job=$(run_job alice --tre-container=$IMAGE --tre-entrypoint=image ignored.sh)
  out=$(job_output alice "$job")
  assert_line "$out" "hello from the TRE container"
  assert_not_contains "$out" "SCRIPT BODY RAN"
  assert_not_contains "$out" "--entrypoint="
  job=$(run_job alice --tre-container=$IMAGE --tre-entrypoint=image ignored.sh echo "from args")
  assert_line "$(job_output alice "$job")" "from args"
}

test_bad_env_and_entrypoint_values_are_refused_at_submission() {
  refused alice '--tre-env: "A-B" is not a variable name' --tre-container=$IMAGE --tre-env=A-B
  refused alice '--tre-env: SLURM_JOB_ID is set by tre-spank or the runtime' --tre-container=$IMAGE --tre-env=SLURM_JOB_ID
  refused alice '--tre-entrypoint="shell" is not a mode: use command or image' --tre-container=$IMAGE --tre-entrypoint=shell
  refused alice '--tre-batch="hosts" is not a place: use container or host' --tre-container=$IMAGE --tre-batch=hosts
  refused alice '--tre-batch only makes sense with --tre-container' --tre-batch=host
}

test_help_lists_the_new_options() {
  local out
  out=$(as alice sbatch --help 2>&1)
  assert_contains "$out" "--tre-env=NAME[,NAME...]"
  assert_contains "$out" "--tre-entrypoint=MODE"
  assert_contains "$out" "--tre-batch=WHERE"
}

# GPUs: the bed has two fake GPUs (GRES gpu:2 on stand-in /dev/nvidia0-1, a CDI spec).

# devices_in U SRUN-ARGS...: the device nodes a container step sees, on one line.
devices_in() {
  local user=$1; shift
  as "$user" srun "$@" sh -c 'ls /dev/nvidia* 2>/dev/null | tr "\n" " "; echo "cvd=${CUDA_VISIBLE_DEVICES:-unset}"' 2>&1
}

test_podman_gets_the_steps_gpus_and_only_them() {
  local out
  out=$(devices_in alice --gres=gpu:1 --tre-container=$IMAGE)
  assert_contains "$out" " --device=nvidia.com/gpu=0 "
  assert_line "$out" "/dev/nvidia0 cvd=unset"
  out=$(devices_in alice --gres=gpu:2 --tre-container=$IMAGE)
  assert_contains "$out" " --device=nvidia.com/gpu=0 --device=nvidia.com/gpu=1 "
  assert_line "$out" "/dev/nvidia0 /dev/nvidia1 cvd=unset"
  # No GPUs: no flags, no devices - even when the user sets Slurm's variables.
  out=$(as alice env SLURM_STEP_GPUS=1 SLURM_JOB_GPUS=1 CUDA_VISIBLE_DEVICES=1 srun --tre-container=$IMAGE \
    sh -c 'ls /dev/nvidia* 2>/dev/null | tr "\n" " "; echo end' 2>&1)
  assert_not_contains "$out" "--device"
  assert_line "$out" "end"
}

test_batch_step_gets_the_jobs_gpus_not_a_users_variable() {
  local job out
  job=$(as alice sh -c 'cd ~/tests && SLURM_STEP_GPUS=0,1 sbatch --parsable --gres=gpu:1 -o "%j.out" --tre-container='"$IMAGE"' --wrap "ls /dev/nvidia*"')
  wait_job "$job"
  out=$(job_output alice "$job")
  assert_contains "$out" " --device=nvidia.com/gpu=0 "
  assert_not_contains "$out" "gpu=1"
  assert_line "$out" "/dev/nvidia0"
  job=$(as alice sh -c 'cd ~/tests && SLURM_JOB_GPUS=1 SLURM_STEP_GPUS=1 sbatch --parsable -o "%j.out" --tre-container='"$IMAGE"' --wrap "ls /dev/nvidia* 2>&1; true"')
  wait_job "$job"
  out=$(job_output alice "$job")
  assert_not_contains "$out" "--device"
  assert_not_contains "$out" "/dev/nvidia1"
}

# Issue 14, point 6: apptainer gives the step's GPUs only, as podman's CDI devices do.
# The control: apptainer's --nv (what the plugin passed before) binds every
# /dev/nvidia* of the node, whatever the job was given.
test_apptainer_gets_the_steps_gpu_devices_only() {
  need_apptainer
  local out job
  bed exec sh -c 'ls /dev/nvidia0 /dev/nvidia1' >/dev/null 2>&1 ||
    { echo "    the $SUITE bed has no stand-in /dev/nvidia* devices" >&2; exit 77; }
  out=$(as alice apptainer -s exec --userns --contain --nv "$SIF_HELLO" sh -c 'ls /dev/nvidia* | tr "\n" " "; echo' 2>&1)
  assert_line "$out" "/dev/nvidia0 /dev/nvidia1 " || return 1
  # A stand-in NVIDIA control device, present on the node for this test only.
  bed exec mknod -m 666 /dev/nvidiactl c 195 255
  trap 'bed exec rm -f /dev/nvidiactl' EXIT
  out=$(devices_in alice --gres=gpu:1 --tre-container=$IMAGE --tre-runtime=apptainer)
  assert_contains "$out" " --bind=/dev/nvidia0:/dev/nvidia0 --bind=/dev/nvidiactl:/dev/nvidiactl "
  assert_not_contains "$out" "--nv "
  assert_line "$out" "/dev/nvidia0 /dev/nvidiactl cvd=0"
  out=$(devices_in alice --gres=gpu:2 --tre-container=$IMAGE --tre-runtime=apptainer)
  assert_contains "$out" " --bind=/dev/nvidia0:/dev/nvidia0 --bind=/dev/nvidia1:/dev/nvidia1 "
  assert_line "$out" "/dev/nvidia0 /dev/nvidia1 /dev/nvidiactl cvd=0,1"
  # The batch step: the job's GPU, not one a user's variable names.
  job=$(as alice env SLURM_STEP_GPUS=0,1 sh -c 'mkdir -p ~/tests && cd ~/tests && sbatch --parsable --gres=gpu:1 -o "%j.out" "$@"' sbatch \
    --tre-container=$IMAGE --tre-runtime=apptainer --wrap 'echo /dev/nvidia*')
  wait_job "$job"
  assert_line "$(job_output alice "$job")" "/dev/nvidia0 /dev/nvidiactl"
  # No GPUs: no device at all (not the control device either), even when the user
  # sets Slurm's variables.
  out=$(as alice env SLURM_STEP_GPUS=1 CUDA_VISIBLE_DEVICES=1 srun --tre-container=$IMAGE --tre-runtime=apptainer \
    sh -c 'ls /dev/nvidia* 2>/dev/null | tr "\n" " "; echo "cvd=${CUDA_VISIBLE_DEVICES:-unset}"' 2>&1)
  assert_not_contains "$(grep -v '^Running:' <<<"$out")" "/dev/nvidia"
  assert_not_contains "$out" "--bind=/dev/"
  assert_line "$out" "cvd=unset"
}

# apptainer.nv = true: the site takes --nv (the node's driver libraries) for steps with
# GPUs, and with it every /dev/nvidia* of the node; steps without GPUs are unchanged.
test_apptainer_nv_is_the_sites_choice_for_steps_with_gpus_only() {
  need_apptainer
  local out
  bed exec sh -c 'ls /dev/nvidia0 /dev/nvidia1' >/dev/null 2>&1 ||
    { echo "    the $SUITE bed has no stand-in /dev/nvidia* devices" >&2; exit 77; }
  with_config '[apptainer]
nv = true'
  out=$(devices_in alice --gres=gpu:1 --tre-container=$IMAGE --tre-runtime=apptainer)
  assert_contains "$out" " --nv "
  assert_not_contains "$out" "--bind=/dev/nvidia"
  assert_line "$out" "/dev/nvidia0 /dev/nvidia1 cvd=0"
  out=$(as alice srun --tre-container=$IMAGE --tre-runtime=apptainer \
    sh -c 'ls /dev/nvidia* 2>/dev/null | tr "\n" " "; echo end' 2>&1)
  assert_contains "$out" " --no-nv "
  assert_line "$out" "end"
  restore_config
}

test_podman_command_mode_bypasses_an_images_entrypoint_and_image_mode_uses_it() {
  local img=ghcr.io/mikej888/entrypoint-tre:1.0 out
  # An image with an ENTRYPOINT, imported into alice's own storage for this test.
  as alice sh -c 'podman image exists "$1" || podman import -q --change "ENTRYPOINT [\"/bin/echo\",\"entrypoint got:\"]" \
    --change "ENV PATH=/bin" /opt/tre-testbed/tre-image.tar "$1" >/dev/null' sh "$img"
  out=$(as alice srun --tre-container=$img sh -c 'echo "command ran"' 2>&1)
  assert_line "$out" "command ran"
  out=$(as alice srun --tre-container=$img --tre-entrypoint=image one "two three" 2>&1)
  assert_line "$out" "entrypoint got: one two three"
}

test_apptainer_ignores_the_users_apptainer_variables() {
  need_apptainer
  local out
  out=$(as alice env APPTAINER_BIND=/etc:/hostetc SINGULARITY_BIND=/etc:/hostetc2 APPTAINERENV_INJECTED=yes \
    srun --tre-container=$IMAGE --tre-runtime=apptainer sh -c 'test -e /hostetc || test -e /hostetc2 && echo EXTRA-MOUNT; echo "injected=${INJECTED:-no}"' 2>&1)
  assert_not_contains "$(grep -v '^Running:' <<<"$out")" "EXTRA-MOUNT"
  assert_line "$out" "injected=no"
}

test_podman_ignores_the_users_container_configuration() {
  local out
  as alice sh -c 'mkdir -p ~/.config/containers && printf "[containers]\nvolumes = [\"/etc:/hostetc\"]\n" > ~/evil-containers.conf
    cp ~/evil-containers.conf ~/.config/containers/containers.conf'
  trap 'as alice rm -f .config/containers/containers.conf evil-containers.conf' EXIT
  out=$(as alice env CONTAINERS_CONF=/home/alice/evil-containers.conf PODMAN_USERNS=host \
    srun --tre-container=$IMAGE sh -c 'test -e /hostetc && echo EXTRA-MOUNT; echo "uid=$(id -u)"' 2>&1)
  assert_not_contains "$(grep -v '^Running:' <<<"$out")" "EXTRA-MOUNT"
  assert_line "$out" "uid=0"
}
