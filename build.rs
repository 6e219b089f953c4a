//! Build script for the plugin (nothing is done without the `plugin` feature):
//!
//! - its linker version script (src/spank/exports.map), which keeps hooks tre-spank
//!   does not implement out of the plugin's dynamic symbols;
//! - which Slurm series it is built for.
//!
//! Slurm loads a SPANK plugin only if its `plugin_version` has Slurm's own major.minor,
//! so the version is read from the headers the plugin is built against
//! (`slurm/slurm_version.h`, searched like bindgen does: the `-I` directories of
//! `BINDGEN_EXTRA_CLANG_ARGS`, then `/usr/local/include` and `/usr/include`), and
//! written to `$OUT_DIR/slurm_version.rs`. Slurm before 23.11 has no
//! `spank_prepend_task_argv`: for those series the build sets the cfg
//! `tre_slurm_no_prepend` (the plugin then starts the task itself, see
//! docs/slurm-versions.md).

use std::env;
use std::fs;
use std::path::PathBuf;

/// The first series with `spank_prepend_task_argv` (23.11.0).
const FIRST_WITH_PREPEND: u32 = 0x17_0b_00;
const HEADER: &str = "slurm/slurm_version.h";

fn main() {
    println!("cargo::rustc-check-cfg=cfg(tre_slurm_no_prepend)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=src/spank/exports.map");
    println!("cargo::rerun-if-env-changed=BINDGEN_EXTRA_CLANG_ARGS");
    println!("cargo::rerun-if-env-changed=SKIP_SLURM_BINDINGS");
    if env::var_os("CARGO_FEATURE_PLUGIN").is_none() {
        return;
    }
    let dir = env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    println!("cargo::rustc-cdylib-link-arg=-Wl,--version-script={dir}/src/spank/exports.map");
    if let Err(e) = run() {
        eprintln!("error: tre-spank: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let extra = env::var("BINDGEN_EXTRA_CLANG_ARGS").unwrap_or_default();
    let header = find_header(&include_dirs(&extra)).ok_or_else(|| {
        format!(
            "cannot find {HEADER}: install your Slurm's development headers (libslurm-dev, \
             slurm-devel) or point BINDGEN_EXTRA_CLANG_ARGS=-I<dir> at them"
        )
    })?;
    println!("cargo::rerun-if-changed={}", header.display());
    let text = fs::read_to_string(&header)
        .map_err(|e| format!("cannot read {}: {e}", header.display()))?;
    let version = parse_version_number(&text).ok_or_else(|| {
        format!(
            "no `#define SLURM_VERSION_NUMBER 0x...` in {}",
            header.display()
        )
    })?;
    let series = format!("{}.{:02}", version >> 16 & 0xff, version >> 8 & 0xff);
    if version < FIRST_WITH_PREPEND {
        // The slurm-spank crate calls spank_prepend_task_argv, which these headers do
        // not declare: its bindings must come from its own pre-generated file.
        if env::var_os("SKIP_SLURM_BINDINGS").is_none() {
            return Err(format!(
                "Slurm {series} ({}) is older than 23.11: build with SKIP_SLURM_BINDINGS=1 \
                 (see docs/slurm-versions.md)",
                header.display()
            ));
        }
        println!("cargo::rustc-cfg=tre_slurm_no_prepend");
    }
    let out = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    let code = format!(
        "/// `SLURM_VERSION_NUMBER` of the headers built against (Slurm {series}).\n\
         pub const SLURM_VERSION_NUMBER: u32 = {version:#08x};\n"
    );
    fs::write(out.join("slurm_version.rs"), code)
        .map_err(|e| format!("cannot write slurm_version.rs: {e}"))?;
    Ok(())
}

/// `-I DIR`, `-IDIR`, `-isystem DIR` of a clang argument string, then the defaults.
fn include_dirs(args: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let mut words = args.split_whitespace();
    while let Some(w) = words.next() {
        let dir = match w {
            "-I" | "-isystem" => words.next(),
            _ => w.strip_prefix("-I").or_else(|| w.strip_prefix("-isystem")),
        };
        if let Some(d) = dir.filter(|d| !d.is_empty()) {
            dirs.push(PathBuf::from(d));
        }
    }
    dirs.extend(["/usr/local/include", "/usr/include"].map(PathBuf::from));
    dirs
}

fn find_header(dirs: &[PathBuf]) -> Option<PathBuf> {
    dirs.iter().map(|d| d.join(HEADER)).find(|p| p.is_file())
}

/// The value of `#define SLURM_VERSION_NUMBER 0x160508`.
fn parse_version_number(text: &str) -> Option<u32> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        if words.next()? != "#define" || words.next()? != "SLURM_VERSION_NUMBER" {
            return None;
        }
        let value = words.next()?;
        let hex = value
            .strip_prefix("0x")
            .or_else(|| value.strip_prefix("0X"))?;
        u32::from_str_radix(hex, 16).ok()
    })
}
