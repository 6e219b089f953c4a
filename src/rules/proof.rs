//! Proof that a job's directories were created for that job.
//!
//! With a shared `$HOME` (NFS), the first step of a job on one node creates
//! `outputs-N` and `scratch-N`; a step of the same job on another node finds them
//! already there and has no local record of them. It adopts them only if
//! `scratch-N` holds a proof line that names this job and both directories' inode
//! numbers, signed with a key derived from the site secret (root-only on every node).
//! A user can delete the proof (their own later steps then fail) but cannot forge
//! one, and a proof copied from another job names other inodes and another job.
//! "This job" is the job's whole identity ([`crate::rules::job_number::JobIdentity`]):
//! the proof of an earlier job that had the same id (ids wrapped, the controller was
//! reset) names another submit time and never verifies for the later job.
//!
//! Inode numbers, not devices: on NFS each client numbers the mount's device
//! itself, while the inode is the server's file id, the same on every node.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The proof's file name inside `scratch-N` (visible as `/scratch/.tre-spank-job`).
pub const PROOF_FILE: &str = ".tre-spank-job";

/// The record inside `outputs-N` that tre-spank made the directory for that user's job
/// (visible as `/safe_outputs/.tre-spank-outputs`): what `--tre-inputs` checks, long
/// after the job (and its `scratch-N` with the job's proof) is gone.
pub const OUTPUTS_RECORD_FILE: &str = ".tre-spank-outputs";

/// Longest proof file accepted (a real one is about 150 bytes).
pub const MAX_PROOF_LEN: usize = 512;

/// What a proof is about: facts every node of the job learns from Slurm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobFacts {
    pub job_id: u32,
    pub restart_count: u32,
    /// The job's submit time from the controller (seconds since the epoch).
    pub submitted: u64,
    pub uid: u32,
    pub number: u32,
}

/// The key for proofs, derived from the site secret so that the secret itself (by
/// default the munge key) need not be kept in memory.
#[derive(Clone)]
pub struct ProofKey(Hmac<Sha256>);

/// Never the key itself, not even in a debug log.
impl std::fmt::Debug for ProofKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProofKey(<redacted>)")
    }
}

impl ProofKey {
    /// `None` for an empty secret (the job NUMBER refuses it first).
    pub fn derive(secret: &[u8]) -> Option<ProofKey> {
        if secret.is_empty() {
            return None;
        }
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).ok()?;
        mac.update(b"tre-spank directory proof key v1\0");
        let key = mac.finalize().into_bytes();
        <Hmac<Sha256> as KeyInit>::new_from_slice(&key)
            .ok()
            .map(ProofKey)
    }

    fn mac(&self, facts: &JobFacts, outputs_ino: u64, scratch_ino: u64) -> Hmac<Sha256> {
        self.mac_of(&body(facts, outputs_ino, scratch_ino))
    }

    fn mac_of(&self, body: &str) -> Hmac<Sha256> {
        let mut mac = self.0.clone();
        mac.update(body.as_bytes());
        mac
    }

    /// The record line for a user's `outputs-N` (see [`OUTPUTS_RECORD_FILE`]).
    pub fn outputs_line(&self, uid: u32, number: u32, outputs_ino: u64) -> String {
        let body = outputs_body(uid, number, outputs_ino);
        let tag = self.mac_of(&body).finalize().into_bytes();
        format!("{body} mac={}\n", hex(&tag))
    }

    /// Whether `content` proves that tre-spank created this `outputs-N` (inode
    /// `outputs_ino`) for a job of user `uid`.
    pub fn outputs_verifies(
        &self,
        content: &[u8],
        uid: u32,
        number: u32,
        outputs_ino: u64,
    ) -> bool {
        self.verifies_body(content, &outputs_body(uid, number, outputs_ino))
    }

    /// The proof line for these facts and directories.
    pub fn line(&self, facts: &JobFacts, outputs_ino: u64, scratch_ino: u64) -> String {
        let tag = self
            .mac(facts, outputs_ino, scratch_ino)
            .finalize()
            .into_bytes();
        format!(
            "{} mac={}\n",
            body(facts, outputs_ino, scratch_ino),
            hex(&tag)
        )
    }

    /// Whether `content` proves that these directories were created for this job.
    pub fn verifies(
        &self,
        content: &[u8],
        facts: &JobFacts,
        outputs_ino: u64,
        scratch_ino: u64,
    ) -> bool {
        self.verifies_body(content, &body(facts, outputs_ino, scratch_ino))
    }

    /// Whether `content` is exactly `expected` followed by its valid tag.
    fn verifies_body(&self, content: &[u8], expected: &str) -> bool {
        let Ok(text) = std::str::from_utf8(content) else {
            return false;
        };
        let Some(line) = text.strip_suffix('\n') else {
            return false;
        };
        let Some((claimed_body, tag_hex)) = line.rsplit_once(" mac=") else {
            return false;
        };
        if claimed_body != expected {
            return false;
        }
        let Some(tag) = unhex(tag_hex) else {
            return false;
        };
        self.mac_of(expected).verify_slice(&tag).is_ok()
    }
}

fn outputs_body(uid: u32, number: u32, outputs_ino: u64) -> String {
    format!("tre-spank-outputs v1 uid={uid} number={number} outputs={outputs_ino}")
}

fn body(f: &JobFacts, outputs_ino: u64, scratch_ino: u64) -> String {
    format!(
        "tre-spank-job v2 job={} restart={} submitted={} uid={} number={} outputs={outputs_ino} scratch={scratch_ino}",
        f.job_id, f.restart_count, f.submitted, f.uid, f.number
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FACTS: JobFacts = JobFacts {
        job_id: 42,
        restart_count: 0,
        submitted: 1_764_640_000,
        uid: 1001,
        number: 1_234_567,
    };

    #[test]
    fn a_proof_verifies_for_its_job_and_directories_only() {
        let key = ProofKey::derive(b"site secret").unwrap();
        let line = key.line(&FACTS, 100, 200);
        assert!(line.starts_with("tre-spank-job v2 job=42 restart=0 submitted=1764640000 uid=1001 number=1234567 outputs=100 scratch=200 mac="));
        assert!(line.len() < MAX_PROOF_LEN);
        assert!(key.verifies(line.as_bytes(), &FACTS, 100, 200));
        // Another directory (a swap), another job, a requeue, another user.
        assert!(!key.verifies(line.as_bytes(), &FACTS, 101, 200));
        assert!(!key.verifies(line.as_bytes(), &FACTS, 100, 201));
        for other in [
            JobFacts {
                job_id: 43,
                ..FACTS
            },
            JobFacts {
                restart_count: 1,
                ..FACTS
            },
            // A later job with the same id (ids wrapped, the controller was reset).
            JobFacts {
                submitted: 1_764_640_001,
                ..FACTS
            },
            JobFacts { uid: 1002, ..FACTS },
            JobFacts {
                number: 1_234_568,
                ..FACTS
            },
        ] {
            assert!(
                !key.verifies(line.as_bytes(), &other, 100, 200),
                "{other:?}"
            );
        }
    }

    #[test]
    fn a_proof_of_the_previous_format_is_never_adopted() {
        // What version 1 wrote (no submit time): with its valid tag, for the same job id,
        // NUMBER and inodes, it still proves nothing about a job now.
        let key = ProofKey::derive(b"site secret").unwrap();
        let v1 =
            "tre-spank-job v1 job=42 restart=0 uid=1001 number=1234567 outputs=100 scratch=200";
        let tag = key.mac_of(v1).finalize().into_bytes();
        let old = format!("{v1} mac={}\n", hex(&tag));
        assert!(!key.verifies(old.as_bytes(), &FACTS, 100, 200));
    }

    #[test]
    fn a_proof_cannot_be_forged_without_the_secret() {
        let key = ProofKey::derive(b"site secret").unwrap();
        let forged = ProofKey::derive(b"guess").unwrap().line(&FACTS, 100, 200);
        assert!(!key.verifies(forged.as_bytes(), &FACTS, 100, 200));
        let good = key.line(&FACTS, 100, 200);
        let last = good.len() - 2;
        let flip = if &good[last..last + 1] == "0" {
            "1"
        } else {
            "0"
        };
        let flipped = format!("{}{flip}\n", &good[..last]);
        assert!(!key.verifies(flipped.as_bytes(), &FACTS, 100, 200));
        for junk in [
            &b""[..],
            b"\n",
            b"mac=",
            b"\xff\xfe",
            good.trim_end().as_bytes(),
        ] {
            assert!(!key.verifies(junk, &FACTS, 100, 200), "{junk:?}");
        }
    }

    #[test]
    fn an_outputs_record_verifies_for_its_user_number_and_directory_only() {
        let key = ProofKey::derive(b"site secret").unwrap();
        let line = key.outputs_line(1001, 1_234_567, 100);
        assert!(line.starts_with("tre-spank-outputs v1 uid=1001 number=1234567 outputs=100 mac="));
        assert!(line.len() < MAX_PROOF_LEN);
        assert!(key.outputs_verifies(line.as_bytes(), 1001, 1_234_567, 100));
        assert!(!key.outputs_verifies(line.as_bytes(), 1002, 1_234_567, 100));
        assert!(!key.outputs_verifies(line.as_bytes(), 1001, 1_234_568, 100));
        assert!(!key.outputs_verifies(line.as_bytes(), 1001, 1_234_567, 101));
        let forged = ProofKey::derive(b"guess")
            .unwrap()
            .outputs_line(1001, 1_234_567, 100);
        assert!(!key.outputs_verifies(forged.as_bytes(), 1001, 1_234_567, 100));
        // A job's proof is no outputs record, even with matching numbers.
        let proof = key.line(&FACTS, 100, 200);
        assert!(!key.outputs_verifies(proof.as_bytes(), 1001, 1_234_567, 100));
    }

    #[test]
    fn an_empty_secret_gives_no_key() {
        assert!(ProofKey::derive(b"").is_none());
    }
}
