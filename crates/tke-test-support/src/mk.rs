//! Master key register states for tests, reached through the protocol as a unit allows
//! them: a random value generated in a recovery unit's new register and copied, wrapped
//! unit to unit, into the new registers of other units (what a rotation does before it
//! commits), for the register commands' tests. (`tke cryptounit-mk-load` loads a new
//! register from master key parts; these tests need values no one holds.)

use tke_client::{Client, KnownUnit};
use tke_proto::{
    der::{asn1::OctetString, Decode},
    transport::{CertifiedImporter, ExportRequest, SignedEnvelope},
    Command, Register, Vp,
};
use tke_sigkey::Signer;

/// Generates a random master key in the new register of `source` (a recovery unit whose
/// current register is `Valid` and new register `Empty`) and copies it into the new
/// register of each of `targets` (new registers `Empty`, current values other than it):
/// every one of them then holds it `Full Uncommitted`. `signers` must be installed on
/// every unit and meet the source's signature threshold (the export). Returns its
/// verification pattern.
///
/// # Panics
/// When a unit refuses a step or answers with output that cannot be decoded.
pub fn load_new_register(
    client: &Client,
    source: &KnownUnit,
    targets: &[&KnownUnit],
    signers: &[&dyn Signer],
) -> Vp {
    let run = |u: &KnownUnit, c: &Command| {
        client
            .run(u, c, signers)
            .unwrap_or_else(|e| panic!("crypto unit {}: {:?}: {e}", u.num, c.id()))
    };
    let vp = Vp::from_slice(&run(source, &Command::GenerateRandomMk))
        .unwrap_or_else(|e| panic!("the generated value's verification pattern: {e}"));
    for t in targets {
        let importer = CertifiedImporter::from_der(&run(t, &Command::GenerateImporter))
            .unwrap_or_else(|e| panic!("crypto unit {}: importer key: {e}", t.num));
        let request = ExportRequest {
            register: Register::New,
            target_certificate: OctetString::new(t.certificate.der().to_vec())
                .unwrap_or_else(|e| panic!("crypto unit {}: certificate: {e}", t.num)),
            importer,
            target_instance: None,
        };
        let envelope =
            SignedEnvelope::from_der(&run(source, &Command::ExportMk(Box::new(request))))
                .unwrap_or_else(|e| panic!("crypto unit {}: envelope: {e}", source.num));
        run(t, &Command::ImportMk(Box::new(envelope)));
    }
    vp
}
