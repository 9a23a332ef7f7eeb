//! Verification patterns.
//!
//! ```text
//! VP = AES-CMAC_K(B1) ‖ AES-CMAC_K(B2)     (32 bytes, shown as 64 hex digits)
//! B1 = "TKE-VP-v1-block" ‖ 0x01,  B2 = "TKE-VP-v1-block" ‖ 0x02   (16 bytes each)
//! ```
//!
//! Like a payment HSM's key check value, it is a MAC of fixed blocks under the key:
//! one-way, and computable inside a PKCS#11 token with `CKM_AES_CMAC` on a key that can
//! never be exported. Two units show the same VP exactly when they hold the same key.

use cmac::{Cmac, Mac};

use crate::{MasterKey, Vp};

/// The two fixed blocks.
pub const BLOCKS: [[u8; 16]; 2] = [*b"TKE-VP-v1-block\x01", *b"TKE-VP-v1-block\x02"];

/// The VP of a master key value.
pub fn of(key: &MasterKey) -> Vp {
    of_value(key.expose_secret())
}

/// The VP of a 32-byte value (a master key or a master key part).
pub(crate) fn of_value(value: &[u8; 32]) -> Vp {
    let mut out = [0u8; 32];
    for (i, block) in BLOCKS.iter().enumerate() {
        // A 32-byte key always fits AES-256.
        let mut mac = <Cmac<aes::Aes256> as Mac>::new(value.into());
        mac.update(block);
        out[i * 16..(i + 1) * 16].copy_from_slice(&mac.finalize().into_bytes());
    }
    Vp(out)
}
