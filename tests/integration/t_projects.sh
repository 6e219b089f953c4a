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

test_tre_project_that_is_not_theirs_is_refused() {
  local job out
  job=$(run_job alice --tre-container=$IMAGE --tre-project=proj2 --wrap 'echo STARTED')
  out=$(job_output alice "$job")
  assert_line "$out" "--tre-project=proj2 is not one of your projects (yours: proj1)"
  assert_not_contains "$out" "STARTED"
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
