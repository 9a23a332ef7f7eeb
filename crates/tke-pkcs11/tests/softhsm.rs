//! Token lookup, mechanisms and login against SoftHSM2, through its real module.
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` (which names its token directory) once, at
//! `C_Initialize`. So the first test makes this binary's private token directory with
//! `softhsm-config/make-tokens.sh`, under a `OnceLock`, before anything loads the module;
//! every test then uses tokens of its own, since login state is shared by the process.
//! SoftHSM2 missing is a failure naming `ci/setup.sh`, never a skip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use tke_pkcs11::{
    cryptoki::mechanism::MechanismType,
    mechanism::{self, WrapMechanism},
    Error, Module, Pin, PinTries, TokenName, TokenQuery,
};

/// Each test's tokens (labels are unique but for the twins).
const LABELS: &[&str] = &[
    "by-label",
    "by-serial",
    "twin",
    "twin",
    "wrong-pin",
    "pin-file",
    "mechanisms",
];

/// The SoftHSM2 module (Debian's path; `TKE_SOFTHSM2_MODULE` overrides it).
fn module_path() -> PathBuf {
    let m = std::env::var_os("TKE_SOFTHSM2_MODULE").map_or_else(
        || PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"),
        PathBuf::from,
    );
    assert!(
        m.is_file(),
        "the SoftHSM2 PKCS#11 module {} is missing: install SoftHSM2 with ci/setup.sh",
        m.display()
    );
    m
}

/// This binary's token directory, made on first use.
fn tokens() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("tke-pkcs11-softhsm-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../softhsm-config/make-tokens.sh");
        let out = Command::new("bash")
            .arg(script)
            .arg(&dir)
            .args(LABELS)
            .output()
            .expect("run softhsm-config/make-tokens.sh");
        assert!(
            out.status.success(),
            "softhsm-config/make-tokens.sh failed (install SoftHSM2 with ci/setup.sh): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Before any thread loads the module.
        std::env::set_var("SOFTHSM2_CONF", dir.join("softhsm2.conf"));
        dir
    })
}

fn module() -> Module {
    tokens();
    Module::load(&module_path()).unwrap()
}

fn pin_file(label: &str) -> PathBuf {
    tokens().join(format!("{label}.pin"))
}

fn pin(label: &str) -> Pin {
    Pin::from_file(&pin_file(label)).unwrap()
}

/// The error and every cause below it, one per line: what a printer walking
/// `source()` shows.
fn chain(e: &dyn std::error::Error) -> Vec<String> {
    let mut out = vec![e.to_string()];
    let mut next = e.source();
    while let Some(c) = next {
        out.push(c.to_string());
        next = c.source();
    }
    out
}

#[test]
fn one_module_per_process_whatever_the_path() {
    let a = module();
    // The same file by another name is the same, already initialized, module.
    let other_name = module_path()
        .parent()
        .unwrap()
        .join(".")
        .join(module_path().file_name().unwrap());
    let b = Module::load(&other_name).unwrap();
    assert_eq!(a.canonical_path(), b.canonical_path());
    assert_eq!(b.path(), other_name);
    assert_eq!(
        a.find_token(&TokenQuery::label("by-label")).unwrap().name(),
        b.find_token(&TokenQuery::label("by-label")).unwrap().name()
    );
}

#[test]
fn tokens_are_found_by_label_or_serial() {
    let m = module();
    let t = m.find_token(&TokenQuery::label("by-label")).unwrap();
    assert_eq!(t.name().label, "by-label");
    assert!(!t.name().serial.is_empty());
    assert_eq!(t.module().path(), module_path());
    let s = m.find_token(&TokenQuery::label("by-serial")).unwrap();
    let by_serial = m
        .find_token(&TokenQuery::serial(s.name().serial.clone()))
        .unwrap();
    assert_eq!(by_serial.name(), s.name());
    // Label and serial must both match.
    let both = TokenQuery {
        serial: Some(s.name().serial.clone()),
        ..TokenQuery::label("by-serial")
    };
    assert_eq!(m.find_token(&both).unwrap().name(), s.name());
    // Every token made for this binary is listed, each once (the twins twice).
    let listed: Vec<String> = m
        .tokens()
        .unwrap()
        .into_iter()
        .map(|t| t.name().label.clone())
        .collect();
    for label in LABELS {
        let want = LABELS.iter().filter(|l| *l == label).count();
        assert_eq!(
            listed.iter().filter(|l| l == label).count(),
            want,
            "{listed:?}"
        );
    }
}

#[test]
fn a_missing_token_is_named_with_the_tokens_present() {
    let m = module();
    let e = m
        .find_token(&TokenQuery::label("no-such-token"))
        .unwrap_err();
    let Error::TokenNotFound {
        module,
        wanted,
        present,
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!(module, &module_path());
    assert_eq!(wanted, &TokenQuery::label("no-such-token"));
    let by_label = m.find_token(&TokenQuery::label("by-label")).unwrap();
    assert!(present.0.contains(by_label.name()), "{present}");
    // Sorted by label and serial, whatever the slot order: messages read the same each time.
    let key = |t: &TokenName| (t.label.clone(), t.serial.clone());
    let mut sorted = present.0.clone();
    sorted.sort_by_key(key);
    assert_eq!(present.0, sorted);
    assert_eq!(present.0.len(), LABELS.len());
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!(
            "token \"no-such-token\" was not found in PKCS#11 module {}; tokens present: ",
            module_path().display()
        )),
        "{msg}"
    );
    assert!(msg.contains(&by_label.name().to_string()), "{msg}");
    // A serial that does not go with the label is not found either.
    let other = m.find_token(&TokenQuery::label("by-serial")).unwrap();
    let mismatch = TokenQuery {
        serial: Some(other.name().serial.clone()),
        ..TokenQuery::label("by-label")
    };
    let e = m.find_token(&mismatch).unwrap_err();
    assert!(matches!(e, Error::TokenNotFound { .. }), "{e:?}");
}

#[test]
fn two_tokens_with_one_label_are_ambiguous_until_the_serial_is_given() {
    let m = module();
    let e = m.find_token(&TokenQuery::label("twin")).unwrap_err();
    let Error::AmbiguousToken { candidates, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(candidates.0.len(), 2);
    assert_ne!(candidates.0[0].serial, candidates.0[1].serial);
    let msg = e.to_string();
    assert!(
        msg.contains("is ambiguous") && msg.contains("serial number"),
        "{msg}"
    );
    for c in &candidates.0 {
        assert!(msg.contains(&c.to_string()), "{msg}");
        let q = TokenQuery {
            serial: Some(c.serial.clone()),
            ..TokenQuery::label("twin")
        };
        assert_eq!(m.find_token(&q).unwrap().name(), c);
    }
}

#[test]
fn login_with_the_pin_file_and_wrong_pins() {
    let m = module();
    let t = m.find_token(&TokenQuery::label("wrong-pin")).unwrap();
    let name = TokenName {
        label: "wrong-pin".into(),
        serial: t.name().serial.clone(),
    };
    // A wrong PIN from a file names the token, the module and the file, never the PIN.
    let wrong_file = tokens().join("wrong-pin.wrong");
    fs::write(&wrong_file, "123456-not-it\n").unwrap();
    fs::set_permissions(&wrong_file, fs::Permissions::from_mode(0o600)).unwrap();
    let e = t
        .open_user_session(&Pin::from_file(&wrong_file).unwrap())
        .unwrap_err();
    let Error::WrongPin {
        module,
        token,
        pin_file,
        tries,
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!((module, token), (&module_path(), &name));
    assert_eq!(pin_file.as_deref(), Some(wrong_file.as_path()));
    // SoftHSM2 sets CKF_USER_PIN_COUNT_LOW after a wrong PIN.
    assert_eq!(*tries, PinTries::Low);
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!(
            "wrong PIN for {name} (PKCS#11 module {}), read from the PIN file {}: the PIN is incorrect; ",
            module_path().display(),
            wrong_file.display()
        )),
        "{msg}"
    );
    assert!(!msg.contains("123456-not-it") && !format!("{e:?}").contains("123456-not-it"));
    // A PIN given directly names no file.
    let e = t.open_user_session(&Pin::new("654321-not-it")).unwrap_err();
    assert!(
        matches!(&e, Error::WrongPin { pin_file: None, .. }),
        "{e:?}"
    );
    // An empty PIN is refused before the token is asked.
    let e = t.open_user_session(&Pin::new("")).unwrap_err();
    assert!(
        matches!(&e, Error::EmptyPin { token, .. } if *token == name),
        "{e:?}"
    );
    // The right PIN works, and a second session shares the process's login.
    let s1 = t.open_user_session(&pin("wrong-pin")).unwrap();
    let s2 = t.open_rw_session().unwrap();
    t.login(&s2, &pin("wrong-pin")).unwrap();
    drop((s1, s2));
}

#[test]
fn a_pin_file_others_can_read_is_refused_before_login() {
    let loose = tokens().join("pin-file.loose");
    fs::copy(pin_file("pin-file"), &loose).unwrap();
    fs::set_permissions(&loose, fs::Permissions::from_mode(0o644)).unwrap();
    let e = Pin::from_file(&loose).unwrap_err();
    assert!(matches!(e, Error::PinFileMode { mode: 0o644, .. }), "{e:?}");
    let secret = fs::read_to_string(pin_file("pin-file")).unwrap();
    assert!(!e.to_string().contains(&secret) && !format!("{e:?}").contains(&secret));
    let t = module().find_token(&TokenQuery::label("pin-file")).unwrap();
    t.open_user_session(&pin("pin-file")).unwrap();
}

#[test]
fn mechanisms_are_checked_all_at_once() {
    let t = module()
        .find_token(&TokenQuery::label("mechanisms"))
        .unwrap();
    assert!(t.supports(MechanismType::ECDSA).unwrap());
    // SoftHSM2 computes RFC 5649 under CKM_AES_KEY_WRAP_PAD and does not know the
    // PKCS#11 3.x id, which cryptoki cannot even name.
    assert!(t.supports(WrapMechanism::Pad.mechanism_type()).unwrap());
    assert!(!t.supports(WrapMechanism::Kwp.mechanism_type()).unwrap());
    t.require(
        &[
            ("CKM_ECDSA", MechanismType::ECDSA),
            ("CKM_AES_CMAC", MechanismType::AES_CMAC),
        ],
        "test",
    )
    .unwrap();
    let e = t
        .require(
            &[
                ("CKM_ECDSA", MechanismType::ECDSA),
                ("CKM_AES_KEY_WRAP_KWP", WrapMechanism::Kwp.mechanism_type()),
                ("an unassigned id", mechanism::standard(0x7fff_fff0)),
            ],
            "test what SoftHSM2 lacks",
        )
        .unwrap_err();
    let Error::MechanismMissing { missing, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(missing, &["CKM_AES_KEY_WRAP_KWP", "an unassigned id"]);
    assert!(
        e.to_string()
            .ends_with("does not offer CKM_AES_KEY_WRAP_KWP, an unassigned id, which is needed to test what SoftHSM2 lacks"),
        "{e}"
    );
}

#[test]
fn a_wrong_module_path_is_named_and_its_cause_given_once() {
    let e = Module::load(Path::new("/nonexistent/libnothing-pkcs11.so")).unwrap_err();
    assert!(matches!(e, Error::ModuleLoad { .. }), "{e:?}");
    let causes = chain(&e);
    assert_eq!(
        causes[0],
        "cannot load the PKCS#11 module /nonexistent/libnothing-pkcs11.so"
    );
    // The loader's reason is below, not in the message.
    assert!(causes.len() >= 2, "{causes:?}");
    assert!(
        causes[1..].iter().any(|c| c.contains("No such file")),
        "{causes:?}"
    );
    // A file that is no PKCS#11 module is refused the same way.
    let not_a_module = tempfile::NamedTempFile::new().unwrap();
    let e = Module::load(not_a_module.path()).unwrap_err();
    assert!(matches!(e, Error::ModuleLoad { .. }), "{e:?}");
}
