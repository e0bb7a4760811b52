//! Gossip encryption: a Serf-style keyring of AES-GCM keys and the per-datagram
//! envelope that every gossip packet travels in.
//!
//! Envelope layout (first byte is a version so the format can evolve and so a
//! node can tell "peer has no key" apart from "peer has another key"):
//!
//! * `0x00 | foca payload` — plaintext cluster (no `--encrypt` key).
//! * `0x01 | 12-byte random nonce | AES-GCM ciphertext + 16-byte tag` — encrypted
//!   with the keyring's primary key. Every key of the ring is tried on receipt, so a
//!   key can be rotated by first adding it everywhere, then making it primary.
//!
//! Key sizes follow Serf: 16, 24 or 32 bytes select AES-128, AES-192 or AES-256.

use std::borrow::Cow;
use std::fmt;

use aes::Aes192;
use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes128Gcm, Aes256Gcm, AesGcm};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::Rng as _;

/// Envelope version byte of a plaintext datagram.
pub(crate) const ENVELOPE_PLAIN: u8 = 0;
/// Envelope version byte of an AES-GCM sealed datagram.
pub(crate) const ENVELOPE_AES_GCM: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Bytes the encrypted envelope adds to a foca payload (version + nonce + tag).
pub(crate) const ENVELOPE_OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;

/// Why an `--encrypt` key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The text is not standard base64.
    #[error("encrypt key is not valid base64 ({0}); generate one with `dkron keygen`")]
    Base64(String),
    /// Decoded fine, but AES-GCM needs 16, 24 or 32 bytes.
    #[error(
        "encrypt key must decode to 16, 24 or 32 bytes (AES-128/192/256), \
         but it decodes to {0} bytes; generate one with `dkron keygen`"
    )]
    Length(usize),
}

/// One AES-GCM key; the variant is chosen by key length.
#[derive(Clone)]
enum Cipher {
    Aes128(Box<Aes128Gcm>),
    Aes192(Box<AesGcm<Aes192, U12>>),
    Aes256(Box<Aes256Gcm>),
}

impl Cipher {
    fn new(key: &[u8]) -> Result<Self, KeyError> {
        // `new_from_slice` only fails on a length mismatch, which the match rules out.
        let invalid = |_| KeyError::Length(key.len());
        Ok(match key.len() {
            16 => Cipher::Aes128(Box::new(Aes128Gcm::new_from_slice(key).map_err(invalid)?)),
            24 => Cipher::Aes192(Box::new(
                AesGcm::<Aes192, U12>::new_from_slice(key).map_err(invalid)?,
            )),
            32 => Cipher::Aes256(Box::new(Aes256Gcm::new_from_slice(key).map_err(invalid)?)),
            n => return Err(KeyError::Length(n)),
        })
    }

    fn bits(&self) -> u16 {
        match self {
            Cipher::Aes128(_) => 128,
            Cipher::Aes192(_) => 192,
            Cipher::Aes256(_) => 256,
        }
    }

    fn encrypt(&self, nonce: &[u8; NONCE_LEN], plaintext: &[u8]) -> Option<Vec<u8>> {
        let nonce = aes_gcm::Nonce::<U12>::from(*nonce);
        match self {
            Cipher::Aes128(c) => c.encrypt(&nonce, plaintext).ok(),
            Cipher::Aes192(c) => c.encrypt(&nonce, plaintext).ok(),
            Cipher::Aes256(c) => c.encrypt(&nonce, plaintext).ok(),
        }
    }

    fn decrypt(&self, nonce: &[u8; NONCE_LEN], ciphertext: &[u8]) -> Option<Vec<u8>> {
        let nonce = aes_gcm::Nonce::<U12>::from(*nonce);
        match self {
            Cipher::Aes128(c) => c.decrypt(&nonce, ciphertext).ok(),
            Cipher::Aes192(c) => c.decrypt(&nonce, ciphertext).ok(),
            Cipher::Aes256(c) => c.decrypt(&nonce, ciphertext).ok(),
        }
    }
}

/// A Serf-style keyring: the primary key seals outgoing gossip, every key is tried
/// on incoming gossip.
#[derive(Clone)]
pub struct Keyring {
    /// Never empty; index 0 is the primary key.
    keys: Vec<Cipher>,
}

impl fmt::Debug for Keyring {
    // Never print key material, only its shape.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bits: Vec<u16> = self.keys.iter().map(Cipher::bits).collect();
        f.debug_struct("Keyring").field("aes_bits", &bits).finish()
    }
}

impl Keyring {
    /// Keyring whose only (primary) key is the base64 text `key`, as produced by
    /// `dkron keygen` or passed with `--encrypt`.
    pub fn from_base64(key: &str) -> Result<Keyring, KeyError> {
        Self::from_bytes(&decode(key)?)
    }

    /// Keyring whose only (primary) key is `key` (16, 24 or 32 raw bytes).
    pub fn from_bytes(key: &[u8]) -> Result<Keyring, KeyError> {
        Ok(Keyring {
            keys: vec![Cipher::new(key)?],
        })
    }

    /// Adds a secondary, decrypt-only key (key rotation): gossip sealed with it is
    /// accepted, but outgoing gossip keeps using the primary key.
    pub fn add_base64(&mut self, key: &str) -> Result<(), KeyError> {
        self.keys.push(Cipher::new(&decode(key)?)?);
        Ok(())
    }

    /// Number of keys in the ring (always at least one).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always false: a keyring holds at least its primary key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Seals `payload` with the primary key into a versioned envelope.
    fn seal(&self, payload: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        // A random 96-bit nonce per datagram: gossip volume per key is far below
        // the birthday bound, and it needs no shared counter state between nodes.
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = self.keys.first()?.encrypt(&nonce, payload)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        out.push(ENVELOPE_AES_GCM);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Some(out)
    }

    /// Opens the body of an AES-GCM envelope (everything after the version byte).
    fn open(&self, body: &[u8]) -> Option<Vec<u8>> {
        if body.len() < NONCE_LEN + TAG_LEN {
            return None;
        }
        let (nonce, ciphertext) = body.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
        self.keys.iter().find_map(|k| k.decrypt(&nonce, ciphertext))
    }
}

fn decode(key: &str) -> Result<Vec<u8>, KeyError> {
    STANDARD
        .decode(key.trim())
        .map_err(|e| KeyError::Base64(e.to_string()))
}

/// A new random 16-byte key, base64 encoded — what `dkron keygen` prints.
pub fn generate_key() -> String {
    let mut key = [0u8; 16];
    rand::rng().fill_bytes(&mut key);
    STANDARD.encode(key)
}

/// Why an incoming datagram was not handed to foca.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// Empty datagram or unknown envelope version: not ours at all.
    Malformed,
    /// Peer sends plaintext but we require encryption.
    PeerUnencrypted,
    /// Peer encrypts but we have no key.
    PeerEncrypted,
    /// No key of the ring authenticates it (wrong key or tampering).
    Undecryptable,
}

/// Wraps a foca payload for the wire. `None` only if encryption itself failed,
/// which AES-GCM does not do for datagram-sized inputs.
pub(crate) fn seal(keyring: Option<&Keyring>, payload: &[u8]) -> Option<Vec<u8>> {
    match keyring {
        Some(ring) => ring.seal(payload),
        None => {
            let mut out = Vec::with_capacity(payload.len() + 1);
            out.push(ENVELOPE_PLAIN);
            out.extend_from_slice(payload);
            Some(out)
        }
    }
}

/// Unwraps a datagram into the foca payload it carries.
pub(crate) fn open<'a>(
    keyring: Option<&Keyring>,
    datagram: &'a [u8],
) -> Result<Cow<'a, [u8]>, OpenError> {
    let Some((&version, body)) = datagram.split_first() else {
        return Err(OpenError::Malformed);
    };
    match (version, keyring) {
        (ENVELOPE_PLAIN, None) => Ok(Cow::Borrowed(body)),
        (ENVELOPE_PLAIN, Some(_)) => Err(OpenError::PeerUnencrypted),
        (ENVELOPE_AES_GCM, None) => Err(OpenError::PeerEncrypted),
        (ENVELOPE_AES_GCM, Some(ring)) => ring
            .open(body)
            .map(Cow::Owned)
            .ok_or(OpenError::Undecryptable),
        _ => Err(OpenError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(len: usize, fill: u8) -> String {
        STANDARD.encode(vec![fill; len])
    }

    #[test]
    fn accepts_16_24_32_byte_keys_and_round_trips() {
        for len in [16, 24, 32] {
            let ring = Keyring::from_base64(&key_of(len, 7)).expect("valid key");
            let sealed = seal(Some(&ring), b"hello gossip").expect("sealed");
            assert_eq!(sealed[0], ENVELOPE_AES_GCM);
            assert_eq!(sealed.len(), b"hello gossip".len() + ENVELOPE_OVERHEAD);
            let opened = open(Some(&ring), &sealed).expect("opens");
            assert_eq!(&*opened, b"hello gossip");
        }
    }

    #[test]
    fn rejects_bad_base64_with_clear_message() {
        let err = Keyring::from_base64("not base64 !!").unwrap_err();
        assert!(matches!(err, KeyError::Base64(_)));
        assert!(err.to_string().contains("not valid base64"), "{err}");
    }

    #[test]
    fn rejects_10_byte_key_with_clear_message() {
        let err = Keyring::from_base64(&key_of(10, 1)).unwrap_err();
        assert_eq!(err, KeyError::Length(10));
        let msg = err.to_string();
        assert!(msg.contains("16, 24 or 32 bytes"), "{msg}");
        assert!(msg.contains("10 bytes"), "{msg}");
    }

    #[test]
    fn generated_key_is_16_bytes() {
        let key = generate_key();
        assert_eq!(STANDARD.decode(&key).expect("base64").len(), 16);
        Keyring::from_base64(&key).expect("generated key is accepted");
    }

    #[test]
    fn wrong_key_fails_and_secondary_key_opens() {
        let a = Keyring::from_base64(&key_of(16, 1)).unwrap();
        let b = Keyring::from_base64(&key_of(32, 2)).unwrap();
        let sealed = seal(Some(&a), b"payload").unwrap();
        assert_eq!(open(Some(&b), &sealed), Err(OpenError::Undecryptable));

        let mut rotated = b.clone();
        rotated.add_base64(&key_of(16, 1)).unwrap();
        assert_eq!(rotated.len(), 2);
        assert_eq!(&*open(Some(&rotated), &sealed).unwrap(), b"payload");
    }

    #[test]
    fn mismatched_modes_and_garbage_are_classified() {
        let ring = Keyring::from_base64(&key_of(16, 1)).unwrap();
        let plain = seal(None, b"x").unwrap();
        assert_eq!(open(Some(&ring), &plain), Err(OpenError::PeerUnencrypted));
        let sealed = seal(Some(&ring), b"x").unwrap();
        assert_eq!(open(None, &sealed), Err(OpenError::PeerEncrypted));
        assert_eq!(open(None, &[]), Err(OpenError::Malformed));
        assert_eq!(open(None, &[9, 9, 9]), Err(OpenError::Malformed));
        assert_eq!(open(Some(&ring), &[1, 2, 3]), Err(OpenError::Undecryptable));
    }

    #[test]
    fn debug_does_not_leak_key() {
        let ring = Keyring::from_base64(&key_of(24, 0xAB)).unwrap();
        assert_eq!(format!("{ring:?}"), "Keyring { aes_bits: [192] }");
    }
}
