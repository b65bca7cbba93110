//! What a person types at the prompt: the commands, how a line splits into words (quotes and
//! backslashes, so names with spaces can be typed), and the help text.

use std::path::PathBuf;

/// The words the prompt knows, for `help` and for completing the first word.
pub const COMMANDS: [&str; 7] = ["list", "get", "share", "status", "stop", "help", "exit"];

pub const HELP: &str = "\
list [PATTERN]        files the tracker knows (names containing PATTERN): id, size, seeders, name
get NAME-or-ID [DIR]  download in the background into DIR (default: the --out folder), then share it
share PATH            hash a file or a folder (one share) and share it
status                downloads in progress, files shared, their peers and upload rates
stop NAME             stop a download, or stop sharing a file
help                  this text
exit                  unregister from the tracker and leave (Ctrl-D too; Ctrl-C clears the line)
Tab completes commands, names the tracker knows and local paths; quote names with spaces.";

#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    List(Option<String>),
    Get {
        query: String,
        dir: Option<PathBuf>,
    },
    Share(PathBuf),
    Status,
    Stop(String),
    Help,
    Exit,
    /// An empty line.
    Nothing,
}

/// Why a line is not a command: one sentence for the person.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("usage: {0}")]
    Usage(&'static str),
    /// The word as the terminal may show it.
    #[error("unknown command {0:?}; type help for the list")]
    Unknown(String),
    #[error("a backslash ends the line")]
    TrailingBackslash,
    #[error("a quote is not closed")]
    OpenQuote,
}

/// Parses one line.
pub fn parse(line: &str) -> Result<Command, ParseError> {
    let words = split(line)?;
    let Some((first, rest)) = words.split_first() else {
        return Ok(Command::Nothing);
    };
    let arity = |min: usize, max: usize, usage: &'static str| {
        if rest.len() < min || rest.len() > max {
            Err(ParseError::Usage(usage))
        } else {
            Ok(())
        }
    };
    match first.as_str() {
        "list" | "ls" => {
            arity(0, 1, "list [PATTERN]")?;
            Ok(Command::List(rest.first().cloned()))
        }
        "get" => {
            arity(1, 2, "get NAME-or-ID [DIR]")?;
            Ok(Command::Get {
                query: rest[0].clone(),
                dir: rest.get(1).map(PathBuf::from),
            })
        }
        "share" => {
            arity(1, 1, "share PATH")?;
            Ok(Command::Share(PathBuf::from(&rest[0])))
        }
        "status" => {
            arity(0, 0, "status")?;
            Ok(Command::Status)
        }
        "stop" => {
            arity(1, 1, "stop NAME")?;
            Ok(Command::Stop(rest[0].clone()))
        }
        "help" | "?" => Ok(Command::Help),
        "exit" | "quit" => Ok(Command::Exit),
        other => Err(ParseError::Unknown(shoal_proto::names::printable(other))),
    }
}

/// Splits a line into words: whitespace separates, '…' and "…" group, a backslash takes the next
/// character as it is.
pub fn split(line: &str) -> Result<Vec<String>, ParseError> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (_, '\\') if quote != Some('\'') => {
                let next = chars.next().ok_or(ParseError::TrailingBackslash)?;
                word.get_or_insert_with(String::new).push(next);
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.get_or_insert_with(String::new).push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    if quote.is_some() {
        return Err(ParseError::OpenQuote);
    }
    words.extend(word);
    Ok(words)
}

/// A word as it must be typed to come back out of [`split`] unchanged.
pub fn quote(word: &str) -> String {
    if !word.is_empty()
        && !word
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\'))
    {
        return word.to_string();
    }
    let mut out = String::from("\"");
    for c in word.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_on_spaces_and_group_in_quotes() {
        assert_eq!(
            split(r#"get "My Film.mkv" 'a b'  c\ d"#).unwrap(),
            ["get", "My Film.mkv", "a b", "c d"]
        );
        assert_eq!(split("  ").unwrap(), Vec::<String>::new());
        assert_eq!(split(r#"get """#).unwrap(), ["get", ""]);
        assert!(split("get \"open").is_err());
        assert!(split("get a\\").is_err());
    }

    #[test]
    fn quoting_round_trips() {
        for w in [
            "plain.iso",
            "with space",
            "q\"uote",
            "back\\slash",
            "it's",
            "",
        ] {
            assert_eq!(split(&quote(w)).unwrap(), [w], "{w}");
        }
        assert_eq!(quote("plain.iso"), "plain.iso");
    }

    #[test]
    fn commands_parse_with_their_arguments() {
        assert_eq!(parse("list").unwrap(), Command::List(None));
        assert_eq!(
            parse("list iso").unwrap(),
            Command::List(Some("iso".into()))
        );
        assert_eq!(
            parse("get \"a b.iso\" /tmp").unwrap(),
            Command::Get {
                query: "a b.iso".into(),
                dir: Some("/tmp".into())
            }
        );
        assert_eq!(parse("share x").unwrap(), Command::Share("x".into()));
        assert_eq!(parse("stop x").unwrap(), Command::Stop("x".into()));
        assert_eq!(parse("").unwrap(), Command::Nothing);
        assert_eq!(parse("exit").unwrap(), Command::Exit);
        assert!(parse("get")
            .unwrap_err()
            .to_string()
            .starts_with("usage: get"));
        assert!(parse("status now").is_err());
        assert!(parse("fetch x")
            .unwrap_err()
            .to_string()
            .contains("unknown command"));
    }
}
