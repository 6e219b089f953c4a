//! Container image references and the site's registry allow-list.
//!
//! The parser follows the distribution reference grammar (registry host, lower-case
//! repository path, tag, sha256 digest) so that the allow-list compares parsed parts,
//! never string prefixes: `ghcr.io.evil.com/x` is not under `ghcr.io`.

use std::fmt;

/// Longest reference accepted; the grammar allows 255 for the name alone.
pub const MAX_REFERENCE_LEN: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host (lower case), with `:port` if one was given.
    pub registry: String,
    /// Repository path components, e.g. `["mikej888", "hello-tre"]`.
    pub path: Vec<String>,
    pub tag: Option<String>,
    /// Hex of a `sha256:` digest.
    pub digest: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("image reference is empty")]
    Empty,
    #[error("image reference is longer than {MAX_REFERENCE_LEN} characters")]
    TooLong,
    #[error(
        "image reference {0:?} must start with its registry, for example ghcr.io/org/name:tag"
    )]
    NoRegistry(String),
    #[error("image reference {reference:?} is malformed: {why}")]
    Malformed {
        reference: String,
        why: &'static str,
    },
    #[error("image {image} is not from an allowed registry (allowed: {allowed})")]
    NotAllowed { image: String, allowed: String },
}

fn malformed(reference: &str, why: &'static str) -> ImageError {
    ImageError::Malformed {
        reference: reference.to_string(),
        why,
    }
}

fn is_lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*`
fn valid_path_component(s: &str) -> bool {
    let bytes: Vec<char> = s.chars().collect();
    if bytes.is_empty() || !is_lower_alnum(bytes[0]) || !is_lower_alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if is_lower_alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !is_lower_alnum(bytes[i]) {
            i += 1;
        }
        let sep: String = bytes[start..i].iter().collect();
        let ok = sep == "." || sep == "_" || sep == "__" || sep.chars().all(|c| c == '-');
        if !ok {
            return false;
        }
    }
    true
}

/// A DNS-style host with an optional port.
fn valid_registry(s: &str) -> bool {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.chars().all(|c| c.is_ascii_digit()) {
            return false;
        }
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn valid_tag(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() || c == '_' => {}
        _ => return false,
    }
    s.len() <= 128 && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
}

impl ImageRef {
    pub fn parse(reference: &str) -> Result<ImageRef, ImageError> {
        if reference.is_empty() {
            return Err(ImageError::Empty);
        }
        if reference.len() > MAX_REFERENCE_LEN {
            return Err(ImageError::TooLong);
        }
        let (name_and_tag, digest) = match reference.split_once('@') {
            Some((n, d)) => {
                let hex = d
                    .strip_prefix("sha256:")
                    .ok_or_else(|| malformed(reference, "only sha256 digests are accepted"))?;
                if hex.len() != 64
                    || !hex
                        .chars()
                        .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
                {
                    return Err(malformed(
                        reference,
                        "a digest is sha256: followed by 64 lower-case hex digits",
                    ));
                }
                (n, Some(hex.to_string()))
            }
            None => (reference, None),
        };
        let (registry, rest) = name_and_tag
            .split_once('/')
            .ok_or_else(|| ImageError::NoRegistry(reference.to_string()))?;
        // The first component is a registry only if it looks like a host.
        if !(registry.contains('.') || registry.contains(':') || registry == "localhost") {
            return Err(ImageError::NoRegistry(reference.to_string()));
        }
        if !valid_registry(registry) {
            return Err(malformed(
                reference,
                "the registry is not a valid host name",
            ));
        }
        // A ':' after the last '/' starts the tag.
        let (path, tag) = match rest.rsplit_once(':') {
            Some((p, t)) if !t.contains('/') => (p, Some(t)),
            _ => (rest, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(malformed(
                    reference,
                    "a tag is [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}",
                ));
            }
        }
        let components: Vec<String> = path.split('/').map(str::to_string).collect();
        if components.iter().any(|c| !valid_path_component(c)) {
            return Err(malformed(
                reference,
                "repository path components are lower-case letters and digits joined by '.', '_', '__' or '-'",
            ));
        }
        Ok(ImageRef {
            registry: registry.to_ascii_lowercase(),
            path: components,
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// `registry/path` without tag or digest.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.registry, self.path.join("/"))
    }

    /// Whether this image lies under `prefix` (`registry[/path...]`), comparing whole
    /// components: `ghcr.io/org` allows `ghcr.io/org/x`, not `ghcr.io/organisation/x`.
    pub fn is_under(&self, prefix: &str) -> bool {
        let prefix = prefix.trim_end_matches('/');
        let mut parts = prefix.split('/');
        let Some(registry) = parts.next() else {
            return false;
        };
        if !registry.eq_ignore_ascii_case(&self.registry) {
            return false;
        }
        let wanted: Vec<&str> = parts.collect();
        wanted.len() <= self.path.len() && wanted.iter().zip(&self.path).all(|(w, p)| w == p)
    }

    pub fn check_allowed(&self, allowed: &[String]) -> Result<(), ImageError> {
        if allowed.iter().any(|p| self.is_under(p)) {
            Ok(())
        } else {
            Err(ImageError::NotAllowed {
                image: self.to_string(),
                allowed: allowed.join(", "),
            })
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.repository())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@sha256:{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn allowed(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_the_seed_image() {
        let r = ImageRef::parse("ghcr.io/mikej888/hello-tre:1.0").unwrap();
        assert_eq!(r.registry, "ghcr.io");
        assert_eq!(r.path, vec!["mikej888", "hello-tre"]);
        assert_eq!(r.tag.as_deref(), Some("1.0"));
        assert_eq!(r.to_string(), "ghcr.io/mikej888/hello-tre:1.0");
    }

    #[test]
    fn registry_is_case_insensitive_and_normalised() {
        let r = ImageRef::parse("GHCR.io/org/x:v1").unwrap();
        assert_eq!(r.registry, "ghcr.io");
        assert!(r.check_allowed(&allowed(&["ghcr.io/"])).is_ok());
    }

    #[test]
    fn accepts_digests_and_ports() {
        let r =
            ImageRef::parse(&format!("registry.example.ac.uk:5050/a/b@sha256:{DIGEST}")).unwrap();
        assert_eq!(r.registry, "registry.example.ac.uk:5050");
        assert_eq!(r.digest.as_deref(), Some(DIGEST));
        let both = ImageRef::parse(&format!("ghcr.io/a/b:1@sha256:{DIGEST}")).unwrap();
        assert_eq!(both.tag.as_deref(), Some("1"));
    }

    #[test]
    fn refuses_malformed_references() {
        for bad in [
            "",
            "ubuntu",
            "ubuntu:22.04",
            "library/ubuntu",
            "ghcr.io/Org/x",
            "ghcr.io/org/../x",
            "ghcr.io/org/./x",
            "ghcr.io//x",
            "ghcr.io/org/x:",
            "ghcr.io/org/x:-bad",
            "ghcr.io/org/x@sha256:abc",
            "ghcr.io/org/x@md5:0123",
            "-ghcr.io/x",
            "ghcr.io/-x",
            "ghcr.io/x y",
            "ghcr.io/x;rm",
            "ghcr.io@sha256:0",
            "ghcr.io/",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(ImageRef::parse(&"a".repeat(600)), Err(ImageError::TooLong));
    }

    #[test]
    fn allow_list_compares_whole_components() {
        let list = allowed(&["ghcr.io/org"]);
        assert!(ImageRef::parse("ghcr.io/org/x:1")
            .unwrap()
            .check_allowed(&list)
            .is_ok());
        assert!(ImageRef::parse("ghcr.io/organisation/x:1")
            .unwrap()
            .check_allowed(&list)
            .is_err());
        let list = allowed(&["ghcr.io/"]);
        assert!(ImageRef::parse("ghcr.io.evil.com/x:1")
            .unwrap()
            .check_allowed(&list)
            .is_err());
        assert!(
            ImageRef::parse("evil.com/ghcr.io/x:1").is_ok_and(|r| r.check_allowed(&list).is_err())
        );
    }

    #[test]
    fn not_allowed_error_lists_the_allowed_prefixes() {
        let err = ImageRef::parse("docker.io/library/ubuntu:22.04")
            .unwrap()
            .check_allowed(&allowed(&["ghcr.io/", "git.example.ac.uk:5050/tre"]))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "image docker.io/library/ubuntu:22.04 is not from an allowed registry (allowed: ghcr.io/, git.example.ac.uk:5050/tre)"
        );
    }
}
