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
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Writes `bytes` to `path` atomically with mode 0600, replacing any existing file.
///
/// # Errors
/// The I/O error of any step; the target is then unchanged and the temporary file removed.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_via_temp(path, bytes, Install::Replace)
}

/// Writes `bytes` to a new file `path` atomically with mode 0600; never replaces a file.
///
/// The temporary file is hard-linked to `path`, which fails if `path` exists even when
/// another process creates it at the same moment.
///
/// # Errors
/// [`io::ErrorKind::AlreadyExists`] when `path` exists; the I/O error of any other step.
/// In every case nothing at `path` is changed and the temporary file is removed.
pub fn create_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_via_temp(path, bytes, Install::CreateNew)
}

#[derive(Clone, Copy)]
enum Install {
    Replace,
    CreateNew,
}

fn write_via_temp(path: &Path, bytes: &[u8], install: Install) -> io::Result<()> {
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
        match install {
            Install::Replace => fs::rename(&tmp, path)?,
            Install::CreateNew => {
                fs::hard_link(&tmp, path)?;
                // `path` now holds the new file: the write succeeded. A temporary name
                // that cannot be removed is harmless (listings skip dot files).
                let _ = fs::remove_file(&tmp);
            }
        }
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
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn create_private_never_replaces() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        create_private(&p, b"first").unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let err = create_private(&p, b"second").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&p).unwrap(), b"first");
        // Neither call leaves a temporary file behind.
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
