//! The card's management key: 3DES (the PIV default before YubiKey firmware 5.7) or AES
//! (128, 192 or 256 bits; the default from firmware 5.7), used for the challenge-response
//! of GENERAL AUTHENTICATE with key reference `9B`.

use core::fmt;

use aes::cipher::{generic_array::GenericArray, BlockDecrypt, BlockEncrypt, KeyInit};
use zeroize::{Zeroize, Zeroizing};

/// The default management key value of every YubiKey (3DES before 5.7, AES-192 after):
/// `010203040506070801020304050607080102030405060708`.
pub const DEFAULT_MGM_KEY: [u8; 24] = [
    1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8,
];

/// A management key algorithm, by its PIV algorithm identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum MgmAlgorithm {
    /// Triple DES (EDE3), 24-byte key: identifier `03`.
    TripleDes,
    /// AES-128: identifier `08`.
    Aes128,
    /// AES-192: identifier `0A`.
    Aes192,
    /// AES-256: identifier `0C`.
    Aes256,
}

impl MgmAlgorithm {
    /// The PIV algorithm identifier.
    pub fn id(self) -> u8 {
        match self {
            Self::TripleDes => 0x03,
            Self::Aes128 => 0x08,
            Self::Aes192 => 0x0a,
            Self::Aes256 => 0x0c,
        }
    }

    /// The algorithm of a PIV identifier.
    pub fn from_id(id: u8) -> Option<Self> {
        match id {
            0x03 => Some(Self::TripleDes),
            0x08 => Some(Self::Aes128),
            0x0a => Some(Self::Aes192),
            0x0c => Some(Self::Aes256),
            _ => None,
        }
    }

    /// The key length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            Self::TripleDes | Self::Aes192 => 24,
            Self::Aes128 => 16,
            Self::Aes256 => 32,
        }
    }

    /// The cipher's block length: the length of challenges and witnesses.
    pub fn block_len(self) -> usize {
        match self {
            Self::TripleDes => 8,
            _ => 16,
        }
    }
}

/// A management key: algorithm and key bytes. The bytes are zeroized on drop and never
/// shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct MgmKey {
    algorithm: MgmAlgorithm,
    key: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for MgmKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MgmKey")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl MgmKey {
    /// A key of `algorithm`, or `None` when `key` has the wrong length.
    pub fn new(algorithm: MgmAlgorithm, key: &[u8]) -> Option<Self> {
        (key.len() == algorithm.key_len()).then(|| Self {
            algorithm,
            key: Zeroizing::new(key.to_vec()),
        })
    }

    /// The factory default key for a card of this firmware version: AES-192 from 5.7,
    /// 3DES before.
    pub fn factory_default(version: [u8; 3]) -> Self {
        let algorithm = if (version[0], version[1]) >= (5, 7) {
            MgmAlgorithm::Aes192
        } else {
            MgmAlgorithm::TripleDes
        };
        Self {
            algorithm,
            key: Zeroizing::new(DEFAULT_MGM_KEY.to_vec()),
        }
    }

    /// The algorithm.
    pub fn algorithm(&self) -> MgmAlgorithm {
        self.algorithm
    }

    /// Whether the key is the factory default value.
    pub fn is_default(&self) -> bool {
        self.key.as_slice() == DEFAULT_MGM_KEY
    }

    /// The key bytes (for the state file).
    pub fn expose(&self) -> &[u8] {
        &self.key
    }

    /// Encrypts one block (of [`MgmAlgorithm::block_len`] bytes) in place.
    pub fn encrypt_block(&self, block: &mut [u8]) {
        fn with<C: KeyInit + BlockEncrypt>(key: &[u8], block: &mut [u8]) {
            if let Ok(c) = C::new_from_slice(key) {
                c.encrypt_block(GenericArray::from_mut_slice(block));
            }
        }
        if block.len() != self.algorithm.block_len() {
            block.zeroize();
            return;
        }
        match self.algorithm {
            MgmAlgorithm::TripleDes => with::<des::TdesEde3>(&self.key, block),
            MgmAlgorithm::Aes128 => with::<aes::Aes128>(&self.key, block),
            MgmAlgorithm::Aes192 => with::<aes::Aes192>(&self.key, block),
            MgmAlgorithm::Aes256 => with::<aes::Aes256>(&self.key, block),
        }
    }

    /// `block` encrypted, as a new vector.
    pub fn encrypt(&self, block: &[u8]) -> Vec<u8> {
        let mut b = block.to_vec();
        self.encrypt_block(&mut b);
        b
    }

    /// `block` decrypted, as a new vector (what a host does with the card's witness).
    pub fn decrypt(&self, block: &[u8]) -> Vec<u8> {
        fn with<C: KeyInit + BlockDecrypt>(key: &[u8], block: &mut [u8]) {
            if let Ok(c) = C::new_from_slice(key) {
                c.decrypt_block(GenericArray::from_mut_slice(block));
            }
        }
        let mut b = block.to_vec();
        if b.len() != self.algorithm.block_len() {
            b.zeroize();
            return b;
        }
        match self.algorithm {
            MgmAlgorithm::TripleDes => with::<des::TdesEde3>(&self.key, &mut b),
            MgmAlgorithm::Aes128 => with::<aes::Aes128>(&self.key, &mut b),
            MgmAlgorithm::Aes192 => with::<aes::Aes192>(&self.key, &mut b),
            MgmAlgorithm::Aes256 => with::<aes::Aes256>(&self.key, &mut b),
        }
        b
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn known_answers() {
        // AES-128 FIPS-197 appendix C.1.
        let k = MgmKey::new(
            MgmAlgorithm::Aes128,
            &hex::decode("000102030405060708090a0b0c0d0e0f").unwrap(),
        )
        .unwrap();
        assert_eq!(
            hex::encode(k.encrypt(&hex::decode("00112233445566778899aabbccddeeff").unwrap())),
            "69c4e0d86a7b0430d8cdb78070b4c55a"
        );
        // 3DES with three equal DES keys is single DES: the classic FIPS 81 vector
        // (key 0123456789abcdef, "Now is t" -> 3fa40e8a984d4815).
        let k1 = hex::decode("0123456789abcdef").unwrap();
        let k = MgmKey::new(MgmAlgorithm::TripleDes, &[&k1[..], &k1, &k1].concat()).unwrap();
        assert_eq!(hex::encode(k.encrypt(b"Now is t")), "3fa40e8a984d4815");
        assert_eq!(k.decrypt(&k.encrypt(b"Now is t")), b"Now is t");
    }

    #[test]
    fn defaults_follow_the_firmware() {
        assert_eq!(
            MgmKey::factory_default([5, 4, 3]).algorithm(),
            MgmAlgorithm::TripleDes
        );
        assert_eq!(
            MgmKey::factory_default([5, 7, 1]).algorithm(),
            MgmAlgorithm::Aes192
        );
        assert!(MgmKey::factory_default([4, 3, 7]).is_default());
        assert!(MgmKey::new(MgmAlgorithm::Aes256, &[0; 24]).is_none());
    }

    #[test]
    fn debug_hides_the_key() {
        let k = MgmKey::new(MgmAlgorithm::Aes128, &[0xab; 16]).unwrap();
        let d = format!("{k:?}");
        assert!(!d.contains("ab") && !d.contains("171"), "{d}");
    }
}
