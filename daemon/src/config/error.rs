//! Errors of the config subsystem: each names file, line, column and key.

use std::fmt;
use std::path::PathBuf;

/// One problem in a spec file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// The file name as given to `parse_spec` (`<embedded default>` for the default).
    pub file: String,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    /// Dotted TOML path of the offending key, e.g. `topics.orders.partitions`,
    /// `brokers[1].id`; empty when the problem is not inside any key.
    pub key: String,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.key.is_empty() {
            write!(formatter, "{}: ", self.key)?;
        }
        formatter.write_str(&self.message)
    }
}

impl std::error::Error for SpecError {}

/// Every problem found in a spec file, in file order. Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecErrors(pub Vec<SpecError>);

impl SpecErrors {
    pub fn iter(&self) -> std::slice::Iter<'_, SpecError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One error per line, no trailing newline.
impl fmt::Display for SpecErrors {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (position, error) in self.0.iter().enumerate() {
            if position > 0 {
                formatter.write_str("\n")?;
            }
            write!(formatter, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

/// Why `load_spec` failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read cluster spec {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(SpecErrors),
}

/// Where a byte offset of `text` is, as 1-based (line, column in characters).
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let text = "a = 1\nnamé = \"x\"\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 4), (1, 5));
        assert_eq!(line_column(text, 6), (2, 1));
        // 'é' is two bytes: the '=' after "namé " is column 6.
        assert_eq!(line_column(text, text.find('=').unwrap()), (1, 3));
        assert_eq!(line_column(text, text.rfind('=').unwrap()), (2, 6));
        assert_eq!(line_column(text, text.len() + 10), (3, 1));
    }

    #[test]
    fn display_one_per_line() {
        let error = |key: &str, line| SpecError {
            file: "cluster.toml".into(),
            line,
            column: 14,
            key: key.into(),
            message: "must be between 1 and 100000, got 0".into(),
        };
        let errors = SpecErrors(vec![error("topics.orders.partitions", 14), error("", 15)]);
        assert_eq!(
            errors.to_string(),
            "cluster.toml:14:14: topics.orders.partitions: must be between 1 and 100000, got 0\n\
             cluster.toml:15:14: must be between 1 and 100000, got 0"
        );
    }
}
