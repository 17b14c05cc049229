//! C2SP tlog-checkpoint (<https://c2sp.org/tlog-checkpoint>): the note text
//!
//! ```text
//! <origin>
//! <tree size, decimal>
//! <root hash, base64>
//! [extension lines]
//! ```
//!
//! signed as a [signed note](crate::note). sealtrail's origin for a tenant is
//! `<configured origin>/<tenant_id>`; the signing key's name is the configured origin.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::merkle::Hash;
use crate::note::{NoteError, NoteSigner, NoteVerifier};

/// A tree head: which log, how many leaves, and the root hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    /// Optional extension lines (kept verbatim, without newlines).
    pub extensions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("malformed checkpoint: {0}")]
    Malformed(String),
    #[error(transparent)]
    Note(#[from] NoteError),
    #[error("checkpoint is for origin {found:?}, expected {expected:?}")]
    WrongOrigin { expected: String, found: String },
}

/// The origin line of `tenant_id`'s log.
pub fn tenant_origin(origin: &str, tenant_id: &str) -> String {
    format!("{}/{}", origin.trim_end_matches('/'), tenant_id)
}

impl Checkpoint {
    pub fn new(origin: impl Into<String>, size: u64, root: Hash) -> Self {
        Self {
            origin: origin.into(),
            size,
            root,
            extensions: Vec::new(),
        }
    }

    /// The note text (ends in a newline).
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        );
        for e in &self.extensions {
            out.push_str(e);
            out.push('\n');
        }
        out
    }

    /// Parses a note text (not a signed note: see [`Checkpoint::open`]).
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        let bad = |m: &str| CheckpointError::Malformed(m.to_string());
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| bad("the text must end in a newline"))?;
        let mut lines = body.split('\n');
        let origin = lines.next().filter(|o| !o.is_empty());
        let origin = origin.ok_or_else(|| bad("empty origin line"))?;
        let size = lines.next().ok_or_else(|| bad("no tree size line"))?;
        if size.is_empty()
            || !size.bytes().all(|b| b.is_ascii_digit())
            || (size.len() > 1 && size.starts_with('0'))
        {
            return Err(bad("the tree size must be a decimal without leading zeros"));
        }
        let size: u64 = size.parse().map_err(|_| bad("tree size out of range"))?;
        let root = lines.next().ok_or_else(|| bad("no root hash line"))?;
        let root: Hash = B64
            .decode(root)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or_else(|| bad("the root hash must be 32 bytes in base64"))?;
        let extensions: Vec<String> = lines.map(str::to_string).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(bad("empty extension line"));
        }
        Ok(Self {
            origin: origin.to_string(),
            size,
            root,
            extensions,
        })
    }

    /// Signs the checkpoint: the signed note, as served and stored.
    pub fn sign(&self, signer: &NoteSigner) -> Result<String, NoteError> {
        signer.sign(&self.to_text())
    }

    /// Verifies `note`'s signature by `verifier` and parses it; when `origin` is given,
    /// the checkpoint must be for that origin.
    pub fn open(
        note: &str,
        verifier: &NoteVerifier,
        origin: Option<&str>,
    ) -> Result<Self, CheckpointError> {
        let checkpoint = Self::parse(verifier.open(note)?)?;
        if let Some(expected) = origin
            && expected != checkpoint.origin
        {
            return Err(CheckpointError::WrongOrigin {
                expected: expected.to_string(),
                found: checkpoint.origin,
            });
        }
        Ok(checkpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_matches_tlog_tiles() {
        let signer = NoteSigner::from_seed("audit.example.com", [3; 32]).unwrap();
        let cp = Checkpoint::new(tenant_origin("audit.example.com/", "acme"), 8, [5; 32]);
        assert_eq!(
            cp.to_text(),
            "audit.example.com/acme\n8\nBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQU=\n"
        );
        let note = cp.sign(&signer).unwrap();
        let back =
            Checkpoint::open(&note, &signer.verifier(), Some("audit.example.com/acme")).unwrap();
        assert_eq!(back, cp);
        assert!(matches!(
            Checkpoint::open(&note, &signer.verifier(), Some("audit.example.com/other")),
            Err(CheckpointError::WrongOrigin { .. })
        ));
        // the independent parser reads the same tree head
        let theirs =
            tlog_tiles::checkpoint::Checkpoint::from_bytes(cp.to_text().as_bytes()).unwrap();
        assert_eq!(theirs.size(), 8);
        assert_eq!(theirs.hash().0, [5; 32]);
        assert_eq!(theirs.origin(), "audit.example.com/acme");
    }

    #[test]
    fn malformed_texts_are_refused() {
        for text in [
            "",
            "o\n",
            "o\n01\nBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQU=\n",
            "o\n-1\nBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQU=\n",
            "o\n1\nBQUF\n",
            "o\n1\nBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQU=",
            "\n1\nBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQU=\n",
        ] {
            assert!(Checkpoint::parse(text).is_err(), "{text:?}");
        }
        let with_ext = "o\n1\nBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQU=\next\n";
        assert_eq!(Checkpoint::parse(with_ext).unwrap().extensions, ["ext"]);
    }
}
