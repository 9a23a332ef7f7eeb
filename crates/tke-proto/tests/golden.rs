#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Golden DER vectors for every protocol message (strict DER, known answers that round-trip).
//!
//! Each vector is written out field by field from the ASN.1 in the type's rustdoc, with
//! the tag-length-value of every field on its own line, so that it does not depend on
//! the encoder: the test checks that the encoder produces exactly these bytes and that
//! decoding them gives the value back. `openssl asn1parse -inform DER` reads all of them.
//! `docs/protocol.md` quotes some of them as test vectors: keep both in step.

mod common;

use common::h;
use der::{asn1::OctetString, Decode, Encode};
use tke_proto::{
    command::ThresholdsInput,
    parts::{MkPartsRequest, SealedPart},
    transport::{CertifiedImporter, ExportRequest, ImporterKey, MkEnvelope, SignedEnvelope},
    AdminCommand, AdminInfo, AdminName, AuditPage, AuditQuery, AuditRecord, CommandId,
    ControlPoint, ControlPoints, Digest32, GeneratedKeys, InstanceId, Nonce, Query, Register,
    RegisterState, RegisterStatus, Request, ResponseBody, Rewrap, SecretOctets, ServiceOp,
    ServiceRequest, SignedCommand, SignedResponse, SignerInfo, Ski, UnitDescription, UnitId,
    UnitStatus, UnitType, UnwrapData, Vp, WrapData,
};

// Fixed field values.
const UNIT: &str = "00112233445566778899aabbccddeeff";
const UNIT2: &str = "ffeeddccbbaa99887766554433221100";
const NONCE: &str = "0f0e0d0c0b0a09080706050403020100";
const SKI_A: &str = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf";
const SKI_B: &str = "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf";
const VP1: &str = "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";
const VP2: &str = "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f";
const DIGEST: &str = "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f";
/// A placeholder signature: the DER ECDSA-Sig-Value { r 1, s 1 }.
const SIG: &str = "3006020101020101";
/// The P-256 base point G (the public key of the scalar 1), SEC1 uncompressed.
const POINT_G: &str = "046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296\
                       4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5";
/// SHA-256 of POINT_G (computed with Python's hashlib).
const KEY_ID_G: &str = "698bea63dc44a344663ff1429aea10842df27b6b991ef25866b2c6c02cdcc5be";
/// 2G, SEC1 uncompressed.
const POINT_2G: &str = "047cf27b188d034f7e8a52380304b51ac3c08969e277f21b35a60b48fc47669978\
                        07775510db8ed040293d9ac69f7430dbba7dade63ce982299e04b79d227873d1";
/// 3G, SEC1 uncompressed.
const POINT_3G: &str = "045ecbe4d1a6330a44c8f7ef951d4bf165e6c6b721efada985fb41661bc6e7fd6c\
                        8734640c4998ff7e374b06ce1a64a2ecd82ab036384fb83d9a79b127a27d5032";
/// The part known answer of crosscheck.rs: part 1 (00 01 .. 1f) and part 2 (5c × 32)
/// wrapped for unit B's importer G with the ephemeral keys 2 and 3, their VPs, and the
/// VP of their XOR.
const WRAPPED_PART_1: &str =
    "643eaa384eeb75c49b971e9490d39d8a9540b986793d1d5ce0e654f83888ba70d43f743383c13d90";
const WRAPPED_PART_2: &str =
    "d750f1913cb24820ba8afa47e2d6b0f36225380ff7e4ae2c490acaa7ff049fd0b3cc4b1d84d3a0a3";
const VP_PART_1: &str = "cd38901f2fa462791c1469b3b0e98f42740d2298fafce8a5d44fa287e3b468d5";
const VP_PART_2: &str = "81477c8229fcb764e2eb8cf4172d0968bcdf78930a9c4950e158909efa1d7584";
const VP_PARTS_KEY: &str = "484389237b5c6ff78fb86bf92325c9087fe2938e3e11fc82d5ca732b58c2b1d8";
/// RFC 5649 wrap of 32 zero bytes under the KEK 00 01 .. 1f (see crosscheck.rs).
const WRAPPED: &str =
    "8b940aebb30e4357d9a42c0e504fe502e81e6a6881f4496ae319064912877bbdeb95445235be11a9";

// ---- The vectors -----------------------------------------------------------------------

/// The vectors, laid out one field per line (kept out of rustfmt's reach).
#[rustfmt::skip]
mod vectors {
    pub const THRESHOLDS_INPUT: &str = concat!(
        "3006",   // SEQUENCE, 6 bytes
        "020102", //   signature  INTEGER 2
        "020103", //   revocation INTEGER 3
    );

    pub const ADMIN_COMMAND: &str = concat!(
        "3022",                                     // SEQUENCE, 34 bytes
        "0410", "00112233445566778899aabbccddeeff", //   unitId  OCTET STRING (16)
        "020105",                                   //   counter INTEGER 5
        "0a0108",                                   //   command ENUMERATED setThresholds(8)
        "0408", "3006020102020103",                 //   input   OCTET STRING: ThresholdsInput {2, 3}
    );

    /// Zeroize at counter 128: the counter needs a leading 00 (INTEGER is signed), the input
    /// is an empty OCTET STRING.
    pub const ADMIN_COMMAND_ZEROIZE: &str = concat!(
        "301b",                                     // SEQUENCE, 27 bytes
        "0410", "00112233445566778899aabbccddeeff", //   unitId
        "02020080",                                 //   counter INTEGER 128
        "0a0110",                                   //   command ENUMERATED zeroize(16)
        "0400",                                     //   input   empty
    );

    pub const SIGNER_INFO: &str = concat!(
        "302c",                                                                     // SEQUENCE, 44 bytes
        "0420", "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf", //   ski
        "0408", "3006020101020101",                                                 //   signature
    );

    pub const SIGNED_COMMAND: &str = concat!(
        "3056", // SEQUENCE, 86 bytes
        "0424", //   command OCTET STRING (36): the ADMIN_COMMAND bytes
        "3022", "0410", "00112233445566778899aabbccddeeff", "020105", "0a0108", "0408", "3006020102020103",
        "302e", //   signerInfos SEQUENCE OF (46): one SIGNER_INFO
        "302c", "0420", "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf",
        "0408", "3006020101020101",
    );

    pub const SIGNED_COMMAND_UNSIGNED: &str = concat!(
        "3021", // SEQUENCE, 33 bytes
        "041d", //   command OCTET STRING (29): ADMIN_COMMAND_ZEROIZE
        "301b", "0410", "00112233445566778899aabbccddeeff", "02020080", "0a0110", "0400",
        "3000", //   signerInfos: empty SEQUENCE OF
    );

    pub const QUERY: &str = concat!(
        "3024",                                     // SEQUENCE, 36 bytes
        "0410", "00112233445566778899aabbccddeeff", //   unitId
        "0410", "0f0e0d0c0b0a09080706050403020100", //   nonce
    );

    /// `Request.query`: [0] IMPLICIT replaces the SEQUENCE tag 30 with A0 (context 0,
    /// constructed); the content is QUERY's.
    pub const REQUEST_QUERY: &str = concat!(
        "a024",
        "0410", "00112233445566778899aabbccddeeff",
        "0410", "0f0e0d0c0b0a09080706050403020100",
    );

    /// `Request.command`: [1] IMPLICIT → A1, content SIGNED_COMMAND's.
    pub const REQUEST_COMMAND: &str = concat!(
        "a156",
        "0424",
        "3022", "0410", "00112233445566778899aabbccddeeff", "020105", "0a0108", "0408", "3006020102020103",
        "302e",
        "302c", "0420", "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf",
        "0408", "3006020101020101",
    );

    /// `Request.service` (protocol 4): [2] IMPLICIT → A2, content a ServiceRequest whose op
    /// is `generateKeys` [0] IMPLICIT INTEGER → 80.
    pub const REQUEST_SERVICE_GENERATE: &str = concat!(
        "a227",                                     // [2] constructed, 39 bytes
        "0410", "00112233445566778899aabbccddeeff", //   unitId
        "0410", "0f0e0d0c0b0a09080706050403020100", //   nonce
        "800103",                                   //   op generateKeys [0] INTEGER 3
    );

    /// `wrapData` [1] IMPLICIT WrapData → A1.
    pub const REQUEST_SERVICE_WRAP: &str = concat!(
        "a28184",                                   // [2] constructed, 132 bytes
        "0410", "00112233445566778899aabbccddeeff", //   unitId
        "0410", "0f0e0d0c0b0a09080706050403020100", //   nonce
        "a15e",                                     //   op wrapData [1], 94 bytes
        "0420", "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff", // vp
        "0428", "8b940aebb30e4357d9a42c0e504fe502e81e6a6881f4496ae319064912877bbdeb95445235be11a9", // root
        "0410", "101112131415161718191a1b1c1d1e1f", //     data (16)
    );

    /// `unwrapData` [2] IMPLICIT UnwrapData → A2 (the same tag number as Request.service,
    /// one level down).
    pub const REQUEST_SERVICE_UNWRAP: &str = concat!(
        "a2819c",                                   // [2] constructed, 156 bytes
        "0410", "00112233445566778899aabbccddeeff", //   unitId
        "0410", "0f0e0d0c0b0a09080706050403020100", //   nonce
        "a276",                                     //   op unwrapData [2], 118 bytes
        "0420", "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff", // vp
        "0428", "8b940aebb30e4357d9a42c0e504fe502e81e6a6881f4496ae319064912877bbdeb95445235be11a9", // root
        "0428", "8b940aebb30e4357d9a42c0e504fe502e81e6a6881f4496ae319064912877bbdeb95445235be11a9", // wrapped
    );

    /// `rewrap` [3] IMPLICIT Rewrap → A3, one key.
    pub const REQUEST_SERVICE_REWRAP: &str = concat!(
        "a28196",                                   // [2] constructed, 150 bytes
        "0410", "00112233445566778899aabbccddeeff", //   unitId
        "0410", "0f0e0d0c0b0a09080706050403020100", //   nonce
        "a370",                                     //   op rewrap [3], 112 bytes
        "0420", "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff", // from
        "0420", "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f", // to
        "302a",                                     //     keys SEQUENCE OF, 42 bytes
        "0428", "8b940aebb30e4357d9a42c0e504fe502e81e6a6881f4496ae319064912877bbdeb95445235be11a9",
    );

    /// The output of `generateKeys`: the VP and one wrapped root key.
    pub const GENERATED_KEYS: &str = concat!(
        "304e",                                     // SEQUENCE, 78 bytes
        "0420", "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff", // vp
        "302a",                                     //   keys SEQUENCE OF, 42 bytes
        "0428", "8b940aebb30e4357d9a42c0e504fe502e81e6a6881f4496ae319064912877bbdeb95445235be11a9",
    );

    pub const RESPONSE_BODY: &str = concat!(
        "305f",                                                                     // SEQUENCE, 95 bytes
        "0410", "00112233445566778899aabbccddeeff",                                 //   unitId
        "020106",                                                                   //   counter 6
        "0420", "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f", //   requestHash
        "020100",                                                                   //   returnCode 0
        "020100",                                                                   //   reasonCode 0
        "0420", "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff", //   output: a VP
    );

    /// An error: rc 209, reason 57 (signature threshold above the number of administrators).
    pub const RESPONSE_BODY_ERROR: &str = concat!(
        "3040",                                                                     // SEQUENCE, 64 bytes
        "0410", "00112233445566778899aabbccddeeff",                                 //   unitId
        "020105",                                                                   //   counter 5
        "0420", "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f", //   requestHash
        "020200d1",                                                                 //   returnCode 209
        "020139",                                                                   //   reasonCode 57
        "0400",                                                                     //   output empty
    );

    pub const SIGNED_RESPONSE: &str = concat!(
        "306d", // SEQUENCE, 109 bytes
        "0461", //   body OCTET STRING (97): RESPONSE_BODY
        "305f", "0410", "00112233445566778899aabbccddeeff", "020106",
        "0420", "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f",
        "020100", "020100",
        "0420", "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
        "0408", "3006020101020101", //   signature
    );

    /// The whole answer to REQUEST_QUERY by a fresh unit A: the body is bound to the
    /// request (requestHash = SHA-256 of the REQUEST_QUERY bytes) and carries
    /// UNIT_STATUS_IMPRINT; the signature is the placeholder.
    pub const SIGNED_RESPONSE_QUERY: &str = concat!(
        "308190", // SEQUENCE, 144 bytes
        "048183", //   body OCTET STRING (131): ResponseBody
        "308180",                                   //     SEQUENCE, 128 bytes
        "0410", "00112233445566778899aabbccddeeff", //       unitId
        "020100",                                   //       counter 0
        "0420", "242e96f83645e407193811cf914ca41b1290e0bdeae0ed47381e06c4be999f88", // requestHash
        "020100",                                   //       returnCode 0
        "020100",                                   //       reasonCode 0
        "0441",                                     //       output (65): UNIT_STATUS_IMPRINT
        "303f", "0410", "00112233445566778899aabbccddeeff", "0a0100", "020100", "020100", "020100",
        "3000", "30030a0100", "30030a0100", "010100", "0410", "00000000000001003000000000000000",
        "0408", "3006020101020101", //   signature
    );

    pub const ADMIN_INFO: &str = concat!(
        "3029",                                                                     // SEQUENCE, 41 bytes
        "0420", "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf", //   ski
        "0c05", "616c696365",                                                       //   name UTF8String "alice"
    );

    /// A name outside ASCII: "Zoë" is 3 characters, 4 UTF-8 bytes.
    pub const ADMIN_INFO_UTF8: &str = concat!(
        "3028",
        "0420", "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf",
        "0c04", "5a6fc3ab",
    );

    pub const REGISTER_EMPTY: &str = concat!(
        "3003",   // SEQUENCE, 3 bytes
        "0a0100", //   state ENUMERATED empty(0); vp absent
    );

    pub const REGISTER_VALID: &str = concat!(
        "3025",                                                                     // SEQUENCE, 37 bytes
        "0a0103",                                                                   //   state valid(3)
        "0420", "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff", //   vp
    );

    pub const UNIT_STATUS: &str = concat!(
        "3081d8",                                   // SEQUENCE, 216 bytes (long form: ≥ 128)
        "0410", "00112233445566778899aabbccddeeff", //   unitId
        "0a0101",                                   //   unitType recovery(1)
        "020107",                                   //   counter 7
        "020102",                                   //   sigThreshold 2
        "020102",                                   //   revThreshold 2
        "3055",                                     //   admins SEQUENCE OF (85): ADMIN_INFO, ADMIN_INFO_UTF8
        "3029", "0420", "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf", "0c05", "616c696365",
        "3028", "0420", "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf", "0c04", "5a6fc3ab",
        "3025", "0a0101",                           //   newRegister fullUncommitted(1), vp VP2
        "0420", "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f",
        "3025", "0a0103",                           //   currentRegister valid(3), vp VP1
        "0420", "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
        "0101ff",                                   //   importerPending TRUE
        "0410", "80000000000001001000000000000001", //   controlPoints: bits 0, 55, 67, 127
    );

    /// A fresh unit in imprint mode.
    pub const UNIT_STATUS_IMPRINT: &str = concat!(
        "303f",                                     // SEQUENCE, 63 bytes
        "0410", "00112233445566778899aabbccddeeff", //   unitId
        "0a0100",                                   //   unitType operational(0)
        "020100",                                   //   counter 0
        "020100",                                   //   sigThreshold 0
        "020100",                                   //   revThreshold 0
        "3000",                                     //   admins: none
        "30030a0100",                               //   newRegister empty
        "30030a0100",                               //   currentRegister empty
        "010100",                                   //   importerPending FALSE
        "0410", "00000000000001003000000000000000", //   controlPoints: the default, 55, 66, 67
    );

    pub const IMPORTER_KEY: &str = concat!(
        "3077",                                     // SEQUENCE, 119 bytes
        "0410", "ffeeddccbbaa99887766554433221100", //   unitId (the target)
        "0420", "698bea63dc44a344663ff1429aea10842df27b6b991ef25866b2c6c02cdcc5be", // keyId = SHA-256(point)
        "0441",                                     //   publicKey (65): G
        "046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296",
        "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5",
    );

    pub const CERTIFIED_IMPORTER: &str = concat!(
        "308185", // SEQUENCE, 133 bytes
        "0479",   //   importer OCTET STRING (121): IMPORTER_KEY
        "3077", "0410", "ffeeddccbbaa99887766554433221100",
        "0420", "698bea63dc44a344663ff1429aea10842df27b6b991ef25866b2c6c02cdcc5be",
        "0441", "046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296",
        "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5",
        "0408", "3006020101020101", //   signature
    );

    pub const EXPORT_REQUEST: &str = concat!(
        "308191",       // SEQUENCE, 145 bytes
        "0a0101",       //   register new(1)
        "0404deadbeef", //   targetCertificate (placeholder bytes: not decoded here)
        "308185",       //   importer: CERTIFIED_IMPORTER
        "0479",
        "3077", "0410", "ffeeddccbbaa99887766554433221100",
        "0420", "698bea63dc44a344663ff1429aea10842df27b6b991ef25866b2c6c02cdcc5be",
        "0441", "046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296",
        "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5",
        "0408", "3006020101020101",
    );

    /// EXPORT_REQUEST naming the target's instance (another than the source's, §11.3).
    pub const EXPORT_REQUEST_CROSS_INSTANCE: &str = concat!(
        "3081a3",       // SEQUENCE, 163 bytes
        "0a0101",       //   register new(1)
        "0404deadbeef", //   targetCertificate (placeholder bytes: not decoded here)
        "308185",       //   importer: CERTIFIED_IMPORTER
        "0479",
        "3077", "0410", "ffeeddccbbaa99887766554433221100",
        "0420", "698bea63dc44a344663ff1429aea10842df27b6b991ef25866b2c6c02cdcc5be",
        "0441", "046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296",
        "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5",
        "0408", "3006020101020101",
        "8010", "0b6f0c8e5d6a4b8e9a510c2f8e7d6b1a", //   targetInstance [0] IMPLICIT (16)
    );

    pub const MK_ENVELOPE: &str = concat!(
        "3081d5",                                   // SEQUENCE, 213 bytes
        "0410", "00112233445566778899aabbccddeeff", //   sourceUnitId
        "0410", "ffeeddccbbaa99887766554433221100", //   targetUnitId
        "0420", "698bea63dc44a344663ff1429aea10842df27b6b991ef25866b2c6c02cdcc5be", // importerKeyId
        "0441",                                     //   ephemeralPublicKey (65): 2G
        "047cf27b188d034f7e8a52380304b51ac3c08969e277f21b35a60b48fc47669978",
        "07775510db8ed040293d9ac69f7430dbba7dade63ce982299e04b79d227873d1",
        "0428",                                     //   wrappedKey (40)
        "8b940aebb30e4357d9a42c0e504fe502e81e6a6881f4496ae319064912877bbdeb95445235be11a9",
        "0420", "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff", // vp
    );

    pub const SIGNED_ENVELOPE: &str = concat!(
        "3081eb", // SEQUENCE, 235 bytes
        "0481d8", //   envelope OCTET STRING (216): MK_ENVELOPE
        "3081d5",
        "0410", "00112233445566778899aabbccddeeff",
        "0410", "ffeeddccbbaa99887766554433221100",
        "0420", "698bea63dc44a344663ff1429aea10842df27b6b991ef25866b2c6c02cdcc5be",
        "0441", "047cf27b188d034f7e8a52380304b51ac3c08969e277f21b35a60b48fc47669978",
        "07775510db8ed040293d9ac69f7430dbba7dade63ce982299e04b79d227873d1",
        "0428", "8b940aebb30e4357d9a42c0e504fe502e81e6a6881f4496ae319064912877bbdeb95445235be11a9",
        "0420", "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
        "0408", "3006020101020101", //   signature
        "0404deadbeef",             //   sourceCertificate (placeholder bytes)
    );

    /// SIGNED_ENVELOPE as the input of an importMk naming the source's instance (§11.3).
    pub const SIGNED_ENVELOPE_CROSS_INSTANCE: &str = concat!(
        "3081fd", // SEQUENCE, 253 bytes
        "0481d8", //   envelope OCTET STRING (216): MK_ENVELOPE
        "3081d5",
        "0410", "00112233445566778899aabbccddeeff",
        "0410", "ffeeddccbbaa99887766554433221100",
        "0420", "698bea63dc44a344663ff1429aea10842df27b6b991ef25866b2c6c02cdcc5be",
        "0441", "047cf27b188d034f7e8a52380304b51ac3c08969e277f21b35a60b48fc47669978",
        "07775510db8ed040293d9ac69f7430dbba7dade63ce982299e04b79d227873d1",
        "0428", "8b940aebb30e4357d9a42c0e504fe502e81e6a6881f4496ae319064912877bbdeb95445235be11a9",
        "0420", "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
        "0408", "3006020101020101",                 //   signature
        "0404deadbeef",                             //   sourceCertificate (placeholder bytes)
        "8010", "0b6f0c8e5d6a4b8e9a510c2f8e7d6b1a", //   sourceInstance [0] IMPLICIT (16)
    );

    /// `addControlPoints` of XCP_CPB_BTC (bit 66) on unit A at counter 9.
    pub const ADMIN_COMMAND_ADD_CONTROL_POINTS: &str = concat!(
        "302a",                                     // SEQUENCE, 42 bytes
        "0410", "00112233445566778899aabbccddeeff", //   unitId
        "020109",                                   //   counter 9
        "0a0112",                                   //   command ENUMERATED addControlPoints(18)
        "0410", "00000000000000002000000000000000", //   input: the mask, bit 66 set
    );

    /// Part 1 (00 01 .. 1f) sealed to the importer G of unit B with the ephemeral 2G (the
    /// known answer of crosscheck.rs).
    pub const SEALED_PART: &str = concat!(
        "30818f",                                   // SEQUENCE, 143 bytes
        "0441",                                     //   ephemeralPublicKey (65): 2G
        "047cf27b188d034f7e8a52380304b51ac3c08969e277f21b35a60b48fc47669978",
        "07775510db8ed040293d9ac69f7430dbba7dade63ce982299e04b79d227873d1",
        "0428",                                     //   wrappedPart (40)
        "643eaa384eeb75c49b971e9490d39d8a9540b986793d1d5ce0e654f83888ba70d43f743383c13d90",
        "0420", "cd38901f2fa462791c1469b3b0e98f42740d2298fafce8a5d44fa287e3b468d5", // vp of the part
    );

    /// The two parts of crosscheck.rs (00 01 .. 1f with 2G, 5c × 32 with 3G) for the
    /// importer G of unit B.
    pub const MK_PARTS_REQUEST: &str = concat!(
        "3082014a",                                 // SEQUENCE, 330 bytes
        "0420", "698bea63dc44a344663ff1429aea10842df27b6b991ef25866b2c6c02cdcc5be", // importerKeyId
        "30820124",                                 //   parts SEQUENCE OF (292)
        "30818f",                                   //     part 1: SEALED_PART
        "0441", "047cf27b188d034f7e8a52380304b51ac3c08969e277f21b35a60b48fc47669978",
        "07775510db8ed040293d9ac69f7430dbba7dade63ce982299e04b79d227873d1",
        "0428", "643eaa384eeb75c49b971e9490d39d8a9540b986793d1d5ce0e654f83888ba70d43f743383c13d90",
        "0420", "cd38901f2fa462791c1469b3b0e98f42740d2298fafce8a5d44fa287e3b468d5",
        "30818f",                                   //     part 2
        "0441", "045ecbe4d1a6330a44c8f7ef951d4bf165e6c6b721efada985fb41661bc6e7fd6c",
        "8734640c4998ff7e374b06ce1a64a2ecd82ab036384fb83d9a79b127a27d5032", // 3G
        "0428", "d750f1913cb24820ba8afa47e2d6b0f36225380ff7e4ae2c490acaa7ff049fd0b3cc4b1d84d3a0a3",
        "0420", "81477c8229fcb764e2eb8cf4172d0968bcdf78930a9c4950e158909efa1d7584",
    );

    /// `importMkParts` on unit B at counter 12 with MK_PARTS_REQUEST as input.
    pub const ADMIN_COMMAND_IMPORT_MK_PARTS: &str = concat!(
        "3082016a",                                 // SEQUENCE, 362 bytes
        "0410", "ffeeddccbbaa99887766554433221100", //   unitId: unit B
        "02010c",                                   //   counter 12
        "0a0141",                                   //   command ENUMERATED importMkParts(65)
        "0482014e",                                 //   input OCTET STRING (334): MK_PARTS_REQUEST
        "3082014a",
        "0420", "698bea63dc44a344663ff1429aea10842df27b6b991ef25866b2c6c02cdcc5be",
        "30820124",
        "30818f",
        "0441", "047cf27b188d034f7e8a52380304b51ac3c08969e277f21b35a60b48fc47669978",
        "07775510db8ed040293d9ac69f7430dbba7dade63ce982299e04b79d227873d1",
        "0428", "643eaa384eeb75c49b971e9490d39d8a9540b986793d1d5ce0e654f83888ba70d43f743383c13d90",
        "0420", "cd38901f2fa462791c1469b3b0e98f42740d2298fafce8a5d44fa287e3b468d5",
        "30818f",
        "0441", "045ecbe4d1a6330a44c8f7ef951d4bf165e6c6b721efada985fb41661bc6e7fd6c",
        "8734640c4998ff7e374b06ce1a64a2ecd82ab036384fb83d9a79b127a27d5032",
        "0428", "d750f1913cb24820ba8afa47e2d6b0f36225380ff7e4ae2c490acaa7ff049fd0b3cc4b1d84d3a0a3",
        "0420", "81477c8229fcb764e2eb8cf4172d0968bcdf78930a9c4950e158909efa1d7584",
    );

    /// A recovery unit of the instance 0b6f0c8e-5d6a-4b8e-9a51-0c2f8e7d6b1a.
    pub const UNIT_DESCRIPTION: &str = concat!(
        "3015",                                     // SEQUENCE, 21 bytes
        "0a0101",                                   //   unitType   ENUMERATED recovery(1)
        "0410", "0b6f0c8e5d6a4b8e9a510c2f8e7d6b1a", //   instanceId OCTET STRING (16)
    );

    /// The device certificate extension that carries UNIT_DESCRIPTION.
    pub const UNIT_DESCRIPTION_EXTENSION: &str = concat!(
        "3028",                     // Extension SEQUENCE, 40 bytes
        "060a2b0601040183dd7a0101", //   extnID    OID 1.3.6.1.4.1.61178.1.1
        "0101ff",                   //   critical  BOOLEAN TRUE
        "0417",                     //   extnValue OCTET STRING (23): UNIT_DESCRIPTION
        "3015",
        "0a0101",
        "0410", "0b6f0c8e5d6a4b8e9a510c2f8e7d6b1a",
    );
}
use vectors::*;

// ---- The values ------------------------------------------------------------------------

fn os(hex: &str) -> OctetString {
    OctetString::new(h(hex)).unwrap()
}
fn unit() -> UnitId {
    UnitId::from_hex(UNIT).unwrap()
}
fn unit2() -> UnitId {
    UnitId::from_hex(UNIT2).unwrap()
}

fn admin_command() -> AdminCommand {
    AdminCommand {
        unit_id: unit(),
        counter: 5,
        command: CommandId::SetThresholds,
        input: os("3006020102020103"),
    }
}
fn admin_command_zeroize() -> AdminCommand {
    AdminCommand {
        unit_id: unit(),
        counter: 128,
        command: CommandId::Zeroize,
        input: OctetString::new(Vec::new()).unwrap(),
    }
}
fn signer_info() -> SignerInfo {
    SignerInfo {
        ski: Ski::from_hex(SKI_A).unwrap(),
        signature: os(SIG),
    }
}
fn signed_command() -> SignedCommand {
    SignedCommand {
        command: OctetString::new(admin_command().to_der().unwrap()).unwrap(),
        signer_infos: vec![signer_info()],
    }
}
fn query() -> Query {
    Query {
        unit_id: unit(),
        nonce: Nonce::from_hex(NONCE).unwrap(),
    }
}
fn response_body() -> ResponseBody {
    ResponseBody {
        unit_id: unit(),
        counter: 6,
        request_hash: Digest32::from_hex(DIGEST).unwrap(),
        return_code: 0,
        reason_code: 0,
        output: os(VP1),
    }
}
fn admin_info() -> AdminInfo {
    AdminInfo {
        ski: Ski::from_hex(SKI_A).unwrap(),
        name: AdminName::new("alice").unwrap(),
    }
}
fn admin_info_utf8() -> AdminInfo {
    AdminInfo {
        ski: Ski::from_hex(SKI_B).unwrap(),
        name: AdminName::new("Zoë").unwrap(),
    }
}
fn register_valid() -> RegisterStatus {
    RegisterStatus {
        state: RegisterState::Valid,
        vp: Some(Vp::from_hex(VP1).unwrap()),
    }
}
fn unit_status() -> UnitStatus {
    UnitStatus {
        unit_id: unit(),
        unit_type: UnitType::Recovery,
        counter: 7,
        sig_threshold: 2,
        rev_threshold: 2,
        admins: vec![admin_info(), admin_info_utf8()],
        new_register: RegisterStatus {
            state: RegisterState::FullUncommitted,
            vp: Some(Vp::from_hex(VP2).unwrap()),
        },
        current_register: register_valid(),
        importer_pending: true,
        control_points: ControlPoints::of(&[
            ControlPoint::new(0).unwrap(),
            ControlPoint::ALG_EC_25519,
            ControlPoint::ECDSA_OTHER,
            ControlPoint::new(127).unwrap(),
        ]),
    }
}
fn unit_status_imprint() -> UnitStatus {
    UnitStatus {
        unit_id: unit(),
        unit_type: UnitType::Operational,
        counter: 0,
        sig_threshold: 0,
        rev_threshold: 0,
        admins: vec![],
        new_register: RegisterStatus::EMPTY,
        current_register: RegisterStatus::EMPTY,
        importer_pending: false,
        control_points: ControlPoints::DEFAULT,
    }
}
fn importer_key() -> ImporterKey {
    ImporterKey {
        unit_id: unit2(),
        key_id: Digest32::from_hex(KEY_ID_G).unwrap(),
        public_key: os(POINT_G),
    }
}
fn certified_importer() -> CertifiedImporter {
    CertifiedImporter {
        importer: OctetString::new(importer_key().to_der().unwrap()).unwrap(),
        signature: os(SIG),
    }
}
fn mk_envelope() -> MkEnvelope {
    MkEnvelope {
        source_unit_id: unit(),
        target_unit_id: unit2(),
        importer_key_id: Digest32::from_hex(KEY_ID_G).unwrap(),
        ephemeral_public_key: os(POINT_2G),
        wrapped_key: os(WRAPPED),
        vp: Vp::from_hex(VP1).unwrap(),
    }
}

/// Encodes `value`, compares with `hex`, decodes `hex` and compares with `value`.
fn golden<'a, T>(value: &T, hex: &str, bytes: &'a mut Vec<u8>)
where
    T: Encode + Decode<'a> + PartialEq + core::fmt::Debug,
{
    assert_eq!(
        hex::encode(value.to_der().unwrap()),
        hex,
        "encoding of {value:?}"
    );
    *bytes = h(hex);
    assert_eq!(&T::from_der(bytes).unwrap(), value, "decoding of {hex}");
}

macro_rules! golden {
    ($value:expr, $hex:expr) => {{
        let mut buf = Vec::new();
        golden(&$value, $hex, &mut buf);
    }};
}

#[test]
fn thresholds_input() {
    golden!(
        ThresholdsInput {
            signature: 2,
            revocation: 3
        },
        THRESHOLDS_INPUT
    );
}

#[test]
fn admin_command_vectors() {
    golden!(admin_command(), ADMIN_COMMAND);
    golden!(admin_command_zeroize(), ADMIN_COMMAND_ZEROIZE);
}

#[test]
fn admin_command_from_command_to_wire() {
    // The typed command gives the same bytes as the literal AdminCommand.
    let cmd = tke_proto::Command::SetThresholds {
        signature: tke_proto::Threshold::new(2).unwrap(),
        revocation: tke_proto::Threshold::new(3).unwrap(),
    };
    let wire = cmd.to_wire(unit(), 5).unwrap();
    assert_eq!(hex::encode(wire.to_der().unwrap()), ADMIN_COMMAND);
    let wire = tke_proto::Command::Zeroize.to_wire(unit(), 128).unwrap();
    assert_eq!(hex::encode(wire.to_der().unwrap()), ADMIN_COMMAND_ZEROIZE);
}

#[test]
fn signer_info_vector() {
    golden!(signer_info(), SIGNER_INFO);
}

#[test]
fn signed_command_vectors() {
    golden!(signed_command(), SIGNED_COMMAND);
    let unsigned = SignedCommand::unsigned(&admin_command_zeroize()).unwrap();
    golden!(unsigned, SIGNED_COMMAND_UNSIGNED);
    assert_eq!(unsigned.admin_command().unwrap(), admin_command_zeroize());
}

fn audit_record() -> AuditRecord {
    AuditRecord {
        counter: 5,
        command: CommandId::SetThresholds,
        command_hash: Digest32::from_hex(DIGEST).unwrap(),
        signers: vec![Ski::from_hex(SKI_A).unwrap(), Ski::from_hex(SKI_B).unwrap()],
        return_code: 0,
        reason_code: 0,
        time: 1_764_403_200,
        prev: Digest32::from_hex(VP1).unwrap(),
    }
}

#[test]
fn audit_vectors() {
    golden!(audit_record(), AUDIT_RECORD);
    golden!(
        Request::Audit(AuditQuery {
            unit_id: unit(),
            nonce: Nonce::from_hex(NONCE).unwrap(),
            from: 5,
        }),
        REQUEST_AUDIT
    );
    let page = AuditPage {
        first: 1,
        head: Digest32::from_hex(DIGEST).unwrap(),
        prev: Digest32([0; 32]),
        records: vec![OctetString::new(h(AUDIT_RECORD)).unwrap()],
    };
    golden!(page, AUDIT_PAGE);
    assert_eq!(AuditPage::decode_checked(&h(AUDIT_PAGE)).unwrap(), page);
    assert_eq!(
        AuditRecord::decode_checked(&h(AUDIT_RECORD)).unwrap(),
        audit_record()
    );
}

#[test]
fn query_vector() {
    golden!(query(), QUERY);
}

#[test]
fn request_vectors() {
    golden!(Request::Query(query()), REQUEST_QUERY);
    golden!(Request::Command(signed_command()), REQUEST_COMMAND);
}

fn service_request(op: ServiceOp) -> Request {
    Request::Service(ServiceRequest {
        unit_id: unit(),
        nonce: Nonce::from_hex(NONCE).unwrap(),
        op,
    })
}

#[test]
fn service_request_vectors() {
    golden!(
        service_request(ServiceOp::GenerateKeys(3)),
        REQUEST_SERVICE_GENERATE
    );
    golden!(
        service_request(ServiceOp::WrapData(WrapData {
            vp: Vp::from_hex(VP1).unwrap(),
            root: os(WRAPPED),
            data: SecretOctets::new(h("101112131415161718191a1b1c1d1e1f")),
        })),
        REQUEST_SERVICE_WRAP
    );
    golden!(
        service_request(ServiceOp::UnwrapData(UnwrapData {
            vp: Vp::from_hex(VP1).unwrap(),
            root: os(WRAPPED),
            wrapped: os(WRAPPED),
        })),
        REQUEST_SERVICE_UNWRAP
    );
    golden!(
        service_request(ServiceOp::Rewrap(Rewrap {
            from: Vp::from_hex(VP1).unwrap(),
            to: Vp::from_hex(VP2).unwrap(),
            keys: vec![os(WRAPPED)],
        })),
        REQUEST_SERVICE_REWRAP
    );
    golden!(
        GeneratedKeys {
            vp: Vp::from_hex(VP1).unwrap(),
            keys: vec![os(WRAPPED)],
        },
        GENERATED_KEYS
    );
}

#[test]
fn response_body_vectors() {
    golden!(response_body(), RESPONSE_BODY);
    let err = ResponseBody {
        unit_id: unit(),
        counter: 5,
        request_hash: Digest32::from_hex(DIGEST).unwrap(),
        return_code: 209,
        reason_code: 57,
        output: OctetString::new(Vec::new()).unwrap(),
    };
    golden!(err, RESPONSE_BODY_ERROR);
    assert_eq!(
        err.error(),
        Some(tke_proto::ModuleError::SIG_THRESHOLD_ABOVE_ADMINS)
    );
    assert_eq!(response_body().error(), None);
}

#[test]
fn signed_response_vector() {
    golden!(
        SignedResponse {
            body: OctetString::new(response_body().to_der().unwrap()).unwrap(),
            signature: os(SIG),
        },
        SIGNED_RESPONSE
    );
}

#[test]
fn signed_response_to_the_query_vector() {
    let body = ResponseBody {
        unit_id: unit(),
        counter: 0,
        request_hash: Digest32::sha256(&h(REQUEST_QUERY)),
        return_code: 0,
        reason_code: 0,
        output: OctetString::new(unit_status_imprint().to_der().unwrap()).unwrap(),
    };
    let signed = SignedResponse {
        body: OctetString::new(body.to_der().unwrap()).unwrap(),
        signature: os(SIG),
    };
    golden!(signed, SIGNED_RESPONSE_QUERY);
    // What a client checks after the signature (§10): the binding and the status.
    let decoded = ResponseBody::from_der(signed.body.as_bytes()).unwrap();
    assert_eq!(decoded.unit_id, query().unit_id);
    assert_eq!(decoded.request_hash, Digest32::sha256(&h(REQUEST_QUERY)));
    assert_eq!(
        UnitStatus::decode_checked(decoded.output.as_bytes()).unwrap(),
        unit_status_imprint()
    );
}

#[test]
fn admin_info_vectors() {
    golden!(admin_info(), ADMIN_INFO);
    golden!(admin_info_utf8(), ADMIN_INFO_UTF8);
}

#[test]
fn register_status_vectors() {
    golden!(RegisterStatus::EMPTY, REGISTER_EMPTY);
    golden!(register_valid(), REGISTER_VALID);
}

#[test]
fn unit_status_vectors() {
    golden!(unit_status(), UNIT_STATUS);
    golden!(unit_status_imprint(), UNIT_STATUS_IMPRINT);
    // Both satisfy the invariants.
    assert_eq!(
        UnitStatus::decode_checked(&h(UNIT_STATUS)).unwrap(),
        unit_status()
    );
    let imprint = UnitStatus::decode_checked(&h(UNIT_STATUS_IMPRINT)).unwrap();
    assert!(imprint.imprint_mode());
    assert!(!unit_status().imprint_mode());
}

#[test]
fn importer_key_vector() {
    golden!(importer_key(), IMPORTER_KEY);
    // ImporterKey::new computes the same key id.
    let g = tke_proto::transport::parse_point(&h(POINT_G), "G").unwrap();
    assert_eq!(ImporterKey::new(unit2(), &g).unwrap(), importer_key());
    assert_eq!(importer_key().key().unwrap(), g);
}

#[test]
fn certified_importer_vector() {
    golden!(certified_importer(), CERTIFIED_IMPORTER);
}

#[test]
fn export_request_vector() {
    golden!(
        ExportRequest {
            register: Register::New,
            target_certificate: os("deadbeef"),
            importer: certified_importer(),
            target_instance: None,
        },
        EXPORT_REQUEST
    );
    golden!(
        ExportRequest {
            register: Register::New,
            target_certificate: os("deadbeef"),
            importer: certified_importer(),
            target_instance: Some(golden_instance()),
        },
        EXPORT_REQUEST_CROSS_INSTANCE
    );
}

/// The instance id of the vectors (UNIT_DESCRIPTION's).
fn golden_instance() -> InstanceId {
    InstanceId::from_uuid("0b6f0c8e-5d6a-4b8e-9a51-0c2f8e7d6b1a").unwrap()
}

#[test]
fn mk_envelope_vector() {
    golden!(mk_envelope(), MK_ENVELOPE);
}

#[test]
fn signed_envelope_vector() {
    golden!(
        SignedEnvelope {
            envelope: OctetString::new(mk_envelope().to_der().unwrap()).unwrap(),
            signature: os(SIG),
            source_certificate: os("deadbeef"),
            source_instance: None,
        },
        SIGNED_ENVELOPE
    );
    golden!(
        SignedEnvelope {
            envelope: OctetString::new(mk_envelope().to_der().unwrap()).unwrap(),
            signature: os(SIG),
            source_certificate: os("deadbeef"),
            source_instance: Some(golden_instance()),
        },
        SIGNED_ENVELOPE_CROSS_INSTANCE
    );
}

#[test]
fn control_point_command_vector() {
    let wire = tke_proto::Command::AddControlPoints(ControlPoints::of(&[ControlPoint::BTC]))
        .to_wire(unit(), 9)
        .unwrap();
    golden!(wire, ADMIN_COMMAND_ADD_CONTROL_POINTS);
}

/// The sealed parts of crosscheck.rs's known answer.
fn sealed_parts() -> Vec<SealedPart> {
    vec![
        SealedPart {
            ephemeral_public_key: os(POINT_2G),
            wrapped_part: os(WRAPPED_PART_1),
            vp: Vp::from_hex(VP_PART_1).unwrap(),
        },
        SealedPart {
            ephemeral_public_key: os(POINT_3G),
            wrapped_part: os(WRAPPED_PART_2),
            vp: Vp::from_hex(VP_PART_2).unwrap(),
        },
    ]
}

#[test]
fn master_key_parts_vectors() {
    let parts = sealed_parts();
    golden!(parts[0], SEALED_PART);
    let request = MkPartsRequest {
        importer_key_id: Digest32::from_hex(KEY_ID_G).unwrap(),
        parts,
    };
    golden!(request, MK_PARTS_REQUEST);
    let wire = tke_proto::Command::ImportMkParts(Box::new(request.clone()))
        .to_wire(unit2(), 12)
        .unwrap();
    golden!(wire, ADMIN_COMMAND_IMPORT_MK_PARTS);
    // The vector is a real one: the importer secret 1 of unit B opens both parts, and
    // their XOR has the VP quoted in docs/protocol.md §14.4.
    let one = p256::SecretKey::from_slice(&{
        let mut s = [0u8; 32];
        s[31] = 1;
        s
    })
    .unwrap();
    let opened: Vec<_> = request
        .parts
        .iter()
        .enumerate()
        .map(|(i, p)| tke_proto::parts::soft_open_part(p, unit2(), i + 1, &one).unwrap())
        .collect();
    assert_eq!(
        tke_proto::parts::combine(&opened).unwrap().vp().to_hex(),
        VP_PARTS_KEY
    );
    // Bound to the target and the position: another unit, or the parts swapped, do not open.
    assert!(tke_proto::parts::soft_open_part(&request.parts[0], unit(), 1, &one).is_err());
    assert!(tke_proto::parts::soft_open_part(&request.parts[0], unit2(), 2, &one).is_err());
}

fn unit_description() -> UnitDescription {
    UnitDescription {
        unit_type: UnitType::Recovery,
        instance_id: InstanceId::from_uuid("0b6f0c8e-5d6a-4b8e-9a51-0c2f8e7d6b1a").unwrap(),
    }
}

#[test]
fn unit_description_vectors() {
    golden!(unit_description(), UNIT_DESCRIPTION);
    let ext = x509_cert::ext::Extension {
        extn_id: tke_proto::cert::OID_UNIT_DESCRIPTION,
        critical: true,
        extn_value: OctetString::new(h(UNIT_DESCRIPTION)).unwrap(),
    };
    golden!(ext, UNIT_DESCRIPTION_EXTENSION);
    // The extension a device certificate carries is exactly this one.
    let f = common::fleet();
    let needle = h(UNIT_DESCRIPTION_EXTENSION);
    assert!(f
        .a
        .cert
        .der()
        .windows(needle.len())
        .any(|w| w == needle.as_slice()));
}

/// Every vector is well-formed DER for an independent parser: `openssl asn1parse`.
#[test]
fn openssl_asn1parse_reads_every_vector() {
    let dir = common::tempdir();
    for (name, vector) in ALL {
        let file = dir.path().join(name);
        std::fs::write(&file, h(vector)).unwrap();
        let out = common::openssl_ok(
            dir.path(),
            &["asn1parse", "-inform", "DER", "-in", file.to_str().unwrap()],
        );
        let text = String::from_utf8_lossy(&out);
        assert!(!text.contains("Error"), "{name}: {text}");
    }
}

/// `AuditRecord`: counter 5, `setThresholds` signed by SKI A and B, done, at
/// 2025-11-29T08:00:00Z (1764403200), previous record hash VP1's bytes.
const AUDIT_RECORD: &str = concat!(
    "30819c", // AuditRecord (156 bytes)
    "020105", // counter 5
    "0a0108", // command setThresholds(8)
    "0420606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f", // commandHash
    "3044",   // signers (2 SKIs)
    "0420a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf", // SKI A
    "0420c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf", // SKI B
    "020100", // returnCode 0
    "020100", // reasonCode 0
    "0204692aa800", // time 1764403200 (2025-11-29T08:00:00Z)
    "0420e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff", // prev
);
/// `Request.audit` (`[3]`): unit A, the nonce, from counter 5.
const REQUEST_AUDIT: &str = concat!(
    "a327",                                 // [3] IMPLICIT AuditQuery (39 bytes)
    "041000112233445566778899aabbccddeeff", // unitId
    "04100f0e0d0c0b0a09080706050403020100", // nonce
    "020105",                               // from 5
);
/// `AuditPage`: first 1, head DIGEST, prev zeros, one record: [`AUDIT_RECORD`].
const AUDIT_PAGE: &str = concat!(
    "3081ec", // AuditPage (236 bytes)
    "020101", // first 1
    "0420606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f", // head
    "04200000000000000000000000000000000000000000000000000000000000000000", // prev
    "3081a2", // records
    "04819f", // OCTET STRING (159 bytes): DER of AuditRecord, as AUDIT_RECORD
    "30819c",
    "020105",
    "0a0108",
    "0420606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f",
    "3044",
    "0420a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf",
    "0420c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf",
    "020100",
    "020100",
    "0204692aa800",
    "0420e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
);

/// Every vector, for the strictness tests below.
const ALL: &[(&str, &str)] = &[
    ("ThresholdsInput", THRESHOLDS_INPUT),
    ("AdminCommand", ADMIN_COMMAND),
    ("AdminCommandZeroize", ADMIN_COMMAND_ZEROIZE),
    ("SignerInfo", SIGNER_INFO),
    ("SignedCommand", SIGNED_COMMAND),
    ("SignedCommandUnsigned", SIGNED_COMMAND_UNSIGNED),
    ("Query", QUERY),
    ("RequestQuery", REQUEST_QUERY),
    ("RequestCommand", REQUEST_COMMAND),
    ("RequestServiceGenerate", REQUEST_SERVICE_GENERATE),
    ("RequestServiceWrap", REQUEST_SERVICE_WRAP),
    ("RequestServiceUnwrap", REQUEST_SERVICE_UNWRAP),
    ("RequestServiceRewrap", REQUEST_SERVICE_REWRAP),
    ("GeneratedKeys", GENERATED_KEYS),
    ("ResponseBody", RESPONSE_BODY),
    ("ResponseBodyError", RESPONSE_BODY_ERROR),
    ("SignedResponse", SIGNED_RESPONSE),
    ("SignedResponseQuery", SIGNED_RESPONSE_QUERY),
    ("AdminInfo", ADMIN_INFO),
    ("AdminInfoUtf8", ADMIN_INFO_UTF8),
    ("RegisterEmpty", REGISTER_EMPTY),
    ("RegisterValid", REGISTER_VALID),
    ("UnitStatus", UNIT_STATUS),
    ("UnitStatusImprint", UNIT_STATUS_IMPRINT),
    ("ImporterKey", IMPORTER_KEY),
    ("CertifiedImporter", CERTIFIED_IMPORTER),
    ("ExportRequest", EXPORT_REQUEST),
    ("ExportRequestCrossInstance", EXPORT_REQUEST_CROSS_INSTANCE),
    ("MkEnvelope", MK_ENVELOPE),
    ("SignedEnvelope", SIGNED_ENVELOPE),
    (
        "SignedEnvelopeCrossInstance",
        SIGNED_ENVELOPE_CROSS_INSTANCE,
    ),
    (
        "AdminCommandAddControlPoints",
        ADMIN_COMMAND_ADD_CONTROL_POINTS,
    ),
    ("SealedPart", SEALED_PART),
    ("MkPartsRequest", MK_PARTS_REQUEST),
    ("AdminCommandImportMkParts", ADMIN_COMMAND_IMPORT_MK_PARTS),
    ("UnitDescription", UNIT_DESCRIPTION),
    ("UnitDescriptionExtension", UNIT_DESCRIPTION_EXTENSION),
    ("AuditRecord", AUDIT_RECORD),
    ("RequestAudit", REQUEST_AUDIT),
    ("AuditPage", AUDIT_PAGE),
];

/// Decodes `bytes` as the type the vector `name` belongs to, and re-encodes the value.
fn decode_as(name: &str, bytes: &[u8]) -> Result<Vec<u8>, der::Error> {
    fn re<'a, T: Decode<'a> + Encode>(bytes: &'a [u8]) -> Result<Vec<u8>, der::Error> {
        T::from_der(bytes)?.to_der()
    }
    match name {
        "ThresholdsInput" => re::<ThresholdsInput>(bytes),
        "AdminCommand"
        | "AdminCommandZeroize"
        | "AdminCommandAddControlPoints"
        | "AdminCommandImportMkParts" => re::<AdminCommand>(bytes),
        "SealedPart" => re::<SealedPart>(bytes),
        "MkPartsRequest" => re::<MkPartsRequest>(bytes),
        "SignerInfo" => re::<SignerInfo>(bytes),
        "SignedCommand" | "SignedCommandUnsigned" => re::<SignedCommand>(bytes),
        "Query" => re::<Query>(bytes),
        "RequestQuery"
        | "RequestCommand"
        | "RequestServiceGenerate"
        | "RequestServiceWrap"
        | "RequestServiceUnwrap"
        | "RequestServiceRewrap"
        | "RequestAudit" => re::<Request>(bytes),
        "AuditRecord" => re::<AuditRecord>(bytes),
        "AuditPage" => re::<AuditPage>(bytes),
        "GeneratedKeys" => re::<GeneratedKeys>(bytes),
        "ResponseBody" | "ResponseBodyError" => re::<ResponseBody>(bytes),
        "SignedResponse" | "SignedResponseQuery" => re::<SignedResponse>(bytes),
        "AdminInfo" | "AdminInfoUtf8" => re::<AdminInfo>(bytes),
        "RegisterEmpty" | "RegisterValid" => re::<RegisterStatus>(bytes),
        "UnitStatus" | "UnitStatusImprint" => re::<UnitStatus>(bytes),
        "ImporterKey" => re::<ImporterKey>(bytes),
        "CertifiedImporter" => re::<CertifiedImporter>(bytes),
        "ExportRequest" | "ExportRequestCrossInstance" => re::<ExportRequest>(bytes),
        "MkEnvelope" => re::<MkEnvelope>(bytes),
        "SignedEnvelope" | "SignedEnvelopeCrossInstance" => re::<SignedEnvelope>(bytes),
        "UnitDescription" => re::<UnitDescription>(bytes),
        "UnitDescriptionExtension" => re::<x509_cert::ext::Extension>(bytes),
        other => panic!("no decoder for {other}"),
    }
}

/// DER is canonical: whatever a decoder accepts must be the one encoding of the value
/// it yields. Mutates every vector at random (a fixed-seed xorshift, so failures
/// reproduce) and checks that each accepted input re-encodes to itself, and that no
/// input makes a decoder panic.
#[test]
fn accepted_inputs_are_canonical() {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut accepted = 0;
    for (name, vector) in ALL {
        let original = h(vector);
        for _ in 0..2000 {
            let mut bytes = original.clone();
            for _ in 0..=(next() % 3) {
                let i = (next() % bytes.len() as u64) as usize;
                match next() % 4 {
                    0 => bytes[i] ^= 1 << (next() % 8),
                    1 => bytes[i] = next() as u8,
                    2 => {
                        bytes.remove(i);
                    }
                    _ => bytes.insert(i, next() as u8),
                }
                if bytes.is_empty() {
                    break;
                }
            }
            if let Ok(again) = decode_as(name, &bytes) {
                accepted += 1;
                assert_eq!(
                    hex::encode(&again),
                    hex::encode(&bytes),
                    "{name}: accepted a non-canonical encoding"
                );
            }
        }
    }
    // Mutations inside OCTET STRING payloads stay valid: the loop did test acceptance.
    assert!(accepted > 1000, "only {accepted} mutants decoded");
}

#[test]
fn every_vector_refuses_trailing_bytes() {
    for (name, vector) in ALL {
        let mut bytes = h(vector);
        assert_eq!(decode_as(name, &bytes).unwrap(), bytes);
        for extra in [&[0x00][..], &[0x30, 0x00], &[0xff]] {
            bytes.truncate(h(vector).len());
            bytes.extend_from_slice(extra);
            assert!(
                decode_as(name, &bytes).is_err(),
                "{name} accepted trailing {extra:02x?}"
            );
        }
    }
}

#[test]
fn every_vector_refuses_truncation() {
    for (name, vector) in ALL {
        let bytes = h(vector);
        for len in 0..bytes.len() {
            assert!(
                decode_as(name, &bytes[..len]).is_err(),
                "{name} accepted a truncation to {len} bytes"
            );
        }
    }
}

/// Re-encodes the outer length in a longer form than DER allows (short lengths in long
/// form, long lengths with a leading zero byte): refused.
#[test]
fn every_vector_refuses_non_canonical_outer_length() {
    for (name, vector) in ALL {
        let bytes = h(vector);
        let (len, header) = match bytes[1] {
            l if l < 0x80 => (usize::from(l), 2),
            0x81 => (usize::from(bytes[2]), 3),
            0x82 => (usize::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4),
            other => panic!("unexpected length byte {other:#x}"),
        };
        let content = &bytes[header..];
        assert_eq!(content.len(), len);
        let [hi, lo] = u16::try_from(len).unwrap().to_be_bytes();
        let mut forms: Vec<Vec<u8>> = vec![
            // One more length byte than needed, with a leading zero.
            if len < 0x100 {
                [&[bytes[0], 0x82, 0x00, lo][..], content].concat()
            } else {
                [&[bytes[0], 0x83, 0x00, hi, lo][..], content].concat()
            },
            // Indefinite length with end-of-contents (BER only).
            [&[bytes[0], 0x80][..], content, &[0x00, 0x00]].concat(),
        ];
        if len < 0x80 {
            // 0x81 LL for a length below 128.
            forms.push([&[bytes[0], 0x81, len as u8][..], content].concat());
        }
        for form in forms {
            assert!(
                decode_as(name, &form).is_err(),
                "{name} accepted the non-canonical encoding {}",
                hex::encode(&form)
            );
        }
    }
}

/// Wrong outer tags are refused (a SEQUENCE where a Request CHOICE is expected, and the
/// other way round; a primitive [0] for a Request).
#[test]
fn wrong_tags_refused() {
    let mut seq = h(REQUEST_QUERY);
    seq[0] = 0x30;
    assert!(Request::from_der(&seq).is_err());
    seq[0] = 0x80; // [0] primitive
    assert!(Request::from_der(&seq).is_err());
    seq[0] = 0xa3; // [3]: an AuditQuery, which has a `from` a Query lacks
    assert!(Request::from_der(&seq).is_err());
    seq[0] = 0xa4; // [4]: no such alternative
    assert!(Request::from_der(&seq).is_err());
    let mut q = h(QUERY);
    q[0] = 0xa0;
    assert!(Query::from_der(&q).is_err());
}

/// `docs/protocol.md` §14 (and §17) quotes vectors after a `<!-- golden: NAME -->` line, NAME being a
/// name of [`ALL`]: the hex of the code block that follows (each line's leading hex
/// tokens, up to the first annotation word) is that vector, byte for byte.
#[test]
fn protocol_md_quotes_the_golden_vectors() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/protocol.md"
    ))
    .unwrap();
    let is_hex = |t: &str| {
        !t.is_empty() && t.len().is_multiple_of(2) && t.chars().all(|c| c.is_ascii_hexdigit())
    };
    let mut quoted = Vec::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line
            .trim()
            .strip_prefix("<!-- golden: ")
            .and_then(|r| r.strip_suffix(" -->"))
        else {
            continue;
        };
        let (_, vector) = ALL
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("protocol.md quotes an unknown vector {name}"));
        assert_eq!(lines.next(), Some("```text"), "{name}: no code block");
        let mut hex = String::new();
        for l in lines.by_ref().take_while(|l| *l != "```") {
            for t in l.split_whitespace().take_while(|t| is_hex(t)) {
                hex.push_str(t);
            }
        }
        assert_eq!(hex, *vector, "protocol.md's {name} differs from golden.rs");
        quoted.push(name);
    }
    for name in [
        "AdminCommand",
        "RequestCommand",
        "ResponseBody",
        "SignedResponseQuery",
        "ImporterKey",
        "CertifiedImporter",
        "ExportRequest",
        "ExportRequestCrossInstance",
        "MkEnvelope",
        "SignedEnvelope",
        "SignedEnvelopeCrossInstance",
        "UnitDescriptionExtension",
        "UnitStatus",
        "UnitStatusImprint",
        "AdminCommandAddControlPoints",
        "SealedPart",
        "AdminCommandImportMkParts",
        "RequestServiceRewrap",
        "RequestServiceGenerate",
        "GeneratedKeys",
        "AuditRecord",
        "RequestAudit",
        "AuditPage",
    ] {
        assert!(
            quoted.contains(&name),
            "protocol.md §14 does not quote {name}"
        );
    }
}

// ---- Device-key signatures (protocol v3) ------------------------------------------------

/// The context labels (ASCII, NUL-terminated) and `SHA-256(label ‖ vector)` for the three
/// kinds of message a device key signs. The digests were computed with Python's hashlib;
/// the labels are `docs/protocol.md` §10.1.
mod device_vectors {
    pub const LABEL_RESPONSE: &str = "544b452d50726f746f636f6c2d763320526573706f6e7365426f647900";
    pub const LABEL_IMPORTER: &str = "544b452d50726f746f636f6c2d763320496d706f727465724b657900";
    pub const LABEL_ENVELOPE: &str = "544b452d50726f746f636f6c2d7633204d6b456e76656c6f706500";
    /// SHA-256(LABEL_RESPONSE ‖ RESPONSE_BODY).
    pub const DIGEST_RESPONSE: &str =
        "6af58f2b1991345d4eaf5c961cde7eab56a351a2c15f72ef1c8e96fa608cecb4";
    /// SHA-256(LABEL_IMPORTER ‖ IMPORTER_KEY).
    pub const DIGEST_IMPORTER: &str =
        "3408eda62e06876f3370b9b2c7201f5394bdb83c4673ac95b43236ea2ab95e46";
    /// SHA-256(LABEL_ENVELOPE ‖ MK_ENVELOPE).
    pub const DIGEST_ENVELOPE: &str =
        "0699d77d818c56ffc83e311b9aeabc7fb93d5b32d9ca0407007b8387f1e7c2ce";
    /// The RFC 6979 (deterministic) signature of unit A's test device key (the scalar
    /// `0a` × 32) over LABEL_RESPONSE ‖ RESPONSE_BODY (Python's `cryptography` with
    /// `deterministic_signing=True` gives the same bytes). Regenerate with
    /// `cargo test -p tke-proto --test golden -- --ignored --nocapture`.
    pub const SIG_RESPONSE_A: &str = concat!(
        "3045022033cfdcd29d8521ad1c582f833b355b07a6f06b1e79bb5e79256f61a2509d117f",
        "022100c82aa7643eaade20ce7b2946b40f611a968dcb85f1aa2a277f98d84053536a49",
    );
}

/// The values of the device-signature vectors, computed by this crate.
fn device_vector_values() -> Vec<(&'static str, String)> {
    use p256::ecdsa::{signature::Signer as _, DerSignature};
    use tke_proto::DeviceContext;
    let sig: DerSignature =
        common::signing_key(0x0a).sign(&DeviceContext::Response.signed_bytes(&h(RESPONSE_BODY)));
    vec![
        (
            "LABEL_RESPONSE",
            hex::encode(DeviceContext::Response.label()),
        ),
        (
            "LABEL_IMPORTER",
            hex::encode(DeviceContext::Importer.label()),
        ),
        (
            "LABEL_ENVELOPE",
            hex::encode(DeviceContext::Envelope.label()),
        ),
        (
            "DIGEST_RESPONSE",
            hex::encode(DeviceContext::Response.digest(&h(RESPONSE_BODY)).0),
        ),
        (
            "DIGEST_IMPORTER",
            hex::encode(DeviceContext::Importer.digest(&h(IMPORTER_KEY)).0),
        ),
        (
            "DIGEST_ENVELOPE",
            hex::encode(DeviceContext::Envelope.digest(&h(MK_ENVELOPE)).0),
        ),
        ("SIG_RESPONSE_A", hex::encode(sig.as_bytes())),
    ]
}

/// Prints the device-signature vectors, to paste into `device_vectors` and §14.2.
#[test]
#[ignore = "prints the vectors; run with --ignored --nocapture to regenerate them"]
fn print_device_signature_vectors() {
    for (name, value) in device_vector_values() {
        println!("{name} = {value}");
    }
}

#[test]
fn device_signature_vectors() {
    use device_vectors::*;
    let expected = [
        LABEL_RESPONSE,
        LABEL_IMPORTER,
        LABEL_ENVELOPE,
        DIGEST_RESPONSE,
        DIGEST_IMPORTER,
        DIGEST_ENVELOPE,
        SIG_RESPONSE_A,
    ];
    for ((name, got), want) in device_vector_values().into_iter().zip(expected) {
        assert_eq!(got, want, "{name}");
    }
}

/// OpenSSL verifies the device signature over `label ‖ body`, and refuses it over the bare
/// body (protocol v1), under the version 2 label and under another kind's label.
#[test]
fn openssl_checks_the_device_signature_vector() {
    use p256::pkcs8::{EncodePublicKey, LineEnding};
    use tke_proto::DeviceContext;
    let dir = common::tempdir();
    let d = dir.path();
    let public = common::public_key(&common::signing_key(0x0a));
    std::fs::write(
        d.join("a.pem"),
        public.to_public_key_pem(LineEnding::LF).unwrap(),
    )
    .unwrap();
    std::fs::write(d.join("sig.der"), h(device_vectors::SIG_RESPONSE_A)).unwrap();
    let body = h(RESPONSE_BODY);
    let verify = |file: &str, bytes: Vec<u8>| {
        std::fs::write(d.join(file), bytes).unwrap();
        let args = [
            "dgst",
            "-sha256",
            "-verify",
            "a.pem",
            "-signature",
            "sig.der",
            file,
        ];
        common::openssl_in(d, &args).status.success()
    };
    assert!(verify(
        "v3.bin",
        DeviceContext::Response.signed_bytes(&body)
    ));
    assert!(!verify("v1.bin", body.clone()));
    assert!(!verify(
        "v2.bin",
        DeviceContext::Response.signed_bytes_of_version(2, &body)
    ));
    assert!(!verify(
        "envelope.bin",
        DeviceContext::Envelope.signed_bytes(&body)
    ));
}
