//! Reading the site config file. The rules parse its text (`rules::config::parse`);
//! the file itself is read here, at the edge.

use crate::rules::config::{config_named, config_path, parse, Config, ConfigError};

/// Reads the file and applies the other plugstack arguments on top. A missing file at
/// the default path means the defaults (configless sites: every setting on the
/// plugstack line); a missing file named by `config=` and an unreadable file are errors.
/// Who owns the file is not checked here: root's callers check it first
/// (`job::load_node_config`).
pub fn load(plugstack_args: &[&str]) -> Result<Config, ConfigError> {
    let path = config_path(plugstack_args);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !config_named(plugstack_args) => {
            String::new()
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ConfigError::Missing { path })
        }
        Err(source) => return Err(ConfigError::Read { path, source }),
    };
    parse(&text, &path, plugstack_args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_named_by_config_is_an_error_not_the_defaults() {
        // (A missing file at the default path is the defaults: not assumed of the build
        // host's /etc here; the bed tests it, test_configless_every_setting_from_the_plugstack_line.)
        let dir = tempfile::tempdir().unwrap();
        let arg = format!("config={}/absent.toml", dir.path().display());
        assert!(config_named(&[&arg]) && !config_named(&["safe_data=false"]));
        assert_eq!(
            load(&[&arg, "safe_data=false"]).unwrap_err().to_string(),
            format!(
                "config {}/absent.toml (config= on the plugstack line) does not exist",
                dir.path().display()
            )
        );
    }

    #[test]
    fn the_file_named_by_config_is_read_and_the_arguments_apply_on_top() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tre-spank.toml");
        std::fs::write(
            &path,
            "allowed_registries = [\"quay.io/\"]\nsafe_data = true\n",
        )
        .unwrap();
        let arg = format!("config={}", path.display());
        let c = load(&[&arg, "safe_data=false"]).unwrap();
        assert_eq!(c.allowed_registries, vec!["quay.io/"]);
        assert!(!c.safe_data);
        // A directory is not a readable config file.
        let arg = format!("config={}", dir.path().display());
        assert!(matches!(load(&[&arg]), Err(ConfigError::Read { .. })));
    }
}
