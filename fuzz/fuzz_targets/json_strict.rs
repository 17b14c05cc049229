//! The strict I-JSON parser every request body goes through (`json::parse_strict`).
//!
//! Beyond "never panics": it accepts a subset of what serde_json accepts and then yields
//! the same value; what it accepts holds only integers within ±(2^53−1) and nests at most
//! `MAX_DEPTH` levels; its output, re-serialized, parses strictly to the same value; a
//! body it calls syntactically invalid (`invalid_json`) is one serde_json refuses too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealtrail_core::json::parse_strict;
use sealtrail_core::limits::{MAX_DEPTH, MAX_SAFE_INTEGER};
use serde_json::Value;

/// The nesting depth of `value`, counting the outermost array or object as 1.
fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn integers_in_range(value: &Value) -> bool {
    match value {
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => u <= MAX_SAFE_INTEGER,
            (None, Some(i)) => i.unsigned_abs() <= MAX_SAFE_INTEGER,
            (None, None) => n.as_f64().is_some_and(f64::is_finite),
        },
        Value::Array(items) => items.iter().all(integers_in_range),
        Value::Object(map) => map.values().all(integers_in_range),
        _ => true,
    }
}

fuzz_target!(|data: &[u8]| {
    let plain = serde_json::from_slice::<Value>(data);
    match parse_strict(data) {
        Ok(value) => {
            let plain = plain.expect("parse_strict accepted a body serde_json refuses");
            assert_eq!(value, plain, "parse_strict and serde_json disagree");
            assert!(
                depth(&value) <= MAX_DEPTH,
                "nesting beyond MAX_DEPTH accepted"
            );
            assert!(
                integers_in_range(&value),
                "an integer beyond ±(2^53−1) accepted"
            );
            let text = serde_json::to_vec(&value).expect("a value serializes");
            let again = parse_strict(&text).expect("re-serialized output is strict I-JSON");
            assert_eq!(again, value, "the value changed through a round trip");
        }
        Err(err) => {
            assert!(
                matches!(
                    err.code,
                    "invalid_json" | "duplicate_key" | "number_out_of_range" | "nesting_too_deep"
                ),
                "unexpected code {}",
                err.code
            );
            assert!(!err.message.is_empty());
            if err.code == "invalid_json" {
                assert!(
                    plain.is_err(),
                    "parse_strict calls invalid JSON what serde_json accepts: {}",
                    err.message
                );
            }
        }
    }
});
