//! The signer conformance suite: the tests every [`Signer`] must pass, whatever holds its
//! key (file, PKCS#11 token, YubiKey). Each provider crate runs it from its own tests:
//!
//! ```toml
//! [dev-dependencies]
//! tke-sigkey = { workspace = true, features = ["conformance"] }
//! ```
//!
//! ```text
//! #[test]
//! fn conformance() {
//!     let (a, b) = (open_first_signer(), open_second_signer());
//!     tke_sigkey::conformance::run_all(&a, &b);
//! }
//! ```
//!
//! Each function panics with a message naming the signer and the broken property, as a
//! test assertion does. Enabled by the `conformance` feature; never use it outside tests.

use tke_proto::{
    der::Encode,
    p256::ecdsa::{signature::Verifier, DerSignature},
    AdminCertificate, Command, SignedCommand, Ski, UnitId,
};

use crate::{check_usable, sign_command, SignError, Signer};

fn who(s: &dyn Signer) -> String {
    format!(
        "{} signer {} ({})",
        s.kind().label(),
        s.name(),
        s.ski().short()
    )
}

/// The certificate parses as an administrator certificate, and the signer's name and SKI
/// are the certificate's; the SKI is SHA-256 of the certificate's public key.
pub fn certificate_matches(signer: &dyn Signer) {
    let cert = signer.certificate();
    let reparsed = AdminCertificate::from_der(cert.der())
        .unwrap_or_else(|e| panic!("{}: its certificate does not parse: {e}", who(signer)));
    assert_eq!(
        &reparsed,
        cert,
        "{}: the certificate changes when re-parsed",
        who(signer)
    );
    assert_eq!(
        reparsed.name(),
        signer.name(),
        "{}: name differs from the certificate's",
        who(signer)
    );
    assert_eq!(
        reparsed.ski(),
        signer.ski(),
        "{}: SKI differs from the certificate's",
        who(signer)
    );
    assert_eq!(
        Ski::of_public_key(reparsed.public_key()),
        signer.ski(),
        "{}: the SKI is not SHA-256 of the certificate's public key",
        who(signer)
    );
    assert!(!signer.kind().label().is_empty());
}

/// [`check_usable`] accepts the signer.
pub fn usable(signer: &dyn Signer) {
    if let Err(e) = check_usable(signer) {
        panic!("{}: check_usable failed: {e}", who(signer));
    }
}

/// Signatures over several messages (empty, short, binary, 64 KiB) verify with the
/// certificate's key, and fail for a modified message.
pub fn signatures_verify(signer: &dyn Signer) {
    let key = signer.certificate().verifying_key();
    let long: Vec<u8> = (0..65_536u32).map(|i| (i % 251) as u8).collect();
    let messages: [&[u8]; 4] = [b"", b"TKE", &[0x00, 0xff, 0x30, 0x82, 0x01, 0x00], &long];
    for msg in messages {
        let sig: DerSignature = signer.sign(msg).unwrap_or_else(|e| {
            panic!(
                "{}: cannot sign a {}-byte message: {e}",
                who(signer),
                msg.len()
            )
        });
        assert!(
            key.verify(msg, &sig).is_ok(),
            "{}: the signature over a {}-byte message does not verify",
            who(signer),
            msg.len()
        );
        let mut modified = msg.to_vec();
        match modified.last_mut() {
            Some(b) => *b ^= 0x01,
            None => modified.push(0),
        }
        assert!(
            key.verify(&modified, &sig).is_err(),
            "{}: a signature verifies over a modified {}-byte message",
            who(signer),
            msg.len()
        );
    }
}

/// [`sign_command`] with two distinct signers gives two signer infos, in order, with
/// their SKIs, each verifying over the exact command bytes.
pub fn sign_command_with_two(a: &dyn Signer, b: &dyn Signer) {
    assert_ne!(
        a.ski(),
        b.ski(),
        "the suite needs two distinct signers; {} was given twice",
        who(a)
    );
    let cmd = Command::Zeroize
        .to_wire(UnitId::random(), 42)
        .unwrap_or_else(|e| panic!("cannot build a test command: {e}"));
    let signed: SignedCommand = sign_command(&cmd, &[a, b])
        .unwrap_or_else(|e| panic!("sign_command with {} and {} failed: {e}", who(a), who(b)));
    let bytes = cmd
        .to_der()
        .unwrap_or_else(|e| panic!("cannot encode the test command: {e}"));
    assert_eq!(
        signed.command.as_bytes(),
        bytes.as_slice(),
        "the signed command is not the command's DER"
    );
    assert_eq!(
        signed.signer_infos.len(),
        2,
        "two signers must give two signer infos"
    );
    for (info, s) in signed.signer_infos.iter().zip([a, b]) {
        assert_eq!(
            info.ski,
            s.ski(),
            "{}: its signer info carries another SKI",
            who(s)
        );
        let sig = DerSignature::from_bytes(info.signature.as_bytes())
            .unwrap_or_else(|e| panic!("{}: its signature is not DER ECDSA: {e}", who(s)));
        assert!(
            s.certificate().verifying_key().verify(&bytes, &sig).is_ok(),
            "{}: its signature over the command does not verify",
            who(s)
        );
    }
}

/// Giving the same signer twice to [`sign_command`] is [`SignError::Duplicate`] naming it.
pub fn duplicate_refused(signer: &dyn Signer) {
    let cmd = Command::Zeroize
        .to_wire(UnitId::random(), 1)
        .unwrap_or_else(|e| panic!("cannot build a test command: {e}"));
    match sign_command(&cmd, &[signer, signer]) {
        Err(SignError::Duplicate { name, ski }) => {
            assert_eq!(
                &name,
                signer.name(),
                "{}: the duplicate error names another administrator",
                who(signer)
            );
            assert_eq!(
                ski,
                signer.ski(),
                "{}: the duplicate error names another SKI",
                who(signer)
            );
        }
        Err(e) => panic!(
            "{}: given twice, sign_command failed with {e} instead of Duplicate",
            who(signer)
        ),
        Ok(_) => panic!("{}: given twice, sign_command signed", who(signer)),
    }
}

/// Runs every check: the single-signer checks on `a` and `b`, then the two-signer ones.
/// `a` and `b` must hold distinct keys.
pub fn run_all(a: &dyn Signer, b: &dyn Signer) {
    for s in [a, b] {
        certificate_matches(s);
        usable(s);
        signatures_verify(s);
        duplicate_refused(s);
    }
    sign_command_with_two(a, b);
    sign_command_with_two(b, a);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SignerKind;
    use tke_proto::{
        p256::{
            ecdsa::{signature::Signer as _, Signature, SigningKey},
            PublicKey,
        },
        AdminName,
    };

    /// A signer in memory; `cert_key` may differ from `key` to make a broken signer.
    struct Mem {
        key: SigningKey,
        cert: AdminCertificate,
        claimed_ski: Option<Ski>,
    }

    impl Mem {
        fn new(name: &str) -> Self {
            let key = SigningKey::random(&mut rand_core::OsRng);
            Self::with_cert_key(name, key.clone(), key)
        }

        fn with_cert_key(name: &str, key: SigningKey, cert_key: SigningKey) -> Self {
            let public = PublicKey::from(cert_key.verifying_key());
            let cert = AdminCertificate::build(
                &AdminName::new(name).unwrap(),
                &public,
                Box::new(move |m| {
                    let s: Signature = cert_key.try_sign(m)?;
                    Ok(s.to_der())
                }),
            )
            .unwrap();
            Self {
                key,
                cert,
                claimed_ski: None,
            }
        }
    }

    impl Signer for Mem {
        fn certificate(&self) -> &AdminCertificate {
            &self.cert
        }
        fn kind(&self) -> SignerKind {
            SignerKind::File
        }
        fn sign(&self, message: &[u8]) -> Result<DerSignature, SignError> {
            let s: Signature = self.key.sign(message);
            Ok(s.to_der())
        }
        fn ski(&self) -> Ski {
            self.claimed_ski.unwrap_or_else(|| self.cert.ski())
        }
    }

    #[test]
    fn a_sound_signer_passes() {
        run_all(&Mem::new("alice"), &Mem::new("bob"));
    }

    #[test]
    #[should_panic(expected = "check_usable failed")]
    fn a_key_that_is_not_the_certificates_fails_usable() {
        let other = SigningKey::random(&mut rand_core::OsRng);
        usable(&Mem::with_cert_key(
            "alice",
            SigningKey::random(&mut rand_core::OsRng),
            other,
        ));
    }

    #[test]
    #[should_panic(expected = "does not verify")]
    fn a_key_that_is_not_the_certificates_fails_signatures() {
        let other = SigningKey::random(&mut rand_core::OsRng);
        signatures_verify(&Mem::with_cert_key(
            "alice",
            SigningKey::random(&mut rand_core::OsRng),
            other,
        ));
    }

    #[test]
    #[should_panic(expected = "SKI differs")]
    fn a_wrong_ski_fails_certificate_matches() {
        let mut s = Mem::new("alice");
        s.claimed_ski = Some(Ski([9; 32]));
        certificate_matches(&s);
    }

    #[test]
    #[should_panic(expected = "two distinct signers")]
    fn the_two_signer_check_needs_two_keys() {
        let a = Mem::new("alice");
        sign_command_with_two(&a, &a);
    }
}
