//! The card: a YubiKey's PIV application (and the sliver of its OTP application that
//! older hosts read the serial number from), as a state machine over ISO 7816-4 APDUs.
//!
//! What it enforces, as a YubiKey does:
//! - PIN and PUK retry counters (3 tries by default); a blocked PIN answers `6983`; the
//!   PUK unblocks it; RESET only when both are blocked.
//! - PIN policy per key (never / once / always: "always" needs a VERIFY before each
//!   private-key operation) and touch policy (never / always / cached for 15 s).
//! - The management key (3DES, AES-128/192/256) for GENERATE, IMPORT, PUT DATA, SET
//!   MANAGEMENT KEY and SET PIN RETRIES.
//! - SELECT clears the verified PIN and the management-key authentication.
//!
//! What it does not emulate: RSA and P-384 keys, ECDH, attestation, the OTP and FIDO
//! applications beyond the serial number.

use std::{
    collections::BTreeMap,
    fmt,
    time::{Duration, Instant},
};

use p256::{
    ecdsa::{signature::hazmat::PrehashSigner, Signature, SigningKey},
    elliptic_curve::sec1::ToEncodedPoint,
    PublicKey, SecretKey,
};
use rand_core::{OsRng, RngCore};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::{
    mgm::{MgmAlgorithm, MgmKey},
    tlv,
};

/// The PIV application identifier (NIST SP 800-73-4); hosts select it by its first five
/// bytes `A0 00 00 03 08`.
pub const PIV_AID: [u8; 11] = [
    0xa0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00,
];
/// The YubiKey OTP application, where YubiKey 4 hosts read the serial number.
pub const OTP_AID: [u8; 8] = [0xa0, 0x00, 0x00, 0x05, 0x27, 0x20, 0x01, 0x01];
/// The YubiKey management application.
pub const MGMT_AID: [u8; 8] = [0xa0, 0x00, 0x00, 0x05, 0x27, 0x47, 0x11, 0x17];

/// The default PIN of a YubiKey.
pub const DEFAULT_PIN: &str = "123456";
/// The default PUK of a YubiKey.
pub const DEFAULT_PUK: &str = "12345678";
/// Tries before the PIN or PUK blocks, by default.
pub const DEFAULT_TRIES: u8 = 3;

/// The object holding a YubiKey's PIN-protected data (the protected management key).
pub const OBJ_PRINTED: u32 = 0x5f_c109;
/// The YubiKey admin data object (flags: protected management key, PUK blocked).
pub const OBJ_ADMIN_DATA: u32 = 0x5f_ff00;

/// How long a cached touch lasts.
const TOUCH_CACHE: Duration = Duration::from_secs(15);
/// Largest object PUT DATA accepts (a YubiKey's limit).
const MAX_OBJECT: usize = 3052;
/// Largest chained command.
const MAX_CHAIN: usize = 8192;

// Status words.
const SW_OK: u16 = 0x9000;
const SW_WRONG_LENGTH: u16 = 0x6700;
const SW_SECURITY: u16 = 0x6982;
const SW_BLOCKED: u16 = 0x6983;
const SW_CONDITIONS: u16 = 0x6985;
const SW_DATA_INVALID: u16 = 0x6a80;
const SW_NOT_FOUND: u16 = 0x6a82;
const SW_NO_SPACE: u16 = 0x6a84;
const SW_P1P2: u16 = 0x6a86;
const SW_REF_NOT_FOUND: u16 = 0x6a88;
const SW_WRONG_SLOT: u16 = 0x6b00;
const SW_INS: u16 = 0x6d00;
const SW_CLA: u16 = 0x6e00;

/// The YubiKey firmware version the card claims. It decides the ATR, how the serial
/// number is read (GET SERIAL from 5, the OTP application before), whether GET METADATA
/// exists (5.3) and AES management keys (5.4), and the default management key (AES-192
/// from 5.7).
pub type Version = [u8; 3];

/// What the holder does when the card waits for a touch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TouchMode {
    /// Touches at once.
    #[default]
    Auto,
    /// Never touches: operations that need a touch fail with `6982`, as a YubiKey does
    /// after its touch timeout.
    Timeout,
}

/// The options a card is made with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CardConfig {
    /// The serial number.
    pub serial: u32,
    /// The firmware version.
    pub version: Version,
    /// What the holder does when a touch is needed.
    pub touch: TouchMode,
}

impl CardConfig {
    /// A YubiKey 5 (firmware 5.4.3, 3DES default management key) with this serial.
    pub fn new(serial: u32) -> Self {
        Self {
            serial,
            version: [5, 4, 3],
            touch: TouchMode::Auto,
        }
    }

    /// The same, with another firmware version.
    pub fn version(mut self, version: Version) -> Self {
        self.version = version;
        self
    }

    /// The same, with another touch behaviour.
    pub fn touch(mut self, touch: TouchMode) -> Self {
        self.touch = touch;
        self
    }
}

/// PIN policy of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinPolicy {
    /// No PIN needed.
    Never,
    /// The PIN once per session.
    Once,
    /// The PIN before each private-key operation.
    Always,
}

impl PinPolicy {
    fn from_id(id: u8) -> Option<Self> {
        match id {
            1 => Some(Self::Never),
            2 => Some(Self::Once),
            3 => Some(Self::Always),
            _ => None,
        }
    }

    fn id(self) -> u8 {
        match self {
            Self::Never => 1,
            Self::Once => 2,
            Self::Always => 3,
        }
    }

    /// A slot's default: always for 9C, never for 9E, once otherwise.
    fn default_for(slot: u8) -> Self {
        match slot {
            0x9c => Self::Always,
            0x9e => Self::Never,
            _ => Self::Once,
        }
    }
}

/// Touch policy of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TouchPolicy {
    /// No touch.
    Never,
    /// A touch for each private-key operation.
    Always,
    /// A touch, then none for 15 seconds.
    Cached,
}

impl TouchPolicy {
    fn from_id(id: u8) -> Option<Self> {
        match id {
            1 => Some(Self::Never),
            2 => Some(Self::Always),
            3 => Some(Self::Cached),
            _ => None,
        }
    }

    fn id(self) -> u8 {
        match self {
            Self::Never => 1,
            Self::Always => 2,
            Self::Cached => 3,
        }
    }
}

/// Whether a slot's key was generated on the card or imported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Generated on the card.
    Generated,
    /// Imported.
    Imported,
}

/// A key in a slot. The secret is zeroized on drop (`SecretKey` does it).
#[derive(Clone)]
pub(crate) struct SlotKey {
    pub(crate) secret: SecretKey,
    pub(crate) pin: PinPolicy,
    pub(crate) touch: TouchPolicy,
    pub(crate) origin: Origin,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
enum Applet {
    #[default]
    None,
    Piv,
    Otp,
    Mgmt,
}

enum Pending {
    /// GENERAL AUTHENTICATE step 1 sent this witness, encrypted.
    Witness(Zeroizing<Vec<u8>>),
    /// GENERAL AUTHENTICATE sent this challenge in the clear.
    Challenge(Zeroizing<Vec<u8>>),
}

/// What a session (from power-on or SELECT) has proved.
#[derive(Default)]
struct Session {
    applet: Applet,
    pin_verified: bool,
    /// A VERIFY has just succeeded: a key with PIN policy "always" may be used once.
    pin_fresh: bool,
    mgm_authenticated: bool,
    pending: Option<Pending>,
    /// Data of a chained command: (INS, P1, P2, data so far).
    chain: Option<(u8, u8, u8, Vec<u8>)>,
    /// The rest of a long response, for GET RESPONSE.
    out: Vec<u8>,
}

/// A reference value (PIN or PUK) with its retry counter.
#[derive(Clone)]
pub(crate) struct Reference {
    pub(crate) value: Zeroizing<Vec<u8>>,
    pub(crate) max: u8,
    pub(crate) left: u8,
}

impl Reference {
    fn new(value: &str, tries: u8) -> Self {
        Self {
            value: Zeroizing::new(value.as_bytes().to_vec()),
            max: tries,
            left: tries,
        }
    }

    /// Checks a candidate; counts a failure. Returns the status word.
    fn check(&mut self, candidate: &[u8]) -> u16 {
        if self.left == 0 {
            return SW_BLOCKED;
        }
        if bool::from(candidate.ct_eq(&self.value)) {
            self.left = self.max;
            SW_OK
        } else {
            self.left -= 1;
            0x63c0 | u16::from(self.left.min(15))
        }
    }
}

/// A virtual YubiKey: its persistent state (PIN, PUK, management key, keys, data objects)
/// and the state of the current session.
///
/// `Debug` shows the serial number and version only: never the PIN, PUK, management key
/// or private keys.
pub struct Card {
    pub(crate) serial: u32,
    pub(crate) version: Version,
    touch_mode: TouchMode,
    pub(crate) pin: Reference,
    pub(crate) puk: Reference,
    pub(crate) mgm: MgmKey,
    pub(crate) mgm_touch: bool,
    pub(crate) keys: BTreeMap<u8, SlotKey>,
    pub(crate) objects: BTreeMap<u32, Vec<u8>>,
    session: Session,
    touches: u32,
    last_touch: Option<Instant>,
}

impl fmt::Debug for Card {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Card")
            .field("serial", &self.serial)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// Whether `slot` holds asymmetric keys: 9A, 9C, 9D, 9E and the retired slots 82-95.
pub fn is_key_slot(slot: u8) -> bool {
    matches!(slot, 0x9a | 0x9c | 0x9d | 0x9e | 0x82..=0x95)
}

/// The data object that holds the certificate of a key slot.
pub fn cert_object(slot: u8) -> Option<u32> {
    match slot {
        0x9a => Some(0x5f_c105),
        0x9c => Some(0x5f_c10a),
        0x9d => Some(0x5f_c10b),
        0x9e => Some(0x5f_c101),
        0x82..=0x95 => Some(0x5f_c10d + u32::from(slot - 0x82)),
        _ => None,
    }
}

fn strip_padding(data: &[u8]) -> &[u8] {
    let end = data.iter().position(|&b| b == 0xff).unwrap_or(data.len());
    &data[..end]
}

fn point(key: &PublicKey) -> Vec<u8> {
    key.to_encoded_point(false).as_bytes().to_vec()
}

fn sw(code: u16) -> (Vec<u8>, u16) {
    (Vec::new(), code)
}

impl Card {
    /// A card as it leaves the factory: default PIN, PUK and management key, no keys, no
    /// data objects.
    pub fn new(config: CardConfig) -> Self {
        Self {
            serial: config.serial,
            version: config.version,
            touch_mode: config.touch,
            pin: Reference::new(DEFAULT_PIN, DEFAULT_TRIES),
            puk: Reference::new(DEFAULT_PUK, DEFAULT_TRIES),
            mgm: MgmKey::factory_default(config.version),
            mgm_touch: false,
            keys: BTreeMap::new(),
            objects: BTreeMap::new(),
            session: Session::default(),
            touches: 0,
            last_touch: None,
        }
    }

    /// The serial number.
    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// The firmware version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The Answer To Reset: a YubiKey 4's or a YubiKey 5's (hosts tell them apart by it).
    /// Both offer T=1.
    pub fn atr(&self) -> Vec<u8> {
        let historical: &[u8] = if self.version[0] >= 5 {
            &[
                0x80, 0x73, 0xc0, 0x21, 0xc0, 0x57, 0x59, 0x75, 0x62, 0x69, 0x4b, 0x65, 0x79,
            ]
        } else {
            b"Yubikey4"
        };
        // TS; T0 (TA1 TB1 TC1 TD1 follow, K historical bytes); TA1 TB1 TC1; TD1 (TD2
        // follows, T=1); TD2 (TA3 TB3 follow, T=1); TA3 (IFSC) TB3 (BWI/CWI): the
        // YubiKey ATRs `3B F8 13 00 00 81 31 FE 15 ...` and `3B FD 13 00 00 81 31 FE 15 ...`.
        let mut atr = vec![
            0x3b,
            0xf0 | historical.len() as u8,
            0x13,
            0x00,
            0x00,
            0x81,
            0x31,
            0xfe,
            0x15,
        ];
        atr.extend_from_slice(historical);
        let tck = atr[1..].iter().fold(0u8, |a, b| a ^ b);
        atr.push(tck);
        atr
    }

    /// Changes what the holder does when a touch is needed.
    pub fn set_touch_mode(&mut self, mode: TouchMode) {
        self.touch_mode = mode;
    }

    /// How many touches the holder has given.
    pub fn touches(&self) -> u32 {
        self.touches
    }

    /// PIN tries left (0: blocked).
    pub fn pin_tries_left(&self) -> u8 {
        self.pin.left
    }

    /// PUK tries left (0: blocked).
    pub fn puk_tries_left(&self) -> u8 {
        self.puk.left
    }

    /// The public key in a slot, if any.
    pub fn public_key(&self, slot: u8) -> Option<PublicKey> {
        self.keys.get(&slot).map(|k| k.secret.public_key())
    }

    /// A data object's value, if present.
    pub fn object(&self, tag: u32) -> Option<&[u8]> {
        self.objects.get(&tag).map(Vec::as_slice)
    }

    /// The management key's algorithm.
    pub fn management_key_algorithm(&self) -> MgmAlgorithm {
        self.mgm.algorithm()
    }

    /// Test set-up, as an administrator tool would do it: sets the PIN and PUK (6 to 8
    /// bytes each) and resets their counters.
    pub fn set_pin_and_puk(&mut self, pin: &str, puk: &str) {
        self.pin = Reference::new(pin, self.pin.max);
        self.puk = Reference::new(puk, self.puk.max);
    }

    /// Test set-up: sets the management key.
    pub fn set_management_key(&mut self, key: MgmKey) {
        self.mgm = key;
    }

    /// Test set-up, as `ykman piv access change-management-key --protect` does it: a new
    /// random management key of `algorithm`, stored in the PIN-protected data object
    /// (`5FC109`: `88 { 89 key }`) and flagged in the admin data (`5FFF00`:
    /// `80 { 81 02 }`).
    pub fn protect_management_key(&mut self, algorithm: MgmAlgorithm) {
        let mut bytes = Zeroizing::new(vec![0u8; algorithm.key_len()]);
        OsRng.fill_bytes(&mut bytes);
        if let Some(key) = MgmKey::new(algorithm, &bytes) {
            self.mgm = key;
        }
        self.objects
            .insert(OBJ_PRINTED, tlv::encode(0x88, &tlv::encode(0x89, &bytes)));
        self.objects.insert(
            OBJ_ADMIN_DATA,
            tlv::encode(0x80, &tlv::encode(0x81, &[0x02])),
        );
    }

    /// Test set-up, as an administrator tool would do it: generates a P-256 key in `slot`.
    /// `None` when `slot` is not a key slot.
    pub fn generate_key(
        &mut self,
        slot: u8,
        pin: PinPolicy,
        touch: TouchPolicy,
    ) -> Option<PublicKey> {
        if !is_key_slot(slot) {
            return None;
        }
        let secret = SecretKey::random(&mut OsRng);
        let public = secret.public_key();
        self.keys.insert(
            slot,
            SlotKey {
                secret,
                pin,
                touch,
                origin: Origin::Generated,
            },
        );
        Some(public)
    }

    /// Card power-on: a new session with nothing selected.
    pub fn power_on(&mut self) {
        self.session = Session::default();
    }

    /// Card power-off.
    pub fn power_off(&mut self) {
        self.session = Session::default();
    }

    /// Card reset: a new session with nothing selected.
    pub fn reset(&mut self) {
        self.session = Session::default();
    }

    /// Processes one command APDU and returns the response APDU (data, then SW1 SW2).
    pub fn transmit(&mut self, apdu: &[u8]) -> Vec<u8> {
        let (data, code) = self.process(apdu);
        let mut out = data;
        out.extend_from_slice(&code.to_be_bytes());
        out
    }

    fn process(&mut self, apdu: &[u8]) -> (Vec<u8>, u16) {
        let (cla, ins, p1, p2, data) = match parse_apdu(apdu) {
            Some(p) => p,
            None => return sw(SW_WRONG_LENGTH),
        };
        if cla & !0x10 != 0 {
            return sw(SW_CLA);
        }
        // GET RESPONSE continues a long answer; any other command drops its rest.
        if ins == 0xc0 {
            return self.get_response();
        }
        self.session.out.clear();

        // Command chaining: collect the parts, then run the whole command.
        let mut data = data.to_vec();
        match self.session.chain.take() {
            Some((cins, cp1, cp2, mut buf)) if (cins, cp1, cp2) == (ins, p1, p2) => {
                buf.extend_from_slice(&data);
                data = buf;
            }
            _ => {}
        }
        if cla & 0x10 != 0 {
            if data.len() > MAX_CHAIN {
                return sw(SW_NO_SPACE);
            }
            self.session.chain = Some((ins, p1, p2, data));
            return sw(SW_OK);
        }
        let data = Zeroizing::new(data);

        if ins == 0xa4 {
            return self.select(p1, &data);
        }
        let (out, code) = match self.session.applet {
            Applet::Piv => self.piv(ins, p1, p2, &data),
            Applet::Otp if ins == 0x01 && p1 == 0x10 => (self.serial.to_be_bytes().to_vec(), SW_OK),
            _ => sw(SW_INS),
        };
        self.respond(out, code)
    }

    /// Sends at most 256 bytes; the rest waits for GET RESPONSE (`61 xx`).
    fn respond(&mut self, mut data: Vec<u8>, code: u16) -> (Vec<u8>, u16) {
        if code != SW_OK || data.len() <= 256 {
            return (data, code);
        }
        self.session.out = data.split_off(256);
        let more = self.session.out.len().min(256) as u16 & 0xff;
        (data, 0x6100 | more)
    }

    fn get_response(&mut self) -> (Vec<u8>, u16) {
        if self.session.out.is_empty() {
            return sw(SW_CONDITIONS);
        }
        let rest = if self.session.out.len() > 256 {
            self.session.out.split_off(256)
        } else {
            Vec::new()
        };
        let chunk = std::mem::replace(&mut self.session.out, rest);
        if self.session.out.is_empty() {
            (chunk, SW_OK)
        } else {
            let more = self.session.out.len().min(256) as u16 & 0xff;
            (chunk, 0x6100 | more)
        }
    }

    fn select(&mut self, p1: u8, aid: &[u8]) -> (Vec<u8>, u16) {
        if p1 != 0x04 {
            return sw(SW_P1P2);
        }
        let matches = |full: &[u8]| aid.len() >= 5 && full.starts_with(aid);
        if matches(&PIV_AID) {
            self.session = Session {
                applet: Applet::Piv,
                ..Session::default()
            };
            // Application property template: the PIV AID's PIX and the allocation
            // authority, as a YubiKey answers.
            let mut apt = Vec::new();
            tlv::push(&mut apt, 0x4f, &PIV_AID[5..]);
            tlv::push(&mut apt, 0x79, &tlv::encode(0x4f, &PIV_AID[..5]));
            (tlv::encode(0x61, &apt), SW_OK)
        } else if matches(&OTP_AID) {
            self.session = Session {
                applet: Applet::Otp,
                ..Session::default()
            };
            // The OTP application answers with its version and status.
            (
                vec![self.version[0], self.version[1], self.version[2], 0, 0, 0],
                SW_OK,
            )
        } else if matches(&MGMT_AID) {
            self.session = Session {
                applet: Applet::Mgmt,
                ..Session::default()
            };
            (
                format!(
                    "Virtual mgr - FW version {}.{}.{}",
                    self.version[0], self.version[1], self.version[2]
                )
                .into_bytes(),
                SW_OK,
            )
        } else {
            sw(SW_NOT_FOUND)
        }
    }

    fn piv(&mut self, ins: u8, p1: u8, p2: u8, data: &[u8]) -> (Vec<u8>, u16) {
        match ins {
            0xfd => (self.version.to_vec(), SW_OK),
            0xf8 if self.version[0] >= 5 => (self.serial.to_be_bytes().to_vec(), SW_OK),
            0x20 => self.verify(p1, p2, data),
            0x24 => self.change_reference(p2, data),
            0x2c => self.reset_retry(p2, data),
            0x87 => self.general_authenticate(p1, p2, data),
            0x47 => self.generate(p2, data),
            0xfe => self.import(p1, p2, data),
            0xcb => self.get_data(p1, p2, data),
            0xdb => self.put_data(p1, p2, data),
            0xf7 if self.version >= [5, 3, 0] => self.metadata(p2),
            0xff => self.apdu_set_management_key(p1, p2, data),
            0xfa => self.set_pin_retries(p1, p2),
            0xfb => self.factory_reset(),
            _ => sw(SW_INS),
        }
    }

    fn verify(&mut self, p1: u8, p2: u8, data: &[u8]) -> (Vec<u8>, u16) {
        if p2 != 0x80 {
            return sw(SW_REF_NOT_FOUND);
        }
        match p1 {
            // YubiKey extension: forget the verified PIN.
            0xff if data.is_empty() => {
                self.session.pin_verified = false;
                self.session.pin_fresh = false;
                return sw(SW_OK);
            }
            0x00 => {}
            _ => return sw(SW_P1P2),
        }
        if data.is_empty() {
            // The retries query: no try is used.
            return sw(if self.pin.left == 0 {
                SW_BLOCKED
            } else if self.session.pin_verified {
                SW_OK
            } else {
                0x63c0 | u16::from(self.pin.left.min(15))
            });
        }
        if data.len() != 8 || strip_padding(data).len() < 6 {
            return sw(SW_DATA_INVALID);
        }
        let code = self.pin.check(strip_padding(data));
        self.session.pin_verified = code == SW_OK;
        self.session.pin_fresh = code == SW_OK;
        sw(code)
    }

    fn change_reference(&mut self, p2: u8, data: &[u8]) -> (Vec<u8>, u16) {
        if data.len() != 16 {
            return sw(SW_DATA_INVALID);
        }
        let (old, new) = data.split_at(8);
        let (old, new) = (strip_padding(old), strip_padding(new));
        if new.len() < 6 {
            return sw(SW_DATA_INVALID);
        }
        let reference = match p2 {
            0x80 => &mut self.pin,
            0x81 => &mut self.puk,
            _ => return sw(SW_REF_NOT_FOUND),
        };
        let code = reference.check(old);
        if code == SW_OK {
            reference.value = Zeroizing::new(new.to_vec());
        }
        self.session.pin_verified = false;
        self.session.pin_fresh = false;
        sw(code)
    }

    fn reset_retry(&mut self, p2: u8, data: &[u8]) -> (Vec<u8>, u16) {
        if p2 != 0x80 {
            return sw(SW_REF_NOT_FOUND);
        }
        if data.len() != 16 {
            return sw(SW_DATA_INVALID);
        }
        let (puk, new) = data.split_at(8);
        let new = strip_padding(new);
        if new.len() < 6 {
            return sw(SW_DATA_INVALID);
        }
        let code = self.puk.check(strip_padding(puk));
        if code == SW_OK {
            self.pin.value = Zeroizing::new(new.to_vec());
            self.pin.left = self.pin.max;
        }
        sw(code)
    }

    /// Waits for the holder's touch under `policy`. False when it does not come.
    fn touch(&mut self, policy: TouchPolicy) -> bool {
        let cached = self.last_touch.is_some_and(|t| t.elapsed() < TOUCH_CACHE);
        if policy == TouchPolicy::Never || (policy == TouchPolicy::Cached && cached) {
            return true;
        }
        match self.touch_mode {
            TouchMode::Auto => {
                self.touches += 1;
                self.last_touch = Some(Instant::now());
                true
            }
            TouchMode::Timeout => false,
        }
    }

    fn general_authenticate(&mut self, p1: u8, p2: u8, data: &[u8]) -> (Vec<u8>, u16) {
        let items = match tlv::parse(data) {
            Ok((t, [])) if t.tag == 0x7c => match tlv::parse_all(t.value) {
                Ok(items) => items,
                Err(_) => return sw(SW_DATA_INVALID),
            },
            _ => return sw(SW_DATA_INVALID),
        };
        if p2 == 0x9b {
            self.authenticate_management(p1, &items)
        } else {
            self.private_key_operation(p1, p2, &items)
        }
    }

    fn authenticate_management(&mut self, p1: u8, items: &[tlv::Tlv<'_>]) -> (Vec<u8>, u16) {
        let alg = self.mgm.algorithm();
        if p1 != alg.id() {
            self.session.pending = None;
            return sw(SW_DATA_INVALID);
        }
        let n = alg.block_len();
        let random = || {
            let mut b = Zeroizing::new(vec![0u8; n]);
            OsRng.fill_bytes(&mut b);
            b
        };
        let shape: Vec<(u16, usize)> = items.iter().map(|t| (t.tag, t.value.len())).collect();
        let pending = self.session.pending.take();
        match shape.as_slice() {
            // Step 1 of mutual authentication: the card's witness, encrypted.
            [(0x80, 0)] => {
                let witness = random();
                let enc = self.mgm.encrypt(&witness);
                self.session.pending = Some(Pending::Witness(witness));
                (tlv::encode(0x7c, &tlv::encode(0x80, &enc)), SW_OK)
            }
            // Step 2: the host returns the witness decrypted, with its own challenge.
            [(0x80, a), (0x81, b)] if *a == n && *b == n => {
                let ok = matches!(&pending, Some(Pending::Witness(w))
                    if bool::from(items[0].value.ct_eq(w)));
                if !ok || (self.mgm_touch && !self.touch(TouchPolicy::Always)) {
                    self.session.mgm_authenticated = false;
                    return sw(SW_SECURITY);
                }
                self.session.mgm_authenticated = true;
                let enc = self.mgm.encrypt(items[1].value);
                (tlv::encode(0x7c, &tlv::encode(0x82, &enc)), SW_OK)
            }
            // Single authentication: the card's challenge in the clear...
            [(0x81, 0)] => {
                let challenge = random();
                let out = tlv::encode(0x7c, &tlv::encode(0x81, &challenge));
                self.session.pending = Some(Pending::Challenge(challenge));
                (out, SW_OK)
            }
            // ...and the host's answer, encrypted.
            [(0x82, a)] if *a == n => {
                let ok = matches!(&pending, Some(Pending::Challenge(c))
                    if bool::from(items[0].value.ct_eq(&self.mgm.encrypt(c))));
                if !ok || (self.mgm_touch && !self.touch(TouchPolicy::Always)) {
                    self.session.mgm_authenticated = false;
                    return sw(SW_SECURITY);
                }
                self.session.mgm_authenticated = true;
                sw(SW_OK)
            }
            _ => sw(SW_DATA_INVALID),
        }
    }

    fn private_key_operation(
        &mut self,
        p1: u8,
        slot: u8,
        items: &[tlv::Tlv<'_>],
    ) -> (Vec<u8>, u16) {
        if !is_key_slot(slot) {
            return sw(SW_P1P2);
        }
        let Some(key) = self.keys.get(&slot) else {
            return sw(SW_NOT_FOUND);
        };
        if p1 != 0x11 {
            return sw(SW_DATA_INVALID);
        }
        let digest = match items {
            [r, c] if (r.tag, r.value.len(), c.tag) == (0x82, 0, 0x81) => c.value,
            _ => return sw(SW_DATA_INVALID),
        };
        let (pin, touch) = (key.pin, key.touch);
        let pin_ok = match pin {
            PinPolicy::Never => true,
            PinPolicy::Once => self.session.pin_verified,
            PinPolicy::Always => self.session.pin_fresh,
        };
        // A PIN verified for "always" serves one operation only.
        self.session.pin_fresh = false;
        if !pin_ok || !self.touch(touch) {
            return sw(SW_SECURITY);
        }
        // ECDSA over the digest the host sends: truncated to, or left-padded to, the
        // 32 bytes of the curve order.
        let mut z = [0u8; 32];
        if digest.len() >= 32 {
            z.copy_from_slice(&digest[..32]);
        } else {
            z[32 - digest.len()..].copy_from_slice(digest);
        }
        let Some(key) = self.keys.get(&slot) else {
            return sw(SW_NOT_FOUND);
        };
        let signing = SigningKey::from(&key.secret);
        let sig: Signature = match signing.sign_prehash(&z) {
            Ok(s) => s,
            Err(_) => return sw(SW_DATA_INVALID),
        };
        let der = sig.to_der();
        (tlv::encode(0x7c, &tlv::encode(0x82, der.as_bytes())), SW_OK)
    }

    /// Reads the policies of GENERATE and IMPORT (`AA`, `AB`), with the slot's defaults.
    fn policies(slot: u8, items: &[tlv::Tlv<'_>]) -> Option<(PinPolicy, TouchPolicy)> {
        let mut pin = PinPolicy::default_for(slot);
        let mut touch = TouchPolicy::Never;
        for t in items {
            match (t.tag, t.value) {
                (0xaa, [0]) | (0xab, [0]) => {}
                (0xaa, [p]) => pin = PinPolicy::from_id(*p)?,
                (0xab, [p]) => touch = TouchPolicy::from_id(*p)?,
                _ => {}
            }
        }
        Some((pin, touch))
    }

    fn generate(&mut self, slot: u8, data: &[u8]) -> (Vec<u8>, u16) {
        if !self.session.mgm_authenticated {
            return sw(SW_SECURITY);
        }
        if !is_key_slot(slot) {
            return sw(SW_WRONG_SLOT);
        }
        let items = match tlv::parse(data) {
            Ok((t, [])) if t.tag == 0xac => match tlv::parse_all(t.value) {
                Ok(items) => items,
                Err(_) => return sw(SW_DATA_INVALID),
            },
            _ => return sw(SW_DATA_INVALID),
        };
        if !items.iter().any(|t| t.tag == 0x80 && t.value == [0x11]) {
            return sw(SW_DATA_INVALID);
        }
        let Some((pin, touch)) = Self::policies(slot, &items) else {
            return sw(SW_DATA_INVALID);
        };
        let Some(public) = self.generate_key(slot, pin, touch) else {
            return sw(SW_WRONG_SLOT);
        };
        (
            tlv::encode(0x7f49, &tlv::encode(0x86, &point(&public))),
            SW_OK,
        )
    }

    fn import(&mut self, alg: u8, slot: u8, data: &[u8]) -> (Vec<u8>, u16) {
        if !self.session.mgm_authenticated {
            return sw(SW_SECURITY);
        }
        if !is_key_slot(slot) {
            return sw(SW_WRONG_SLOT);
        }
        if alg != 0x11 {
            return sw(SW_DATA_INVALID);
        }
        let Ok(items) = tlv::parse_all(data) else {
            return sw(SW_DATA_INVALID);
        };
        let Some(scalar) = items.iter().find(|t| t.tag == 0x06) else {
            return sw(SW_DATA_INVALID);
        };
        let Ok(secret) = SecretKey::from_slice(scalar.value) else {
            return sw(SW_DATA_INVALID);
        };
        let Some((pin, touch)) = Self::policies(slot, &items) else {
            return sw(SW_DATA_INVALID);
        };
        self.keys.insert(
            slot,
            SlotKey {
                secret,
                pin,
                touch,
                origin: Origin::Imported,
            },
        );
        sw(SW_OK)
    }

    /// The object tag of GET/PUT DATA's `5C` element.
    fn object_tag(t: &tlv::Tlv<'_>) -> Option<u32> {
        if t.tag != 0x5c || t.value.is_empty() || t.value.len() > 3 {
            return None;
        }
        Some(t.value.iter().fold(0u32, |a, &b| (a << 8) | u32::from(b)))
    }

    fn get_data(&mut self, p1: u8, p2: u8, data: &[u8]) -> (Vec<u8>, u16) {
        if (p1, p2) != (0x3f, 0xff) {
            return sw(SW_P1P2);
        }
        let tag = match tlv::parse(data) {
            Ok((t, [])) => match Self::object_tag(&t) {
                Some(tag) => tag,
                None => return sw(SW_DATA_INVALID),
            },
            _ => return sw(SW_DATA_INVALID),
        };
        if tag == 0x7e {
            // The discovery object: the PIV AID and the PIN usage policy.
            let mut v = tlv::encode(0x4f, &PIV_AID);
            tlv::push(&mut v, 0x5f2f, &[0x40, 0x00]);
            return (tlv::encode(0x7e, &v), SW_OK);
        }
        // Biometric data and the printed information (which holds a protected management
        // key) need the PIN.
        if matches!(tag, 0x5f_c103 | 0x5f_c108 | OBJ_PRINTED) && !self.session.pin_verified {
            return sw(SW_SECURITY);
        }
        match self.objects.get(&tag) {
            Some(v) => (tlv::encode(0x53, v), SW_OK),
            None => sw(SW_NOT_FOUND),
        }
    }

    fn put_data(&mut self, p1: u8, p2: u8, data: &[u8]) -> (Vec<u8>, u16) {
        if (p1, p2) != (0x3f, 0xff) {
            return sw(SW_P1P2);
        }
        if !self.session.mgm_authenticated {
            return sw(SW_SECURITY);
        }
        let (tag, value) = match tlv::parse_all(data).as_deref() {
            Ok([t, v]) if v.tag == 0x53 => match Self::object_tag(t) {
                Some(tag) if tag != 0x7e => (tag, v.value),
                _ => return sw(SW_DATA_INVALID),
            },
            _ => return sw(SW_DATA_INVALID),
        };
        if value.len() > MAX_OBJECT {
            return sw(SW_NO_SPACE);
        }
        if value.is_empty() {
            self.objects.remove(&tag);
        } else {
            self.objects.insert(tag, value.to_vec());
        }
        sw(SW_OK)
    }

    fn metadata(&mut self, slot: u8) -> (Vec<u8>, u16) {
        let mut out = Vec::new();
        match slot {
            0x80 | 0x81 => {
                let (r, default) = if slot == 0x80 {
                    (&self.pin, crate::card::DEFAULT_PIN)
                } else {
                    (&self.puk, crate::card::DEFAULT_PUK)
                };
                let is_default = r.value.as_slice() == default.as_bytes();
                tlv::push(&mut out, 0x01, &[0xff]);
                tlv::push(&mut out, 0x05, &[u8::from(is_default)]);
                tlv::push(&mut out, 0x06, &[r.max, r.left]);
            }
            0x9b => {
                tlv::push(&mut out, 0x01, &[self.mgm.algorithm().id()]);
                let touch = if self.mgm_touch { 2 } else { 1 };
                tlv::push(&mut out, 0x02, &[0, touch]);
                tlv::push(&mut out, 0x05, &[u8::from(self.mgm.is_default())]);
            }
            s if is_key_slot(s) => {
                let Some(k) = self.keys.get(&s) else {
                    return sw(SW_NOT_FOUND);
                };
                tlv::push(&mut out, 0x01, &[0x11]);
                tlv::push(&mut out, 0x02, &[k.pin.id(), k.touch.id()]);
                let origin = match k.origin {
                    Origin::Generated => 1,
                    Origin::Imported => 2,
                };
                tlv::push(&mut out, 0x03, &[origin]);
                tlv::push(
                    &mut out,
                    0x04,
                    &tlv::encode(0x86, &point(&k.secret.public_key())),
                );
            }
            _ => return sw(SW_NOT_FOUND),
        }
        (out, SW_OK)
    }

    fn apdu_set_management_key(&mut self, p1: u8, p2: u8, data: &[u8]) -> (Vec<u8>, u16) {
        if p1 != 0xff || !matches!(p2, 0xff | 0xfe) {
            return sw(SW_P1P2);
        }
        if !self.session.mgm_authenticated {
            return sw(SW_SECURITY);
        }
        let (alg, key) = match data {
            [alg, 0x9b, len, key @ ..] if usize::from(*len) == key.len() => (*alg, key),
            _ => return sw(SW_DATA_INVALID),
        };
        let Some(alg) = MgmAlgorithm::from_id(alg) else {
            return sw(SW_DATA_INVALID);
        };
        if alg != MgmAlgorithm::TripleDes && self.version < [5, 4, 0] {
            return sw(SW_DATA_INVALID);
        }
        let Some(new) = MgmKey::new(alg, key) else {
            return sw(SW_DATA_INVALID);
        };
        self.mgm = new;
        self.mgm_touch = p2 == 0xfe;
        sw(SW_OK)
    }

    fn set_pin_retries(&mut self, pin_tries: u8, puk_tries: u8) -> (Vec<u8>, u16) {
        if !self.session.mgm_authenticated || !self.session.pin_verified {
            return sw(SW_SECURITY);
        }
        if pin_tries == 0 || puk_tries == 0 {
            return sw(SW_P1P2);
        }
        self.pin = Reference::new(DEFAULT_PIN, pin_tries);
        self.puk = Reference::new(DEFAULT_PUK, puk_tries);
        self.session.pin_verified = false;
        self.session.pin_fresh = false;
        sw(SW_OK)
    }

    fn factory_reset(&mut self) -> (Vec<u8>, u16) {
        if self.pin.left != 0 || self.puk.left != 0 {
            return sw(SW_CONDITIONS);
        }
        let fresh = Card::new(CardConfig {
            serial: self.serial,
            version: self.version,
            touch: self.touch_mode,
        });
        let touches = self.touches;
        *self = fresh;
        self.touches = touches;
        self.session.applet = Applet::Piv;
        sw(SW_OK)
    }
}

/// Splits a short APDU: CLA INS P1 P2 [Lc data] [Le]. `None` for inconsistent lengths.
fn parse_apdu(apdu: &[u8]) -> Option<(u8, u8, u8, u8, &[u8])> {
    let (header, body) = apdu.split_at_checked(4)?;
    let [cla, ins, p1, p2] = <[u8; 4]>::try_from(header).ok()?;
    let data: &[u8] = match body {
        // Case 1 (no body) and case 2 (Le only).
        [] | [_] => &[],
        [lc, rest @ ..] => {
            let lc = usize::from(*lc);
            // Case 3 (Lc data) or case 4 (Lc data Le).
            if rest.len() == lc || rest.len() == lc + 1 {
                &rest[..lc]
            } else {
                return None;
            }
        }
    };
    Some((cla, ins, p1, p2, data))
}

#[cfg(test)]
mod tests;
