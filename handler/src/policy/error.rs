//! What goes wrong with a policy file, and where: the line comes from the span `toml` gives, the
//! dotted key from the path `serde_path_to_error` records (or, for a value that parsed but does
//! not make sense, from where the validation stood).

use std::fmt;
use std::ops::Range;

use serde_path_to_error::Segment as SerdeSegment;

/// Why a policy could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read the policy file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{source_name}: {}{message}", location(*.line, .key.as_deref()))]
    Invalid {
        source_name: String,
        line: Option<usize>,
        /// The dotted key, e.g. `rules."key.expiry".warn_days` or `exemptions[0]`.
        key: Option<String>,
        message: String,
    },
}

fn location(line: Option<usize>, key: Option<&str>) -> String {
    match (line, key) {
        (Some(line), Some(key)) => format!("line {line}, key `{key}`: "),
        (Some(line), None) => format!("line {line}: "),
        (None, _) => String::new(),
    }
}

/// A key in the policy file, written as TOML writes it: `rules."key.expiry".warn_days`,
/// `exemptions[1].reason`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct KeyPath(Vec<Segment>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

impl KeyPath {
    /// The path one table key further down.
    pub(super) fn key(&self, key: impl fmt::Display) -> Self {
        let mut path = self.clone();
        path.0.push(Segment::Key(key.to_string()));
        path
    }

    /// The path to one element of an array of tables.
    pub(super) fn index(&self, index: usize) -> Self {
        let mut path = self.clone();
        path.0.push(Segment::Index(index));
        path
    }

    /// The keys of a path that `serde_path_to_error` recorded. `toml::Spanned` shows up in it as
    /// an extra private key, which the file never holds, so it is left out.
    fn from_serde(path: &serde_path_to_error::Path) -> Self {
        let segments = path.iter().filter_map(|segment| match segment {
            SerdeSegment::Map { key } if key.starts_with("$__serde_spanned_private") => None,
            SerdeSegment::Map { key } | SerdeSegment::Enum { variant: key } => {
                Some(Segment::Key(key.clone()))
            }
            SerdeSegment::Seq { index } => Some(Segment::Index(*index)),
            SerdeSegment::Unknown => None,
        });
        KeyPath(segments.collect())
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (position, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Index(index) => write!(f, "[{index}]")?,
                Segment::Key(key) => {
                    if position > 0 {
                        f.write_str(".")?;
                    }
                    let bare = !key.is_empty()
                        && key
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                    if bare {
                        f.write_str(key)?;
                    } else {
                        write!(f, "\"{}\"", key.escape_default())?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// A value that parsed but does not make sense, found before the file's name is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Invalid {
    span: Range<usize>,
    key: KeyPath,
    message: String,
}

impl Invalid {
    /// The value at `span`, written under `key`, is wrong for `message`'s reason.
    pub(super) fn new(span: Range<usize>, key: KeyPath, message: impl Into<String>) -> Self {
        Self {
            span,
            key,
            message: message.into(),
        }
    }

    /// The error users see, naming the file, line and key.
    pub(super) fn into_error(self, text: &str, source_name: &str) -> PolicyError {
        invalid(
            text,
            source_name,
            Some(self.span.start),
            &self.key,
            &self.message,
        )
    }
}

/// A file that is no TOML, or whose TOML does not have the policy's shape.
pub(super) fn unparsable(
    error: &serde_path_to_error::Error<toml::de::Error>,
    text: &str,
    source_name: &str,
) -> PolicyError {
    let at = error.inner().span().map(|span| span.start);
    let key = KeyPath::from_serde(error.path());
    invalid(text, source_name, at, &key, error.inner().message())
}

/// A file that is no TOML at all.
pub(super) fn syntax(error: &toml::de::Error, text: &str, source_name: &str) -> PolicyError {
    let at = error.span().map(|span| span.start);
    invalid(text, source_name, at, &KeyPath::default(), error.message())
}

fn invalid(
    text: &str,
    source_name: &str,
    at: Option<usize>,
    key: &KeyPath,
    message: &str,
) -> PolicyError {
    let line = at.map(|offset| {
        let before = text.get(..offset.min(text.len())).unwrap_or(text);
        before.matches('\n').count() + 1
    });
    PolicyError::Invalid {
        source_name: source_name.to_owned(),
        line,
        key: (!key.0.is_empty()).then(|| key.to_string()),
        message: message.trim().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_written_as_toml_writes_them() {
        let path = KeyPath::default()
            .key("rules")
            .key("key.expiry")
            .key("warn_days");
        assert_eq!(path.to_string(), "rules.\"key.expiry\".warn_days");
        let path = KeyPath::default().key("exemptions").index(1).key("reason");
        assert_eq!(path.to_string(), "exemptions[1].reason");
        assert_eq!(
            KeyPath::default().key("a \"b\"").to_string(),
            "\"a \\\"b\\\"\""
        );
    }
}
