//! C2SP signed notes (<https://c2sp.org/signed-note>) with Ed25519 keys, and the key
//! string formats of Go's `golang.org/x/mod/sumdb/note`:
//!
//! - verifier key: `<name>+<key id, 8 hex>+<base64(0x01 ‖ 32-byte public key)>`;
//! - signer key: `PRIVATE+KEY+<name>+<key id>+<base64(0x01 ‖ 32-byte seed)>`;
//! - key id: the first 4 bytes (big-endian) of SHA-256(name ‖ "\n" ‖ 0x01 ‖ public key);
//! - a signed note: the text (ending in a newline), an empty line, then one line per
//!   signature: `— <name> <base64(key id ‖ 64-byte signature of the text)>`.
//!
//! Hand-written over `ed25519-dalek` (the crate `signed_note` itself uses): the format is
//! ~100 lines, and `signed_note` 0.2 would pull `base64` 0.21 and `thiserror` 1 into the
//! core. The tests check these keys and notes against `signed_note` and the Go package's
//! published example (the `PeterNeumann` key).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

const ALG_ED25519: u8 = 0x01;
pub(crate) const SIG_PREFIX: &str = "\u{2014} ";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("invalid key name {0:?}: it must be non-empty, without spaces or '+'")]
    InvalidName(String),
    #[error("malformed key: {0}")]
    MalformedKey(String),
    #[error("malformed note: {0}")]
    MalformedNote(String),
    #[error("the note has no signature by {name} (key id {key_id:08x})")]
    NoSignature { name: String, key_id: u32 },
    #[error("the signature by {name} (key id {key_id:08x}) does not verify")]
    BadSignature { name: String, key_id: u32 },
}

pub(crate) fn check_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.contains('+') || name.chars().any(char::is_whitespace) {
        return Err(NoteError::InvalidName(name.to_string()));
    }
    Ok(())
}

pub(crate) fn key_id_for(name: &str, alg: u8, public: &[u8; 32]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([alg]);
    h.update(public);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

fn key_id(name: &str, public: &[u8; 32]) -> u32 {
    key_id_for(name, ALG_ED25519, public)
}

/// Parses `<name>+<hex id>+<base64(0x01 ‖ 32 bytes)>`.
fn parse_key_parts(s: &str) -> Result<(String, u32, [u8; 32]), NoteError> {
    parse_key_parts_for(s, ALG_ED25519, "Ed25519 keys (algorithm 0x01, 32 bytes)")
}

/// Parses `<name>+<hex id>+<base64(alg ‖ 32 bytes)>`; `what` names the expected key type
/// in the error.
pub(crate) fn parse_key_parts_for(
    s: &str,
    alg: u8,
    what: &str,
) -> Result<(String, u32, [u8; 32]), NoteError> {
    let mut parts = s.splitn(3, '+');
    let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(NoteError::MalformedKey("expected name+id+key".into()));
    };
    check_name(name)?;
    if id.len() != 8 {
        return Err(NoteError::MalformedKey(
            "the key id must be 8 hex digits".into(),
        ));
    }
    let id = u32::from_str_radix(id, 16)
        .map_err(|_| NoteError::MalformedKey("the key id must be 8 hex digits".into()))?;
    let raw = B64
        .decode(key)
        .map_err(|e| NoteError::MalformedKey(format!("bad base64: {e}")))?;
    if raw.len() != 33 || raw[0] != alg {
        return Err(NoteError::MalformedKey(format!(
            "only {what} are supported"
        )));
    }
    Ok((name.to_string(), id, raw[1..].try_into().expect("32 bytes")))
}

/// `PRIVATE+KEY+<name>+<id>+<base64(alg ‖ seed)>`: the secret key string of both key types.
pub(crate) fn private_key_string(name: &str, alg: u8, key_id: u32, seed: &[u8; 32]) -> String {
    let mut raw = vec![alg];
    raw.extend_from_slice(seed);
    format!("PRIVATE+KEY+{name}+{key_id:08x}+{}", B64.encode(raw))
}

/// `<name>+<id>+<base64(alg ‖ public key)>`: the verifier key string of both key types.
pub(crate) fn public_key_string(name: &str, alg: u8, key_id: u32, public: &[u8; 32]) -> String {
    let mut raw = vec![alg];
    raw.extend_from_slice(public);
    format!("{name}+{key_id:08x}+{}", B64.encode(raw))
}

/// Parses a secret key string of type `alg` into its name, the signing key and its key id
/// (checked against the key).
pub(crate) fn parse_private_key(
    s: &str,
    alg: u8,
    what: &str,
) -> Result<(String, SigningKey, u32), NoteError> {
    let rest = s
        .trim()
        .strip_prefix("PRIVATE+KEY+")
        .ok_or_else(|| NoteError::MalformedKey("expected PRIVATE+KEY+…".into()))?;
    let (name, id, seed) = parse_key_parts_for(rest, alg, what)?;
    check_name(&name)?;
    let key = SigningKey::from_bytes(&seed);
    if key_id_for(&name, alg, key.verifying_key().as_bytes()) != id {
        return Err(NoteError::MalformedKey(
            "the key id does not match the key".into(),
        ));
    }
    Ok((name, key, id))
}

/// Splits a signed note into its text (ending in a newline) and its signature lines
/// (each checked to start with `— `).
pub fn split_note(note: &str) -> Result<(&str, Vec<&str>), NoteError> {
    let split = note
        .rfind("\n\n")
        .ok_or_else(|| NoteError::MalformedNote("no empty line before signatures".into()))?;
    let (text, sigs) = (&note[..split + 1], &note[split + 2..]);
    if sigs.is_empty() || !sigs.ends_with('\n') {
        return Err(NoteError::MalformedNote("no signature lines".into()));
    }
    let lines: Vec<&str> = sigs.lines().collect();
    if let Some(bad) = lines.iter().find(|l| !l.starts_with(SIG_PREFIX)) {
        return Err(NoteError::MalformedNote(format!(
            "signature line must start with '— ': {bad:?}"
        )));
    }
    Ok((text, lines))
}

/// A note signer: an Ed25519 key with a name.
#[derive(Clone)]
pub struct NoteSigner {
    name: String,
    key: SigningKey,
    key_id: u32,
}

impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NoteSigner({}+{:08x})", self.name, self.key_id)
    }
}

impl NoteSigner {
    /// A signer from a 32-byte Ed25519 seed (the caller draws it from a CSPRNG).
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<Self, NoteError> {
        check_name(name)?;
        let key = SigningKey::from_bytes(&seed);
        let key_id = key_id(name, key.verifying_key().as_bytes());
        Ok(Self {
            name: name.to_string(),
            key,
            key_id,
        })
    }

    /// Parses `PRIVATE+KEY+<name>+<id>+<base64(0x01 ‖ seed)>`.
    pub fn parse(s: &str) -> Result<Self, NoteError> {
        let (name, key, key_id) =
            parse_private_key(s, ALG_ED25519, "Ed25519 keys (algorithm 0x01, 32 bytes)")?;
        Ok(Self { name, key, key_id })
    }

    /// The signer key string (secret: keep it like a password).
    pub fn to_private_string(&self) -> String {
        private_key_string(&self.name, ALG_ED25519, self.key_id, self.key.as_bytes())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The public half.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            key: self.key.verifying_key(),
            key_id: self.key_id,
        }
    }

    /// Signs `text` (which must end in a newline and contain no empty line at its end)
    /// and returns the whole signed note.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        if !text.ends_with('\n') || text.ends_with("\n\n") || text.contains("\n\n") {
            return Err(NoteError::MalformedNote(
                "the text must end in one newline and contain no empty line".into(),
            ));
        }
        let sig = self.key.sign(text.as_bytes());
        let mut raw = self.key_id.to_be_bytes().to_vec();
        raw.extend_from_slice(&sig.to_bytes());
        Ok(format!(
            "{text}\n{SIG_PREFIX}{} {}\n",
            self.name,
            B64.encode(raw)
        ))
    }
}

/// A note verifier: a named Ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    key: VerifyingKey,
    key_id: u32,
}

impl NoteVerifier {
    /// Parses `<name>+<id>+<base64(0x01 ‖ public key)>`.
    pub fn parse(s: &str) -> Result<Self, NoteError> {
        let (name, id, public) = parse_key_parts(s.trim())?;
        let key = VerifyingKey::from_bytes(&public)
            .map_err(|_| NoteError::MalformedKey("not an Ed25519 public key".into()))?;
        if key_id(&name, &public) != id {
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

    /// Checks that `note` carries a valid signature by this key and returns its text.
    /// Signatures by other keys are ignored (C2SP: a verifier skips unknown keys).
    pub fn open<'a>(&self, note: &'a str) -> Result<&'a str, NoteError> {
        let (text, sigs) = split_note(note)?;
        let mut seen = false;
        for line in sigs {
            let line = line
                .strip_prefix(SIG_PREFIX)
                .expect("checked by split_note");
            let (name, sig) = line
                .split_once(' ')
                .ok_or_else(|| NoteError::MalformedNote("signature line without a name".into()))?;
            let raw = B64
                .decode(sig)
                .map_err(|_| NoteError::MalformedNote("signature is not base64".into()))?;
            if raw.len() < 4 {
                return Err(NoteError::MalformedNote("signature too short".into()));
            }
            let id = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
            if name != self.name || id != self.key_id {
                continue;
            }
            seen = true;
            let bad = || NoteError::BadSignature {
                name: self.name.clone(),
                key_id: self.key_id,
            };
            let sig = ed25519_dalek::Signature::from_slice(&raw[4..]).map_err(|_| bad())?;
            self.key
                .verify_strict(text.as_bytes(), &sig)
                .map_err(|_| bad())?;
        }
        if !seen {
            return Err(NoteError::NoSignature {
                name: self.name.clone(),
                key_id: self.key_id,
            });
        }
        Ok(text)
    }
}

impl std::fmt::Display for NoteVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&public_key_string(
            &self.name,
            ALG_ED25519,
            self.key_id,
            self.key.as_bytes(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example of Go's golang.org/x/mod/sumdb/note documentation (also signed_note's).
    const SKEY: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const TEXT: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
    const SIGNED: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    #[test]
    fn known_answer_go_note_example() {
        let signer = NoteSigner::parse(SKEY).unwrap();
        assert_eq!(signer.key_id(), 0xc74f20a3);
        assert_eq!(signer.to_private_string(), SKEY);
        assert_eq!(signer.verifier().to_string(), VKEY);
        // Ed25519 is deterministic: the same signature as the published one
        assert_eq!(signer.sign(TEXT).unwrap(), SIGNED);
        let verifier = NoteVerifier::parse(VKEY).unwrap();
        assert_eq!(verifier.open(SIGNED).unwrap(), TEXT);
    }

    #[test]
    fn tampering_and_wrong_keys_are_refused() {
        let verifier = NoteVerifier::parse(VKEY).unwrap();
        let changed = SIGNED.replace("problem,", "problem;");
        assert!(matches!(
            verifier.open(&changed),
            Err(NoteError::BadSignature { .. })
        ));
        let other = NoteSigner::from_seed("PeterNeumann", [9; 32]).unwrap();
        let by_other = other.sign(TEXT).unwrap();
        assert!(matches!(
            verifier.open(&by_other),
            Err(NoteError::NoSignature { .. })
        ));
        // an extra signature by an unknown key is ignored
        let both = format!("{}{}", SIGNED, by_other.split("\n\n").nth(1).unwrap());
        assert_eq!(verifier.open(&both).unwrap(), TEXT);
        assert!(verifier.open(TEXT).is_err());
        assert!(
            NoteVerifier::parse(
                "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
            )
            .is_err()
        );
        assert!(NoteSigner::from_seed("has space", [1; 32]).is_err());
        assert!(other.sign("no newline").is_err());
    }

    #[test]
    fn agrees_with_signed_note_crate() {
        use signed_note::{Note, StandardVerifier, Verifier as _, VerifierList};
        let signer = NoteSigner::from_seed("log.example/acme", [42; 32]).unwrap();
        let vkey = signer.verifier().to_string();
        let note = signer.sign("log.example/acme\n3\nAAAA\n").unwrap();
        let theirs = StandardVerifier::new(&vkey).unwrap();
        assert_eq!(theirs.key_id(), signer.key_id());
        let parsed = Note::from_bytes(note.as_bytes()).unwrap();
        let (verified, _) = parsed
            .verify(&VerifierList::new(vec![Box::new(theirs)]))
            .unwrap();
        assert_eq!(verified.len(), 1);
    }
}
