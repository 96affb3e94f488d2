//! The one error shape for configuration files: which field, and what is wrong with it.
//! The topology and the node configuration both report through it, so an operator reads
//! every problem the same way: `nodes[3].layer: must be in 1..=3`.

use core::fmt;

/// A problem in a configuration file, naming the offending field (empty for a syntax
/// error, whose message carries line and column).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub problem: String,
}

impl FieldError {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// Always one line: control characters a file's own values bring into a message (a
/// quoted address with a newline in it) are shown escaped (`\n`), never written raw.
impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.field.is_empty() {
            write_escaped(f, &self.field)?;
            f.write_str(": ")?;
        }
        write_escaped(f, &self.problem)
    }
}

fn write_escaped(f: &mut fmt::Formatter<'_>, text: &str) -> fmt::Result {
    for c in text.chars() {
        if c.is_control() {
            write!(f, "{}", c.escape_default())?;
        } else {
            write!(f, "{c}")?;
        }
    }
    Ok(())
}

impl std::error::Error for FieldError {}

/// Parses a TOML document into `T`, naming the field a problem is in (`nodes[3]` for a
/// missing `epoch_keys` there) rather than only a line.
pub fn from_toml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, FieldError> {
    let de = toml::Deserializer::parse(text).map_err(|e| FieldError::new("", one_line(&e)))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { String::new() } else { path };
        FieldError::new(field, one_line(e.inner()))
    })
}

/// A TOML error on one line: its message, then where (`line 18, column 1`), without the
/// quoted source lines the TOML crate draws under it.
fn one_line(e: &toml::de::Error) -> String {
    let text = e.to_string();
    let message = text
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("invalid TOML");
    match text.lines().next().and_then(|l| l.split_once(" at ")) {
        Some((_, place)) if !text.lines().next().unwrap_or("").contains(message) => {
            format!("{message} ({place})")
        }
        _ => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing `node.toml`: `metrics = "127.0.0.\\\n"` quoted its newline raw.
    #[test]
    fn a_message_stays_on_one_line_whatever_the_file_quoted() {
        let e = FieldError::new(
            "metrics",
            "`127.0.0.\\\n\t` is not an IP:port socket address",
        );
        assert_eq!(
            e.to_string(),
            "metrics: `127.0.0.\\\\n\\t` is not an IP:port socket address"
        );
        assert_eq!(FieldError::new("", "plain").to_string(), "plain");
    }
}
