//! The behaviour suite on the PKCS#11 backend (SoftHSM2), plus what is specific to tokens.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;
mod support;

use suite::backend_suite;
use support::Pkcs11Factory;

backend_suite!(Pkcs11Factory);
