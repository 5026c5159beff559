//! The CSV format every command reads and writes.
//!
//! Header `id,date,description,amount,mcc,category`, in any order; `amount` is a signed decimal
//! (negative is money out); `date`, `mcc` and `category` may be empty. A `type` column, when
//! present, is the bureau's movement type and becomes a feature. Any other column is carried
//! through untouched. Files ending in `.gz` (or starting with gzip's magic bytes) are read
//! compressed.
//!
//! A malformed row is an error naming its line and the problem; with `skip_invalid` it is
//! skipped instead and counted, so a large file with a few bad rows can still be scored.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use crate::error::ClassifierError;
use crate::features::MovementInput;
use crate::labels::Label;

/// Descriptions longer than this are refused: statements print at most a few dozen
/// characters, so a longer one is a broken export, not a movement.
pub const MAX_DESCRIPTION_BYTES: usize = 1024;

/// One movement read from CSV.
#[derive(Debug, Clone, PartialEq)]
pub struct Transaction {
    /// 1-based line of the row in its file (the header is line 1).
    pub line: u64,
    pub id: String,
    pub date: String,
    pub description: String,
    pub amount: f64,
    pub mcc: Option<u16>,
    pub kind: Option<String>,
    pub category: Option<Label>,
    /// Every field of the row as read, in header order, for writing it back out.
    pub fields: Vec<String>,
}

impl Transaction {
    /// The view of this movement that the featuriser reads.
    pub fn input(&self) -> MovementInput<'_> {
        MovementInput {
            description: &self.description,
            amount: self.amount,
            mcc: self.mcc,
            kind: self.kind.as_deref(),
        }
    }
}

/// How strict a reader is.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOptions {
    /// Every row must carry a category (training and evaluation data).
    pub require_category: bool,
    /// Skip malformed rows and count them instead of failing on the first.
    pub skip_invalid: bool,
}

struct Columns {
    id: usize,
    date: usize,
    description: usize,
    amount: usize,
    mcc: usize,
    category: usize,
    kind: Option<usize>,
}

/// Reads [`Transaction`]s from a CSV file or stream.
pub struct TransactionReader {
    reader: csv::Reader<Box<dyn Read>>,
    headers: Vec<String>,
    columns: Columns,
    options: ReadOptions,
    skipped: u64,
    first_skip: Option<String>,
    record: csv::ByteRecord,
    path: PathBuf,
}

impl TransactionReader {
    /// Opens a CSV file, gzip-compressed or not.
    pub fn from_path(path: &Path, options: ReadOptions) -> Result<Self, ClassifierError> {
        let file = File::open(path).map_err(|e| ClassifierError::io(path, e))?;
        let mut buffered = BufReader::with_capacity(1 << 16, file);
        let gz = {
            use std::io::BufRead;
            let head = buffered
                .fill_buf()
                .map_err(|e| ClassifierError::io(path, e))?;
            head.starts_with(&[0x1f, 0x8b])
        };
        let inner: Box<dyn Read> = if gz {
            Box::new(MultiGzDecoder::new(buffered))
        } else {
            Box::new(buffered)
        };
        Self::new(inner, path.to_path_buf(), options)
    }

    /// Reads CSV from any stream (standard input, a test buffer); `name` is used in errors.
    pub fn from_reader(
        reader: Box<dyn Read>,
        name: &str,
        options: ReadOptions,
    ) -> Result<Self, ClassifierError> {
        Self::new(reader, PathBuf::from(name), options)
    }

    fn new(
        inner: Box<dyn Read>,
        path: PathBuf,
        options: ReadOptions,
    ) -> Result<Self, ClassifierError> {
        let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(inner);
        let header = reader
            .byte_headers()
            .map_err(|e| csv_error(&path, e))?
            .clone();
        let headers: Vec<String> = header
            .iter()
            .enumerate()
            .map(|(i, h)| {
                std::str::from_utf8(h)
                    .map(|s| s.trim().trim_start_matches('\u{feff}').to_string())
                    .map_err(|_| ClassifierError::Row {
                        line: 1,
                        problem: format!("header column {} is not valid UTF-8", i + 1),
                    })
            })
            .collect::<Result<_, _>>()?;
        let find = |name: &'static str| -> Result<usize, ClassifierError> {
            headers
                .iter()
                .position(|h| h.eq_ignore_ascii_case(name))
                .ok_or(ClassifierError::MissingColumn(name))
        };
        let columns = Columns {
            id: find("id")?,
            date: find("date")?,
            description: find("description")?,
            amount: find("amount")?,
            mcc: find("mcc")?,
            category: find("category")?,
            kind: headers.iter().position(|h| h.eq_ignore_ascii_case("type")),
        };
        Ok(TransactionReader {
            reader,
            headers,
            columns,
            options,
            skipped: 0,
            first_skip: None,
            record: csv::ByteRecord::new(),
            path,
        })
    }

    /// The header, as read.
    pub fn headers(&self) -> &[String] {
        &self.headers
    }

    /// How many malformed rows were skipped (only with `skip_invalid`).
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// The error of the first skipped row, to tell the user what kind of problem it was.
    pub fn first_skip(&self) -> Option<&str> {
        self.first_skip.as_deref()
    }

    /// Reads the next valid row; `Ok(None)` at the end.
    pub fn next_transaction(&mut self) -> Result<Option<Transaction>, ClassifierError> {
        loop {
            let more = match self.reader.read_byte_record(&mut self.record) {
                Ok(more) => more,
                Err(e) => {
                    let err = csv_error(&self.path, e);
                    if self.options.skip_invalid && matches!(err, ClassifierError::Row { .. }) {
                        self.note_skip(&err);
                        continue;
                    }
                    return Err(err);
                }
            };
            if !more {
                return Ok(None);
            }
            let line = self.record.position().map(|p| p.line()).unwrap_or(0);
            match self.parse(line) {
                Ok(t) => return Ok(Some(t)),
                Err(problem) => {
                    let err = ClassifierError::Row { line, problem };
                    if self.options.skip_invalid {
                        self.note_skip(&err);
                        continue;
                    }
                    return Err(err);
                }
            }
        }
    }

    /// Reads every remaining row.
    pub fn read_all(&mut self) -> Result<Vec<Transaction>, ClassifierError> {
        let mut out = Vec::new();
        while let Some(t) = self.next_transaction()? {
            out.push(t);
        }
        Ok(out)
    }

    fn note_skip(&mut self, err: &ClassifierError) {
        self.skipped += 1;
        if self.first_skip.is_none() {
            self.first_skip = Some(err.to_string());
        }
    }

    fn parse(&self, line: u64) -> Result<Transaction, String> {
        let record = &self.record;
        if record.len() != self.headers.len() {
            return Err(format!(
                "expected {} columns, found {}",
                self.headers.len(),
                record.len()
            ));
        }
        let mut fields = Vec::with_capacity(record.len());
        for (i, raw) in record.iter().enumerate() {
            match std::str::from_utf8(raw) {
                Ok(s) => fields.push(s.to_string()),
                Err(_) => {
                    return Err(format!("column `{}` is not valid UTF-8", self.headers[i]));
                }
            }
        }
        let c = &self.columns;
        let description = fields[c.description].trim().to_string();
        if description.is_empty() {
            return Err("empty description".into());
        }
        if description.len() > MAX_DESCRIPTION_BYTES {
            return Err(format!(
                "description is {} bytes, longer than the {MAX_DESCRIPTION_BYTES}-byte limit",
                description.len()
            ));
        }
        let amount = parse_amount(&fields[c.amount])?;
        let mcc = parse_mcc(&fields[c.mcc])?;
        let category = match fields[c.category].trim() {
            "" if self.options.require_category => return Err("missing category".into()),
            "" => None,
            s => Some(s.parse::<Label>().map_err(|e| e.to_string())?),
        };
        let kind = c
            .kind
            .map(|k| fields[k].trim().to_string())
            .filter(|k| !k.is_empty());
        Ok(Transaction {
            line,
            id: fields[c.id].clone(),
            date: fields[c.date].clone(),
            description,
            amount,
            mcc,
            kind,
            category,
            fields,
        })
    }
}

fn csv_error(path: &Path, e: csv::Error) -> ClassifierError {
    let line = e.position().map(|p| p.line());
    match e.into_kind() {
        csv::ErrorKind::Io(source) => ClassifierError::io(path, source),
        kind => ClassifierError::Row {
            line: line.unwrap_or(0),
            problem: format!("malformed CSV: {kind:?}"),
        },
    }
}

/// A signed decimal with a dot (`-12.50`, `3000`); at most two decimals are meaningful but
/// more are accepted. Thousands separators and commas are refused rather than guessed at.
pub fn parse_amount(raw: &str) -> Result<f64, String> {
    let s = raw.trim();
    let shown: String = s.chars().take(32).collect();
    let valid = !s.is_empty()
        && s.trim_start_matches(['-', '+'])
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.')
        && s.chars().filter(|&c| c == '.').count() <= 1
        && s.chars().any(|c| c.is_ascii_digit());
    if !valid {
        return Err(if s.is_empty() {
            "empty amount".into()
        } else {
            format!("amount `{shown}` is not a decimal number like -12.50")
        });
    }
    let value: f64 = s
        .parse()
        .map_err(|_| format!("amount `{shown}` is not a decimal number like -12.50"))?;
    if !value.is_finite() || value.abs() > 1e12 {
        return Err(format!("amount `{shown}` is out of range"));
    }
    Ok(value)
}

/// An MCC is 1 to 4 digits; empty means none.
pub fn parse_mcc(raw: &str) -> Result<Option<u16>, String> {
    let s = raw.trim();
    if s.is_empty() {
        return Ok(None);
    }
    if s.len() <= 4 && s.chars().all(|c| c.is_ascii_digit()) {
        return Ok(Some(s.parse().expect("1-4 ASCII digits fit u16")));
    }
    Err(format!(
        "mcc `{}` is not a 4-digit merchant category code",
        s.chars().take(16).collect::<String>()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(csv: &[u8], options: ReadOptions) -> (Result<Vec<Transaction>, ClassifierError>, u64) {
        let reader: Box<dyn Read> = Box::new(std::io::Cursor::new(csv.to_vec()));
        let mut r = match TransactionReader::from_reader(reader, "test", options) {
            Ok(r) => r,
            Err(e) => return (Err(e), 0),
        };
        let rows = r.read_all();
        (rows, r.skipped())
    }

    const HEADER: &str = "id,date,description,amount,mcc,category\n";

    #[test]
    fn a_valid_file_is_read_with_extra_columns_carried_through() {
        let csv = "id,date,description,amount,mcc,category,type,note\n\
                   1,01/02/2026,PADARIA REAL,-12.50,5812,FOOD_AND_DRINK,cartao,x\n\
                   2,,\"SALARIO, ACME\",3000,,,,\n";
        let (rows, _) = read(csv.as_bytes(), ReadOptions::default());
        let rows = rows.unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].mcc, Some(5812));
        assert_eq!(rows[0].kind.as_deref(), Some("cartao"));
        assert_eq!(rows[0].category, Some(Label::FoodAndDrink));
        assert_eq!(rows[0].fields[7], "x");
        assert_eq!(rows[1].description, "SALARIO, ACME");
        assert_eq!(rows[1].amount, 3000.0);
        assert_eq!(rows[1].line, 3);
    }

    fn first_error(body: &[u8]) -> String {
        let mut csv = HEADER.as_bytes().to_vec();
        csv.extend_from_slice(b"1,,OK,-1,,BANK_FEES\n");
        csv.extend_from_slice(body);
        let (rows, _) = read(
            &csv,
            ReadOptions {
                require_category: true,
                skip_invalid: false,
            },
        );
        rows.unwrap_err().to_string()
    }

    #[test]
    fn each_kind_of_bad_row_is_named_with_its_line() {
        assert_eq!(
            first_error(b"2,,X,-1\n"),
            "line 3: expected 6 columns, found 4"
        );
        assert_eq!(
            first_error(b"2,,X,abc,,BANK_FEES\n"),
            "line 3: amount `abc` is not a decimal number like -12.50"
        );
        assert_eq!(
            first_error(b"2,,X,\"1,5\",,BANK_FEES\n"),
            "line 3: amount `1,5` is not a decimal number like -12.50"
        );
        assert_eq!(
            first_error(b"2,,X\xff\xfe,-1,,BANK_FEES\n"),
            "line 3: column `description` is not valid UTF-8"
        );
        assert_eq!(
            first_error(b"2,,  ,-1,,BANK_FEES\n"),
            "line 3: empty description"
        );
        let long = format!("2,,{},-1,,BANK_FEES\n", "A".repeat(10_240));
        assert_eq!(
            first_error(long.as_bytes()),
            "line 3: description is 10240 bytes, longer than the 1024-byte limit"
        );
        assert_eq!(
            first_error(b"2,,X,-1,,FOOD\n"),
            "line 3: unknown label `FOOD` (expected one of the 19 PFC codes of taxonomy.md)"
        );
        assert_eq!(first_error(b"2,,X,-1,,\n"), "line 3: missing category");
        assert_eq!(
            first_error(b"2,,X,-1,54111,BANK_FEES\n"),
            "line 3: mcc `54111` is not a 4-digit merchant category code"
        );
        assert!(first_error(b"2,,X,NaN,,BANK_FEES\n").contains("line 3"));
    }

    #[test]
    fn a_header_without_a_required_column_is_refused() {
        let (rows, _) = read(b"id,description,amount\n1,X,-1\n", ReadOptions::default());
        assert_eq!(
            rows.unwrap_err().to_string(),
            "the CSV header has no `date` column (expected id,date,description,amount,mcc,category)"
        );
    }

    #[test]
    fn with_skip_invalid_bad_rows_are_counted_and_good_ones_kept() {
        let csv =
            format!("{HEADER}1,,A,-1,,\n2,,B,oops,,\n3,,,-1,,\n4,,D,-2,,GARBAGE\n5,,E,-3,,\n");
        let (rows, skipped) = read(
            csv.as_bytes(),
            ReadOptions {
                require_category: false,
                skip_invalid: true,
            },
        );
        let rows = rows.unwrap();
        assert_eq!(
            rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["1", "5"]
        );
        assert_eq!(skipped, 3);
    }
}
