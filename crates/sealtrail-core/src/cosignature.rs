//! C2SP tlog-cosignature (<https://c2sp.org/tlog-cosignature>), the Ed25519
//! `cosignature/v1` type: a witness's statement that, as of a time, the checkpoint is the
//! largest consistent tree head it has seen for that log.
//!
//! - cosigner key id: the first 4 bytes of SHA-256(name ‖ "\n" ‖ 0x04 ‖ public key);
//! - verifier key: `<name>+<key id, 8 hex>+<base64(0x04 ‖ 32-byte public key)>` (a C2SP
//!   vkey of signature type 0x04); signer key: `PRIVATE+KEY+<name>+<key id>+<base64(0x04 ‖
//!   32-byte seed)>`;
//! - signed message: `cosignature/v1\ntime <T>\n` followed by the checkpoint's note text
//!   (every line up to the empty line before the signatures);
//! - signature line: `— <name> <base64(key id ‖ u64 big-endian T ‖ 64-byte signature)>`.
//!
//! A cosignature line is a note signature line: appended to the log's signed checkpoint,
//! a plain signed-note verifier that does not know the witness key skips it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

pub use crate::note::split_note;
use crate::note::{
    NoteError, SIG_PREFIX, check_name, key_id_for, parse_key_parts_for, parse_private_key,
    private_key_string, public_key_string,
};

/// Signature type of Ed25519 cosignature/v1 keys.
pub const ALG_COSIGNATURE_V1: u8 = 0x04;
const WHAT: &str = "Ed25519 cosignature/v1 keys (type 0x04, 32 bytes)";

/// The message a cosigner signs over `text` (a checkpoint's note text) at `timestamp`.
fn message(text: &str, timestamp: u64) -> String {
    format!("cosignature/v1\ntime {timestamp}\n{text}")
}

/// A witness's cosigning key.
#[derive(Clone)]
pub struct Cosigner {
    name: String,
    key: SigningKey,
    key_id: u32,
}

impl std::fmt::Debug for Cosigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cosigner({}+{:08x})", self.name, self.key_id)
    }
}

impl Cosigner {
    /// A cosigner from a 32-byte Ed25519 seed (the caller draws it from a CSPRNG).
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<Self, NoteError> {
        check_name(name)?;
        let key = SigningKey::from_bytes(&seed);
        let key_id = key_id_for(name, ALG_COSIGNATURE_V1, key.verifying_key().as_bytes());
        Ok(Self {
            name: name.to_string(),
            key,
            key_id,
        })
    }

    /// Parses `PRIVATE+KEY+<name>+<id>+<base64(0x04 ‖ seed)>`.
    pub fn parse(s: &str) -> Result<Self, NoteError> {
        let (name, key, key_id) = parse_private_key(s, ALG_COSIGNATURE_V1, WHAT)?;
        Ok(Self { name, key, key_id })
    }

    /// The secret key string (keep it like a password).
    pub fn to_private_string(&self) -> String {
        private_key_string(
            &self.name,
            ALG_COSIGNATURE_V1,
            self.key_id,
            self.key.as_bytes(),
        )
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The public half.
    pub fn verifier(&self) -> CosignatureVerifier {
        CosignatureVerifier {
            name: self.name.clone(),
            key: self.key.verifying_key(),
            key_id: self.key_id,
        }
    }

    /// The cosignature line (ending in a newline) over `text`, a checkpoint's note text,
    /// at `timestamp` (POSIX seconds, not zero).
    pub fn cosign(&self, text: &str, timestamp: u64) -> Result<String, NoteError> {
        if timestamp == 0 || timestamp > i64::MAX as u64 {
            return Err(NoteError::MalformedNote(
                "a cosignature's timestamp must be between 1 and 2^63-1".into(),
            ));
        }
        if !text.ends_with('\n') || text.contains("\n\n") {
            return Err(NoteError::MalformedNote(
                "the text must end in one newline and contain no empty line".into(),
            ));
        }
        let sig = self.key.sign(message(text, timestamp).as_bytes());
        let mut raw = self.key_id.to_be_bytes().to_vec();
        raw.extend_from_slice(&timestamp.to_be_bytes());
        raw.extend_from_slice(&sig.to_bytes());
        Ok(format!("{SIG_PREFIX}{} {}\n", self.name, B64.encode(raw)))
    }
}

/// A witness's public key, as logs and verifiers configure it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosignatureVerifier {
    name: String,
    key: VerifyingKey,
    key_id: u32,
}

impl CosignatureVerifier {
    /// Parses `<name>+<id>+<base64(0x04 ‖ public key)>`.
    pub fn parse(s: &str) -> Result<Self, NoteError> {
        let (name, id, public) = parse_key_parts_for(s.trim(), ALG_COSIGNATURE_V1, WHAT)?;
        let key = VerifyingKey::from_bytes(&public)
            .map_err(|_| NoteError::MalformedKey("not an Ed25519 public key".into()))?;
        if key_id_for(&name, ALG_COSIGNATURE_V1, &public) != id {
            return Err(NoteError::MalformedKey(
                "the key id does not match the key".into(),
            ));
        }
        Ok(Self {
            name,
            key,
            key_id: id,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// Whether `line` (a note signature line, with or without its newline) is by this key
    /// (by name and key id; not yet verified).
    pub fn is_mine(&self, line: &str) -> bool {
        self.decode(line).is_some()
    }

    fn decode(&self, line: &str) -> Option<Vec<u8>> {
        let (name, sig) = line
            .trim_end_matches('\n')
            .strip_prefix(SIG_PREFIX)?
            .split_once(' ')?;
        let raw = B64.decode(sig).ok()?;
        (name == self.name && raw.len() >= 4 && raw[..4] == self.key_id.to_be_bytes())
            .then_some(raw)
    }

    /// Verifies `line`, this key's cosignature over `text`; returns its timestamp.
    pub fn verify_line(&self, text: &str, line: &str) -> Result<u64, NoteError> {
        let raw = self.decode(line).ok_or_else(|| NoteError::NoSignature {
            name: self.name.clone(),
            key_id: self.key_id,
        })?;
        let bad = || NoteError::BadSignature {
            name: self.name.clone(),
            key_id: self.key_id,
        };
        if raw.len() != 4 + 8 + 64 {
            return Err(bad());
        }
        let timestamp = u64::from_be_bytes(raw[4..12].try_into().expect("8 bytes"));
        let sig = ed25519_dalek::Signature::from_slice(&raw[12..]).map_err(|_| bad())?;
        self.key
            .verify_strict(message(text, timestamp).as_bytes(), &sig)
            .map_err(|_| bad())?;
        Ok(timestamp)
    }

    /// Verifies this key's cosignature in the signed note `note` (lines by other keys are
    /// ignored); returns its timestamp. A line by this key that does not verify fails.
    pub fn verify(&self, note: &str) -> Result<u64, NoteError> {
        let (text, lines) = split_note(note)?;
        let mut found = None;
        for line in lines.into_iter().filter(|l| self.is_mine(l)) {
            found = Some(self.verify_line(text, line)?);
        }
        found.ok_or_else(|| NoteError::NoSignature {
            name: self.name.clone(),
            key_id: self.key_id,
        })
    }
}

impl std::fmt::Display for CosignatureVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&public_key_string(
            &self.name,
            ALG_COSIGNATURE_V1,
            self.key_id,
            self.key.as_bytes(),
        ))
    }
}

/// How many of `witnesses` validly cosigned the signed note `note` (each counted once).
pub fn count_cosignatures(note: &str, witnesses: &[CosignatureVerifier]) -> usize {
    witnesses.iter().filter(|w| w.verify(note).is_ok()).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::note::{NoteSigner, NoteVerifier};
    use sha2::{Digest, Sha256};

    const TEXT: &str =
        "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";

    #[test]
    fn cosignature_layout_follows_the_spec() {
        let w = Cosigner::from_seed("witness.example.com/w1", [7; 32]).unwrap();
        // key id: SHA-256(name ‖ "\n" ‖ 0x04 ‖ public key)[:4], computed here independently
        let public = SigningKey::from_bytes(&[7; 32]).verifying_key().to_bytes();
        let mut h = Sha256::new();
        h.update(b"witness.example.com/w1\n\x04");
        h.update(public);
        assert_eq!(w.key_id().to_be_bytes(), h.finalize()[..4]);
        let line = w.cosign(TEXT, 1679315147).unwrap();
        let raw = B64
            .decode(line.trim_end().rsplit(' ').next().unwrap())
            .unwrap();
        assert_eq!(raw.len(), 76);
        assert_eq!(raw[..4], w.key_id().to_be_bytes());
        assert_eq!(raw[4..12], 1679315147u64.to_be_bytes());
        // the signature is a plain Ed25519 signature over the spec's message
        let msg = format!("cosignature/v1\ntime 1679315147\n{TEXT}");
        let sig = ed25519_dalek::Signature::from_slice(&raw[12..]).unwrap();
        VerifyingKey::from_bytes(&public)
            .unwrap()
            .verify_strict(msg.as_bytes(), &sig)
            .unwrap();
        let v = w.verifier();
        assert_eq!(v.verify_line(TEXT, &line).unwrap(), 1679315147);
        // key strings round-trip
        assert_eq!(
            Cosigner::parse(&w.to_private_string()).unwrap().key_id(),
            w.key_id()
        );
        assert_eq!(CosignatureVerifier::parse(&v.to_string()).unwrap(), v);
        // a note verifier key (type 0x01) is not a cosignature key, and vice versa
        let log = NoteSigner::from_seed("example.com/behind-the-sofa", [1; 32]).unwrap();
        assert!(CosignatureVerifier::parse(&log.verifier().to_string()).is_err());
        assert!(NoteVerifier::parse(&v.to_string()).is_err());
    }

    #[test]
    fn cosigned_note_verifies_and_tampering_fails() {
        let log = NoteSigner::from_seed("example.com/behind-the-sofa", [1; 32]).unwrap();
        let w1 = Cosigner::from_seed("w1.example", [2; 32]).unwrap();
        let w2 = Cosigner::from_seed("w2.example", [3; 32]).unwrap();
        let signed = log.sign(TEXT).unwrap();
        let note = format!(
            "{signed}{}{}",
            w1.cosign(TEXT, 10).unwrap(),
            w2.cosign(TEXT, 11).unwrap()
        );
        // the log's own verifier still opens the note (unknown lines are skipped)
        assert_eq!(log.verifier().open(&note).unwrap(), TEXT);
        assert_eq!(w1.verifier().verify(&note).unwrap(), 10);
        assert_eq!(w2.verifier().verify(&note).unwrap(), 11);
        let both = [w1.verifier(), w2.verifier()];
        assert_eq!(count_cosignatures(&note, &both), 2);
        assert_eq!(count_cosignatures(&signed, &both), 0);
        // another text under the same cosignature
        let other = note.replace("20852163", "20852164");
        assert!(matches!(
            w1.verifier().verify(&other),
            Err(NoteError::BadSignature { .. })
        ));
        // a changed timestamp
        let line = w1.cosign(TEXT, 10).unwrap();
        let mut raw = B64
            .decode(line.trim_end().rsplit(' ').next().unwrap())
            .unwrap();
        raw[11] ^= 1;
        let forged = format!("\u{2014} w1.example {}\n", B64.encode(raw));
        assert!(w1.verifier().verify_line(TEXT, &forged).is_err());
        assert!(w1.cosign(TEXT, 0).is_err());
    }
}
