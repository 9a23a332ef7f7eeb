#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Independent checks of the transport and VP cryptography.
//!
//! The point: a unit whose secrets live in a PKCS#11 token computes each value with a
//! standard mechanism (CKM_AES_CMAC, CKM_ECDH1_DERIVE, CKM_AES_ECB_ENCRYPT_DATA,
//! CKM_AES_KEY_WRAP_PAD / _KWP) and must get exactly what the software reference gets.
//! So every step is recomputed here by OpenSSL 3, and the known-answer vectors below
//! were computed with Python's `cryptography` package (OpenSSL backend) and `hashlib`:
//!
//! ```text
//! cmac(k, m)  = CMAC(AES(k)).update(m).finalize()
//! ctx         = hashlib.sha256(b"TKE master key transport v1" + A + B + eph + imp)
//! kek         = Cipher(AES(z), ECB()).encryptor().update(ctx)
//! wrapped     = aes_key_wrap_with_padding(kek, mk)
//! ```
//!
//! and for master key parts (`docs/protocol.md` §11.2), with `z` from
//! `derive_private_key(e).exchange(ECDH(), G)`:
//!
//! ```text
//! ctx_k       = hashlib.sha256(b"TKE master key part transport v1" + B + bytes([k]) + eph_k + imp)
//! ```
//!
//! These tests run the `openssl` command line tool; without it they fail, never skip.

mod common;

use common::{h, openssl_ok, tempdir, write};
use der::asn1::OctetString;
use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use tke_proto::{
    parts::{self, MasterKeyPart, SealedPart},
    transport::{self, ImporterKey, MkEnvelope},
    vp, Digest32, MasterKey, UnitId,
};

const KEY_0_31: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

// ---- Known answers -------------------------------------------------------------------

/// VP of the key 00 01 .. 1f: CMAC of block 1 ‖ CMAC of block 2.
const VP_KEY_0_31: &str = "cd38901f2fa462791c1469b3b0e98f42740d2298fafce8a5d44fa287e3b468d5";
/// VP of the key 5c 5c .. 5c.
const VP_KEY_5C: &str = "81477c8229fcb764e2eb8cf4172d0968bcdf78930a9c4950e158909efa1d7584";

/// Transport known answer: source A = 0011..ff, target B = ffee..00, importer secret 1
/// (public G), ephemeral secret 2 (public 2G), master key 5c × 32.
const UNIT_A: &str = "00112233445566778899aabbccddeeff";
const UNIT_B: &str = "ffeeddccbbaa99887766554433221100";
const POINT_G: &str = "046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296\
                       4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5";
const POINT_2G: &str = "047cf27b188d034f7e8a52380304b51ac3c08969e277f21b35a60b48fc47669978\
                        07775510db8ed040293d9ac69f7430dbba7dade63ce982299e04b79d227873d1";
/// Z = x(1 · 2G) = x(2 · G).
const Z: &str = "7cf27b188d034f7e8a52380304b51ac3c08969e277f21b35a60b48fc47669978";
const CTX: &str = "bbb6296a3dfd3defe37243b786d9156f57dfe34bb10d7eb8fbbe4effc58cde81";
const KEK: &str = "9a988feaee679ae4ecf1e5fd82fc1553f2d3a464120cbdb71d5b4b30b6bd3655";
const WRAPPED: &str =
    "4fabc5aba3cc7c4ea12529a8617f2c06b2bcb928566df35c66877c4142429a5874633f9ce9d951b5";
/// RFC 5649 wrap of 32 zero bytes under the KEK 00 01 .. 1f.
const WRAPPED_ZERO: &str =
    "8b940aebb30e4357d9a42c0e504fe502e81e6a6881f4496ae319064912877bbdeb95445235be11a9";

/// Part transport known answer: target B, importer secret 1 (public G); part 1 = 00 01 ..
/// 1f sealed with the ephemeral secret 2 (2G), part 2 = 5c × 32 with the ephemeral secret 3
/// (3G).
const POINT_3G: &str = "045ecbe4d1a6330a44c8f7ef951d4bf165e6c6b721efada985fb41661bc6e7fd6c\
                        8734640c4998ff7e374b06ce1a64a2ecd82ab036384fb83d9a79b127a27d5032";
const PART_CTX_1: &str = "6252e20b10ff2381847db416e2321dad655ca9bdfec4a72dd3f6bfc35a7fce7d";
const PART_KEK_1: &str = "20ecd2c061f327a66a37d7c8315efd05be2f8d0b0c88c400df3c5a5c7c2388f0";
const PART_WRAPPED_1: &str =
    "643eaa384eeb75c49b971e9490d39d8a9540b986793d1d5ce0e654f83888ba70d43f743383c13d90";
/// Z_2 = x(3G).
const PART_Z_2: &str = "5ecbe4d1a6330a44c8f7ef951d4bf165e6c6b721efada985fb41661bc6e7fd6c";
const PART_CTX_2: &str = "5f475747edb43dd46bf5e8d6e693a1ce98cda3145f97255ceb7fdee7ca315947";
const PART_KEK_2: &str = "d197b099fa237b1caa65b143d7b85268cd3ec8d3072c0c60d37d39a3e2a05414";
const PART_WRAPPED_2: &str =
    "d750f1913cb24820ba8afa47e2d6b0f36225380ff7e4ae2c490acaa7ff049fd0b3cc4b1d84d3a0a3";
/// The XOR of the two parts, and its VP.
const PARTS_KEY: &str = "5c5d5e5f58595a5b54555657505152534c4d4e4f48494a4b4445464740414243";
const VP_PARTS_KEY: &str = "484389237b5c6ff78fb86bf92325c9087fe2938e3e11fc82d5ca732b58c2b1d8";

fn arr32(hex: &str) -> [u8; 32] {
    h(hex).try_into().unwrap()
}
fn arr65(hex: &str) -> [u8; 65] {
    h(hex).try_into().unwrap()
}

#[test]
fn vp_known_answers() {
    let k = MasterKey::from_slice(&h(KEY_0_31)).unwrap();
    assert_eq!(vp::of(&k).to_hex(), VP_KEY_0_31);
    assert_eq!(k.vp().to_hex(), VP_KEY_0_31);
    let k = MasterKey::from_slice(&[0x5c; 32]).unwrap();
    assert_eq!(k.vp().to_hex(), VP_KEY_5C);
    assert_eq!(vp::BLOCKS[0], *b"TKE-VP-v1-block\x01");
    assert_eq!(vp::BLOCKS[1], *b"TKE-VP-v1-block\x02");
}

#[test]
fn transport_known_answers() {
    let a = UnitId::from_hex(UNIT_A).unwrap();
    let b = UnitId::from_hex(UNIT_B).unwrap();
    assert_eq!(transport::KDF_LABEL, b"TKE master key transport v1");
    let ctx = transport::kdf_context(&a, &b, &arr65(POINT_2G), &arr65(POINT_G));
    assert_eq!(hex::encode(ctx), CTX);
    let kek = transport::derive_kek(&arr32(Z), &ctx);
    assert_eq!(hex::encode(kek.expose_secret()), KEK);
    assert!(!format!("{kek:?}").contains(&KEK[..16]));
    let mk = MasterKey::from_slice(&[0x5c; 32]).unwrap();
    assert_eq!(
        hex::encode(transport::wrap(kek.expose_secret(), &mk).unwrap()),
        WRAPPED
    );
    assert_eq!(
        hex::encode(
            transport::wrap(&arr32(KEY_0_31), &MasterKey::from_slice(&[0; 32]).unwrap()).unwrap()
        ),
        WRAPPED_ZERO
    );

    // The whole import side on the fixed envelope: importer secret 1 opens it.
    let importer_secret = p256::SecretKey::from_slice(&{
        let mut one = [0u8; 32];
        one[31] = 1;
        one
    })
    .unwrap();
    assert_eq!(
        hex::encode(transport::point_bytes(&importer_secret.public_key())),
        POINT_G.replace(char::is_whitespace, "")
    );
    let env = MkEnvelope {
        source_unit_id: a,
        target_unit_id: b,
        importer_key_id: Digest32::sha256(&h(POINT_G)),
        ephemeral_public_key: OctetString::new(h(POINT_2G)).unwrap(),
        wrapped_key: OctetString::new(h(WRAPPED)).unwrap(),
        vp: tke_proto::Vp::from_hex(VP_KEY_5C).unwrap(),
    };
    let got = transport::soft_open(&env, &importer_secret).unwrap();
    assert_eq!(got.expose_secret(), &[0x5c; 32]);
}

/// The secret key of a small scalar.
fn scalar(n: u8) -> p256::SecretKey {
    let mut s = [0u8; 32];
    s[31] = n;
    p256::SecretKey::from_slice(&s).unwrap()
}

#[test]
fn part_transport_known_answers() {
    let b = UnitId::from_hex(UNIT_B).unwrap();
    assert_eq!(parts::PART_KDF_LABEL, b"TKE master key part transport v1");
    assert_eq!(
        hex::encode(transport::point_bytes(&scalar(3).public_key())),
        POINT_3G.replace(char::is_whitespace, "")
    );
    let cases = [
        (
            1,
            POINT_2G,
            Z,
            PART_CTX_1,
            PART_KEK_1,
            KEY_0_31,
            PART_WRAPPED_1,
            VP_KEY_0_31,
        ),
        (
            2,
            POINT_3G,
            PART_Z_2,
            PART_CTX_2,
            PART_KEK_2,
            "5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c",
            PART_WRAPPED_2,
            VP_KEY_5C,
        ),
    ];
    let mut opened = Vec::new();
    for (k, eph, z, ctx, kek, part, wrapped, part_vp) in cases {
        let got_ctx = parts::part_kdf_context(&b, k, &arr65(eph), &arr65(POINT_G));
        assert_eq!(hex::encode(got_ctx), ctx, "part {k}");
        // The master key transport's context of the same points is another value.
        let a = UnitId::from_hex(UNIT_A).unwrap();
        assert_ne!(
            got_ctx,
            transport::kdf_context(&a, &b, &arr65(eph), &arr65(POINT_G))
        );
        let got_kek = transport::derive_kek(&arr32(z), &got_ctx);
        assert_eq!(hex::encode(got_kek.expose_secret()), kek, "part {k}");
        let mk = MasterKey::from_slice(&h(part)).unwrap();
        assert_eq!(
            hex::encode(transport::wrap(got_kek.expose_secret(), &mk).unwrap()),
            wrapped,
            "part {k}"
        );
        let sealed = SealedPart {
            ephemeral_public_key: OctetString::new(h(eph)).unwrap(),
            wrapped_part: OctetString::new(h(wrapped)).unwrap(),
            vp: tke_proto::Vp::from_hex(part_vp).unwrap(),
        };
        let got = parts::soft_open_part(&sealed, b, usize::from(k), &scalar(1)).unwrap();
        assert_eq!(hex::encode(got.expose_secret()), part);
        assert_eq!(got.vp().to_hex(), part_vp);
        opened.push(got);
    }
    let key = parts::combine(&opened).unwrap();
    assert_eq!(hex::encode(key.expose_secret()), PARTS_KEY);
    assert_eq!(key.vp().to_hex(), VP_PARTS_KEY);
}

/// A sealed part never opens as a master key envelope: the same ephemeral key, importer and
/// wrapped bytes under the master key transport's context fail the integrity check.
#[test]
fn a_part_is_not_a_master_key_envelope() {
    let a = UnitId::from_hex(UNIT_A).unwrap();
    let b = UnitId::from_hex(UNIT_B).unwrap();
    let env = MkEnvelope {
        source_unit_id: a,
        target_unit_id: b,
        importer_key_id: Digest32::sha256(&h(POINT_G)),
        ephemeral_public_key: OctetString::new(h(POINT_2G)).unwrap(),
        wrapped_key: OctetString::new(h(PART_WRAPPED_1)).unwrap(),
        vp: tke_proto::Vp::from_hex(VP_KEY_0_31).unwrap(),
    };
    assert!(matches!(
        transport::soft_open(&env, &scalar(1)),
        Err(tke_proto::ProtoError::Transport(
            tke_proto::TransportError::WrappedKeyIntegrity
        ))
    ));
    // And the other way round: the master key envelope of §14.4 is no part.
    let sealed = SealedPart {
        ephemeral_public_key: OctetString::new(h(POINT_2G)).unwrap(),
        wrapped_part: OctetString::new(h(WRAPPED)).unwrap(),
        vp: tke_proto::Vp::from_hex(VP_KEY_5C).unwrap(),
    };
    assert!(parts::soft_open_part(&sealed, b, 1, &scalar(1)).is_err());
}

// ---- openssl -------------------------------------------------------------------------

/// The VP of `key` computed by `openssl mac … CMAC` over each block file.
fn openssl_vp(dir: &std::path::Path, key: &[u8; 32]) -> String {
    let keyopt = format!("hexkey:{}", hex::encode(key));
    let mut out = String::new();
    for (i, block) in vp::BLOCKS.iter().enumerate() {
        let name = if i == 0 { "block1" } else { "block2" };
        write(dir, name, block);
        let mac = openssl_ok(
            dir,
            &[
                "mac",
                "-cipher",
                "AES-256-CBC",
                "-macopt",
                &keyopt,
                "-in",
                name,
                "CMAC",
            ],
        );
        out.push_str(String::from_utf8(mac).unwrap().trim());
    }
    out.to_lowercase()
}

#[test]
fn vp_matches_openssl_cmac() {
    let dir = tempdir();
    for key in [arr32(KEY_0_31), [0x5c; 32], [0xff; 32]] {
        let mk = MasterKey::from_slice(&key).unwrap();
        assert_eq!(openssl_vp(dir.path(), &key), vp::of(&mk).to_hex());
    }
    let mk = MasterKey::random();
    assert_eq!(openssl_vp(dir.path(), mk.expose_secret()), mk.vp().to_hex());
}

/// `openssl enc -aes-256-ecb -nopad`: the KEK derivation (CKM_AES_ECB_ENCRYPT_DATA).
fn openssl_ecb(dir: &std::path::Path, key: &[u8; 32], data: &[u8; 32]) -> Vec<u8> {
    write(dir, "ecb.in", data);
    openssl_ok(
        dir,
        &[
            "enc",
            "-aes-256-ecb",
            "-nopad",
            "-K",
            &hex::encode(key),
            "-in",
            "ecb.in",
        ],
    )
}

#[test]
fn kek_matches_openssl_aes_ecb() {
    let dir = tempdir();
    let ctx = arr32(CTX);
    assert_eq!(hex::encode(openssl_ecb(dir.path(), &arr32(Z), &ctx)), KEK);
    for (z, ctx) in [([0x01; 32], [0x02; 32]), (rand32(), rand32())] {
        assert_eq!(
            openssl_ecb(dir.path(), &z, &ctx),
            transport::derive_kek(&z, &ctx).expose_secret().to_vec()
        );
    }
}

fn rand32() -> [u8; 32] {
    *MasterKey::random().expose_secret()
}

/// `openssl enc -id-aes256-wrap-pad` (RFC 5649, the 4-byte AIV A65959A6 as the IV):
/// what CKM_AES_KEY_WRAP_KWP computes (SoftHSM2 exposes it as CKM_AES_KEY_WRAP_PAD).
fn openssl_wrap(dir: &std::path::Path, kek: &[u8; 32], data: &[u8], decrypt: bool) -> Vec<u8> {
    write(dir, "wrap.in", data);
    let k = hex::encode(kek);
    let mut args = vec![
        "enc",
        "-id-aes256-wrap-pad",
        "-K",
        &k,
        "-iv",
        "A65959A6",
        "-in",
        "wrap.in",
    ];
    if decrypt {
        args.push("-d");
    }
    openssl_ok(dir, &args)
}

#[test]
fn wrap_matches_openssl_aes_wrap_pad() {
    let dir = tempdir();
    assert_eq!(
        hex::encode(openssl_wrap(dir.path(), &arr32(KEY_0_31), &[0; 32], false)),
        WRAPPED_ZERO
    );
    assert_eq!(
        hex::encode(openssl_wrap(dir.path(), &arr32(KEK), &[0x5c; 32], false)),
        WRAPPED
    );
    for _ in 0..3 {
        let kek = rand32();
        let mk = MasterKey::random();
        let ours = transport::wrap(&kek, &mk).unwrap();
        assert_eq!(
            openssl_wrap(dir.path(), &kek, mk.expose_secret(), false),
            ours
        );
        assert_eq!(
            openssl_wrap(dir.path(), &kek, &ours, true),
            mk.expose_secret().to_vec()
        );
    }
}

/// What a unit computes to open a sealed value, done by openssl alone with the importer's
/// private key (`importer.pem` in `d`): ECDH with the ephemeral point (`pkeyutl -derive`,
/// CKM_ECDH1_DERIVE with CKD_NULL), the context hash of `context_input` (`dgst -sha256`),
/// the KEK (`enc -aes-256-ecb`) and the unwrap (`enc -d -id-aes256-wrap-pad`). Returns the
/// context hash and the unwrapped value.
fn openssl_open(
    d: &std::path::Path,
    ephemeral: &[u8],
    context_input: &[u8],
    wrapped: &[u8],
) -> ([u8; 32], Vec<u8>) {
    let eph = transport::parse_point(ephemeral, "ephemeral").unwrap();
    write(
        d,
        "ephemeral.pem",
        eph.to_public_key_pem(LineEnding::LF).unwrap().as_bytes(),
    );
    let z = openssl_ok(
        d,
        &[
            "pkeyutl",
            "-derive",
            "-inkey",
            "importer.pem",
            "-peerkey",
            "ephemeral.pem",
        ],
    );
    assert_eq!(z.len(), 32);
    write(d, "context.in", context_input);
    let ctx: [u8; 32] = openssl_ok(d, &["dgst", "-sha256", "-binary", "context.in"])
        .try_into()
        .unwrap();
    let kek: [u8; 32] = openssl_ecb(d, &z.try_into().unwrap(), &ctx)
        .try_into()
        .unwrap();
    (ctx, openssl_wrap(d, &kek, wrapped, true))
}

/// The whole import side of a random transport, done by openssl alone from the
/// envelope and the importer's private key (see [`openssl_open`]), then the VP (`mac
/// CMAC`).
#[test]
fn openssl_opens_a_soft_sealed_envelope() {
    let f = common::fleet();
    let importer_secret = common::secret_key(0x1f);
    let importer = ImporterKey::new(f.b.id, &importer_secret.public_key()).unwrap();
    let mk = MasterKey::random();
    let env = transport::soft_seal(&mk, f.a.id, &importer).unwrap();

    let dir = tempdir();
    let d = dir.path();
    let pem = importer_secret.to_pkcs8_pem(LineEnding::LF).unwrap();
    write(d, "importer.pem", pem.as_bytes());
    let context_input = [
        transport::KDF_LABEL,
        &env.source_unit_id.0,
        &env.target_unit_id.0,
        env.ephemeral_public_key.as_bytes(),
        importer.public_key.as_bytes(),
    ]
    .concat();
    let (ctx, unwrapped) = openssl_open(
        d,
        env.ephemeral_public_key.as_bytes(),
        &context_input,
        env.wrapped_key.as_bytes(),
    );
    assert_eq!(
        ctx,
        transport::kdf_context(
            &env.source_unit_id,
            &env.target_unit_id,
            env.ephemeral_public_key.as_bytes().try_into().unwrap(),
            &transport::point_bytes(&importer_secret.public_key()),
        )
    );
    assert_eq!(unwrapped, mk.expose_secret().to_vec());
    assert_eq!(
        openssl_vp(d, &unwrapped.try_into().unwrap()),
        env.vp.to_hex()
    );
}

/// The unit's side of a random part transport, done by openssl alone from a part that
/// [`parts::seal_part`] sealed and the importer's private key: ECDH, the part context
/// hash, the KEK, the unwrap ([`openssl_open`]) and the VP.
#[test]
fn openssl_opens_a_soft_sealed_part() {
    let f = common::fleet();
    let importer_secret = common::secret_key(0x1f);
    let importer = ImporterKey::new(f.b.id, &importer_secret.public_key()).unwrap();
    let dir = tempdir();
    let d = dir.path();
    let pem = importer_secret.to_pkcs8_pem(LineEnding::LF).unwrap();
    write(d, "importer.pem", pem.as_bytes());
    for index in 1..=3u8 {
        let part = MasterKeyPart::random();
        let sealed = parts::seal_part(&part, usize::from(index), &importer).unwrap();
        let context_input = [
            parts::PART_KDF_LABEL,
            &f.b.id.0,
            &[index],
            sealed.ephemeral_public_key.as_bytes(),
            importer.public_key.as_bytes(),
        ]
        .concat();
        let (ctx, unwrapped) = openssl_open(
            d,
            sealed.ephemeral_public_key.as_bytes(),
            &context_input,
            sealed.wrapped_part.as_bytes(),
        );
        assert_eq!(
            ctx,
            parts::part_kdf_context(
                &f.b.id,
                index,
                sealed.ephemeral_public_key.as_bytes().try_into().unwrap(),
                importer.public_key.as_bytes().try_into().unwrap(),
            )
        );
        assert_eq!(unwrapped, part.expose_secret().to_vec(), "part {index}");
        assert_eq!(
            openssl_vp(d, &unwrapped.try_into().unwrap()),
            sealed.vp.to_hex()
        );
    }
}
