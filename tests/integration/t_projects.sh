# Which project data a job sees.

test_user_in_two_projects_must_choose_and_is_told_the_choices() {
  local job out
  job=$(run_job carol --tre-container=$IMAGE --wrap 'echo STARTED')
  out=$(job_output carol "$job")
  assert_line "$out" "you belong to several projects (proj1, proj2): choose one with --tre-project=PROJECT"
  assert_not_contains "$out" "STARTED"
  assert_eq "$(job_field "$job" JobState)" FAILED
}

test_tre_project_chooses_among_the_users_projects() {
  local job out
  job=$(run_job carol --tre-container=$IMAGE --tre-project=proj2 --wrap 'cat /safe_data/README.txt; echo "p=$TRE_PROJECT"')
  out=$(job_output carol "$job")
  assert_line "$out" "data of proj2"
  assert_line "$out" "p=proj2"
}

test_tre_project_that_is_not_theirs_is_refused_at_submission() {
  refused alice "tre-spank: --tre-project=proj2 is not one of your projects (yours: proj1)" \
    --tre-container=$IMAGE --tre-project=proj2
  refused bob "tre-spank: --tre-project=proj1 is not one of your projects (you have none)" \
    --tre-container=$IMAGE --tre-project=proj1
}

test_tre_project_from_the_environment_is_checked_too() {
  local out
  out=$(as alice env SLURM_SPANK__SLURM_SPANK_OPTION_tre_spank_tre_project=proj2 \
    srun --tre-container=$IMAGE echo STARTED 2>&1) || true
  assert_contains "$out" "tre-spank: --tre-project=proj2 is not one of your projects (yours: proj1)"
  assert_not_contains "$out" "STARTED"
  assert_node_idle
}

test_home_safe_data_that_is_a_file_fails_and_is_named() {
  local job out
  as alice sh -c 'echo not-a-dir > ~/safe_data'
  job=$(run_job alice --tre-container=$IMAGE --wrap 'echo STARTED')
  as alice rm -f safe_data
  out=$(job_output alice "$job")
  assert_line "$out" "Cannot open project data: /home/alice/safe_data is not a directory"
  assert_not_contains "$out" "STARTED"
  assert_eq "$(job_field "$job" JobState)" FAILED
  assert_node_idle
}

test_home_safe_data_that_is_a_dangling_link_fails_and_is_named() {
  local job out before
  before=$(job_dirs alice)
  as alice ln -s /nonexistent/data safe_data
  job=$(run_job alice --tre-container=$IMAGE --wrap 'echo STARTED')
  as alice rm -f safe_data
  out=$(job_output alice "$job")
  assert_line "$out" "Cannot open project data: /home/alice/safe_data is a dangling symbolic link"
  assert_not_contains "$out" "STARTED"
  assert_no_new_job_dirs alice "$before"
  assert_node_idle
}

test_project_directory_the_user_cannot_open_fails_and_is_named() {
  local job out
  bed exec chmod 2700 /safe_data/proj3
  job=$(run_job dave --tre-container=$IMAGE --wrap 'echo STARTED')
  bed exec chmod 2770 /safe_data/proj3
  out=$(job_output dave "$job")
  assert_line "$out" "Cannot open project data: /safe_data/proj3"
  assert_not_contains "$out" "STARTED"
  assert_eq "$(job_field "$job" JobState)" FAILED
  assert_node_idle
}

test_missing_home_directory_fails_the_job_clearly() {
  local job out
  bed exec mv /home/dave /home/dave.away
  job=$(bed exec runuser -u dave -- sh -c 'cd /tmp && sbatch --parsable -o /tmp/dave-%j.out --tre-container='"$IMAGE"' --wrap "echo STARTED"') \
    || { bed exec mv /home/dave.away /home/dave; fail "sbatch refused"; }
  wait_job "$job" || true
  out=$(bed exec cat "/tmp/dave-$job.out")
  bed exec mv /home/dave.away /home/dave
  assert_contains "$out" "tre-spank: cannot open home directory /home/dave: ENOENT"
  assert_not_contains "$out" "STARTED"
  assert_eq "$(job_field "$job" JobState)" FAILED
  assert_node_idle
}

test_prefixed_group_names_its_project() {
  local job
  job=$(run_job dave --tre-container=$IMAGE --wrap 'cat /safe_data/README.txt')
  assert_line "$(job_output dave "$job")" "data of proj3"
}

test_home_safe_data_wins_over_groups() {
  local job
  as alice sh -c 'mkdir -p ~/safe_data && echo "home data" > ~/safe_data/mine.txt'
  job=$(run_job alice --tre-container=$IMAGE --wrap 'cat /safe_data/mine.txt')
  as alice rm -rf safe_data
  assert_line "$(job_output alice "$job")" "home data"
}

test_read_only_project_data_is_read_only_inside_where_the_site_says_so() {
  local job out
  with_config 'read_only_projects = ["proj1"]'
  job=$(run_job alice --tre-container=$IMAGE --wrap 'cat /safe_data/README.txt; touch /safe_data/x-$SLURM_JOB_ID 2>/dev/null && echo WROTE || echo READ-ONLY') ||
    { restore_config; return 1; }
  restore_config
  out=$(job_output alice "$job")
  assert_contains "$out" "tre-spank: safe data: /safe_data/proj1 -> /safe_data read-only ("
  assert_line "$out" "data of proj1"
  assert_line "$out" "READ-ONLY"
  assert_absent "/safe_data/proj1/x-$job"
}
