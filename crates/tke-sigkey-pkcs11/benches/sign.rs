//! Signatures per second: an administrator key on a SoftHSM2 token, through the real
//! module, against the same work with a key file.
//!
//! Target: at least 1,000 signatures per second through SoftHSM2.
//!
//! `cargo bench -p tke-sigkey-pkcs11 -- --warm-up-time 1 --measurement-time 3`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{path::Path, process::Command};

use criterion::{Criterion, Throughput};
use tke_keyfile::{FilesDir, Password};
use tke_proto::AdminName;
use tke_sigkey::Signer;
use tke_sigkey_file::FileSigner;
use tke_sigkey_pkcs11::{Pin, Pkcs11Signer, Pkcs11Uri};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

fn sign(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let tokens = tmp.path().join("tokens");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../softhsm-config/make-tokens.sh");
    let made = Command::new("bash")
        .arg(&script)
        .arg(&tokens)
        .arg("bench")
        .output()
        .unwrap();
    assert!(
        made.status.success() && Path::new(MODULE).exists(),
        "SoftHSM2 is needed (install it with ci/setup.sh): {}",
        String::from_utf8_lossy(&made.stderr)
    );
    // Set while this process is single-threaded and before the module is first loaded.
    std::env::set_var("SOFTHSM2_CONF", tokens.join("softhsm2.conf"));

    let uri = Pkcs11Uri::parse(&format!(
        "pkcs11:token=bench;object=bencher?module-path={MODULE}"
    ))
    .unwrap();
    let pin = Pin::from_file(&tokens.join("bench.pin")).unwrap();
    let admin = AdminName::new("bencher").unwrap();
    let token = Pkcs11Signer::generate(&uri, &admin, &pin).unwrap();

    let dir = FilesDir::resolve(Some(&tmp.path().join("files"))).unwrap();
    let file = FileSigner::generate(&dir, &admin, &Password::new("bench-password")).unwrap();

    // About the size of a signed TKE command.
    let message = vec![0x5a_u8; 256];
    let mut group = c.benchmark_group("sign");
    group.throughput(Throughput::Elements(1));
    group.bench_function("pkcs11-softhsm2", |b| {
        b.iter(|| token.sign(&message).unwrap())
    });
    group.bench_function("file", |b| b.iter(|| file.sign(&message).unwrap()));
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    sign(&mut c);
    c.final_summary();
}
