//! The job NUMBER in `outputs-NUMBER` and `scratch-NUMBER`.
//!
//! It is a keyed hash of the job id and its restart count: the same on every node and
//! step of one job without any coordination, new for a requeued job, and unpredictable
//! to users because the key is a root-only file that every node holds (by default the
//! munge key, which a Slurm cluster already distributes).

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// NUMBERs have seven digits, like the real service's `outputs-3320888`.
pub const NUMBER_MIN: u32 = 1_000_000;
pub const NUMBER_SPAN: u32 = 9_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    #[error("the job number secret is empty")]
    EmptySecret,
}

pub fn job_number(secret: &[u8], job_id: u32, restart_count: u32) -> Result<u32, NumberError> {
    if secret.is_empty() {
        return Err(NumberError::EmptySecret);
    }
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).map_err(|_| NumberError::EmptySecret)?;
    mac.update(b"tre-spank job number v1\0");
    mac.update(&job_id.to_be_bytes());
    mac.update(&restart_count.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let n = u64::from_be_bytes(first) % u64::from(NUMBER_SPAN);
    Ok(NUMBER_MIN + n as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_job_same_number() {
        assert_eq!(job_number(b"k", 42, 0), job_number(b"k", 42, 0));
    }

    #[test]
    fn numbers_have_seven_digits_and_spread() {
        let mut seen = std::collections::HashSet::new();
        for job in 1..2000 {
            let n = job_number(b"site secret", job, 0).unwrap();
            assert_eq!(n.to_string().len(), 7);
            seen.insert(n);
        }
        assert!(seen.len() > 1990, "too many collisions: {}", seen.len());
    }

    #[test]
    fn key_restart_and_job_change_the_number() {
        let base = job_number(b"k1", 7, 0).unwrap();
        assert_ne!(base, job_number(b"k2", 7, 0).unwrap());
        assert_ne!(base, job_number(b"k1", 7, 1).unwrap());
        assert_ne!(base, job_number(b"k1", 8, 0).unwrap());
        assert_ne!(job_number(b"k1", 8, 0).unwrap(), 8);
    }

    #[test]
    fn empty_secret_is_refused() {
        assert_eq!(job_number(b"", 1, 0), Err(NumberError::EmptySecret));
    }
}
