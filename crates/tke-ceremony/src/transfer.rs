//! Moving a master key between units, as `auto-init` and `auto-recover` do: the target's
//! certified importer key becomes an export request, and the recovery unit seals its key
//! to up to 16 targets per quorum-signed `exportMkBatch`, answering once however many
//! units wait.

use tke_client::{Client, KnownUnit};
use tke_proto::{
    command::MAX_EXPORT_TARGETS,
    der::{asn1::OctetString, Decode},
    transport::{CertifiedImporter, ExportRequest, SignedEnvelope},
    Command, Register,
};
use tke_sigkey::Signer;

use crate::{
    on_all,
    postcondition::{interference, Counters},
    CeremonyError,
};

/// The request to export `register` to `unit`, whose answer to `generateImporter` is
/// `importer` (`step` names the step in errors).
pub(crate) fn export_request(
    step: &'static str,
    unit: &KnownUnit,
    importer: &[u8],
    register: Register,
) -> Result<ExportRequest, CeremonyError> {
    let unusable = |source: tke_proto::ProtoError| CeremonyError::Output {
        step,
        num: unit.num,
        source,
    };
    Ok(ExportRequest {
        register,
        target_certificate: OctetString::new(unit.certificate.der().to_vec())
            .map_err(|e| unusable(e.into()))?,
        importer: CertifiedImporter::from_der(importer).map_err(|e| unusable(e.into()))?,
        target_instance: None,
    })
}

/// Exports from `source` to every request, one `exportMkBatch` signed by `quorum` per 16
/// targets, at the counters the ceremony accounts for; one envelope per request, in order.
pub(crate) fn export_batches(
    step: &'static str,
    client: &Client,
    counters: &Counters,
    source: &KnownUnit,
    requests: &[ExportRequest],
    quorum: &[&dyn Signer],
) -> Result<Vec<SignedEnvelope>, CeremonyError> {
    let mut envelopes = Vec::with_capacity(requests.len());
    for batch in requests.chunks(MAX_EXPORT_TARGETS) {
        let out = on_all(step, &[source], |u| {
            counters.run(client, u, &Command::ExportMkBatch(batch.to_vec()), quorum)
        })
        .map_err(|e| interference(client, e, |_| None))?;
        let batch_out = out
            .first()
            .map(|der| Vec::<SignedEnvelope>::from_der(der))
            .transpose()
            .map_err(|e| CeremonyError::Output {
                step,
                num: source.num,
                source: e.into(),
            })?
            .filter(|e| e.len() == batch.len())
            .ok_or(CeremonyError::Verification {
                num: source.num,
                what: "the export did not return one envelope per target",
            })?;
        envelopes.extend(batch_out);
    }
    Ok(envelopes)
}
