//! The classifier's error type: every failure names what was wrong and, for files, where.

use std::path::PathBuf;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum ClassifierError {
    /// A CSV row that cannot be used; `line` is 1-based and counts the header.
    #[error("line {line}: {problem}")]
    Row { line: u64, problem: String },

    /// The CSV header lacks a required column.
    #[error(
        "the CSV header has no `{0}` column (expected id,date,description,amount,mcc,category)"
    )]
    MissingColumn(&'static str),

    /// A file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A model file that is missing fields, corrupt, or from an incompatible version.
    #[error("model file {path}: {problem}")]
    Model { path: PathBuf, problem: String },

    /// A model built in memory that does not hold together (mismatched dimensions, unknown label).
    #[error("invalid model: {0}")]
    InvalidModel(String),

    /// Training could not run or the solver failed.
    #[error("training failed: {0}")]
    Training(String),

    /// The name-suggestion-index file given to the corpus builder is not what it expects.
    #[error("name-suggestion-index: {0}")]
    Nsi(String),
}

impl ClassifierError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ClassifierError::Io {
            path: path.into(),
            source,
        }
    }
}
