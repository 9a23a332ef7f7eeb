//! The card at APDU level, without PC/SC: a minimal host in a few functions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use p256::ecdsa::{signature::hazmat::PrehashVerifier, VerifyingKey};

use super::*;
use crate::mgm::DEFAULT_MGM_KEY;

fn apdu(cla: u8, ins: u8, p1: u8, p2: u8, data: &[u8]) -> Vec<u8> {
    let mut a = vec![cla, ins, p1, p2];
    if !data.is_empty() {
        a.push(u8::try_from(data.len()).unwrap());
        a.extend_from_slice(data);
    }
    a
}

fn send(card: &mut Card, ins: u8, p1: u8, p2: u8, data: &[u8]) -> (Vec<u8>, u16) {
    split(card.transmit(&apdu(0, ins, p1, p2, data)))
}

fn split(mut r: Vec<u8>) -> (Vec<u8>, u16) {
    let sw = u16::from_be_bytes([r[r.len() - 2], r[r.len() - 1]]);
    r.truncate(r.len() - 2);
    (r, sw)
}

fn select(card: &mut Card) {
    let (_, sw) = send(card, 0xa4, 0x04, 0x00, &PIV_AID[..5]);
    assert_eq!(sw, 0x9000);
}

fn pad8(pin: &str) -> Vec<u8> {
    let mut v = pin.as_bytes().to_vec();
    v.resize(8, 0xff);
    v
}

fn verify(card: &mut Card, pin: &str) -> u16 {
    send(card, 0x20, 0x00, 0x80, &pad8(pin)).1
}

fn tries(card: &mut Card) -> u16 {
    send(card, 0x20, 0x00, 0x80, &[]).1
}

/// Mutual authentication with the management key, as libykpiv and `yubikey` do it.
fn authenticate(card: &mut Card, key: &MgmKey) -> u16 {
    let alg = key.algorithm().id();
    let (r, sw) = send(card, 0x87, alg, 0x9b, &[0x7c, 0x02, 0x80, 0x00]);
    if sw != 0x9000 {
        return sw;
    }
    let n = key.algorithm().block_len();
    let witness = key.decrypt(&r[4..4 + n]);
    let challenge = vec![0x5a; n];
    let mut inner = tlv::encode(0x80, &witness);
    tlv::push(&mut inner, 0x81, &challenge);
    let (r, sw) = send(card, 0x87, alg, 0x9b, &tlv::encode(0x7c, &inner));
    if sw == 0x9000 {
        assert_eq!(&r[4..4 + n], key.encrypt(&challenge).as_slice());
    }
    sw
}

fn default_key() -> MgmKey {
    MgmKey::new(MgmAlgorithm::TripleDes, &DEFAULT_MGM_KEY).unwrap()
}

fn sign(card: &mut Card, slot: u8, digest: &[u8]) -> (Vec<u8>, u16) {
    let mut inner = tlv::encode(0x82, &[]);
    tlv::push(&mut inner, 0x81, digest);
    send(card, 0x87, 0x11, slot, &tlv::encode(0x7c, &inner))
}

fn fresh() -> Card {
    let mut c = Card::new(CardConfig::new(12345678));
    c.power_on();
    select(&mut c);
    c
}

#[test]
fn atrs_are_the_yubikey_ones() {
    // libykpiv's YKPIV_ATR_YK5 and YKPIV_ATR_YK4.
    let yk5 = "3bfd1300008131fe158073c021c057597562694b657940";
    let yk4 = "3bf81300008131fe15597562696b657934d4";
    assert_eq!(hex::encode(Card::new(CardConfig::new(1)).atr()), yk5);
    assert_eq!(
        hex::encode(Card::new(CardConfig::new(1).version([4, 3, 7])).atr()),
        yk4
    );
}

#[test]
fn select_version_serial() {
    let mut c = Card::new(CardConfig::new(0x01020304));
    c.power_on();
    // Nothing selected after power-on.
    assert_eq!(send(&mut c, 0xfd, 0, 0, &[]).1, 0x6d00);
    // An unknown application is not found, and the AID needs its 5-byte prefix.
    assert_eq!(send(&mut c, 0xa4, 4, 0, &[0xa0, 0, 0, 9, 9]).1, 0x6a82);
    assert_eq!(send(&mut c, 0xa4, 4, 0, &[0xa0, 0, 0, 3]).1, 0x6a82);
    let (r, sw) = send(&mut c, 0xa4, 4, 0, &PIV_AID);
    assert_eq!(sw, 0x9000);
    assert_eq!(r[0], 0x61);
    assert_eq!(send(&mut c, 0xfd, 0, 0, &[]), (vec![5, 4, 3], 0x9000));
    assert_eq!(send(&mut c, 0xf8, 0, 0, &[]), (vec![1, 2, 3, 4], 0x9000));
}

#[test]
fn a_yubikey_4_gives_its_serial_through_the_otp_application_only() {
    let mut c = Card::new(CardConfig::new(777).version([4, 3, 7]));
    c.power_on();
    select(&mut c);
    assert_eq!(send(&mut c, 0xf8, 0, 0, &[]).1, 0x6d00);
    assert_eq!(
        send(&mut c, 0xf7, 0, 0x9c, &[]).1,
        0x6d00,
        "no metadata before 5.3"
    );
    assert_eq!(send(&mut c, 0xa4, 4, 0, &OTP_AID).1, 0x9000);
    assert_eq!(
        send(&mut c, 0x01, 0x10, 0, &[]),
        (777u32.to_be_bytes().to_vec(), 0x9000)
    );
    // PIV commands go nowhere until PIV is selected again.
    assert_eq!(send(&mut c, 0xfd, 0, 0, &[]).1, 0x6d00);
    select(&mut c);
    assert_eq!(send(&mut c, 0xfd, 0, 0, &[]).0, vec![4, 3, 7]);
}

#[test]
fn pin_tries_block_and_the_puk_unblocks() {
    let mut c = fresh();
    assert_eq!(tries(&mut c), 0x63c3, "the retries query uses no try");
    assert_eq!(tries(&mut c), 0x63c3);
    assert_eq!(verify(&mut c, "000000"), 0x63c2);
    assert_eq!(verify(&mut c, "000000"), 0x63c1);
    // A correct PIN resets the counter.
    assert_eq!(verify(&mut c, DEFAULT_PIN), 0x9000);
    assert_eq!(c.pin_tries_left(), 3);
    for expect in [0x63c2, 0x63c1, 0x63c0] {
        assert_eq!(verify(&mut c, "999999"), expect);
    }
    // Blocked: even the right PIN is refused, and the query says blocked.
    assert_eq!(verify(&mut c, DEFAULT_PIN), 0x6983);
    assert_eq!(tries(&mut c), 0x6983);
    // RESET needs both PIN and PUK blocked.
    assert_eq!(send(&mut c, 0xfb, 0, 0, &[]).1, 0x6985);
    // Unblock with the PUK and a new PIN.
    let mut data = pad8(DEFAULT_PUK);
    data.extend(pad8("654321"));
    assert_eq!(send(&mut c, 0x2c, 0, 0x80, &data).1, 0x9000);
    assert_eq!(verify(&mut c, DEFAULT_PIN), 0x63c2);
    assert_eq!(verify(&mut c, "654321"), 0x9000);
    // Malformed PINs cost nothing.
    assert_eq!(send(&mut c, 0x20, 0, 0x80, b"12345").1, 0x6a80);
    assert_eq!(verify(&mut c, "12345"), 0x6a80);
    assert_eq!(c.pin_tries_left(), 3);
}

#[test]
fn change_pin_and_puk_then_reset_when_both_are_blocked() {
    let mut c = fresh();
    let mut data = pad8(DEFAULT_PIN);
    data.extend(pad8("24681357"));
    assert_eq!(send(&mut c, 0x24, 0, 0x80, &data).1, 0x9000);
    assert_eq!(verify(&mut c, "24681357"), 0x9000);
    let mut bad = pad8("00000000");
    bad.extend(pad8("11111111"));
    for expect in [0x63c2, 0x63c1, 0x63c0, 0x6983] {
        assert_eq!(send(&mut c, 0x24, 0, 0x81, &bad).1, expect);
    }
    for _ in 0..3 {
        verify(&mut c, "000000");
    }
    c.generate_key(0x9c, PinPolicy::Always, TouchPolicy::Never);
    assert_eq!(send(&mut c, 0xfb, 0, 0, &[]).1, 0x9000);
    assert_eq!(c.pin_tries_left(), 3);
    assert!(c.public_key(0x9c).is_none(), "reset deletes the keys");
    assert_eq!(verify(&mut c, DEFAULT_PIN), 0x9000);
}

#[test]
fn select_clears_the_verified_pin_and_the_management_key() {
    let mut c = fresh();
    assert_eq!(verify(&mut c, DEFAULT_PIN), 0x9000);
    assert_eq!(tries(&mut c), 0x9000);
    assert_eq!(authenticate(&mut c, &default_key()), 0x9000);
    select(&mut c);
    assert_eq!(tries(&mut c), 0x63c3);
    let gen = tlv::encode(0xac, &tlv::encode(0x80, &[0x11]));
    assert_eq!(send(&mut c, 0x47, 0, 0x9a, &gen).1, 0x6982);
    // VERIFY with P1=FF forgets the PIN too.
    verify(&mut c, DEFAULT_PIN);
    assert_eq!(send(&mut c, 0x20, 0xff, 0x80, &[]).1, 0x9000);
    assert_eq!(tries(&mut c), 0x63c3);
}

#[test]
fn management_key_challenge_response_3des_and_aes() {
    let mut c = fresh();
    let wrong = MgmKey::new(MgmAlgorithm::TripleDes, &[9; 24]).unwrap();
    assert_eq!(authenticate(&mut c, &wrong), 0x6982);
    // The algorithm must be the card's.
    let aes = MgmKey::new(MgmAlgorithm::Aes192, &DEFAULT_MGM_KEY).unwrap();
    assert_eq!(authenticate(&mut c, &aes), 0x6a80);
    assert_eq!(authenticate(&mut c, &default_key()), 0x9000);

    // Change to AES-256, then only that key works.
    let new = MgmKey::new(MgmAlgorithm::Aes256, &[0x42; 32]).unwrap();
    let mut data = vec![0x0c, 0x9b, 32];
    data.extend_from_slice(&[0x42; 32]);
    assert_eq!(send(&mut c, 0xff, 0xff, 0xff, &data).1, 0x9000);
    select(&mut c);
    assert_eq!(authenticate(&mut c, &default_key()), 0x6a80);
    assert_eq!(authenticate(&mut c, &new), 0x9000);

    // Single authentication (card challenge, host answer).
    select(&mut c);
    let (r, sw) = send(&mut c, 0x87, 0x0c, 0x9b, &[0x7c, 0x02, 0x81, 0x00]);
    assert_eq!(sw, 0x9000);
    let answer = new.encrypt(&r[4..20]);
    let wrong_answer = vec![0u8; 16];
    assert_eq!(
        send(
            &mut c,
            0x87,
            0x0c,
            0x9b,
            &tlv::encode(0x7c, &tlv::encode(0x82, &wrong_answer))
        )
        .1,
        0x6982
    );
    let (r, _) = send(&mut c, 0x87, 0x0c, 0x9b, &[0x7c, 0x02, 0x81, 0x00]);
    let answer2 = new.encrypt(&r[4..20]);
    assert_ne!(answer, answer2, "challenges are random");
    assert_eq!(
        send(
            &mut c,
            0x87,
            0x0c,
            0x9b,
            &tlv::encode(0x7c, &tlv::encode(0x82, &answer2))
        )
        .1,
        0x9000
    );
}

#[test]
fn firmware_5_7_defaults_to_aes_and_older_firmware_refuses_aes() {
    let mut c = Card::new(CardConfig::new(1).version([5, 7, 1]));
    c.power_on();
    select(&mut c);
    assert_eq!(c.management_key_algorithm(), MgmAlgorithm::Aes192);
    assert_eq!(authenticate(&mut c, &default_key()), 0x6a80);
    let aes = MgmKey::new(MgmAlgorithm::Aes192, &DEFAULT_MGM_KEY).unwrap();
    assert_eq!(authenticate(&mut c, &aes), 0x9000);
    let (m, _) = send(&mut c, 0xf7, 0, 0x9b, &[]);
    assert_eq!(&m[..3], &[0x01, 0x01, 0x0a]);

    let mut old = Card::new(CardConfig::new(2).version([5, 2, 7]));
    old.power_on();
    select(&mut old);
    assert_eq!(authenticate(&mut old, &default_key()), 0x9000);
    let mut data = vec![0x08, 0x9b, 16];
    data.extend_from_slice(&[1; 16]);
    assert_eq!(send(&mut old, 0xff, 0xff, 0xff, &data).1, 0x6a80);
}

#[test]
fn generate_needs_the_management_key_and_reports_metadata() {
    let mut c = fresh();
    let mut inner = tlv::encode(0x80, &[0x11]);
    tlv::push(&mut inner, 0xaa, &[0x02]);
    tlv::push(&mut inner, 0xab, &[0x03]);
    let gen = tlv::encode(0xac, &inner);
    assert_eq!(send(&mut c, 0x47, 0, 0x9a, &gen).1, 0x6982);
    assert!(c.public_key(0x9a).is_none());
    authenticate(&mut c, &default_key());
    assert_eq!(
        send(&mut c, 0x47, 0, 0x9b, &gen).1,
        0x6b00,
        "not a key slot"
    );
    let (r, sw) = send(&mut c, 0x47, 0, 0x9a, &gen);
    assert_eq!(sw, 0x9000);
    assert_eq!(&r[..5], &[0x7f, 0x49, 0x43, 0x86, 0x41]);
    let public = c.public_key(0x9a).unwrap();
    assert_eq!(&r[5..], point(&public).as_slice());

    let (m, sw) = send(&mut c, 0xf7, 0, 0x9a, &[]);
    assert_eq!(sw, 0x9000);
    let items = tlv::parse_all(&m).unwrap();
    assert_eq!(items[0].value, &[0x11]);
    assert_eq!(items[1].value, &[0x02, 0x03], "PIN once, touch cached");
    assert_eq!(items[2].value, &[0x01], "generated");
    assert_eq!(
        items[3].value,
        tlv::encode(0x86, &point(&public)).as_slice()
    );
    assert_eq!(send(&mut c, 0xf7, 0, 0x9c, &[]).1, 0x6a82, "empty slot");
    let (m, _) = send(&mut c, 0xf7, 0, 0x80, &[]);
    assert_eq!(
        m,
        [0x01, 0x01, 0xff, 0x05, 0x01, 0x01, 0x06, 0x02, 0x03, 0x03]
    );
}

#[test]
fn signing_follows_the_pin_policy() {
    let mut c = fresh();
    let always = c
        .generate_key(0x9c, PinPolicy::Always, TouchPolicy::Never)
        .unwrap();
    let once = c
        .generate_key(0x9a, PinPolicy::Once, TouchPolicy::Never)
        .unwrap();
    let never = c
        .generate_key(0x9e, PinPolicy::Never, TouchPolicy::Never)
        .unwrap();
    let digest = [0x11u8; 32];
    let check = |public: &PublicKey, r: &[u8]| {
        let items = tlv::parse(r).unwrap().0;
        let sig = tlv::parse(items.value).unwrap().0;
        assert_eq!(sig.tag, 0x82);
        let sig = p256::ecdsa::Signature::from_der(sig.value).unwrap();
        VerifyingKey::from(public)
            .verify_prehash(&digest, &sig)
            .unwrap();
    };
    assert_eq!(sign(&mut c, 0x9c, &digest).1, 0x6982);
    assert_eq!(sign(&mut c, 0x9a, &digest).1, 0x6982);
    let (r, sw) = sign(&mut c, 0x9e, &digest);
    assert_eq!(sw, 0x9000);
    check(&never, &r);

    assert_eq!(verify(&mut c, DEFAULT_PIN), 0x9000);
    let (r, sw) = sign(&mut c, 0x9c, &digest);
    assert_eq!(sw, 0x9000);
    check(&always, &r);
    assert_eq!(
        sign(&mut c, 0x9c, &digest).1,
        0x6982,
        "always: one operation per VERIFY"
    );
    for _ in 0..2 {
        let (r, sw) = sign(&mut c, 0x9a, &digest);
        assert_eq!(sw, 0x9000);
        check(&once, &r);
    }
    assert_eq!(sign(&mut c, 0x9d, &digest).1, 0x6a82, "no key in 9D");
}

#[test]
fn touch_policies() {
    let mut c = fresh();
    c.generate_key(0x9a, PinPolicy::Never, TouchPolicy::Always);
    c.generate_key(0x9d, PinPolicy::Never, TouchPolicy::Cached);
    let d = [1u8; 32];
    assert_eq!(sign(&mut c, 0x9a, &d).1, 0x9000);
    assert_eq!(sign(&mut c, 0x9a, &d).1, 0x9000);
    assert_eq!(c.touches(), 2);
    // The cached touch of the last operation serves the cached-touch key.
    assert_eq!(sign(&mut c, 0x9d, &d).1, 0x9000);
    assert_eq!(c.touches(), 2);
    c.set_touch_mode(TouchMode::Timeout);
    assert_eq!(sign(&mut c, 0x9a, &d).1, 0x6982);
    assert_eq!(sign(&mut c, 0x9d, &d).1, 0x9000, "still cached");
}

#[test]
fn put_and_get_data_with_chaining_and_get_response() {
    let mut c = fresh();
    let object: Vec<u8> = (0..700u32).map(|i| (i % 251) as u8).collect();
    let mut data = tlv::encode(0x5c, &[0x5f, 0xc1, 0x0a]);
    tlv::push(&mut data, 0x53, &object);
    let put = |c: &mut Card, data: &[u8]| {
        let mut sw = 0;
        let chunks: Vec<&[u8]> = data.chunks(255).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let cla = if i + 1 < chunks.len() { 0x10 } else { 0x00 };
            sw = split(c.transmit(&apdu(cla, 0xdb, 0x3f, 0xff, chunk))).1;
        }
        sw
    };
    assert_eq!(
        put(&mut c, &data),
        0x6982,
        "PUT DATA needs the management key"
    );
    authenticate(&mut c, &default_key());
    assert_eq!(put(&mut c, &data), 0x9000);
    assert_eq!(c.object(0x5f_c10a), Some(object.as_slice()));

    let (mut got, mut sw) = send(&mut c, 0xcb, 0x3f, 0xff, &[0x5c, 0x03, 0x5f, 0xc1, 0x0a]);
    while sw & 0xff00 == 0x6100 {
        let (more, s) = send(&mut c, 0xc0, 0, 0, &[]);
        got.extend(more);
        sw = s;
    }
    assert_eq!(sw, 0x9000);
    assert_eq!(got, tlv::encode(0x53, &object));
    assert_eq!(send(&mut c, 0xc0, 0, 0, &[]).1, 0x6985, "nothing left");
    assert_eq!(
        send(&mut c, 0xcb, 0x3f, 0xff, &[0x5c, 0x03, 0x5f, 0xc1, 0x05]).1,
        0x6a82
    );
    // An empty value deletes the object.
    let mut del = tlv::encode(0x5c, &[0x5f, 0xc1, 0x0a]);
    tlv::push(&mut del, 0x53, &[]);
    assert_eq!(put(&mut c, &del), 0x9000);
    assert!(c.object(0x5f_c10a).is_none());
}

#[test]
fn the_protected_management_key_is_behind_the_pin() {
    let mut c = fresh();
    c.protect_management_key(MgmAlgorithm::Aes128);
    let get = [0x5c, 0x03, 0x5f, 0xc1, 0x09];
    assert_eq!(send(&mut c, 0xcb, 0x3f, 0xff, &get).1, 0x6982);
    verify(&mut c, DEFAULT_PIN);
    let (r, sw) = send(&mut c, 0xcb, 0x3f, 0xff, &get);
    assert_eq!(sw, 0x9000);
    let outer = tlv::parse(&r).unwrap().0;
    let prot = tlv::parse(outer.value).unwrap().0;
    assert_eq!(prot.tag, 0x88);
    let key = tlv::parse(prot.value).unwrap().0;
    assert_eq!(key.tag, 0x89);
    let key = MgmKey::new(MgmAlgorithm::Aes128, key.value).unwrap();
    assert_eq!(authenticate(&mut c, &key), 0x9000);
    // The admin data says the key is protected.
    let (r, _) = send(&mut c, 0xcb, 0x3f, 0xff, &[0x5c, 0x03, 0x5f, 0xff, 0x00]);
    assert_eq!(r, [0x53, 0x05, 0x80, 0x03, 0x81, 0x01, 0x02]);
}

#[test]
fn malformed_commands() {
    let mut c = fresh();
    assert_eq!(split(c.transmit(&[0x00, 0xfd])).1, 0x6700);
    assert_eq!(
        split(c.transmit(&[0x00, 0x20, 0x00, 0x80, 0x08, 1, 2])).1,
        0x6700
    );
    assert_eq!(split(c.transmit(&[0x80, 0xfd, 0x00, 0x00])).1, 0x6e00);
    assert_eq!(send(&mut c, 0x87, 0x11, 0x9c, &[0x7c, 0x05]).1, 0x6a80);
    assert_eq!(send(&mut c, 0x99, 0, 0, &[]).1, 0x6d00);
}

#[test]
fn state_round_trips_through_json() {
    let mut c = fresh();
    c.set_pin_and_puk("87654321", "11223344");
    let public = c
        .generate_key(0x9c, PinPolicy::Always, TouchPolicy::Cached)
        .unwrap();
    c.protect_management_key(MgmAlgorithm::Aes256);
    verify(&mut c, "000000");
    let json = c.to_json();
    let mut back = Card::from_json(&json, TouchMode::Auto).unwrap();
    assert_eq!(back.to_json(), json);
    assert_eq!(back.public_key(0x9c), Some(public));
    assert_eq!(back.pin_tries_left(), 2);
    back.power_on();
    select(&mut back);
    assert_eq!(verify(&mut back, "87654321"), 0x9000);
    assert!(Card::from_json("{}", TouchMode::Auto).is_err());
}

#[test]
fn debug_shows_no_secret() {
    let mut c = fresh();
    c.set_pin_and_puk("97531864", "86420975");
    let d = format!("{c:?}");
    assert!(d.contains("12345678"), "{d}");
    for secret in ["97531864", "86420975", "010203"] {
        assert!(!d.contains(secret), "{d}");
    }
}
