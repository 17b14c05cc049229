//! Strict JSON parsing for ingest.
//!
//! JCS (RFC 8785) is defined over I-JSON (RFC 7493), so input that is not I-JSON cannot be
//! canonicalized unambiguously and is rejected here, before anything else looks at it:
//! duplicate member names, integers beyond ±(2^53−1), invalid UTF-8 or lone surrogates
//! (serde_json already refuses those), and nesting deeper than [`MAX_DEPTH`].

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::limits::{MAX_DEPTH, MAX_SAFE_INTEGER};

/// Why a body is not acceptable JSON. `code` is the wire error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct JsonError {
    pub code: &'static str,
    pub message: String,
}

/// Parses `bytes` as one strict I-JSON value (see the module doc).
pub fn parse_strict(bytes: &[u8]) -> Result<Value, JsonError> {
    parse_strict_at(bytes, 1)
}

/// [`parse_strict`] for a value that sits at nesting `depth` of a body (the top level is
/// 1): a member sent as its own text, such as gRPC's `metadata_json` (depth 2), gets the
/// nesting limit it would have inside the body.
pub fn parse_strict_at(bytes: &[u8], depth: usize) -> Result<Value, JsonError> {
    reject_big_integer_literals(bytes)?;
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = StrictSeed { depth }
        .deserialize(&mut deserializer)
        .map_err(classify)?;
    deserializer.end().map_err(classify)?;
    Ok(value)
}

// Our visitor reports its own rule violations through `de::Error::custom` with a
// `code:` prefix; everything else is a syntax error from serde_json.
const TAG_DUPLICATE: &str = "duplicate_key:";
const TAG_RANGE: &str = "number_out_of_range:";
const TAG_DEPTH: &str = "nesting_too_deep:";

fn classify(err: serde_json::Error) -> JsonError {
    let text = err.to_string();
    for (tag, code) in [
        (TAG_DUPLICATE, "duplicate_key"),
        (TAG_RANGE, "number_out_of_range"),
        (TAG_DEPTH, "nesting_too_deep"),
    ] {
        if let Some(rest) = text.strip_prefix(tag) {
            return JsonError {
                code,
                message: rest.trim().to_string(),
            };
        }
    }
    if text.contains("number out of range") {
        return JsonError {
            code: "number_out_of_range",
            message: format!("body is not I-JSON: {text}"),
        };
    }
    JsonError {
        code: "invalid_json",
        message: format!("body is not valid JSON: {text}"),
    }
}

/// Refuses integer literals (no fraction, no exponent) beyond ±(2^53−1). serde_json
/// turns an integer literal that overflows u64 into a lossy float, so the literal text is
/// checked here, in one pass that skips strings. Malformed input is left to the parser.
pub(crate) fn reject_big_integer_literals(bytes: &[u8]) -> Result<(), JsonError> {
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                if bytes[i] == b'-' {
                    i += 1;
                }
                let digits_start = i;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
                let digits = &bytes[digits_start..i];
                let is_integer = !matches!(bytes.get(i), Some(b'.' | b'e' | b'E'));
                while i < bytes.len()
                    && matches!(bytes[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                {
                    i += 1;
                }
                if is_integer && digits.len() >= 16 {
                    let text = std::str::from_utf8(digits).unwrap_or("");
                    let too_big = text.len() > 30
                        || text
                            .parse::<u128>()
                            .map_or(true, |n| n > MAX_SAFE_INTEGER as u128);
                    if too_big {
                        let literal = String::from_utf8_lossy(&bytes[start..i]);
                        return Err(JsonError {
                            code: "number_out_of_range",
                            message: format!(
                                "integer {literal} is outside the I-JSON range ±(2^53−1); send it as a string"
                            ),
                        });
                    }
                }
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// Reads one strict value (the rules of [`parse_strict`]) at nesting `depth` (the body's
/// top level is 1), for typed readers that hold a free-form member (`metadata`).
pub(crate) fn strict_value_at<'de, D: de::Deserializer<'de>>(
    deserializer: D,
    depth: usize,
) -> Result<Value, D::Error> {
    StrictSeed { depth }.deserialize(deserializer)
}

struct StrictSeed {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for StrictSeed {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(StrictVisitor { depth: self.depth })
    }
}

struct StrictVisitor {
    depth: usize,
}

impl StrictVisitor {
    fn deeper<E: de::Error>(&self) -> Result<StrictSeed, E> {
        if self.depth > MAX_DEPTH {
            return Err(E::custom(format!(
                "{TAG_DEPTH} JSON nesting exceeds the limit of {MAX_DEPTH} levels"
            )));
        }
        Ok(StrictSeed {
            depth: self.depth + 1,
        })
    }
}

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        if v.unsigned_abs() > MAX_SAFE_INTEGER {
            return Err(E::custom(format!(
                "{TAG_RANGE} integer {v} is outside the I-JSON range ±(2^53−1); send it as a string"
            )));
        }
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        if v > MAX_SAFE_INTEGER {
            return Err(E::custom(format!(
                "{TAG_RANGE} integer {v} is outside the I-JSON range ±(2^53−1); send it as a string"
            )));
        }
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        // Integer literals too large for u64 also arrive here as floats; those were
        // already refused by `reject_big_integer_literals`, so what remains is a number
        // written with a fraction or an exponent: a double, which is fine in I-JSON.
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom(format!("{TAG_RANGE} number {v} is not finite")))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let seed_depth = self.deeper::<A::Error>()?.depth;
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element_seed(StrictSeed { depth: seed_depth })? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let seed_depth = self.deeper::<A::Error>()?.depth;
        let mut members = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if members.contains_key(&key) {
                return Err(de::Error::custom(format!(
                    "{TAG_DUPLICATE} member name {key:?} appears twice in one object"
                )));
            }
            let value = map.next_value_seed(StrictSeed { depth: seed_depth })?;
            members.insert(key, value);
        }
        Ok(Value::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_json() {
        let v =
            parse_strict(br#"{"a":[1,2.5,"x",null,true],"b":{"c":-9007199254740991}}"#).unwrap();
        assert_eq!(v["b"]["c"], serde_json::json!(-9007199254740991i64));
    }

    #[test]
    fn rejects_duplicate_keys_at_any_depth() {
        assert_eq!(
            parse_strict(br#"{"a":1,"a":2}"#).unwrap_err().code,
            "duplicate_key"
        );
        assert_eq!(
            parse_strict(br#"{"m":{"x":1,"y":{"z":1,"z":1}}}"#)
                .unwrap_err()
                .code,
            "duplicate_key"
        );
    }

    #[test]
    fn rejects_integers_beyond_ijson_range() {
        assert_eq!(
            parse_strict(b"9007199254740992").unwrap_err().code,
            "number_out_of_range"
        );
        assert_eq!(
            parse_strict(b"-9007199254740992").unwrap_err().code,
            "number_out_of_range"
        );
        assert_eq!(
            parse_strict(b"18446744073709551616").unwrap_err().code,
            "number_out_of_range"
        );
        assert_eq!(
            parse_strict(br#"{"a":"x\\\"","n":[-123456789012345678901234567890123]}"#)
                .unwrap_err()
                .code,
            "number_out_of_range"
        );
        // floats written with an exponent or a fraction are doubles: fine in I-JSON
        assert!(parse_strict(b"1e21").is_ok());
        assert!(parse_strict(b"1.7976931348623157e308").is_ok());
        assert!(parse_strict(b"12345678901234567890.5").is_ok());
        assert!(parse_strict(b"1.5e-7").is_ok());
        // digits inside strings are not numbers
        assert!(parse_strict(br#"{"s":"99999999999999999999"}"#).is_ok());
        assert!(parse_strict(b"9007199254740991").is_ok());
        assert_eq!(
            parse_strict(b"1e400").unwrap_err().code,
            "number_out_of_range"
        );
    }

    #[test]
    fn rejects_deep_nesting() {
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert_eq!(
            parse_strict(deep.as_bytes()).unwrap_err().code,
            "nesting_too_deep"
        );
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse_strict(ok.as_bytes()).is_ok());
    }

    #[test]
    fn rejects_lone_surrogates_and_bad_utf8() {
        assert_eq!(
            parse_strict(br#""\ud800""#).unwrap_err().code,
            "invalid_json"
        );
        assert_eq!(parse_strict(b"\"\xff\"").unwrap_err().code, "invalid_json");
    }

    #[test]
    fn rejects_trailing_garbage() {
        assert_eq!(parse_strict(b"{} {}").unwrap_err().code, "invalid_json");
    }
}
