//! The `Running:` line: a command shown with shell quoting (display only).

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;

/// The command as a shell would need it typed, for the `Running:` line only.
pub fn display_command(argv: &[OsString]) -> String {
    argv.iter()
        .map(|a| quote(&String::from_utf8_lossy(a.as_bytes())))
        .collect::<Vec<_>>()
        .join(" ")
}
fn quote(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "@%+=:,./_-*".contains(c);
    if !s.is_empty() && s.chars().all(plain) && !s.contains('*') {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    use std::ffi::OsString;

    #[test]
    fn running_line_quotes_arguments() {
        let argv: Vec<OsString> = ["podman", "--pull=never", "--env=SLURM_*", "a b", "it's", ""]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(
            display_command(&argv),
            r#"podman --pull=never '--env=SLURM_*' 'a b' 'it'\''s' ''"#
        );
    }
}
