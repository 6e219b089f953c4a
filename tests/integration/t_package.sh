# The .debs a site would install (packaging/build-deb), installed into the bed with
# dpkg -i. Set TRE_DEB to the tre-spank .deb (the tre-spank-client .deb of the same
# version is taken from beside it); without it the newest target/$SUITE/deb/tre-spank_*.deb
# is used (and the test fails if there is none: build them with packaging/build-deb).
# The dpkg tests (remove, purge, upgrade, downgrade) end with the package installed
# again, as the other tests expect.

package_deb() {
  local deb=${TRE_DEB:-}
  [ -n "$deb" ] || deb=$(ls -t "$ROOT_DIR/target/$SUITE/deb/"tre-spank_*.deb 2>/dev/null | head -n 1)
  [ -n "$deb" ] && [ -f "$deb" ] || { fail "no .deb: run packaging/build-deb --suite $SUITE"; return 1; }
  echo "$deb"
}
client_deb() { local d; d=$(package_deb) || return 1; echo "$(dirname "$d")/$(basename "$d" | sed 's/^tre-spank_/tre-spank-client_/')"; }

SNIPPET=/etc/slurm/plugstack.conf.d/tre-spank.conf

# next_series S: the packages' upper bound for Slurm series S (MAJOR.MINOR): the minor + 1.
next_series() { local m=${1#*.}; printf '%s.%02d' "${1%.*}" $((10#$m + 1)); }

pkg_restart_slurmd() {
  bed exec /opt/tre-testbed/bed restart_slurmd >/dev/null || { fail "slurmd did not start again"; return 1; }
  for _ in $(seq 150); do [ "$(nodes_state)" = idle ] && return 0; sleep 0.2; done
  fail "the nodes are not idle after the slurmd restart: $(nodes_state)"
}

# A node whose slurmd starts and runs jobs: restart, then a plain job completes.
assert_node_runs_plain_jobs() {
  local job
  pkg_restart_slurmd || return 1
  job=$(run_job alice --wrap 'echo plain job ran') || return 1
  assert_line "$(job_output alice "$job")" "plain job ran"
  assert_eq "$(job_field "$job" JobState)" COMPLETED
}

assert_container_job_runs() {
  local job
  job=$(run_job alice --tre-container=$IMAGE --wrap "echo $1") || return 1
  assert_line "$(job_output alice "$job")" "$1"
  assert_eq "$(job_field "$job" JobState)" COMPLETED
}

# repack DEB VERSION OUTDIR: DEB with its version (and the client pin) changed, as a
# later or earlier build of the same packaging would be; prints the new path.
repack() {
  local deb=$1 new=$2 out=$3 old dir
  old=$(dpkg-deb -f "$deb" Version)
  dir=$(mktemp -d)
  dpkg-deb -R "$deb" "$dir/x"
  sed -i "s/$old/$new/g" "$dir/x/DEBIAN/control"
  mkdir -p "$out"
  dpkg-deb --root-owner-group -Zxz -b "$dir/x" "$out/$(basename "$deb" | sed "s/$old/$new/")" >/dev/null
  rm -rf "$dir"
  echo "$out/$(basename "$deb" | sed "s/$old/$new/")"
}

test_the_deb_installs_plugin_tool_config_snippet_and_man_pages() {
  local deb f
  deb=$(package_deb)
  bed install-deb "$deb" >/dev/null
  assert_eq "$(bed exec dpkg-query -W -f '${Status}' tre-spank)" "install ok installed"
  assert_eq "$(bed exec dpkg-query -W -f '${Status}' tre-spank-client)" "install ok installed"
  for f in /usr/lib/slurm-tre/tre_spank.so /usr/sbin/tre-spank /usr/libexec/tre-spank/conmon \
    $SNIPPET /etc/slurm/tre-spank.toml /usr/share/tre-spank/tre-spank.toml \
    /usr/share/tre-spank/plugstack.conf /usr/share/doc/tre-spank/audit-log.md \
    /usr/share/doc/tre-spank/operations.md \
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
  assert_eq "$(bed exec dpkg -S /usr/lib/slurm-tre/tre_spank.so)" "tre-spank-client: /usr/lib/slurm-tre/tre_spank.so"
  # The snippet is the site's file, handled by the maintainer scripts, not a conffile.
  assert_eq "$(bed exec cat $SNIPPET)" "$(cat "$ROOT_DIR/plugstack.conf.example")"
  assert_eq "$(bed exec dpkg-query -W -f '${Conffiles}' tre-spank-client | awk '{print $1}' | paste -sd, -)" /etc/slurm/tre-spank.toml
  assert_line "$(bed exec /usr/sbin/tre-spank check)" "all checks passed"
}

test_a_job_runs_with_the_installed_package() {
  bed install-deb "$(package_deb)" >/dev/null
  assert_container_job_runs from-the-package
}

test_the_client_package_installs_without_slurmd_podman_or_crun() {
  local client node deps series out rc p
  client=$(client_deb); node=$(package_deb)
  deps=$(dpkg-deb -f "$client" Depends)
  series=$(dpkg-deb -f "$client" Version | sed 's/.*+slurm//')
  assert_contains "$deps" "slurm-client (>= $series)"
  # This series only (24.11: << 24.12), whatever the next series is named.
  assert_contains "$deps" "slurm-client (<< $(next_series "$series"))"
  assert_contains "$(dpkg-deb -f "$node" Depends)" "slurmd (<< $(next_series "$series"))"
  for p in slurmd podman crun uidmap; do
    ! grep -qE "(^|[ ,])$p( |,|$)" <<<"$deps" || fail "the client package depends on $p: $deps"
  done
  # The plugin is in the client only; the node package needs exactly this client.
  assert_contains "$(dpkg-deb -c "$client")" "./usr/lib/slurm-tre/tre_spank.so"
  assert_not_contains "$(dpkg-deb -c "$node")" "tre_spank.so"
  assert_contains "$(dpkg-deb -f "$node" Depends)" "tre-spank-client (= $(dpkg-deb -f "$client" Version))"
  # A host with the client only: the options and the submission-time checks work.
  bed install-deb "$node" >/dev/null
  bed exec dpkg -r tre-spank >/dev/null
  assert_absent /usr/sbin/tre-spank
  assert_exists $SNIPPET
  pkg_restart_slurmd
  assert_contains "$(as alice sbatch --help 2>&1)" "--tre-container=IMAGE"
  out=$(as alice sbatch --parsable -o /dev/null --tre-container=docker.io/library/busybox:1 --wrap true 2>&1) && rc=0 || rc=$?
  bed install-deb "$node" >/dev/null
  [ "$rc" -ne 0 ] || fail "the client-only host accepted an image outside the allow-list"
  assert_contains "$out" "is not from an allowed registry"
}

test_removing_the_packages_leaves_a_node_that_starts_and_runs_jobs() {
  local out rc
  bed install-deb "$(package_deb)" >/dev/null
  bed exec sh -c "echo '# a site edit' >> $SNIPPET"
  bed exec dpkg -r tre-spank tre-spank-client >/dev/null
  assert_absent $SNIPPET
  assert_exists $SNIPPET.disabled
  assert_absent /usr/lib/slurm-tre/tre_spank.so
  assert_exists /etc/slurm/tre-spank.toml   # a conffile: kept on remove
  assert_node_runs_plain_jobs
  out=$(as alice sbatch --parsable -o /dev/null --tre-container=$IMAGE --wrap true 2>&1) && rc=0 || rc=$?
  [ "$rc" -ne 0 ] || fail "a --tre-container job was accepted with the plugin removed"
  # Installing again brings the site's snippet back, edit included.
  bed install-deb "$(package_deb)" >/dev/null
  assert_absent $SNIPPET.disabled
  assert_line "$(bed exec cat $SNIPPET)" "# a site edit"
  bed exec sed -i '/^# a site edit$/d' $SNIPPET
  pkg_restart_slurmd
  assert_container_job_runs after-reinstall
}

test_purging_the_packages_deletes_snippet_and_config_and_keeps_what_jobs_left() {
  local out
  bed install-deb "$(package_deb)" >/dev/null
  bed exec sh -c 'mkdir -p /var/lib/tre-spank/jobs/job-left-by-a-test && echo x > /var/lib/tre-spank/jobs/job-left-by-a-test/f'
  out=$(bed exec dpkg --purge tre-spank tre-spank-client 2>&1)
  assert_absent $SNIPPET
  assert_absent $SNIPPET.disabled
  assert_absent /etc/slurm/tre-spank.toml
  assert_exists /var/lib/tre-spank/jobs/job-left-by-a-test/f
  assert_contains "$out" "tre-spank: /var/lib/tre-spank/jobs is not empty: left in place"
  ! bed exec dpkg -s tre-spank >/dev/null 2>&1 || fail "tre-spank is still installed after the purge"
  assert_node_runs_plain_jobs
  bed exec rm -rf /var/lib/tre-spank/jobs/job-left-by-a-test
  bed install-deb "$(package_deb)" >/dev/null
  assert_exists $SNIPPET
  # The purge took the run's config with it: the package's own (approved images only)
  # is back; the run's base config turns the users' storage, where the bed's images
  # are, on again for this job and the tests after it.
  base_config_on
  assert_container_job_runs after-purge
}

# newer_debs: both packages under test repacked as version V+up1 into
# target/$SUITE/deb-upgrade/; prints that directory.
newer_debs() {
  local deb v out
  deb=$(package_deb) || return 1
  v=$(dpkg-deb -f "$deb" Version)
  out=$ROOT_DIR/target/$SUITE/deb-upgrade
  rm -rf "$out"
  repack "$(client_deb)" "$v+up1" "$out" >/dev/null
  repack "$deb" "$v+up1" "$out" >/dev/null
  echo "$out"
}

test_a_job_keeps_running_across_a_package_upgrade() {
  local deb v out job f n
  deb=$(package_deb)
  v=$(dpkg-deb -f "$deb" Version)
  out=$(newer_debs)
  bed install-deb "$deb" >/dev/null
  for f in "$out"/*.deb; do
    bed exec sh -c 'cat > "/tmp/$1"' sh "$(basename "$f")" <"$f"
  done
  job=$(submit alice --tre-container=$IMAGE --wrap 'sleep 30; echo survived the upgrade')
  wait_running "$job"
  # As an administrator would, while the job runs: dpkg -i, then restart slurmd.
  bed exec sh -c 'dpkg -i /tmp/tre-spank-client_*+up1_*.deb /tmp/tre-spank_*+up1_*.deb && rm -f /tmp/tre-spank*+up1_*.deb' >/dev/null
  bed exec /opt/tre-testbed/bed restart_slurmd >/dev/null
  assert_eq "$(bed exec dpkg-query -W -f '${Version}' tre-spank-client)" "$v+up1"
  assert_eq "$(bed exec dpkg-query -W -f '${Version}' tre-spank)" "$v+up1"
  assert_eq "$(job_field "$job" JobState)" RUNNING "the job after the upgrade and slurmd restart"
  wait_job "$job"
  assert_line "$(job_output alice "$job")" "survived the upgrade"
  assert_eq "$(job_field "$job" JobState)" COMPLETED
  assert_eq "$(job_field "$job" ExitCode)" 0:0
  # The new version's epilog cleaned up after the old version's job.
  n=$(job_number alice "$job")
  [ -n "$n" ] || { fail "no outputs line: $(job_output alice "$job")"; return 1; }
  assert_absent "/home/alice/scratch-$n"
  assert_exists "/home/alice/outputs-$n"
  assert_no_job_processes alice
  assert_container_job_runs after-the-upgrade
  bed install-deb "$deb" >/dev/null   # back to the version under test
}

test_downgrading_the_packages_leaves_a_node_that_runs_container_jobs() {
  local deb v out
  deb=$(package_deb)
  v=$(dpkg-deb -f "$deb" Version)
  out=$(newer_debs)
  bed install-deb "$out/tre-spank_$v+up1_$(dpkg --print-architecture).deb" >/dev/null
  # Back to the older version (dpkg -i of a lower version is a downgrade).
  bed install-deb "$deb" >/dev/null
  assert_eq "$(bed exec dpkg-query -W -f '${Version}' tre-spank)" "$v"
  assert_eq "$(bed exec dpkg-query -W -f '${Version}' tre-spank-client)" "$v"
  assert_exists $SNIPPET
  assert_line "$(bed exec /usr/sbin/tre-spank check)" "all checks passed"
  assert_container_job_runs after-the-downgrade
}

rpm_of() {  # rpm_of NAME: the newest built .rpm of package NAME
  ls -t "$ROOT_DIR/target/$SUITE/rpmbuild/RPMS/"*/"$1"-[0-9]*.rpm 2>/dev/null | head -n 1
}

test_the_rpm_is_built_for_real_and_lists_what_a_site_needs() {
  local rpm client list f series
  rpm=$(rpm_of tre-spank); client=$(rpm_of tre-spank-client)
  [ -n "$rpm" ] && [ -n "$client" ] || fail "no .rpm: run packaging/build-rpm --suite $SUITE"
  list=$(rpm -qlp "$client")
  for f in /usr/lib64/slurm-tre/tre_spank.so /etc/slurm/tre-spank.toml \
    /etc/slurm/plugstack.conf.d/tre-spank.conf /usr/share/tre-spank/tre-spank.toml \
    /usr/share/man/man7/tre-spank-options.7; do
    assert_line "$list" "$f"
  done
  list=$(rpm -qlp "$rpm")
  for f in /usr/sbin/tre-spank /usr/libexec/tre-spank/conmon /usr/share/man/man8/tre-spank.8 /var/spool/tre-spank \
    /var/lib/tre-spank/jobs /usr/share/doc/tre-spank/operations.md \
    /usr/share/tre-spank/containers.conf /usr/share/tre-spank/storage.conf \
    /usr/share/tre-spank/registries.conf /usr/share/tre-spank/mounts.conf \
    /usr/share/tre-spank/runtime-home; do
    assert_line "$list" "$f"
  done
  # The exit guard's conmon wrapper is a link to the tool.
  assert_line "$(rpm -qlpv "$rpm" | awk '$NF == "../../sbin/tre-spank" && $(NF-2) == "/usr/libexec/tre-spank/conmon" { print "linked" }')" linked
  assert_not_contains "$list" tre_spank.so
  assert_eq "$(rpm -qp --qf '%{NAME} %{VERSION}' "$rpm")" "tre-spank 0.1.0"
  # The Slurm series is pinned, as in the deb, and is in the release.
  series=$(rpm -qp --qf '%{RELEASE}' "$rpm" | sed -n 's/^2\.slurm\([0-9]*\.[0-9]*\).*/\1/p')
  [ -n "$series" ] || fail "no slurm series in the release: $(rpm -qp --qf '%{RELEASE}' "$rpm")"
  assert_line "$(rpm -qpR "$rpm")" "slurm-slurmd >= $series"
  assert_line "$(rpm -qpR "$rpm")" "slurm-slurmd < $(next_series "$series")"
  assert_contains "$(rpm -qpR "$rpm")" "tre-spank-client = 0.1.0-"
  assert_line "$(rpm -qpR "$client")" "slurm >= $series"
  assert_line "$(rpm -qpR "$client")" "slurm < $(next_series "$series")"
  for p in slurm-slurmd podman crun; do
    ! rpm -qpR "$client" | grep -q "^$p" || fail "the client rpm requires $p"
  done
  assert_contains "$(rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "$client")" "cn /etc/slurm/plugstack.conf.d/tre-spank.conf"
}

# rpm's own erase, for real, in a scratch root (rpm --root; no scriptlets exist to run:
# `rpm -qp --scripts` is empty): %config(noreplace) leaves no `required` line behind.
test_erasing_the_client_rpm_leaves_no_plugstack_line_behind() {
  local client root
  client=$(rpm_of tre-spank-client)
  [ -n "$client" ] || fail "no .rpm: run packaging/build-rpm --suite $SUITE"
  assert_eq "$(rpm -qp --scripts "$client")" ""
  root=$(mktemp -d)
  rpm --root "$root" --initdb
  rpm --root "$root" -i --nodeps "$client"
  [ -f "$root/etc/slurm/plugstack.conf.d/tre-spank.conf" ] || fail "rpm -i did not install the snippet"
  rpm --root "$root" -e tre-spank-client
  [ ! -e "$root/etc/slurm/plugstack.conf.d/tre-spank.conf" ] || fail "an unchanged snippet outlived rpm -e"
  rpm --root "$root" -i --nodeps "$client"
  echo '# a site edit' >>"$root/etc/slurm/plugstack.conf.d/tre-spank.conf"
  rpm --root "$root" -e tre-spank-client
  [ -f "$root/etc/slurm/plugstack.conf.d/tre-spank.conf.rpmsave" ] || fail "an edited snippet was not saved as .rpmsave"
  [ -z "$(ls "$root"/etc/slurm/plugstack.conf.d/*.conf 2>/dev/null)" ] || fail "a *.conf snippet outlived rpm -e"
  [ ! -e "$root/usr/lib64/slurm-tre/tre_spank.so" ] || fail "the plugin outlived rpm -e"
  rm -rf "$root"
}

# rpm's own upgrade and downgrade, for real, in a scratch root (no scriptlets exist to
# run): both packages rebuilt with a higher release (dist .up1: 2.slurmS.up1) from the
# same sources and binaries, rpm -U to it and rpm -U --oldpackage back. The plugin stays
# and the snippet with the site's edit stays in the include glob throughout (a `required`
# line without its plugin, or a plugin whose line vanished, are what must not happen).
test_upgrading_and_downgrading_the_rpms_keep_the_plugin_and_the_sites_snippet() {
  local client rpm top tool include series root up upc s=etc/slurm/plugstack.conf.d/tre-spank.conf
  client=$(rpm_of tre-spank-client); rpm=$(rpm_of tre-spank)
  [ -n "$client" ] && [ -n "$rpm" ] || { fail "no .rpm: run packaging/build-rpm --suite $SUITE"; return 1; }
  read -r _ tool _ < <(cd "$ROOT_DIR" && scripts/build-plugin --suite "$SUITE")
  [ -x "$tool" ] || { fail "scripts/build-plugin gave no tool"; return 1; }
  include=$(bed headers); include=${include#-I}
  series=$(rpm -qp --qf '%{RELEASE}' "$rpm" | sed -n 's/^2\.slurm\([0-9]*\.[0-9]*\).*/\1/p')
  top=$(mktemp -d); root=$(mktemp -d)
  mkdir -p "$top"/{SOURCES,SPECS,BUILD,RPMS,SRPMS}
  cp "$ROOT_DIR/target/$SUITE/rpmbuild/SOURCES/"*.tar.gz "$top/SOURCES/"
  rpmbuild -bb --nodeps --nocheck --quiet --define "_topdir $top" --define "bin_dir $(dirname "$tool")" \
    --define "slurm_include $include" --define "slurm_series $series" --define "dist .up1" \
    "$ROOT_DIR/packaging/rpm/tre-spank.spec" >/dev/null 2>&1 || { fail "rpmbuild of the .up1 release failed"; return 1; }
  up=$(ls "$top"/RPMS/*/tre-spank-0*.up1.*.rpm); upc=$(ls "$top"/RPMS/*/tre-spank-client-0*.up1.*.rpm)
  rpm --root "$root" --initdb
  rpm --root "$root" -i --nodeps "$client" "$rpm"
  echo '# a site edit' >>"$root/$s"
  rpm --root "$root" -U --nodeps "$upc" "$up"
  assert_eq "$(rpm --root "$root" -q --qf '%{RELEASE}\n' tre-spank tre-spank-client | sort -u)" "2.slurm$series.up1"
  [ -f "$root/usr/lib64/slurm-tre/tre_spank.so" ] || fail "no plugin after rpm -U"
  assert_contains "$(cat "$root/$s")" "# a site edit"
  assert_contains "$(cat "$root/$s")" "required /usr/lib64/slurm-tre/tre_spank.so"
  [ ! -e "$root/$s.rpmnew" ] && [ ! -e "$root/$s.rpmsave" ] || fail "rpm -U left an .rpmnew or .rpmsave snippet: $(ls "$root/etc/slurm/plugstack.conf.d")"
  rpm --root "$root" -U --oldpackage --nodeps "$client" "$rpm"
  assert_eq "$(rpm --root "$root" -q --qf '%{RELEASE}\n' tre-spank tre-spank-client | sort -u)" "2.slurm$series"
  [ -f "$root/usr/lib64/slurm-tre/tre_spank.so" ] || fail "no plugin after the downgrade"
  [ -x "$root/usr/sbin/tre-spank" ] || fail "no tool after the downgrade"
  assert_contains "$(cat "$root/$s")" "# a site edit"
  assert_eq "$(ls "$root/etc/slurm/plugstack.conf.d")" "tre-spank.conf"
  rpm --root "$root" -e tre-spank tre-spank-client
  [ -z "$(ls "$root"/etc/slurm/plugstack.conf.d/*.conf 2>/dev/null)" ] || fail "a *.conf snippet outlived rpm -e"
  [ ! -e "$root/usr/lib64/slurm-tre/tre_spank.so" ] || fail "the plugin outlived rpm -e"
  rm -rf "$top" "$root"
}

# Why the snippet must never outlive the plugin: what Slurm does with a `required` and an
# `optional` line whose plugin is gone (the table in docs/operations.md). Uses
# put_snippet/restore_snippet (t_config.sh).
test_a_required_line_without_its_plugin_stops_slurmd_and_sbatch_and_optional_does_not() {
  local out rc
  put_snippet 'required /usr/lib/slurm-tre/absent.so'
  trap 'restore_snippet; bed exec /opt/tre-testbed/bed restart_slurmd >/dev/null' EXIT
  bed exec /opt/tre-testbed/bed restart_slurmd >/dev/null 2>&1 && rc=0 || rc=$?
  [ "$rc" -ne 0 ] || fail "slurmd started with a required line naming a missing plugin"
  assert_contains "$(slurmd_log | tail -n 5)" "error: slurmd initialization failed"
  out=$(as alice sbatch -o /dev/null --wrap true 2>&1) && rc=0 || rc=$?
  [ "$rc" -ne 0 ] || fail "sbatch ran with a required line naming a missing plugin"
  assert_contains "$out" "Failed to initialize plugin stack"
  put_snippet 'optional /usr/lib/slurm-tre/absent.so'
  pkg_restart_slurmd
  out=$(as alice sbatch -o /dev/null --tre-container=$IMAGE --wrap true 2>&1) && rc=0 || rc=$?
  [ "$rc" -ne 0 ] || fail "a --tre-container job was accepted without the plugin"
  assert_contains "$out" "unrecognized option '--tre-container=$IMAGE'"
  assert_node_runs_plain_jobs
}
