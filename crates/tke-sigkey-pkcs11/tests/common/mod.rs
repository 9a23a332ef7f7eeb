//! SoftHSM2 fixtures: every test runs in its own process with its own token directory
//! (`tke_test_support::softhsm::isolated`), so no test changes the environment of a
//! running process and no two tests share a token or a module instance. This module only
//! gives the fixture's tokens this crate's types (`Pin`, `Pkcs11Uri`). A missing SoftHSM2
//! or OpenSC fails the test with a message naming `ci/setup.sh`; nothing is skipped.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, missing_docs)]

use std::path::PathBuf;

use tke_sigkey_pkcs11::{Pin, Pkcs11Uri};
use tke_test_support::softhsm;

pub use tke_test_support::softhsm::module;

/// The token directory of one test.
pub struct Tokens(softhsm::Tokens);

impl Tokens {
    pub fn pin_path(&self, label: &str) -> PathBuf {
        self.0.pin_path(label)
    }

    pub fn pin_text(&self, label: &str) -> String {
        self.0.pin(label)
    }

    pub fn pin(&self, label: &str) -> Pin {
        Pin::new(self.pin_text(label))
    }

    pub fn so_pin_text(&self, label: &str) -> String {
        self.0.so_pin(label)
    }

    /// `pkcs11:token=LABEL;object=OBJECT?module-path=...`
    pub fn uri_text(&self, label: &str, object: &str) -> String {
        self.0.uri(label, object)
    }

    pub fn uri(&self, label: &str, object: &str) -> Pkcs11Uri {
        Pkcs11Uri::parse(&self.uri_text(label, object)).unwrap()
    }

    /// `pkcs11-tool` that must succeed; returns its standard output.
    pub fn pkcs11_tool_ok(&self, args: &[&str]) -> String {
        self.0.pkcs11_tool_ok(args)
    }

    /// See `tke_test_support::softhsm::Tokens::lock_user_pin`.
    pub fn lock_user_pin(&self, label: &str) {
        self.0.lock_user_pin(label);
    }
}

/// Runs `body` in a child process of this test binary, with its own SoftHSM2 token
/// directory holding one token per label. `name` must be the test function's name.
pub fn isolated(name: &str, labels: &[&str], body: impl FnOnce(&Tokens)) {
    softhsm::isolated(name, labels, |t| {
        body(&Tokens(softhsm::Tokens::existing(t.dir())))
    });
}
