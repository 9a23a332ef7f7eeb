//! The fleets and ceremonies of the fan-out figure, shared by `tests/fanout.rs` (the
//! critical path) and `benches/fanout.rs` (the times). A ceremony to measure is one more
//! entry in [`CEREMONIES`].
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use tke_ceremony::{AutoInit, Flow, Rotate, Silent};
use tke_client::{embedded::Latency, fanout::parallel, Client, FleetSpec, InstanceId};
use tke_proto::Threshold;
use tke_sigkey::Signer;
use tke_test_support::{fanout::LatencyFleet, MemSigner};

/// One fleet size: `servers` embedded fleets (standing in for `tke-unitd` servers) of
/// `spec` each.
pub struct Size {
    /// The benchmark's name for it.
    pub name: &'static str,
    /// Its units, all instances together.
    pub units: usize,
    servers: usize,
    spec: FleetSpec,
}

/// Units per instance: 6 operational and 2 recovery, the most an instance has with no
/// failover units.
const EIGHT: FleetSpec = FleetSpec {
    instances: 1,
    operational: 6,
    recovery: 2,
    failover: 0,
};

/// 2 units (one instance); 8 units (one instance); 64 units: 8 instances of 8 units on 4
/// servers, initialized at once (an instance has at most 11 units, so 64 units are
/// several instances).
pub const SIZES: [Size; 3] = [
    Size {
        name: "2_units",
        units: 2,
        servers: 1,
        spec: FleetSpec {
            instances: 1,
            operational: 1,
            recovery: 1,
            failover: 0,
        },
    },
    Size {
        name: "8_units",
        units: 8,
        servers: 1,
        spec: EIGHT,
    },
    Size {
        name: "64_units",
        units: 64,
        servers: 4,
        spec: FleetSpec {
            instances: 2,
            ..EIGHT
        },
    },
];

impl Size {
    /// A new fleet of this size whose units answer after `latency`, in imprint mode.
    pub fn fleet(&self, latency: Latency) -> LatencyFleet {
        let f = LatencyFleet::new(self.servers, self.spec, latency);
        assert_eq!(f.units(), self.units, "{}", self.name);
        f
    }
}

/// A ceremony run on one instance, by the given administrators.
pub type Ceremony = fn(&Client, &InstanceId, &[MemSigner]);

/// A ceremony measured: its name, what brings a fresh fleet (in imprint mode) to where
/// it starts, on every instance (not measured), and the ceremony itself.
pub struct Case {
    /// The benchmark's name for it.
    pub name: &'static str,
    /// Run first, on every instance at once; the timeline is cleared after it.
    pub setup: Option<Ceremony>,
    /// The ceremony measured.
    pub run: Ceremony,
}

/// The ceremonies measured.
pub const CEREMONIES: &[Case] = &[
    Case {
        name: "auto_init",
        setup: None,
        run: auto_init,
    },
    Case {
        name: "auto_mk_rotate",
        setup: Some(auto_init),
        run: auto_mk_rotate,
    },
];

/// `auto-init`, thresholds 2/2, every administrator installed.
fn auto_init(client: &Client, instance: &InstanceId, admins: &[MemSigner]) {
    AutoInit {
        instance: instance.clone(),
        sig_threshold: Threshold::new(2).unwrap(),
        rev_threshold: Threshold::new(2).unwrap(),
        admins: admins.iter().map(|a| a as &dyn Signer).collect(),
    }
    .plan(client)
    .unwrap()
    .execute(&Silent)
    .unwrap();
}

/// `auto-mk-rotate` of an instance `auto_init` made, any administrator may sign (the
/// quorum of 2 is chosen by the plan). The fleets have no key storage: the units' part
/// of the rotation is measured.
fn auto_mk_rotate(client: &Client, instance: &InstanceId, admins: &[MemSigner]) {
    let keys = admins.iter().map(MemSigner::admin_info).collect();
    let signers: Vec<&dyn Signer> = admins.iter().map(|a| a as &dyn Signer).collect();
    Rotate {
        flow: Flow::Auto,
        units: client.instance_units(instance),
        keys,
        resume: false,
    }
    .plan(client)
    .unwrap()
    .execute(&signers, &Silent)
    .unwrap();
}

/// The administrators of every run: three, as in the vendor's documented set-ups.
pub fn admins() -> Vec<MemSigner> {
    ["alice", "bob", "carol"]
        .iter()
        .map(|n| MemSigner::new(n))
        .collect()
}

/// Runs `ceremony` on every instance of `fleet` at once, as one operator per instance
/// would.
pub fn on_every_instance(fleet: &LatencyFleet, ceremony: Ceremony, admins: &[MemSigner]) {
    let client = &fleet.client;
    parallel(&client.instances(), |i| ceremony(client, i, admins));
}

/// Brings `fleet` to where `case` starts, on every instance at once, and forgets
/// those exchanges.
pub fn set_up(fleet: &LatencyFleet, case: &Case, admins: &[MemSigner]) {
    if let Some(setup) = case.setup {
        on_every_instance(fleet, setup, admins);
        fleet.timeline.clear();
    }
}
