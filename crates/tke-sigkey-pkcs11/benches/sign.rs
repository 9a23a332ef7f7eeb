//! Signatures per second: an administrator key on a SoftHSM2 token, through the real
//! module, against the same work with a key file.
//!
//! Target: at least 1,000 signatures per second through SoftHSM2.
//!
//! `cargo bench -p tke-sigkey-pkcs11 -- --warm-up-time 1 --measurement-time 3`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, Throughput};
use tke_proto::AdminName;
use tke_sigkey::Signer;
use tke_sigkey_file::FileSigner;
use tke_sigkey_pkcs11::{Pin, Pkcs11Signer, Pkcs11Uri};
use tke_test_support::Tokens;
use tke_workstation::{FilesDir, Password};

fn sign(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let tokens = Tokens::make(&tmp.path().join("tokens"), &["bench"]);
    // Set while this process is single-threaded and before the module is first loaded.
    tokens.set_conf_for_this_process();

    let uri = Pkcs11Uri::parse(&tokens.uri("bench", "bencher")).unwrap();
    let pin = Pin::from_file(&tokens.pin_path("bench")).unwrap();
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
