//! A one-pass check that a JSON text already *is* its own RFC 8785 (JCS) canonical form,
//! reporting the top-level members' byte spans. The offline verifier uses it to hash an
//! exported record line without re-serializing it: when the line is canonical, the
//! canonical form without `hash` is the line with the `hash` member cut out.
//!
//! It is deliberately conservative: it answers `None` ("maybe not canonical, take the
//! slow path") for anything whose canonical form is not obvious from the bytes alone:
//! numbers with a fraction, an exponent, more than 15 digits or `-0`; keys that are not
//! plain ASCII; any escape JCS would not produce; nesting past 64 levels. `None` is never
//! wrong; `Some` must be (the property test in `audit` compares both paths).

use std::ops::Range;

/// A top-level member: `key` is the span inside the quotes, `value` the whole value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    pub key: Range<usize>,
    pub value: Range<usize>,
}

const MAX_DEPTH: usize = 64;

/// `Some(members)` when `text` is exactly the JCS form of a JSON object.
pub(crate) fn canonical_object(text: &[u8]) -> Option<Vec<Member>> {
    // The scanner looks at ASCII only: the bytes of a string are checked here, once, so a
    // line that is not UTF-8 (hence not JSON) never passes for canonical.
    std::str::from_utf8(text).ok()?;
    let mut s = Scanner { b: text, at: 0 };
    let mut members = Vec::with_capacity(12);
    s.object(0, Some(&mut members))?;
    (s.at == text.len()).then_some(members)
}

struct Scanner<'a> {
    b: &'a [u8],
    at: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.at).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.at += 1)
    }

    fn value(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'{' => self.object(depth, None),
            b'[' => self.array(depth),
            b'"' => self.string().map(|_| ()),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number(),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.b[self.at..]
            .starts_with(word)
            .then(|| self.at += word.len())
    }

    fn object(&mut self, depth: usize, mut top: Option<&mut Vec<Member>>) -> Option<()> {
        self.eat(b'{')?;
        if self.eat(b'}').is_some() {
            return Some(());
        }
        let mut prev: Option<Range<usize>> = None;
        loop {
            let key = self.key()?;
            let raw = &self.b[key.clone()];
            if let Some(p) = &prev
                && !ascending(&self.b[p.clone()], raw)
            {
                return None; // out of order or duplicate
            }
            self.eat(b':')?;
            let start = self.at;
            self.value(depth + 1)?;
            if let Some(members) = top.as_deref_mut() {
                members.push(Member {
                    key: key.clone(),
                    value: start..self.at,
                });
            }
            prev = Some(key);
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    fn array(&mut self, depth: usize) -> Option<()> {
        self.eat(b'[')?;
        if self.eat(b']').is_some() {
            return Some(());
        }
        loop {
            self.value(depth + 1)?;
            match self.peek()? {
                b',' => self.at += 1,
                b']' => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// An object key: plain printable ASCII without escapes (such keys sort by bytes
    /// exactly as JCS sorts them); returns the span inside the quotes.
    fn key(&mut self) -> Option<Range<usize>> {
        self.eat(b'"')?;
        let start = self.at;
        let len = self.b[start..]
            .iter()
            .position(|&c| !(0x20..0x7f).contains(&c) || c == b'"' || c == b'\\')?;
        self.at += len;
        self.eat(b'"')?;
        Some(start..start + len)
    }

    /// A string as JCS writes it; returns the span inside the quotes.
    fn string(&mut self) -> Option<Range<usize>> {
        self.eat(b'"')?;
        let start = self.at;
        loop {
            // skip plain bytes in one tight loop (most of a record)
            self.at += plain_run(&self.b[self.at..]);
            let c = self.peek()?;
            match c {
                b'"' => {
                    self.at += 1;
                    return Some(start..self.at - 1);
                }
                0..=0x1f => return None,
                b'\\' => {
                    let e = *self.b.get(self.at + 1)?;
                    match e {
                        b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't' => self.at += 2,
                        b'u' => {
                            // JCS escapes only control characters without a short form,
                            // as \u00xx with lowercase hex
                            let hex = self.b.get(self.at + 2..self.at + 6)?;
                            let ok_digit = |d: u8| d.is_ascii_digit() || (b'a'..=b'f').contains(&d);
                            if &hex[..2] != b"00" || !ok_digit(hex[2]) || !ok_digit(hex[3]) {
                                return None;
                            }
                            let v = u8::from_str_radix(std::str::from_utf8(&hex[2..]).ok()?, 16)
                                .ok()?;
                            if v >= 0x20 || matches!(v, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d) {
                                return None;
                            }
                            self.at += 6;
                        }
                        _ => return None,
                    }
                }
                _ => self.at += 1,
            }
        }
    }

    /// Integers only, in their shortest form, small enough to be exact in a double.
    fn number(&mut self) -> Option<()> {
        let start = self.at;
        if self.peek()? == b'-' {
            self.at += 1;
        }
        let digits = self.at;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.at += 1;
        }
        let n = self.at - digits;
        if n == 0 || n > 15 || (n > 1 && self.b[digits] == b'0') {
            return None;
        }
        if &self.b[start..self.at] == b"-0" {
            return None;
        }
        match self.peek() {
            Some(b'.' | b'e' | b'E') => None,
            _ => Some(()),
        }
    }
}

/// `a < b` in byte order; keys are short, so a loop beats a `memcmp` call.
fn ascending(a: &[u8], b: &[u8]) -> bool {
    for (x, y) in a.iter().zip(b) {
        if x != y {
            return x < y;
        }
    }
    a.len() < b.len()
}

/// Length of the prefix of `rest` without `"`, `\\` or control characters: eight bytes
/// at a time (SWAR; a flagged word may be a false alarm, then bytes decide).
fn plain_run(rest: &[u8]) -> usize {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    while let Some(word) = rest.get(i..i + 8) {
        let v = u64::from_le_bytes(word.try_into().expect("8 bytes"));
        let q = v ^ (LO * b'"' as u64);
        let b = v ^ (LO * b'\\' as u64);
        let special = (q.wrapping_sub(LO) & !q)
            | (b.wrapping_sub(LO) & !b)
            | (v.wrapping_sub(LO * 0x20) & !v);
        if special & HI != 0 {
            break;
        }
        i += 8;
    }
    i + rest[i..]
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        .unwrap_or(rest.len() - i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_run_stops_at_every_special_byte() {
        for len in 0..40 {
            for special in [b'"', b'\\', 0x00, 0x1f] {
                for at in 0..=len {
                    let mut v: Vec<u8> = (0..len).map(|i| b"az \x7f\xc3\xa9~!"[i % 7]).collect();
                    if at < len {
                        v[at] = special;
                    }
                    assert_eq!(plain_run(&v), at, "len {len} special {special} at {at}");
                }
            }
        }
    }

    #[test]
    fn accepts_canonical_and_refuses_the_rest() {
        let ok = br#"{"a":[1,-2,true,null,{}],"b":"x\"\\\n\u001f\u00e9","c":{"d":[]}}"#;
        // \u00e9 is not a control character: JCS writes it literally
        assert!(canonical_object(ok).is_none());
        let ok = br#"{"a":[1,-2,true,null,{}],"b":"x\"\\\n\u001f","c":{"d":[]}}"#;
        let m = canonical_object(ok).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(&ok[m[1].value.clone()], br#""x\"\\\n\u001f""#);
        for bad in [
            &br#"{"b":1,"a":2}"#[..],
            br#"{"a":1,"a":2}"#,
            br#"{"a": 1}"#,
            br#"{"a":1.5}"#,
            br#"{"a":1e3}"#,
            br#"{"a":-0}"#,
            br#"{"a":01}"#,
            br#"{"a":1234567890123456}"#,
            br#"{"a":"\/"}"#,
            br#"{"a":"\u000a"}"#,
            br#"{"a":"\u00A0"}"#,
            "{\"é\":1}".as_bytes(),
            br#"{"a":1} "#,
            br#"[1]"#,
            br#"{"a":tru}"#,
            b"{\"a\":\"x\xff\"}",
            b"{\"a\":[\"\xed\xa0\x80\"]}", // a lone surrogate in UTF-8 form
            b"{\"a\":\"\xc3\"}",
        ] {
            assert!(
                canonical_object(bad).is_none(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
