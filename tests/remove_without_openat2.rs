//! The remover on a kernel without `openat2` (before 5.6, or a seccomp filter that
//! answers ENOSYS): it falls back to `openat` and still removes the tree, follows no
//! link and, as root, leaves a mount of another filesystem inside scratch alone.
//!
//! A seccomp filter on the test's own thread makes `openat2` fail with ENOSYS, as
//! crun's tests do; every test first checks that the filter really took effect.

use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::symlink;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{open, openat2, OFlag, OpenHow};
use nix::sys::stat::{fstat, Mode};
use seccompiler::{BpfProgram, SeccompAction, SeccompFilter};
use tre_spank::host::dirs::{Dir, DirId};
use tre_spank::rules::subid::Owners;

/// Installs, on this thread only, a filter that makes openat2 return ENOSYS.
fn without_openat2() {
    let filter = SeccompFilter::new(
        [(libc::SYS_openat2, vec![])].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        std::env::consts::ARCH.try_into().expect("a seccomp target"),
    )
    .expect("a seccomp filter");
    let program: BpfProgram = filter.try_into().expect("a BPF program");
    seccompiler::apply_filter(&program).expect("the filter applies");
    let here = open(".", OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
    assert_eq!(
        openat2(here.as_fd(), ".", OpenHow::new()).err(),
        Some(Errno::ENOSYS),
        "the filter must make openat2 fail, or this test proves nothing"
    );
}

/// The test's own uid owns every directory it makes.
fn owner() -> Owners {
    Owners::new(nix::unistd::geteuid().as_raw(), Vec::new())
}

fn scratch_in(home: &Path) -> DirId {
    let scratch = home.join("scratch-1");
    fs::create_dir_all(scratch.join("a/b/c")).unwrap();
    fs::write(scratch.join("a/b/c/data"), b"x").unwrap();
    fs::write(scratch.join("top"), b"y").unwrap();
    let fd = open(
        &scratch,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        Mode::empty(),
    )
    .unwrap();
    DirId::of(&fstat(fd.as_fd()).unwrap())
}

#[test]
fn without_openat2_the_tree_goes_and_links_are_not_followed() {
    without_openat2();
    let home = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    fs::create_dir(outside.path().join("keep")).unwrap();
    fs::write(outside.path().join("keep/file"), b"keep").unwrap();
    let id = scratch_in(home.path());
    symlink(
        outside.path().join("keep"),
        home.path().join("scratch-1/a/link"),
    )
    .unwrap();

    let home_fd = Dir::open(home.path()).unwrap();
    let report = home_fd.remove_tree("scratch-1", id, &owner()).unwrap();

    assert!(!home.path().join("scratch-1").exists());
    assert_eq!(
        report.removed_entries, 6,
        "a, b, c, data, top and the link itself"
    );
    assert_eq!(fs::read(outside.path().join("keep/file")).unwrap(), b"keep");
}

#[test]
#[ignore = "needs root: mounts a tmpfs inside scratch (scripts/test runs it as root)"]
fn without_openat2_a_mount_of_another_filesystem_inside_scratch_is_left_alone() {
    use nix::mount::{mount, umount, MsFlags};
    use nix::sched::{unshare, CloneFlags};
    assert!(nix::unistd::geteuid().is_root(), "this test needs root");
    // A mount namespace of this thread alone: the host's mounts are not touched.
    unshare(CloneFlags::CLONE_NEWNS).unwrap();
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .unwrap();
    without_openat2();
    let home = tempfile::tempdir().unwrap();
    let id = scratch_in(home.path());
    let mnt = home.path().join("scratch-1/a/mnt");
    fs::create_dir(&mnt).unwrap();
    mount(
        Some("tmpfs"),
        &mnt,
        Some("tmpfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    fs::write(mnt.join("other-fs"), b"z").unwrap();

    let home_fd = Dir::open(home.path()).unwrap();
    let result = home_fd.remove_tree("scratch-1", id, &owner());

    assert!(
        result.is_err(),
        "a tree with a mount left in it is reported incomplete"
    );
    assert_eq!(fs::read(mnt.join("other-fs")).unwrap(), b"z");
    assert!(!home.path().join("scratch-1/top").exists());
    assert!(!home.path().join("scratch-1/a/b").exists());
    umount(&mnt).unwrap();
}
