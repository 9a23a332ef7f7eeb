//! The behaviour suite on the soft backend, plus what is specific to its files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;
mod support;

use suite::backend_suite;
use support::SoftFactory;

backend_suite!(SoftFactory);

/// The same suite on a unit made from parts that touches no file: its state in a memory
/// store, its secrets in a soft backend in memory.
mod memory_store {
    use crate::{
        suite::{self, backend_suite},
        support::MemoryFactory,
    };

    backend_suite!(MemoryFactory::soft());

    #[test]
    fn save_failure_is_reported() {
        suite::save_failure_is_reported(&MemoryFactory::soft());
    }
}

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use der::{asn1::OctetStringRef, Decode, Sequence};
use suite::World;
use support::{ok, run, Fleet, UnitFactory};
use tke_proto::{Command, DeviceCertificate, ProtoError, UnitId, UnitType};
use tke_unit::{Unit, UnitError, AUDIT_FILE, CA_FILE, DEVICE_FILE, SECRETS_FILE, STATE_FILE};

/// Mirror of the secrets file (see `SoftSecrets` in src/soft.rs).
#[derive(Sequence)]
struct Secrets<'a> {
    version: u8,
    unit_id: OctetStringRef<'a>,
    device_key: OctetStringRef<'a>,
    master_keys: Vec<Stored<'a>>,
    importers: Vec<Stored<'a>>,
}

#[derive(Sequence)]
struct Stored<'a> {
    id: OctetStringRef<'a>,
    secret: OctetStringRef<'a>,
}

/// (number of master keys, number of importer keys, every secret value).
fn secrets_in(dir: &Path) -> (usize, usize, Vec<Vec<u8>>) {
    let bytes = fs::read(dir.join(SECRETS_FILE)).unwrap();
    let s = Secrets::from_der(&bytes).unwrap();
    assert_eq!(s.version, 1);
    assert_eq!(s.unit_id.as_bytes().len(), 16);
    let mut values = vec![s.device_key.as_bytes().to_vec()];
    values.extend(s.master_keys.iter().map(|k| k.secret.as_bytes().to_vec()));
    values.extend(s.importers.iter().map(|k| k.secret.as_bytes().to_vec()));
    assert!(s.master_keys.iter().all(|k| k.id.as_bytes().len() == 16));
    (s.master_keys.len(), s.importers.len(), values)
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn unit_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Unit>();
}

#[test]
fn files_are_private_and_secrets_stay_in_their_file() {
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let mut rec = w.ready(&SoftFactory, "rec", UnitType::Recovery);
    let mut op = w.ready(&SoftFactory, "op", UnitType::Operational);
    ok(run(&mut rec, ca, &Command::GenerateRandomMk, &[w.a(0)]));
    ok(run(&mut rec, ca, &Command::GenerateRandomMk, &[w.a(0)]));
    ok(run(&mut op, ca, &Command::GenerateImporter, &[w.a(0)]));
    let mut expected = vec![AUDIT_FILE, CA_FILE, DEVICE_FILE, SECRETS_FILE, STATE_FILE];
    expected.sort();
    for u in [&rec, &op] {
        let dir = u.dir().unwrap();
        assert_eq!(file_names(dir), expected);
        assert_eq!(
            fs::metadata(dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        for name in &expected {
            let mode = fs::metadata(dir.join(name)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{name}");
        }
    }
    let (mks, imps, values) = secrets_in(rec.dir().unwrap());
    assert_eq!((mks, imps), (2, 0));
    assert_eq!(secrets_in(op.dir().unwrap()).1, 1);
    // No secret value in the other files, in binary or in hex.
    for name in [STATE_FILE, CA_FILE, DEVICE_FILE] {
        let text = fs::read(rec.dir().unwrap().join(name)).unwrap();
        let lossy = String::from_utf8_lossy(&text).to_lowercase();
        for v in &values {
            assert!(
                !lossy.contains(&hex::encode(v)),
                "{name} holds a secret in hex"
            );
            assert!(
                !text.windows(v.len()).any(|w| w == v.as_slice()),
                "{name} holds a secret"
            );
        }
    }
}

#[test]
fn stale_temporary_files_do_not_break_open() {
    let w = World::new(3);
    let rec = w.ready(&SoftFactory, "rec", UnitType::Recovery);
    let dir = rec.dir().unwrap().to_owned();
    let status = rec.status();
    drop(rec);
    fs::write(
        dir.join(format!(".{STATE_FILE}.tmp-0123456789ab")),
        b"{ half a",
    )
    .unwrap();
    fs::write(
        dir.join(format!(".{SECRETS_FILE}.tmp-ba9876543210")),
        b"\x30\x80",
    )
    .unwrap();
    fs::write(dir.join("notes.txt"), b"the operator's own file").unwrap();
    let u = Unit::open(&dir).unwrap();
    assert_eq!(u.status(), status);
    // The leftovers (which may hold secrets) are gone; other files are not ours to touch.
    let mut expected = vec![
        AUDIT_FILE,
        CA_FILE,
        DEVICE_FILE,
        SECRETS_FILE,
        STATE_FILE,
        "notes.txt",
    ];
    expected.sort();
    assert_eq!(file_names(&dir), expected);
}

#[test]
fn crash_after_the_secret_before_the_state_leaves_an_orphan_only() {
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let mut rec = w.ready(&SoftFactory, "rec", UnitType::Recovery);
    let dir = rec.dir().unwrap().to_owned();
    let old_state = fs::read(dir.join(STATE_FILE)).unwrap();
    let before = rec.status();
    ok(run(&mut rec, ca, &Command::GenerateRandomMk, &[w.a(0)]));
    drop(rec);
    assert_eq!(secrets_in(&dir).0, 1);
    // The state write "did not happen".
    fs::write(dir.join(STATE_FILE), &old_state).unwrap();
    let mut rec = Unit::open(&dir).unwrap();
    assert_eq!(rec.status(), before, "the unanswered command left no trace");
    assert_eq!(secrets_in(&dir).0, 0, "the orphan key was destroyed");
    ok(run(&mut rec, ca, &Command::GenerateRandomMk, &[w.a(0)]));
}

#[test]
fn crash_after_the_state_before_the_destruction_leaves_an_orphan_only() {
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let mut rec = w.ready(&SoftFactory, "rec", UnitType::Recovery);
    let dir = rec.dir().unwrap().to_owned();
    ok(run(&mut rec, ca, &Command::GenerateRandomMk, &[w.a(0)]));
    let old_secrets = fs::read(dir.join(SECRETS_FILE)).unwrap();
    ok(run(&mut rec, ca, &Command::ClearCurrent, &[w.a(0), w.a(1)]));
    let after = rec.status();
    drop(rec);
    assert_eq!(secrets_in(&dir).0, 0);
    // The destruction "did not happen".
    fs::write(dir.join(SECRETS_FILE), &old_secrets).unwrap();
    let rec = Unit::open(&dir).unwrap();
    assert_eq!(rec.status(), after);
    assert_eq!(
        secrets_in(&dir).0,
        0,
        "the cleared key was destroyed on open"
    );
}

#[test]
fn state_referring_to_a_missing_secret_is_refused() {
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let mut rec = w.ready(&SoftFactory, "rec", UnitType::Recovery);
    let dir = rec.dir().unwrap().to_owned();
    let old_secrets = fs::read(dir.join(SECRETS_FILE)).unwrap();
    ok(run(&mut rec, ca, &Command::GenerateRandomMk, &[w.a(0)]));
    drop(rec);
    // The order the unit never uses: state written, secret lost.
    fs::write(dir.join(SECRETS_FILE), &old_secrets).unwrap();
    let e = Unit::open(&dir).unwrap_err();
    assert!(matches!(e, UnitError::Inconsistent { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("current register")
            && msg.contains(&dir.join(STATE_FILE).display().to_string()),
        "{msg}"
    );
}

/// A unit directory written before units had control points (`unit.json` format
/// `tke-unit-state/1`, without `control_points`) keeps working: it opens with the default
/// mask, runs commands, and its next save writes format 2 with the mask. A format 1 file
/// that names control points, a format 2 file without them, and an unknown format are
/// refused, naming the file.
#[test]
fn a_state_file_of_format_1_opens_with_the_default_control_points() {
    use tke_proto::{ControlPoint, ControlPoints};
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let mut rec = w.ready(&SoftFactory, "rec", UnitType::Recovery);
    ok(run(&mut rec, ca, &Command::GenerateRandomMk, &[w.a(0)]));
    let dir = rec.dir().unwrap().to_owned();
    let status = rec.status();
    drop(rec);
    let path = dir.join(STATE_FILE);
    let mut json: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    assert_eq!(json["format"], "tke-unit-state/2");
    assert_eq!(json["control_points"], ControlPoints::DEFAULT.to_hex());
    let format_2 = json.clone();
    let fields = json.as_object_mut().unwrap();
    fields.remove("control_points");
    fields.insert("format".into(), "tke-unit-state/1".into());
    let format_1 = serde_json::to_vec_pretty(&json).unwrap();
    fs::write(&path, &format_1).unwrap();

    let mut rec = Unit::open(&dir).unwrap();
    assert_eq!(rec.status(), status);
    assert_eq!(rec.status().control_points, ControlPoints::DEFAULT);
    // It works as before, and the next save writes format 2.
    let btc = ControlPoints::of(&[ControlPoint::BTC]);
    ok(run(
        &mut rec,
        ca,
        &Command::RemoveControlPoints(btc),
        &[w.a(0), w.a(1)],
    ));
    drop(rec);
    let saved: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    assert_eq!(saved["format"], "tke-unit-state/2");
    let cleared = ControlPoints::DEFAULT.difference(btc);
    assert_eq!(saved["control_points"], cleared.to_hex());
    assert_eq!(Unit::open(&dir).unwrap().status().control_points, cleared);

    // What no version wrote is refused, naming the file.
    let mut mixed = format_2.clone();
    mixed["format"] = "tke-unit-state/1".into();
    let mut missing = format_2.clone();
    missing.as_object_mut().unwrap().remove("control_points");
    let mut short = format_2.clone();
    short["control_points"] = "0011".into();
    let mut future = format_2;
    future["format"] = "tke-unit-state/3".into();
    for (what, bad) in [
        ("no control_points", mixed),
        ("control_points is missing", missing),
        ("control_points is not 16 bytes", short),
        ("unknown format", future),
    ] {
        fs::write(&path, serde_json::to_vec_pretty(&bad).unwrap()).unwrap();
        let e = open_err(&dir);
        assert!(matches!(e, UnitError::CorruptState { .. }), "{what}: {e:?}");
        let msg = tke_proto::ErrorChain(&e).to_string();
        assert!(
            msg.contains(what) && msg.contains(&path.display().to_string()),
            "{msg}"
        );
    }
}

fn open_err(dir: &Path) -> UnitError {
    Unit::open(dir).unwrap_err()
}

#[test]
fn open_names_what_is_wrong() {
    let w = World::new(3);
    let a = w.ready(&SoftFactory, "a", UnitType::Recovery);
    let b = w.ready(&SoftFactory, "b", UnitType::Recovery);
    let (a_dir, b_dir) = (a.dir().unwrap().to_owned(), b.dir().unwrap().to_owned());
    let a_cert = a.device_certificate().clone();
    drop((a, b));
    let copy = |name: &str| -> PathBuf {
        let d = w.dir.path().join(name);
        fs::create_dir(&d).unwrap();
        for f in [STATE_FILE, CA_FILE, DEVICE_FILE, SECRETS_FILE] {
            fs::copy(a_dir.join(f), d.join(f)).unwrap();
        }
        d
    };
    let shows = |e: &UnitError, path: &Path| {
        // The unit's error and its causes, as a printer shows them.
        let msg = tke_proto::ErrorChain(e).to_string();
        assert!(
            msg.contains(&path.display().to_string()),
            "{msg} does not name {}",
            path.display()
        );
    };

    // Missing directory, empty directory.
    let missing = w.dir.path().join("missing");
    let e = open_err(&missing);
    assert!(matches!(e, UnitError::NotAUnit { .. }));
    shows(&e, &missing);
    let empty = w.dir.path().join("empty");
    fs::create_dir(&empty).unwrap();
    assert!(matches!(open_err(&empty), UnitError::NotAUnit { .. }));

    // Corrupt state file: not JSON, then JSON with a bad value.
    let d = copy("corrupt-state");
    fs::write(d.join(STATE_FILE), b"{\"format\": ").unwrap();
    let e = open_err(&d);
    assert!(matches!(e, UnitError::StateSyntax { .. }), "{e:?}");
    shows(&e, &d.join(STATE_FILE));
    let text = fs::read_to_string(a_dir.join(STATE_FILE)).unwrap();
    fs::write(
        d.join(STATE_FILE),
        text.replace("\"signature_threshold\": 2", "\"signature_threshold\": 7"),
    )
    .unwrap();
    let e = open_err(&d);
    assert!(matches!(e, UnitError::CorruptState { .. }), "{e:?}");
    shows(&e, &d.join(STATE_FILE));

    // Truncated secrets file.
    let d = copy("corrupt-secrets");
    let bytes = fs::read(d.join(SECRETS_FILE)).unwrap();
    fs::write(d.join(SECRETS_FILE), &bytes[..bytes.len() - 3]).unwrap();
    let e = open_err(&d);
    shows(&e, &d.join(SECRETS_FILE));

    // Missing secrets file.
    let d = copy("no-secrets");
    fs::remove_file(d.join(SECRETS_FILE)).unwrap();
    shows(&open_err(&d), &d.join(SECRETS_FILE));

    // Another unit's secrets, device certificate, or fleet CA.
    let d = copy("foreign-secrets");
    fs::copy(b_dir.join(SECRETS_FILE), d.join(SECRETS_FILE)).unwrap();
    let e = open_err(&d);
    assert!(
        tke_proto::ErrorChain(&e)
            .to_string()
            .contains("holds the secrets of crypto unit"),
        "{e:?}"
    );
    shows(&e, &d.join(SECRETS_FILE));
    let d = copy("foreign-device");
    fs::copy(b_dir.join(DEVICE_FILE), d.join(DEVICE_FILE)).unwrap();
    let e = open_err(&d);
    assert!(matches!(e, UnitError::ForeignCertificate { .. }), "{e:?}");
    shows(&e, &d.join(DEVICE_FILE));
    let d = copy("foreign-ca");
    fs::write(
        d.join(CA_FILE),
        Fleet::new("other fleet").ca.to_pem().unwrap(),
    )
    .unwrap();
    let e = open_err(&d);
    assert!(matches!(e, UnitError::Certificate { .. }), "{e:?}");
    shows(&e, &d.join(DEVICE_FILE));

    // A device certificate of this unit and key, but that states another type than the
    // state file records.
    let d = copy("other-type");
    let other_type = w
        .fleet
        .issue(
            a_cert.unit_id(),
            UnitType::Operational,
            &a_cert.verifying_key().into(),
        )
        .unwrap();
    fs::write(d.join(DEVICE_FILE), other_type.to_pem().unwrap()).unwrap();
    let e = open_err(&d);
    assert!(
        matches!(
            e,
            UnitError::CertifiedTypeMismatch {
                recorded: UnitType::Recovery,
                certified: UnitType::Operational,
                ..
            }
        ),
        "{e:?}"
    );
    shows(&e, &d.join(DEVICE_FILE));

    // An unknown backend.
    let d = copy("unknown-backend");
    let text = fs::read_to_string(d.join(STATE_FILE)).unwrap();
    fs::write(
        d.join(STATE_FILE),
        text.replace("\"backend\": \"soft\"", "\"backend\": \"quantum\""),
    )
    .unwrap();
    let e = open_err(&d);
    assert!(
        matches!(e, UnitError::BackendKind { .. }) && e.to_string().contains("quantum"),
        "{e}"
    );

    // The originals are untouched by all this.
    assert!(Unit::open(&a_dir).is_ok() && Unit::open(&b_dir).is_ok());
}

#[test]
fn create_refuses_and_cleans_up() {
    let fleet = Fleet::new("fleet");
    let d = tempfile::tempdir().unwrap();
    let id = UnitId::random();

    // A directory with something in it is never used.
    let busy = d.path().join("busy");
    fs::create_dir(&busy).unwrap();
    fs::write(busy.join("keep"), b"x").unwrap();
    let e = Unit::create_soft(&busy, id, UnitType::Recovery, &fleet.ca, &mut |pk| {
        fleet.issue(id, UnitType::Recovery, pk)
    })
    .unwrap_err();
    assert!(
        matches!(e, UnitError::DirectoryNotEmpty { .. }) && e.to_string().contains("busy"),
        "{e}"
    );
    assert_eq!(file_names(&busy), vec!["keep"]);

    // The issuer fails, or certifies another unit, another key or another unit type:
    // nothing is left.
    let other_key = tke_proto::p256::SecretKey::random(&mut rand_core::OsRng).public_key();
    type Issue<'a> =
        Box<dyn Fn(&tke_proto::p256::PublicKey) -> Result<DeviceCertificate, ProtoError> + 'a>;
    let cases: Vec<(&str, Issue<'_>)> = vec![
        (
            "fails",
            Box::new(|_| {
                Err(ProtoError::Signing {
                    source: "the CA is offline".into(),
                })
            }),
        ),
        (
            "other-unit",
            Box::new(|pk| fleet.issue(UnitId::random(), UnitType::Recovery, pk)),
        ),
        (
            "other-key",
            Box::new(|_| fleet.issue(id, UnitType::Recovery, &other_key)),
        ),
        (
            "other-type",
            Box::new(|pk| fleet.issue(id, UnitType::Operational, pk)),
        ),
        (
            "other-fleet",
            Box::new(|pk| Fleet::new("other").issue(id, UnitType::Recovery, pk)),
        ),
    ];
    for (name, issue) in cases {
        let dir = d.path().join(name);
        let e = Unit::create_soft(&dir, id, UnitType::Recovery, &fleet.ca, &mut |pk| issue(pk))
            .unwrap_err();
        assert!(
            matches!(
                e,
                UnitError::Issue { .. } | UnitError::IssuedCertificate { .. }
            ),
            "{name}: {e:?}"
        );
        assert!(!dir.exists(), "{name}: the directory was removed");
    }
    // An existing empty directory stays, empty.
    let empty = d.path().join("empty");
    fs::create_dir(&empty).unwrap();
    Unit::create_soft(&empty, id, UnitType::Recovery, &fleet.ca, &mut |_| {
        Err(ProtoError::Signing {
            source: "no".into(),
        })
    })
    .unwrap_err();
    assert!(file_names(&empty).is_empty());
    // And then it can be used.
    let u = SoftFactory.create(&empty, id, UnitType::Failover, &fleet);
    assert_eq!((u.id(), u.unit_type()), (id, UnitType::Failover));
    assert_eq!(u.device_certificate().unit_id(), id);
}

/// A unit with a latency answers each query and command no sooner than it; without one
/// (the default, also after reopening: the latency is not saved) it adds none.
#[test]
fn latency_delays_every_answer_and_is_off_by_default() {
    use std::time::{Duration, Instant};
    use tke_unit::Latency;

    let d = tempfile::tempdir().unwrap();
    let fleet = Fleet::new("latency");
    let dir = d.path().join("u");
    let mut u = SoftFactory.create(&dir, UnitId::random(), UnitType::Operational, &fleet);
    assert_eq!(u.latency(), Latency::NONE);
    // Well above what a query costs, so that the default's bound below is no race.
    let latency = Latency::from_millis(300).unwrap();
    let timed = |u: &mut Unit| {
        let start = Instant::now();
        let status = support::query(u, &fleet.ca);
        (start.elapsed(), status)
    };
    let (plain, before) = timed(&mut u);
    assert!(plain < latency.duration(), "no latency set: {plain:?}");

    u.set_latency(latency);
    assert_eq!(u.latency(), latency);
    let (slow, status) = timed(&mut u);
    assert!(slow >= latency.duration(), "query: {slow:?}");
    assert_eq!(status, before, "the answer is the same, only later");
    let admin = &support::admins(1)[0];
    let start = Instant::now();
    support::add_admins(&mut u, &fleet.ca, std::slice::from_ref(admin));
    assert!(start.elapsed() >= latency.duration(), "command");

    drop(u);
    let mut u = SoftFactory.reopen(&dir);
    assert_eq!(u.latency(), Latency::NONE);
    let (plain, _) = timed(&mut u);
    assert!(plain < Duration::from_millis(300), "reopened: {plain:?}");
}

/// Known answers: the soft unit's root keys are RFC 5649 wraps under its master key, and
/// its wrapped data RFC 5649 wraps under the root key, as an independent implementation
/// (the `aes-kw` crate, given the master key read from the secrets file) computes them.
/// Service requests write nothing.
#[test]
fn service_outputs_are_rfc5649_under_the_master_key() {
    use aes_kw::KekAes256;
    use suite::service::{generate, service};
    use tke_proto::{SecretOctets, ServiceOp, WrapData};
    let w = World::new(3);
    let dir = w.path("rec");
    let mut rec = w.ready(&SoftFactory, "rec", UnitType::Recovery);
    let vp = tke_proto::Vp::from_slice(&ok(run(
        &mut rec,
        &w.fleet.ca,
        &Command::GenerateRandomMk,
        &[w.a(0)],
    )))
    .unwrap();
    let (n_mk, _, values) = secrets_in(&dir);
    assert_eq!(n_mk, 1);
    let mk: [u8; 32] = values[1].as_slice().try_into().unwrap();
    let files = |d: &Path| {
        file_names(d)
            .into_iter()
            .map(|n| (fs::read(d.join(&n)).unwrap(), n))
            .collect::<Vec<_>>()
    };
    let before = files(&dir);
    let (roots, _) = generate(&w, &mut rec, 2);
    let root = KekAes256::from(mk)
        .unwrap_with_padding_vec(roots[0].as_bytes())
        .unwrap();
    assert_eq!(root.len(), 32);
    let root2 = KekAes256::from(mk)
        .unwrap_with_padding_vec(roots[1].as_bytes())
        .unwrap();
    assert_ne!(root, root2);
    let data = [0x5au8; 24];
    let wrapped = ok(service(
        &w,
        &mut rec,
        ServiceOp::WrapData(WrapData {
            vp,
            root: roots[0].clone(),
            data: SecretOctets::new(data.to_vec()),
        }),
    ));
    let root: [u8; 32] = root.try_into().unwrap();
    assert_eq!(
        wrapped,
        KekAes256::from(root).wrap_with_padding_vec(&data).unwrap()
    );
    assert_eq!(files(&dir), before, "no file changed");
}
