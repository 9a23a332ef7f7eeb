//! Mechanisms that `cryptoki` 0.12 cannot name, and which id computes RFC 5649.
//!
//! `cryptoki` 0.12.1 has a [`Mechanism`] variant for every mechanism TKE needs but
//! two: `CKM_AES_ECB_ENCRYPT_DATA` (0x1104, the KEK derivation of the transport KDF) and
//! `CKM_AES_KEY_WRAP_KWP` (0x210B, RFC 5649 in PKCS#11 3.x). Its
//! [`VendorDefinedMechanism`] passes any mechanism id and parameter to the token, but the
//! only constructor for the id's type, [`MechanismType::new_vendor_defined`], refuses ids
//! below `CKM_VENDOR_DEFINED`. [`standard`] builds the [`MechanismType`] of a standard id;
//! it is the workspace's only `unsafe` code, and the reason `cryptoki` is pinned to one
//! exact version (it relies on that version's private layout of [`MechanismType`]). Once
//! `cryptoki` offers these mechanisms, it goes.

use core::ops::Deref;

use cryptoki::mechanism::{
    misc::KeyDerivationStringData, vendor_defined::VendorDefinedMechanism, Mechanism, MechanismType,
};

/// `CK_MECHANISM_TYPE` (an unsigned long), as `cryptoki` exposes it.
pub type MechanismId = <MechanismType as Deref>::Target;

/// `CKM_AES_ECB_ENCRYPT_DATA`: derives a key whose value is the AES-ECB encryption of the
/// data under the base key.
pub const CKM_AES_ECB_ENCRYPT_DATA: MechanismId = 0x1104;
/// `CKM_AES_KEY_WRAP_PAD`: RFC 5649 on SoftHSM2 and several HSMs; per PKCS#11 3.1, RFC 3394
/// over PKCS#7-padded input on others.
pub const CKM_AES_KEY_WRAP_PAD: MechanismId = 0x210A;
/// `CKM_AES_KEY_WRAP_KWP`: RFC 5649, as PKCS#11 3.x names it.
pub const CKM_AES_KEY_WRAP_KWP: MechanismId = 0x210B;

/// The [`MechanismType`] of a mechanism id, standard or not.
#[allow(unsafe_code)]
pub const fn standard(id: MechanismId) -> MechanismType {
    const _: () = assert!(
        core::mem::size_of::<MechanismType>() == core::mem::size_of::<MechanismId>()
            && core::mem::align_of::<MechanismType>() == core::mem::align_of::<MechanismId>()
    );
    // SAFETY: cryptoki 0.12 declares `MechanismType` `#[repr(transparent)]` over its only
    // field, a `CK_MECHANISM_TYPE` (so that a slice of one is a slice of the other), and
    // every bit pattern is a valid `CK_MECHANISM_TYPE`. The value only travels to the
    // token in a `CK_MECHANISM`; cryptoki formats unknown ids without assuming anything.
    unsafe { core::mem::transmute::<MechanismId, MechanismType>(id) }
}

/// `CKM_AES_ECB_ENCRYPT_DATA` with `params` as its `CK_KEY_DERIVATION_STRING_DATA`.
pub fn aes_ecb_encrypt_data<'a>(params: &'a KeyDerivationStringData<'a>) -> Mechanism<'a> {
    Mechanism::VendorDefined(VendorDefinedMechanism::new(
        standard(CKM_AES_ECB_ENCRYPT_DATA),
        Some(params),
    ))
}

/// Which mechanism id computes RFC 5649 (AES key wrap with padding) on a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WrapMechanism {
    /// `CKM_AES_KEY_WRAP_KWP` (0x210B), the PKCS#11 3.x name of RFC 5649.
    Kwp,
    /// `CKM_AES_KEY_WRAP_PAD` (0x210A), where the token computes RFC 5649 under it
    /// (SoftHSM2, nCipher).
    Pad,
}

impl WrapMechanism {
    /// The candidates, in the order to try them (the PKCS#11 3.x name first).
    pub const CANDIDATES: [WrapMechanism; 2] = [WrapMechanism::Kwp, WrapMechanism::Pad];

    /// The mechanism id.
    #[allow(clippy::useless_conversion)] // `CK_ULONG` is 32 bits on some targets.
    pub fn id(self) -> u64 {
        u64::from(self.raw())
    }

    /// The mechanism id, as cryptoki types it.
    pub fn raw(self) -> MechanismId {
        match self {
            Self::Kwp => CKM_AES_KEY_WRAP_KWP,
            Self::Pad => CKM_AES_KEY_WRAP_PAD,
        }
    }

    /// The PKCS#11 name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Kwp => "CKM_AES_KEY_WRAP_KWP",
            Self::Pad => "CKM_AES_KEY_WRAP_PAD",
        }
    }

    /// The mechanism type, to ask a token whether it offers it.
    pub fn mechanism_type(self) -> MechanismType {
        match self {
            Self::Kwp => standard(CKM_AES_KEY_WRAP_KWP),
            Self::Pad => MechanismType::AES_KEY_WRAP_PAD,
        }
    }

    /// The mechanism, to wrap or unwrap with.
    pub fn mechanism(self) -> Mechanism<'static> {
        match self {
            Self::Kwp => Mechanism::VendorDefined(VendorDefinedMechanism::new::<()>(
                standard(CKM_AES_KEY_WRAP_KWP),
                None,
            )),
            Self::Pad => Mechanism::AesKeyWrapPad,
        }
    }
}

impl core::fmt::Display for WrapMechanism {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} (0x{:X})", self.name(), self.raw())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_ids_round_trip() {
        for id in [
            CKM_AES_ECB_ENCRYPT_DATA,
            CKM_AES_KEY_WRAP_PAD,
            CKM_AES_KEY_WRAP_KWP,
        ] {
            assert_eq!(*standard(id), id);
        }
        assert_eq!(
            standard(CKM_AES_KEY_WRAP_PAD),
            MechanismType::AES_KEY_WRAP_PAD
        );
        assert_eq!(
            Mechanism::AesKeyWrapPad.mechanism_type(),
            WrapMechanism::Pad.mechanism_type()
        );
        assert_eq!(*WrapMechanism::Kwp.mechanism().mechanism_type(), 0x210B);
        let ctx = [7u8; 32];
        let params = KeyDerivationStringData::new(&ctx);
        assert_eq!(*aes_ecb_encrypt_data(&params).mechanism_type(), 0x1104);
    }
}
