//! Helpers shared by the integration tests: small slices of the committed corpus.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use classifier::data::{ReadOptions, Transaction, TransactionReader};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn corpus_path() -> PathBuf {
    workspace_root().join("classifier/data/corpus.csv.gz")
}

pub fn eval_path() -> PathBuf {
    workspace_root().join("classifier/data/eval.csv.gz")
}

/// The first `n` rows of a committed labelled file.
pub fn labelled_rows(path: &Path, n: usize) -> Vec<Transaction> {
    let mut reader = TransactionReader::from_path(
        path,
        ReadOptions {
            require_category: true,
            skip_invalid: false,
        },
    )
    .unwrap();
    let mut rows = Vec::new();
    while rows.len() < n {
        match reader.next_transaction().unwrap() {
            Some(t) => rows.push(t),
            None => break,
        }
    }
    rows
}

/// A fresh directory under the target dir for one test's files.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = workspace_root()
        .join("target/test-scratch")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
