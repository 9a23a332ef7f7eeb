//! What the multi-round ceremonies that move a master key between units share (auto-init,
//! rotation, recovery): the units' certificates from the parameters, the importer keys
//! and envelopes the units answered, checked offline, and the commands of a round.

use tke_proto::{
    command::MAX_EXPORT_TARGETS,
    der::{asn1::OctetString, Decode},
    transport::{CertifiedImporter, ExportRequest, ImporterKey, SignedEnvelope},
    CaCertificate, Command, CommandId, DeviceCertificate, Register, UnitId, Vp,
};

use super::{counter_after, FileError, Round, UnitCommand};

/// A parameter of ceremony `kind` that is wrong.
pub(super) fn bad(kind: &'static str, what: impl Into<String>) -> FileError {
    FileError::Params {
        kind,
        what: what.into(),
    }
}

/// A recorded answer of round `round` (1-based) of unit `num` that is wrong.
pub(super) fn answer_error(round: usize, num: usize, what: impl Into<String>) -> FileError {
    FileError::Answer {
        round,
        num,
        what: what.into(),
    }
}

/// The bytes of a hexadecimal parameter.
pub(super) fn unhex(kind: &'static str, field: &str, text: &str) -> Result<Vec<u8>, FileError> {
    hex::decode(text).map_err(|_| bad(kind, format!("{field} is not hexadecimal")))
}

/// The device certificate of unit `num` from the parameters (hex of the DER): it chains
/// to `ca`, belongs to service instance `instance` (a UUID) and is not in `listed`.
pub(super) fn unit_certificate(
    kind: &'static str,
    ca: &CaCertificate,
    instance: &str,
    num: usize,
    certificate: &str,
    listed: &[UnitId],
) -> Result<DeviceCertificate, FileError> {
    let cert = DeviceCertificate::verify(&unhex(kind, "a unit certificate", certificate)?, ca)
        .map_err(|e| {
            bad(
                kind,
                format!("the certificate of crypto unit {num} does not chain to fleet_ca: {e}"),
            )
        })?;
    if cert.instance_id().uuid() != instance {
        return Err(bad(
            kind,
            format!(
                "crypto unit {num} belongs to service instance {}, not {instance}",
                cert.instance_id().uuid()
            ),
        ));
    }
    if listed.contains(&cert.unit_id()) {
        return Err(bad(kind, format!("crypto unit {num} is listed twice")));
    }
    Ok(cert)
}

/// The certified importer key unit `num` (`cert`) answered in round 1, checked: made by
/// that unit's device key; with the key it certifies.
pub(super) fn importer(
    first: &Round,
    num: usize,
    cert: &DeviceCertificate,
) -> Result<(CertifiedImporter, ImporterKey), FileError> {
    let answer = first
        .answer(cert.unit_id(), CommandId::GenerateImporter, 0)
        .ok_or_else(|| answer_error(1, num, "the importer key is missing"))?;
    let importer = CertifiedImporter::from_der(answer)
        .map_err(|e| answer_error(1, num, format!("not an importer key: {e}")))?;
    let key = importer.verify(cert).map_err(|e| {
        answer_error(
            1,
            num,
            format!("the importer key is not certified by the unit's device key: {e}"),
        )
    })?;
    Ok((importer, key))
}

/// The `exportMkBatch` commands (16 targets each) that export `register` to each target
/// (its certificate and importer key), in order.
pub(super) fn exports<'a>(
    kind: &'static str,
    register: Register,
    targets: impl Iterator<Item = (&'a DeviceCertificate, CertifiedImporter)>,
) -> Result<Vec<Command>, FileError> {
    let requests = targets
        .map(|(cert, importer)| {
            Ok(ExportRequest {
                register,
                target_certificate: OctetString::new(cert.der().to_vec())
                    .map_err(|e| bad(kind, e.to_string()))?,
                importer,
                target_instance: None,
            })
        })
        .collect::<Result<Vec<_>, FileError>>()?;
    Ok(requests
        .chunks(MAX_EXPORT_TARGETS)
        .map(|b| Command::ExportMkBatch(b.to_vec()))
        .collect())
}

/// The envelopes the source (`num`, `id`) answered in round 2, one per target (`(num,
/// id)`, in the order exported), each checked: signed by the source under `ca`, for that
/// target, holding the key of verification pattern `vp`.
pub(super) fn envelopes(
    second: &Round,
    ca: &CaCertificate,
    (num, id): (usize, UnitId),
    targets: &[(usize, UnitId)],
    vp: Vp,
) -> Result<Vec<SignedEnvelope>, FileError> {
    let mut all = Vec::new();
    for (i, c) in second.commands.iter().enumerate() {
        let answer = c
            .answer
            .as_deref()
            .ok_or_else(|| answer_error(2, num, "the envelopes are missing"))?;
        let batch = Vec::<SignedEnvelope>::from_der(answer)
            .map_err(|e| answer_error(2, num, format!("not envelopes: {e}")))?;
        let expected = targets
            .iter()
            .skip(i * MAX_EXPORT_TARGETS)
            .take(MAX_EXPORT_TARGETS)
            .count();
        if batch.len() != expected {
            return Err(answer_error(
                2,
                num,
                format!("{} envelopes for {expected} crypto units", batch.len()),
            ));
        }
        all.extend(batch);
    }
    if all.len() != targets.len() {
        return Err(answer_error(
            2,
            num,
            format!("{} envelopes for {} crypto units", all.len(), targets.len()),
        ));
    }
    for (e, (to, to_id)) in all.iter().zip(targets) {
        let (env, source) = e
            .verify(ca)
            .map_err(|e| answer_error(2, num, format!("an envelope does not verify: {e}")))?;
        if source.unit_id() != id || env.target_unit_id != *to_id || env.vp != vp {
            return Err(answer_error(
                2,
                num,
                format!(
                    "the envelope for crypto unit {to} is not from the recovery unit to it with the exported key"
                ),
            ));
        }
    }
    Ok(all)
}

/// Unit `num` (`id`, at counter `start` when planned) runs `commands` in this round, each
/// at the next counter after the rounds `before`.
pub(super) fn push_all(
    kind: &'static str,
    out: &mut Vec<UnitCommand>,
    (num, id, start): (usize, UnitId, u64),
    before: &[Round],
    commands: Vec<Command>,
) -> Result<(), FileError> {
    let mut counter = counter_after(start, id, before);
    for command in commands {
        out.push(UnitCommand::build(num, id, counter, command).map_err(|e| {
            bad(
                kind,
                format!("crypto unit {num}: a command cannot be encoded: {e}"),
            )
        })?);
        counter = counter.wrapping_add(1);
    }
    Ok(())
}
