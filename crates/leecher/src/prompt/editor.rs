//! Line editing for the prompt: rustyline with history, and tab completion of the command word,
//! of the names the tracker knows (for `get`, `list` and `stop`) and of local paths (for `share`
//! and `get`'s folder).

use std::sync::{Arc, Mutex};

use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Helper};

use super::command::{quote, split, COMMANDS};

/// The names completion offers, kept fresh by the session (the completer cannot wait for the
/// network while a person presses Tab).
pub type Names = Arc<Mutex<Vec<String>>>;

pub struct PromptHelper {
    names: Names,
    paths: FilenameCompleter,
}

impl PromptHelper {
    pub fn new(names: Names) -> PromptHelper {
        PromptHelper {
            names,
            paths: FilenameCompleter::new(),
        }
    }
}

/// Where the word under the cursor starts, and how many words come before it.
fn current_word(line: &str) -> (usize, usize) {
    let (mut start, mut count, mut quote, mut escaped) = (0, 0, None, false);
    let mut in_word = false;
    for (i, c) in line.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match (quote, c) {
            (_, '\\') if quote != Some('\'') => escaped = true,
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, c) if c.is_whitespace() => {
                if in_word {
                    count += 1;
                }
                in_word = false;
                start = i + c.len_utf8();
                continue;
            }
            (None, _) => {}
        }
        in_word = true;
    }
    (start, count)
}

impl Completer for PromptHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let (start, index) = current_word(before);
        let partial = &before[start..];
        // What the word says so far, quotes and escapes undone (an open quote is closed here).
        let typed = split(partial)
            .or_else(|_| split(&format!("{partial}\"")))
            .ok()
            .and_then(|w| w.into_iter().next())
            .unwrap_or_default();
        let command = split(before)
            .ok()
            .and_then(|w| w.into_iter().next())
            .unwrap_or_default();
        let pairs = |words: Vec<String>| {
            words
                .into_iter()
                .map(|w| Pair {
                    replacement: quote(&w),
                    display: w,
                })
                .collect()
        };
        Ok(match (index, command.as_str()) {
            (0, _) => (
                start,
                pairs(
                    COMMANDS
                        .iter()
                        .filter(|c| c.starts_with(&typed))
                        .map(|c| format!("{c} "))
                        .collect(),
                ),
            ),
            (1, "get" | "list" | "ls" | "stop") => {
                let mut names: Vec<String> = self
                    .names
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|n| n.starts_with(&typed))
                    .cloned()
                    .collect();
                names.sort();
                names.dedup();
                (start, pairs(names))
            }
            (1, "share") | (2, "get") => self.paths.complete(line, pos, ctx)?,
            _ => (pos, Vec::new()),
        })
    }
}

impl Hinter for PromptHelper {
    type Hint = String;
}

impl Highlighter for PromptHelper {}

impl Validator for PromptHelper {}

impl Helper for PromptHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_word_under_the_cursor_is_found_past_quotes() {
        assert_eq!(current_word(""), (0, 0));
        assert_eq!(current_word("ge"), (0, 0));
        assert_eq!(current_word("get "), (4, 1));
        assert_eq!(current_word("get Bi"), (4, 1));
        assert_eq!(current_word("get \"My Fi"), (4, 1));
        assert_eq!(current_word("get \"My File\" /tm"), (14, 2));
        assert_eq!(current_word("get My\\ File /tm"), (13, 2));
    }
}
