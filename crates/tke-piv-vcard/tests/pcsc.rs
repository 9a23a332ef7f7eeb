//! The virtual card through the real PC/SC stack: pcscd, vsmartcard's vpcd, and the two
//! hosts that must accept it, `yubico-piv-tool` and the `yubikey` crate. A missing
//! component fails these tests (see ci/setup.sh); nothing is skipped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use p256::{
    ecdsa::{signature::hazmat::PrehashVerifier, Signature, VerifyingKey},
    pkcs8::DecodePublicKey,
};
use tke_piv_vcard::{fixture::Bench, Card, CardConfig, TouchMode};
use yubikey::{
    piv::{self, AlgorithmId, SlotId},
    YubiKey,
};

fn piv_tool(args: &[&str]) -> Output {
    Command::new("yubico-piv-tool")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run yubico-piv-tool ({e}): install it with ci/setup.sh"))
}

fn piv_tool_ok(args: &[&str]) -> String {
    let o = piv_tool(args);
    assert!(
        o.status.success(),
        "yubico-piv-tool {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn yubico_piv_tool_status_sees_the_virtual_card() {
    let bench = Bench::acquire();
    let _card = bench.insert(0, Card::new(CardConfig::new(12345678)));
    let out = piv_tool_ok(&["-r", "Virtual", "-a", "status"]);
    for line in [
        "Version:\t5.4.3",
        "Serial Number:\t12345678",
        "PIN tries left:\t3",
    ] {
        assert!(out.contains(line), "{line:?} missing from:\n{out}");
    }
}

#[test]
fn yubico_piv_tool_generates_and_the_yubikey_crate_signs() {
    let bench = Bench::acquire();
    let inserted = bench.insert(0, Card::new(CardConfig::new(20240001)));
    // The default 3DES management key; PIN policy once.
    let pem = piv_tool_ok(&[
        "-r",
        "Virtual PCD 00 00",
        "-a",
        "generate",
        "-s",
        "9c",
        "-A",
        "ECCP256",
        "--pin-policy",
        "once",
    ]);
    let public = VerifyingKey::from_public_key_pem(&pem).expect("a P-256 public key");

    let mut yk = YubiKey::open().unwrap();
    assert_eq!(yk.serial().0, 20240001);
    assert_eq!(yk.version().major, 5);
    let meta = piv::metadata(&mut yk, SlotId::Signature).unwrap();
    assert_eq!(
        meta.policy,
        Some((yubikey::PinPolicy::Once, yubikey::TouchPolicy::Never))
    );
    // Without the PIN the card refuses; with it, the signature verifies.
    let digest = [0x42u8; 32];
    assert!(piv::sign_data(&mut yk, &digest, AlgorithmId::EccP256, SlotId::Signature).is_err());
    assert!(matches!(
        yk.verify_pin(b"000000"),
        Err(yubikey::Error::WrongPin { tries: 2 })
    ));
    yk.verify_pin(b"123456").unwrap();
    let der = piv::sign_data(&mut yk, &digest, AlgorithmId::EccP256, SlotId::Signature).unwrap();
    let sig = Signature::from_der(&der).unwrap();
    public.verify_prehash(&digest, &sig).unwrap();
    drop(yk);

    let card = inserted.remove();
    assert_eq!(card.pin_tries_left(), 3, "the right PIN reset the counter");
    assert_eq!(
        card.public_key(0x9c).map(|k| VerifyingKey::from(&k)),
        Some(public)
    );
}

#[test]
fn two_cards_in_two_readers() {
    let bench = Bench::acquire();
    let _a = bench.insert(0, Card::new(CardConfig::new(111)));
    let _b = bench.insert(1, Card::new(CardConfig::new(222).version([4, 3, 7])));
    // `YubiKey::open` refuses to choose; by serial both are found (the YubiKey 4 through
    // the OTP application).
    assert!(YubiKey::open().is_err());
    assert_eq!(
        YubiKey::open_by_serial(yubikey::Serial(222))
            .unwrap()
            .version()
            .major,
        4
    );
    assert_eq!(
        YubiKey::open_by_serial(yubikey::Serial(111))
            .unwrap()
            .name(),
        "Virtual PCD 00 00"
    );
    let out = piv_tool_ok(&["-r", "Virtual PCD 00 01", "-a", "status"]);
    assert!(out.contains("Serial Number:\t222"), "{out}");
}

#[test]
fn touch_timeout_is_refused_like_a_yubikey() {
    let bench = Bench::acquire();
    let mut card = Card::new(CardConfig::new(333).touch(TouchMode::Timeout));
    card.generate_key(
        0x9a,
        tke_piv_vcard::PinPolicy::Never,
        tke_piv_vcard::TouchPolicy::Always,
    );
    let _c = bench.insert(0, card);
    let mut yk = YubiKey::open().unwrap();
    let err = piv::sign_data(
        &mut yk,
        &[1; 32],
        AlgorithmId::EccP256,
        SlotId::Authentication,
    )
    .unwrap_err();
    assert_eq!(err, yubikey::Error::AuthenticationError, "6982");
}

/// Kills the binary when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_binary(args: &[&str]) -> Running {
    Running(
        Command::new(env!("CARGO_BIN_EXE_tke-piv-vcard"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[test]
fn the_binary_serves_a_card_and_keeps_its_state_across_restarts() {
    let bench = Bench::acquire();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("card.json");
    let state = state.to_str().unwrap();
    let args = [
        "--port",
        "35964",
        "--serial",
        "4711",
        "--firmware",
        "5.7.1",
        "--state",
        state,
    ];
    let card = start_binary(&args);
    assert!(bench.wait_present(1), "pcscd never saw the binary's card");
    let out = piv_tool_ok(&["-r", "Virtual PCD 00 01", "-a", "status"]);
    assert!(out.contains("Serial Number:\t4711"), "{out}");
    assert!(out.contains("Version:\t5.7.1"), "{out}");
    // A wrong PIN, recorded in the state file.
    let o = piv_tool(&[
        "-r",
        "Virtual PCD 00 01",
        "-a",
        "verify-pin",
        "-P",
        "000000",
    ]);
    assert!(!o.status.success());
    drop(card);
    assert!(bench.wait_empty(1));

    let _card = start_binary(&args);
    assert!(bench.wait_present(1));
    let out = piv_tool_ok(&["-r", "Virtual PCD 00 01", "-a", "status"]);
    assert!(out.contains("PIN tries left:\t2"), "{out}");
    std::thread::sleep(Duration::from_millis(10));
}
