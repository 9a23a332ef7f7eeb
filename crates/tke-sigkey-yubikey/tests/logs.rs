//! No PIN and no management key in any log record, at any level, once records pass
//! `is_safe_to_log` — and proof that without the filter the `yubikey` crate's trace
//! records do show the PIN (so this test would see a leak).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};

use common::{name, pin};
use tke_piv_vcard::{fixture::Bench, Card, CardConfig, MgmAlgorithm as VMgm, MgmKey};
use tke_sigkey::Signer as _;
use tke_sigkey_yubikey::{
    is_safe_to_log, Enrollment, ManagementKey, ManagementKeySource, NoTouchPrompt, PinPolicy, Slot,
    TouchPolicy, YubiKeySigner,
};

/// Every record, and the records that pass the filter, as text.
struct Capture {
    all: Mutex<String>,
    safe: Mutex<String>,
}

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        let line = format!(
            "[{} {}] {}\n",
            record.level(),
            record.target(),
            record.args()
        );
        if is_safe_to_log(record.metadata()) {
            self.safe.lock().unwrap().push_str(&line);
        }
        self.all.lock().unwrap().push_str(&line);
    }
    fn flush(&self) {}
}

/// The forms a secret takes in log text: as typed, and as the `yubikey` crate's `Debug`
/// of byte vectors and APDUs (decimal lists), and in hex.
fn forms(secret: &[u8]) -> Vec<String> {
    let dec = |sep: &str| {
        secret
            .iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(sep)
    };
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let mut v = vec![dec(", "), hex.clone(), hex.to_uppercase()];
    if let Ok(s) = std::str::from_utf8(secret) {
        v.push(s.to_owned());
    }
    v
}

#[test]
fn no_pin_or_management_key_in_logs_at_trace_level() {
    let capture: &'static Capture = Box::leak(Box::new(Capture {
        all: Mutex::new(String::new()),
        safe: Mutex::new(String::new()),
    }));
    log::set_logger(capture).unwrap();
    log::set_max_level(log::LevelFilter::Trace);

    const PIN: &str = "73915824";
    const MGM: [u8; 24] = [
        0x3c, 0x71, 0x9a, 0x5e, 0x02, 0xd4, 0x86, 0x1b, 0xe7, 0x40, 0x2f, 0xc8, 0x95, 0x6a, 0x13,
        0xbd, 0x58, 0x0e, 0xf1, 0x27, 0x9c, 0x64, 0xa3, 0x3e,
    ];
    let bench = Bench::acquire();
    let mut card = Card::new(CardConfig::new(31337));
    card.set_pin_and_puk(PIN, "24681357");
    card.set_management_key(MgmKey::new(VMgm::TripleDes, &MGM).unwrap());
    let _c = bench.insert(0, card);

    // Enrol with a given management key, sign, and fail a PIN once.
    let mgm = ManagementKey::from_hex(&MGM.iter().map(|b| format!("{b:02x}")).collect::<String>())
        .unwrap();
    let signer = Enrollment::open(None, Slot::SIGNATURE)
        .unwrap()
        .generate(
            &name("olga"),
            pin(PIN),
            &ManagementKeySource::Given(mgm),
            PinPolicy::Always,
            TouchPolicy::Never,
            false,
            Arc::new(NoTouchPrompt),
        )
        .unwrap();
    let (r, cert) = (signer.reference(), signer.certificate().clone());
    signer.sign(b"logged?").unwrap();
    drop(signer);
    let s = YubiKeySigner::open(&r, cert.clone(), pin(PIN), Arc::new(NoTouchPrompt)).unwrap();
    s.sign(b"again").unwrap();
    drop(s);
    assert!(YubiKeySigner::open(&r, cert, pin("11112222"), Arc::new(NoTouchPrompt)).is_err());

    let all = capture.all.lock().unwrap().clone();
    let safe = capture.safe.lock().unwrap().clone();
    // The test sees what it must: the yubikey crate traced the VERIFY APDU with the PIN.
    assert!(
        all.contains(&forms(PIN.as_bytes())[0]),
        "expected the unfiltered trace to show the PIN bytes; the test would not see a leak"
    );
    assert!(
        safe.contains("YubiKey 31337"),
        "our own records pass:\n{safe}"
    );
    for secret in [PIN.as_bytes(), b"11112222", &MGM[..], b"24681357"] {
        for form in forms(secret) {
            assert!(
                !safe.contains(&form),
                "{form:?} in the filtered log:\n{safe}"
            );
        }
    }
    // The management key never reaches a record at all (ours are filtered by design,
    // `yubikey` never sees it: authentication uses our own APDUs).
    for form in forms(&MGM) {
        assert!(!all.contains(&form), "{form:?} in the unfiltered log");
    }
}
