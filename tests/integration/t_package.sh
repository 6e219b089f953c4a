# The .deb a site would install (packaging/build-deb), installed into the bed with
# dpkg -i. Set TRE_DEB to the .deb; without it the newest target/$SUITE/deb/*.deb is used
# (and the test fails if there is none: build one with packaging/build-deb).

package_deb() {
  local deb=${TRE_DEB:-}
  [ -n "$deb" ] || deb=$(ls -t "$ROOT_DIR/target/$SUITE/deb/"*.deb 2>/dev/null | head -n 1)
  [ -n "$deb" ] && [ -f "$deb" ] || { fail "no .deb: run packaging/build-deb --suite $SUITE"; return 1; }
  echo "$deb"
}

test_the_deb_installs_plugin_tool_config_snippet_and_man_pages() {
  local deb f
  deb=$(package_deb)
  bed install-deb "$deb" >/dev/null
  assert_eq "$(bed exec dpkg-query -W -f '${Status}' tre-spank)" "install ok installed"
  for f in /usr/lib/slurm-tre/tre_spank.so /usr/sbin/tre-spank \
    /etc/slurm/plugstack.conf.d/tre-spank.conf /etc/slurm/tre-spank.toml \
    /usr/share/doc/tre-spank/examples/tre-spank.toml /usr/share/doc/tre-spank/audit-log.md \
    /usr/share/man/man8/tre-spank.8.gz /usr/share/man/man7/tre-spank-options.7.gz \
    /usr/share/tre-spank/containers.conf /usr/share/tre-spank/storage.conf \
    /usr/share/tre-spank/registries.conf /usr/share/tre-spank/mounts.conf; do
    assert_exists "$f"
  done
  # The runtimes' HOME: empty, and root's alone.
  assert_eq "$(bed exec stat -c '%U %a' /usr/share/tre-spank/runtime-home)" "root 755"
  assert_eq "$(bed exec ls -A /usr/share/tre-spank/runtime-home)" ""
  assert_eq "$(bed exec stat -c %a /var/spool/tre-spank)" 700
  assert_eq "$(bed exec stat -c %a /var/lib/tre-spank/jobs)" 711
  assert_eq "$(bed exec dpkg -S /usr/sbin/tre-spank)" "tre-spank: /usr/sbin/tre-spank"
  assert_line "$(bed exec /usr/sbin/tre-spank check)" "all checks passed"
}

test_a_job_runs_with_the_installed_package() {
  local job
  bed install-deb "$(package_deb)" >/dev/null
  job=$(run_job alice --tre-container=$IMAGE --wrap 'echo from-the-package')
  assert_line "$(job_output alice "$job")" "from-the-package"
  assert_eq "$(job_field "$job" JobState)" COMPLETED
}

test_the_rpm_is_built_for_real_and_lists_what_a_site_needs() {
  local rpm list f
  rpm=$(ls -t "$ROOT_DIR/target/$SUITE/rpmbuild/RPMS/"*/tre-spank-*.rpm 2>/dev/null | head -n 1)
  [ -n "$rpm" ] || fail "no .rpm: run packaging/build-rpm --suite $SUITE"
  list=$(rpm -qlp "$rpm")
  for f in /usr/lib64/slurm-tre/tre_spank.so /usr/sbin/tre-spank /etc/slurm/tre-spank.toml \
    /etc/slurm/plugstack.conf.d/tre-spank.conf /usr/share/man/man8/tre-spank.8 \
    /usr/share/man/man7/tre-spank-options.7 /var/spool/tre-spank /var/lib/tre-spank/jobs \
    /usr/share/tre-spank/containers.conf /usr/share/tre-spank/storage.conf \
    /usr/share/tre-spank/registries.conf /usr/share/tre-spank/mounts.conf \
    /usr/share/tre-spank/runtime-home; do
    assert_line "$list" "$f"
  done
  assert_eq "$(rpm -qp --qf '%{NAME} %{VERSION}' "$rpm")" "tre-spank 0.1.0"
}
