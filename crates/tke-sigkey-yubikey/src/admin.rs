//! Management-key operations, in our own APDUs over `pcsc`.
//!
//! `yubikey` 0.8 authenticates with the management key in 3DES only (the algorithm is
//! fixed in `YubiKey::authenticate`), while YubiKeys from firmware 5.7 ship with an AES-192
//! management key, and firmware from 5.4 accepts AES keys. So the operations that need
//! the management key — authenticate (3DES or AES, the algorithm read from the card's
//! metadata), read a PIN-protected management key, generate a key, write a certificate —
//! are done here, on a separate PC/SC handle to the same reader, each phase inside one
//! PC/SC transaction that starts with SELECT. Signing stays with `yubikey`.
//!
//! Nothing here is logged: APDUs carry the PIN and management-key material.

use aes::cipher::{generic_array::GenericArray, BlockDecrypt, BlockEncrypt, KeyInit};
use p256::PublicKey;
use rand_core::{OsRng, RngCore};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::{
    tlv, CardInfo, ManagementKey, ManagementKeySource, MgmAlgorithm, Pin, PinPolicy, Slot,
    TouchPolicy, YubiKeyError,
};

const PIV_AID: [u8; 5] = [0xa0, 0x00, 0x00, 0x03, 0x08];
const SW_OK: u16 = 0x9000;

/// A PC/SC handle to a YubiKey for management operations.
pub(crate) struct AdminSession {
    card: Option<pcsc::Card>,
    info: CardInfo,
}

impl Drop for AdminSession {
    fn drop(&mut self) {
        // Leave the card as it is: a reset would disturb the signing handle.
        if let Some(card) = self.card.take() {
            let _ = card.disconnect(pcsc::Disposition::LeaveCard);
        }
    }
}

/// One phase of work inside a PC/SC transaction.
pub(crate) struct Phase<'a> {
    tx: pcsc::Transaction<'a>,
    info: &'a CardInfo,
}

impl AdminSession {
    /// Connects to the YubiKey's reader (shared, T=1).
    pub(crate) fn connect(info: &CardInfo) -> Result<Self, YubiKeyError> {
        let ctx = pcsc::Context::establish(pcsc::Scope::System)
            .map_err(|reason| YubiKeyError::PcscUnavailable { reason })?;
        let name =
            std::ffi::CString::new(info.reader.as_str()).map_err(|_| YubiKeyError::Malformed {
                serial: info.serial,
                operation: "connecting",
                problem: "the reader name holds a NUL byte",
            })?;
        let card = ctx
            .connect(&name, pcsc::ShareMode::Shared, pcsc::Protocols::T1)
            .map_err(|e| pcsc_err(info, "connecting", e))?;
        Ok(Self {
            card: Some(card),
            info: info.clone(),
        })
    }

    /// Starts a transaction and selects the PIV application (which clears the card's
    /// verified PIN and management-key authentication).
    pub(crate) fn phase(&mut self) -> Result<Phase<'_>, YubiKeyError> {
        let info = &self.info;
        let card = self.card.as_mut().ok_or(YubiKeyError::Removed {
            serial: info.serial,
        })?;
        let tx = card
            .transaction()
            .map_err(|e| pcsc_err(info, "starting a transaction", e))?;
        let phase = Phase { tx, info };
        let (_, sw) = phase.transmit(0x00, 0xa4, 0x04, 0x00, &PIV_AID, "selecting PIV")?;
        phase.expect(sw, "selecting PIV")?;
        Ok(phase)
    }
}

fn pcsc_err(info: &CardInfo, operation: &'static str, e: pcsc::Error) -> YubiKeyError {
    match e {
        pcsc::Error::SharingViolation => YubiKeyError::ReaderBusy {
            readers: vec![info.reader.clone()],
        },
        pcsc::Error::RemovedCard | pcsc::Error::NoSmartcard | pcsc::Error::ResetCard => {
            YubiKeyError::Removed {
                serial: info.serial,
            }
        }
        reason => YubiKeyError::Pcsc {
            serial: info.serial,
            operation,
            reason,
        },
    }
}

impl Phase<'_> {
    fn serial(&self) -> u32 {
        self.info.serial
    }

    fn expect(&self, sw: u16, operation: &'static str) -> Result<(), YubiKeyError> {
        if sw == SW_OK {
            Ok(())
        } else {
            Err(YubiKeyError::CardStatus {
                serial: self.serial(),
                operation,
                sw,
            })
        }
    }

    fn malformed(&self, operation: &'static str, problem: &'static str) -> YubiKeyError {
        YubiKeyError::Malformed {
            serial: self.serial(),
            operation,
            problem,
        }
    }

    /// Sends a command (chained in 255-byte parts when longer) and collects the whole
    /// answer (GET RESPONSE while the card says `61xx`). The answer is zeroized on drop.
    fn transmit(
        &self,
        cla: u8,
        ins: u8,
        p1: u8,
        p2: u8,
        data: &[u8],
        operation: &'static str,
    ) -> Result<(Zeroizing<Vec<u8>>, u16), YubiKeyError> {
        let mut buf = Zeroizing::new(vec![0u8; 258]);
        let mut out = Zeroizing::new(Vec::new());
        let chunks: Vec<&[u8]> = if data.is_empty() {
            vec![&[]]
        } else {
            data.chunks(255).collect()
        };
        let mut sw = 0;
        for (i, chunk) in chunks.iter().enumerate() {
            let last = i + 1 == chunks.len();
            let mut apdu = Zeroizing::new(Vec::with_capacity(chunk.len() + 6));
            apdu.extend_from_slice(&[if last { cla } else { cla | 0x10 }, ins, p1, p2]);
            if !chunk.is_empty() {
                apdu.push(chunk.len() as u8);
                apdu.extend_from_slice(chunk);
            }
            let resp = self
                .tx
                .transmit(&apdu, &mut buf)
                .map_err(|e| pcsc_err(self.info, operation, e))?;
            let (data, s) =
                split(resp).ok_or_else(|| self.malformed(operation, "no status word"))?;
            out.extend_from_slice(data);
            sw = s;
            if !last && sw != SW_OK {
                return Ok((out, sw));
            }
        }
        while sw & 0xff00 == 0x6100 {
            let resp = self
                .tx
                .transmit(&[0x00, 0xc0, 0x00, 0x00, 0x00], &mut buf)
                .map_err(|e| pcsc_err(self.info, operation, e))?;
            let (data, s) =
                split(resp).ok_or_else(|| self.malformed(operation, "no status word"))?;
            out.extend_from_slice(data);
            sw = s;
        }
        Ok((out, sw))
    }

    /// GET METADATA for a slot (firmware 5.3 and later): its TLVs, `None` when the slot
    /// is empty.
    pub(crate) fn metadata(&self, slot: u8) -> Result<Option<Zeroizing<Vec<u8>>>, YubiKeyError> {
        let (data, sw) = self.transmit(0x00, 0xf7, 0x00, slot, &[], "reading slot metadata")?;
        match sw {
            SW_OK => Ok(Some(data)),
            0x6a82 => Ok(None),
            sw => Err(YubiKeyError::CardStatus {
                serial: self.serial(),
                operation: "reading slot metadata",
                sw,
            }),
        }
    }

    /// The management key's algorithm: from GET METADATA (5.3 and later), else 3DES
    /// (the only algorithm before 5.4).
    pub(crate) fn management_algorithm(&self) -> Result<MgmAlgorithm, YubiKeyError> {
        if !self.info.has_metadata() {
            return Ok(MgmAlgorithm::TripleDes);
        }
        let Some(meta) = self.metadata(0x9b)? else {
            return Ok(MgmAlgorithm::TripleDes);
        };
        let id = tlv::find(&meta, 0x01)
            .and_then(|v| v.first().copied())
            .ok_or_else(|| {
                self.malformed("reading the management key's algorithm", "no algorithm")
            })?;
        MgmAlgorithm::from_id(id).ok_or(YubiKeyError::ManagementKeyAlgorithm {
            serial: self.serial(),
            id,
        })
    }

    /// The YubiKey admin data's first flags byte (object `5FFF00` =
    /// `53 { 80 { 81 01 flags } }`; bit `02`: a PIN-protected management key is stored).
    /// 0 when there is no admin data. Readable without the PIN.
    pub(crate) fn admin_flags(&self) -> Result<u8, YubiKeyError> {
        let op = "reading the admin data";
        let (data, sw) =
            self.transmit(0x00, 0xcb, 0x3f, 0xff, &[0x5c, 0x03, 0x5f, 0xff, 0x00], op)?;
        if sw == 0x6a82 {
            return Ok(0);
        }
        self.expect(sw, op)?;
        Ok(tlv::find(&data, 0x53)
            .and_then(|v| tlv::find(v, 0x80))
            .and_then(|v| tlv::find(v, 0x81))
            .and_then(|v| v.first().copied())
            .unwrap_or(0))
    }

    /// VERIFY the PIN.
    pub(crate) fn verify_pin(&self, pin: &Pin) -> Result<(), YubiKeyError> {
        let mut data = Zeroizing::new([0xffu8; 8]);
        let p = pin.expose_secret();
        data[..p.len()].copy_from_slice(p);
        let (_, sw) = self.transmit(0x00, 0x20, 0x00, 0x80, &data[..], "verifying the PIN")?;
        match sw {
            SW_OK => Ok(()),
            0x6983 | 0x63c0 => Err(YubiKeyError::PinBlocked {
                serial: self.serial(),
            }),
            sw if sw & 0xfff0 == 0x63c0 => Err(YubiKeyError::WrongPin {
                serial: self.serial(),
                tries_left: (sw & 0x0f) as u8,
            }),
            sw => Err(YubiKeyError::CardStatus {
                serial: self.serial(),
                operation: "verifying the PIN",
                sw,
            }),
        }
    }

    /// Reads the PIN-protected management key (needs the PIN verified in this phase):
    /// object `5FC109` = `53 { 88 { 89 key } }`.
    fn protected_management_key(&self) -> Result<ManagementKey, YubiKeyError> {
        let op = "reading the PIN-protected management key";
        let (data, sw) =
            self.transmit(0x00, 0xcb, 0x3f, 0xff, &[0x5c, 0x03, 0x5f, 0xc1, 0x09], op)?;
        if sw == 0x6a82 {
            return Err(YubiKeyError::NoProtectedManagementKey {
                serial: self.serial(),
            });
        }
        self.expect(sw, op)?;
        let key = tlv::find(&data, 0x53)
            .and_then(|v| tlv::find(v, 0x88))
            .and_then(|v| tlv::find(v, 0x89))
            .ok_or(YubiKeyError::NoProtectedManagementKey {
                serial: self.serial(),
            })?;
        Ok(ManagementKey::from_bytes(key))
    }

    /// Authenticates with the management key: mutual challenge-response in the card's
    /// algorithm. Needs `pin` for a PIN-protected key.
    pub(crate) fn authenticate(
        &self,
        source: &ManagementKeySource,
        pin: &Pin,
    ) -> Result<(), YubiKeyError> {
        let algorithm = self.management_algorithm()?;
        let (key, source_kind) = match source {
            ManagementKeySource::Default => (ManagementKey::factory_default(), "the default key"),
            ManagementKeySource::Given(k) => (k.clone(), "the key given"),
            ManagementKeySource::PinProtected => {
                self.verify_pin(pin)?;
                (self.protected_management_key()?, "the PIN-protected key")
            }
        };
        let k = key.expose_secret();
        if k.len() != algorithm.key_len() {
            return Err(YubiKeyError::ManagementKeyLength {
                serial: self.serial(),
                algorithm,
                given: k.len(),
            });
        }
        let refused = || YubiKeyError::ManagementKeyRefused {
            serial: self.serial(),
            algorithm,
            source_kind,
        };
        let op = "authenticating with the management key";
        let n = algorithm.block_len();
        // 1. The card's witness, encrypted.
        let (r, sw) = self.transmit(
            0x00,
            0x87,
            algorithm.id(),
            0x9b,
            &[0x7c, 0x02, 0x80, 0x00],
            op,
        )?;
        if sw != SW_OK {
            return Err(refused());
        }
        let witness = tlv::find(&r, 0x7c)
            .and_then(|v| tlv::find(v, 0x80))
            .filter(|w| w.len() == n)
            .ok_or_else(|| self.malformed(op, "no witness"))?;
        let decrypted = cipher(algorithm, k, witness, false);
        // 2. The witness decrypted, and our challenge.
        let mut challenge = Zeroizing::new(vec![0u8; n]);
        OsRng.fill_bytes(&mut challenge);
        let mut inner = Zeroizing::new(tlv::encode(0x80, &decrypted));
        tlv::push(&mut inner, 0x81, &challenge);
        let msg = Zeroizing::new(tlv::encode(0x7c, &inner));
        let (r, sw) = self.transmit(0x00, 0x87, algorithm.id(), 0x9b, &msg, op)?;
        if sw != SW_OK {
            return Err(refused());
        }
        // 3. The card proves it knows the key too.
        let answer = tlv::find(&r, 0x7c)
            .and_then(|v| tlv::find(v, 0x82))
            .ok_or_else(|| self.malformed(op, "no response to our challenge"))?;
        let expected = cipher(algorithm, k, &challenge, true);
        if !bool::from(answer.ct_eq(&expected)) {
            return Err(refused());
        }
        Ok(())
    }

    /// GENERATE ASYMMETRIC: a P-256 key in `slot` (management key authenticated).
    pub(crate) fn generate(
        &self,
        slot: Slot,
        pin: PinPolicy,
        touch: TouchPolicy,
    ) -> Result<PublicKey, YubiKeyError> {
        let op = "generating a key";
        let mut inner = tlv::encode(0x80, &[0x11]);
        tlv::push(&mut inner, 0xaa, &[u8::from(pin.to_yubikey())]);
        tlv::push(&mut inner, 0xab, &[u8::from(touch.to_yubikey())]);
        let (r, sw) = self.transmit(0x00, 0x47, 0x00, slot.id(), &tlv::encode(0xac, &inner), op)?;
        self.expect(sw, op)?;
        let point = tlv::find(&r, 0x7f49)
            .and_then(|v| tlv::find(v, 0x86))
            .ok_or_else(|| self.malformed(op, "no public point"))?;
        PublicKey::from_sec1_bytes(point)
            .map_err(|_| self.malformed(op, "the public point is not on P-256"))
    }

    /// PUT DATA: the slot's certificate object (`70` DER, `71` uncompressed, `FE` LRC),
    /// as `yubikey` and `yubico-piv-tool` write it.
    pub(crate) fn put_certificate(&self, slot: Slot, der: &[u8]) -> Result<(), YubiKeyError> {
        let op = "writing the certificate";
        let mut object = tlv::encode(0x70, der);
        tlv::push(&mut object, 0x71, &[0x00]);
        tlv::push(&mut object, 0xfe, &[]);
        let mut data = tlv::encode(0x5c, &slot.cert_object());
        tlv::push(&mut data, 0x53, &object);
        let (_, sw) = self.transmit(0x00, 0xdb, 0x3f, 0xff, &data, op)?;
        self.expect(sw, op)
    }
}

fn split(resp: &[u8]) -> Option<(&[u8], u16)> {
    let (data, sw) = resp.split_at_checked(resp.len().checked_sub(2)?)?;
    Some((data, u16::from_be_bytes([sw[0], sw[1]])))
}

/// One block encrypted (`encrypt`) or decrypted with the management key.
fn cipher(algorithm: MgmAlgorithm, key: &[u8], block: &[u8], encrypt: bool) -> Zeroizing<Vec<u8>> {
    fn run<C: KeyInit + BlockEncrypt + BlockDecrypt>(key: &[u8], b: &mut [u8], encrypt: bool) {
        if let Ok(c) = C::new_from_slice(key) {
            let block = GenericArray::from_mut_slice(b);
            if encrypt {
                c.encrypt_block(block);
            } else {
                c.decrypt_block(block);
            }
        }
    }
    let mut b = Zeroizing::new(block.to_vec());
    match algorithm {
        MgmAlgorithm::TripleDes => run::<des::TdesEde3>(key, &mut b, encrypt),
        MgmAlgorithm::Aes128 => run::<aes::Aes128>(key, &mut b, encrypt),
        MgmAlgorithm::Aes192 => run::<aes::Aes192>(key, &mut b, encrypt),
        MgmAlgorithm::Aes256 => run::<aes::Aes256>(key, &mut b, encrypt),
    }
    b
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ciphers_round_trip_and_match_known_answers() {
        // FIPS-197 C.2 (AES-192).
        let key: Vec<u8> = (0u8..24).collect();
        let pt: Vec<u8> = (0u8..16).map(|i| i * 0x11).collect();
        let ct = cipher(MgmAlgorithm::Aes192, &key, &pt, true);
        assert_eq!(
            ct.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "dda97ca4864cdfe06eaf70a0ec0d7191"
        );
        assert_eq!(*cipher(MgmAlgorithm::Aes192, &key, &ct, false), pt);
        let k3 = ManagementKey::factory_default();
        let b = cipher(
            MgmAlgorithm::TripleDes,
            k3.expose_secret(),
            b"8 bytes!",
            true,
        );
        assert_eq!(
            cipher(MgmAlgorithm::TripleDes, k3.expose_secret(), &b, false).as_slice(),
            b"8 bytes!"
        );
    }
}
