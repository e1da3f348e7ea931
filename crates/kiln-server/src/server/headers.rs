//! The security headers every answer carries. API answers are data, never a page: their policy
//! allows nothing and no framing. The run page sets its own policy
//! ([`page_policy`]), which allows exactly its inline script and style (by hash) and requests
//! to this server; the layers below only add what a handler did not set.

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use tower_http::set_header::SetResponseHeaderLayer;

/// The policy of every answer but the run page.
const API_POLICY: &str = "default-src 'none'; frame-ancestors 'none'";

/// `router` with the security headers on every answer.
pub fn secure<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    let fixed = [
        (header::CONTENT_SECURITY_POLICY, API_POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ];
    fixed.into_iter().fold(router, |router, (name, value): (HeaderName, &'static str)| {
        router.layer(SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value)))
    })
}

/// The run page's policy: its one inline `<script>` and `<style>` by hash, requests to this
/// server only, no framing, no forms, no base URL.
pub fn page_policy(page: &str) -> HeaderValue {
    let hash = |tag: &str| {
        let open = format!("<{tag}>");
        let close = format!("</{tag}>");
        let body = page
            .split_once(&open)
            .and_then(|(_, rest)| rest.split_once(&close))
            .map_or("", |(body, _)| body);
        let digest = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body));
        format!("'sha256-{digest}'")
    };
    let policy = format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; \
         frame-ancestors 'none'; form-action 'none'; base-uri 'none'",
        hash("script"),
        hash("style")
    );
    HeaderValue::from_str(&policy).expect("a policy of ASCII text and base64 is a header value")
}
