#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

// Test support only: a card whose PIN, keys and state file are for tests must never end
// up in a release binary.
#[cfg(not(debug_assertions))]
compile_error!(
    "tke-piv-vcard is test support (a virtual YubiKey whose secrets are test values) and \
     refuses to build without debug assertions; build the product with \
     `cargo build --release` (the workspace's default members leave it out)"
);

pub mod card;
pub mod fixture;
pub mod mgm;
pub mod state;
pub mod tlv;
pub mod vpcd;

pub use card::{Card, CardConfig, Origin, PinPolicy, TouchMode, TouchPolicy, Version};
pub use mgm::{MgmAlgorithm, MgmKey};
