//! What opening one signature key file costs (the scrypt KDF, then AES-CBC and the key
//! checks) for the scrypt costs a file may carry:
//!
//! - `open/2^14_r8_p1`: files written before (`ScryptCost::V1`, OpenSSL's default).
//! - `open/2^16_r3_p4`: files written now (`ScryptCost::NEW`).
//! - `open/2^16_r8_p1`, `open/2^17_r8_p1`: the costs that OpenSSL 3.0 cannot open (more
//!   than its 32 MiB), for comparison.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion};
use tke_proto::{
    p256::{
        ecdsa::{signature::Signer as _, Signature, SigningKey},
        SecretKey,
    },
    AdminCertificate, AdminName,
};
use tke_workstation::{FilesDir, Password, ScryptCost};

fn bench(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let files = FilesDir::resolve(Some(tmp.path())).unwrap();
    let password = Password::new("correct horse battery staple");
    let costs = [
        ScryptCost::V1,
        ScryptCost::NEW,
        ScryptCost {
            log_n: 16,
            r: 8,
            p: 1,
        },
        ScryptCost {
            log_n: 17,
            r: 8,
            p: 1,
        },
    ];
    let mut g = c.benchmark_group("open");
    g.sample_size(10);
    for (i, cost) in costs.into_iter().enumerate() {
        let name = AdminName::new(&format!("admin{i}")).unwrap();
        let secret = SecretKey::random(&mut rand_core::OsRng);
        let key = SigningKey::from(&secret);
        let cert = AdminCertificate::build(
            &name,
            &secret.public_key(),
            Box::new(move |tbs| {
                let sig: Signature = key.try_sign(tbs)?;
                Ok(sig.to_der())
            }),
        )
        .unwrap();
        let entry = files
            .write_signature_key_with_cost(&name, &secret, &cert, &password, cost)
            .unwrap();
        let id = format!("2^{}_r{}_p{}", cost.log_n, cost.r, cost.p);
        g.bench_function(id, |b| b.iter(|| entry.decrypt(&password).unwrap()));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
