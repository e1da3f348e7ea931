//! The security headers every answer carries. API answers are data, never a page: their policy
//! allows nothing and no framing. The web app's page sets its own policy
//! ([`super::app::APP_POLICY`]: scripts, styles and requests from this server only); the layers
//! below only add what a handler did not set.

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use tower_http::set_header::SetResponseHeaderLayer;

/// The policy of every answer but the web app's page.
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
