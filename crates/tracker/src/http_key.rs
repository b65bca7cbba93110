//! The status page of a private swarm's tracker: every path, its stylesheet, script and icon
//! included, answers only a request that carries the page key derived from the swarm's secret,
//! as `?key=KEY` (the URL the tracker prints at start) or as `Authorization: Bearer KEY` (for a
//! Prometheus scraper). Without it every path gets the same plain `404 not found`, so the page
//! tells an outsider nothing, not even that a tracker is there.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Every link the page makes to the tracker: each must carry the key.
const LINKED: [&str; 6] = [
    "/app.css",
    "/app.js",
    "/icon.svg",
    "/api/swarm",
    "/api/stats",
    "/metrics",
];

/// Passes a request with the right key (or any request when there is no key) to `next`. No
/// answer names the page in a `Referer` (the key is in its URL).
pub async fn require_key(
    State(key): State<Option<Arc<str>>>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = match key {
        Some(key) if !carries(&request, &key) => {
            (StatusCode::NOT_FOUND, "not found\n").into_response()
        }
        _ => next.run(request).await,
    };
    response.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `page` with `key` passed on in every link to the tracker, which would otherwise get 404.
/// The key is hex digits (`Keys::page_token`), safe in a URL and an HTML attribute as it is.
pub fn keyed_page(page: &str, key: &str) -> String {
    assert!(
        key.bytes().all(|b| b.is_ascii_alphanumeric()),
        "a page key is hex digits"
    );
    LINKED.iter().fold(page.to_owned(), |page, path| {
        page.replace(&format!("\"{path}\""), &format!("\"{path}?key={key}\""))
    })
}

/// The warning for a private swarm's page served at `at`, unless only this machine can reach it:
/// plain HTTP carries the key and every name in clear.
pub fn in_clear(at: SocketAddr) -> Option<String> {
    (!at.ip().is_loopback()).then(|| {
        format!(
            "the status page on {at} is unencrypted HTTP: anyone on the network path can read \
             its key and the swarm's names; bind it to 127.0.0.1 and reach it through an SSH \
             tunnel (ssh -L {port}:127.0.0.1:{port} THIS-HOST)",
            port = at.port()
        )
    })
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

    #[test]
    fn a_page_reachable_from_elsewhere_is_warned_about() {
        for local in ["127.0.0.1:8080", "[::1]:8080", "127.0.0.2:1"] {
            assert_eq!(in_clear(local.parse().unwrap()), None, "{local}");
        }
        for open in ["0.0.0.0:8080", "[::]:8080", "192.168.1.5:8080"] {
            let w = in_clear(open.parse().unwrap()).unwrap_or_else(|| panic!("{open}"));
            assert!(w.contains("unencrypted") && w.contains("127.0.0.1"), "{w}");
        }
    }

    #[test]
    fn every_link_of_the_page_carries_the_key() {
        let page = keyed_page(crate::http::INDEX_HTML, "00ff");
        for path in LINKED {
            assert!(page.contains(&format!("\"{path}?key=00ff\"")), "{path}");
        }
        // No link to the tracker is left without it.
        for attr in ["href=\"/", "src=\"/"] {
            for (at, _) in page.match_indices(attr) {
                let link = &page[at..page[at..].find('>').map_or(page.len(), |e| at + e)];
                assert!(link.contains("?key=00ff"), "{link}");
            }
        }
    }
}
