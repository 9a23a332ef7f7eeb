//! Zeroize, compare, the installed-key check and failover-enable, on an embedded fleet driven through the
//! library alone. One unit can be made unreachable: its transport lists it but carries
//! nothing to it, as a server whose unit went away.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::info;
use tke_ceremony::{
    Aspect, AutoInit, CeremonyError, CompareReport, FailoverEnable, FailoverPlan, InstalledKeys,
    Problem, Zeroize,
};
use tke_client::{
    Client, ClientError, FailoverLimits, FailoverTotalError, KnownUnit, Provisioning, Transport,
    UnitDescriptor,
};
use tke_proto::{AdminName, Command, Threshold, UnitId, UnitType};
use tke_sigkey::Signer;

/// The fleet's transport, with some units cut off: listed, but unreachable.
struct Unplugged {
    inner: Arc<dyn Transport>,
    cut: Vec<UnitId>,
}

impl Transport for Unplugged {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn list_units(&self) -> Result<Vec<UnitDescriptor>, ClientError> {
        self.inner.list_units()
    }
    fn exchange(&self, unit: &UnitId, request_der: &[u8]) -> Result<Vec<u8>, ClientError> {
        if self.cut.contains(unit) {
            return Err(ClientError::Transport {
                unit: *unit,
                endpoint: self.describe(),
                source: "connection refused".into(),
            });
        }
        self.inner.exchange(unit, request_der)
    }
}

/// The common world, initialized.
struct World(common::World);

impl std::ops::Deref for World {
    type Target = common::World;
    fn deref(&self) -> &common::World {
        &self.0
    }
}

impl World {
    /// The default fleet (2 operational + 2 recovery units), initialized by alice and bob
    /// with thresholds 2/1; carol has a key but is installed nowhere.
    fn initialized() -> Self {
        Self(common::World::initialized())
    }

    /// A second client on the same fleet whose unit `num` cannot be reached.
    fn client_without(&self, num: usize) -> Client {
        let cut = vec![self.client.units()[num - 1].id()];
        let t: Arc<dyn Transport> = Arc::new(Unplugged {
            inner: self.fleet.clone(),
            cut,
        });
        Client::connect(vec![(t, self.ca.clone())]).unwrap()
    }

    /// Zeroizes unit `num` alone, signed by alice and bob (a recovery unit needs its
    /// signature threshold, 2).
    fn zeroize_one(&self, num: usize) {
        let u = &self.client.units()[num - 1];
        self.client
            .run(
                u,
                &Command::Zeroize,
                &[&self.alice as &dyn Signer, &self.bob],
            )
            .unwrap();
    }
}

#[test]
fn zeroize_plan_reports_every_problem_at_once_and_changes_nothing() {
    let w = World::initialized();
    // Unit 4 back in imprint mode: it needs no signature, so it is no problem.
    w.zeroize_one(4);
    let before = w.statuses();

    // Unit 2 unreachable; carol, the only key offered, is installed on no unit.
    let client = w.client_without(2);
    let err = Zeroize {
        units: client.units().iter().collect(),
        keys: vec![info(&w.carol)],
    }
    .plan(&client)
    .err()
    .expect("the plan must be refused");
    let CeremonyError::Problems(problems) = &err else {
        panic!("refused for another reason: {err}");
    };
    assert_eq!(problems.len(), 3, "{err}");
    assert!(
        matches!(&problems[0], Problem::Unreachable { num: 2, source: ClientError::Transport { unit, .. } } if *unit == client.units()[1].id()),
        "{err}"
    );
    // Operational unit 1 lacks one key; recovery unit 3 lacks its signature threshold.
    for (p, num) in problems[1..].iter().zip([1, 3]) {
        let (n, unit, installed) = match p {
            Problem::NoInstalledKey {
                num,
                unit,
                installed,
            } => (num, unit, installed),
            Problem::TooFewInstalledKeys {
                num,
                unit,
                needed: 2,
                usable,
                installed,
            } if usable.is_empty() => (num, unit, installed),
            other => panic!("unit {num}: unexpected problem {other}"),
        };
        assert_eq!(*n, num);
        assert_eq!(matches!(p, Problem::NoInstalledKey { .. }), num == 1);
        assert_eq!(*unit, client.units()[num - 1].id());
        let names: Vec<&str> = installed.iter().map(AdminName::as_str).collect();
        assert_eq!(names, ["alice", "bob"]);
    }
    assert!(err.to_string().starts_with(
        "3 problem(s) found; no crypto unit was changed:\n  - crypto unit 2 cannot be queried: "
    ));

    // Nothing changed: same state, same counter on every unit.
    assert_eq!(w.statuses(), before);

    // No unit at all is a problem too, not an empty success.
    let err = Zeroize {
        units: Vec::new(),
        keys: vec![info(&w.alice)],
    }
    .plan(&w.client)
    .err()
    .expect("a plan without units must be refused");
    assert!(
        matches!(&err, CeremonyError::Problems(p) if matches!(p.as_slice(), [Problem::NoUnits])),
        "{err}"
    );
}

#[test]
fn zeroize_signs_each_unit_with_the_first_installed_keys_and_runs_once() {
    let w = World::initialized();
    w.zeroize_one(4);
    let units: Vec<_> = w.client.units().iter().collect();
    let keys = vec![info(&w.carol), info(&w.bob), info(&w.alice)];

    let plan = Zeroize {
        units: units.clone(),
        keys: keys.clone(),
    }
    .plan(&w.client)
    .unwrap();
    let signed_by: Vec<Vec<&str>> = plan
        .targets()
        .iter()
        .map(|t| t.signers.iter().map(|k| k.name.as_str()).collect())
        .collect();
    // Operational units 1 and 2: one signature; recovery unit 3: its signature threshold
    // (2); unit 4, in imprint mode: none.
    let none: [&str; 0] = [];
    assert_eq!(
        signed_by,
        [
            vec!["bob"],
            vec!["bob"],
            vec!["bob", "alice"],
            none.to_vec()
        ]
    );
    let needed: Vec<&str> = plan.keys_needed().iter().map(|k| k.name.as_str()).collect();
    assert_eq!(needed, ["bob", "alice"]);

    // Without alice's key the plan refuses before touching any unit.
    let before = w.statuses();
    let err = plan.execute(&[&w.bob as &dyn Signer]).unwrap_err();
    assert!(
        matches!(&err, CeremonyError::SignerMissing { name, ski } if name.as_str() == "alice" && *ski == w.alice.ski()),
        "{err}"
    );
    assert_eq!(w.statuses(), before);

    // With it, every unit is back in imprint mode, empty.
    let report = Zeroize { units, keys }
        .plan(&w.client)
        .unwrap()
        .execute(&[&w.bob as &dyn Signer, &w.alice])
        .unwrap();
    assert_eq!(report.units, [1, 2, 3, 4]);
    for s in w.statuses() {
        assert!(s.imprint_mode());
        assert!(s.admins.is_empty());
        assert_eq!(s.current_register.vp, None);
    }
}

#[test]
fn zeroize_plan_needs_the_signature_threshold_on_recovery_units() {
    let w = World::initialized();
    let units: Vec<_> = w.client.units().iter().collect();
    let before = w.statuses();

    // alice alone signs for the operational units 1 and 2, not for the recovery units 3
    // and 4 (signature threshold 2): the plan names both and changes nothing.
    let err = Zeroize {
        units: units.clone(),
        keys: vec![info(&w.carol), info(&w.alice)],
    }
    .plan(&w.client)
    .err()
    .expect("one key cannot zeroize a recovery unit");
    let CeremonyError::Problems(problems) = &err else {
        panic!("refused for another reason: {err}");
    };
    assert_eq!(problems.len(), 2, "{err}");
    for (p, num) in problems.iter().zip([3, 4]) {
        match p {
            Problem::TooFewInstalledKeys {
                num: n,
                unit,
                needed,
                usable,
                installed,
            } => {
                assert_eq!((*n, *unit, *needed), (num, units[num - 1].id(), 2));
                assert_eq!(
                    usable.iter().map(AdminName::as_str).collect::<Vec<_>>(),
                    ["alice"]
                );
                let names: Vec<&str> = installed.iter().map(AdminName::as_str).collect();
                assert_eq!(names, ["alice", "bob"]);
            }
            other => panic!("unit {num}: unexpected problem {other}"),
        }
    }
    assert!(err.to_string().contains(
        "crypto unit 3 is a recovery unit out of imprint mode: zeroizing it needs the signatures of 2 of its administrators (its signature threshold), and 1 of the usable signature keys on this workstation is installed on it: alice (installed administrators: alice, bob)"
    ), "{err}");
    assert_eq!(w.statuses(), before);

    // The operational units alone are fine with alice's signature.
    let report = Zeroize {
        units: units[..2].to_vec(),
        keys: vec![info(&w.alice)],
    }
    .plan(&w.client)
    .unwrap()
    .execute(&[&w.alice as &dyn Signer])
    .unwrap();
    assert_eq!(report.units, [1, 2]);
    assert_eq!(w.statuses()[2..], before[2..]);
}

#[test]
fn compare_report_tells_identical_units_from_differing_ones() {
    let w = World::initialized();
    let instance = w.client.instances()[0].clone();
    let all: Vec<_> = w.client.units().iter().collect();

    let report = CompareReport::query(&w.client, &all).unwrap();
    assert_eq!(report.units().len(), 4);
    assert_eq!(report.instances(), [&instance]);
    assert!(report.identical(&instance));
    assert_eq!(report.differences(&instance), []);

    // Unit 3 zeroized: no administrators, thresholds 0, no current key; the new register
    // is empty everywhere, so it still agrees.
    w.zeroize_one(3);
    let report = CompareReport::query(&w.client, &all).unwrap();
    assert!(!report.identical(&instance));
    assert_eq!(
        report.differences(&instance),
        [
            Aspect::SignatureThreshold,
            Aspect::RevocationThreshold,
            Aspect::Administrators,
            Aspect::CurrentRegister,
        ]
    );
    // The other three still agree among themselves.
    let rest: Vec<_> = all.iter().copied().filter(|u| u.num != 3).collect();
    assert!(CompareReport::query(&w.client, &rest)
        .unwrap()
        .identical(&instance));

    // A unit that cannot be queried fails the report instead of being left out of it.
    let client = w.client_without(2);
    let units: Vec<_> = client.units().iter().collect();
    let err = CompareReport::query(&client, &units).unwrap_err();
    assert!(
        matches!(&err, ClientError::Transport { unit, .. } if *unit == client.units()[1].id()),
        "{err}"
    );
}

#[test]
fn installed_keys_lists_unreachable_units_instead_of_dropping_them() {
    let w = World::initialized();
    w.zeroize_one(4);
    let client = w.client_without(2);

    let found = InstalledKeys::find(&client, &[info(&w.carol), info(&w.alice)]);
    let at: Vec<(&str, usize)> = found
        .installed
        .iter()
        .map(|i| (i.key.name.as_str(), i.num))
        .collect();
    // alice is on units 1 and 3 (4 was zeroized; 2 cannot be asked); carol nowhere.
    assert_eq!(at, [("alice", 1), ("alice", 3)]);
    for i in &found.installed {
        assert_eq!(i.unit, client.units()[i.num - 1].id());
    }
    assert_eq!(found.unreachable.len(), 1);
    let u = &found.unreachable[0];
    assert_eq!((u.num, u.unit), (2, client.units()[1].id()));
    assert!(matches!(u.source, ClientError::Transport { .. }));

    // With every unit reachable nothing is unreachable and unit 2 is found.
    let found = InstalledKeys::find(&w.client, &[info(&w.alice)]);
    assert!(found.unreachable.is_empty());
    let nums: Vec<usize> = found.installed.iter().map(|i| i.num).collect();
    assert_eq!(nums, [1, 2, 3]);
}

/// Administrators whose names look the same are refused before any unit is touched: each
/// unit would refuse the second halfway through the ceremony.
#[test]
fn auto_init_refuses_lookalike_administrator_names() {
    let w = common::World::new();
    let before = w.statuses();
    let alice_again = common::key(&w.files, "Alice");
    let err = AutoInit {
        instance: w.client.instances()[0].clone(),
        sig_threshold: Threshold::new(2).unwrap(),
        rev_threshold: Threshold::new(1).unwrap(),
        admins: vec![&w.alice as &dyn Signer, &w.bob, &alice_again],
    }
    .plan(&w.client)
    .err()
    .expect("look-alike names must be refused");
    match &err {
        CeremonyError::Problems(p) => match p.as_slice() {
            [Problem::LookalikeAdmins { first, second }] => {
                assert_eq!((first.as_str(), second.as_str()), ("alice", "Alice"));
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other}"),
    }
    assert!(
        err.to_string()
            .contains("\"alice\" and \"Alice\" look the same"),
        "{err}"
    );
    assert_eq!(w.statuses(), before);
}

/// A transport whose provisioning claims to add a failover unit but adds nothing.
struct Phantom {
    inner: Arc<dyn Transport>,
}

impl Transport for Phantom {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn list_units(&self) -> Result<Vec<UnitDescriptor>, ClientError> {
        self.inner.list_units()
    }
    fn exchange(&self, unit: &UnitId, request_der: &[u8]) -> Result<Vec<u8>, ClientError> {
        self.inner.exchange(unit, request_der)
    }
    fn provisioning(&self) -> Option<&dyn Provisioning> {
        Some(self)
    }
}

impl Provisioning for Phantom {
    fn can_add_failover_units(&self, _: &tke_client::InstanceId) -> Result<(), ClientError> {
        Ok(())
    }
    fn add_failover_units(
        &self,
        instance: &tke_client::InstanceId,
        _total: usize,
    ) -> Result<Vec<UnitDescriptor>, ClientError> {
        Ok(vec![UnitDescriptor {
            instance: instance.clone(),
            unit_id: UnitId::random(),
            unit_type: UnitType::Failover,
            location: "[nowhere].[x].[01].[01]".into(),
            device_certificate: Vec::new(),
        }])
    }
}

/// The selection must be every unit of one instance, the total within the vendor's limits
/// and the fleet one that can add units; then the new units are failover units in imprint
/// mode, listed with the old ones.
#[test]
fn failover_enable_checks_selection_limits_and_fleet_then_the_result() {
    let w = World(common::World::new());
    let all: Vec<&KnownUnit> = w.client.units().iter().collect();
    let problems = |r: Result<FailoverPlan<'_>, CeremonyError>| match r.err() {
        Some(CeremonyError::Problems(p)) => p,
        other => panic!("{:?}", other.map(|e| e.to_string())),
    };
    let p = problems(
        FailoverEnable {
            units: all[..3].to_vec(),
        }
        .plan(&w.client),
    );
    assert!(
        matches!(&p[..], [Problem::InstanceNotAllSelected { unselected, .. }] if unselected == &[4]),
        "{p:?}"
    );
    // A fleet that cannot add units (the unplugging wrapper offers no provisioning).
    let other = w.client_without(1);
    let p = problems(
        FailoverEnable {
            units: other.units().iter().collect(),
        }
        .plan(&other),
    );
    assert!(matches!(&p[..], [Problem::CannotAddUnits { .. }]), "{p:?}");

    let plan = FailoverEnable { units: all.clone() }
        .plan(&w.client)
        .unwrap();
    assert_eq!(
        plan.limits(),
        FailoverLimits {
            operational: 2,
            failover: 0
        }
    );
    assert!(plan.check_total(3).is_err());
    let err = plan.execute(3).err().unwrap();
    assert!(
        matches!(&err, CeremonyError::Problems(p) if matches!(p[..], [Problem::FailoverTotal { source: FailoverTotalError::OutOfRange { total: 3, min: 2, max: 2 }, .. }])),
        "{err}"
    );
    assert_eq!(w.fleet.list_units().unwrap().len(), 4, "nothing was added");

    let plan = FailoverEnable { units: all.clone() }
        .plan(&w.client)
        .unwrap();
    let report = plan.execute(2).unwrap();
    assert_eq!(report.added.len(), 2);
    let now = report.client.instance_units(&report.instance);
    assert_eq!(now.len(), 6);
    for id in &report.added {
        let u = report.client.unit(id).unwrap();
        assert_eq!(u.unit_type(), UnitType::Failover);
        assert!(report.client.query(u).unwrap().imprint_mode());
    }
    // Full now.
    let p = problems(FailoverEnable { units: now.clone() }.plan(&report.client));
    assert!(
        matches!(
            &p[..],
            [Problem::FailoverTotal {
                source: FailoverTotalError::Full { failover: 2 },
                ..
            }]
        ),
        "{p:?}"
    );
}

/// A fleet that says it added a unit it does not list fails the check of the result.
#[test]
fn failover_enable_checks_what_the_fleet_lists_afterwards() {
    let w = common::World::new();
    let t: Arc<dyn Transport> = Arc::new(Phantom {
        inner: w.fleet.clone(),
    });
    let client = Client::connect(vec![(t, w.ca.clone())]).unwrap();
    let err = FailoverEnable {
        units: client.units().iter().collect(),
    }
    .plan(&client)
    .unwrap()
    .execute(2)
    .err()
    .unwrap();
    assert!(
        matches!(&err, CeremonyError::Roster { missing, unexpected, .. } if missing.len() == 1 && unexpected.is_empty()),
        "{err}"
    );
}
