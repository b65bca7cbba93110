//! File names that come from the network are labels, never paths.
//!
//! A tracker entry may carry any string at all. [`safe_file_name`] turns it into a single path
//! component that cannot climb out of, or point outside, the leecher's output folder.

use crate::FileId;

/// Longest name we write, in bytes (file systems commonly allow 255; the `.part` name, which adds
/// 29 bytes, must still fit).
pub const MAX_LOCAL_NAME: usize = 200;

/// How every `.part` name begins; no final name does (see [`safe_file_name`]), so a download's
/// `.part` can never be another download's final name.
pub const PART_PREFIX: &str = ".shoal-";

/// A name safe to join onto the output folder: the last path component of `name`, without control
/// characters, never empty, `.` or `..`, never starting with [`PART_PREFIX`] (a `_` goes in front),
/// and at most [`MAX_LOCAL_NAME`] bytes. Falls back to `file-<id prefix>` when nothing usable is
/// left.
pub fn safe_file_name(name: &str, id: &FileId) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = last.chars().filter(|c| !unprintable(*c)).collect();
    let mut cleaned = cleaned.trim().to_string();
    if cleaned.starts_with(PART_PREFIX) {
        cleaned.insert(0, '_');
    }
    if cleaned.len() > MAX_LOCAL_NAME {
        let mut end = MAX_LOCAL_NAME;
        while !cleaned.is_char_boundary(end) {
            end -= 1;
        }
        cleaned.truncate(end);
    }
    if cleaned.is_empty() || cleaned.chars().all(|c| c == '.') {
        return format!("file-{}", id.short());
    }
    cleaned
}

/// A name from the network made fit for one line of a terminal: control characters (newlines,
/// escape sequences) and bidirectional overrides become `?`. Unlike [`safe_file_name`] it keeps
/// the whole name.
pub fn printable(name: &str) -> String {
    name.chars()
        .map(|c| if unprintable(c) { '?' } else { c })
        .collect()
}

/// Control characters, the bidirectional overrides, isolates and marks (U+202A-U+202E,
/// U+2066-U+2069, U+200E, U+200F, U+061C), which make a name display as another (`exe.txt` shown
/// as `txt.exe`), the line and paragraph separators (U+2028, U+2029), which break a line, and
/// the invisible zero-width space, word joiner and byte-order mark (U+200B, U+2060, U+FEFF), which
/// make two names look alike. The zero-width joiner and non-joiner (U+200C, U+200D) stay: Persian
/// and Indic names and emoji need them.
pub fn unprintable(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
                | '\u{200B}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{061C}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{2060}'
                | '\u{FEFF}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_become_one_component() {
        let id = FileId([0x12; 32]);
        let cases = [
            ("../../etc/passwd", "passwd"),
            ("/abs/path", "path"),
            ("a/b", "b"),
            ("..", "file-12121212"),
            (".", "file-12121212"),
            ("", "file-12121212"),
            ("dir/", "file-12121212"),
            ("a\\..\\b", "b"),
            ("bad\u{0}na\u{7}me\n", "badname"),
            ("evil\u{202E}txt.exe\u{2066}", "eviltxt.exe"),
            ("notes.pdf", "notes.pdf"),
            ("...", "file-12121212"),
            (
                ".shoal-0123456789abcdef-x.part",
                "_.shoal-0123456789abcdef-x.part",
            ),
            (".shoal", ".shoal"),
        ];
        for (input, want) in cases {
            assert_eq!(safe_file_name(input, &id), want, "input {input:?}");
        }
        let long = "é".repeat(500);
        let out = safe_file_name(&long, &id);
        assert!(out.len() <= MAX_LOCAL_NAME && !out.is_empty());
    }

    #[test]
    fn printable_names_stay_on_one_line() {
        assert_eq!(printable("a\nb\u{1b}[31mc"), "a?b?[31mc");
        assert_eq!(printable("plain name.iso"), "plain name.iso");
        let invisible = "\u{200E}\u{200F}\u{061C}\u{2028}\u{2029}\u{200B}\u{2060}\u{FEFF}";
        assert_eq!(printable(&format!("a{invisible}b")), "a????????b");
        // Joiners shape Persian words and emoji: they stay.
        for name in [
            "\u{0645}\u{06CC}\u{200C}\u{062E}\u{0648}\u{0627}\u{0647}\u{0645}.txt",
            "\u{1F469}\u{200D}\u{1F4BB}.png",
        ] {
            assert_eq!(printable(name), name);
        }
    }
}
