//! Personal data (`outputs.md`): the applicant's ID number becomes `applicant_key`, a keyed
//! hash, so the same applicant can still be counted across cases; every other personal field
//! is skipped unread by [`crate::wire::CaseRecord`].

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The secret that keys `applicant_key` (HMAC-SHA-256 of `SoGiayToChuHoSo`).
#[derive(Clone)]
pub struct PiiKey(Hmac<Sha256>);

impl PiiKey {
    /// HMAC takes a key of any length: one longer than SHA-256's 64-byte block is hashed
    /// first, a shorter one padded with zeros (RFC 2104), which is done here so that building
    /// the MAC cannot fail.
    pub fn new(secret: &[u8]) -> Self {
        use sha2::Digest;
        let mut block = [0u8; 64];
        if secret.len() > block.len() {
            block[..32].copy_from_slice(&Sha256::digest(secret));
        } else {
            block[..secret.len()].copy_from_slice(secret);
        }
        PiiKey(Hmac::<Sha256>::new(&block.into()))
    }

    /// The key of an ID number: 64 lowercase hex digits.
    pub fn applicant_key(&self, id_number: &str) -> ApplicantKey {
        let mut mac = self.0.clone();
        mac.update(id_number.as_bytes());
        let mut hex = [0u8; 64];
        // A SHA-256 digest is 32 bytes and its hex 64: the lengths agree, it cannot fail.
        let _ = hex::encode_to_slice(mac.finalize().into_bytes(), &mut hex);
        ApplicantKey(hex)
    }
}

/// An `applicant_key`, held without a heap allocation (one per record).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ApplicantKey([u8; 64]);

impl ApplicantKey {
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are written into it.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl AsRef<str> for ApplicantKey {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Debug for ApplicantKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for PiiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PiiKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applicant_key_is_keyed_and_stable() {
        let a = PiiKey::new(b"k1").applicant_key("046090001234");
        assert_eq!(a, PiiKey::new(b"k1").applicant_key("046090001234"));
        assert_ne!(a, PiiKey::new(b"k2").applicant_key("046090001234"));
        let a = a.as_str();
        assert_eq!(a.len(), 64);
        assert!(!a.contains("046090001234"));
        // The key block built by hand is HMAC's own, for short and long secrets alike.
        for secret in [&b"k1"[..], &[7u8; 64][..], &[9u8; 200][..]] {
            let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
            mac.update(b"046090001234");
            assert_eq!(
                PiiKey::new(secret).applicant_key("046090001234").as_str(),
                hex::encode(mac.finalize().into_bytes())
            );
        }
    }
}
