//! SoftHSM2 tokens for the tests of one test binary: the process-wide token pool of
//! `tke-test-support` (made by the first test that needs a token, before anything loads
//! the module; `SOFTHSM2_CONF` names it), from which each unit takes a token of its own.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use tke_test_support::softhsm::{self, Pool};
use tke_unit::Pkcs11Config;

/// Tokens made for one test binary; a test that runs out says so.
pub const POOL_SIZE: usize = 240;

/// The PKCS#11 module (`TKE_PKCS11_MODULE`, default SoftHSM2's Debian path).
pub fn module() -> &'static str {
    softhsm::module_text()
}

/// The token pool of this test binary.
pub struct TokenPool(&'static Pool);

/// The pool, made on first use.
pub fn pool() -> TokenPool {
    TokenPool(Pool::of_process(
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        POOL_SIZE,
    ))
}

impl TokenPool {
    /// A fresh token of its own: its label and PIN file.
    pub fn take(&self) -> (String, PathBuf) {
        self.0.take()
    }

    /// A fresh token's configuration.
    pub fn config(&self) -> Pkcs11Config {
        let (label, pin) = self.take();
        Pkcs11Config::new(module(), label, pin)
    }

    /// The security officer PIN of a token.
    pub fn so_pin(&self, label: &str) -> String {
        self.0.tokens().so_pin(label)
    }
}
