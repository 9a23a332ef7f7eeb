//! Multi-round ceremony files through the library: an auto-init file applied round by
//! round (each round saved with its answers, the next one built from them), and the
//! strict reading of what a multi-round file records (round states, answers, copies at
//! other rounds).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::World;
use serde_json::Value;
use tke_ceremony::approvals::{apply, merge, plan_auto_init, ApplyError, CeremonyFile, FileError};
use tke_proto::{RegisterState, Threshold};
use tke_sigkey::Signer;

/// An auto-init file for the world's instance, alice and bob, thresholds 2/2.
fn planned(w: &World) -> CeremonyFile {
    let two = Threshold::new(2).unwrap();
    plan_auto_init(
        &w.client,
        &w.client.instances()[0],
        two,
        two,
        &[w.alice.certificate().clone(), w.bob.certificate().clone()],
    )
    .unwrap()
}

/// `file`'s JSON, edited and read back.
fn reread(file: &CeremonyFile, edit: impl Fn(&mut Value)) -> Result<CeremonyFile, FileError> {
    let mut v: Value = serde_json::from_str(&file.to_json()).unwrap();
    edit(&mut v);
    CeremonyFile::from_json(&v.to_string())
}

#[test]
fn an_auto_init_file_is_applied_round_by_round_and_each_round_is_saved_with_its_answers() {
    let w = World::new();
    let mut file = planned(&w);
    assert_eq!((file.rounds.len(), file.total_rounds()), (1, 3));
    assert_eq!(CeremonyFile::from_json(&file.to_json()).unwrap(), file);

    let mut saved: Vec<CeremonyFile> = Vec::new();
    for round in 1..=3 {
        // Short of approvals: nothing is sent, nothing saved.
        let before = saved.len();
        let short = apply(&w.client, &mut file, &mut |f| {
            saved.push(f.clone());
            Ok(())
        });
        match short {
            Err(ApplyError::ShortOfApprovals {
                round: r, rounds, ..
            }) => assert_eq!((r, rounds), (round, 3)),
            other => panic!("round {round}: {other:?}"),
        }
        assert_eq!(saved.len(), before);
        // Approvals reach the current round only.
        assert!(file.approve(&w.alice).unwrap() > 0);
        file.approve(&w.bob).unwrap();
        for (i, r) in file.rounds.iter().enumerate() {
            let approved = r.commands.iter().all(|c| c.approved_by(w.bob.ski()));
            assert!(approved, "round {} holds bob's approvals", i + 1);
        }
        let out = apply(&w.client, &mut file, &mut |f| {
            saved.push(f.clone());
            Ok(())
        });
        if round < 3 {
            assert!(
                matches!(out, Err(ApplyError::ShortOfApprovals { round: r, applied: 1, .. }) if r == round + 1),
                "{out:?}"
            );
        } else {
            out.unwrap();
        }
        // Each saved state reads back: the answers recorded, the next round rebuilt.
        let last = saved.last().unwrap();
        assert_eq!(&CeremonyFile::from_json(&last.to_json()).unwrap(), last);
        assert!(file.rounds[round - 1].applied);
        assert!(file.rounds[round - 1]
            .commands
            .iter()
            .all(|c| c.answer.is_some()));
    }
    // Round 1 saved (answers), round 2 added; round 2 saved, round 3 added; round 3.
    assert_eq!(saved.len(), 5);
    let statuses: Vec<_> = w
        .client
        .units()
        .iter()
        .map(|u| w.client.query(u).unwrap())
        .collect();
    let vp = statuses[0].current_register.vp;
    assert!(vp.is_some());
    for s in &statuses {
        assert_eq!(s.current_register.state, RegisterState::Valid);
        assert_eq!(s.current_register.vp, vp);
        assert_eq!((s.sig_threshold, s.rev_threshold), (2, 2));
    }
    // A second apply sends and saves nothing.
    let again = apply(&w.client, &mut file, &mut |_| panic!("saved again")).unwrap();
    assert!(again.iter().all(|a| a.already));
    assert_eq!(file.approve(&w.alice).unwrap(), 0);
}

#[test]
fn a_multi_round_file_records_its_rounds_strictly() {
    let w = World::new();
    let mut file = planned(&w);
    file.approve(&w.alice).unwrap();
    file.approve(&w.bob).unwrap();
    let copy = file.clone();
    apply(&w.client, &mut file, &mut |_| Ok(())).unwrap_err();
    assert!(file.rounds[0].applied && file.rounds.len() == 2);

    // An applied round without its answers, an applied round said planned (before an
    // applied one... the next round), answers in a planned round: each refused.
    let layout = |r: Result<CeremonyFile, FileError>| matches!(r, Err(FileError::Layout { .. }));
    assert!(layout(reread(&file, |v| {
        v["rounds"][0]["commands"][0]
            .as_object_mut()
            .unwrap()
            .remove("answer");
    })));
    assert!(layout(reread(&file, |v| {
        v["rounds"][0]["state"] = Value::from("planned");
    })));
    assert!(layout(reread(&file, |v| {
        v["rounds"][1]["commands"][0]["answer"] = Value::from("00");
    })));
    // A verification pattern answered in round 1 that is not one. (One of the right
    // shape but another value reads: nothing sent in round 2 depends on it, and the
    // envelopes the export answers are checked against it before round 3 is made.)
    let vp_edit = reread(&file, |v| {
        for c in v["rounds"][0]["commands"].as_array_mut().unwrap() {
            if c["summary"] == "generate a random master key" {
                c["answer"] = Value::from("00");
            }
        }
    });
    assert!(
        matches!(vp_edit, Err(FileError::Answer { round: 1, .. })),
        "{vp_edit:?}"
    );
    // A round the kind does not have.
    let extra = reread(&file, |v| {
        let r = v["rounds"][1].clone();
        let rounds = v["rounds"].as_array_mut().unwrap();
        rounds.push(r.clone());
        rounds.push(r);
    });
    assert!(extra.is_err());

    // Copies at different rounds do not merge; copies of the same round do.
    assert!(matches!(
        merge(vec![copy, file.clone()]),
        Err(FileError::MergeMismatch { index: 2 })
    ));
    let mut a = file.clone();
    let mut b = file.clone();
    a.approve(&w.alice).unwrap();
    b.approve(&w.bob).unwrap();
    let merged = merge(vec![a, b]).unwrap();
    assert!(merged.rounds[1]
        .commands
        .iter()
        .all(|c| c.approved_by(w.alice.ski()) && c.approved_by(w.bob.ski())));

    // A verification pattern of the right shape but another value: the export runs (it
    // does not depend on it), its envelopes do not carry that value, so the answers are
    // refused before round 3 is made or anything is saved.
    let mut forged = reread(&file, |v| {
        for c in v["rounds"][0]["commands"].as_array_mut().unwrap() {
            if c["summary"] == "generate a random master key" {
                c["answer"] = Value::from("11".repeat(32));
            }
        }
    })
    .unwrap();
    forged.approve(&w.alice).unwrap();
    forged.approve(&w.bob).unwrap();
    let refused = apply(&w.client, &mut forged, &mut |_| panic!("saved"));
    assert!(
        matches!(
            refused,
            Err(ApplyError::File(FileError::Answer { round: 2, .. }))
        ),
        "{refused:?}"
    );
    assert_eq!(forged.rounds.len(), 2, "no round 3");
}
