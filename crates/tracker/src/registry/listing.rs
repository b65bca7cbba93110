//! Listings: pages of the files matching a filter, in the order of the name index.

use shoal_proto::tracker::{encoded_len, Filter, ListEntry, ResponseBody, MAX_DATAGRAM};
use shoal_proto::{FileId, IdPrefix};

use super::{FileRecord, Registry};

impl Registry {
    /// One page of the files matching `filter`, in listing order, and how many files the filter
    /// was tested against (the cost of the request).
    pub fn list(&self, filter: &Filter, cursor: u32) -> (ResponseBody, usize) {
        let cursor = cursor as usize;
        let mut entries = Vec::new();
        let mut used = 32;
        let mut next = None;
        let matcher = Matcher::new(filter);
        let mut tested = 0;
        let mut found = 0;
        // Without a filter the cursor is a position in the index: skip there directly.
        let start = if matcher.is_all() { cursor } else { 0 };
        for (name, id) in self.by_name.iter().skip(start) {
            let record = &self.files[id];
            if !matcher.is_all() {
                tested += 1;
                if !matcher.matches(id, record) {
                    continue;
                }
                found += 1;
                if found <= cursor {
                    continue;
                }
            }
            let e = ListEntry {
                id: *id,
                size: record.size,
                seeders: record.seeders() as u32,
                leechers: record.leechers() as u32,
                name: name.to_string(),
            };
            let n = encoded_len(&e);
            if used + n > MAX_DATAGRAM - 16 {
                next = Some((cursor + entries.len()) as u32);
                break;
            }
            used += n;
            entries.push(e);
        }
        (ResponseBody::Files { entries, next }, tested)
    }

    /// Every file matching `filter`, in listing order.
    pub fn matching(&self, filter: &Filter) -> Vec<ListEntry> {
        let matcher = Matcher::new(filter);
        self.files()
            .filter(|(id, r)| matcher.matches(id, r))
            .map(|(id, r)| ListEntry {
                id: *id,
                size: r.size,
                seeders: r.seeders() as u32,
                leechers: r.leechers() as u32,
                name: r.display().to_string(),
            })
            .collect()
    }
}

/// A listing filter, prepared once per request.
enum Matcher<'a> {
    All,
    Prefix(&'a IdPrefix),
    NameIs(&'a str),
    /// Lowercased; ASCII-only patterns are matched without allocating.
    Contains(String),
}

impl<'a> Matcher<'a> {
    fn new(filter: &'a Filter) -> Matcher<'a> {
        match filter {
            Filter::All => Matcher::All,
            Filter::NameContains(s) if s.is_empty() => Matcher::All,
            Filter::NameContains(s) => Matcher::Contains(s.to_lowercase()),
            Filter::NameIs(n) => Matcher::NameIs(n),
            Filter::IdPrefix(p) => Matcher::Prefix(p),
        }
    }

    fn is_all(&self) -> bool {
        matches!(self, Matcher::All)
    }

    fn matches(&self, id: &FileId, record: &FileRecord) -> bool {
        match self {
            Matcher::All => true,
            Matcher::Prefix(p) => prefix_matches(p.as_str(), id),
            Matcher::NameIs(n) => record.names().any(|x| x == *n),
            Matcher::Contains(pat) if pat.is_ascii() => record.names().any(|x| {
                x.as_bytes()
                    .windows(pat.len())
                    .any(|w| w.eq_ignore_ascii_case(pat.as_bytes()))
            }),
            Matcher::Contains(pat) => record
                .names()
                .any(|x| x.to_lowercase().contains(pat.as_str())),
        }
    }
}

/// Whether `id`'s hex form starts with `prefix`, without building the hex string. Prefixes from
/// the network are not validated by the decoder: anything that is not hex matches nothing.
pub(super) fn prefix_matches(prefix: &str, id: &FileId) -> bool {
    if prefix.len() > 64 {
        return false;
    }
    prefix.bytes().enumerate().all(|(i, c)| {
        let nibble = (id.0[i / 2] >> if i % 2 == 0 { 4 } else { 0 }) & 15;
        (c as char).to_digit(16) == Some(u32::from(nibble))
    })
}
