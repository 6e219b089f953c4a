//! Where slurmd's plugin stack configuration is, from the texts of slurm.conf and
//! plugstack.conf (pure: the caller reads the files and expands the globs).
//!
//! slurmd reads `PlugStackConfig` from slurm.conf, by default `plugstack.conf` in the
//! directory of slurm.conf (so under configless Slurm the one in slurmd's config cache),
//! and follows its `include` lines (glob patterns, relative ones taken from the
//! directory of the file that names them).

use std::path::{Path, PathBuf};

/// The value of `PlugStackConfig` in a slurm.conf text (keys are case-insensitive, the
/// last assignment wins), or `None`.
pub fn plugstack_config(slurm_conf_text: &str) -> Option<String> {
    slurm_conf_text
        .lines()
        .filter_map(|line| {
            let line = line.split('#').next().unwrap_or("").trim();
            let (key, value) = line.split_once('=')?;
            key.trim()
                .eq_ignore_ascii_case("PlugStackConfig")
                .then(|| value.trim().trim_matches('"').to_string())
        })
        .rfind(|v| !v.is_empty())
}

/// The plugstack.conf slurmd reads given slurm.conf's path and text.
pub fn plugstack_path(slurm_conf: &Path, slurm_conf_text: &str) -> PathBuf {
    let dir = slurm_conf.parent().unwrap_or(Path::new("/"));
    match plugstack_config(slurm_conf_text) {
        Some(p) => dir.join(p),
        None => dir.join("plugstack.conf"),
    }
}

/// The glob patterns of the `include` lines of a plugstack.conf text at `path`, in
/// order, made absolute.
pub fn includes(path: &Path, text: &str) -> Vec<String> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    text.lines()
        .filter_map(|line| {
            let line = line.split('#').next().unwrap_or("").trim();
            let mut words = line.split_whitespace();
            (words.next()? == "include").then_some(())?;
            let pattern = words.next()?;
            Some(dir.join(pattern).to_string_lossy().into_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugstack_config_is_read_case_insensitively_and_the_last_one_wins() {
        let text = "ClusterName=x\n#PlugStackConfig=/nope\nplugstackconfig = /a.conf\nPlugStackConfig=\"/etc/slurm/tre.conf\" # site\n";
        assert_eq!(
            plugstack_config(text).as_deref(),
            Some("/etc/slurm/tre.conf")
        );
        assert_eq!(plugstack_config("ClusterName=x\n"), None);
        assert_eq!(plugstack_config("PlugStackConfig=\n"), None);
    }

    #[test]
    fn the_default_plugstack_is_next_to_slurm_conf() {
        assert_eq!(
            plugstack_path(Path::new("/run/slurm/conf/slurm.conf"), "ClusterName=x\n"),
            PathBuf::from("/run/slurm/conf/plugstack.conf")
        );
        assert_eq!(
            plugstack_path(
                Path::new("/etc/slurm/slurm.conf"),
                "PlugStackConfig=/opt/p.conf"
            ),
            PathBuf::from("/opt/p.conf")
        );
        assert_eq!(
            plugstack_path(
                Path::new("/etc/slurm/slurm.conf"),
                "PlugStackConfig=p2.conf"
            ),
            PathBuf::from("/etc/slurm/p2.conf")
        );
    }

    #[test]
    fn includes_are_listed_in_order_and_relative_ones_taken_from_the_files_directory() {
        let text = "# include /commented/*.conf\ninclude /etc/slurm/plugstack.conf.d/*.conf\n  include  more/*.conf  \nrequired /x/tre_spank.so\nincluded x\n";
        assert_eq!(
            includes(Path::new("/run/slurm/conf/plugstack.conf"), text),
            vec![
                "/etc/slurm/plugstack.conf.d/*.conf".to_string(),
                "/run/slurm/conf/more/*.conf".to_string()
            ]
        );
    }
}
