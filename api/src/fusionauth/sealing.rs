//! Keeps each tenant's FusionAuth API key encrypted at rest and out of logs.
//!
//! A [`KeySealer`] holds the service's 32-byte sealing secret and turns a key into
//! `nonce (12 bytes) || AES-256-GCM ciphertext and tag`, with a fresh random nonce per seal, and
//! back. An opened key is an [`ApiKey`], whose `Debug` prints `[redacted]` and which has no
//! `Display`, so formatting a struct that holds one cannot leak it.

use std::fmt;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// Length of the random nonce written in front of every sealed key.
const NONCE_LEN: usize = 12;

/// Length of the sealing secret: AES-256.
const SECRET_LEN: usize = 32;

/// A FusionAuth API key in plain text, as sent in the `Authorization` header.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a raw key (from the admin API or from [`KeySealer::open`]).
    pub fn new(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }

    /// The raw key, for the one place that needs it: the request header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Why a key could not be sealed or opened. None of these carry key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    /// The configured sealing secret is not base64 of exactly 32 bytes: `roster` refuses to
    /// start and prints this message.
    #[error("the key-sealing secret must be base64 of exactly 32 bytes")]
    BadSecret,
    /// AES-GCM refused to encrypt (only possible for absurdly long input): the admin API answers
    /// with an opaque server error.
    #[error("the API key could not be sealed")]
    SealFailed,
    /// The stored bytes were not sealed with this secret or were altered: the tenant's
    /// FusionAuth calls fail with a server-side error until an operator re-enters the key.
    #[error("the sealed API key could not be opened: wrong secret or altered data")]
    OpenFailed,
}

/// Seals and opens API keys with one AES-256-GCM secret.
pub struct KeySealer {
    cipher: Aes256Gcm,
}

impl fmt::Debug for KeySealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeySealer([redacted])")
    }
}

impl KeySealer {
    /// Builds a sealer from the raw 32-byte secret.
    pub fn new(secret: &[u8; SECRET_LEN]) -> Self {
        Self {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(secret)),
        }
    }

    /// Builds a sealer from the base64 (standard alphabet) secret found in configuration.
    pub fn from_base64(encoded: &str) -> Result<Self, SealError> {
        let bytes = STANDARD
            .decode(encoded.trim())
            .map_err(|_| SealError::BadSecret)?;
        let secret: [u8; SECRET_LEN] = bytes.try_into().map_err(|_| SealError::BadSecret)?;
        Ok(Self::new(&secret))
    }

    /// Encrypts `plaintext` under a fresh random nonce; the nonce leads the returned bytes.
    pub fn seal(&self, plaintext: &str) -> Result<Vec<u8>, SealError> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ciphertext = self
            .cipher
            .encrypt(&nonce, plaintext.as_bytes())
            .map_err(|_| SealError::SealFailed)?;

        let mut sealed = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        Ok(sealed)
    }

    /// Decrypts what [`KeySealer::seal`] produced; any change to the bytes is detected.
    pub fn open(&self, sealed: &[u8]) -> Result<ApiKey, SealError> {
        if sealed.len() < NONCE_LEN {
            return Err(SealError::OpenFailed);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);

        let plaintext = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), ciphertext)
            .map_err(|_| SealError::OpenFailed)?;
        String::from_utf8(plaintext)
            .map(ApiKey)
            .map_err(|_| SealError::OpenFailed)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sealer(fill: u8) -> KeySealer {
        KeySealer::new(&[fill; SECRET_LEN])
    }

    #[test]
    fn round_trip_returns_the_key() {
        let sealer = sealer(7);

        let sealed = sealer.seal("fa-key-123").unwrap();

        assert_eq!(sealer.open(&sealed).unwrap().expose(), "fa-key-123");
        assert!(!sealed.windows(10).any(|w| w == b"fa-key-123"));
    }

    #[test]
    fn each_seal_uses_a_new_nonce() {
        let sealer = sealer(7);

        let first = sealer.seal("same").unwrap();
        let second = sealer.seal("same").unwrap();

        assert_ne!(first[..NONCE_LEN], second[..NONCE_LEN]);
        assert_ne!(first, second);
    }

    #[test]
    fn another_secret_cannot_open() {
        let sealed = sealer(1).seal("fa-key").unwrap();

        assert_eq!(sealer(2).open(&sealed), Err(SealError::OpenFailed));
    }

    #[test]
    fn truncated_input_is_refused() {
        let sealer = sealer(1);
        let sealed = sealer.seal("fa-key").unwrap();

        assert_eq!(sealer.open(&sealed[..5]), Err(SealError::OpenFailed));
        assert_eq!(
            sealer.open(&sealed[..sealed.len() - 1]),
            Err(SealError::OpenFailed)
        );
        assert_eq!(sealer.open(&[]), Err(SealError::OpenFailed));
    }

    #[test]
    fn secret_from_base64_must_be_32_bytes() {
        let good = STANDARD.encode([9u8; SECRET_LEN]);
        let short = STANDARD.encode([9u8; 16]);

        assert!(KeySealer::from_base64(&format!(" {good}\n")).is_ok());
        assert_eq!(
            KeySealer::from_base64(&short).map(|_| ()),
            Err(SealError::BadSecret)
        );
        assert_eq!(
            KeySealer::from_base64("not base64!").map(|_| ()),
            Err(SealError::BadSecret)
        );
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let key = ApiKey::new("super-secret-key");
        let sealer = sealer(3);

        assert_eq!(format!("{key:?}"), "[redacted]");
        assert!(!format!("{sealer:?}").contains('3'));
    }

    proptest! {
        #[test]
        fn any_key_round_trips(key in ".{0,200}") {
            let sealer = sealer(5);
            let sealed = sealer.seal(&key).unwrap();
            let opened = sealer.open(&sealed).unwrap();
            prop_assert_eq!(opened.expose(), key.as_str());
        }

        #[test]
        fn any_flipped_bit_is_detected(key in ".{1,64}", pick in any::<usize>(), bit in 0u8..8) {
            let sealer = sealer(5);
            let mut sealed = sealer.seal(&key).unwrap();
            let index = pick % sealed.len();
            sealed[index] ^= 1 << bit;
            prop_assert_eq!(sealer.open(&sealed), Err(SealError::OpenFailed));
        }
    }
}
