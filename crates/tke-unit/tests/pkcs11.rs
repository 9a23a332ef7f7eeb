//! The behaviour suite on the PKCS#11 backend (SoftHSM2), plus what is specific to tokens.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;
mod support;

use suite::backend_suite;
use support::Pkcs11Factory;

backend_suite!(Pkcs11Factory);

/// The same suite with the state in a memory store and the secrets on a token.
mod memory_store {
    use crate::{
        suite::{self, backend_suite},
        support::MemoryFactory,
    };

    backend_suite!(MemoryFactory::token());

    #[test]
    fn save_failure_is_reported() {
        suite::save_failure_is_reported(&MemoryFactory::token());
    }

    #[test]
    fn a_failed_save_leaves_no_new_master_key_on_the_token() {
        use crate::{objects, session, support::*, World};
        use tke_proto::{Command, ModuleError, UnitType};

        let f = MemoryFactory::token();
        let w = World::new(3);
        let ca = &w.fleet.ca;
        let mut rec = w.ready(&f, "rec", UnitType::Recovery);
        ok(run(&mut rec, ca, &Command::GenerateRandomMk, &[w.a(0)]));
        let s = session(&f.token_config(&w.path("rec")));
        let before = objects(&s, "tke-master-key");
        assert_eq!(before.len(), 1);
        f.fail_saves(&w.path("rec"), true);
        // The command makes its master key object before it saves the state: that object
        // goes when the save fails, as the state never referred to it.
        fails(
            &run(&mut rec, ca, &Command::GenerateRandomMk, &[w.a(0)]),
            ModuleError::INTERNAL,
        );
        assert_eq!(objects(&s, "tke-master-key"), before);
    }
}

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command as Process,
};

use suite::World;
use support::{
    ok, run,
    softhsm::{self, module},
    Fleet, SoftFactory, UnitFactory,
};
use tke_pkcs11::cryptoki::{
    context::{CInitializeArgs, CInitializeFlags, Pkcs11},
    mechanism::Mechanism,
    object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle},
    session::{Session, UserType},
    types::AuthPin,
};
use tke_proto::{
    der::{asn1::OctetString, Decode},
    transport::{CertifiedImporter, ExportRequest, SignedEnvelope},
    Command, ProtoError, Register, RegisterState, UnitId, UnitType, Vp,
};
use tke_unit::{
    Backend, BackendError, Pkcs11Backend, Pkcs11Config, Unit, UnitError, WrapMechanism, AUDIT_FILE,
    CA_FILE, DEVICE_FILE, PKCS11_FILE, SECRETS_FILE, STATE_FILE,
};

/// The error and every cause below it, as a printer walking `source()` shows them.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    tke_proto::ErrorChain(e).to_string()
}

/// A logged-in session on a unit's token, from outside the backend (as an auditor).
fn session(config: &Pkcs11Config) -> Session {
    softhsm::pool();
    let ctx = Pkcs11::new(module()).unwrap();
    let _ = ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label().trim_end() == config.token_label)
        .unwrap();
    let s = ctx.open_rw_session(slot).unwrap();
    let pin = fs::read_to_string(&config.pin_file).unwrap();
    let _ = s.login(UserType::User, Some(&AuthPin::from(pin)));
    s
}

fn objects(s: &Session, label: &str) -> Vec<ObjectHandle> {
    s.find_objects(&[
        Attribute::Token(true),
        Attribute::Label(label.as_bytes().to_vec()),
    ])
    .unwrap()
}

fn flag(s: &Session, o: ObjectHandle, which: AttributeType) -> bool {
    let attrs = s.get_attributes(o, &[which]).unwrap();
    attrs.iter().any(|a| {
        matches!(
            a,
            Attribute::Sensitive(true)
                | Attribute::Extractable(true)
                | Attribute::NeverExtractable(true)
                | Attribute::WrapWithTrusted(true)
                | Attribute::Copyable(true)
                | Attribute::Sign(true)
                | Attribute::Encrypt(true)
                | Attribute::Decrypt(true)
                | Attribute::Wrap(true)
                | Attribute::Unwrap(true)
                | Attribute::Derive(true)
                | Attribute::Private(true)
        )
    })
}

/// The one master key object on the token of `s`, checked: sensitive, private, usable
/// only to sign (the CMAC of the VP) and to wrap and unwrap root keys, not copyable, extractable exactly when `exportable`,
/// and (SoftHSM2 refuses `CKA_TRUSTED` to the user) not `CKA_WRAP_WITH_TRUSTED`.
fn the_master_key_object(s: &Session, exportable: bool) -> ObjectHandle {
    let mks = objects(s, "tke-master-key");
    assert_eq!(mks.len(), 1, "one master key object, no orphan");
    let mk = mks[0];
    assert!(flag(s, mk, AttributeType::Sensitive));
    assert!(flag(s, mk, AttributeType::Private));
    assert!(flag(s, mk, AttributeType::Sign), "CMAC for the VP");
    assert_eq!(flag(s, mk, AttributeType::Extractable), exportable);
    assert!(!flag(s, mk, AttributeType::Copyable));
    assert!(flag(s, mk, AttributeType::Wrap), "wraps root keys");
    assert!(flag(s, mk, AttributeType::Unwrap), "unwraps root keys");
    for usage in [
        AttributeType::Encrypt,
        AttributeType::Decrypt,
        AttributeType::Derive,
    ] {
        assert!(!flag(s, mk, usage), "{usage:?}");
    }
    assert!(!flag(s, mk, AttributeType::WrapWithTrusted));
    mk
}

/// The auto-init command sequence on one recovery unit and its targets: random
/// generation on the recovery unit, then for each target an importer, the export, the
/// import, commit and set-immediate. Returns the VP.
fn auto_init(w: &World, rec: &mut Unit, targets: &mut [&mut Unit]) -> Vp {
    let ca = &w.fleet.ca;
    let vp = Vp::from_slice(&ok(run(rec, ca, &Command::GenerateRandomMk, &[w.a(0)]))).unwrap();
    for t in targets.iter_mut() {
        let out = ok(run(t, ca, &Command::GenerateImporter, &[w.a(0)]));
        let req = ExportRequest {
            register: Register::Current,
            target_certificate: OctetString::new(t.device_certificate().der().to_vec()).unwrap(),
            importer: CertifiedImporter::from_der(&out).unwrap(),
            target_instance: None,
        };
        let env = ok(run(
            rec,
            ca,
            &Command::ExportMk(Box::new(req)),
            &[w.a(0), w.a(1)],
        ));
        let env = SignedEnvelope::from_der(&env).unwrap();
        let got = ok(run(t, ca, &Command::ImportMk(Box::new(env)), &[w.a(0)]));
        assert_eq!(Vp::from_slice(&got).unwrap(), vp);
        ok(run(t, ca, &Command::CommitMk(vp), &[w.a(0), w.a(1)]));
        ok(run(t, ca, &Command::SetImmediate(vp), &[w.a(0)]));
    }
    vp
}

fn mixed_fleet(recovery: &dyn UnitFactory, targets: &dyn UnitFactory) {
    let w = World::new(3);
    let mut rec = w.ready(recovery, "rec", UnitType::Recovery);
    let mut rec2 = w.ready(targets, "rec2", UnitType::Recovery);
    let mut op1 = w.ready(targets, "op1", UnitType::Operational);
    let mut op2 = w.ready(targets, "op2", UnitType::Operational);
    let mut fo = w.ready(targets, "fo", UnitType::Failover);
    let vp = auto_init(&w, &mut rec, &mut [&mut op1, &mut op2, &mut fo, &mut rec2]);
    for u in [&rec, &rec2, &op1, &op2, &fo] {
        let s = u.status();
        assert_eq!(s.current_register.state, RegisterState::Valid);
        assert_eq!(
            s.current_register.vp,
            Some(vp),
            "{}",
            u.dir().unwrap().display()
        );
        assert_eq!(s.new_register.state, RegisterState::Empty);
    }
    // And it survives a reopen of every unit, with the backend recorded in it.
    for u in [rec, rec2, op1, op2, fo] {
        let dir = u.dir().unwrap().to_owned();
        drop(u);
        assert_eq!(
            Unit::open(&dir).unwrap().status().current_register.vp,
            Some(vp)
        );
    }
}

#[test]
fn mixed_fleet_soft_recovery_pkcs11_targets() {
    mixed_fleet(&SoftFactory, &Pkcs11Factory);
}

#[test]
fn mixed_fleet_pkcs11_recovery_soft_targets() {
    mixed_fleet(&Pkcs11Factory, &SoftFactory);
}

#[test]
fn objects_on_the_token_carry_the_policy_of_the_unit_type() {
    let w = World::new(3);
    let mut rec = w.ready(&Pkcs11Factory, "rec", UnitType::Recovery);
    let mut op = w.ready(&Pkcs11Factory, "op", UnitType::Operational);
    auto_init(&w, &mut rec, &mut [&mut op]);
    for (u, exportable) in [(&rec, true), (&op, false)] {
        let config = Pkcs11Config::read(u.dir().unwrap()).unwrap();
        let s = session(&config);
        the_master_key_object(&s, exportable);
        assert!(
            objects(&s, "tke-importer").is_empty(),
            "the importer is used up"
        );
        let device = s
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(b"tke-device".to_vec()),
            ])
            .unwrap();
        assert_eq!(device.len(), 1);
        assert!(flag(&s, device[0], AttributeType::Sensitive));
        assert!(!flag(&s, device[0], AttributeType::Extractable));
        assert!(flag(&s, device[0], AttributeType::NeverExtractable));
        let id = s.get_attributes(device[0], &[AttributeType::Id]).unwrap();
        assert_eq!(id, vec![Attribute::Id(u.id().0.to_vec())]);
    }
    // A pending importer key is a token key pair named by its key id.
    let out = ok(run(
        &mut op,
        &w.fleet.ca,
        &Command::GenerateImporter,
        &[w.a(0)],
    ));
    let importer = CertifiedImporter::from_der(&out)
        .unwrap()
        .verify(op.device_certificate())
        .unwrap();
    let s = session(&Pkcs11Config::read(op.dir().unwrap()).unwrap());
    let imps = objects(&s, "tke-importer");
    assert_eq!(imps.len(), 2);
    for o in imps {
        let id = s.get_attributes(o, &[AttributeType::Id]).unwrap();
        assert_eq!(id, vec![Attribute::Id(importer.key_id.0.to_vec())]);
    }
    // Zeroize destroys master keys and importers, not the device key.
    ok(run(&mut op, &w.fleet.ca, &Command::Zeroize, &[w.a(0)]));
    assert!(objects(&s, "tke-master-key").is_empty());
    assert!(objects(&s, "tke-importer").is_empty());
    assert_eq!(objects(&s, "tke-device").len(), 2);
}

/// `pkcs11-tool --list-objects`, as an operator would look: the operational unit's master
/// key is sensitive and not extractable. (An imported key is never `CKA_NEVER_EXTRACTABLE`:
/// PKCS#11 sets it false on unwrapped keys, whose value existed outside the token, wrapped.)
#[test]
fn opensc_sees_a_sensitive_unextractable_master_key() {
    let w = World::new(3);
    let mut rec = w.ready(&Pkcs11Factory, "rec", UnitType::Recovery);
    let mut op = w.ready(&Pkcs11Factory, "op", UnitType::Operational);
    auto_init(&w, &mut rec, &mut [&mut op]);
    let listing = |u: &Unit| -> String {
        let config = Pkcs11Config::read(u.dir().unwrap()).unwrap();
        let pin = fs::read_to_string(&config.pin_file).unwrap();
        let out = Process::new("pkcs11-tool")
            .args(["--module", module(), "--token-label", &config.token_label])
            .args(["--login", "--pin", &pin, "--list-objects"])
            .output()
            .expect("pkcs11-tool (OpenSC) is missing: run ci/setup.sh");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // The `Access:` flags of the object labelled tke-master-key.
    let access = |text: &str| -> Vec<String> {
        let blocks: Vec<&str> = text.split("Secret Key Object").skip(1).collect();
        let mk: Vec<&&str> = blocks
            .iter()
            .filter(|b| b.contains("label:      tke-master-key"))
            .collect();
        assert_eq!(mk.len(), 1, "{text}");
        let line = mk[0]
            .lines()
            .find_map(|l| l.trim().strip_prefix("Access:"))
            .unwrap_or_else(|| panic!("no Access line in {}", mk[0]));
        line.split(',').map(|f| f.trim().to_owned()).collect()
    };
    let op_text = listing(&op);
    // (No "AES length 32": SoftHSM2 records no CKA_VALUE_LEN for an unwrapped key.)
    assert!(op_text.contains("Secret Key Object; AES"), "{op_text}");
    let flags = access(&op_text);
    assert!(flags.contains(&"sensitive".to_owned()), "{flags:?}");
    assert!(!flags.contains(&"extractable".to_owned()), "{flags:?}");
    assert_eq!(flags, ["sensitive"], "{op_text}");
    // Wrap and unwrap: the root keys of key storage (its CMAC signing is not listed).
    assert!(op_text.contains("Usage:      wrap, unwrap\n"), "{op_text}");
    // The recovery unit's key may leave, wrapped: OpenSC shows it extractable.
    let rec_text = listing(&rec);
    assert!(
        rec_text.contains("Secret Key Object; AES length 32"),
        "{rec_text}"
    );
    let flags = access(&rec_text);
    assert_eq!(
        flags,
        ["sensitive", "always sensitive", "extractable", "local"],
        "{rec_text}"
    );
    // The device key signs, and does nothing else.
    let device = op_text
        .split("Private Key Object")
        .skip(1)
        .find(|b| b.contains("tke-device"))
        .unwrap();
    assert!(device.contains("Usage:      sign\n"), "{device}");
    assert!(
        device.contains("Access:     sensitive, always sensitive, never extractable, local"),
        "{device}"
    );
}

/// A key loaded from parts enters the token as an imported one does: one sensitive,
/// unextractable master key object that only signs (the CMAC of the VP), the importer key
/// gone, no part left behind as a token object; and the key in the token is the XOR of
/// the parts: an auditor's CMAC with it matches the software VP of the XOR.
#[test]
fn a_key_loaded_from_parts_is_an_ordinary_master_key_on_the_token() {
    use tke_proto::parts::{self, MasterKeyPart};
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let mut op = w.ready(&Pkcs11Factory, "op", UnitType::Operational);
    let parts_of_key = [
        MasterKeyPart::random(),
        MasterKeyPart::random(),
        MasterKeyPart::random(),
    ];
    let out = ok(run(&mut op, ca, &Command::GenerateImporter, &[w.a(0)]));
    let req = parts::seal_parts(
        &parts_of_key,
        &CertifiedImporter::from_der(&out).unwrap(),
        op.device_certificate(),
    )
    .unwrap();
    let vp = Vp::from_slice(&ok(run(
        &mut op,
        ca,
        &Command::ImportMkParts(Box::new(req)),
        &[w.a(1)],
    )))
    .unwrap();
    let key = parts::combine(&parts_of_key).unwrap();
    assert_eq!(vp, key.vp());

    let s = session(&Pkcs11Config::read(op.dir().unwrap()).unwrap());
    let mk = the_master_key_object(&s, false);
    assert!(
        objects(&s, "tke-importer").is_empty(),
        "the importer is used up"
    );
    let all = s.find_objects(&[Attribute::Token(true)]).unwrap();
    assert_eq!(
        all.len(),
        3,
        "the device key pair and the master key, nothing else"
    );
    // The auditor's CMAC of the first VP block under the token's key.
    let tag = s
        .sign(&Mechanism::AesCMac, mk, &tke_proto::vp::BLOCKS[0])
        .unwrap();
    assert_eq!(tag, key.vp().0[..16]);
    // It is the new register's key: commit, activate, reopen.
    ok(run(&mut op, ca, &Command::CommitMk(vp), &[w.a(0), w.a(1)]));
    ok(run(&mut op, ca, &Command::SetImmediate(vp), &[w.a(0)]));
    let dir = op.dir().unwrap().to_owned();
    drop(op);
    assert_eq!(
        Unit::open(&dir).unwrap().status().current_register.vp,
        Some(vp)
    );
}

/// RFC 5649 known answer (docs/protocol.md §14.4): 32 zero bytes under the KEK 00..1f, on
/// the mechanism the backend chose, equal to the software reference.
#[test]
fn the_chosen_wrap_mechanism_computes_rfc5649() {
    let d = tempfile::tempdir().unwrap();
    let config = softhsm::pool().config();
    let backend =
        Pkcs11Backend::create(d.path(), UnitId::random(), UnitType::Recovery, &config).unwrap();
    // SoftHSM2 2.6 offers RFC 5649 as CKM_AES_KEY_WRAP_PAD, and no CKM_AES_KEY_WRAP_KWP.
    assert_eq!(backend.wrap_mechanism(), WrapMechanism::Pad);
    assert!(!backend.trusted_wrap());
    let s = session(&config);
    // Why: SoftHSM2 lets only the security officer make CKA_TRUSTED keys.
    let trusted = s.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Token(false),
            Attribute::Wrap(true),
            Attribute::Trusted(true),
        ],
    );
    assert!(
        matches!(
            trusted,
            Err(tke_pkcs11::cryptoki::error::Error::Pkcs11(
                tke_pkcs11::cryptoki::error::RvError::AttributeReadOnly,
                _
            ))
        ),
        "{trusted:?}"
    );
    let kek: Vec<u8> = (0u8..32).collect();
    let secret = |value: &[u8], usage: Attribute| {
        s.create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Extractable(true),
            Attribute::Value(value.to_vec()),
            usage,
        ])
        .unwrap()
    };
    let k = secret(&kek, Attribute::Wrap(true));
    let mk = secret(&[0; 32], Attribute::Sign(true));
    let wrapped = s.wrap_key(&Mechanism::AesKeyWrapPad, k, mk).unwrap();
    assert_eq!(
        hex::encode(&wrapped),
        "8b940aebb30e4357d9a42c0e504fe502e81e6a6881f4496ae319064912877bbdeb95445235be11a9"
    );
    let kek: [u8; 32] = kek.try_into().unwrap();
    let soft =
        tke_proto::transport::wrap(&kek, &tke_proto::MasterKey::from_slice(&[0; 32]).unwrap())
            .unwrap();
    assert_eq!(wrapped, soft);
    // And the VP of that key, by CKM_AES_CMAC in the token, is the reference's.
    let mut vp = Vec::new();
    for block in tke_proto::vp::BLOCKS {
        vp.extend(s.sign(&Mechanism::AesCMac, mk, &block).unwrap());
    }
    assert_eq!(
        vp,
        tke_proto::MasterKey::from_slice(&[0; 32])
            .unwrap()
            .vp()
            .0
            .to_vec()
    );
}

#[test]
fn unit_directory_records_the_token_not_the_pin() {
    let w = World::new(3);
    let mut rec = w.ready(&Pkcs11Factory, "rec", UnitType::Recovery);
    ok(run(
        &mut rec,
        &w.fleet.ca,
        &Command::GenerateRandomMk,
        &[w.a(0)],
    ));
    let dir = rec.dir().unwrap().to_owned();
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut expected = vec![AUDIT_FILE, CA_FILE, DEVICE_FILE, PKCS11_FILE, STATE_FILE];
    expected.sort();
    assert_eq!(
        names, expected,
        "no {SECRETS_FILE}: the secrets are in the token"
    );
    let config = Pkcs11Config::read(&dir).unwrap();
    assert!(config.module.is_absolute() && config.pin_file.is_absolute());
    let pin = fs::read_to_string(&config.pin_file).unwrap();
    for name in &expected {
        let path = dir.join(name);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!fs::read_to_string(&path).unwrap().contains(&pin), "{name}");
    }
    let json: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join(PKCS11_FILE)).unwrap()).unwrap();
    assert_eq!(json["format"], "tke-unit-pkcs11/1");
    assert_eq!(json["token_label"], config.token_label.as_str());
    let state: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join(STATE_FILE)).unwrap()).unwrap();
    assert_eq!(state["backend"], "pkcs11");
    // Debug output names the token and the PIN file, never the PIN.
    let text = format!("{rec:?} {rec:#?}");
    assert!(
        text.contains(&config.token_label) && !text.contains(&pin),
        "{text}"
    );
}

fn write_pin(path: &Path, pin: &str) {
    fs::write(path, pin).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

fn create_err(config: &Pkcs11Config) -> (UnitError, PathBuf, tempfile::TempDir) {
    let fleet = Fleet::new("fleet");
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("unit");
    let id = UnitId::random();
    let e = Unit::create_pkcs11(
        &dir,
        id,
        UnitType::Operational,
        &fleet.ca,
        config,
        &mut |pk| fleet.issue(id, UnitType::Operational, pk),
    )
    .unwrap_err();
    assert!(
        !dir.exists(),
        "nothing is left of a unit that was not created"
    );
    (e, dir, d)
}

/// Each token error names the token label and the module path.
#[test]
fn token_errors_name_the_token_and_the_module() {
    let pool = softhsm::pool();
    let d = tempfile::tempdir().unwrap();
    let names = |e: &UnitError, config: &Pkcs11Config| {
        let msg = chain(e);
        assert!(
            msg.contains(&format!("{:?}", config.token_label)) && msg.contains(module()),
            "{msg}"
        );
        msg
    };

    // A wrong PIN (on a token nobody in this process is logged in to).
    let (label, right_pin) = pool.take();
    let wrong = d.path().join("wrong.pin");
    write_pin(&wrong, "not-the-pin");
    let config = Pkcs11Config::new(module(), &label, &wrong);
    let (e, _, _) = create_err(&config);
    let msg = names(&e, &config);
    assert!(
        msg.contains("PIN is incorrect") && msg.contains("wrong.pin"),
        "{msg}"
    );
    assert!(!msg.contains("not-the-pin"), "{msg}");
    let UnitError::Backend {
        source: BackendError::Pkcs11 { source, .. },
        ..
    } = &e
    else {
        panic!("{e:?}")
    };
    assert!(
        matches!(**source, tke_pkcs11::Error::WrongPin { .. }),
        "{e:?}"
    );

    // The PIN file is world-readable, empty, or missing.
    let loose = d.path().join("loose.pin");
    fs::copy(&right_pin, &loose).unwrap();
    fs::set_permissions(&loose, fs::Permissions::from_mode(0o644)).unwrap();
    let config = Pkcs11Config::new(module(), &label, &loose);
    let msg = names(&create_err(&config).0, &config);
    assert!(msg.contains("mode 0600"), "{msg}");
    let empty = d.path().join("empty.pin");
    write_pin(&empty, "");
    let config = Pkcs11Config::new(module(), &label, &empty);
    assert!(names(&create_err(&config).0, &config).contains("is empty"));
    let config = Pkcs11Config::new(module(), &label, d.path().join("missing.pin"));
    assert!(names(&create_err(&config).0, &config).contains("missing.pin"));

    // No token with this label.
    let config = Pkcs11Config::new(module(), "no-such-token", &right_pin);
    let (e, _, _) = create_err(&config);
    let msg = names(&e, &config);
    assert!(
        msg.contains("not found") && msg.contains("tke-test-"),
        "{msg}"
    );

    // A module path that does not exist, or a file that is not a PKCS#11 module.
    let config = Pkcs11Config::new("/nonexistent/libpkcs11.so", &label, &right_pin);
    let msg = chain(&create_err(&config).0);
    assert!(
        msg.contains("cannot load the PKCS#11 module /nonexistent/libpkcs11.so")
            && msg.contains(&format!("{label:?}")),
        "{msg}"
    );
    let not_a_module = d.path().join("not-a-module.so");
    fs::write(&not_a_module, b"not a shared library").unwrap();
    let config = Pkcs11Config::new(&not_a_module, &label, &right_pin);
    let msg = chain(&create_err(&config).0);
    assert!(
        msg.contains("cannot load the PKCS#11 module")
            && msg.contains("not-a-module.so")
            && msg.contains(&format!("{label:?}")),
        "{msg}"
    );

    // After all that, the token is untouched and usable.
    let fleet = Fleet::new("fleet");
    let id = UnitId::random();
    let config = Pkcs11Config::new(module(), &label, &right_pin);
    let dir = d.path().join("good");
    let u = Unit::create_pkcs11(
        &dir,
        id,
        UnitType::Operational,
        &fleet.ca,
        &config,
        &mut |pk| fleet.issue(id, UnitType::Operational, pk),
    )
    .unwrap();
    drop(u);

    // A token already holding a unit is refused, and the unit on it is left alone.
    let (e, _, _) = create_err(&config);
    let msg = names(&e, &config);
    assert!(msg.contains("each unit needs a token of its own"), "{msg}");
    assert!(Unit::open(&dir).is_ok());
}

#[test]
fn open_names_what_is_wrong_with_the_token() {
    let w = World::new(3);
    let a = w.ready(&Pkcs11Factory, "a", UnitType::Recovery);
    let b = w.ready(&Pkcs11Factory, "b", UnitType::Operational);
    let (a_dir, b_dir) = (a.dir().unwrap().to_owned(), b.dir().unwrap().to_owned());
    drop((a, b));
    // Another unit's token.
    let d = w.dir.path().join("foreign");
    fs::create_dir(&d).unwrap();
    for f in [STATE_FILE, CA_FILE, DEVICE_FILE] {
        fs::copy(a_dir.join(f), d.join(f)).unwrap();
    }
    fs::copy(b_dir.join(PKCS11_FILE), d.join(PKCS11_FILE)).unwrap();
    let e = Unit::open(&d).unwrap_err();
    assert!(
        tke_proto::ErrorChain(&e)
            .to_string()
            .contains("holds the device key of crypto unit"),
        "{e:?}"
    );
    // A wrong PIN recorded for a token nobody is logged in to now.
    let config = Pkcs11Config::read(&a_dir).unwrap();
    let wrong = w.dir.path().join("wrong.pin");
    write_pin(&wrong, "0000");
    let text = fs::read_to_string(a_dir.join(PKCS11_FILE)).unwrap();
    let pin_json = serde_json::to_string(&config.pin_file).unwrap();
    let wrong_json = serde_json::to_string(&wrong).unwrap();
    fs::write(
        a_dir.join(PKCS11_FILE),
        text.replace(&pin_json, &wrong_json),
    )
    .unwrap();
    let e = Unit::open(&a_dir).unwrap_err();
    let msg = chain(&e);
    assert!(
        msg.contains("PIN is incorrect")
            && msg.contains(&config.token_label)
            && msg.contains(module()),
        "{msg}"
    );
    fs::write(a_dir.join(PKCS11_FILE), &text).unwrap();
    // A corrupt configuration file is named.
    fs::write(b_dir.join(PKCS11_FILE), b"{\"format\": 1").unwrap();
    let e = Unit::open(&b_dir).unwrap_err();
    assert!(
        tke_proto::ErrorChain(&e).to_string().contains(PKCS11_FILE),
        "{e:?}"
    );
    assert!(Unit::open(&a_dir).is_ok());
}

#[test]
fn orphans_on_the_token_are_destroyed_on_open() {
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let mut rec = w.ready(&Pkcs11Factory, "rec", UnitType::Recovery);
    let dir = rec.dir().unwrap().to_owned();
    let s = session(&Pkcs11Config::read(&dir).unwrap());
    let old_state = fs::read(dir.join(STATE_FILE)).unwrap();
    let before = rec.status();
    ok(run(&mut rec, ca, &Command::GenerateRandomMk, &[w.a(0)]));
    ok(run(&mut rec, ca, &Command::GenerateImporter, &[w.a(0)]));
    drop(rec);
    assert_eq!(objects(&s, "tke-master-key").len(), 1);
    assert_eq!(objects(&s, "tke-importer").len(), 2);
    // The state writes "did not happen".
    fs::write(dir.join(STATE_FILE), &old_state).unwrap();
    let mut rec = Unit::open(&dir).unwrap();
    assert_eq!(rec.status(), before);
    assert!(
        objects(&s, "tke-master-key").is_empty(),
        "the orphan key was destroyed"
    );
    assert!(objects(&s, "tke-importer").is_empty());
    ok(run(&mut rec, ca, &Command::GenerateRandomMk, &[w.a(0)]));
    let vp = rec.status().current_register.vp;
    // The order the unit never uses: state written, secret lost.
    drop(rec);
    for o in objects(&s, "tke-master-key") {
        s.destroy_object(o).unwrap();
    }
    let e = Unit::open(&dir).unwrap_err();
    assert!(
        matches!(e, UnitError::Inconsistent { .. }),
        "{e:?} (vp {vp:?})"
    );
}

/// The backend's import refuses a correctly wrapped value of another length for that
/// reason, though SoftHSM2 records no length for unwrapped keys.
#[test]
fn an_unwrapped_value_of_another_length_is_refused_as_such() {
    use tke_proto::p256::ecdh::EphemeralSecret;
    use tke_proto::transport::{derive_kek, kdf_context, point_bytes, ImporterKey, MkEnvelope};
    let d = tempfile::tempdir().unwrap();
    let id = UnitId::random();
    let mut b = Pkcs11Backend::create(
        d.path(),
        id,
        UnitType::Operational,
        &softhsm::pool().config(),
    )
    .unwrap();
    let public = b.generate_importer().unwrap();
    let importer = ImporterKey::new(id, &public).unwrap();
    let source = UnitId::random();
    let eph = EphemeralSecret::random(&mut rand_core::OsRng);
    let eph_point = point_bytes(&eph.public_key());
    let mut z = [0u8; 32];
    z.copy_from_slice(eph.diffie_hellman(&public).raw_secret_bytes());
    let kek = derive_kek(
        &z,
        &kdf_context(&source, &id, &eph_point, &point_bytes(&public)),
    );
    let wrapped = aes_kw::KekAes256::from(*kek.expose_secret())
        .wrap_with_padding_vec(&[7u8; 31])
        .unwrap();
    let envelope = MkEnvelope {
        source_unit_id: source,
        target_unit_id: id,
        importer_key_id: importer.key_id,
        ephemeral_public_key: OctetString::new(eph_point.to_vec()).unwrap(),
        wrapped_key: OctetString::new(wrapped).unwrap(),
        vp: Vp([1; 32]),
    };
    let e = b.import(&importer.key_id, &envelope).unwrap_err();
    assert!(
        matches!(
            &e,
            BackendError::Rejected(ProtoError::Transport(
                tke_proto::TransportError::UnwrappedKeyLength
            ))
        ),
        "{e:?}"
    );
    // Nothing was left on the token.
    let s = session(b.config());
    assert!(objects(&s, "tke-master-key").is_empty());
    b.discard().unwrap();
    assert!(objects(&s, "tke-device").is_empty() && objects(&s, "tke-importer").is_empty());
}

/// Key service across backends: a soft unit and a token unit with the same master key
/// compute the same bytes (AES-KWP is deterministic) and read each other's root keys and
/// wrapped data.
#[test]
fn service_operations_agree_with_the_soft_backend() {
    use suite::service::{generate, service};
    use tke_proto::{SecretOctets, ServiceOp, UnwrapData, WrapData};
    let w = World::new(3);
    let mut soft = w.ready(&SoftFactory, "soft", UnitType::Recovery);
    let mut token = w.ready(&Pkcs11Factory, "token", UnitType::Operational);
    let vp = auto_init(&w, &mut soft, &mut [&mut token]);
    let (soft_roots, _) = generate(&w, &mut soft, 2);
    let (token_roots, _) = generate(&w, &mut token, 2);
    for root in soft_roots.iter().chain(&token_roots) {
        // Data keys are a multiple of 8 bytes: SoftHSM2 wraps other lengths zero-padded,
        // unlike RFC 5649 (see `SERVICE_DATA_MULTIPLE`).
        for len in [8, 16, 24, 32, 40, 64, 4096] {
            // Data that ends in zero bytes, which padding would hide.
            let mut data: Vec<u8> = (0..len).map(|i| (i % 251) as u8 + 1).collect();
            data[len - 1] = 0;
            data[len - 2] = 0;
            let op = ServiceOp::WrapData(WrapData {
                vp,
                root: root.clone(),
                data: SecretOctets::new(data.clone()),
            });
            let by_soft = ok(service(&w, &mut soft, op.clone()));
            let by_token = ok(service(&w, &mut token, op));
            assert_eq!(by_soft, by_token, "the same RFC 5649 bytes for {len} bytes");
            for unit in [&mut soft, &mut token] {
                let op = ServiceOp::UnwrapData(UnwrapData {
                    vp,
                    root: root.clone(),
                    wrapped: OctetString::new(by_soft.clone()).unwrap(),
                });
                assert_eq!(ok(service(&w, unit, op)), data, "{len} bytes");
            }
        }
    }
}
