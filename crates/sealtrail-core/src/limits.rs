//! Documented input limits. The README's "Limits" table lists the same numbers; change both.

/// Maximum length, in bytes, of an event `id`.
pub const MAX_ID_LEN: usize = 128;
/// Maximum length of `action`.
pub const MAX_ACTION_LEN: usize = 256;
/// Maximum length of `actor.id`, `resource.id`.
pub const MAX_OBJECT_ID_LEN: usize = 256;
/// Maximum length of `resource.type`.
pub const MAX_TYPE_LEN: usize = 128;
/// Maximum length of `actor.email`.
pub const MAX_EMAIL_LEN: usize = 320;
/// Maximum length of `resource.name`.
pub const MAX_NAME_LEN: usize = 1024;
/// Maximum nesting depth of a request body, counting the top-level object as 1
/// (so `metadata`'s own members may nest [`MAX_DEPTH`] − 2 levels deep).
pub const MAX_DEPTH: usize = 32;
/// Maximum size of `metadata` once serialized, in bytes.
pub const MAX_METADATA_BYTES: usize = 32 * 1024;
/// Largest magnitude an integer may have in I-JSON (RFC 7493 §2.2): 2^53 − 1.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;
/// Maximum number of events in one batch.
pub const MAX_BATCH_EVENTS: usize = 1000;
/// Maximum body size of `POST /v1/events`, in bytes.
pub const MAX_EVENT_BODY_BYTES: usize = 64 * 1024;
/// Maximum body size of `POST /v1/events/batch`, in bytes.
pub const MAX_BATCH_BODY_BYTES: usize = 4 * 1024 * 1024;
