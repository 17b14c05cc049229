//! The web console at `/console` (issue 16): browse, tail and verify a tenant's log in the
//! browser with a read key. Four static files compiled into the binary (no CDN, nothing
//! fetched at run time), served the same by `serve` and `gateway`:
//! - `index.html`, `console.css`;
//! - `console.js`: sign-in (the key in the tab's session storage, sent as a bearer token;
//!   no cookie), events with fact0's filters and cursor paging, the live tail (the SSE
//!   stream read with `fetch`, which can send the key), export of the current filter
//!   (JSONL, CSV) and of the evidence pack;
//! - `verify.js`: what the browser checks itself with WebCrypto — a record's hash from its
//!   JCS form, the checkpoint's Ed25519 signature against the log key (pinned by the user,
//!   or the one served), the inclusion proof to the signed root, and a whole chain's hashes,
//!   links and Merkle root.
//!
//! The pages carry a strict Content-Security-Policy: scripts and styles from this origin
//! only (no inline script), requests to this origin only, no framing.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const VERIFY: &str = include_str!("console/verify.js");
const STYLE: &str = include_str!("console/console.css");

/// What a browser may do with these pages: load this origin's scripts and styles, talk to
/// this origin, nothing else (no inline script, no plugin, no frame around them).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The console's routes (merged into the REST router).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/console",
            get(|| async { asset(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/console/",
            get(|| async { Redirect::permanent("/console") }),
        )
        .route(
            "/console/console.js",
            get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/console/verify.js",
            get(|| async { asset(VERIFY, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/console/console.css",
            get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
        )
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
            // the binary is the version: a browser revalidates on every load
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_console_is_served_with_its_policy_and_refers_only_to_its_own_files() {
        use tower::ServiceExt;
        let app: Router = routes();
        for (path, kind) in [
            ("/console", "text/html"),
            ("/console/console.js", "text/javascript"),
            ("/console/verify.js", "text/javascript"),
            ("/console/console.css", "text/css"),
        ] {
            let resp = app
                .clone()
                .oneshot(
                    axum::http::Request::get(path)
                        .body(axum::body::Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "{path}");
            let headers = resp.headers();
            assert!(
                headers[header::CONTENT_TYPE]
                    .to_str()
                    .unwrap()
                    .starts_with(kind)
            );
            assert_eq!(headers[header::CONTENT_SECURITY_POLICY], CSP);
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        }
        // every script and style the page loads is one of the routes above, and nothing
        // comes from elsewhere
        for reference in INDEX.split(['"', '\'']).filter(|s| s.starts_with('/')) {
            assert!(
                [
                    "/console/console.js",
                    "/console/verify.js",
                    "/console/console.css"
                ]
                .contains(&reference),
                "{reference}"
            );
        }
        assert!(!INDEX.contains("http://") && !INDEX.contains("https://"));
        assert!(
            !INDEX.contains("<script>"),
            "no inline script (the policy refuses it)"
        );
        assert!(
            !SCRIPT.contains("innerHTML"),
            "data is shown as text, never as HTML"
        );
    }
}
