//! Sealing queued jobs, which hold personal data.
//!
//! A job waits in Redis for minutes or days and holds a person's CPF, and once its partner has
//! answered, the person's bureau record (name, address, debts) until the outcome is delivered.
//! So the Redis queue stores no job in clear: only its id next to the whole job encrypted with
//! XChaCha20-Poly1305 under a key from configuration, with the job's id as associated data (a
//! sealed job copied under another id does not open there). The 24-byte nonce is drawn at
//! random for every seal, which is safe at any volume this queue will see and needs no
//! coordination between processes. A job that does not open (another key, or tampering) is
//! unreadable: never sent to a partner.

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Secret;

/// Characters a `QUEUE_KEY` must have at least: about as many bits as the key it makes.
pub const MIN_SECRET_CHARS: usize = 32;

/// Length of the random nonce that starts every sealed value.
const NONCE_LEN: usize = 24;

/// The key that seals jobs in the queue. Printing it shows nothing of the key.
#[derive(Clone)]
pub struct JobSeal(XChaCha20Poly1305);

impl std::fmt::Debug for JobSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobSeal([redacted])")
    }
}

impl JobSeal {
    /// The seal for a configured secret (`QUEUE_KEY`): the key is HMAC-SHA-256 of a fixed label
    /// under the secret, so the secret can be any long random string and the same secret
    /// used for something else elsewhere still yields an unrelated key.
    pub fn from_secret(secret: &Secret) -> Result<Self, String> {
        Self::with_label(secret, b"credit-analysis retry queue: job seal v1")
    }

    /// A seal for another use of the same secret (the answer cache): another `label`, another
    /// key, so what one seals the other cannot open.
    pub fn with_label(secret: &Secret, label: &[u8]) -> Result<Self, String> {
        if secret.expose().chars().count() < MIN_SECRET_CHARS {
            return Err(format!(
                "must hold a secret of at least {MIN_SECRET_CHARS} characters"
            ));
        }
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.expose().as_bytes())
            .map_err(|_| "the secret cannot key HMAC".to_string())?;
        mac.update(label);
        let key = mac.finalize().into_bytes();
        Ok(JobSeal(XChaCha20Poly1305::new(Key::from_slice(&key))))
    }

    /// `clear` sealed for the job `job_id`, as unpadded base64 of nonce and ciphertext.
    pub fn seal(&self, job_id: &str, clear: &str) -> String {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = self
            .0
            .encrypt(
                &nonce,
                Payload {
                    msg: clear.as_bytes(),
                    aad: job_id.as_bytes(),
                },
            )
            // Encryption fails only for messages longer than the cipher allows (256 GiB).
            .expect("a job is short enough to encrypt");
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        STANDARD_NO_PAD.encode(out)
    }

    /// What was sealed for `job_id`, or `None` when `sealed` was not made by this key for this
    /// job (or was altered since).
    pub fn open(&self, job_id: &str, sealed: &str) -> Option<String> {
        let bytes = STANDARD_NO_PAD.decode(sealed).ok()?;
        if bytes.len() <= NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let clear = self
            .0
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: job_id.as_bytes(),
                },
            )
            .ok()?;
        String::from_utf8(clear).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal() -> JobSeal {
        JobSeal::from_secret(&Secret::new("k".repeat(MIN_SECRET_CHARS))).unwrap()
    }

    #[test]
    fn a_sealed_cpf_opens_only_with_its_key_and_for_its_job() {
        let sealed = seal().seal("req-1:acme:0", "52998224725");
        assert!(!sealed.contains("52998224725"));
        assert_eq!(
            seal().open("req-1:acme:0", &sealed).as_deref(),
            Some("52998224725")
        );
        assert_eq!(seal().open("req-2:acme:0", &sealed), None);
        let other = JobSeal::from_secret(&Secret::new("x".repeat(40))).unwrap();
        assert_eq!(other.open("req-1:acme:0", &sealed), None);
    }

    #[test]
    fn the_same_cpf_seals_differently_each_time() {
        let s = seal();
        assert_ne!(s.seal("a", "52998224725"), s.seal("a", "52998224725"));
    }

    #[test]
    fn altered_or_malformed_seals_do_not_open() {
        let s = seal();
        let sealed = s.seal("a", "52998224725");
        let mut altered = sealed.clone().into_bytes();
        let last = altered.len() - 1;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        for bad in [altered.as_str(), "", "not base64!", "AAAA", &sealed[..20]] {
            assert_eq!(s.open("a", bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_short_secret_is_refused_and_the_seal_never_prints_its_key() {
        let err = JobSeal::from_secret(&Secret::new("short")).unwrap_err();
        assert!(err.contains("32 characters"), "{err}");
        assert_eq!(format!("{:?}", seal()), "JobSeal([redacted])");
    }
}
