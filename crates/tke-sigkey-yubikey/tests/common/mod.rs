//! Helpers of the YubiKey signer tests: enrol keys on virtual cards, count touches.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use tke_piv_vcard::{fixture::Bench, Card};
use tke_proto::{AdminCertificate, AdminName};
use tke_sigkey::Signer as _;
use tke_sigkey_yubikey::{
    CardInfo, Enrollment, ManagementKeySource, NoTouchPrompt, Pin, PinPolicy, Slot, TouchPolicy,
    TouchPrompt,
};
use tke_workstation::YubiKeyRef;

pub fn name(n: &str) -> AdminName {
    AdminName::new(n).unwrap()
}

pub fn pin(p: &str) -> Pin {
    Pin::new(p).unwrap()
}

/// Counts the touch prompts.
#[derive(Default)]
pub struct Touches(pub AtomicUsize);

impl TouchPrompt for Touches {
    fn touch(&self, _card: &CardInfo, _slot: Slot, _policy: TouchPolicy) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Touches {
    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// An enrolled key: the card's state afterwards, the reference and the certificate.
pub struct Enrolled {
    pub card: Card,
    pub reference: YubiKeyRef,
    pub certificate: AdminCertificate,
}

/// Inserts `card` into reader `index`, generates a key in `slot` for `admin` with the
/// default management key and PIN 123456, and removes the card again.
pub fn enroll(
    bench: &Bench,
    index: usize,
    card: Card,
    admin: &str,
    slot: Slot,
    policies: (PinPolicy, TouchPolicy),
) -> Enrolled {
    let inserted = bench.insert(index, card);
    let e = Enrollment::open(Some(inserted.serial()), slot).unwrap();
    let signer = e
        .generate(
            &name(admin),
            pin("123456"),
            &ManagementKeySource::Default,
            policies.0,
            policies.1,
            false,
            Arc::new(NoTouchPrompt),
        )
        .unwrap();
    let reference = signer.reference();
    let certificate = signer.certificate().clone();
    drop(signer);
    Enrolled {
        card: inserted.remove(),
        reference,
        certificate,
    }
}
