//! Every tenant's tree as a C2SP tlog-tiles log, so generic tlog clients (Go's
//! `sumdb/tlog`, `tlog_tiles`, witnesses and monitors built on them) can fetch it:
//!
//! - `GET /v1/tlog/<tenant>/checkpoint`: the tenant's latest checkpoint with the
//!   cosignatures collected for it (as `GET /v1/checkpoint`), not cached;
//! - `GET /v1/tlog/<tenant>/tile/<L>/<N>[.p/<W>]`: `W` (256 for a full tile) consecutive
//!   hashes of Merkle tree level `8·L`, starting at node `256·N`; level 0 holds the leaf
//!   hashes;
//! - `GET /v1/tlog/<tenant>/tile/entries/<N>[.p/<W>]`: the entry bundle of leaves
//!   `256·N …`: each entry is the 32 raw bytes of a record's `hash` (the leaf of
//!   DESIGN.md §2), prefixed with its length as a big-endian `u16`, so SHA-256(0x00 ‖
//!   entry) is the matching hash of the level-0 tile.
//!
//! Read scope, like the other proof routes, and a key reads its own tenant's log only:
//! any other tenant in the path is `404`, never `403` (DESIGN.md §4). A tile is a
//! function of the tree's first leaves only, so every tile and bundle, partial ones
//! included, is immutable once the log holds its last leaf: they are served with a
//! year-long `Cache-Control: private, …, immutable` (`private`: the answer depends on the
//! caller's key, so a shared cache must not hand it to callers without one). A tile past
//! the end of the log is `404 tile_not_found`; empty tiles do not exist.
//!
//! Nothing is stored for tiles: a level-0 tile and an entry bundle are one range read of
//! at most 256 chain rows (their hashes), a higher tile one read of at most 256 stored
//! nodes. The stores already keep the tree close to tile form (the fjall store keeps
//! nodes of level 8 and up only, about 2 per 256 leaves; SQLite every node; Scylla level
//! 3 and up), so storing tiles as well would add writes to the commit path for reads that
//! cost one store call each.
//!
//! tlog-tiles recommends an origin equal to the scheme-less URL prefix. A tenant's
//! origin is `<log name>/<tenant>` (`GET /v1/log/key`), so a log whose key is named
//! `<host>/v1/tlog` has exactly that: origin `<host>/v1/tlog/<tenant>`, prefix
//! `https://<host>/v1/tlog/<tenant>/`.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sealtrail_core::merkle::{self, NodeId};

use crate::AppState;
use crate::auth::{Authenticated, Caller, Read};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::tlog::{WITNESS_WAIT, log_size};

/// Hashes (or entries) in a full tile.
pub const TILE_WIDTH: u64 = 256;
/// Tree levels per tile level.
const TILE_HEIGHT: u32 = 8;
/// `Cache-Control` of tiles and entry bundles: immutable for a year, per caller.
const IMMUTABLE: &str = "private, max-age=31536000, immutable";

/// A parsed `tile/…` path (the part after `tile/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TilePath {
    /// `<L>/<N>[.p/<W>]`: hashes of tree level `8·level`.
    Hashes { level: u8, index: u64, width: u16 },
    /// `entries/<N>[.p/<W>]`: an entry bundle.
    Entries { index: u64, width: u16 },
}

impl TilePath {
    /// The tile's path after `tile/`, as the spec writes it (the inverse of [`parse`]).
    ///
    /// [`parse`]: TilePath::parse
    pub fn to_path(self) -> String {
        let (first, index, width) = match self {
            TilePath::Hashes {
                level,
                index,
                width,
            } => (level.to_string(), index, width),
            TilePath::Entries { index, width } => ("entries".to_string(), index, width),
        };
        let mut groups = vec![format!("{:03}", index % 1000)];
        let mut rest = index / 1000;
        while rest > 0 {
            groups.push(format!("x{:03}", rest % 1000));
            rest /= 1000;
        }
        groups.reverse();
        let mut out = format!("{first}/{}", groups.join("/"));
        if u64::from(width) != TILE_WIDTH {
            out.push_str(&format!(".p/{width}"));
        }
        out
    }

    /// Parses the path after `tile/`, strictly: `<L>` is 0–63 and `<W>` 1–255 without
    /// leading zeros, `<N>` in the canonical 3-digit groups (`x001/x234/067`).
    pub fn parse(path: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "{path:?} is not a tile path ({why}); tiles are tile/<L>/<N>[.p/<W>] and tile/entries/<N>[.p/<W>], e.g. tile/0/x001/x234/067.p/8 (C2SP tlog-tiles)"
            )
        };
        let segments: Vec<&str> = path.split('/').collect();
        let (first, rest) = segments.split_first().ok_or_else(|| bad("it is empty"))?;
        let mut rest: Vec<&str> = rest.to_vec();
        let decimal = |s: &str| {
            !s.is_empty()
                && s.len() <= 3
                && s.bytes().all(|b| b.is_ascii_digit())
                && (s == "0" || !s.starts_with('0'))
        };
        let mut width = TILE_WIDTH as u16;
        if rest.len() >= 2 && rest[rest.len() - 2].ends_with(".p") {
            let w = rest.pop().expect("two or more");
            if !decimal(w) {
                return Err(bad("the width is not a decimal number"));
            }
            width = w.parse().map_err(|_| bad("bad width"))?;
            if !(1..TILE_WIDTH as u16).contains(&width) {
                return Err(bad("a partial tile's width is 1 to 255"));
            }
            let last = rest.len() - 1;
            rest[last] = rest[last].strip_suffix(".p").expect("checked");
        }
        if rest.is_empty() || rest.len() > 7 {
            return Err(bad("the index has 1 to 7 groups of 3 digits"));
        }
        let mut index: u64 = 0;
        for (i, group) in rest.iter().enumerate() {
            let digits = if i + 1 < rest.len() {
                group
                    .strip_prefix('x')
                    .ok_or_else(|| bad("all but the last index group start with x"))?
            } else {
                group
            };
            if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("index groups are 3 digits"));
            }
            index = index
                .checked_mul(1000)
                .and_then(|n| n.checked_add(digits.parse::<u64>().expect("3 digits")))
                .ok_or_else(|| bad("the index does not fit 64 bits"))?;
        }
        let tile = if *first == "entries" {
            TilePath::Entries { index, width }
        } else {
            if !decimal(first) {
                return Err(bad("the level is not a decimal number"));
            }
            let level: u8 = first.parse().map_err(|_| bad("bad level"))?;
            if level > 63 {
                return Err(bad("the level is 0 to 63"));
            }
            TilePath::Hashes {
                level,
                index,
                width,
            }
        };
        // Leading zero groups (x000/001) name the same tile under another path.
        if tile.to_path() != path {
            return Err(bad("the index is not in canonical form"));
        }
        Ok(tile)
    }

    /// The log size this tile needs: its last element's last leaf. `None` if no tree of
    /// 2⁶⁴ leaves has it.
    pub fn needs_leaves(self) -> Option<u64> {
        let (level, index, width) = match self {
            TilePath::Hashes {
                level,
                index,
                width,
            } => (level, index, width),
            TilePath::Entries { index, width } => (0, index, width),
        };
        let shift = u32::from(level) * TILE_HEIGHT;
        if shift >= 64 {
            return None;
        }
        let nodes = index
            .checked_mul(TILE_WIDTH)?
            .checked_add(u64::from(width))?;
        nodes
            .checked_mul(1u64 << shift)
            .filter(|n| n >> shift == nodes)
    }
}

/// The caller's key must be a read key of `tenant`; another tenant's log does not exist
/// for it.
fn authorize(state: &AppState, caller: &Caller, tenant: &str) -> ApiResult<()> {
    if caller.tenant_id != tenant {
        return Err(ApiError::not_found(format!(
            "no log {tenant:?} for this key: a key reads its own tenant's log, /v1/tlog/{}/",
            caller.tenant_id
        )));
    }
    if state.tlog.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_configured",
            "this server has no verifiable log configured",
        ));
    }
    Ok(())
}

/// The tenant's latest checkpoint, with its cosignatures (C2SP tlog-tiles `checkpoint`).
#[utoipa::path(get, path = "/v1/tlog/{tenant}/checkpoint", tag = "Verifiable log", operation_id = "getTiledCheckpoint",
    params(("tenant" = String, Path, description = "the key's tenant")),
    responses((status = 200, content_type = "text/plain", body = String), (status = 401, body = ErrorBody),
        (status = 404, description = "another tenant's log (`not_found`), or no verifiable log is configured (`not_configured`)", body = ErrorBody)),
    security(("apiKey" = [])))]
pub async fn get_checkpoint(
    State(state): State<AppState>,
    Authenticated(caller, _): Authenticated<Read>,
    Path(tenant): Path<String>,
) -> ApiResult<Response> {
    authorize(&state, &caller, &tenant)?;
    let log = state.tlog.as_deref().expect("authorize checked");
    let note = log
        .latest_cosigned(state.store.as_ref(), &tenant, false, None, WITNESS_WAIT)
        .await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        note,
    )
        .into_response())
}

/// A hash tile or an entry bundle of the tenant's tree (C2SP tlog-tiles).
#[utoipa::path(get, path = "/v1/tlog/{tenant}/tile/{path}", tag = "Verifiable log", operation_id = "getTile",
    params(("tenant" = String, Path, description = "the key's tenant"),
        ("path" = String, Path, description = "`<L>/<N>[.p/<W>]` (hashes of tree level 8·L) or `entries/<N>[.p/<W>]` (entry bundle), C2SP tlog-tiles")),
    responses((status = 200, content_type = "application/octet-stream", body = crate::export::Binary), (status = 400, description = "not a tile path (`invalid_path`)", body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, description = "the log does not hold the tile's last leaf yet (`tile_not_found`), an entries tile of records retention removed (`pruned`), another tenant's log (`not_found`), or no verifiable log is configured (`not_configured`)", body = ErrorBody)),
    security(("apiKey" = [])))]
pub async fn get_tile(
    State(state): State<AppState>,
    Authenticated(caller, _): Authenticated<Read>,
    Path((tenant, path)): Path<(String, String)>,
) -> ApiResult<Response> {
    authorize(&state, &caller, &tenant)?;
    let tile = TilePath::parse(&path).map_err(|m| ApiError::bad_request("invalid_path", m))?;
    let size = log_size(state.store.as_ref(), &tenant).await?;
    if tile.needs_leaves().is_none_or(|n| n > size) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "tile_not_found",
            format!(
                "tile/{path} is past the end of the log ({size} records); fetch the checkpoint and the tiles its size needs"
            ),
        ));
    }
    let store = state.store.as_ref();
    // Retention (issue 15) removed the records before this one: their hashes stay in the
    // tree (hash tiles), their entries do not.
    let first_kept = store.retained_from(&tenant).await?;
    let removed = |index: u64| index * TILE_WIDTH + 1 < first_kept;
    let body = match tile {
        TilePath::Entries { index, .. } if removed(index) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "pruned",
                format!(
                    "tile/{path} holds records that retention removed (the log keeps records from {first_kept} on); their hashes are in the hash tiles"
                ),
            ));
        }
        TilePath::Hashes {
            level: 0,
            index,
            width,
        } if removed(index) => {
            let ids: Vec<NodeId> = (0..u64::from(width))
                .map(|i| NodeId::new(0, index * TILE_WIDTH + i))
                .collect();
            let nodes = crate::tlog::fetch(store, &tenant, ids.clone()).await?;
            ids.iter()
                .flat_map(|id| nodes.get(id).expect("fetched"))
                .collect()
        }
        TilePath::Entries { index, width } => {
            let mut out = Vec::with_capacity(usize::from(width) * 34);
            for leaf in leaves(store, &tenant, index, width).await? {
                out.extend_from_slice(&32u16.to_be_bytes());
                out.extend_from_slice(&leaf);
            }
            out
        }
        TilePath::Hashes {
            level: 0,
            index,
            width,
        } => leaves(store, &tenant, index, width)
            .await?
            .iter()
            .flat_map(|leaf| merkle::leaf_hash(leaf))
            .collect(),
        TilePath::Hashes {
            level,
            index,
            width,
        } => {
            let tree_level = (u32::from(level) * TILE_HEIGHT) as u8;
            let ids: Vec<NodeId> = (0..u64::from(width))
                .map(|i| NodeId::new(tree_level, index * TILE_WIDTH + i))
                .collect();
            let nodes = crate::tlog::fetch(store, &tenant, ids.clone()).await?;
            ids.iter()
                .flat_map(|id| nodes.get(id).expect("fetched"))
                .collect()
        }
    };
    let mut response = (StatusCode::OK, body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
    Ok(response)
}

/// The leaves (record hashes) `256·index …` `+ width`, which the log holds.
async fn leaves(
    store: &dyn sealtrail_store::Store,
    tenant: &str,
    index: u64,
    width: u16,
) -> ApiResult<Vec<merkle::Hash>> {
    let first = index * TILE_WIDTH;
    let rows = store.scan_chain(tenant, first, usize::from(width)).await?;
    if rows.len() != usize::from(width) {
        return Err(ApiError::internal(
            "reading the chain",
            format!(
                "{tenant:?}: {} of the {width} records after {first} read",
                rows.len()
            ),
        ));
    }
    rows.iter()
        .enumerate()
        .map(|(i, row)| {
            if row.sequence_number != first + i as u64 + 1 {
                return Err(ApiError::internal(
                    "reading the chain",
                    format!(
                        "{tenant:?}: record {} where {} was expected",
                        row.sequence_number,
                        first + i as u64 + 1
                    ),
                ));
            }
            merkle::record_leaf(&row.hash).ok_or_else(|| {
                ApiError::internal(
                    "reading the chain",
                    format!(
                        "{tenant:?}: record {} has a malformed hash",
                        row.sequence_number
                    ),
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_spec_examples_and_round_trips() {
        let cases = [
            (
                "0/000",
                TilePath::Hashes {
                    level: 0,
                    index: 0,
                    width: 256,
                },
            ),
            (
                "0/x001/x234/067",
                TilePath::Hashes {
                    level: 0,
                    index: 1_234_067,
                    width: 256,
                },
            ),
            (
                "1/x001/x234/067.p/8",
                TilePath::Hashes {
                    level: 1,
                    index: 1_234_067,
                    width: 8,
                },
            ),
            (
                "entries/001.p/255",
                TilePath::Entries {
                    index: 1,
                    width: 255,
                },
            ),
            (
                "63/999",
                TilePath::Hashes {
                    level: 63,
                    index: 999,
                    width: 256,
                },
            ),
            (
                "entries/x018/x446/x744/x073/x709/x551/615",
                TilePath::Entries {
                    index: u64::MAX,
                    width: 256,
                },
            ),
        ];
        for (path, tile) in cases {
            assert_eq!(TilePath::parse(path), Ok(tile), "{path}");
            assert_eq!(tile.to_path(), path);
        }
    }

    #[test]
    fn refuses_non_canonical_and_malformed_paths() {
        for path in [
            "",
            "0",
            "0/",
            "00/000",
            "64/000",
            "0/00",
            "0/0000",
            "0/x000/001",
            "0/001/002",
            "0/x001",
            "0/000.p/0",
            "0/000.p/256",
            "0/000.p/08",
            "0/000.p/",
            "data/000",
            "0/000/",
            "entries/x018/x446/x744/x073/x709/x551/616",
            "0/x1/000",
            "0/+01",
            "0/000.p/8/9",
            "-1/000",
            "0/x001/x002/x003/x004/x005/x006/x007/008",
        ] {
            assert!(TilePath::parse(path).is_err(), "{path:?} was accepted");
        }
    }

    #[test]
    fn agrees_with_tlog_tiles_on_paths() {
        // tlog_tiles writes Go's tile/<H>/<L>/<N>[.p/<W>]; C2SP drops the height.
        for (l, n, w) in [
            (0u8, 0u64, 256u32),
            (2, 1_234_067, 17),
            (5, 999_999, 1),
            (0, 1000, 255),
        ] {
            let theirs = tlog_tiles::tile::Tile::new(8, l, n, w, false).path();
            let ours = TilePath::Hashes {
                level: l,
                index: n,
                width: w as u16,
            }
            .to_path();
            assert_eq!(theirs, format!("tile/8/{ours}"));
        }
    }

    #[test]
    fn a_tile_needs_the_leaves_under_its_last_hash() {
        let t = |level, index, width| {
            TilePath::Hashes {
                level,
                index,
                width,
            }
            .needs_leaves()
        };
        assert_eq!(t(0, 0, 256), Some(256));
        assert_eq!(t(0, 1, 3), Some(259));
        assert_eq!(t(1, 0, 1), Some(256));
        assert_eq!(t(1, 1, 17), Some(273 * 256));
        assert_eq!(t(2, 0, 1), Some(65_536));
        assert_eq!(t(8, 0, 1), None);
        assert_eq!(t(7, 0, 255), Some(255 << 56));
        assert_eq!(t(7, 0, 256), None);
        assert_eq!(
            TilePath::Entries {
                index: u64::MAX,
                width: 256
            }
            .needs_leaves(),
            None
        );
    }
}
