//! Atomic, private file writes: write a temporary file beside the target (mode 0600),
//! fsync it, rename it over the target, fsync the directory. A crash leaves either the
//! old file or the new one, never a torn one.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::Path,
};

/// Creates `dir` (and its parents) if missing, with mode 0700 for what it creates.
///
/// # Errors
/// The I/O error from creating the directory.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Writes `bytes` to `path` atomically with mode 0600.
///
/// # Errors
/// The I/O error of any step; the target is then unchanged and the temporary file removed.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"))?;
    let mut rnd = [0u8; 6];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut rnd);
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        rnd.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        // The umask cannot widen 0600, but an inherited ACL or odd umask could narrow it
        // oddly: set it explicitly.
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_0600_and_replaces() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        write_private(&p, b"one").unwrap();
        write_private(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn failure_leaves_target_untouched() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        write_private(&p, b"keep").unwrap();
        // A target path under a missing directory fails before anything changes.
        assert!(write_private(&d.path().join("missing/f"), b"x").is_err());
        assert_eq!(fs::read(&p).unwrap(), b"keep");
    }
}
