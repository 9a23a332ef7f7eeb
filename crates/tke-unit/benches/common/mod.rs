//! What the benches of tke-unit share: a fleet CA, three administrators, units made from
//! parts, and signed commands checked as a client checks them.
#![allow(dead_code)]

use tke_proto::{
    der::{Decode, Encode},
    p256::{
        ecdsa::{signature::Signer as _, Signature, SigningKey},
        PublicKey,
    },
    CaCertificate, Command, DeviceCertificate, Request, ResponseBody, SignedResponse, UnitId,
    UnitType,
};
use tke_sigkey::{sign_command, Signer};
use tke_test_support::MemSigner;
use tke_unit::{MemoryStore, Unit};

/// A fleet CA and three administrators.
pub struct Fleet {
    ca_key: SigningKey,
    pub ca: CaCertificate,
    pub admins: Vec<MemSigner>,
}

impl Fleet {
    pub fn new() -> Self {
        let ca_key = SigningKey::random(&mut rand_core::OsRng);
        let k = ca_key.clone();
        let ca = CaCertificate::build(
            "bench",
            &PublicKey::from(ca_key.verifying_key()),
            Box::new(move |m| Ok(Signature::to_der(&k.sign(m)))),
        )
        .unwrap();
        let admins = (1..=3)
            .map(|i| MemSigner::new(&format!("admin{i}")))
            .collect();
        Self { ca_key, ca, admins }
    }

    pub fn issue(
        &self,
        id: UnitId,
        unit_type: UnitType,
        pk: &PublicKey,
    ) -> Result<DeviceCertificate, tke_proto::ProtoError> {
        let k = self.ca_key.clone();
        let description = tke_proto::UnitDescription {
            unit_type,
            instance_id: tke_proto::InstanceId([0x1e; 16]),
        };
        DeviceCertificate::issue(
            &self.ca,
            &id,
            &description,
            pk,
            Box::new(move |m| Ok(Signature::to_der(&k.sign(m)))),
        )
    }

    /// Signs and sends `command`, checks the signed answer, returns its output.
    pub fn run(&self, unit: &mut Unit, command: &Command, signers: usize) -> Vec<u8> {
        let wire = command
            .to_wire(unit.id(), unit.status().counter + 1)
            .unwrap();
        let signers: Vec<&dyn Signer> = self.admins[..signers]
            .iter()
            .map(|a| a as &dyn Signer)
            .collect();
        let req = Request::Command(sign_command(&wire, &signers).unwrap())
            .to_der()
            .unwrap();
        let answer = SignedResponse::from_der(&unit.handle(&req)).unwrap();
        let body: ResponseBody = answer
            .verify(&unit.device_certificate().verifying_key(), &unit.id(), &req)
            .unwrap();
        assert_eq!(body.error(), None, "{command:?}");
        body.output.as_bytes().to_vec()
    }

    /// A unit made from parts, its state in memory.
    pub fn in_memory(&self, id: UnitId, ty: UnitType, backend: Box<dyn tke_unit::Backend>) -> Unit {
        Unit::create_from_parts(
            Box::new(MemoryStore::new()),
            backend,
            id,
            ty,
            &self.ca,
            &mut |pk| self.issue(id, ty, pk),
        )
        .unwrap()
    }
}
