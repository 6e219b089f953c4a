//! A FUSE passthrough that treats uid 0 as nobody, the way an NFS server exporting with
//! `root_squash` does: every request runs with the caller's fsuid/fsgid and groups
//! (uid 0 becomes 65534 with no groups), and the kernel leaves permission checks to it
//! (no `default_permissions`), so root gets no override. For the test bed only.
//!
//! Like an NFS server, it checks each request against the object it names and that
//! object's directory only, never against the path above them: an NFS client holds a
//! file handle, and the kernel already checked every lookup on the way down as the
//! caller. So the daemon reaches the object (or its directory) as itself, with an
//! `O_PATH` handle, and acts on that handle as the caller: a uid that may not search
//! `/home/alice` can still act in a directory of its own below it that it holds open.
//!
//!   rootsquash-fs DIR      (mounts over DIR, serving what DIR held before)
//!
//! `ROOTSQUASH_FS_REMOVE_DELAY_MS=N` makes each unlink and rmdir take at least N ms, as
//! a round trip to a busy NFS server does: a test of a removal that outlasts a time
//! budget then does not depend on how fast this machine is.
//!
//! Every `unsafe` block is a libc call on a descriptor this process owns and a
//! NUL-terminated path it built; the per-thread credential switch is undone after each
//! request (`as_caller`).

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    FileAttr, FileType, Filesystem, MountOption, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
};

const NOBODY: u32 = 65534;
const TTL: Duration = Duration::ZERO;

struct Fs {
    root: libc::c_int,
    root_ino: u64,
    paths: HashMap<u64, PathBuf>,
    remove_delay: Duration,
}

/// A descriptor this process opened, closed when dropped.
struct Fd(libc::c_int);

impl Drop for Fd {
    fn drop(&mut self) {
        unsafe { libc::close(self.0) };
    }
}

impl Fd {
    /// The path of the descriptor's own inode (`/proc/self/fd/N`), which no directory
    /// above it is searched for.
    fn by_fd(&self) -> CString {
        CString::new(format!("/proc/self/fd/{}", self.0)).unwrap()
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn c(p: &Path) -> CString {
    let b = p.as_os_str().as_bytes();
    CString::new(if b.is_empty() { b"." as &[u8] } else { b }).unwrap()
}

fn groups_of(pid: u32) -> Vec<libc::gid_t> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("Groups:")).map(|l| {
                l[7..]
                    .split_whitespace()
                    .filter_map(|g| g.parse().ok())
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// Runs `f` as the caller (squashed), per thread (raw syscalls, not glibc's
/// process-wide wrappers).
fn as_caller<T>(req: &Request<'_>, f: impl FnOnce() -> T) -> T {
    let (uid, gid, groups) = if req.uid() == 0 {
        (NOBODY, NOBODY, Vec::new())
    } else {
        (req.uid(), req.gid(), groups_of(req.pid()))
    };
    unsafe {
        libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr());
        libc::syscall(libc::SYS_setfsgid, gid);
        libc::syscall(libc::SYS_setfsuid, uid);
    }
    let r = f();
    unsafe {
        libc::syscall(libc::SYS_setfsuid, 0);
        libc::syscall(libc::SYS_setfsgid, 0);
        libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>());
    }
    r
}

fn kind(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

fn time(s: i64, ns: i64) -> SystemTime {
    if s >= 0 {
        UNIX_EPOCH + Duration::new(s as u64, ns as u32)
    } else {
        UNIX_EPOCH
    }
}

impl Fs {
    fn path(&self, ino: u64) -> Option<PathBuf> {
        self.paths.get(&ino).cloned()
    }

    fn child(&self, parent: u64, name: &OsStr) -> Option<PathBuf> {
        Some(self.path(parent)?.join(name))
    }

    /// An `O_PATH` handle of `rel` (no link followed), opened as the daemon: the file
    /// handle of an NFS client. Permission is checked by what is done with it.
    fn handle(&self, rel: &Path) -> Result<Fd, i32> {
        let fd = unsafe {
            libc::openat(
                self.root,
                c(rel).as_ptr(),
                libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            Err(errno())
        } else {
            Ok(Fd(fd))
        }
    }

    /// The handle of the directory `parent` and the name `name` in it.
    fn entry_of(&self, parent: u64, name: &OsStr) -> Result<(Fd, CString, PathBuf), i32> {
        let dir = self.path(parent).ok_or(libc::ENOENT)?;
        let fd = self.handle(&dir)?;
        let n = CString::new(name.as_bytes()).map_err(|_| libc::EINVAL)?;
        Ok((fd, n, dir.join(name)))
    }

    fn stat(&mut self, rel: &Path) -> Result<FileAttr, i32> {
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let r = unsafe {
            libc::fstatat(
                self.root,
                c(rel).as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if r != 0 {
            return Err(errno());
        }
        let ino = if st.st_ino == self.root_ino {
            1
        } else {
            st.st_ino
        };
        self.paths.insert(ino, rel.to_path_buf());
        Ok(FileAttr {
            ino,
            size: st.st_size as u64,
            blocks: st.st_blocks as u64,
            atime: time(st.st_atime, st.st_atime_nsec),
            mtime: time(st.st_mtime, st.st_mtime_nsec),
            ctime: time(st.st_ctime, st.st_ctime_nsec),
            crtime: UNIX_EPOCH,
            kind: kind(st.st_mode),
            perm: (st.st_mode & 0o7777) as u16,
            nlink: st.st_nlink as u32,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev as u32,
            blksize: st.st_blksize as u32,
            flags: 0,
        })
    }

    fn entry(&mut self, rel: &Path, reply: ReplyEntry) {
        match self.stat(rel) {
            Ok(a) => reply.entry(&TTL, &a, 0),
            Err(e) => reply.error(e),
        }
    }

    /// Creates `parent/name` with `op(root, path)` as the caller, then replies its entry.
    fn make(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        reply: ReplyEntry,
        op: impl FnOnce(libc::c_int, &CString) -> libc::c_int,
    ) {
        let (dir, n, rel) = match self.entry_of(parent, name) {
            Ok(x) => x,
            Err(e) => return reply.error(e),
        };
        if as_caller(req, || op(dir.0, &n)) != 0 {
            return reply.error(errno());
        }
        self.entry(&rel, reply)
    }

    /// `unlinkat(parent/name, flags)` as the caller.
    fn drop_entry(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        flags: libc::c_int,
        reply: ReplyEmpty,
    ) {
        let (dir, n, _) = match self.entry_of(parent, name) {
            Ok(x) => x,
            Err(e) => return reply.error(e),
        };
        match check(as_caller(req, || unsafe {
            libc::unlinkat(dir.0, n.as_ptr(), flags)
        })) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    /// Opens `ino` with `flags` as the caller; the descriptor is the handle.
    fn open_as_caller(
        &mut self,
        req: &Request<'_>,
        ino: u64,
        flags: libc::c_int,
        open_flags: u32,
        reply: ReplyOpen,
    ) {
        let Some(rel) = self.path(ino) else {
            return reply.error(libc::ENOENT);
        };
        let h = match self.handle(&rel) {
            Ok(h) => h,
            Err(e) => return reply.error(e),
        };
        // Reopened by its descriptor: the link in /proc is the object itself.
        let flags = flags & !libc::O_NOFOLLOW;
        let fd = as_caller(req, || unsafe { libc::open(h.by_fd().as_ptr(), flags) });
        if fd < 0 {
            return reply.error(errno());
        }
        reply.opened(fd as u64, open_flags)
    }

    fn renamed(&mut self, from: &Path, to: &Path) {
        for p in self.paths.values_mut() {
            if let Ok(rest) = p.strip_prefix(from) {
                *p = to.join(rest);
            }
        }
    }
}

/// Replies the first `n` bytes of `buf`, or the errno of a failed read (`n < 0`).
fn reply_data(n: isize, buf: &[u8], reply: ReplyData) {
    match usize::try_from(n) {
        Ok(n) => reply.data(&buf[..n]),
        Err(_) => reply.error(errno()),
    }
}

fn check(r: libc::c_int) -> Result<(), i32> {
    if r < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

impl Filesystem for Fs {
    fn lookup(&mut self, req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let Some(rel) = self.child(parent, name) else {
            return reply.error(libc::ENOENT);
        };
        // The lookup needs search permission on the parent (only), as the caller.
        let h = match self
            .path(parent)
            .ok_or(libc::ENOENT)
            .and_then(|p| self.handle(&p))
        {
            Ok(h) => h,
            Err(e) => return reply.error(e),
        };
        let ok = as_caller(req, || unsafe {
            libc::faccessat(
                libc::AT_FDCWD,
                h.by_fd().as_ptr(),
                libc::X_OK,
                libc::AT_EACCESS,
            )
        });
        if ok != 0 {
            return reply.error(errno());
        }
        self.entry(&rel, reply)
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        let Some(rel) = self.path(ino) else {
            return reply.error(libc::ENOENT);
        };
        match self.stat(&rel) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &mut self,
        req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        let Some(rel) = self.path(ino) else {
            return reply.error(libc::ENOENT);
        };
        let h = match self.handle(&rel) {
            Ok(h) => h,
            Err(e) => return reply.error(e),
        };
        let p = h.by_fd();
        let empty = CString::default();
        let r = as_caller(req, || -> Result<(), i32> {
            if let Some(m) = mode {
                check(unsafe { libc::chmod(p.as_ptr(), m & 0o7777) })?;
            }
            if uid.is_some() || gid.is_some() {
                check(unsafe {
                    libc::fchownat(
                        h.0,
                        empty.as_ptr(),
                        uid.unwrap_or(u32::MAX),
                        gid.unwrap_or(u32::MAX),
                        libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
                    )
                })?;
            }
            if let Some(s) = size {
                let fd = unsafe { libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
                check(fd)?;
                let r = unsafe { libc::ftruncate(fd, s as i64) };
                unsafe { libc::close(fd) };
                check(r)?;
            }
            if atime.is_some() || mtime.is_some() {
                let ts = |t: Option<TimeOrNow>| match t {
                    None => libc::timespec {
                        tv_sec: 0,
                        tv_nsec: libc::UTIME_OMIT,
                    },
                    Some(TimeOrNow::Now) => libc::timespec {
                        tv_sec: 0,
                        tv_nsec: libc::UTIME_NOW,
                    },
                    Some(TimeOrNow::SpecificTime(t)) => {
                        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
                        libc::timespec {
                            tv_sec: d.as_secs() as i64,
                            tv_nsec: d.subsec_nanos() as i64,
                        }
                    }
                };
                let times = [ts(atime), ts(mtime)];
                check(unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), times.as_ptr(), 0) })?;
            }
            Ok(())
        });
        match r.and_then(|()| self.stat(&rel)) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&mut self, req: &Request<'_>, ino: u64, reply: ReplyData) {
        let Some(rel) = self.path(ino) else {
            return reply.error(libc::ENOENT);
        };
        let h = match self.handle(&rel) {
            Ok(h) => h,
            Err(e) => return reply.error(e),
        };
        let mut buf = vec![0u8; 4096];
        let empty = CString::default();
        let n = as_caller(req, || unsafe {
            libc::readlinkat(h.0, empty.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
        });
        reply_data(n, &buf, reply)
    }

    fn mknod(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        self.make(req, parent, name, reply, |root, p| unsafe {
            libc::mknodat(root, p.as_ptr(), mode & !umask, rdev as libc::dev_t)
        })
    }

    fn mkdir(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        self.make(req, parent, name, reply, |root, p| unsafe {
            libc::mkdirat(root, p.as_ptr(), mode & !umask)
        })
    }

    fn unlink(&mut self, req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        std::thread::sleep(self.remove_delay);
        self.drop_entry(req, parent, name, 0, reply)
    }

    fn rmdir(&mut self, req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        std::thread::sleep(self.remove_delay);
        self.drop_entry(req, parent, name, libc::AT_REMOVEDIR, reply)
    }

    fn symlink(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let t = CString::new(target.as_os_str().as_bytes()).unwrap();
        self.make(req, parent, link_name, reply, |root, p| unsafe {
            libc::symlinkat(t.as_ptr(), root, p.as_ptr())
        })
    }

    fn rename(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        let ((fdir, fname, from), (tdir, tname, to)) = match (
            self.entry_of(parent, name),
            self.entry_of(newparent, newname),
        ) {
            (Ok(f), Ok(t)) => (f, t),
            (Err(e), _) | (_, Err(e)) => return reply.error(e),
        };
        let r = as_caller(req, || unsafe {
            libc::syscall(
                libc::SYS_renameat2,
                fdir.0,
                fname.as_ptr(),
                tdir.0,
                tname.as_ptr(),
                flags,
            )
        });
        if r != 0 {
            return reply.error(errno());
        }
        self.renamed(&from, &to);
        reply.ok()
    }

    fn link(
        &mut self,
        req: &Request<'_>,
        ino: u64,
        newparent: u64,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let Some(from) = self.path(ino) else {
            return reply.error(libc::ENOENT);
        };
        let (src, (tdir, tname, to)) = match (self.handle(&from), self.entry_of(newparent, newname))
        {
            (Ok(s), Ok(t)) => (s, t),
            (Err(e), _) | (_, Err(e)) => return reply.error(e),
        };
        let r = as_caller(req, || unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                src.by_fd().as_ptr(),
                tdir.0,
                tname.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        });
        if r != 0 {
            return reply.error(errno());
        }
        self.entry(&to, reply)
    }

    fn open(&mut self, req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        let flags = (flags & !libc::O_CREAT) | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        self.open_as_caller(req, ino, flags, fuser::consts::FOPEN_DIRECT_IO, reply)
    }

    fn create(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let (dir, n, rel) = match self.entry_of(parent, name) {
            Ok(x) => x,
            Err(e) => return reply.error(e),
        };
        let fd = as_caller(req, || unsafe {
            libc::openat(
                dir.0,
                n.as_ptr(),
                flags | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                mode & !umask,
            )
        });
        if fd < 0 {
            return reply.error(errno());
        }
        match self.stat(&rel) {
            Ok(a) => reply.created(&TTL, &a, 0, fd as u64, fuser::consts::FOPEN_DIRECT_IO),
            Err(e) => {
                unsafe { libc::close(fd) };
                reply.error(e)
            }
        }
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock: Option<u64>,
        reply: ReplyData,
    ) {
        let mut buf = vec![0u8; size as usize];
        let n = unsafe { libc::pread(fh as i32, buf.as_mut_ptr().cast(), buf.len(), offset) };
        reply_data(n, &buf, reply)
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        data: &[u8],
        _wf: u32,
        _flags: i32,
        _lock: Option<u64>,
        reply: ReplyWrite,
    ) {
        let n = unsafe { libc::pwrite(fh as i32, data.as_ptr().cast(), data.len(), offset) };
        if n < 0 {
            return reply.error(errno());
        }
        reply.written(n as u32)
    }

    fn release(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _flags: i32,
        _lock: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        unsafe { libc::close(fh as i32) };
        reply.ok()
    }

    fn fsync(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        unsafe { libc::fsync(fh as i32) };
        reply.ok()
    }

    fn opendir(&mut self, req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        self.open_as_caller(req, ino, flags, 0, reply)
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let Some(rel) = self.path(ino) else {
            return reply.error(libc::ENOENT);
        };
        // Names from the handle opened (with the caller's rights) in opendir.
        let names: Vec<OsString> = match std::fs::read_dir(format!("/proc/self/fd/{fh}")) {
            Ok(d) => d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect(),
            Err(e) => return reply.error(e.raw_os_error().unwrap_or(libc::EIO)),
        };
        let mut all = vec![
            (OsString::from("."), ino, FileType::Directory),
            (OsString::from(".."), 1, FileType::Directory),
        ];
        for n in names {
            if let Ok(a) = self.stat(&rel.join(&n)) {
                all.push((n, a.ino, a.kind));
            }
        }
        for (i, (n, ino, k)) in all.into_iter().enumerate().skip(offset as usize) {
            if reply.add(ino, (i + 1) as i64, k, OsStr::from_bytes(&n.into_vec())) {
                break;
            }
        }
        reply.ok()
    }

    fn releasedir(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _flags: i32,
        reply: ReplyEmpty,
    ) {
        unsafe { libc::close(fh as i32) };
        reply.ok()
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstatvfs(self.root, &mut s) } != 0 {
            return reply.error(errno());
        }
        reply.statfs(
            s.f_blocks,
            s.f_bfree,
            s.f_bavail,
            s.f_files,
            s.f_ffree,
            s.f_bsize as u32,
            s.f_namemax as u32,
            s.f_frsize as u32,
        )
    }

    fn access(&mut self, req: &Request<'_>, ino: u64, mask: i32, reply: ReplyEmpty) {
        let Some(rel) = self.path(ino) else {
            return reply.error(libc::ENOENT);
        };
        let h = match self.handle(&rel) {
            Ok(h) => h,
            Err(e) => return reply.error(e),
        };
        match check(as_caller(req, || unsafe {
            libc::faccessat(libc::AT_FDCWD, h.by_fd().as_ptr(), mask, libc::AT_EACCESS)
        })) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}

fn main() {
    let dir = std::env::args_os()
        .nth(1)
        .expect("usage: rootsquash-fs DIR");
    let cdir = CString::new(dir.as_bytes()).unwrap();
    let root = unsafe {
        libc::open(
            cdir.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    assert!(root >= 0, "cannot open {dir:?}");
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    unsafe { libc::fstat(root, &mut st) };
    let mut paths = HashMap::new();
    paths.insert(1, PathBuf::new());
    let fs = Fs {
        root,
        root_ino: st.st_ino,
        paths,
        remove_delay: Duration::from_millis(
            std::env::var("ROOTSQUASH_FS_REMOVE_DELAY_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        ),
    };
    let opts = [
        MountOption::FSName("rootsquash".into()),
        MountOption::AllowOther,
        MountOption::Suid,
        MountOption::Dev,
    ];
    fuser::mount2(fs, &dir, &opts).expect("mount");
}
