//! Copying a master key from a recovery unit into other units of its instance, as
//! `auto-init` and `auto-mk-rotate` do: each target makes an importer key (in the same
//! parallel step as the recovery unit's generation), one quorum-signed `exportMkBatch`
//! per 16 targets seals the key to all of them, and every target imports it, in parallel.

use std::sync::atomic::{AtomicUsize, Ordering};

use tke_client::{fanout::parallel, Client, ClientError, KnownUnit};
use tke_proto::{
    command::MAX_EXPORT_TARGETS,
    der::{asn1::OctetString, Decode},
    transport::{CertifiedImporter, ExportRequest, SignedEnvelope},
    Command, Register, Vp,
};
use tke_sigkey::Signer;

use crate::{
    on_all,
    postcondition::{interference, Counters},
    CeremonyError, Event, Progress,
};

/// The generation step's name in errors (the vendor's progress line).
pub(crate) const STEP_GENERATE: &str = "Generating a random master key value";
/// The transfer step's name in errors.
pub(crate) const STEP_TRANSFER: &str = "Transferring the master key value";

/// The units a key is copied to, each with the export request of its importer key.
pub(crate) type Targets<'c> = Vec<(&'c KnownUnit, ExportRequest)>;

/// Reads the answers of the step in which `source` generated a key (`generateRandomMk`,
/// answering its VP) and every other unit of `units` made an importer key: the VP, if
/// `source` was among them, and an export request of `register` for each other unit.
pub(crate) fn read_generated<'c>(
    source: &KnownUnit,
    register: Register,
    units: &[&'c KnownUnit],
    answers: &[Vec<u8>],
) -> Result<(Option<Vp>, Targets<'c>), CeremonyError> {
    let mut vp = None;
    let mut targets = Vec::with_capacity(units.len());
    for (u, der) in units.iter().zip(answers) {
        let unusable = |source: tke_proto::ProtoError| CeremonyError::Output {
            step: STEP_GENERATE,
            num: u.num,
            source,
        };
        if u.id() == source.id() {
            vp = Some(Vp::from_slice(der).map_err(unusable)?);
        } else {
            let request = ExportRequest {
                register,
                target_certificate: OctetString::new(u.certificate.der().to_vec())
                    .map_err(|e| unusable(e.into()))?,
                importer: CertifiedImporter::from_der(der).map_err(|e| unusable(e.into()))?,
            };
            targets.push((*u, request));
        }
    }
    Ok((vp, targets))
}

/// Seals the key to every target's importer key with one quorum-signed export per batch
/// of 16 targets (the recovery unit answers once however many units wait for the key),
/// then, on every target in parallel, imports it (one signature), runs `then` and
/// reports [`Event::TransferringMasterKey`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn copy(
    client: &Client,
    counters: &Counters,
    source: &KnownUnit,
    targets: Targets<'_>,
    quorum: &[&dyn Signer],
    one: &[&dyn Signer],
    progress: &dyn Progress,
    then: impl Fn(&KnownUnit) -> Result<(), ClientError> + Sync,
) -> Result<(), CeremonyError> {
    let (units, requests): (Vec<&KnownUnit>, Vec<ExportRequest>) = targets.into_iter().unzip();
    let mut envelopes = Vec::with_capacity(units.len());
    for batch in requests.chunks(MAX_EXPORT_TARGETS) {
        let out = on_all(STEP_TRANSFER, &[source], |u| {
            counters.run(client, u, &Command::ExportMkBatch(batch.to_vec()), quorum)
        })
        .map_err(|e| interference(client, e, |_| None))?;
        let batch_out = out
            .first()
            .map(|der| Vec::<SignedEnvelope>::from_der(der))
            .transpose()
            .map_err(|e| CeremonyError::Output {
                step: STEP_TRANSFER,
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

    let done = AtomicUsize::new(0);
    let total = units.len();
    let jobs: Vec<(&KnownUnit, SignedEnvelope)> = units.into_iter().zip(envelopes).collect();
    let mut failures = Vec::new();
    for ((u, _), res) in jobs.iter().zip(parallel(&jobs, |(u, envelope)| {
        counters.run(
            client,
            u,
            &Command::ImportMk(Box::new(envelope.clone())),
            one,
        )?;
        then(u)?;
        let index = done.fetch_add(1, Ordering::SeqCst) + 1;
        progress.event(&Event::TransferringMasterKey { index, total });
        Ok::<(), ClientError>(())
    })) {
        if let Err(e) = res {
            failures.push((u.num, e));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        let failed = CeremonyError::Step {
            step: STEP_TRANSFER,
            failures,
        };
        Err(interference(client, failed, |_| None))
    }
}
