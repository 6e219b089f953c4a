//! The config as the plugin finds it: the arguments of the tre_spank.so line in the
//! plugstack.conf slurmd reads (slurm.conf's `PlugStackConfig`, by default
//! plugstack.conf beside slurm.conf; slurm.conf is `$SLURM_CONF`, else
//! /etc/slurm/slurm.conf, else configless slurmd's cache /run/slurm/conf/slurm.conf)
//! and the files its `include` lines name, unless `--config PATH` is given.

use std::collections::BTreeSet;
use std::path::PathBuf;

use tre_spank::host::{config_file, job};
use tre_spank::rules::config::{self, Config, ConfigError};

const SLURM_CONF: &str = "/etc/slurm/slurm.conf";
/// Where a configless slurmd keeps the files slurmctld sent (Slurm >= 20.02).
const CONFIGLESS_SLURM_CONF: &str = "/run/slurm/conf/slurm.conf";
/// How deep `include` lines are followed.
const INCLUDE_DEPTH: usize = 8;

/// slurm.conf as Slurm's commands find it: `$SLURM_CONF` (the administrator's own
/// environment: this tool runs as root), else the usual path, else a configless
/// slurmd's cache.
fn slurm_conf() -> PathBuf {
    if let Some(p) = std::env::var_os("SLURM_CONF").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    [SLURM_CONF, CONFIGLESS_SLURM_CONF]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(SLURM_CONF))
}

/// slurm.conf for `check`'s look at slurmd's spool: `$SLURM_CONF`, else the usual
/// path (as check has always read it).
pub fn slurm_conf_for_spool() -> PathBuf {
    std::env::var_os("SLURM_CONF")
        .map(PathBuf::from)
        .unwrap_or_else(|| SLURM_CONF.into())
}

/// Where the plugin's arguments came from.
pub struct ArgsSource {
    /// `--config`, or the file that holds the tre_spank.so line, or what was searched.
    pub what: String,
    /// A tre_spank.so line was found (or `--config` given).
    pub found: bool,
    /// slurm.conf and the plugstack.conf it names (`None` with `--config`).
    pub searched: Option<(PathBuf, PathBuf)>,
}

/// The plugin's arguments: `--config PATH`, or those of its line in the plugstack
/// configuration slurmd reads (the file first, then its includes in order).
pub fn plugin_args(config_arg: Option<&str>) -> (Vec<String>, ArgsSource) {
    if let Some(c) = config_arg {
        let what = "--config".to_string();
        let source = ArgsSource {
            what,
            found: true,
            searched: None,
        };
        return (vec![format!("config={c}")], source);
    }
    let conf = slurm_conf();
    let top = tre_spank::rules::plugstack::plugstack_path(
        &conf,
        &std::fs::read_to_string(&conf).unwrap_or_default(),
    );
    let mut queue = vec![(top.clone(), 0)];
    let mut seen = BTreeSet::new();
    while !queue.is_empty() {
        let (file, depth) = queue.remove(0);
        if !seen.insert(file.clone()) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        if let Some(args) = config::plugstack_args(&text) {
            let what = file.display().to_string();
            let searched = Some((conf, top));
            return (
                args,
                ArgsSource {
                    what,
                    found: true,
                    searched,
                },
            );
        }
        if depth >= INCLUDE_DEPTH {
            continue;
        }
        for pattern in tre_spank::rules::plugstack::includes(&file, &text) {
            let mut files: Vec<PathBuf> = glob::glob(&pattern)
                .map(|g| g.filter_map(Result::ok).collect())
                .unwrap_or_default();
            files.sort();
            queue.extend(files.into_iter().map(|f| (f, depth + 1)));
        }
    }
    let what = format!(
        "no tre_spank.so line in {} (PlugStackConfig of {}) or its includes: defaults",
        top.display(),
        conf.display()
    );
    let searched = Some((conf, top));
    (
        Vec::new(),
        ArgsSource {
            what,
            found: false,
            searched,
        },
    )
}

/// The node's config, this node's name, and lines saying where the config came from
/// and which `[[node]]` sections apply. The error is what a container job would fail
/// with, without the `tre-spank: ` prefix.
pub fn load(config_arg: Option<&str>) -> Result<(Config, String, Vec<String>), ConfigError> {
    let (args, source) = plugin_args(config_arg);
    let source = source.what;
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let node = job::node_name();
    let config = job::load_node_config(&refs, &node)?;
    let mut about = vec![format!(
        "config {} (plugin arguments from {source}: {})",
        config::config_path(&refs).display(),
        if args.is_empty() {
            "none".to_string()
        } else {
            args.join(" ")
        }
    )];
    let base = config_file::load(&refs)?;
    let sections = base.matching_sections(&node);
    about.push(if sections.is_empty() {
        format!("node {node}: no [[node]] section applies")
    } else {
        format!(
            "node {node}: [[node]] sections {} apply",
            sections
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    });
    Ok((config, node, about))
}
