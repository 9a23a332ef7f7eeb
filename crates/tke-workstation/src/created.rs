//! What every kind of key file shares: safe file names, files written as new (never over
//! an existing one), each key with a record of when it was added so that KEYNUMs follow
//! creation order, and removal.
//!
//! Why a record and not a file's modification time: a plain copy resets that, and the
//! record is a time, not a counter, so that keys copied from another workstation (with
//! their records) fall into place without clashing with local numbers.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use crate::{atomic, error::io_err, KeyFileError, Result};

/// The keys of one kind in a directory, in the order they were added (the creation
/// record beside each key, `<stem>.created` or `<stem>.mkpart.created`: adding a key never
/// renumbers the others), and the files that could not be read: a bad file never hides
/// the others.
#[derive(Debug)]
pub struct Listing<E> {
    /// The keys, in the order they were added. KEYNUM (as the CLI shows it) is index + 1.
    pub entries: Vec<E>,
    /// One error per file that could not be read or parsed, naming the file.
    pub problems: Vec<KeyFileError>,
}

impl<E> Default for Listing<E> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            problems: Vec::new(),
        }
    }
}

impl<E> Listing<E> {
    /// The key with the given KEYNUM (1-based), if any.
    pub fn by_keynum(&self, keynum: usize) -> Option<&E> {
        keynum.checked_sub(1).and_then(|i| self.entries.get(i))
    }
}

/// The creation records of one kind of key: the record `<stem><record_suffix>` (decimal
/// Unix time in nanoseconds) dates the key whose main file is `<stem><file_suffix>`.
pub(crate) struct CreationRecord {
    /// The suffix of the file a record dates.
    pub file_suffix: &'static str,
    /// The suffix of the record.
    pub record_suffix: &'static str,
}

impl CreationRecord {
    /// The record of `file` (`<stem><record_suffix>` beside `<stem><file_suffix>`).
    pub fn path(&self, file: &Path) -> PathBuf {
        let stem = file
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(self.file_suffix))
            .unwrap_or_default();
        file.with_file_name(format!("{stem}{}", self.record_suffix))
    }

    /// When the key of `file` was added. Without a record (keys made before records
    /// existed, or copied without theirs), the file's modification time: close to when it
    /// was made, and for a copy, later than the files already there, so it never goes
    /// first.
    pub fn created_at(&self, file: &Path) -> u128 {
        fs::read_to_string(self.path(file))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .or_else(|| {
                let modified = fs::metadata(file).and_then(|m| m.modified()).ok()?;
                let since = modified.duration_since(std::time::UNIX_EPOCH).ok()?;
                Some(since.as_nanos())
            })
            .unwrap_or(0)
    }

    /// Writes `files` as new files (0600, atomically), in order, then the record of
    /// `dated` (one of them) with the time now. On failure removes what it wrote, so that
    /// no key is left in part.
    pub fn write_new(&self, files: &[(&Path, &[u8])], dated: &Path) -> Result<()> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let record = self.path(dated);
        let record_text = format!("{nanos}\n");
        let all = files
            .iter()
            .copied()
            .chain(std::iter::once((record.as_path(), record_text.as_bytes())));
        let mut written: Vec<&Path> = Vec::new();
        for (path, bytes) in all {
            if let Err(e) = create_new(path, bytes) {
                for done in written {
                    let _ = fs::remove_file(done);
                }
                return Err(e);
            }
            written.push(path);
        }
        Ok(())
    }
}

/// Writes a new file, 0600, atomically; an existing file is never replaced.
pub(crate) fn create_new(path: &Path, bytes: &[u8]) -> Result<()> {
    atomic::create_private(path, bytes).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            KeyFileError::AlreadyExists {
                path: path.to_path_buf(),
            }
        } else {
            io_err("write", path)(e)
        }
    })
}

/// Removes `files` (one already gone is not an error), then syncs `dir` so that the
/// removal is durable.
pub(crate) fn remove_files(dir: &Path, files: &[&Path]) -> Result<()> {
    for path in files {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove", *path)(e)),
        }
    }
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync", dir))
}

/// `text` made safe as the start of a file name: every character other than ASCII
/// letters, digits, `-`, `_` and `.` replaced by `_`, and no leading `.` (no hidden
/// file, no path).
pub(crate) fn safe_stem(text: &str) -> String {
    let mut s: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.starts_with('.') {
        s.replace_range(..1, "_");
    }
    s
}
