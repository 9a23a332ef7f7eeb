//! Master key part files: format, listing without a password, decryption, KEYNUMs, and
//! every way a file can be wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{collections::BTreeMap, fs, os::unix::fs::PermissionsExt, path::Path};

use common::{files_dir, openssl_ok, s};
use tke_proto::{MasterKey, Vp};
use tke_workstation::{
    FilesDir, KeyFileError, KeyPart, KeyPartEntry, PartDescription, Password, ScryptCost,
    PART_CREATED_SUFFIX, PART_SUFFIX,
};

const PW: &str = "Tr0ub4dor&3-part";

fn pw() -> Password {
    Password::new(PW)
}

/// A cheap scrypt cost: these tests write many parts. The cost users get is checked by
/// `openssl_decrypts_a_part_file`.
const CHEAP: ScryptCost = ScryptCost {
    log_n: 10,
    r: 8,
    p: 1,
};

fn desc(d: &str) -> PartDescription {
    PartDescription::new(d).unwrap()
}

/// Writes a random part described as `d` under [`PW`]; returns it with its entry.
fn add(dir: &FilesDir, d: &str) -> (KeyPart, KeyPartEntry) {
    let part = KeyPart::random();
    let entry = dir
        .write_key_part_with_cost(&desc(d), &part, &pw(), CHEAP)
        .unwrap();
    (part, entry)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The files of the directory, by name, with their bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// Replaces the line of `path` that starts with `key = ` by `key = value`.
fn set_field(path: &Path, key: &str, value: &str) {
    let text = fs::read_to_string(path).unwrap();
    let prefix = format!("{key} = ");
    let mut found = false;
    let edited: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with(&prefix) {
                found = true;
                format!("{prefix}{value}")
            } else {
                l.to_owned()
            }
        })
        .collect();
    assert!(found, "no {key} in {text}");
    fs::write(path, edited.join("\n") + "\n").unwrap();
}

#[test]
fn round_trip_with_description_and_vp_in_the_clear() {
    let (_t, dir) = files_dir();
    let part = KeyPart::from_hex(&"0123456789abcdef".repeat(4)).unwrap();
    let e = dir
        .write_key_part_with_cost(&desc("alice's part"), &part, &pw(), CHEAP)
        .unwrap();
    assert_eq!(e.description.as_str(), "alice's part");
    assert_eq!(
        e.vp,
        MasterKey::from_slice(part.expose_secret()).unwrap().vp()
    );

    // `<description made safe>-<8 random hex digits>.mkpart.toml`, 0600, and its record.
    let name = e.path.file_name().unwrap().to_str().unwrap();
    let id = name
        .strip_prefix("alice_s_part-")
        .and_then(|r| r.strip_suffix(PART_SUFFIX))
        .unwrap_or_else(|| panic!("{name}"));
    assert!(
        id.len() == 8 && id.chars().all(|c| c.is_ascii_hexdigit()),
        "{name}"
    );
    let record = dir
        .path()
        .join(format!("alice_s_part-{id}{PART_CREATED_SUFFIX}"));
    for p in [&e.path, &record] {
        let mode = fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", p.display());
    }
    assert_eq!(files(dir.path()).len(), 2, "no temporary file left behind");

    // Description and VP readable; the value nowhere.
    let text = fs::read_to_string(&e.path).unwrap();
    assert!(
        text.contains("\ndescription = \"alice's part\"\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!("\nvp = \"{}\"\n", e.vp.to_hex())),
        "{text}"
    );
    assert!(text.contains("-----BEGIN TKE ENCRYPTED MASTER KEY PART-----\n"));
    assert!(!text.contains("0123456789abcdef") && !text.contains("0123456789ABCDEF"));

    let listing = dir.key_parts().unwrap();
    assert!(listing.problems.is_empty(), "{:?}", listing.problems);
    assert_eq!(listing.entries, vec![e.clone()]);
    let opened = listing.entries[0].open(&pw()).unwrap();
    assert_eq!(opened.expose_secret(), part.expose_secret());
}

#[test]
fn descriptions_are_escaped_and_read_back_exactly() {
    let (_t, dir) = files_dir();
    for d in [
        r#"say "hi" \ bye"#,
        "Ünïcödé ключ",
        "'single' = [not, toml]",
    ] {
        let (part, e) = add(&dir, d);
        let listing = dir.key_parts().unwrap();
        let found = listing.find(d).unwrap();
        assert_eq!(found, &e);
        assert_eq!(
            found.open(&pw()).unwrap().expose_secret(),
            part.expose_secret()
        );
    }
}

#[test]
fn a_wrong_password_names_the_file_and_changes_nothing() {
    let (_t, dir) = files_dir();
    let (_, e) = add(&dir, "alice");
    let before = files(dir.path());
    // A wrong password fails the CBC padding, or leaves noise that is no part: either
    // way it is reported as a wrong password (with AES-CBC, as altered data would be).
    for wrong in ["wrong", "Tr0ub4dor&3-parT", ""] {
        let err = e.open(&Password::new(wrong)).unwrap_err();
        assert!(
            matches!(&err, KeyFileError::PartWrongPassword { description, path }
                if description == "alice" && *path == e.path),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&e.path.display().to_string()), "{msg}");
        assert!(
            msg.contains("wrong password for master key part \"alice\""),
            "{msg}"
        );
    }
    assert_eq!(files(dir.path()), before);
}

#[test]
fn an_altered_vp_or_description_is_refused_on_opening() {
    let (_t, dir) = files_dir();
    let (_, a) = add(&dir, "alice");
    let (_, b) = add(&dir, "bob");

    // The VP of another part: `mks` shows it, opening refuses it.
    set_field(&a.path, "vp", &format!("\"{}\"", b.vp.to_hex()));
    let listed = dir.key_parts().unwrap().find("alice").unwrap().clone();
    assert_eq!(listed.vp, b.vp);
    let err = listed.open(&pw()).unwrap_err();
    assert!(
        matches!(&err, KeyFileError::PartAltered { path, problem, .. }
            if *path == a.path && problem.contains("verification pattern")),
        "{err:?}"
    );
    assert!(err.to_string().contains("was altered or swapped"), "{err}");

    // Another description over the same encrypted part.
    set_field(&b.path, "description", "\"carol\"");
    let listed = dir.key_parts().unwrap().find("carol").unwrap().clone();
    let err = listed.open(&pw()).unwrap_err();
    assert!(
        matches!(&err, KeyFileError::PartAltered { path, problem, .. }
            if *path == b.path && problem.contains("description")),
        "{err:?}"
    );
}

#[test]
fn encrypted_data_swapped_between_files_is_refused() {
    let (_t, dir) = files_dir();
    let (_, a) = add(&dir, "alice");
    let (_, b) = add(&dir, "bob");
    // Alice's file with Bob's encrypted part (same password): what it shows is Alice's.
    let bob_text = fs::read_to_string(&b.path).unwrap();
    let bob_block = &bob_text[bob_text.find("encrypted = ").unwrap()..];
    let alice_text = fs::read_to_string(&a.path).unwrap();
    let head = &alice_text[..alice_text.find("encrypted = ").unwrap()];
    fs::write(&a.path, format!("{head}{bob_block}")).unwrap();
    let listed = dir.key_parts().unwrap().find("alice").unwrap().clone();
    assert_eq!(listed.vp, a.vp);
    let err = listed.open(&pw()).unwrap_err();
    assert!(
        matches!(&err, KeyFileError::PartAltered { path, .. } if *path == a.path),
        "{err:?}"
    );
}

#[test]
fn an_entry_opens_only_what_it_listed() {
    let (_t, dir) = files_dir();
    let (_, a) = add(&dir, "alice");
    let (_, b) = add(&dir, "bob");
    // The file changed after it was listed: Bob's file copied over Alice's.
    fs::copy(&b.path, &a.path).unwrap();
    let err = a.open(&pw()).unwrap_err();
    assert!(matches!(err, KeyFileError::PartAltered { .. }), "{err:?}");
}

#[test]
fn altered_ciphertext_reads_as_a_wrong_password_or_malformed() {
    let (_t, dir) = files_dir();
    let (_, e) = add(&dir, "alice");
    let text = fs::read_to_string(&e.path).unwrap();
    let begin = text.find("-----BEGIN").unwrap();
    let end = text.find("-----END").unwrap();
    let end = end + text[end..].find('\n').unwrap() + 1;
    let (label, mut der) = tke_proto::der::pem::decode_vec(&text.as_bytes()[begin..end]).unwrap();
    let label = label.to_owned();
    // Flip a bit of the last ciphertext byte: the last CBC block decrypts to noise.
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let pem = tke_proto::der::pem::encode_string(&label, tke_proto::der::pem::LineEnding::LF, &der)
        .unwrap();
    fs::write(&e.path, format!("{}{pem}{}", &text[..begin], &text[end..])).unwrap();
    let listed = dir.key_parts().unwrap();
    assert!(listed.problems.is_empty(), "{:?}", listed.problems);
    let err = listed.entries[0].open(&pw()).unwrap_err();
    assert!(
        matches!(err, KeyFileError::PartWrongPassword { .. }),
        "{err:?}"
    );
}

#[test]
fn damaged_files_are_reported_by_name_and_hide_nothing() {
    let (_t, dir) = files_dir();
    let (_, good) = add(&dir, "good");
    let (_, model) = add(&dir, "model");
    let text = fs::read_to_string(&model.path).unwrap();
    dir.remove_key_part(&model).unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "truncated",
            text[..text.len() / 2].to_owned(),
            "is malformed: it must hold",
        ),
        ("unknown-field", format!("{text}password = \"x\"\n"), "only"),
        (
            "version",
            text.replace("version = 1", "version = 2"),
            "format version 2",
        ),
        (
            "vp",
            text.replace(&model.vp.to_hex(), "abcd"),
            "its vp is not a verification pattern",
        ),
        (
            "description",
            text.replace("description = \"model\"", "description = \"\""),
            "its description is not valid: it is empty",
        ),
        (
            "label",
            text.replace("TKE ENCRYPTED MASTER KEY PART", "ENCRYPTED PRIVATE KEY"),
            "not a TKE ENCRYPTED MASTER KEY PART PEM block",
        ),
        (
            "pem",
            text.replace("-----END TKE", "-----END XYZ"),
            "not a complete PEM block",
        ),
    ];
    for (name, content, _) in &cases {
        fs::write(dir.path().join(format!("{name}{PART_SUFFIX}")), content).unwrap();
    }
    let listing = dir.key_parts().unwrap();
    assert_eq!(listing.entries, vec![good.clone()]);
    assert_eq!(
        listing.problems.len(),
        cases.len(),
        "{:?}",
        listing.problems
    );
    for (name, _, what) in &cases {
        let file = dir.path().join(format!("{name}{PART_SUFFIX}"));
        let problem = listing
            .problems
            .iter()
            .map(|p| tke_proto::ErrorChain(p).to_string())
            .find(|p| p.contains(&file.display().to_string()))
            .unwrap_or_else(|| panic!("{name}: not reported: {:?}", listing.problems));
        assert!(problem.contains(what), "{name}: {problem}");
    }
}

#[test]
fn a_taken_or_look_alike_description_is_refused_and_nothing_is_written() {
    let (_t, dir) = files_dir();
    let (_, first) = add(&dir, "part 1");
    let before = files(dir.path());
    for d in ["part 1", "Part 1", "part l"] {
        let err = dir
            .write_key_part_with_cost(&desc(d), &KeyPart::random(), &pw(), CHEAP)
            .unwrap_err();
        assert!(
            matches!(&err, KeyFileError::PartDescriptionTaken { existing, path, .. }
                if existing == "part 1" && *path == first.path),
            "{d}: {err:?}"
        );
    }
    assert_eq!(files(dir.path()), before);
    add(&dir, "part 2");
}

#[test]
fn an_empty_password_is_refused() {
    let (_t, dir) = files_dir();
    let err = dir
        .write_key_part_with_cost(&desc("a"), &KeyPart::random(), &Password::new(""), CHEAP)
        .unwrap_err();
    assert!(
        matches!(&err, KeyFileError::PartEmptyPassword { description } if description == "a"),
        "{err:?}"
    );
    assert!(files(dir.path()).is_empty());
}

#[test]
fn keynums_follow_creation_order_and_survive_removal() {
    let (_t, dir) = files_dir();
    // Not in alphabetical order: KEYNUMs are creation order.
    for d in ["carol", "alice", "bob"] {
        add(&dir, d);
    }
    let order = |dir: &FilesDir| -> Vec<String> {
        dir.key_parts()
            .unwrap()
            .entries
            .iter()
            .map(|e| e.description.to_string())
            .collect()
    };
    assert_eq!(order(&dir), ["carol", "alice", "bob"]);
    let listing = dir.key_parts().unwrap();
    let alice = listing.find("alice").unwrap().clone();
    dir.remove_key_part(&alice).unwrap();
    assert!(!alice.path.exists());
    assert_eq!(order(&dir), ["carol", "bob"]);
    add(&dir, "aaron");
    assert_eq!(order(&dir), ["carol", "bob", "aaron"]);
    let listing = dir.key_parts().unwrap();
    assert_eq!(listing.by_keynum(3).unwrap().description.as_str(), "aaron");
    assert_eq!(listing.keynum_of(&listing.entries[1].path), Some(2));
    assert!(listing.by_keynum(0).is_none() && listing.by_keynum(4).is_none());
    // Only the parts' files and records are left: the removal took the record too.
    assert_eq!(files(dir.path()).len(), 6);
}

#[test]
fn parts_copied_from_another_workstation_never_overwrite_and_fall_into_place() {
    let (_t1, here) = files_dir();
    let (_t2, there) = files_dir();
    add(&there, "bob's part");
    add(&here, "alice's part");
    // The same description on both workstations: distinct file names all the same.
    add(&there, "shared");
    add(&here, "shared");
    for (name, bytes) in files(there.path()) {
        let target = here.path().join(&name);
        assert!(!target.exists(), "{name} would overwrite a file");
        fs::write(target, bytes).unwrap();
    }
    let listing = here.key_parts().unwrap();
    assert!(listing.problems.is_empty(), "{:?}", listing.problems);
    let order: Vec<_> = listing
        .entries
        .iter()
        .map(|e| e.description.as_str())
        .collect();
    // In the order the parts were made, on whichever workstation.
    assert_eq!(order, ["bob's part", "alice's part", "shared", "shared"]);
    // A description that two files have names no part.
    let err = listing.find("shared").unwrap_err();
    assert!(
        matches!(&err, KeyFileError::AmbiguousPart { paths, .. } if paths.len() == 2),
        "{err:?}"
    );
    assert!(err.to_string().contains("move all but one"), "{err}");
}

#[test]
fn an_unknown_description_lists_the_known_ones() {
    let (_t, dir) = files_dir();
    let err = dir.key_parts().unwrap().find("alice").unwrap_err();
    assert_eq!(
        err.to_string(),
        "no master key part is described as \"alice\": there are no master key parts on \
         this workstation"
    );
    add(&dir, "alice");
    add(&dir, "bob");
    let err = dir.key_parts().unwrap().find("Alice").unwrap_err();
    assert!(
        matches!(&err, KeyFileError::UnknownPart { description, known }
            if description == "Alice" && known == &["alice", "bob"]),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "no master key part is described as \"Alice\": the parts are described as \"alice\", \"bob\""
    );
}

#[test]
fn debug_and_errors_never_show_the_part_or_the_password() {
    let (_t, dir) = files_dir();
    let (part, e) = add(&dir, "alice");
    let lower = hex(part.expose_secret());
    let upper = lower.to_uppercase();
    let wrong = e.open(&Password::new(format!("{PW}-wrong"))).unwrap_err();
    let bad_hex = KeyPart::from_hex(&format!("{}x", &lower[..63])).unwrap_err();
    let listing = dir.key_parts().unwrap();
    let opened = e.open(&pw()).unwrap();
    for text in [
        format!("{part:?}"),
        format!("{opened:?}"),
        format!("{e:?}"),
        format!("{listing:?}"),
        format!("{wrong:?}"),
        format!("{wrong}"),
        format!("{bad_hex:?}"),
        format!("{bad_hex}"),
    ] {
        assert!(!text.contains(PW), "password in {text}");
        assert!(
            !text.contains(&lower) && !text.contains(&upper) && !text.contains(&lower[..16]),
            "part in {text}"
        );
    }
    assert!(format!("{part:?}").contains(&e.vp.to_hex()));
}

#[test]
fn reading_never_modifies_the_files() {
    let (_t, dir) = files_dir();
    let (_, e) = add(&dir, "alice");
    let stamp = || {
        let m = fs::metadata(&e.path).unwrap();
        (fs::read(&e.path).unwrap(), m.modified().unwrap())
    };
    let before = (stamp(), files(dir.path()));
    dir.key_parts().unwrap();
    e.open(&pw()).unwrap();
    let _ = e.open(&Password::new("wrong"));
    assert_eq!((stamp(), files(dir.path())), before);
}

/// What `openssl asn1parse` shows of a DER structure: (type, value) per primitive.
fn asn1_values(args: &[&str]) -> Vec<(String, String)> {
    let mut full = vec!["asn1parse"];
    full.extend_from_slice(args);
    openssl_ok(&full)
        .lines()
        .filter(|l| l.contains("prim:"))
        .map(|l| {
            let rest = l.split("prim:").nth(1).unwrap().trim();
            let (kind, value) = rest.split_once(':').unwrap_or((rest, ""));
            let kind = kind.replace("[HEX DUMP]", "");
            (kind.trim().to_owned(), value.trim().to_owned())
        })
        .collect()
}

#[test]
fn openssl_decrypts_a_part_file() {
    let (_t, dir) = files_dir();
    let part = KeyPart::random();
    let e = dir.write_key_part(&desc("alice"), &part, &pw()).unwrap();
    // OpenSSL finds the PEM block inside the part file and parses the PBES2 structure.
    let values = asn1_values(&["-in", s(&e.path)]);
    let of = |kind: &str| -> Vec<String> {
        values
            .iter()
            .filter(|(k, _)| k == kind)
            .map(|(_, v)| v.to_owned())
            .collect()
    };
    assert_eq!(
        of("OBJECT"),
        ["PBES2", "scrypt", "aes-256-cbc"],
        "{values:?}"
    );
    let octets = of("OCTET STRING");
    let (salt, iv, ciphertext) = (&octets[0], &octets[1], &octets[2]);
    let ints: Vec<u64> = of("INTEGER")
        .iter()
        .map(|i| u64::from_str_radix(i, 16).unwrap())
        .collect();
    // N, r, p as signature key files have them.
    assert_eq!(ints, [1 << 16, 3, 4]);

    // The key with `openssl kdf`, the plaintext with `openssl enc`.
    let key = openssl_ok(&[
        "kdf",
        "-keylen",
        "32",
        "-kdfopt",
        &format!("pass:{PW}"),
        "-kdfopt",
        &format!("hexsalt:{salt}"),
        "-kdfopt",
        "n:65536",
        "-kdfopt",
        "r:3",
        "-kdfopt",
        "p:4",
        "SCRYPT",
    ])
    .trim()
    .replace(':', "");
    let t = tempfile::tempdir().unwrap();
    let ct = t.path().join("ct.bin");
    let plain = t.path().join("plain.der");
    fs::write(&ct, decode_hex(ciphertext)).unwrap();
    openssl_ok(&[
        "enc",
        "-d",
        "-aes-256-cbc",
        "-K",
        &key,
        "-iv",
        iv,
        "-in",
        s(&ct),
        "-out",
        s(&plain),
    ]);
    // The plaintext is the documented KeyPartInfo: version, description, part.
    let inner = asn1_values(&["-inform", "DER", "-in", s(&plain)]);
    assert_eq!(
        inner,
        [
            ("INTEGER".to_owned(), "01".to_owned()),
            ("UTF8STRING".to_owned(), "alice".to_owned()),
            (
                "OCTET STRING".to_owned(),
                hex(part.expose_secret()).to_uppercase()
            ),
        ]
    );
}

fn decode_hex(h: &str) -> Vec<u8> {
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn the_vp_is_the_protocol_vp_of_the_value() {
    // docs/protocol.md §12 computed with OpenSSL: AES-256-CMAC of the two fixed blocks.
    let part = KeyPart::random();
    let t = tempfile::tempdir().unwrap();
    let mut vp = String::new();
    for (i, block) in [b"TKE-VP-v1-block\x01", b"TKE-VP-v1-block\x02"]
        .iter()
        .enumerate()
    {
        let b = t.path().join(format!("b{i}"));
        fs::write(&b, block).unwrap();
        let out = openssl_ok(&[
            "mac",
            "-cipher",
            "AES-256-CBC",
            "-macopt",
            &format!("hexkey:{}", hex(part.expose_secret())),
            "-in",
            s(&b),
            "CMAC",
        ]);
        vp.push_str(&out.trim().to_lowercase());
    }
    assert_eq!(Vp::from_hex(&vp).unwrap(), part.vp());
}
