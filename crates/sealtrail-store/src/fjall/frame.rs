//! The payload of one segment frame: everything one group commit makes durable.
//!
//! ```text
//! version u8 (1)
//! records  u32 count, then each (a *record entry*, which an `events` index entry points at):
//!   tenant str | sequence_number u64 | hash str | input_digest str | id str
//!   | actor_id str | action str | resource_id str | canonical bytes
//!   | CRC32 u32 of the entry's bytes before it
//! receipts u32 count, then each: tenant str | receipt_id str | receipt JSON bytes
//! nodes    u32 count, then each: tenant str | level u8 | index u64 | hash [32]
//! ```
//!
//! All integers little-endian; `str`/`bytes` are a u32 length and the bytes. `canonical`
//! is the record without `hash` exactly as it was hashed; `id`, `actor_id`, `action` and
//! `resource_id` repeat what the indexer needs from it, so indexing (live or replaying the
//! log after a crash) never parses JSON. A record entry is self-contained: a read by
//! position decodes it alone, and its own checksum catches a damaged record on every read
//! (the frame's checksum is only checked when whole frames are read).

use sealtrail_core::merkle::{Hash, NodeId};

pub(super) const VERSION: u8 = 1;

/// One record as the log holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RecordEntry<'a> {
    pub tenant: &'a str,
    pub seq: u64,
    pub hash: &'a str,
    pub digest: &'a str,
    pub id: &'a str,
    pub actor_id: &'a str,
    pub action: &'a str,
    pub resource_id: &'a str,
    pub canonical: &'a [u8],
}

/// A decoded frame, borrowing from the payload. `records` also carry where each entry
/// starts in the payload and its length.
#[derive(Debug, Default)]
pub(super) struct Frame<'a> {
    pub records: Vec<(RecordEntry<'a>, u32, u32)>,
    pub receipts: Vec<(&'a str, &'a str, &'a [u8])>,
    pub nodes: Vec<(&'a str, NodeId, Hash)>,
}

/// Builds a payload.
pub(super) struct Encoder {
    buf: Vec<u8>,
    /// (count position, count) of the section being written.
    section: (usize, u32),
    /// Where each record entry starts, and its length.
    pub record_spans: Vec<(u32, u32)>,
}

impl Encoder {
    /// An encoder whose buffer holds `capacity` bytes before it grows (a group's frame
    /// is megabytes: each doubling would copy all of it).
    pub fn with_capacity(capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity.max(1024));
        buf.push(VERSION);
        buf.extend_from_slice(&0u32.to_le_bytes());
        Self {
            buf,
            section: (1, 0),
            record_spans: Vec::new(),
        }
    }

    fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(&(b.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(b);
    }

    fn next_section(&mut self) {
        let (at, count) = self.section;
        self.buf[at..at + 4].copy_from_slice(&count.to_le_bytes());
        let at = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_le_bytes());
        self.section = (at, 0);
    }

    pub fn record(&mut self, r: &RecordEntry<'_>) {
        let start = self.buf.len();
        self.bytes(r.tenant.as_bytes());
        self.buf.extend_from_slice(&r.seq.to_le_bytes());
        for s in [r.hash, r.digest, r.id, r.actor_id, r.action, r.resource_id] {
            self.bytes(s.as_bytes());
        }
        self.bytes(r.canonical);
        let crc = crc32fast::hash(&self.buf[start..]);
        self.buf.extend_from_slice(&crc.to_le_bytes());
        self.record_spans
            .push((start as u32, (self.buf.len() - start) as u32));
        self.section.1 += 1;
    }

    /// Ends the records; receipts follow.
    pub fn receipts<'a>(&mut self, receipts: impl Iterator<Item = (&'a str, &'a str, Vec<u8>)>) {
        self.next_section();
        for (tenant, receipt_id, json) in receipts {
            self.bytes(tenant.as_bytes());
            self.bytes(receipt_id.as_bytes());
            self.bytes(&json);
            self.section.1 += 1;
        }
    }

    /// Ends the receipts with the tree nodes; returns the payload.
    pub fn finish<'a>(
        mut self,
        nodes: impl Iterator<Item = (&'a str, NodeId, Hash)>,
    ) -> (Vec<u8>, Vec<(u32, u32)>) {
        self.next_section();
        for (tenant, id, hash) in nodes {
            self.bytes(tenant.as_bytes());
            self.buf.push(id.level);
            self.buf.extend_from_slice(&id.index.to_le_bytes());
            self.buf.extend_from_slice(&hash);
            self.section.1 += 1;
        }
        let (at, count) = self.section;
        self.buf[at..at + 4].copy_from_slice(&count.to_le_bytes());
        (self.buf, self.record_spans)
    }
}

/// The record entry `entry` (whose encoding is `len` bytes) erased by a redaction
/// (issue 15): the same length, so it can overwrite the old one in place; tenant,
/// sequence number, hash, input digest and id kept; the actor, action and resource ids
/// blanked (spaces); the canonical bytes replaced by `redacted` (the stored form of the
/// redacted record, padded to their length: `Record::redacted_canonical`).
pub(super) fn erased_entry(entry: &RecordEntry<'_>, redacted: &[u8], len: u32) -> Vec<u8> {
    debug_assert_eq!(redacted.len(), entry.canonical.len());
    let blank = |s: &str| " ".repeat(s.len());
    let (actor, action, resource) = (
        blank(entry.actor_id),
        blank(entry.action),
        blank(entry.resource_id),
    );
    let mut enc = Encoder {
        buf: Vec::with_capacity(len as usize),
        section: (0, 0),
        record_spans: Vec::new(),
    };
    enc.record(&RecordEntry {
        actor_id: &actor,
        action: &action,
        resource_id: &resource,
        canonical: redacted,
        ..*entry
    });
    debug_assert_eq!(enc.buf.len(), len as usize);
    enc.buf
}

/// The canonical bytes as stored, without the padding a redaction leaves (a record's
/// canonical form never ends in a space).
fn unpadded(canonical: &[u8]) -> &[u8] {
    if sealtrail_core::record::is_redacted(canonical) {
        let end = canonical
            .iter()
            .rposition(|&b| b != b' ')
            .map_or(0, |i| i + 1);
        &canonical[..end]
    } else {
        canonical
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| format!("truncated at byte {} (wanted {n} more)", self.at))?;
        let out = &self.buf[self.at..end];
        self.at = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn str(&mut self) -> Result<&'a str, String> {
        std::str::from_utf8(self.bytes()?).map_err(|e| format!("bad UTF-8: {e}"))
    }

    fn record(&mut self) -> Result<RecordEntry<'a>, String> {
        let start = self.at;
        let entry = RecordEntry {
            tenant: self.str()?,
            seq: self.u64()?,
            hash: self.str()?,
            digest: self.str()?,
            id: self.str()?,
            actor_id: self.str()?,
            action: self.str()?,
            resource_id: self.str()?,
            canonical: unpadded(self.bytes()?),
        };
        let computed = crc32fast::hash(&self.buf[start..self.at]);
        if self.u32()? != computed {
            return Err("the record entry's checksum does not match: the record is damaged".into());
        }
        Ok(entry)
    }
}

/// Decodes one record entry read by position.
pub(super) fn decode_record(entry: &[u8]) -> Result<RecordEntry<'_>, String> {
    let mut c = Cursor { buf: entry, at: 0 };
    let r = c.record()?;
    if c.at != entry.len() {
        return Err(format!(
            "{} stray bytes after a record entry",
            entry.len() - c.at
        ));
    }
    Ok(r)
}

/// Decodes a whole payload.
pub(super) fn decode(payload: &[u8]) -> Result<Frame<'_>, String> {
    let mut c = Cursor {
        buf: payload,
        at: 0,
    };
    let version = c.u8()?;
    if version != VERSION {
        return Err(format!(
            "frame format {version}, this sealtrail reads {VERSION}"
        ));
    }
    let mut frame = Frame::default();
    for _ in 0..c.u32()? {
        let start = c.at;
        let r = c.record()?;
        frame.records.push((r, start as u32, (c.at - start) as u32));
    }
    for _ in 0..c.u32()? {
        frame.receipts.push((c.str()?, c.str()?, c.bytes()?));
    }
    for _ in 0..c.u32()? {
        let tenant = c.str()?;
        let level = c.u8()?;
        let index = c.u64()?;
        let hash: Hash = c.take(32)?.try_into().unwrap();
        frame.nodes.push((tenant, NodeId { level, index }, hash));
    }
    if c.at != payload.len() {
        return Err(format!(
            "{} stray bytes after the frame",
            payload.len() - c.at
        ));
    }
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_decodes_to_what_was_encoded_and_every_truncation_is_an_error() {
        let a = RecordEntry {
            tenant: "acme",
            seq: 7,
            hash: "ab",
            digest: "cd",
            id: "evt-1",
            actor_id: "user:1",
            action: "document.delete",
            resource_id: "doc:9",
            canonical: br#"{"a":1}"#,
        };
        let b = RecordEntry {
            tenant: "other",
            seq: 1,
            ..a
        };
        let mut enc = Encoder::with_capacity(0);
        enc.record(&a);
        enc.record(&b);
        enc.receipts([("acme", "rcpt-1", br#"{"r":1}"#.to_vec())].into_iter());
        let (payload, spans) =
            enc.finish([("acme", NodeId { level: 1, index: 3 }, [9u8; 32])].into_iter());
        let frame = decode(&payload).unwrap();
        assert_eq!(frame.records.len(), 2);
        assert_eq!(frame.records[0].0, a);
        assert_eq!(frame.records[1].0, b);
        for ((entry, start, len), span) in frame.records.iter().zip(&spans) {
            assert_eq!((*start, *len), *span);
            let alone = &payload[*start as usize..(*start + *len) as usize];
            assert_eq!(decode_record(alone).unwrap(), *entry);
        }
        assert_eq!(frame.receipts, vec![("acme", "rcpt-1", &br#"{"r":1}"#[..])]);
        assert_eq!(
            frame.nodes,
            vec![("acme", NodeId { level: 1, index: 3 }, [9u8; 32])]
        );
        for cut in 0..payload.len() {
            assert!(decode(&payload[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = payload.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
        // A flipped bit in a record is caught when the record alone is read.
        let (_, start, len) = frame.records[1];
        let mut damaged = payload[start as usize..(start + len) as usize].to_vec();
        damaged[len as usize / 2] ^= 0x10;
        assert!(decode_record(&damaged).unwrap_err().contains("checksum"));
    }
}
