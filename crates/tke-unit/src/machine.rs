//! Request execution: decoding, authorization, the register state machine, responses.

use std::collections::BTreeSet;

use der::{
    asn1::{IntRef, OctetString},
    Decode, Encode, Sequence,
};
use tke_proto::{
    p256::ecdsa::DerSignature,
    parts::{MkPartsRequest, SealedPart},
    transport::{CertifiedImporter, ExportRequest, ImporterKey, MkEnvelope, SignedEnvelope},
    AdminCertificate, AdminCommand, AuditQuery, AuditRecord, Command, CommandId, DeviceCertificate,
    Digest32, GeneratedKeys, InstanceId, ModuleError, ProtoError, Query, Register, Request,
    ResponseBody, ServiceOp, ServiceRequest, SignedCommand, SignedResponse, SignerInfo, Ski,
    Threshold, TransportError, UnitType, Vp,
};

use crate::{
    answer::{Answer, InternalError},
    audit::PageError,
    backend::BackendError,
    state::{CurrentRegister, NewRegister, Slot, State, MAX_ADMINS},
    Unit, AUDIT_FILE,
};

/// More signer infos than this are refused (33) before any signature is verified: a
/// unit has at most 8 administrators.
pub(crate) const MAX_SIGNER_INFOS: usize = 16;

type Outcome = Result<Vec<u8>, ModuleError>;

const SIG_THRESHOLD_ZERO: ModuleError = ModuleError::new(209, 76);
const REV_THRESHOLD_ZERO: ModuleError = ModuleError::new(209, 77);

fn boxed(e: BackendError) -> tke_proto::BoxError {
    Box::new(e)
}

/// Wrapped keys as OCTET STRINGs.
fn octets(keys: Vec<Vec<u8>>) -> Result<Vec<OctetString>, ProtoError> {
    Ok(keys
        .into_iter()
        .map(OctetString::new)
        .collect::<der::Result<_>>()?)
}

/// Decodes the typed command, mapping each decoding failure to its module error.
fn decode_command(id: CommandId, input: &[u8]) -> Result<Command, ModuleError> {
    Command::from_wire(id, input).map_err(|e| match e {
        ProtoError::UnexpectedInput { .. } => ModuleError::UNEXPECTED_ARGUMENTS,
        _ if id == CommandId::SetThresholds => threshold_error(input),
        _ => ModuleError::INVALID_DATA,
    })
}

/// `ThresholdsInput` with integers of any size: the typed decoder refuses values above
/// 255 as undecodable, yet they are out of range just as 9 is.
#[derive(Sequence)]
struct AnyThresholds<'a> {
    signature: IntRef<'a>,
    revocation: IntRef<'a>,
}

/// How a threshold compares with the range 1..=8.
#[derive(PartialEq)]
enum Range {
    Zero,
    In,
    Above,
    Negative,
}

fn range(n: &IntRef<'_>) -> Range {
    // DER integers are minimal two's complement, big endian.
    match n.as_bytes() {
        [0] => Range::Zero,
        [b, ..] if b & 0x80 != 0 => Range::Negative,
        [1..=8] => Range::In,
        _ => Range::Above,
    }
}

/// The module error for a `setThresholds` input the typed decoder refused: 0 is 76/77,
/// above 8 (whatever the size) is 57/58, anything else (negative, not DER) invalid data.
fn threshold_error(input: &[u8]) -> ModuleError {
    let Ok(t) = AnyThresholds::from_der(input) else {
        return ModuleError::INVALID_DATA;
    };
    match (range(&t.signature), range(&t.revocation)) {
        (Range::Negative, _) | (_, Range::Negative) => ModuleError::INVALID_DATA,
        (Range::Zero, _) => SIG_THRESHOLD_ZERO,
        (_, Range::Zero) => REV_THRESHOLD_ZERO,
        (Range::Above, _) => ModuleError::SIG_THRESHOLD_ABOVE_ADMINS,
        (_, Range::Above) => ModuleError::REV_THRESHOLD_ABOVE_ADMINS,
        (Range::In, Range::In) => ModuleError::INVALID_DATA,
    }
}

impl Unit {
    pub(crate) fn answer_request(&mut self, request_der: &[u8]) -> Answer {
        self.internal_errors.clear();
        let request_hash = Digest32::sha256(request_der);
        let outcome = match Request::from_der(request_der) {
            Err(_) => Err(ModuleError::INVALID_DATA),
            Ok(Request::Query(q)) => self.query(&q),
            Ok(Request::Command(c)) => self.command(&c),
            Ok(Request::Service(s)) => self.service(&s),
            Ok(Request::Audit(a)) => self.audit_page(&a),
        };
        let response = self.respond(request_hash, outcome);
        Answer {
            response,
            internal_errors: std::mem::take(&mut self.internal_errors),
        }
    }

    /// Records why the unit answers an internal error, and returns that error.
    fn internal(&mut self, cause: InternalError) -> ModuleError {
        self.internal_errors.push(cause);
        ModuleError::INTERNAL
    }

    /// A backend failure as a module error: a refused envelope is invalid data; anything
    /// else is an internal error of the unit.
    fn backend_failure(&mut self, action: &'static str, e: BackendError) -> ModuleError {
        match e {
            BackendError::Rejected(_) => ModuleError::INVALID_DATA,
            source => self.internal(InternalError::Backend {
                unit: self.state.unit_id,
                action,
                source,
            }),
        }
    }

    /// An encoding or signing failure as an internal error.
    fn encode_failure(&mut self, action: &'static str, source: ProtoError) -> ModuleError {
        self.internal(InternalError::Encode {
            unit: self.state.unit_id,
            action,
            source,
        })
    }

    fn query(&mut self, q: &Query) -> Outcome {
        if q.unit_id != self.state.unit_id {
            return Err(ModuleError::INVALID_UNIT);
        }
        self.state
            .status()
            .to_der()
            .map_err(|e| self.encode_failure("encode its status", e.into()))
    }

    /// The audit records from `q.from` on: a read, like a query (no counter, no state
    /// change).
    fn audit_page(&mut self, q: &AuditQuery) -> Outcome {
        if q.unit_id != self.state.unit_id {
            return Err(ModuleError::INVALID_UNIT);
        }
        let page = self
            .audit
            .page(q.from, self.state.audit_first, self.state.audit_head);
        match page {
            Ok(p) => p
                .to_der()
                .map_err(|e| self.encode_failure("encode its audit records", e.into())),
            Err(PageError::Encode(e)) => {
                Err(self.encode_failure("encode its audit records", e.into()))
            }
            Err(PageError::Read(source)) => Err(self.internal(InternalError::ReadAudit {
                unit: self.state.unit_id,
                path: self.place().join(AUDIT_FILE),
                source,
            })),
        }
    }

    /// Signs the response. If the device key cannot sign, the response carries an empty
    /// signature, which every client rejects; if even encoding fails, the answer is empty.
    fn respond(&mut self, request_hash: Digest32, outcome: Outcome) -> Vec<u8> {
        let (unit, counter) = (self.state.unit_id, self.state.counter);
        let body = |outcome: Outcome| -> der::Result<ResponseBody> {
            let (err, output) = match outcome {
                Ok(output) => (None, output),
                Err(e) => (Some(e), Vec::new()),
            };
            Ok(ResponseBody {
                unit_id: unit,
                counter,
                request_hash,
                return_code: err.map_or(0, |e| e.rc),
                reason_code: err.map_or(0, |e| e.reason),
                output: OctetString::new(output)?,
            })
        };
        let body = match body(outcome) {
            Ok(b) => b,
            Err(e) => {
                self.encode_failure("encode the response", e.into());
                match body(Err(ModuleError::INTERNAL)) {
                    Ok(b) => b,
                    Err(_) => return Vec::new(),
                }
            }
        };
        // The backend's own error, kept for the host (the protocol's error wraps it).
        let mut sign_error = None;
        let signed = SignedResponse::sign(&body, |context, bytes| {
            self.backend.sign(context, bytes).map_err(|e| {
                sign_error = Some(e);
                ProtoError::Signing {
                    source: "the device key cannot sign".into(),
                }
            })
        });
        let der = match signed {
            Ok(s) => {
                let der = s.to_der().map_err(ProtoError::from);
                // The output may be a data key (unwrapData): only the answer keeps a copy.
                zeroize::Zeroize::zeroize(&mut s.body.into_bytes());
                der
            }
            Err(e) => {
                match sign_error {
                    Some(source) => self.internal_errors.push(InternalError::Backend {
                        unit,
                        action: "sign the response",
                        source,
                    }),
                    None => {
                        self.encode_failure("sign the response", e);
                    }
                }
                body.to_der()
                    .and_then(|b| {
                        SignedResponse {
                            body: OctetString::new(b)?,
                            signature: OctetString::new(Vec::new())?,
                        }
                        .to_der()
                    })
                    .map_err(ProtoError::from)
            }
        };
        zeroize::Zeroize::zeroize(&mut body.output.into_bytes());
        der.unwrap_or_else(|e| {
            self.encode_failure("encode the response", e);
            Vec::new()
        })
    }

    /// A key-service operation: reads the registers, changes nothing (no counter, no
    /// state write), and answers with the operation's output (the `output` octets of
    /// `docs/protocol.md` §17).
    fn service(&mut self, request: &ServiceRequest) -> Outcome {
        if request.unit_id != self.state.unit_id {
            return Err(ModuleError::INVALID_UNIT);
        }
        request.op.check().map_err(|e| match e {
            ProtoError::ServiceBatch { .. } => ModuleError::SERVICE_BATCH,
            ProtoError::ServiceData { .. } => ModuleError::SERVICE_DATA,
            _ => ModuleError::INVALID_DATA,
        })?;
        let output = match &request.op {
            ServiceOp::GenerateKeys(count) => {
                let CurrentRegister::Valid(current) = self.state.current else {
                    return Err(ModuleError::SERVICE_NO_CURRENT);
                };
                let keys = self
                    .backend
                    .generate_root_keys(&current.key, *count as usize)
                    .map_err(|e| self.service_failure("generate root keys", e))?;
                octets(keys)
                    .and_then(|keys| {
                        Ok(GeneratedKeys {
                            vp: current.vp,
                            keys,
                        }
                        .to_der()?)
                    })
                    .map_err(|e| self.encode_failure("encode root keys", e))?
            }
            ServiceOp::WrapData(w) => {
                let slot = self.register_with(&w.vp)?;
                let wrapped = self
                    .backend
                    .wrap_data(&slot.key, w.root.as_bytes(), w.data.as_bytes())
                    .map_err(|e| self.service_failure("wrap data", e))?;
                wrapped
            }
            ServiceOp::UnwrapData(u) => {
                let slot = self.register_with(&u.vp)?;
                let data = self
                    .backend
                    .unwrap_data(&slot.key, u.root.as_bytes(), u.wrapped.as_bytes())
                    .map_err(|e| self.service_failure("unwrap data", e))?;
                // The data key is the answer.
                data.as_bytes().to_vec()
            }
            ServiceOp::Rewrap(r) => {
                let (CurrentRegister::Valid(from), NewRegister::Committed(to)) =
                    (self.state.current, self.state.new)
                else {
                    return Err(ModuleError::SERVICE_REWRAP_STATE);
                };
                if from.vp != r.from || to.vp != r.to {
                    return Err(ModuleError::SERVICE_REWRAP_STATE);
                }
                let keys: Vec<&[u8]> = r.keys.iter().map(OctetString::as_bytes).collect();
                let rewrapped = self
                    .backend
                    .rewrap_root_keys(&from.key, &to.key, &keys)
                    .map_err(|e| self.service_failure("rewrap root keys", e))?;
                octets(rewrapped)
                    .and_then(|keys| Ok(keys.to_der()?))
                    .map_err(|e| self.encode_failure("encode root keys", e))?
            }
        };
        Ok(output)
    }

    /// The register whose value has this VP and may serve keys: the current register if
    /// Valid, else the new register if Full Committed (during a rotation, a record is
    /// readable whichever units have already promoted the new key).
    fn register_with(&self, vp: &Vp) -> Result<Slot, ModuleError> {
        match (self.state.current, self.state.new) {
            (CurrentRegister::Valid(c), _) if c.vp == *vp => Ok(c),
            (_, NewRegister::Committed(n)) if n.vp == *vp => Ok(n),
            _ => Err(ModuleError::SERVICE_NO_REGISTER),
        }
    }

    /// A backend failure of a service operation as a module error: a key or data that
    /// does not unwrap is the request's fault; anything else is an internal error.
    fn service_failure(&mut self, action: &'static str, e: BackendError) -> ModuleError {
        match e {
            BackendError::WrappedKey { .. } => ModuleError::SERVICE_WRAPPED_KEY,
            BackendError::WrappedData => ModuleError::SERVICE_WRAPPED_DATA,
            source => self.internal(InternalError::Backend {
                unit: self.state.unit_id,
                action,
                source,
            }),
        }
    }

    fn command(&mut self, signed: &SignedCommand) -> Outcome {
        let authorized = self.authorize(signed)?;
        self.execute(&authorized)
    }

    /// Every check that comes before the counter is consumed: decoding, unit id, counter,
    /// signatures, imprint mode, signature count. Changes nothing, and so is not audited:
    /// a refused command here did not run.
    fn authorize(&self, signed: &SignedCommand) -> Result<Authorized, ModuleError> {
        let wire = AdminCommand::from_der(signed.command.as_bytes())
            .map_err(|_| ModuleError::INVALID_DATA)?;
        if wire.unit_id != self.state.unit_id {
            return Err(ModuleError::INVALID_UNIT);
        }
        if self.state.counter.checked_add(1) != Some(wire.counter) {
            return Err(ModuleError::INVALID_COUNTER);
        }
        if signed.signer_infos.len() > MAX_SIGNER_INFOS {
            return Err(ModuleError::UNEXPECTED_ARGUMENTS);
        }
        // Signatures first, over the exact bytes, and only then the typed input.
        let signers = self.check_signatures(signed.command.as_bytes(), &signed.signer_infos)?;
        let command = decode_command(wire.command, wire.input.as_bytes())?;
        if signers.len() < self.required_signatures(&command)? {
            return Err(ModuleError::NOT_ENOUGH_SIGNATURES);
        }
        Ok(Authorized {
            command,
            id: wire.command,
            hash: Digest32::sha256(signed.command.as_bytes()),
            signers,
        })
    }

    /// Checks every signer info and returns the distinct administrators who signed.
    fn check_signatures(
        &self,
        message: &[u8],
        infos: &[SignerInfo],
    ) -> Result<BTreeSet<Ski>, ModuleError> {
        let mut signers = BTreeSet::new();
        for info in infos {
            let admin = self
                .state
                .admin(&info.ski)
                .ok_or(ModuleError::UNAUTHORIZED_SIGNER)?;
            let sig = DerSignature::from_bytes(info.signature.as_bytes())
                .map_err(|_| ModuleError::MALFORMED_SIGNATURE)?;
            tke_proto::ecdsa_p256::verify(&admin.verifying_key(), message, &sig)
                .map_err(|_| ModuleError::INVALID_SIGNATURE)?;
            signers.insert(info.ski);
        }
        Ok(signers)
    }

    /// How many distinct administrator signatures `command` needs now
    /// ([`Command::signatures_required`]); master key commands are refused in imprint mode.
    fn required_signatures(&self, command: &Command) -> Result<usize, ModuleError> {
        let s = &self.state;
        command
            .signatures_required(s.unit_type, s.sig_threshold, s.rev_threshold)
            .ok_or(ModuleError::IMPRINT_MODE)
    }

    /// Runs an authorized command. The counter is consumed whatever the outcome: the
    /// command's audit record is appended (or, with a store that carries it, saved with
    /// the state), then the new state (counter + 1, the record's hash, and the command's
    /// effects if it succeeded) is written before the answer, then the backend destroys
    /// what the state no longer refers to.
    fn execute(&mut self, authorized: &Authorized) -> Outcome {
        let command = &authorized.command;
        let mut next = self.state.clone();
        next.counter = self.state.counter.saturating_add(1);
        let outcome = self.run(command, &mut next);
        let record = AuditRecord {
            counter: next.counter,
            command: authorized.id,
            command_hash: authorized.hash,
            signers: authorized.signers.iter().copied().collect(),
            return_code: outcome.as_ref().err().map_or(0, |e| e.rc),
            reason_code: outcome.as_ref().err().map_or(0, |e| e.reason),
            time: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            prev: self.state.audit_head,
        };
        // A store that carries the record makes it durable with the state (one flush);
        // otherwise it is appended and made durable first, the state's save committing it.
        let carried = self.store.carries_audit();
        let appended = record
            .to_der()
            .map_err(ProtoError::from)
            .map_err(|e| self.encode_failure("encode its audit record", e))
            .and_then(|der| {
                next.audit_head = Digest32::sha256(&der);
                if carried {
                    return Ok(der);
                }
                self.audit.append(der.clone()).map_err(|source| {
                    self.internal(InternalError::SaveAudit {
                        unit: self.state.unit_id,
                        path: self.place().join(AUDIT_FILE),
                        source,
                    })
                })?;
                Ok(der)
            });
        let der = match appended {
            Ok(der) => der,
            Err(e) => {
                let _ = self.backend.retain(&self.state.live());
                return Err(e);
            }
        };
        if let Err(source) = self.persist(&next, carried.then_some(&der[..])) {
            // Nothing changed in the store: keep the old state and log, and destroy any
            // secret the backend made for the command (an orphan now).
            if !carried {
                self.audit.undo_append();
            }
            let _ = self.backend.retain(&self.state.live());
            return Err(self.internal(InternalError::SaveState {
                unit: self.state.unit_id,
                location: self.store.location().to_owned(),
                source,
            }));
        }
        if carried {
            self.audit.note(der);
        }
        self.state = next;
        // A failure here leaves orphans, destroyed by the next command or open.
        let _ = if matches!(command, Command::Zeroize) {
            self.backend.zeroize()
        } else {
            self.backend.retain(&self.state.live())
        };
        outcome
    }

    /// The command's effect on `next`. On error, `next` keeps its registers, admins and
    /// thresholds (only the counter and, for an import that reached it, the importer
    /// change).
    fn run(&mut self, command: &Command, next: &mut State) -> Outcome {
        match command {
            Command::AddAdmin(cert) => add_admin(next, cert),
            Command::RemoveAdmin(ski) => remove_admin(next, ski),
            Command::SetThresholds {
                signature,
                revocation,
            } => set_thresholds(next, *signature, *revocation),
            Command::GenerateImporter => self.generate_importer(next),
            Command::GenerateRandomMk => self.generate_random(next),
            Command::ExportMk(req) => self.export(req).and_then(|e| {
                e.to_der()
                    .map_err(|e| self.encode_failure("encode the envelope", e.into()))
            }),
            // All or nothing: the first refused target fails the command.
            Command::ExportMkBatch(reqs) => reqs
                .iter()
                .map(|r| self.export(r))
                .collect::<Result<Vec<_>, _>>()
                .and_then(|es| {
                    es.to_der()
                        .map_err(|e| self.encode_failure("encode the envelopes", e.into()))
                }),
            Command::ImportMk(env) => self.import(next, env),
            Command::ImportMkParts(req) => self.import_parts(next, req),
            Command::CommitMk(vp) => commit(next, vp),
            Command::SetImmediate(vp) => set_immediate(next, vp),
            Command::ClearNew => {
                next.new = NewRegister::Empty;
                Ok(Vec::new())
            }
            Command::ClearCurrent => {
                next.current = CurrentRegister::Empty;
                Ok(Vec::new())
            }
            Command::AddControlPoints(mask) => {
                next.control_points = next.control_points.union(*mask);
                Ok(next.control_points.as_bytes().to_vec())
            }
            Command::RemoveControlPoints(mask) => {
                next.control_points = next.control_points.difference(*mask);
                Ok(next.control_points.as_bytes().to_vec())
            }
            // The control points stay, as EP11 keeps them.
            Command::Zeroize => {
                next.admins.clear();
                next.sig_threshold = 0;
                next.rev_threshold = 0;
                next.new = NewRegister::Empty;
                next.current = CurrentRegister::Empty;
                next.importer = None;
                Ok(Vec::new())
            }
        }
    }

    fn generate_importer(&mut self, next: &mut State) -> Outcome {
        let public = self
            .backend
            .generate_importer()
            .map_err(|e| self.backend_failure("generate an importer key", e))?;
        let importer = ImporterKey::new(self.state.unit_id, &public)
            .map_err(|e| self.encode_failure("name the importer key", e))?;
        let backend = &self.backend;
        let certified =
            CertifiedImporter::sign(&importer, |c, b| backend.sign(c, b).map_err(boxed))
                .and_then(|c| Ok(c.to_der()?))
                .map_err(|e| self.encode_failure("certify the importer key", e))?;
        next.importer = Some(importer.key_id);
        Ok(certified)
    }

    fn generate_random(&mut self, next: &mut State) -> Outcome {
        if self.state.unit_type != UnitType::Recovery {
            return Err(ModuleError::RANDOM_FORBIDDEN);
        }
        let into_current = match (next.current, next.new) {
            (CurrentRegister::Empty, _) => true,
            (_, NewRegister::Empty) => false,
            _ => return Err(ModuleError::REGISTER_STATE),
        };
        let (key, vp) = self
            .backend
            .generate_master_key()
            .map_err(|e| self.backend_failure("generate a master key", e))?;
        let slot = Slot { vp, key };
        if into_current {
            next.current = CurrentRegister::Valid(slot);
        } else {
            next.new = NewRegister::Uncommitted(slot);
        }
        Ok(vp.0.to_vec())
    }

    fn export(&mut self, req: &ExportRequest) -> Result<SignedEnvelope, ModuleError> {
        if !self.state.unit_type.may_export() {
            return Err(ModuleError::EXPORT_FORBIDDEN);
        }
        let target = DeviceCertificate::verify(req.target_certificate.as_bytes(), &self.ca)
            .map_err(|_| ModuleError::INVALID_IMPORTER)?;
        let importer = req
            .importer
            .verify(&target)
            .map_err(|_| ModuleError::INVALID_IMPORTER)?;
        // A master key goes only to a unit of this service instance, as the fleet CA
        // certified it (the CA may serve several instances), unless the quorum that
        // signed this export named the target's other instance.
        if target.unit_id() == self.state.unit_id
            || !instance_named(
                self.device_cert.instance_id(),
                target.instance_id(),
                req.target_instance,
            )
        {
            return Err(ModuleError::INVALID_IMPORTER);
        }
        let slot = match req.register {
            Register::Current => self.state.current.slot(),
            Register::New => self.state.new.slot(),
        }
        .ok_or(ModuleError::REGISTER_STATE)?;
        let envelope = self
            .backend
            .seal(&slot.key, self.state.unit_id, &importer)
            .map_err(|e| self.backend_failure("seal the master key", e))?;
        let backend = &self.backend;
        SignedEnvelope::sign(&envelope, &self.device_cert, |c, b| {
            backend.sign(c, b).map_err(boxed)
        })
        .map_err(|e| self.encode_failure("sign the envelope", e))
    }

    fn import(&mut self, next: &mut State, signed: &SignedEnvelope) -> Outcome {
        let (envelope, source) = signed
            .verify(&self.ca)
            .map_err(|_| ModuleError::INVALID_IMPORTER)?;
        // Only a recovery unit, as the fleet CA certified it, may be the source of a
        // master key: one of this instance, or of the other instance the signers of this
        // import named. Checked before the importer key is used up, so a refused envelope
        // changes nothing.
        let own = self.device_cert.instance_id();
        if source.unit_type() != UnitType::Recovery
            || !instance_named(own, source.instance_id(), signed.source_instance)
        {
            return Err(ModuleError::INVALID_IMPORTER);
        }
        if envelope.target_unit_id != self.state.unit_id {
            return Err(ModuleError::INVALID_UNIT);
        }
        use_up_importer(next, &envelope.importer_key_id)?;
        // Another instance's key never stands beside (and so never replaces, once set
        // immediate) a key of this unit's own: its key storage may be under it.
        if source.instance_id() != own && next.current != CurrentRegister::Empty {
            return Err(ModuleError::REGISTER_STATE);
        }
        if !envelope_shape_ok(&envelope) {
            return Err(ModuleError::INVALID_DATA);
        }
        let (key, vp) = self
            .backend
            .import(&envelope.importer_key_id, &envelope)
            .map_err(|e| self.backend_failure("import the master key", e))?;
        stage_new(next, key, vp)
    }

    /// Loads the new register from master key parts (`docs/protocol.md` §11.2). The checks
    /// run in the documented order; once the importer key matched it is used up.
    fn import_parts(&mut self, next: &mut State, req: &MkPartsRequest) -> Outcome {
        // A recovery unit's master key is only ever generated inside it.
        if self.state.unit_type == UnitType::Recovery {
            return Err(ModuleError::LOAD_FORBIDDEN);
        }
        use_up_importer(next, &req.importer_key_id)?;
        if !req.parts.iter().all(SealedPart::shape_ok) {
            return Err(ModuleError::INVALID_DATA);
        }
        let (key, vp) = self
            .backend
            .import_parts(&req.importer_key_id, self.state.unit_id, &req.parts)
            .map_err(|e| match e {
                BackendError::Rejected(ProtoError::Transport(
                    TransportError::PartsNotIndependent,
                )) => ModuleError::PARTS_NOT_INDEPENDENT,
                e => self.backend_failure("load the master key parts", e),
            })?;
        stage_new(next, key, vp)
    }

    /// Saves `state` in the unit's store.
    /// Saves `state`, with the audit record that the store carries, if any.
    pub(crate) fn persist(&mut self, state: &State, audit: Option<&[u8]>) -> std::io::Result<()> {
        let record = state.to_json()?;
        match audit {
            Some(audit) => self.store.save_audited(&record, audit),
            None => self.store.save(&record),
        }
    }
}

/// A command that passed every check before the counter: what the audit record names.
struct Authorized {
    command: Command,
    id: CommandId,
    /// SHA-256 of the `AdminCommand` DER as signed.
    hash: Digest32,
    signers: BTreeSet<Ski>,
}

/// Whether a master key may move between a unit of instance `own` and a unit of instance
/// `other`: within an instance when the command names none; across instances only when
/// the command names exactly `other` (`docs/protocol.md` §11.3).
fn instance_named(own: InstanceId, other: InstanceId, named: Option<InstanceId>) -> bool {
    match named {
        None => other == own,
        Some(named) => named == other,
    }
}

/// The importer key check of an import: `key_id` must be the pending importer key (96).
/// The attempt then uses the key up, whatever follows, and the new register must be empty
/// (102).
fn use_up_importer(next: &mut State, key_id: &Digest32) -> Result<(), ModuleError> {
    if next.importer != Some(*key_id) {
        return Err(ModuleError::NOT_FOUND);
    }
    next.importer = None;
    if next.new != NewRegister::Empty {
        return Err(ModuleError::REGISTER_STATE);
    }
    Ok(())
}

/// Puts the imported value `key` (of VP `vp`) in the new register, unless it is the
/// current register's value (102/1: the new object is then an orphan that `execute`
/// destroys). Answers the VP.
fn stage_new(next: &mut State, key: crate::KeyHandle, vp: Vp) -> Outcome {
    if next.current.slot().is_some_and(|s| s.vp == vp) {
        return Err(ModuleError::SAME_VALUE);
    }
    next.new = NewRegister::Uncommitted(Slot { vp, key });
    Ok(vp.0.to_vec())
}

/// The fixed sizes `MkEnvelope` documents (65-byte point, 40-byte wrapped key), which its
/// decoder does not enforce. Checked before any backend sees the envelope: the AES key
/// wrap of `aes-kw` 0.2.1 panics (integer underflow) on an 8-byte input that starts with
/// the RFC 5649 prefix.
pub(crate) fn envelope_shape_ok(envelope: &MkEnvelope) -> bool {
    envelope.ephemeral_public_key.as_bytes().len() == 65
        && envelope.wrapped_key.as_bytes().len() == 40
}

fn add_admin(next: &mut State, cert: &AdminCertificate) -> Outcome {
    if next.admin(&cert.ski()).is_some() {
        return Err(ModuleError::ADMIN_EXISTS);
    }
    // An operator approving a command reads names: two that look the same could hide
    // which administrator signs or is removed.
    if next.admins.iter().any(|a| a.name().looks_like(cert.name())) {
        return Err(ModuleError::ADMIN_NAME_LOOKALIKE);
    }
    if next.admins.len() >= MAX_ADMINS {
        return Err(ModuleError::TOO_MANY_ADMINS);
    }
    next.admins.push(cert.clone());
    Ok(Vec::new())
}

fn remove_admin(next: &mut State, ski: &Ski) -> Outcome {
    let pos = next
        .admins
        .iter()
        .position(|a| a.ski() == *ski)
        .ok_or(ModuleError::ADMIN_NOT_FOUND)?;
    let remaining = next.admins.len() - 1;
    if !next.imprint_mode()
        && (remaining < usize::from(next.sig_threshold)
            || remaining < usize::from(next.rev_threshold))
    {
        return Err(ModuleError::REMOVAL_BELOW_THRESHOLD);
    }
    next.admins.remove(pos);
    Ok(Vec::new())
}

fn set_thresholds(next: &mut State, signature: Threshold, revocation: Threshold) -> Outcome {
    let admins = next.admins.len();
    if usize::from(signature.get()) > admins {
        return Err(ModuleError::SIG_THRESHOLD_ABOVE_ADMINS);
    }
    if usize::from(revocation.get()) > admins {
        return Err(ModuleError::REV_THRESHOLD_ABOVE_ADMINS);
    }
    next.sig_threshold = signature.get();
    next.rev_threshold = revocation.get();
    Ok(Vec::new())
}

fn commit(next: &mut State, vp: &Vp) -> Outcome {
    match next.new {
        NewRegister::Uncommitted(s) if s.vp == *vp => {
            next.new = NewRegister::Committed(s);
            Ok(Vec::new())
        }
        NewRegister::Uncommitted(_) => Err(ModuleError::VP_MISMATCH),
        _ => Err(ModuleError::REGISTER_STATE),
    }
}

fn set_immediate(next: &mut State, vp: &Vp) -> Outcome {
    match next.new {
        NewRegister::Committed(s) if s.vp == *vp => {
            next.current = CurrentRegister::Valid(s);
            next.new = NewRegister::Empty;
            Ok(Vec::new())
        }
        NewRegister::Committed(_) => Err(ModuleError::VP_MISMATCH),
        _ => Err(ModuleError::REGISTER_STATE),
    }
}
