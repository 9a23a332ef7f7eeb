//! The PIN secret type.

use std::{fs, io::Read as _, os::unix::fs::PermissionsExt as _, path::Path};

use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use crate::Pkcs11Error;

/// The user PIN of a PKCS#11 token. Zeroized on drop; its `Debug` never shows it; the
/// value comes out only through [`Pin::expose_secret`].
#[derive(Clone)]
pub struct Pin(Zeroizing<String>);

impl Pin {
    /// Wraps a PIN.
    pub fn new(pin: impl Into<String>) -> Self {
        Self(Zeroizing::new(pin.into()))
    }

    /// Reads a PIN file (a URI's `pin-source`): its whole content, less one trailing
    /// newline. The file must not be readable by other users.
    ///
    /// # Errors
    /// [`Pkcs11Error::PinFile`] when it cannot be read, [`Pkcs11Error::PinFileMode`] when
    /// group or others may read it, [`Pkcs11Error::PinFileContent`] when it is empty or
    /// not UTF-8. No error holds any of its content.
    pub fn from_file(path: &Path) -> Result<Self, Pkcs11Error> {
        let io = |source| Pkcs11Error::PinFile {
            path: path.to_path_buf(),
            source,
        };
        let mut file = fs::File::open(path).map_err(io)?;
        let mode = file.metadata().map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(Pkcs11Error::PinFileMode {
                path: path.to_path_buf(),
            });
        }
        let mut bytes = Zeroizing::new(Vec::new());
        file.read_to_end(&mut bytes).map_err(io)?;
        let content = |problem| Pkcs11Error::PinFileContent {
            path: path.to_path_buf(),
            problem,
        };
        let text = core::str::from_utf8(&bytes).map_err(|_| content("it is not UTF-8 text"))?;
        let text = text
            .strip_suffix("\r\n")
            .or_else(|| text.strip_suffix('\n'))
            .unwrap_or(text);
        if text.is_empty() {
            return Err(content("it is empty"));
        }
        Ok(Self::new(text))
    }

    /// The PIN. Use only to hand it to the token.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// Whether the PIN is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The PIN as cryptoki's secret type (a fresh, exactly sized copy that cryptoki
    /// zeroizes when it drops it).
    pub(crate) fn to_auth_pin(&self) -> AuthPin {
        AuthPin::new(Box::<str>::from(self.0.as_str()))
    }
}

impl core::fmt::Debug for Pin {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Pin(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_pin() {
        let p = Pin::new("918273-pin");
        assert_eq!(format!("{p:?}"), "Pin(<redacted>)");
        assert!(!format!("{p:#?}").contains("918273"));
        assert_eq!(p.expose_secret(), "918273-pin");
    }

    #[test]
    fn reads_a_pin_file_less_one_newline() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("pin");
        for (content, want) in [("1234", "1234"), ("1234\n", "1234"), ("12 34\r\n", "12 34")] {
            fs::write(&f, content).unwrap();
            fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
            assert_eq!(Pin::from_file(&f).unwrap().expose_secret(), want);
        }
    }

    #[test]
    fn pin_file_problems_are_named_and_never_show_the_content() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("pin");
        fs::write(&f, "55555").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        let e = Pin::from_file(&f).unwrap_err();
        assert!(matches!(e, Pkcs11Error::PinFileMode { .. }), "{e:?}");
        assert!(e.to_string().contains("chmod 600"), "{e}");
        assert!(!e.to_string().contains("55555"));

        fs::write(&f, "\n").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
        let e = Pin::from_file(&f).unwrap_err();
        assert!(e.to_string().contains("is empty"), "{e}");

        let e = Pin::from_file(&d.path().join("missing")).unwrap_err();
        assert!(matches!(e, Pkcs11Error::PinFile { .. }), "{e:?}");
        assert!(e.to_string().contains("missing"), "{e}");
    }
}
