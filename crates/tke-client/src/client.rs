//! The client: lists units through its transports, checks their device certificates
//! against the fleet CA, and runs authenticated queries and signed commands.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use tke_proto::{
    der::{asn1::OctetString, Decode, Encode},
    AuditLog, AuditPage, AuditQuery, CaCertificate, Command, DeviceCertificate, ModuleError, Nonce,
    Query, Request, ResponseBody, ServiceOp, ServiceOutput, ServiceRequest, SignedCommand,
    SignedResponse, UnitId, UnitStatus, UnitType, MAX_AUDIT_PAGE,
};
use tke_sigkey::Signer;

use crate::{ClientError, InstanceId, Provisioning, Transport, UnitDescriptor};

/// A unit the client trusts: its device certificate chains to the fleet CA.
#[derive(Clone, Debug)]
pub struct KnownUnit {
    /// The vendor-style `CRYPTO UNIT NUM` (1-based, one sequence over all instances).
    pub num: usize,
    /// What the transport listed.
    pub descriptor: UnitDescriptor,
    /// The verified device certificate.
    pub certificate: DeviceCertificate,
    endpoint: usize,
}

impl KnownUnit {
    /// The unit's id.
    pub fn id(&self) -> UnitId {
        self.descriptor.unit_id
    }
    /// Its type, as its device certificate states it (the listing was checked to agree).
    pub fn unit_type(&self) -> UnitType {
        self.certificate.unit_type()
    }
    /// Its instance.
    pub fn instance(&self) -> &InstanceId {
        &self.descriptor.instance
    }
}

struct Endpoint {
    transport: Arc<dyn Transport>,
    ca: CaCertificate,
}

/// Talks to the units of one or more transports.
///
/// Commands to one unit are serialized (a per-unit lock is held from the counter query to
/// the answer), so callers may drive many units from many threads.
pub struct Client {
    endpoints: Vec<Endpoint>,
    units: Vec<KnownUnit>,
    /// Per unit: held from counter choice to answer; holds the last counter the unit
    /// reported in an authenticated answer to one of our commands.
    locks: HashMap<UnitId, Mutex<Option<u64>>>,
}

fn type_rank(t: UnitType) -> u8 {
    match t {
        UnitType::Operational => 0,
        UnitType::Recovery => 1,
        UnitType::Failover => 2,
    }
}

impl Client {
    /// Connects to each transport, lists its units and checks every device certificate
    /// against that transport's fleet CA. Units are numbered as the vendor does: by
    /// instance (in listing order), then operational, recovery, failover.
    ///
    /// # Errors
    /// [`ClientError::Untrusted`] when a certificate does not verify or names another unit;
    /// [`ClientError::DisagreesWithCertificate`] when the listing gives a unit another type
    /// or instance than its certificate; [`ClientError::DuplicateUnit`] when two transports
    /// list the same unit; the transport's listing error.
    pub fn connect(
        endpoints: Vec<(Arc<dyn Transport>, CaCertificate)>,
    ) -> Result<Self, ClientError> {
        let mut units = Vec::new();
        let mut instance_order: Vec<InstanceId> = Vec::new();
        let mut eps = Vec::new();
        for (i, (transport, ca)) in endpoints.into_iter().enumerate() {
            for d in transport.list_units()? {
                let cert =
                    DeviceCertificate::verify(&d.device_certificate, &ca).map_err(|source| {
                        ClientError::Untrusted {
                            unit: d.unit_id,
                            source,
                        }
                    })?;
                if cert.unit_id() != d.unit_id {
                    return Err(ClientError::Untrusted {
                        unit: d.unit_id,
                        source: tke_proto::CertificateError::NamesAnotherUnit.into(),
                    });
                }
                // The server's listing is untrusted; the certificate is the fleet CA's word.
                let disagrees = |what, stated: String, certified: String| {
                    ClientError::DisagreesWithCertificate {
                        unit: d.unit_id,
                        what,
                        stated,
                        certified,
                    }
                };
                if cert.unit_type() != d.unit_type {
                    return Err(disagrees(
                        "the listing gives the type",
                        d.unit_type.label().to_owned(),
                        cert.unit_type().label().to_owned(),
                    ));
                }
                if cert.instance_id().uuid() != d.instance.0 {
                    return Err(disagrees(
                        "the listing gives the instance",
                        d.instance.to_string(),
                        cert.instance_id().uuid(),
                    ));
                }
                if !instance_order.contains(&d.instance) {
                    instance_order.push(d.instance.clone());
                }
                units.push(KnownUnit {
                    num: 0,
                    descriptor: d,
                    certificate: cert,
                    endpoint: i,
                });
            }
            eps.push(Endpoint { transport, ca });
        }
        // Stable: within one instance and type, units keep their listing order.
        units.sort_by_key(|u| {
            (
                instance_order.iter().position(|i| i == u.instance()),
                type_rank(u.unit_type()),
            )
        });
        // In number order, so that the unit named is the one a reader of the numbered
        // listing would meet twice first.
        for (i, u) in units.iter().enumerate() {
            if let Some(first) = units[..i].iter().find(|v| v.id() == u.id()) {
                return Err(ClientError::DuplicateUnit {
                    unit: u.id(),
                    first: eps[first.endpoint].transport.describe(),
                    second: eps[u.endpoint].transport.describe(),
                });
            }
        }
        for (n, u) in units.iter_mut().enumerate() {
            u.num = n + 1;
        }
        let locks = units.iter().map(|u| (u.id(), Mutex::new(None))).collect();
        Ok(Self {
            endpoints: eps,
            units,
            locks,
        })
    }

    /// Every known unit, in `CRYPTO UNIT NUM` order.
    pub fn units(&self) -> &[KnownUnit] {
        &self.units
    }

    /// The instances, in listing order.
    pub fn instances(&self) -> Vec<InstanceId> {
        let mut v: Vec<InstanceId> = Vec::new();
        for u in &self.units {
            if !v.contains(u.instance()) {
                v.push(u.instance().clone());
            }
        }
        v
    }

    /// The units of one instance.
    pub fn instance_units(&self, instance: &InstanceId) -> Vec<&KnownUnit> {
        self.units
            .iter()
            .filter(|u| u.instance() == instance)
            .collect()
    }

    /// Looks a unit up by id.
    pub fn unit(&self, id: &UnitId) -> Option<&KnownUnit> {
        self.units.iter().find(|u| u.id() == *id)
    }

    /// The fleet CA certificate that `unit`'s device certificate was checked against
    /// (public: a ceremony file records it so that approvers check the units' answers
    /// offline).
    pub fn ca_of(&self, unit: &KnownUnit) -> Option<&CaCertificate> {
        self.endpoints.get(unit.endpoint).map(|e| &e.ca)
    }

    /// Lists the units again through the same transports, each checked against its
    /// fleet CA as [`Client::connect`] does: after units were added, a new client that
    /// knows them (and numbers them as the vendor does).
    ///
    /// # Errors
    /// As [`Client::connect`].
    pub fn reconnect(&self) -> Result<Client, ClientError> {
        Client::connect(
            self.endpoints
                .iter()
                .map(|e| (Arc::clone(&e.transport), e.ca.clone()))
                .collect(),
        )
    }

    /// How units are added to `instance`: the [`Provisioning`] of the one transport that
    /// carries all its units, when it offers one. `None` when the instance has no units
    /// here, spans several transports, or its transport cannot add units (a `tke-unitd`
    /// server).
    pub fn provisioning(&self, instance: &InstanceId) -> Option<&dyn Provisioning> {
        let mut endpoints = self
            .units
            .iter()
            .filter(|u| u.instance() == instance)
            .map(|u| u.endpoint);
        let first = endpoints.next()?;
        if endpoints.any(|e| e != first) {
            return None;
        }
        self.endpoints[first].transport.provisioning()
    }

    /// The key-management service of `instance`, from the one transport that carries all
    /// its units, when that transport offers one (see [`Transport::key_service`]).
    /// `None` when the instance has no units here, spans several transports, or has no
    /// key storage reachable through its transport.
    ///
    /// # Errors
    /// The transport's error when the service exists but cannot be opened.
    pub fn key_service(
        &self,
        instance: &InstanceId,
    ) -> Result<Option<std::sync::Arc<dyn tke_kms::KeyService>>, ClientError> {
        let mut endpoints = self
            .units
            .iter()
            .filter(|u| u.instance() == instance)
            .map(|u| u.endpoint);
        let Some(first) = endpoints.next() else {
            return Ok(None);
        };
        if endpoints.any(|e| e != first) {
            return Ok(None);
        }
        self.endpoints[first].transport.key_service(instance)
    }

    /// Descriptions of the transports, for context headers.
    pub fn describe(&self) -> Vec<String> {
        self.endpoints
            .iter()
            .map(|e| e.transport.describe())
            .collect()
    }

    fn exchange(&self, unit: &KnownUnit, request: &Request) -> Result<ResponseBody, ClientError> {
        let der = request.to_der().map_err(|e| ClientError::Encoding {
            unit: unit.id(),
            source: e.into(),
        })?;
        let transport = &self.endpoints[unit.endpoint].transport;
        let mut answer = transport.exchange(&unit.id(), &der)?;
        let response = SignedResponse::from_der(&answer).map_err(|e| ClientError::Response {
            unit: unit.id(),
            source: e.into(),
        });
        // The answer may carry a data key (unwrapData): only the body returned keeps it.
        zeroize::Zeroize::zeroize(&mut answer);
        let response = response?;
        let body = response
            .verify(&unit.certificate.verifying_key(), &unit.id(), &der)
            .map_err(|source| ClientError::Response {
                unit: unit.id(),
                source,
            });
        zeroize::Zeroize::zeroize(&mut response.body.into_bytes());
        body
    }

    /// Asks a unit for its status. The answer is signed by the unit's device key and bound
    /// to a fresh nonce.
    ///
    /// # Errors
    /// [`ClientError::Response`] if the answer is not authentic or malformed;
    /// [`ClientError::QueryRefused`] if the unit refuses;
    /// [`ClientError::DisagreesWithCertificate`] if the status gives another unit type than
    /// the device certificate.
    pub fn query(&self, unit: &KnownUnit) -> Result<UnitStatus, ClientError> {
        let body = self.exchange(
            unit,
            &Request::Query(Query {
                unit_id: unit.id(),
                nonce: Nonce::random(),
            }),
        )?;
        if let Some(error) = body.error() {
            return Err(ClientError::QueryRefused {
                unit: unit.id(),
                error,
            });
        }
        let status = UnitStatus::decode_checked(body.output.as_bytes()).map_err(|source| {
            ClientError::Response {
                unit: unit.id(),
                source,
            }
        })?;
        if status.unit_type != unit.unit_type() {
            return Err(ClientError::DisagreesWithCertificate {
                unit: unit.id(),
                what: "the signed status gives the type",
                stated: status.unit_type.label().to_owned(),
                certified: unit.unit_type().label().to_owned(),
            });
        }
        Ok(status)
    }

    /// Fetches a unit's audit records from counter `from` on (protocol §18), page by page.
    /// Each page is signed by the unit's device key and bound to a fresh nonce; the log
    /// returned carries the counter and head hash of the last page, for
    /// [`tke_proto::audit::verify_chain`] (this only fetches: a damaged log is for the
    /// caller to report).
    ///
    /// # Errors
    /// [`ClientError::Response`] if an answer is not authentic or not a valid page;
    /// [`ClientError::QueryRefused`] if the unit refuses; the transport's error.
    pub fn audit(&self, unit: &KnownUnit, from: u64) -> Result<AuditLog, ClientError> {
        let (counter, page) = self.audit_page(unit, from)?;
        let mut full = page.records.len() == MAX_AUDIT_PAGE;
        let mut log = AuditLog {
            counter,
            first: page.first,
            head: page.head,
            start: from.max(page.first),
            prev: page.prev,
            records: page
                .records
                .into_iter()
                .map(OctetString::into_bytes)
                .collect(),
        };
        loop {
            let next = log.start.saturating_add(log.records.len() as u64);
            // Stop at the unit's counter too, so that a log padded past it cannot keep
            // the client asking.
            if !full || next > log.counter {
                return Ok(log);
            }
            let (counter, page) = self.audit_page(unit, next)?;
            full = page.records.len() == MAX_AUDIT_PAGE;
            log.counter = counter;
            log.head = page.head;
            log.records
                .extend(page.records.into_iter().map(OctetString::into_bytes));
        }
    }

    /// One audit page from `from` on, with the unit's counter from the signed answer.
    fn audit_page(&self, unit: &KnownUnit, from: u64) -> Result<(u64, AuditPage), ClientError> {
        let body = self.exchange(unit, &Request::Audit(AuditQuery::new(unit.id(), from)))?;
        if let Some(error) = body.error() {
            return Err(ClientError::QueryRefused {
                unit: unit.id(),
                error,
            });
        }
        let page = AuditPage::decode_checked(body.output.as_bytes()).map_err(|source| {
            ClientError::Response {
                unit: unit.id(),
                source,
            }
        })?;
        Ok((body.counter, page))
    }

    /// Runs a key-service operation on a unit (protocol §17): unsigned, no counter, no
    /// state change in the unit. The answer is signed by the unit's device key and bound
    /// to this request, which carries a fresh nonce; its output is checked against the
    /// request (as many keys as asked for).
    ///
    /// # Errors
    /// [`ClientError::ServiceRequest`] if the operation breaks the protocol's size limits
    /// (nothing is sent); [`ClientError::ServiceRefused`] if the unit refuses it;
    /// [`ClientError::Response`] if the answer is not authentic or does not answer the
    /// request; the transport's error.
    pub fn service(&self, unit: &KnownUnit, op: ServiceOp) -> Result<ServiceOutput, ClientError> {
        let name = op.name();
        op.check().map_err(|source| ClientError::ServiceRequest {
            unit: unit.id(),
            op: name,
            source,
        })?;
        let request = ServiceRequest::new(unit.id(), op);
        // The clone is sent; the original checks the output against what was asked.
        let body = self.exchange(unit, &Request::Service(request.clone()))?;
        if let Some(error) = body.error() {
            return Err(ClientError::ServiceRefused {
                unit: unit.id(),
                op: name,
                error,
            });
        }
        let output = request
            .decode_output(body.output.as_bytes())
            .map_err(|source| ClientError::Response {
                unit: unit.id(),
                source,
            });
        // A data key is now only in the output, which zeroizes it.
        zeroize::Zeroize::zeroize(&mut body.output.into_bytes());
        output
    }

    /// Sends an already signed command and returns the unit's output.
    ///
    /// # Errors
    /// [`ClientError::Module`] when the unit refuses it; [`ClientError::Response`] when the
    /// answer is not authentic.
    pub fn submit(
        &self,
        unit: &KnownUnit,
        command: &SignedCommand,
    ) -> Result<Vec<u8>, ClientError> {
        let id = command
            .admin_command()
            .map(|c| c.command)
            .map_err(|source| ClientError::Encoding {
                unit: unit.id(),
                source,
            })?;
        let body = self.exchange(unit, &Request::Command(command.clone()))?;
        match body.error() {
            Some(error) => Err(ClientError::Module {
                unit: unit.id(),
                command: id,
                error,
            }),
            None => Ok(body.output.as_bytes().to_vec()),
        }
    }

    /// Runs a command on a unit: builds it for the unit's next counter value, has every
    /// signer sign it, submits it and returns the output. The counter comes from the
    /// unit's last authenticated answer to this client, or from an authenticated query
    /// the first time. The unit's lock is held throughout, so concurrent callers of this
    /// client never race for a counter value.
    ///
    /// If the unit refuses the counter (163, so it ran nothing), the counter is read again
    /// and, when the unit is out of imprint mode, the command is signed and sent once more.
    /// That retry is legitimate there: out of imprint mode every change needs the
    /// signatures of installed administrators, so the counter was moved by one of them
    /// (another workstation), and the unit checks the re-signed command against its state
    /// now. In imprint mode anyone who can reach the unit may add or remove
    /// administrators unsigned, so a moved counter is reported as
    /// [`ClientError::Interference`] instead. Ceremonies that account for every counter
    /// value use [`Self::run_counted`].
    ///
    /// # Errors
    /// As [`Self::query`] and [`Self::submit`], plus [`ClientError::Signing`] and
    /// [`ClientError::Interference`].
    pub fn run(
        &self,
        unit: &KnownUnit,
        command: &Command,
        signers: &[&dyn Signer],
    ) -> Result<Vec<u8>, ClientError> {
        let mut known = self.lock(unit)?;
        let (mut counter, mut fresh) = match *known {
            Some(c) => (c, false),
            None => (self.query(unit)?.counter, true),
        };
        loop {
            let signed = self.sign(unit, command, counter.wrapping_add(1), signers)?;
            let body = self.exchange(unit, &Request::Command(signed))?;
            *known = Some(body.counter);
            match body.error() {
                Some(error) if error == ModuleError::INVALID_COUNTER && !fresh => {
                    let status = self.query(unit)?;
                    if status.imprint_mode() {
                        return Err(ClientError::Interference {
                            unit: unit.id(),
                            command: command.id(),
                            expected: counter,
                            found: status.counter,
                        });
                    }
                    counter = status.counter;
                    fresh = true;
                }
                Some(error) => {
                    return Err(ClientError::Module {
                        unit: unit.id(),
                        command: command.id(),
                        error,
                    })
                }
                None => return Ok(body.output.as_bytes().to_vec()),
            }
        }
    }

    /// Runs a command on a unit at a counter the caller accounts for: the unit's last
    /// counter must be `counter` (the command carries `counter + 1`). Never retried: if
    /// the unit refuses the counter (163, it ran nothing), someone else used the unit since
    /// the caller last accounted for it, and that is reported. Ceremonies use this for
    /// every command, so that no command of theirs runs on a state someone else changed.
    ///
    /// # Errors
    /// [`ClientError::Interference`] when the unit's counter is not `counter`; otherwise
    /// as [`Self::run`].
    pub fn run_counted(
        &self,
        unit: &KnownUnit,
        command: &Command,
        signers: &[&dyn Signer],
        counter: u64,
    ) -> Result<Vec<u8>, ClientError> {
        let mut known = self.lock(unit)?;
        let signed = self.sign(unit, command, counter.wrapping_add(1), signers)?;
        let body = self.exchange(unit, &Request::Command(signed))?;
        *known = Some(body.counter);
        match body.error() {
            Some(error) if error == ModuleError::INVALID_COUNTER => {
                Err(ClientError::Interference {
                    unit: unit.id(),
                    command: command.id(),
                    expected: counter,
                    found: body.counter,
                })
            }
            Some(error) => Err(ClientError::Module {
                unit: unit.id(),
                command: command.id(),
                error,
            }),
            None => Ok(body.output.as_bytes().to_vec()),
        }
    }

    /// The unit's lock, holding the last counter it reported to us.
    fn lock(&self, unit: &KnownUnit) -> Result<MutexGuard<'_, Option<u64>>, ClientError> {
        let lock = self
            .locks
            .get(&unit.id())
            .ok_or(ClientError::UnknownUnit { unit: unit.id() })?;
        // A poisoned lock only means another thread panicked mid-command; the unit itself
        // is the authority on its state, so carry on.
        Ok(lock.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn sign(
        &self,
        unit: &KnownUnit,
        command: &Command,
        counter: u64,
        signers: &[&dyn Signer],
    ) -> Result<SignedCommand, ClientError> {
        let wire = command
            .to_wire(unit.id(), counter)
            .map_err(|source| ClientError::Encoding {
                unit: unit.id(),
                source,
            })?;
        if signers.is_empty() {
            SignedCommand::unsigned(&wire).map_err(|source| ClientError::Encoding {
                unit: unit.id(),
                source,
            })
        } else {
            tke_sigkey::sign_command(&wire, signers).map_err(|source| ClientError::Signing {
                unit: unit.id(),
                command: command.id(),
                source,
            })
        }
    }
}
