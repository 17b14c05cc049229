//! API keys: `alk_live_` + 43 base62 characters (256 bits from the OS RNG). Only the
//! SHA-256 of a key is stored; a fast hash is right here because the key has full
//! entropy (nothing to brute-force), unlike a password.

use sealtrail_store::ApiKey;
use sha2::{Digest, Sha256};

pub const KEY_PREFIX: &str = "alk_live_";
/// `admin`: redactions (`POST /v1/events/{id}/redact`); never implied by the others.
pub const SCOPES: [&str; 3] = ["admin", "read", "write"];
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Hex SHA-256 of a raw key.
pub fn hash_key(raw: &str) -> String {
    const_hex::encode(Sha256::digest(raw.as_bytes()))
}

/// Parses a comma-separated scope list (`read`, `write`, `read,write`, `read,write,admin`).
pub fn parse_scopes(text: &str) -> Result<Vec<String>, String> {
    let mut scopes: Vec<String> = Vec::new();
    for s in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if !SCOPES.contains(&s) {
            return Err(format!(
                "unknown scope {s:?}; scopes are read, write and admin (e.g. --scopes read,write)"
            ));
        }
        if !scopes.iter().any(|x| x == s) {
            scopes.push(s.to_string());
        }
    }
    if scopes.is_empty() {
        return Err("give at least one scope: read, write, admin (redactions), or a list such as read,write".into());
    }
    scopes.sort();
    Ok(scopes)
}

/// Validates a tenant id given on the command line.
pub fn check_tenant(tenant: &str) -> Result<(), String> {
    let ok = !tenant.is_empty()
        && tenant.len() <= 128
        && tenant
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tenant {tenant:?} must be 1-128 characters of A-Z a-z 0-9 - _ . :"
        ))
    }
}

/// Creates a new key; returns the raw key (show it once) and what to store.
pub fn generate(
    tenant_id: &str,
    scopes: Vec<String>,
    created_at: String,
) -> Result<(String, ApiKey), String> {
    check_tenant(tenant_id)?;
    let mut secret = [0u8; 43];
    let mut random = [0u8; 64];
    getrandom::fill(&mut random).map_err(|e| format!("the OS random source failed: {e}"))?;
    // Rejection-free mapping of 64 random bytes onto 43 base62 digits: take the bytes as
    // a big number and read its base-62 digits (512 bits of input for 256 bits of key).
    let mut number = random.to_vec();
    for digit in secret.iter_mut() {
        let mut rem: u32 = 0;
        for byte in number.iter_mut() {
            let acc = (rem << 8) | *byte as u32;
            *byte = (acc / 62) as u8;
            rem = acc % 62;
        }
        *digit = BASE62[rem as usize];
    }
    let raw = format!(
        "{KEY_PREFIX}{}",
        std::str::from_utf8(&secret).expect("base62 is ascii")
    );
    let mut id_bytes = [0u8; 8];
    getrandom::fill(&mut id_bytes).map_err(|e| format!("the OS random source failed: {e}"))?;
    let key = ApiKey {
        key_id: format!("key_{}", const_hex::encode(id_bytes)),
        tenant_id: tenant_id.to_string(),
        key_hash: hash_key(&raw),
        key_prefix: raw[..KEY_PREFIX.len() + 6].to_string(),
        scopes,
        created_at,
        revoked_at: None,
    };
    Ok((raw, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_well_formed_and_only_hashed() {
        let (a, ka) = generate("t", vec!["read".into()], "now".into()).unwrap();
        let (b, _) = generate("t", vec!["read".into()], "now".into()).unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_PREFIX) && a.len() == KEY_PREFIX.len() + 43);
        assert!(
            a[KEY_PREFIX.len()..]
                .bytes()
                .all(|c| c.is_ascii_alphanumeric())
        );
        assert_eq!(ka.key_hash, hash_key(&a));
        assert!(!ka.key_hash.contains(&a[KEY_PREFIX.len()..]));
    }

    #[test]
    fn scopes_parse() {
        assert_eq!(parse_scopes("write, read").unwrap(), vec!["read", "write"]);
        assert_eq!(
            parse_scopes("write,admin,read").unwrap(),
            vec!["admin", "read", "write"]
        );
        assert!(parse_scopes("root").is_err());
        assert!(parse_scopes("").is_err());
        assert!(check_tenant("acme-prod").is_ok());
        assert!(check_tenant("acme prod").is_err());
    }
}
