//! `auto-init` of an instance larger than one export batch: 20 units on two `tke-unitd`
//! processes (one fleet CA, one instance id), so the key leaves the recovery unit in two
//! `exportMkBatch` commands (16 + 3 targets).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::sync::Mutex;

use common::*;
use tke_ceremony::{AutoInit, Checkpoint, Event, Progress};
use tke_proto::{command::MAX_EXPORT_TARGETS, RegisterState, Threshold, UnitType};
use tke_sigkey::Signer;

struct Events(Mutex<Vec<Event>>);

impl Progress for Events {
    fn event(&self, e: &Event) {
        self.0.lock().unwrap().push(e.clone());
    }
}

#[test]
fn twenty_units_on_two_servers_get_the_key_in_two_export_batches() {
    let d = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (d.path().join("a"), d.path().join("b"));
    let (a_port, b_port) = (free_port(), free_port());
    init(
        &a_dir,
        a_port,
        &["--operational", "6", "--recovery", "2", "--failover", "3"],
    );
    let instance_id = format!("@{}", a_dir.join("instance-id").display());
    let api_key = a_dir.join("api-key");
    join(
        &b_dir,
        b_port,
        &a_dir,
        &[
            "--operational",
            "6",
            "--recovery",
            "0",
            "--failover",
            "3",
            "--instance-id",
            &instance_id,
            "--api-key-file",
            api_key.to_str().unwrap(),
        ],
    );
    let a = ServerProc::start(&a_dir, a_port);
    let b = ServerProc::start(&b_dir, b_port);
    let client = fleet_client(&[&a, &b], &ca_of(&a_dir), &api_key);
    let instances = client.instances();
    assert_eq!(instances.len(), 1, "one instance over both servers");
    let units = client.instance_units(&instances[0]);
    assert_eq!(units.len(), 20);
    let targets = units.len() - 1;
    assert!(targets > MAX_EXPORT_TARGETS, "needs more than one batch");

    let admins = [
        MemSigner::new("alice"),
        MemSigner::new("bob"),
        MemSigner::new("carol"),
    ];
    let events = Events(Mutex::new(Vec::new()));
    let report = AutoInit {
        instance: instances[0].clone(),
        sig_threshold: Threshold::new(2).unwrap(),
        rev_threshold: Threshold::new(2).unwrap(),
        admins: admins.iter().map(|s| s as &dyn Signer).collect(),
    }
    .plan(&client)
    .unwrap()
    .execute(&events)
    .unwrap();

    // Every unit holds the one key, valid, with the requested thresholds.
    let generator = client
        .units()
        .iter()
        .find(|u| u.num == report.generated_in)
        .unwrap();
    assert_eq!(generator.unit_type(), UnitType::Recovery);
    for u in &units {
        let s = client.query(u).unwrap();
        assert_eq!(
            s.current_register.state,
            RegisterState::Valid,
            "unit {}",
            u.num
        );
        assert_eq!(s.current_register.vp, Some(report.vp), "unit {}", u.num);
        assert_eq!((s.sig_threshold, s.rev_threshold), (2, 2));
        // Each counter tells how many commands the unit ran: 3 administrators,
        // thresholds, then generate + 2 export batches on the generating unit, and
        // importer + import + commit + set immediate everywhere else.
        let expected = if u.id() == generator.id() {
            3 + 1 + 1 + 2
        } else {
            3 + 1 + 4
        };
        assert_eq!(s.counter, expected, "commands run by unit {}", u.num);
    }

    // Progress: each stage once, in order, then one line per unit reached.
    let mut expected: Vec<Event> = (1..=3)
        .map(|index| Event::InstallingAdmin { index, total: 3 })
        .collect();
    expected.push(Event::SettingThresholds);
    // Exactly our administrators and thresholds on all 20 units before any key exists.
    expected.push(Event::Verified {
        checkpoint: Checkpoint::ImprintModeLeft,
        units: units.len(),
    });
    expected.push(Event::GeneratingMasterKey);
    expected.extend((1..=targets).map(|index| Event::TransferringMasterKey {
        index,
        total: targets,
    }));
    expected.push(Event::Verified {
        checkpoint: Checkpoint::Finished,
        units: units.len(),
    });
    assert_eq!(events.0.into_inner().unwrap(), expected);
}
