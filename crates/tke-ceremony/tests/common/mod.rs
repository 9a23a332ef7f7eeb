//! What the ceremony tests share: the default embedded fleet in a temporary directory,
//! three administrators' keys, and a key's name and SKI.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;

use tke_ceremony::{Problem, Rule};
use tke_client::{Client, EmbeddedFleet, FleetSpec, Transport};
use tke_proto::{AdminInfo, AdminName, CaCertificate, UnitStatus};
use tke_sigkey::Signer;
use tke_sigkey_file::FileSigner;
use tke_workstation::{FilesDir, Password};

/// A fresh fleet (2 operational + 2 recovery units, all in imprint mode), a client, and
/// keys for alice, bob and carol (installed nowhere yet).
pub struct World {
    /// Holds the fleet and the key files.
    pub dir: tempfile::TempDir,
    /// The workstation directory of the keys.
    pub files: FilesDir,
    /// The fleet's transport, to wrap.
    pub fleet: Arc<dyn Transport>,
    /// Its CA.
    pub ca: CaCertificate,
    /// A client of the fleet as it is.
    pub client: Client,
    pub alice: FileSigner,
    pub bob: FileSigner,
    pub carol: FileSigner,
}

impl World {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let files = FilesDir::resolve(Some(dir.path())).unwrap();
        let fleet = EmbeddedFleet::create(&files.local_dir(), FleetSpec::default()).unwrap();
        let ca = fleet.ca().clone();
        let fleet: Arc<dyn Transport> = Arc::new(fleet);
        let client = Client::connect(vec![(fleet.clone(), ca.clone())]).unwrap();
        Self {
            alice: key(&files, "alice"),
            bob: key(&files, "bob"),
            carol: key(&files, "carol"),
            dir,
            files,
            fleet,
            ca,
            client,
        }
    }

    /// A fresh fleet initialized by alice and bob with thresholds 2/1: every current
    /// register Valid with one value, every new register Empty; carol is installed
    /// nowhere.
    pub fn initialized() -> Self {
        let w = Self::new();
        tke_ceremony::AutoInit {
            instance: w.client.instances()[0].clone(),
            sig_threshold: tke_proto::Threshold::new(2).unwrap(),
            rev_threshold: tke_proto::Threshold::new(1).unwrap(),
            admins: vec![&w.alice as &dyn Signer, &w.bob],
        }
        .plan(&w.client)
        .unwrap()
        .execute(&tke_ceremony::Silent)
        .unwrap();
        w
    }

    /// Every unit's state, in number order.
    pub fn statuses(&self) -> Vec<UnitStatus> {
        self.client
            .units()
            .iter()
            .map(|u| self.client.query(u).unwrap())
            .collect()
    }
}

/// A new key file for administrator `name` in `files`.
pub fn key(files: &FilesDir, name: &str) -> FileSigner {
    FileSigner::generate(files, &AdminName::new(name).unwrap(), &Password::new("pw")).unwrap()
}

/// A key's administrator name and SKI.
pub fn info(s: &FileSigner) -> AdminInfo {
    AdminInfo {
        ski: s.ski(),
        name: s.name().clone(),
    }
}

/// Whether `p` refuses a unit for being in imprint mode.
pub fn imprint_mode(p: &Problem) -> bool {
    matches!(
        p,
        Problem::Precondition {
            rule: Rule::ImprintMode,
            ..
        }
    )
}
