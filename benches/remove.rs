//! P3 of `benches/run`: the plugin's scratch remover (`host::dirs::Dir::remove_tree`)
//! against `rm -rf` on the same kind of tree, alternated in one run.
//!
//! ```text
//! cargo bench --no-default-features --bench remove -- DIR [REPS] [DIRS] [FILES]
//! ```
//!
//! Each repetition creates two identical trees under DIR (DIRS directories of FILES
//! small files each; default 100 x 1000 = 100,000 files), flushes the filesystem
//! (`syncfs`) so that neither removal competes with the other's write-back, then times
//! both removals, alternating which one goes first. `rm -rf` is run as a program (argv,
//! no shell), as an administrator would; the remover is called in-process, as the
//! epilog calls it. One line per measurement on stdout: `remover SECONDS` or
//! `rm SECONDS`. Not a timed test: it measures, it does not judge.

use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use nix::fcntl::AtFlags;
use nix::sys::stat::fstatat;
use tre_spank::host::dirs::{Dir, DirId};
use tre_spank::host::remove::job_owners;

const CONTENT: &[u8] = b"scratch data of a job\n";

fn make_tree(root: &Path, dirs: usize, files: usize) -> std::io::Result<()> {
    fs::create_dir(root)?;
    for d in 0..dirs {
        let dir = root.join(format!("d{d:03}"));
        fs::create_dir(&dir)?;
        for f in 0..files {
            fs::write(dir.join(format!("f{f:04}")), CONTENT)?;
        }
    }
    Ok(())
}

fn time_remover(parent: &Path, name: &str) -> Result<f64, String> {
    let fd = Dir::open(parent).map_err(|e| e.to_string())?;
    let st = fstatat(fd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(|e| format!("{}/{name}: {e}", parent.display()))?;
    let start = Instant::now();
    let owners = job_owners(st.st_uid);
    let report = fd
        .remove_tree(name, DirId::of(&st), &owners)
        .map_err(|e| e.to_string())?;
    let secs = start.elapsed().as_secs_f64();
    if parent.join(name).exists() {
        return Err(format!("{}/{name} is still there", parent.display()));
    }
    eprintln!("remove: remover removed {} entries", report.removed_entries);
    Ok(secs)
}

fn time_rm(path: &Path) -> Result<f64, String> {
    let start = Instant::now();
    let status = Command::new("rm")
        .arg("-rf")
        .arg("--")
        .arg(path)
        .status()
        .map_err(|e| format!("rm: {e}"))?;
    let secs = start.elapsed().as_secs_f64();
    if !status.success() || path.exists() {
        return Err(format!("rm -rf {} failed: {status}", path.display()));
    }
    Ok(secs)
}

fn syncfs(dir: &Path) -> Result<(), String> {
    let f = fs::File::open(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    nix::unistd::syncfs(f.as_fd()).map_err(|e| format!("syncfs {}: {e}", dir.display()))
}

fn number(arg: Option<&OsString>, default: usize, what: &str) -> Result<usize, String> {
    match arg {
        None => Ok(default),
        Some(a) => a
            .to_str()
            .and_then(|s| s.parse().ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{what} must be a positive number")),
    }
}

fn run() -> Result<(), String> {
    // `cargo bench` adds `--bench` to the arguments.
    let args: Vec<OsString> = std::env::args_os()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let dir = PathBuf::from(
        args.first()
            .ok_or("usage: remove DIR [REPS] [DIRS] [FILES]")?,
    );
    let reps = number(args.get(1), 20, "REPS")?;
    let dirs = number(args.get(2), 100, "DIRS")?;
    let files = number(args.get(3), 1000, "FILES")?;
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let (a, b) = ("tree-remover", "tree-rm");
    for name in [a, b] {
        if dir.join(name).exists() {
            return Err(format!(
                "{} exists; remove it first",
                dir.join(name).display()
            ));
        }
    }
    eprintln!(
        "remove: {reps} repetitions of 2 trees of {dirs} x {files} files in {}",
        dir.display()
    );
    let mut out = std::io::stdout();
    for rep in 0..reps {
        for name in [a, b] {
            make_tree(&dir.join(name), dirs, files)
                .map_err(|e| format!("creating {}: {e}", dir.join(name).display()))?;
        }
        syncfs(&dir)?;
        let remover_first = rep % 2 == 0;
        for which in 0..2 {
            let line = if (which == 0) == remover_first {
                format!("remover {:.6}", time_remover(&dir, a)?)
            } else {
                format!("rm {:.6}", time_rm(&dir.join(b))?)
            };
            writeln!(out, "{line}").map_err(|e| e.to_string())?;
        }
        out.flush().map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("remove: {e}");
            ExitCode::FAILURE
        }
    }
}
