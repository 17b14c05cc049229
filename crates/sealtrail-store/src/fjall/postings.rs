//! Posting lists of the `facets` index: the increasing sequence numbers of one frame's
//! records that share a facet value. The key holds the first; the value is the count and
//! the gaps between neighbours, as LEB128 varints (a batch's records are usually
//! consecutive: one byte each).

/// Encodes `seqs` (increasing, at least one) as a value whose key holds `seqs[0]`.
pub(super) fn encode(seqs: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + seqs.len());
    varint(&mut out, seqs.len() as u64);
    for pair in seqs.windows(2) {
        varint(&mut out, pair[1] - pair[0]);
    }
    out
}

/// Decodes a value whose key holds `first`.
pub(super) fn decode(first: u64, bytes: &[u8]) -> Result<Vec<u64>, String> {
    let mut at = 0;
    let count = read_varint(bytes, &mut at)?;
    if count == 0 || count > bytes.len() as u64 + 1 {
        return Err(format!(
            "a posting list of {count} entries in {} bytes",
            bytes.len()
        ));
    }
    let mut out = Vec::with_capacity(count as usize);
    let mut seq = first;
    out.push(seq);
    for _ in 1..count {
        let gap = read_varint(bytes, &mut at)?;
        if gap == 0 {
            return Err("a posting list that does not increase".into());
        }
        seq = seq
            .checked_add(gap)
            .ok_or("a posting list past the largest sequence number")?;
        out.push(seq);
    }
    if at != bytes.len() {
        return Err("stray bytes after a posting list".into());
    }
    Ok(out)
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn read_varint(bytes: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at).ok_or("a truncated posting list")?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("a varint longer than 64 bits in a posting list".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_round_trip_and_damage_is_an_error() {
        for seqs in [
            vec![1],
            vec![7, 8, 9, 10],
            vec![5, 200, 70_000, 1 << 40, u64::MAX],
        ] {
            let bytes = encode(&seqs);
            assert_eq!(decode(seqs[0], &bytes).unwrap(), seqs);
            for cut in 0..bytes.len() {
                assert!(
                    decode(seqs[0], &bytes[..cut]).is_err(),
                    "{seqs:?} cut at {cut}"
                );
            }
        }
        assert_eq!(encode(&[3, 4, 5, 6]).len(), 4, "consecutive: a byte each");
        assert!(decode(1, &[2, 0]).is_err(), "a zero gap");
        assert!(decode(1, &[1, 0]).is_err(), "stray bytes");
    }
}
