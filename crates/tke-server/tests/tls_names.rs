//! What `tke-unitd` certifies: the TLS server certificate names loopback addresses only
//! when `--tls-name` asks for them (so one server of a fleet cannot pass for another to a
//! client that connects through a loopback address), and each device certificate states
//! its unit's type and service instance as the server's configuration has them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(unused_imports)] // The shared helpers re-export more than this file uses.
mod common;

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
};

use common::*;
use tke_client::Transport as _;
use tke_proto::{der::Decode as _, UnitType};
use tke_test_support::cli::snap::assert_run;
use x509_cert::{
    ext::pkix::{name::GeneralName, SubjectAltName},
    Certificate,
};

/// One operational unit, and a TLS certificate that names `unitd.example` only.
const NAMED: &[&str] = &[
    "--operational",
    "1",
    "--recovery",
    "0",
    "--tls-name",
    "unitd.example",
];

/// The subjectAltName entries of the server's TLS certificate, as text.
fn tls_names_of(dir: &Path) -> Vec<String> {
    let pem = fs::read_to_string(dir.join("tls/server.pem")).unwrap();
    let (_, der) = tke_proto::der::pem::decode_vec(pem.as_bytes()).unwrap();
    let cert = Certificate::from_der(&der).unwrap();
    let san = cert
        .tbs_certificate
        .extensions
        .unwrap()
        .into_iter()
        .find(|e| e.extn_id.to_string() == "2.5.29.17")
        .unwrap();
    SubjectAltName::from_der(san.extn_value.as_bytes())
        .unwrap()
        .0
        .into_iter()
        .map(|n| match n {
            GeneralName::DnsName(d) => format!("DNS:{}", d.as_str()),
            GeneralName::IpAddress(ip) => format!("IP:{}", hex::encode(ip.as_bytes())),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn loopback_names_only_when_asked_for() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    // The fixture asks for 127.0.0.1 (what the tests connect to), and gets only that.
    let asked = root.join("asked");
    init(
        &asked,
        free_port(),
        &["--operational", "1", "--recovery", "0"],
    );
    assert_eq!(tls_names_of(&asked), ["IP:7f000001"]);
    // A server listening on loopback and named otherwise: no loopback name at all.
    let named = root.join("named");
    init(&named, free_port(), NAMED);
    assert_eq!(tls_names_of(&named), ["DNS:unitd.example"]);
    // Nothing to name: refused, and nothing made.
    let pass = ca_passphrase_file(root);
    let o = Command::new(UNITD)
        .args([
            "init",
            "--dir",
            "none",
            "--listen",
            "127.0.0.1:8443",
            "--ca-passphrase-file",
            pass.to_str().unwrap(),
        ])
        .current_dir(root)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_run("init_without_a_tls_name", &o, 1, &[(root, "[ROOT]")]);
    assert!(!root.join("none").exists());
}

/// A client that connects to 127.0.0.1 refuses a server whose certificate does not name
/// it, though the certificate comes from the very fleet CA the client pins; the same
/// client lists the units of a server that names it.
#[test]
fn a_certificate_without_the_loopback_names_is_refused_at_127_0_0_1() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let mut named = Server::init(root, "named", NAMED);
    named.start();
    let ca = ca_of(&named.dir);
    let url = format!("https://127.0.0.1:{}", named.port);
    let e = transport(&url, &ca, &named.dir.join("api-key"))
        .list_units()
        .expect_err("the server's certificate does not name 127.0.0.1");
    let chain = tke_proto::ErrorChain(&e).to_string();
    assert!(
        chain.contains("NotValidForName") || chain.contains("not valid for"),
        "{chain}"
    );
    let mut asked = Server::init(root, "asked", &["--operational", "1", "--recovery", "0"]);
    asked.start();
    let units = transport(&asked.url(), &ca_of(&asked.dir), &asked.dir.join("api-key"))
        .list_units()
        .unwrap();
    assert_eq!(units.len(), 1);
}

/// Each unit `init` makes has a device certificate that states its type and the instance
/// the server's `instance-id` file names.
#[test]
fn device_certificates_state_type_and_instance() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("srv");
    init(
        &dir,
        free_port(),
        &[
            "--instances",
            "2",
            "--operational",
            "1",
            "--recovery",
            "1",
            "--failover",
            "1",
        ],
    );
    let ca = ca_of(&dir);
    let instances: Vec<String> = fs::read_to_string(dir.join("instance-id"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(instances.len(), 2);
    let mut seen = Vec::new();
    for entry in fs::read_dir(dir.join("units")).unwrap() {
        let unit = tke_unit::Unit::open(&entry.unwrap().path()).unwrap();
        let cert =
            tke_proto::DeviceCertificate::verify(unit.device_certificate().der(), &ca).unwrap();
        assert_eq!(cert.unit_type(), unit.unit_type());
        assert!(instances.contains(&cert.instance_id().uuid()));
        seen.push((cert.instance_id().uuid(), cert.unit_type()));
    }
    seen.sort();
    let mut expected: Vec<(String, UnitType)> = instances
        .iter()
        .flat_map(|i| {
            [
                UnitType::Operational,
                UnitType::Recovery,
                UnitType::Failover,
            ]
            .map(|t| (i.clone(), t))
        })
        .collect();
    expected.sort();
    assert_eq!(seen, expected);
}
