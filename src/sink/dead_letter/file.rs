//! [`DeadLetterFile`]: the fallback when `<table>_rejected` cannot be written — one
//! JSON object per line, appended and `fsync`ed before the frame is acknowledged.
//!
//! The file lives in the spool's `quarantine/` directory, so that it stays with the
//! instance's other kept data and moves with it when another instance adopts the spool.
//! A line:
//!
//! ```json
//! {"time":"2024-05-01T12:00:00Z","table":"logs.logs","frame":"1-00000000000000ab-7",
//!  "reason":"constraint","code":469,"error":"Code: 469. DB::Exception: …","record":{…}}
//! ```

use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::DeadLetter;
use crate::record::format_rfc3339;

/// The file name inside the spool's `quarantine/` directory.
pub const FILE_NAME: &str = "dead-letter.jsonl";

/// An append-only JSON-lines file of dead letters.
#[derive(Debug, Clone)]
pub struct DeadLetterFile {
    path: PathBuf,
}

impl DeadLetterFile {
    pub fn new(path: impl Into<PathBuf>) -> DeadLetterFile {
        DeadLetterFile { path: path.into() }
    }

    /// `<dir>/dead-letter.jsonl`.
    pub fn in_dir(dir: &Path) -> DeadLetterFile {
        DeadLetterFile::new(dir.join(FILE_NAME))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line per letter and makes it durable (`fsync` of the file, and of
    /// the directory when the file is new). Off the runtime.
    pub async fn append(&self, letters: &[DeadLetter]) -> std::io::Result<()> {
        let mut text = String::new();
        for letter in letters {
            text.push_str(&line(letter));
            text.push('\n');
        }
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || append_durably(&path, text.as_bytes()))
            .await
            .map_err(std::io::Error::other)?
    }
}

fn append_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let existed = path.exists();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_data()?;
    if !existed {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// One letter as a JSON object (the record embedded as the object it is).
pub(super) fn line(letter: &DeadLetter) -> String {
    let text = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let time = format_rfc3339(i128::from(letter.time_unix_s) * 1_000_000_000, 0);
    format!(
        "{{\"time\":{},\"table\":{},\"frame\":{},\"reason\":{},\"code\":{},\"error\":{},\"record\":{}}}",
        text(&time),
        text(&letter.table),
        text(&letter.frame),
        text(letter.reason.as_str()),
        letter.code,
        text(&letter.error),
        letter.record
    )
}
