//! The YubiKey signer end to end through pcscd and vsmartcard's virtual reader, against
//! the virtual YubiKey of `tke-piv-vcard`: enrolment, the shared signer conformance suite,
//! registering a key that yubico-piv-tool made, and every error an operator can meet.
//! A missing PC/SC component fails these tests (ci/setup.sh installs them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{process::Command, sync::Arc};

use common::{enroll, name, pin, Touches};
use p256::{ecdsa::signature::Verifier, pkcs8::DecodePublicKey};
use tke_piv_vcard::{fixture::Bench, Card, CardConfig, MgmAlgorithm as VMgm, MgmKey, TouchMode};
use tke_proto::AdminCertificate;
use tke_sigkey::{conformance, Signer, SignerKind};
use tke_sigkey_yubikey::{
    CertificateWrite, Enrollment, ManagementKey, ManagementKeySource, MgmAlgorithm, NoTouchPrompt,
    PinPolicy, Slot, SlotCertificate, SlotContent, TouchPolicy, YubiKeyError, YubiKeySigner,
};
use tke_workstation::YubiKeyRef;

const ALWAYS_NEVER: (PinPolicy, TouchPolicy) = (PinPolicy::Always, TouchPolicy::Never);

fn slot(s: &str) -> Slot {
    s.parse().unwrap()
}

fn open(r: &YubiKeyRef, cert: &AdminCertificate, p: &str) -> Result<YubiKeySigner, YubiKeyError> {
    YubiKeySigner::open(r, cert.clone(), pin(p), Arc::new(NoTouchPrompt))
}

#[test]
fn conformance_suite_passes_for_yubikey_signers() {
    let bench = Bench::acquire();
    // A YubiKey 5.4 (3DES management key) and a 5.7 (AES-192 by default).
    let a = enroll(
        &bench,
        0,
        Card::new(CardConfig::new(1001)),
        "alice",
        Slot::SIGNATURE,
        ALWAYS_NEVER,
    );
    let b = enroll(
        &bench,
        1,
        Card::new(CardConfig::new(1002).version([5, 7, 1])),
        "bob",
        slot("9a"),
        (PinPolicy::Once, TouchPolicy::Never),
    );
    assert_eq!(b.card.management_key_algorithm(), VMgm::Aes192);
    let _ca = bench.insert(0, a.card);
    let _cb = bench.insert(1, b.card);
    let alice = open(&a.reference, &a.certificate, "123456").unwrap();
    let bob = open(&b.reference, &b.certificate, "123456").unwrap();
    assert_eq!(alice.kind(), SignerKind::YubiKey);
    assert_eq!(alice.policy(), Some(ALWAYS_NEVER));
    assert_eq!(bob.card().serial, 1002);
    conformance::run_all(&alice, &bob);
}

#[test]
fn enrolment_writes_the_certificate_to_the_slot_with_the_policies_asked() {
    let bench = Bench::acquire();
    let e = enroll(
        &bench,
        0,
        Card::new(CardConfig::new(2001)),
        "carol",
        Slot::SIGNATURE,
        (PinPolicy::Always, TouchPolicy::Cached),
    );
    assert_eq!(
        e.reference,
        YubiKeyRef {
            serial: 2001,
            slot: 0x9c
        }
    );
    // The slot's certificate object holds the administrator certificate, as yubikey and
    // yubico-piv-tool write it (70 DER, 71 00, FE).
    let object = e.card.object(0x5f_c10a).unwrap();
    let der = e.certificate.der();
    assert_eq!(object[0], 0x70);
    assert!(object.windows(der.len()).any(|w| w == der));
    assert_eq!(
        e.card.public_key(0x9c).unwrap(),
        *e.certificate.public_key()
    );
    assert_eq!(e.certificate.name().as_str(), "carol");
    // Another workstation finds the certificate in the slot and registers it as is.
    let _c = bench.insert(0, e.card);
    let en = Enrollment::open(None, Slot::SIGNATURE).unwrap();
    match en.content() {
        SlotContent::Key {
            policy,
            certificate,
            ..
        } => {
            assert_eq!(*policy, Some((PinPolicy::Always, TouchPolicy::Cached)));
            assert_eq!(
                *certificate,
                SlotCertificate::Admin(Box::new(e.certificate.clone()))
            );
        }
        other => panic!("{other:?}"),
    }
    let touches = Arc::new(Touches::default());
    let (signer, write) = en
        .register_existing(
            &name("carol"),
            pin("123456"),
            &ManagementKeySource::Default,
            false,
            touches.clone(),
        )
        .unwrap();
    assert_eq!(write, CertificateWrite::Kept);
    assert_eq!(signer.certificate(), &e.certificate);
    let sig = signer.sign(b"hello").unwrap();
    e.certificate
        .verifying_key()
        .verify(b"hello", &sig)
        .unwrap();
    assert_eq!(touches.count(), 1, "cached touch: the prompt is shown");
}

fn piv_tool(args: &[&str]) -> String {
    let o = Command::new("yubico-piv-tool")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run yubico-piv-tool ({e}): install it with ci/setup.sh")
        });
    assert!(
        o.status.success(),
        "yubico-piv-tool {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn a_key_generated_by_yubico_piv_tool_is_registered_and_signs() {
    let bench = Bench::acquire();
    let inserted = bench.insert(0, Card::new(CardConfig::new(3001)));
    let pem = piv_tool(&[
        "-r",
        inserted.reader(),
        "-a",
        "generate",
        "-s",
        "9c",
        "-A",
        "ECCP256",
    ]);
    let public = p256::PublicKey::from_public_key_pem(&pem).unwrap();

    let en = Enrollment::open(Some(3001), Slot::SIGNATURE).unwrap();
    assert!(matches!(
        en.content(),
        SlotContent::Key { public: Some(p), certificate: SlotCertificate::None, .. } if *p == public
    ));
    // Generating over it is refused without confirmation.
    let err = Enrollment::open(Some(3001), Slot::SIGNATURE)
        .unwrap()
        .generate(
            &name("dave"),
            pin("123456"),
            &ManagementKeySource::Default,
            PinPolicy::Always,
            TouchPolicy::Never,
            false,
            Arc::new(NoTouchPrompt),
        )
        .err()
        .unwrap();
    assert!(
        matches!(err, YubiKeyError::SlotOccupied { serial: 3001, .. }),
        "{err:?}"
    );

    let (signer, write) = en
        .register_existing(
            &name("dave"),
            pin("123456"),
            &ManagementKeySource::Default,
            false,
            Arc::new(NoTouchPrompt),
        )
        .unwrap();
    assert_eq!(write, CertificateWrite::Written);
    assert_eq!(*signer.certificate().public_key(), public);
    let sig = signer.sign(b"a TKE command").unwrap();
    p256::ecdsa::VerifyingKey::from(&public)
        .verify(b"a TKE command", &sig)
        .unwrap();
    drop(signer);
    // yubico-piv-tool reads the administrator certificate back from the slot.
    let cert_pem = piv_tool(&[
        "-r",
        inserted.reader(),
        "-a",
        "read-certificate",
        "-s",
        "9c",
    ]);
    let back = AdminCertificate::from_pem(&cert_pem).unwrap();
    assert_eq!(back.name().as_str(), "dave");
    assert_eq!(*back.public_key(), public);
    let card = inserted.remove();
    assert_eq!(
        card.public_key(0x9c),
        Some(public),
        "the key was not changed"
    );
}

#[test]
fn wrong_pin_then_blocked_pin_each_clear_and_nothing_changes() {
    let bench = Bench::acquire();
    let e = enroll(
        &bench,
        0,
        Card::new(CardConfig::new(4001)),
        "erin",
        Slot::SIGNATURE,
        ALWAYS_NEVER,
    );
    let before = e.card.to_json();
    let inserted = bench.insert(0, e.card);
    let err = open(&e.reference, &e.certificate, "000000").unwrap_err();
    assert!(
        matches!(
            err,
            YubiKeyError::WrongPin {
                serial: 4001,
                tries_left: 2
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "wrong PIN for YubiKey 4001: 2 tries left before the PIN is blocked"
    );
    let err = open(&e.reference, &e.certificate, "000000").unwrap_err();
    assert!(err.to_string().contains("1 try left"), "{err}");
    let err = open(&e.reference, &e.certificate, "000000").unwrap_err();
    assert!(
        matches!(err, YubiKeyError::PinBlocked { serial: 4001 }),
        "{err:?}"
    );
    assert!(err.to_string().contains("unblock it with the PUK"), "{err}");
    // The right PIN no longer helps.
    let err = open(&e.reference, &e.certificate, "123456").unwrap_err();
    assert!(matches!(err, YubiKeyError::PinBlocked { .. }), "{err:?}");
    let card = inserted.remove();
    assert_eq!(card.pin_tries_left(), 0);
    // Only the PIN counter changed: same keys, objects, PUK and management key.
    let mut back = Card::from_json(&card.to_json(), TouchMode::Auto).unwrap();
    back.set_pin_and_puk("123456", "12345678");
    assert_eq!(back.to_json(), before);
    // No secret in the messages or Debug output.
    for text in [format!("{err:?}"), err.to_string()] {
        assert!(
            !text.contains("123456") && !text.contains("000000"),
            "{text}"
        );
    }
}

#[test]
fn no_card_and_several_cards_need_a_serial() {
    let bench = Bench::acquire();
    let r = YubiKeyRef {
        serial: 5001,
        slot: 0x9c,
    };
    let (_, _, cert) = {
        let e = enroll(
            &bench,
            0,
            Card::new(CardConfig::new(5001)),
            "frank",
            Slot::SIGNATURE,
            ALWAYS_NEVER,
        );
        (e.card, e.reference, e.certificate)
    };
    // No card at all.
    let err = Enrollment::open(None, Slot::SIGNATURE).err().unwrap();
    assert!(matches!(err, YubiKeyError::NoCard { .. }), "{err:?}");
    assert!(err.to_string().contains("insert the YubiKey"), "{err}");
    let err = open(&r, &cert, "123456").unwrap_err();
    assert!(
        matches!(err, YubiKeyError::NotFound { serial: 5001, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "YubiKey 5001 is not attached (YubiKeys attached: none): insert it and retry"
    );

    // Two cards: without a serial, the error lists both.
    let _a = bench.insert(0, Card::new(CardConfig::new(5101)));
    let _b = bench.insert(1, Card::new(CardConfig::new(5102)));
    let err = Enrollment::open(None, Slot::SIGNATURE).err().unwrap();
    assert!(matches!(err, YubiKeyError::Several { .. }), "{err:?}");
    assert!(err.to_string().contains("5101, 5102"), "{err}");
    let err = open(&r, &cert, "123456").unwrap_err();
    assert!(err.to_string().contains("attached: 5101, 5102"), "{err}");
    assert_eq!(
        Enrollment::open(Some(5102), Slot::SIGNATURE)
            .unwrap()
            .card()
            .serial,
        5102
    );
    let mut serials: Vec<u32> = tke_sigkey_yubikey::list()
        .unwrap()
        .iter()
        .map(|c| c.serial)
        .collect();
    serials.sort();
    assert_eq!(serials, [5101, 5102]);
}

#[test]
fn an_occupied_slot_is_never_overwritten_without_confirmation() {
    let bench = Bench::acquire();
    let e = enroll(
        &bench,
        0,
        Card::new(CardConfig::new(6001)),
        "gina",
        Slot::SIGNATURE,
        ALWAYS_NEVER,
    );
    let before = e.card.to_json();
    let old = e.card.public_key(0x9c).unwrap();
    let inserted = bench.insert(0, e.card);
    let en = Enrollment::open(None, Slot::SIGNATURE).unwrap();
    let err = en
        .generate(
            &name("gina2"),
            pin("123456"),
            &ManagementKeySource::Default,
            PinPolicy::Always,
            TouchPolicy::Never,
            false,
            Arc::new(NoTouchPrompt),
        )
        .err()
        .unwrap();
    assert!(
        matches!(err, YubiKeyError::SlotOccupied { serial: 6001, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("nothing was changed"), "{err}");
    let card = inserted.remove();
    assert_eq!(card.to_json(), before, "the card is unchanged");

    // Confirmed: the key is replaced.
    let inserted = bench.insert(0, card);
    let signer = Enrollment::open(None, Slot::SIGNATURE)
        .unwrap()
        .generate(
            &name("gina2"),
            pin("123456"),
            &ManagementKeySource::Default,
            PinPolicy::Always,
            TouchPolicy::Never,
            true,
            Arc::new(NoTouchPrompt),
        )
        .unwrap();
    assert_ne!(*signer.certificate().public_key(), old);
    drop(signer);
    assert_ne!(inserted.remove().public_key(0x9c), Some(old));
}

#[test]
fn a_reader_held_exclusively_by_another_program_is_busy_not_missing() {
    let bench = Bench::acquire();
    let e = enroll(
        &bench,
        0,
        Card::new(CardConfig::new(7001)),
        "hank",
        Slot::SIGNATURE,
        ALWAYS_NEVER,
    );
    let inserted = bench.insert(0, e.card);
    let holder = bench
        .context()
        .connect(
            inserted.reader_cstr(),
            pcsc::ShareMode::Exclusive,
            pcsc::Protocols::T1,
        )
        .unwrap();
    let err = open(&e.reference, &e.certificate, "123456").unwrap_err();
    assert!(matches!(err, YubiKeyError::ReaderBusy { .. }), "{err:?}");
    assert!(
        err.to_string().contains("in use by another program"),
        "{err}"
    );
    let err = Enrollment::open(None, Slot::SIGNATURE).err().unwrap();
    assert!(matches!(err, YubiKeyError::ReaderBusy { .. }), "{err:?}");
    drop(holder);
    open(&e.reference, &e.certificate, "123456").unwrap();
}

#[test]
fn touch_prompt_and_touch_timeout() {
    let bench = Bench::acquire();
    let mut e = enroll(
        &bench,
        0,
        Card::new(CardConfig::new(8001)),
        "ivan",
        Slot::SIGNATURE,
        (PinPolicy::Once, TouchPolicy::Always),
    );
    assert_eq!(
        e.card.touches(),
        1,
        "the certificate's self-signature needed a touch"
    );
    e.card.set_touch_mode(TouchMode::Timeout);
    let _c = bench.insert(0, e.card);
    let touches = Arc::new(Touches::default());
    let signer = YubiKeySigner::open(
        &e.reference,
        e.certificate.clone(),
        pin("123456"),
        touches.clone(),
    )
    .unwrap();
    let err = signer.sign_digest(&[7; 32]).unwrap_err();
    assert!(
        matches!(err, YubiKeyError::TouchTimeout { serial: 8001, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("not touched in time"), "{err}");
    assert_eq!(touches.count(), 1, "the operator was told to touch");
}

#[test]
fn aes_given_and_pin_protected_management_keys() {
    let bench = Bench::acquire();
    // A custom AES-256 key.
    let mut card = Card::new(CardConfig::new(9001));
    card.set_management_key(MgmKey::new(VMgm::Aes256, &[0x5a; 32]).unwrap());
    let before = card.to_json();
    let inserted = bench.insert(0, card);
    let en = Enrollment::open(None, Slot::SIGNATURE).unwrap();
    let info = en.management_key();
    assert_eq!(info.algorithm, MgmAlgorithm::Aes256);
    assert_eq!(info.is_default, Some(false));
    assert!(!info.pin_protected);
    assert!(
        info.automatic_source().is_none(),
        "a custom key must be given"
    );
    let gen = |en: Enrollment, k: ManagementKeySource| {
        en.generate(
            &name("judy"),
            pin("123456"),
            &k,
            PinPolicy::Always,
            TouchPolicy::Never,
            false,
            Arc::new(NoTouchPrompt),
        )
    };
    let err = gen(en, ManagementKeySource::Default).err().unwrap();
    assert!(
        matches!(
            err,
            YubiKeyError::ManagementKeyLength {
                algorithm: MgmAlgorithm::Aes256,
                given: 24,
                ..
            }
        ),
        "{err:?}"
    );
    let wrong = ManagementKey::from_hex(&"a5".repeat(32)).unwrap();
    let err = gen(
        Enrollment::open(None, Slot::SIGNATURE).unwrap(),
        ManagementKeySource::Given(wrong),
    )
    .err()
    .unwrap();
    assert!(
        matches!(err, YubiKeyError::ManagementKeyRefused { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("nothing was changed"), "{err}");
    let card = inserted.remove();
    assert_eq!(card.to_json(), before, "refused keys change nothing");

    let inserted = bench.insert(0, card);
    let right = ManagementKey::from_hex(&"5a".repeat(32)).unwrap();
    let signer = gen(
        Enrollment::open(None, Slot::SIGNATURE).unwrap(),
        ManagementKeySource::Given(right),
    )
    .unwrap();
    signer.sign(b"x").unwrap();
    drop(signer);
    assert!(inserted.remove().public_key(0x9c).is_some());

    // A PIN-protected AES-128 key, found and used automatically.
    let mut card = Card::new(CardConfig::new(9002));
    card.protect_management_key(VMgm::Aes128);
    let _c = bench.insert(0, card);
    let en = Enrollment::open(None, Slot::SIGNATURE).unwrap();
    assert!(en.management_key().pin_protected);
    let source = en.management_key().automatic_source().unwrap();
    assert!(matches!(source, ManagementKeySource::PinProtected));
    gen(en, source).unwrap();
}

#[test]
fn firmware_4_has_no_metadata_so_generating_needs_confirmation() {
    let bench = Bench::acquire();
    let _c = bench.insert(0, Card::new(CardConfig::new(9101).version([4, 3, 7])));
    let en = Enrollment::open(None, Slot::SIGNATURE).unwrap();
    assert!(matches!(en.content(), SlotContent::Unknown));
    let g = |en: Enrollment, confirm: bool| {
        en.generate(
            &name("kim"),
            pin("123456"),
            &ManagementKeySource::Default,
            PinPolicy::Always,
            TouchPolicy::Never,
            confirm,
            Arc::new(NoTouchPrompt),
        )
    };
    let err = g(en, false).err().unwrap();
    assert!(
        matches!(err, YubiKeyError::SlotMayBeOccupied { .. }),
        "{err:?}"
    );
    let signer = g(Enrollment::open(None, Slot::SIGNATURE).unwrap(), true).unwrap();
    let (r, cert) = (signer.reference(), signer.certificate().clone());
    drop(signer);
    // Opened again: the slot's certificate tells the key; a signature verifies.
    let s = open(&r, &cert, "123456").unwrap();
    assert_eq!(s.policy(), None);
    tke_sigkey::check_usable(&s).unwrap();
}

#[test]
fn a_slot_emptied_or_overwritten_since_registration_is_reported() {
    let bench = Bench::acquire();
    let e = enroll(
        &bench,
        0,
        Card::new(CardConfig::new(9201)),
        "lee",
        Slot::SIGNATURE,
        ALWAYS_NEVER,
    );
    // Another key in the slot now.
    let mut card = e.card;
    card.generate_key(
        0x9c,
        tke_piv_vcard::PinPolicy::Always,
        tke_piv_vcard::TouchPolicy::Never,
    );
    let inserted = bench.insert(0, card);
    let err = open(&e.reference, &e.certificate, "123456").unwrap_err();
    assert!(matches!(err, YubiKeyError::KeyMismatch { .. }), "{err:?}");
    drop(inserted);
    // An empty slot.
    let _c = bench.insert(0, Card::new(CardConfig::new(9201)));
    let err = open(&e.reference, &e.certificate, "123456").unwrap_err();
    assert!(matches!(err, YubiKeyError::SlotEmpty { .. }), "{err:?}");
}

#[test]
fn a_reset_by_another_program_is_survived() {
    let bench = Bench::acquire();
    let e = enroll(
        &bench,
        0,
        Card::new(CardConfig::new(9301)),
        "mia",
        Slot::SIGNATURE,
        ALWAYS_NEVER,
    );
    let inserted = bench.insert(0, e.card);
    let signer = open(&e.reference, &e.certificate, "123456").unwrap();
    signer.sign(b"one").unwrap();
    let other = bench
        .context()
        .connect(
            inserted.reader_cstr(),
            pcsc::ShareMode::Shared,
            pcsc::Protocols::T1,
        )
        .unwrap();
    other
        .disconnect(pcsc::Disposition::ResetCard)
        .map_err(|(_, e)| e)
        .unwrap();
    let sig = signer.sign(b"two").unwrap();
    e.certificate.verifying_key().verify(b"two", &sig).unwrap();
}

#[test]
fn debug_shows_no_pin_or_management_key() {
    let bench = Bench::acquire();
    let e = enroll(
        &bench,
        0,
        Card::new(CardConfig::new(9401)),
        "ned",
        Slot::SIGNATURE,
        ALWAYS_NEVER,
    );
    let _c = bench.insert(0, e.card);
    let signer = open(&e.reference, &e.certificate, "123456").unwrap();
    let d = format!("{signer:?} {:?}", pin("123456"));
    assert!(d.contains("ned") && d.contains("9401"), "{d}");
    assert!(!d.contains("123456"), "{d}");
    let k = ManagementKey::from_hex(&"c3".repeat(24)).unwrap();
    let d = format!("{k:?} {:?}", ManagementKeySource::Given(k.clone()));
    assert!(
        !d.to_lowercase().contains("c3c3") && !d.contains("195"),
        "{d}"
    );
}
