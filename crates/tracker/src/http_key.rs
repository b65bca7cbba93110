//! The status page of a private swarm's tracker: the page, the JSON API and `/metrics` answer
//! only a request that carries the page key derived from the swarm's secret, as `?key=KEY` (the
//! URL the tracker prints at start) or as `Authorization: Bearer KEY` (for a Prometheus scraper).
//! The stylesheet, script and icon carry no data and are served to anyone.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Paths that hold no data about the swarm.
const PUBLIC: [&str; 3] = ["/app.css", "/app.js", "/icon.svg"];

/// Passes a request with the right key (or any request when there is no key) to `next`.
pub async fn require_key(
    State(key): State<Option<Arc<str>>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(key) = key else {
        return next.run(request).await;
    };
    if PUBLIC.contains(&request.uri().path()) || carries(&request, &key) {
        return next.run(request).await;
    }
    (
        StatusCode::FORBIDDEN,
        "this tracker is of a private swarm: open the URL with ?key= that it printed at start\n",
    )
        .into_response()
}

fn carries(request: &Request, key: &str) -> bool {
    let in_query = request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.strip_prefix("key="))
        .any(|given| same(given, key));
    let in_header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| same(given.trim(), key));
    in_query || in_header
}

/// Equality whose time does not depend on where the first difference is.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_keys_only() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "abcd"));
        assert!(!same("", "a"));
    }
}
