//! The password secret type.

use zeroize::Zeroizing;

/// The password of an encrypted private key. Zeroized on drop; its `Debug` never shows it;
/// the value comes out only through [`Password::expose_secret`].
#[derive(Clone)]
pub struct Password(Zeroizing<String>);

impl Password {
    /// Wraps a password.
    pub fn new(password: impl Into<String>) -> Self {
        Self(Zeroizing::new(password.into()))
    }

    /// The password. Use only to hand it to a KDF.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// Whether the password is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl core::fmt::Debug for Password {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_password() {
        let p = Password::new("hunter2-secret");
        assert!(!format!("{p:?}").contains("hunter2"));
    }
}
