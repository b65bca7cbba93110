//! Finding a file by name or id prefix, and the sentence (with "did you mean") when none matches.

use shoal_proto::tracker::{Filter, ListEntry};
use shoal_proto::IdPrefix;

use super::*;

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(
        "the tracker knows no file named or with id {query:?}{}; `leecher --list` shows what it has",
        .suggestion.as_deref().map(|s| format!(" (did you mean {}?)", shoal_proto::names::printable(s))).unwrap_or_default()
    )]
    NotFound {
        query: String,
        /// A known name that differs only in case, or by a letter or two.
        suggestion: Option<String>,
    },
    #[error("id prefixes need at least {} hex characters; {query:?} is the start of:\n{}", IdPrefix::MIN_LEN, list_lines(.matches))]
    ShortPrefix {
        query: String,
        matches: Vec<ListEntry>,
    },
    #[error("{query:?} matches {} files; give more of the id:\n{}", .matches.len(), list_lines(.matches))]
    Ambiguous {
        query: String,
        matches: Vec<ListEntry>,
    },
    #[error(transparent)]
    Tracker(#[from] TrackerError),
}

fn list_lines(entries: &[ListEntry]) -> String {
    entries
        .iter()
        .map(|e| {
            format!(
                "  {} {} {}",
                e.id,
                e.size,
                shoal_proto::names::printable(&e.name)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Turns what the user typed (an id, a unique id prefix of 8+ hex characters, or a name) into one
/// file the tracker knows.
pub async fn resolve(client: &TrackerClient, query: &str) -> Result<ListEntry, ResolveError> {
    if let Some(prefix) = IdPrefix::parse(query) {
        let found = client.list(Filter::IdPrefix(prefix)).await?;
        if !found.is_empty() {
            return one(query, found);
        }
    }
    let found = client.list(Filter::NameIs(query.to_string())).await?;
    if found.is_empty() {
        return Err(not_found(client, query).await);
    }
    // The listing shows the name most seeders use; the same bytes may be shared under several.
    // Asked for by one of its names, the file keeps the name asked for.
    one(query, found).map(|entry| ListEntry {
        name: query.to_string(),
        ..entry
    })
}

/// Listed at most, to explain a miss: enough for any tracker a person browses, and bounded so
/// that a typo never walks a huge tracker.
const EXPLAIN_ENTRIES: usize = 20_000;
const EXPLAIN_PAGES: usize = 1_000;

/// Why `query` found nothing: an id prefix too short to be looked up, or a name close to one the
/// tracker knows. Only this path lists the tracker's files.
async fn not_found(client: &TrackerClient, query: &str) -> ResolveError {
    let known = client
        .list_bounded(Filter::All, EXPLAIN_ENTRIES, EXPLAIN_PAGES)
        .await
        .unwrap_or_default();
    if !query.is_empty()
        && query.len() < IdPrefix::MIN_LEN
        && query.bytes().all(|c| c.is_ascii_hexdigit())
    {
        let start = query.to_ascii_lowercase();
        let matches: Vec<ListEntry> = known
            .iter()
            .filter(|e| e.id.to_hex().starts_with(&start))
            .cloned()
            .collect();
        if !matches.is_empty() {
            return ResolveError::ShortPrefix {
                query: query.to_string(),
                matches,
            };
        }
    }
    ResolveError::NotFound {
        query: query.to_string(),
        suggestion: closest_name(query, known.iter().map(|e| e.name.as_str())).map(str::to_string),
    }
}

/// The known name a person most likely meant: one equal but for case, else the nearest within a
/// few edits (a quarter of the name's length, 1 to 3), the first in order among equals.
pub(super) fn closest_name<'a>(
    query: &str,
    names: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    let want = query.to_lowercase();
    let most = (want.chars().count() / 4).clamp(1, 3);
    names
        .filter_map(|n| {
            let d = strsim::damerau_levenshtein(&want, &n.to_lowercase());
            (d <= most).then_some((d, n))
        })
        .min()
        .map(|(_, n)| n)
}

fn one(query: &str, mut found: Vec<ListEntry>) -> Result<ListEntry, ResolveError> {
    if found.len() == 1 {
        Ok(found.remove(0))
    } else {
        Err(ResolveError::Ambiguous {
            query: query.to_string(),
            matches: found,
        })
    }
}
