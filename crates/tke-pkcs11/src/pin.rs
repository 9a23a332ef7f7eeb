//! The PIN secret type, and PIN files.

use std::{
    fs,
    io::Read as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use crate::{Error, PinFileProblem};

/// The user PIN of a PKCS#11 token. Zeroized on drop; its `Debug` never shows it; the
/// value comes out only through [`Pin::expose_secret`]. A PIN read from a file remembers
/// the file's name (not secret), so that a wrong PIN names where it came from.
#[derive(Clone)]
pub struct Pin {
    value: Zeroizing<String>,
    file: Option<PathBuf>,
}

impl Pin {
    /// Wraps a PIN.
    pub fn new(pin: impl Into<String>) -> Self {
        Self {
            value: Zeroizing::new(pin.into()),
            file: None,
        }
    }

    /// Reads a PIN file: one line (a final newline, or CR LF, is not part of the PIN),
    /// not empty, in a regular file that no other user may read or write.
    ///
    /// # Errors
    /// [`Error::PinFile`] when it cannot be read, [`Error::PinFileMode`] when group or
    /// others have any access to it, [`Error::PinFileContent`] when it is not a regular
    /// file, is empty, not UTF-8, or more than one line. No error holds any of its
    /// content.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let io = |source| Error::PinFile {
            path: path.to_path_buf(),
            source,
        };
        let content = |problem| Error::PinFileContent {
            path: path.to_path_buf(),
            problem,
        };
        let mut file = fs::File::open(path).map_err(io)?;
        // The checks and the read are of one open file, not of a name that may change.
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(content(PinFileProblem::NotRegularFile));
        }
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(Error::PinFileMode {
                path: path.to_path_buf(),
                mode: mode & 0o7777,
            });
        }
        let mut bytes = Zeroizing::new(Vec::new());
        file.read_to_end(&mut bytes).map_err(io)?;
        let text = core::str::from_utf8(&bytes).map_err(|_| content(PinFileProblem::NotUtf8))?;
        let text = text
            .strip_suffix("\r\n")
            .or_else(|| text.strip_suffix('\n'))
            .unwrap_or(text);
        if text.is_empty() {
            return Err(content(PinFileProblem::Empty));
        }
        if text.contains(['\n', '\r']) {
            return Err(content(PinFileProblem::SeveralLines));
        }
        Ok(Self {
            value: Zeroizing::new(text.to_owned()),
            file: Some(path.to_path_buf()),
        })
    }

    /// The PIN. Use only to hand it to the token.
    pub fn expose_secret(&self) -> &str {
        &self.value
    }

    /// Whether the PIN is empty.
    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }

    /// The file the PIN was read from, if it was.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The PIN as cryptoki's secret type (a fresh, exactly sized copy that cryptoki
    /// zeroizes when it drops it).
    pub(crate) fn to_auth_pin(&self) -> AuthPin {
        AuthPin::new(Box::<str>::from(self.value.as_str()))
    }
}

impl core::fmt::Debug for Pin {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Pin(<redacted>)")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn write(path: &Path, content: &str, mode: u32) {
        fs::write(path, content).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn debug_hides_the_pin() {
        let p = Pin::new("918273-pin");
        assert_eq!(format!("{p:?}"), "Pin(<redacted>)");
        assert!(!format!("{p:#?}").contains("918273"));
        assert_eq!(p.expose_secret(), "918273-pin");
        assert_eq!(p.file(), None);
    }

    #[test]
    fn reads_a_pin_file_less_one_newline() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("pin");
        for (content, want) in [("1234", "1234"), ("1234\n", "1234"), ("12 34\r\n", "12 34")] {
            write(&f, content, 0o600);
            let pin = Pin::from_file(&f).unwrap();
            assert_eq!(pin.expose_secret(), want);
            assert_eq!(pin.file(), Some(f.as_path()));
            assert!(!format!("{pin:?}").contains(want));
        }
    }

    #[test]
    fn pin_file_problems_are_named_and_never_show_the_content() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("pin");
        for mode in [0o644, 0o640, 0o604, 0o620] {
            write(&f, "55555", mode);
            let e = Pin::from_file(&f).unwrap_err();
            assert!(
                matches!(&e, Error::PinFileMode { mode: m, .. } if *m == mode),
                "{e:?}"
            );
            let m = e.to_string();
            assert!(m.contains("mode 0600") && m.contains("chmod 600"), "{m}");
            assert!(!m.contains("55555") && !format!("{e:?}").contains("55555"));
        }
        for (content, problem) in [
            ("\n", PinFileProblem::Empty),
            ("", PinFileProblem::Empty),
            ("12\n34", PinFileProblem::SeveralLines),
            ("1234\n\n", PinFileProblem::SeveralLines),
            ("12\r34", PinFileProblem::SeveralLines),
        ] {
            write(&f, content, 0o600);
            let e = Pin::from_file(&f).unwrap_err();
            assert!(
                matches!(&e, Error::PinFileContent { problem: p, .. } if *p == problem),
                "{content:?}: {e:?}"
            );
            assert!(e.to_string().ends_with(&problem.to_string()), "{e}");
        }
        fs::write(&f, [0xff, 0xfe, 0x31]).unwrap();
        let e = Pin::from_file(&f).unwrap_err();
        assert!(
            matches!(
                e,
                Error::PinFileContent {
                    problem: PinFileProblem::NotUtf8,
                    ..
                }
            ),
            "{e:?}"
        );
        let e = Pin::from_file(d.path()).unwrap_err();
        assert!(
            matches!(
                e,
                Error::PinFileContent {
                    problem: PinFileProblem::NotRegularFile,
                    ..
                }
            ),
            "{e:?}"
        );
        let e = Pin::from_file(&d.path().join("missing")).unwrap_err();
        assert!(matches!(e, Error::PinFile { .. }), "{e:?}");
        assert!(e.to_string().contains("missing"), "{e}");
    }
}
