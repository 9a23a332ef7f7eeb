//! `auto-recover` through the library: every problem reported at once with nothing
//! changed, and a command from someone else between plan and act stopping the ceremony
//! before the key is exported, after which planning again finishes it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{imprint_mode, info};
use tke_ceremony::{AutoRecover, CeremonyError, Deviation, Problem, Rule, Silent, Stage};
use tke_proto::{Command, RegisterState, Threshold};
use tke_sigkey::Signer;

/// Zeroizes unit `num` (signed by alice and bob: a recovery unit needs both), and unless
/// `imprint`, installs alice and bob and sets thresholds `sig`/`rev` again.
fn zeroize(w: &common::World, num: usize, imprint: bool, (sig, rev): (u32, u32)) {
    let u = &w.client.units()[num - 1];
    let both: [&dyn Signer; 2] = [&w.alice, &w.bob];
    w.client.run(u, &Command::Zeroize, &both).unwrap();
    if imprint {
        return;
    }
    for a in both {
        w.client
            .run(u, &Command::AddAdmin(a.certificate().clone()), &[])
            .unwrap();
    }
    let cmd = Command::SetThresholds {
        signature: Threshold::new(sig).unwrap(),
        revocation: Threshold::new(rev).unwrap(),
    };
    w.client.run(u, &cmd, &both[..sig as usize]).unwrap();
}

#[test]
fn every_problem_is_reported_at_once_and_nothing_changes() {
    let w = common::World::initialized();
    zeroize(&w, 1, true, (0, 0));
    zeroize(&w, 2, false, (1, 1));
    zeroize(&w, 4, false, (2, 1));
    let before = w.statuses();
    let instance = w.client.instances()[0].clone();

    let err = AutoRecover {
        instance: instance.clone(),
        source: None,
        keys: vec![info(&w.alice)],
        to_instances: Vec::new(),
        force_with_keys: Vec::new(),
    }
    .plan(&w.client)
    .err()
    .expect("refused");
    let CeremonyError::Problems(problems) = &err else {
        panic!("{err}");
    };
    assert_eq!(problems.len(), 3, "{err}");
    assert!(
        matches!(&problems[0], p @ Problem::Precondition { num: 1, .. } if imprint_mode(p)),
        "{err}"
    );
    assert!(
        matches!(
            &problems[1],
            Problem::Precondition {
                num: 2,
                rule: Rule::ThresholdsDiffer {
                    found: (1, 1),
                    from: 3,
                    expected: (2, 1)
                },
                ..
            }
        ),
        "{err}"
    );
    // Unit 4 fits, but alice alone is no quorum of 2 on it and on the source.
    assert!(
        matches!(&problems[2], Problem::NoCommonQuorum { from: 3, needed: 2, usable, common }
            if usable.len() == 1 && common.len() == 2),
        "{err}"
    );
    assert_eq!(w.statuses(), before, "a refused plan changed a unit");

    // With bob too, only the two units not ready are left.
    let err = AutoRecover {
        instance,
        source: None,
        keys: vec![info(&w.alice), info(&w.bob)],
        to_instances: Vec::new(),
        force_with_keys: Vec::new(),
    }
    .plan(&w.client)
    .err()
    .expect("refused");
    assert!(
        matches!(&err, CeremonyError::Problems(p) if p.len() == 2),
        "{err}"
    );
}

#[test]
fn a_command_from_someone_else_stops_it_before_the_export_and_a_new_plan_finishes() {
    let w = common::World::initialized();
    let vp = w.statuses()[0].current_register.vp.unwrap();
    zeroize(&w, 2, false, (2, 1));
    zeroize(&w, 4, false, (2, 1));
    let instance = w.client.instances()[0].clone();
    let keys = vec![info(&w.alice), info(&w.bob)];
    let plan = AutoRecover {
        instance: instance.clone(),
        source: None,
        keys: keys.clone(),
        to_instances: Vec::new(),
        force_with_keys: Vec::new(),
    }
    .plan(&w.client)
    .unwrap();
    assert_eq!(plan.source().num, 3);
    let stages: Vec<(usize, Stage)> = plan
        .targets()
        .iter()
        .map(|t| (t.unit.num, t.stage))
        .collect();
    assert_eq!(stages, [(2, Stage::Transfer), (4, Stage::Transfer)]);
    assert_eq!(plan.holding()[0].0.num, 1);

    // Someone else makes an importer key on unit 2 after the plan read its counter.
    let u2 = &w.client.units()[1];
    w.client
        .run(u2, &Command::GenerateImporter, &[&w.alice as &dyn Signer])
        .unwrap();
    let source_before = w.statuses()[2].clone();
    let signers: [&dyn Signer; 2] = [&w.alice, &w.bob];
    let err = plan.execute(&signers, &Silent).expect_err("interference");
    let CeremonyError::Interference { units, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(units.len(), 1, "{err}");
    assert_eq!(units[0].num, 2);
    assert!(
        matches!(units[0].deviations[0], Deviation::Counter { .. }),
        "{err}"
    );
    // Nothing was exported: the source's counter did not move.
    assert_eq!(w.statuses()[2], source_before);

    // Planning again finishes: both targets hold the key current, nothing pending.
    let report = AutoRecover {
        instance,
        source: None,
        keys,
        to_instances: Vec::new(),
        force_with_keys: Vec::new(),
    }
    .plan(&w.client)
    .unwrap()
    .execute(&signers, &Silent)
    .unwrap();
    assert_eq!((report.source, report.vp), (3, vp));
    assert_eq!(report.recovered, [2, 4]);
    assert_eq!(report.unchanged, [1]);
    for s in w.statuses() {
        assert_eq!(s.current_register.state, RegisterState::Valid);
        assert_eq!(s.current_register.vp, Some(vp));
        assert_eq!(s.new_register.state, RegisterState::Empty);
        assert!(!s.importer_pending);
    }
}

/// Another instance certified by another fleet CA never receives the key: every one of
/// its units is refused before anything is sent, and nothing changes anywhere.
#[test]
fn another_instance_of_another_fleet_ca_is_refused() {
    use std::sync::Arc;
    use tke_client::{Client, EmbeddedFleet, FleetSpec, Transport};
    let w = common::World::initialized();
    // A second embedded fleet, with a CA of its own, out of imprint mode like the first.
    let dir = tempfile::tempdir().unwrap();
    let other = EmbeddedFleet::create(dir.path(), FleetSpec::default()).unwrap();
    let other_ca = other.ca().clone();
    let other: Arc<dyn Transport> = Arc::new(other);
    let alone = Client::connect(vec![(other.clone(), other_ca.clone())]).unwrap();
    for u in alone.units() {
        for a in [&w.alice, &w.bob] {
            alone
                .run(u, &Command::AddAdmin(a.certificate().clone()), &[])
                .unwrap();
        }
        let cmd = Command::SetThresholds {
            signature: Threshold::new(2).unwrap(),
            revocation: Threshold::new(1).unwrap(),
        };
        alone.run(u, &cmd, &[&w.alice, &w.bob]).unwrap();
    }
    let both = Client::connect(vec![(w.fleet.clone(), w.ca.clone()), (other, other_ca)]).unwrap();
    let before: Vec<_> = both
        .units()
        .iter()
        .map(|u| both.query(u).unwrap())
        .collect();
    let err = AutoRecover {
        instance: w.client.instances()[0].clone(),
        source: None,
        keys: vec![info(&w.alice), info(&w.bob)],
        to_instances: vec![alone.instances()[0].clone()],
        force_with_keys: Vec::new(),
    }
    .plan(&both)
    .err()
    .expect("refused");
    let CeremonyError::Problems(problems) = &err else {
        panic!("{err}");
    };
    let refused: Vec<usize> = problems
        .iter()
        .map(|p| match p {
            Problem::Precondition {
                num,
                rule: Rule::OtherFleetCa { from: 3 },
                ..
            } => *num,
            other => panic!("unexpected problem: {other}"),
        })
        .collect();
    assert_eq!(refused, [5, 6, 7, 8], "{err}");
    let after: Vec<_> = both
        .units()
        .iter()
        .map(|u| both.query(u).unwrap())
        .collect();
    assert_eq!(before, after);
}

/// What an approver reads of an export or import that crosses instances names the other
/// instance; the same-instance ones read as before.
#[test]
fn approval_summaries_name_the_other_instance() {
    use tke_ceremony::approvals::describe;
    use tke_proto::{
        der::asn1::OctetString,
        transport::{CertifiedImporter, ExportRequest, SignedEnvelope},
        InstanceId, Register,
    };
    let os = |b: &[u8]| OctetString::new(b.to_vec()).unwrap();
    let other = InstanceId::from_uuid("0b6f0c8e-5d6a-4b8e-9a51-0c2f8e7d6b1a").unwrap();
    let envelope = |source_instance| {
        Command::ImportMk(Box::new(SignedEnvelope {
            envelope: os(b"e"),
            signature: os(b"s"),
            source_certificate: os(b"c"),
            source_instance,
        }))
    };
    let request = |target_instance| ExportRequest {
        register: Register::Current,
        target_certificate: os(b"c"),
        importer: CertifiedImporter {
            importer: os(b"i"),
            signature: os(b"s"),
        },
        target_instance,
    };
    assert_eq!(
        describe(&envelope(None)),
        "import a master key into the new register"
    );
    assert_eq!(
        describe(&envelope(Some(other))),
        "import a master key from a recovery unit of ANOTHER service instance, 0b6f0c8e-5d6a-4b8e-9a51-0c2f8e7d6b1a, into the new register"
    );
    assert_eq!(
        describe(&Command::ExportMk(Box::new(request(Some(other))))),
        "export the Current master key register to a crypto unit of ANOTHER service instance, 0b6f0c8e-5d6a-4b8e-9a51-0c2f8e7d6b1a"
    );
    assert_eq!(
        describe(&Command::ExportMkBatch(vec![
            request(None),
            request(Some(other)),
            request(Some(other)),
        ])),
        "export a master key register to 3 other crypto units (2 of them of ANOTHER service instance: 0b6f0c8e-5d6a-4b8e-9a51-0c2f8e7d6b1a)"
    );
}
