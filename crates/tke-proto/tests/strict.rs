#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Strict decoding: wrong fixed lengths, non-canonical encodings, invalid names,
//! thresholds out of range, impossible unit statuses, and command inputs that do not
//! match their command.

mod common;

use common::h;
use der::{asn1::OctetString, Decode, Encode};
use tke_proto::{
    command::ThresholdsInput,
    parts::{self, MasterKeyPart},
    transport::{CertifiedImporter, ExportRequest, ImporterKey, SignedEnvelope},
    AdminCommand, AdminInfo, AdminName, Command, CommandId, ControlPoints, Nonce, ProtoError,
    Query, Register, RegisterState, RegisterStatus, SignerInfo, Ski, Threshold, UnitId, UnitStatus,
    UnitType, Vp,
};

const UNIT: &str = "00112233445566778899aabbccddeeff";
const SKI: &str = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf";

/// An AdminCommand `{ unitId, counter 5, setThresholds, input 3006020102020103 }` with the
/// unit id's TLV replaced by `unit_tlv`.
fn admin_command_with_unit(unit_tlv: &str) -> Vec<u8> {
    let content = h(&format!("{unit_tlv}0201050a010804083006020102020103"));
    let mut out = vec![0x30, u8::try_from(content.len()).unwrap()];
    out.extend(content);
    out
}

#[test]
fn unit_id_must_be_16_bytes() {
    // The reference: 16 bytes decode.
    let ok = admin_command_with_unit(&format!("0410{UNIT}"));
    assert_eq!(
        AdminCommand::from_der(&ok).unwrap().unit_id,
        UnitId::from_hex(UNIT).unwrap()
    );
    // 15 and 17 bytes do not, inside a message or alone.
    for tlv in [format!("040f{}", &UNIT[..30]), format!("0411{UNIT}00")] {
        assert!(
            AdminCommand::from_der(&admin_command_with_unit(&tlv)).is_err(),
            "{tlv}"
        );
        assert!(UnitId::from_der(&h(&tlv)).is_err(), "{tlv}");
    }
    // Same rule for the other fixed-length values.
    assert!(Nonce::from_der(&h(&format!("040f{}", &UNIT[..30]))).is_err());
    assert!(Vp::from_der(&h(&format!("041f{}", &SKI[..62]))).is_err());
    // And for the slice and hex constructors, with the lengths in the error.
    match UnitId::from_slice(&[0; 15]) {
        Err(ProtoError::Length {
            expected: 16,
            actual: 15,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    assert!(UnitId::from_hex("zz").is_err());
    assert!(UnitId::from_uuid("00112233-4455-6677-8899-aabbccddeeff").is_ok());
    assert_eq!(
        UnitId::from_hex(UNIT).unwrap().uuid(),
        "00112233-4455-6677-8899-aabbccddeeff"
    );
}

#[test]
fn ski_must_be_32_bytes() {
    let good = h(&format!("302c0420{SKI}04083006020101020101"));
    assert_eq!(
        SignerInfo::from_der(&good).unwrap().ski,
        Ski::from_hex(SKI).unwrap()
    );
    let short = h(&format!("302b041f{}04083006020101020101", &SKI[..62]));
    assert!(SignerInfo::from_der(&short).is_err());
    assert!(Ski::from_der(&h(&format!("041f{}", &SKI[..62]))).is_err());
    let long = h(&format!("302d0421{SKI}0004083006020101020101"));
    assert!(SignerInfo::from_der(&long).is_err());
    match Ski::from_slice(&[0; 31]) {
        Err(ProtoError::Length {
            expected: 32,
            actual: 31,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn non_canonical_inner_encodings_refused() {
    // Long-form length for the 16-byte unit id (04 81 10 instead of 04 10).
    let content = h(&format!("048110{UNIT}0201050a010804083006020102020103"));
    let bytes = [&[0x30, u8::try_from(content.len()).unwrap()][..], &content].concat();
    assert!(AdminCommand::from_der(&bytes).is_err());
    // An INTEGER with a superfluous leading zero, and a negative counter.
    for counter in ["02020005", "0201ff", "020100ff"] {
        let content = h(&format!("0410{UNIT}{counter}0a010804083006020102020103"));
        let bytes = [&[0x30, u8::try_from(content.len()).unwrap()][..], &content].concat();
        assert!(AdminCommand::from_der(&bytes).is_err(), "counter {counter}");
    }
    // An unknown command id, and an ENUMERATED with a leading zero.
    for cmd in ["0a0103", "0a020008"] {
        let content = h(&format!(
            "0410{UNIT}0201050a{}04083006020102020103",
            &cmd[2..]
        ));
        let bytes = [&[0x30, u8::try_from(content.len()).unwrap()][..], &content].concat();
        assert!(AdminCommand::from_der(&bytes).is_err(), "command {cmd}");
    }
    // A BOOLEAN TRUE that is not FF (BER allows any non-zero byte, DER does not).
    let status = UnitStatus {
        unit_id: UnitId::from_hex(UNIT).unwrap(),
        unit_type: UnitType::Operational,
        counter: 0,
        sig_threshold: 0,
        rev_threshold: 0,
        admins: vec![],
        new_register: RegisterStatus::EMPTY,
        current_register: RegisterStatus::EMPTY,
        importer_pending: true,
        control_points: ControlPoints::DEFAULT,
    };
    let mut bytes = status.to_der().unwrap();
    // The BOOLEAN comes before the 18 bytes of the control point mask.
    let n = bytes.len() - 18;
    assert_eq!(&bytes[n - 3..n], &[0x01, 0x01, 0xff]);
    bytes[n - 1] = 0x01;
    assert!(UnitStatus::from_der(&bytes).is_err());
    // A control point mask of another size than 16 bytes.
    for len in [15u8, 17] {
        let mut bytes = status.to_der().unwrap();
        bytes.truncate(bytes.len() - 18);
        bytes.extend([0x04, len]);
        bytes.extend(std::iter::repeat_n(0, usize::from(len)));
        bytes[1] = u8::try_from(bytes.len() - 2).unwrap();
        assert!(UnitStatus::from_der(&bytes).is_err(), "{len} bytes");
    }
    // A status without the mask: what a protocol version 2 unit sends.
    let mut bytes = status.to_der().unwrap();
    bytes.truncate(bytes.len() - 18);
    bytes[1] = u8::try_from(bytes.len() - 2).unwrap();
    assert!(UnitStatus::from_der(&bytes).is_err());
    // The same status with the mask decodes (the edits above are the only faults).
    let mut bytes = status.to_der().unwrap();
    bytes[1] = u8::try_from(bytes.len() - 2).unwrap();
    assert_eq!(UnitStatus::from_der(&bytes).unwrap(), status);
    // A register state outside the enumeration.
    assert!(RegisterStatus::from_der(&h("30030a0104")).is_err());
    // A unit type outside the enumeration.
    let mut bytes = status.to_der().unwrap();
    assert_eq!(&bytes[20..23], &[0x0a, 0x01, 0x00]);
    bytes[22] = 0x03;
    assert!(UnitStatus::from_der(&bytes).is_err());
}

/// AdminInfo `{ SKI, UTF8String name }` built by hand around raw name bytes.
fn admin_info_bytes(name: &[u8]) -> Vec<u8> {
    let mut content = h(&format!("0420{SKI}"));
    content.push(0x0c);
    content.push(u8::try_from(name.len()).unwrap());
    content.extend_from_slice(name);
    [&[0x30, u8::try_from(content.len()).unwrap()][..], &content].concat()
}

#[test]
fn admin_names_checked_on_decode() {
    let thirty = "a".repeat(30);
    assert_eq!(
        AdminInfo::from_der(&admin_info_bytes(thirty.as_bytes()))
            .unwrap()
            .name
            .as_str(),
        thirty
    );
    // 30 characters that take more than 30 bytes are fine: the limit is in characters.
    let thirty_wide = "é".repeat(30);
    assert!(AdminInfo::from_der(&admin_info_bytes(thirty_wide.as_bytes())).is_ok());
    for bad in [
        "a".repeat(31),
        String::new(),
        " alice".to_owned(),
        "alice ".to_owned(),
        "ali\u{7}ce".to_owned(),
        "\talice".to_owned(),
    ] {
        assert!(
            AdminInfo::from_der(&admin_info_bytes(bad.as_bytes())).is_err(),
            "{bad:?} decoded"
        );
        assert!(
            matches!(AdminName::new(&bad), Err(ProtoError::AdminName { .. })),
            "{bad:?} accepted"
        );
    }
    // Not UTF-8 at all.
    assert!(AdminInfo::from_der(&admin_info_bytes(&[0x61, 0xff, 0x62])).is_err());
    // The error says what is wrong.
    let e = AdminName::new(&"a".repeat(31)).unwrap_err().to_string();
    assert!(
        e.contains("31 characters") && e.contains("longer than 30"),
        "{e}"
    );
    let e = AdminName::new(" x").unwrap_err().to_string();
    assert!(e.contains("white space"), "{e}");
    let e = AdminName::new("").unwrap_err().to_string();
    assert!(e.contains("empty"), "{e}");
}

/// Each class of character that hides what a name says is refused, by `AdminName::new` and
/// when decoding, with a message naming the class.
#[test]
fn admin_names_refuse_hidden_characters() {
    let classes: [(&str, &[&str]); 4] = [
        (
            "control characters",
            &["ali\u{7}ce", "ali\u{1b}[2Jce", "al\u{85}ice", "al\u{9b}ice"],
        ),
        (
            "white space other than the ASCII space",
            &[
                "ali\u{a0}ce",   // no-break space
                "ali\u{2003}ce", // em space
                "ali\u{3000}ce", // ideographic space
                "ali\u{2028}ce", // line separator
                "ali\u{2029}ce", // paragraph separator
            ],
        ),
        (
            "invisible format characters",
            &[
                "ali\u{200b}ce",  // zero-width space
                "ali\u{200d}ce",  // zero-width joiner
                "ali\u{2060}ce",  // word joiner
                "ali\u{feff}ce",  // zero-width no-break space
                "\u{202e}ecila",  // right-to-left override
                "ali\u{2066}ce",  // left-to-right isolate
                "ali\u{200f}ce",  // right-to-left mark
                "ali\u{ad}ce",    // soft hyphen
                "ali\u{e0041}ce", // tag character
            ],
        ),
        (
            "starts or ends with white space",
            &[" alice", "alice ", "\u{a0}alice", "alice\u{3000}"],
        ),
    ];
    for (class, names) in classes {
        for bad in names {
            let e = AdminName::new(bad).unwrap_err().to_string();
            assert!(e.contains(class), "{bad:?}: {e}");
            assert!(
                AdminInfo::from_der(&admin_info_bytes(bad.as_bytes())).is_err(),
                "{bad:?} decoded"
            );
        }
    }
    // What stays allowed: inner ASCII spaces, accents, other scripts, punctuation.
    for good in ["Bob Smith", "Zoë", "José-María", "李小龍", "o'brien.ops_2"] {
        assert_eq!(AdminName::new(good).unwrap().as_str(), good);
    }
}

/// Names that look the same: case, compatibility forms (full-width, ligatures), combining
/// sequences and confusable letters of other scripts.
#[test]
fn admin_names_that_look_the_same_are_told_apart_from_others() {
    let name = |s: &str| AdminName::new(s).unwrap();
    let alice = name("alice");
    for same in [
        "alice",
        "Alice",
        "ALICE",
        "\u{430}lice",                              // Cyrillic a
        "\u{ff41}\u{ff4c}\u{ff49}\u{ff43}\u{ff45}", // full-width
        "al\u{131}ce",                              // dotless i
        "aIice",                                    // capital I
    ] {
        assert!(alice.looks_like(&name(same)), "{same:?}");
        assert!(name(same).looks_like(&alice), "{same:?}");
    }
    assert!(name("Zo\u{eb}").looks_like(&name("Zoe\u{308}"))); // precomposed vs combining
    assert!(name("office").looks_like(&name("o\u{fb03}ce"))); // the ffi ligature
    assert!(name("a1ice").looks_like(&name("alice"))); // digit one
    assert!(name("B0B").looks_like(&name("BOB"))); // digit zero
    for other in ["alice2", "alicia", "bob", "ali ce", "malice", "a1ic3"] {
        assert!(!alice.looks_like(&name(other)), "{other:?}");
    }
}

#[test]
fn thresholds_are_1_to_8() {
    for n in 1..=8 {
        assert_eq!(u32::from(Threshold::new(n).unwrap().get()), n);
    }
    for n in [0, 9, 255, 256, u32::MAX] {
        match Threshold::new(n) {
            Err(ProtoError::Threshold { value }) => assert_eq!(value, n),
            other => panic!("{n}: {other:?}"),
        }
    }
}

fn good_status() -> UnitStatus {
    UnitStatus {
        unit_id: UnitId::from_hex(UNIT).unwrap(),
        unit_type: UnitType::Recovery,
        counter: 9,
        sig_threshold: 2,
        rev_threshold: 1,
        admins: (0..8u8)
            .map(|i| AdminInfo {
                ski: Ski([i; 32]),
                name: AdminName::new(&format!("admin {i}")).unwrap(),
            })
            .collect(),
        new_register: RegisterStatus {
            state: RegisterState::FullCommitted,
            vp: Some(Vp([1; 32])),
        },
        current_register: RegisterStatus {
            state: RegisterState::Valid,
            vp: Some(Vp([2; 32])),
        },
        importer_pending: false,
        control_points: ControlPoints::DEFAULT,
    }
}

fn checked(s: &UnitStatus) -> Result<UnitStatus, ProtoError> {
    UnitStatus::decode_checked(&s.to_der().unwrap())
}

#[test]
fn unit_status_invariants() {
    assert_eq!(checked(&good_status()).unwrap(), good_status());

    let mut broken: Vec<(&str, UnitStatus)> = Vec::new();
    let mut s = good_status();
    s.sig_threshold = 9;
    broken.push(("threshold above 8", s));
    let mut s = good_status();
    s.rev_threshold = 9;
    broken.push(("threshold above 8", s));
    let mut s = good_status();
    s.sig_threshold = 0;
    broken.push(("only one threshold is 0", s));
    let mut s = good_status();
    s.rev_threshold = 0;
    broken.push(("only one threshold is 0", s));
    let mut s = good_status();
    s.admins.push(AdminInfo {
        ski: Ski([9; 32]),
        name: AdminName::new("ninth").unwrap(),
    });
    broken.push(("more than 8 administrators", s));
    let mut s = good_status();
    s.admins.truncate(1);
    broken.push(("a threshold above the number of administrators", s));
    let mut s = good_status();
    s.admins[1].ski = s.admins[0].ski;
    broken.push(("the same administrator listed twice", s));
    let mut s = good_status();
    s.new_register.state = RegisterState::Valid;
    broken.push(("new register in state Valid", s));
    for state in [RegisterState::FullUncommitted, RegisterState::FullCommitted] {
        let mut s = good_status();
        s.current_register.state = state;
        broken.push(("current register neither Empty nor Valid", s));
    }
    let vp_rule = "verification pattern present on an empty register, or missing";
    let mut s = good_status();
    s.new_register = RegisterStatus {
        state: RegisterState::Empty,
        vp: Some(Vp([1; 32])),
    };
    broken.push((vp_rule, s));
    let mut s = good_status();
    s.new_register.vp = None;
    broken.push((vp_rule, s));
    let mut s = good_status();
    s.current_register.vp = None;
    broken.push((vp_rule, s));
    let mut s = good_status();
    s.current_register = RegisterStatus {
        state: RegisterState::Empty,
        vp: Some(Vp([2; 32])),
    };
    broken.push((vp_rule, s));

    for (expected, s) in broken {
        match checked(&s) {
            Err(ProtoError::InvalidStatus { unit, what }) => {
                assert_eq!(what, expected);
                assert_eq!(unit, s.unit_id);
            }
            other => panic!("{expected}: {other:?}"),
        }
    }

    // Legal corner cases: both thresholds 0 (imprint mode), new register uncommitted
    // over an empty current register, both registers empty.
    let mut s = good_status();
    s.sig_threshold = 0;
    s.rev_threshold = 0;
    s.new_register = RegisterStatus {
        state: RegisterState::FullUncommitted,
        vp: Some(Vp([1; 32])),
    };
    s.current_register = RegisterStatus::EMPTY;
    assert!(checked(&s).unwrap().imprint_mode());
    // Malformed bytes are a DER error, not a status error.
    assert!(matches!(
        UnitStatus::decode_checked(&[0x30, 0x00]),
        Err(ProtoError::Der(_))
    ));
}

// ---- Command::from_wire -----------------------------------------------------------------

#[test]
fn commands_without_input_refuse_input() {
    for (id, cmd) in [
        (CommandId::GenerateImporter, Command::GenerateImporter),
        (CommandId::GenerateRandomMk, Command::GenerateRandomMk),
        (CommandId::Zeroize, Command::Zeroize),
        (CommandId::ClearCurrent, Command::ClearCurrent),
        (CommandId::ClearNew, Command::ClearNew),
    ] {
        assert_eq!(Command::from_wire(id, &[]).unwrap(), cmd);
        assert_eq!(cmd.id(), id);
        assert!(cmd.input_bytes().unwrap().is_empty());
        for input in [&[0x00][..], &[0x04, 0x00], &[0x30, 0x00]] {
            match Command::from_wire(id, input) {
                Err(ProtoError::UnexpectedInput { command }) => assert_eq!(command, id),
                other => panic!("{id:?} with {input:02x?}: {other:?}"),
            }
        }
    }
}

#[test]
fn set_thresholds_input() {
    let ok = ThresholdsInput {
        signature: 3,
        revocation: 8,
    }
    .to_der()
    .unwrap();
    assert_eq!(
        Command::from_wire(CommandId::SetThresholds, &ok).unwrap(),
        Command::SetThresholds {
            signature: Threshold::new(3).unwrap(),
            revocation: Threshold::new(8).unwrap()
        }
    );
    // Trailing bytes.
    let trailing = [ok.clone(), vec![0x00]].concat();
    assert!(matches!(
        Command::from_wire(CommandId::SetThresholds, &trailing),
        Err(ProtoError::Der(_))
    ));
    // Out-of-range thresholds, each side.
    for (s, r) in [(0, 1), (1, 0), (9, 1), (1, 9), (255, 255)] {
        let bytes = ThresholdsInput {
            signature: s,
            revocation: r,
        }
        .to_der()
        .unwrap();
        assert!(
            matches!(
                Command::from_wire(CommandId::SetThresholds, &bytes),
                Err(ProtoError::Threshold { .. })
            ),
            "({s}, {r})"
        );
    }
    // A value that does not fit the u8 field at all.
    assert!(Command::from_wire(CommandId::SetThresholds, &h("300702020100020101")).is_err());
    // Empty input.
    assert!(Command::from_wire(CommandId::SetThresholds, &[]).is_err());
}

#[test]
fn raw_inputs_have_exact_lengths() {
    let ski = [7u8; 32];
    assert_eq!(
        Command::from_wire(CommandId::RemoveAdmin, &ski).unwrap(),
        Command::RemoveAdmin(Ski(ski))
    );
    for id in [
        CommandId::RemoveAdmin,
        CommandId::CommitMk,
        CommandId::SetImmediate,
    ] {
        for len in [0, 31, 33] {
            assert!(
                matches!(
                    Command::from_wire(id, &vec![7; len]),
                    Err(ProtoError::Length { .. })
                ),
                "{id:?} with {len} bytes"
            );
        }
    }
    assert_eq!(
        Command::from_wire(CommandId::CommitMk, &[1; 32]).unwrap(),
        Command::CommitMk(Vp([1; 32]))
    );
    assert_eq!(
        Command::from_wire(CommandId::SetImmediate, &[1; 32]).unwrap(),
        Command::SetImmediate(Vp([1; 32]))
    );
    // Control point masks: exactly 16 bytes, all of them bits (none is refused).
    for (id, make) in [
        (
            CommandId::AddControlPoints,
            Command::AddControlPoints as fn(ControlPoints) -> Command,
        ),
        (CommandId::RemoveControlPoints, Command::RemoveControlPoints),
    ] {
        for len in [0, 15, 17, 32] {
            assert!(
                matches!(
                    Command::from_wire(id, &vec![0xff; len]),
                    Err(ProtoError::Length { expected: 16, .. })
                ),
                "{id:?} with {len} bytes"
            );
        }
        for mask in [[0; 16], [0xff; 16], *ControlPoints::DEFAULT.as_bytes()] {
            let cmd = make(ControlPoints::from_bytes(mask));
            assert_eq!(cmd.input_bytes().unwrap(), mask);
            assert_eq!(Command::from_wire(id, &mask).unwrap(), cmd);
            assert_eq!(cmd.id(), id);
        }
    }
}

#[test]
fn der_inputs_refuse_trailing_bytes() {
    let fleet = common::fleet();
    let (_, admin) = common::admin_cert("alice", 0x21);

    // AddAdmin: the certificate DER.
    let cmd = Command::AddAdmin(admin.clone());
    let input = cmd.input_bytes().unwrap();
    assert_eq!(input, admin.der());
    assert_eq!(
        Command::from_wire(CommandId::AddAdmin, &input).unwrap(),
        cmd
    );
    let trailing = [input, vec![0]].concat();
    assert!(Command::from_wire(CommandId::AddAdmin, &trailing).is_err());

    // ExportMk: an ExportRequest.
    let importer_secret = common::secret_key(0x1f);
    let importer = ImporterKey::new(fleet.b.id, &importer_secret.public_key()).unwrap();
    let certified =
        CertifiedImporter::sign(&importer, common::device_signer(&fleet.b.key)).unwrap();
    let req = ExportRequest {
        register: Register::Current,
        target_certificate: OctetString::new(fleet.b.cert.der().to_vec()).unwrap(),
        importer: certified,
        target_instance: None,
    };
    // ExportMkBatch: a SEQUENCE OF ExportRequest, 1 to 16 of them.
    let batch = Command::ExportMkBatch(vec![req.clone(), req.clone()]);
    assert_eq!(batch.register(), Some(Register::Current));
    let input = batch.input_bytes().unwrap();
    assert_eq!(input[0], 0x30, "a SEQUENCE OF");
    assert_eq!(
        Command::from_wire(CommandId::ExportMkBatch, &input).unwrap(),
        batch
    );
    let trailing = [input, vec![0]].concat();
    assert!(matches!(
        Command::from_wire(CommandId::ExportMkBatch, &trailing),
        Err(ProtoError::Der(_))
    ));
    for count in [0, 17] {
        let input = Command::ExportMkBatch(vec![req.clone(); count])
            .input_bytes()
            .unwrap();
        assert!(matches!(
            Command::from_wire(CommandId::ExportMkBatch, &input),
            Err(ProtoError::ExportTargets { count: c }) if c == count
        ));
    }
    let sixteen = Command::ExportMkBatch(vec![req.clone(); 16]);
    let input = sixteen.input_bytes().unwrap();
    assert_eq!(
        Command::from_wire(CommandId::ExportMkBatch, &input).unwrap(),
        sixteen
    );
    // Requests for different registers: the batch names no single register.
    let mixed = Command::ExportMkBatch(vec![
        req.clone(),
        ExportRequest {
            register: Register::New,
            ..req.clone()
        },
    ]);
    assert_eq!(mixed.register(), None);
    // A single request in a batch is the ExportRequest inside a SEQUENCE.
    let one = Command::ExportMkBatch(vec![req.clone()])
        .input_bytes()
        .unwrap();
    let single = req.to_der().unwrap();
    assert_eq!(&one[one.len() - single.len()..], &single[..]);

    let cmd = Command::ExportMk(Box::new(req));
    assert_eq!(cmd.register(), Some(Register::Current));
    let input = cmd.input_bytes().unwrap();
    assert_eq!(
        Command::from_wire(CommandId::ExportMk, &input).unwrap(),
        cmd
    );
    let trailing = [input, vec![0]].concat();
    assert!(matches!(
        Command::from_wire(CommandId::ExportMk, &trailing),
        Err(ProtoError::Der(_))
    ));

    // ImportMk: a SignedEnvelope.
    let mk = tke_proto::MasterKey::from_slice(&[0x42; 32]).unwrap();
    let env = tke_proto::transport::soft_seal(&mk, fleet.a.id, &importer).unwrap();
    let signed =
        SignedEnvelope::sign(&env, &fleet.a.cert, common::device_signer(&fleet.a.key)).unwrap();
    let cmd = Command::ImportMk(Box::new(signed));
    assert_eq!(cmd.register(), Some(Register::New));
    let input = cmd.input_bytes().unwrap();
    assert_eq!(
        Command::from_wire(CommandId::ImportMk, &input).unwrap(),
        cmd
    );
    let trailing = [input, vec![0]].concat();
    assert!(matches!(
        Command::from_wire(CommandId::ImportMk, &trailing),
        Err(ProtoError::Der(_))
    ));

    // ImportMkParts: an MkPartsRequest with 2 or 3 parts.
    let certified =
        CertifiedImporter::sign(&importer, common::device_signer(&fleet.b.key)).unwrap();
    let parts = [MasterKeyPart::random(), MasterKeyPart::random()];
    let req = parts::seal_parts(&parts, &certified, &fleet.b.cert).unwrap();
    let cmd = Command::ImportMkParts(Box::new(req.clone()));
    assert_eq!(cmd.register(), Some(Register::New));
    let input = cmd.input_bytes().unwrap();
    assert_eq!(
        Command::from_wire(CommandId::ImportMkParts, &input).unwrap(),
        cmd
    );
    let trailing = [input, vec![0]].concat();
    assert!(matches!(
        Command::from_wire(CommandId::ImportMkParts, &trailing),
        Err(ProtoError::Der(_))
    ));
    let mut three = req.clone();
    three.parts.push(req.parts[0].clone());
    let input = Command::ImportMkParts(Box::new(three.clone()))
        .input_bytes()
        .unwrap();
    assert_eq!(
        Command::from_wire(CommandId::ImportMkParts, &input).unwrap(),
        Command::ImportMkParts(Box::new(three))
    );
    for count in [0, 1, 4] {
        let mut other = req.clone();
        other.parts = vec![req.parts[0].clone(); count];
        let input = Command::ImportMkParts(Box::new(other))
            .input_bytes()
            .unwrap();
        assert!(matches!(
            Command::from_wire(CommandId::ImportMkParts, &input),
            Err(ProtoError::PartCount { count: c }) if c == count
        ));
    }
}

/// Every command survives `to_wire` → DER → `admin_command` → `from_wire`.
#[test]
fn every_command_round_trips() {
    let (_, admin) = common::admin_cert("bob", 0x22);
    let unit = UnitId::from_hex(UNIT).unwrap();
    let commands = vec![
        Command::AddAdmin(admin),
        Command::RemoveAdmin(Ski([3; 32])),
        Command::SetThresholds {
            signature: Threshold::new(1).unwrap(),
            revocation: Threshold::new(8).unwrap(),
        },
        Command::GenerateImporter,
        Command::GenerateRandomMk,
        Command::CommitMk(Vp([4; 32])),
        Command::SetImmediate(Vp([5; 32])),
        Command::Zeroize,
        Command::ClearCurrent,
        Command::ClearNew,
        Command::AddControlPoints(ControlPoints::DEFAULT),
        Command::RemoveControlPoints(ControlPoints::from_bytes([0xa5; 16])),
    ];
    for (i, cmd) in commands.into_iter().enumerate() {
        let counter = u64::MAX - i as u64;
        let wire = cmd.to_wire(unit, counter).unwrap();
        let signed = tke_proto::SignedCommand::unsigned(&wire).unwrap();
        let req = tke_proto::Request::Command(signed);
        let back = match tke_proto::Request::from_der(&req.to_der().unwrap()).unwrap() {
            tke_proto::Request::Command(c) => c.admin_command().unwrap(),
            tke_proto::Request::Query(_)
            | tke_proto::Request::Service(_)
            | tke_proto::Request::Audit(_) => panic!("not a command"),
        };
        assert_eq!(back, wire);
        assert_eq!(back.counter, counter);
        assert_eq!(
            Command::from_wire(back.command, back.input.as_bytes()).unwrap(),
            cmd
        );
    }
}

#[test]
fn query_round_trip() {
    let q = Query {
        unit_id: UnitId::random(),
        nonce: Nonce::random(),
    };
    assert_eq!(Query::from_der(&q.to_der().unwrap()).unwrap(), q);
    // Random unit ids read like version-4 UUIDs.
    let u = UnitId::random().uuid();
    assert_eq!(&u[14..15], "4", "{u}");
}

/// `targetInstance` and `sourceInstance` (§11.3): exactly `[0] IMPLICIT` 16 bytes, last;
/// any other form is refused rather than read as "same instance".
#[test]
fn instance_fields_are_strict() {
    let instance = "0b6f0c8e5d6a4b8e9a510c2f8e7d6b1a";
    // Each message's content up to the optional field, and how to wrap it again.
    let export = "0a01000404deadbeef3006040130040130";
    let envelope = "040130040130040130";
    let wrap = |content: &str| {
        let content = h(content);
        let mut out = vec![0x30, u8::try_from(content.len()).unwrap()];
        out.extend(content);
        out
    };
    let export_ok = ExportRequest::from_der(&wrap(&format!("{export}8010{instance}"))).unwrap();
    assert_eq!(export_ok.target_instance.unwrap().to_hex(), instance);
    let env_ok = SignedEnvelope::from_der(&wrap(&format!("{envelope}8010{instance}"))).unwrap();
    assert_eq!(env_ok.source_instance.unwrap().to_hex(), instance);
    // Without it: the old encoding, same instance only.
    assert_eq!(
        ExportRequest::from_der(&wrap(export))
            .unwrap()
            .target_instance,
        None
    );
    assert_eq!(
        SignedEnvelope::from_der(&wrap(envelope))
            .unwrap()
            .source_instance,
        None
    );
    for bad in [
        format!("800f{}", &instance[..30]),      // 15 bytes
        format!("8011{instance}00"),             // 17 bytes
        format!("0410{instance}"),               // untagged OCTET STRING
        format!("8110{instance}"),               // [1]
        format!("a0120410{instance}"),           // EXPLICIT [0]
        format!("8010{instance}8010{instance}"), // twice
    ] {
        assert!(
            ExportRequest::from_der(&wrap(&format!("{export}{bad}"))).is_err(),
            "ExportRequest accepted {bad}"
        );
        assert!(
            SignedEnvelope::from_der(&wrap(&format!("{envelope}{bad}"))).is_err(),
            "SignedEnvelope accepted {bad}"
        );
    }
}
