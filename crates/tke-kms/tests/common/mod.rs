//! An embedded fleet whose units hold a master key, and the register steps of a rotation,
//! driven through the ceremonies with an administrator in memory (shared by the tests and
//! the benchmark).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use tke_ceremony::{AutoInit, MkRegister, RegisterAction};
use tke_client::{
    embedded::Placement, Client, EmbeddedFleet, FleetSpec, InstanceId, KnownUnit, Transport,
};
use tke_kms::{KeyService, Rotation};
use tke_proto::{AdminInfo, Threshold, Vp};
use tke_sigkey::Signer;
use tke_test_support::{admin::MemSigner, mk::load_new_register};

/// The default fleet (2 operational, 2 recovery units), initialized by alice alone.
pub struct Rig {
    pub dir: tempfile::TempDir,
    fleet: Arc<dyn Transport>,
    ca: tke_proto::CaCertificate,
    pub client: Client,
    pub instance: InstanceId,
    pub alice: MemSigner,
}

impl Rig {
    pub fn new() -> Self {
        Self::with_placement(&Placement::soft())
    }

    /// The default fleet with its units placed as `placement` says (e.g. on SoftHSM2
    /// tokens).
    pub fn with_placement(placement: &Placement) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let fleet =
            EmbeddedFleet::create_with(&dir.path().join("local"), FleetSpec::default(), placement)
                .unwrap();
        let ca = fleet.ca().clone();
        let fleet: Arc<dyn Transport> = Arc::new(fleet);
        let client = Client::connect(vec![(fleet.clone(), ca.clone())]).unwrap();
        let instance = client.instances()[0].clone();
        let alice = MemSigner::new("alice");
        AutoInit {
            instance: instance.clone(),
            sig_threshold: Threshold::new(1).unwrap(),
            rev_threshold: Threshold::new(1).unwrap(),
            admins: vec![&alice as &dyn Signer],
        }
        .plan(&client)
        .unwrap()
        .execute(&tke_ceremony::Silent)
        .unwrap();
        Self {
            dir,
            fleet,
            ca,
            client,
            instance,
            alice,
        }
    }

    /// A new client of the same fleet.
    pub fn another_client(&self) -> Client {
        Client::connect(vec![(self.fleet.clone(), self.ca.clone())]).unwrap()
    }

    /// The instance's key service (its key store made on first use).
    pub fn kms(&self) -> Arc<dyn KeyService> {
        self.client.key_service(&self.instance).unwrap().unwrap()
    }

    fn units(&self) -> Vec<&KnownUnit> {
        self.client.units().iter().collect()
    }

    fn register(&self, action: RegisterAction) {
        let cert = self.alice.certificate();
        MkRegister {
            action,
            units: self.units(),
            keys: vec![AdminInfo {
                ski: cert.ski(),
                name: cert.name().clone(),
            }],
        }
        .plan(&self.client)
        .unwrap()
        .execute(&[&self.alice as &dyn Signer])
        .unwrap();
    }

    /// The VP of the units' current master key.
    pub fn current_vp(&self) -> Vp {
        let s = self.client.query(self.units()[0]).unwrap();
        s.current_register.vp.unwrap()
    }

    /// A random master key in every new register (generated in recovery unit 3),
    /// committed: the rotation from the current key to it can run. Returns it.
    pub fn commit_new(&self) -> Rotation {
        let from = self.current_vp();
        let u = self.units();
        let to = load_new_register(&self.client, u[2], &[u[0], u[1], u[3]], &[&self.alice]);
        self.register(RegisterAction::Commit);
        Rotation { from, to }
    }

    /// The committed new key becomes the current one everywhere.
    pub fn set_immediate(&self) {
        self.register(RegisterAction::SetImmediate);
    }
}
