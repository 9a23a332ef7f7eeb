//! Ceremonies under interference: someone holding only the API key reaches the units
//! while a ceremony runs. In imprint mode they may add and remove administrators without
//! any signature; the ceremony must notice (its counters moved, the units hold foreign
//! administrators) and stop before any master key exists. The interferer is a wrapper
//! transport that, on a chosen command of the ceremony to a chosen unit, runs its own
//! commands through a second client of the same fleet.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc, Mutex,
};

use common::info;
use tke_ceremony::{
    AutoInit, CeremonyError, Checkpoint, Deviation, Event, Expected, Progress, Silent, Zeroize,
};
use tke_client::{Client, ClientError, Transport, UnitDescriptor};
use tke_proto::{
    der::Decode, CaCertificate, Command, CommandId, RegisterState, RegisterStatus, Request, Ski,
    Threshold, UnitId,
};
use tke_sigkey::Signer;
use tke_sigkey_file::FileSigner;
use tke_workstation::FilesDir;

/// What the interferer does, through its own client, to the unit it watches.
type Act = Box<dyn Fn(&Client, &UnitId) + Send + Sync>;

/// The fleet's transport, plus someone who acts on one unit when the ceremony sends it
/// the `nth` (1-based) command `trigger`: just before it arrives, or just after its answer.
struct Interferer {
    inner: Arc<dyn Transport>,
    ca: CaCertificate,
    target: UnitId,
    trigger: CommandId,
    nth: usize,
    after: bool,
    seen: AtomicUsize,
    act: Act,
}

impl Interferer {
    fn fires(&self, unit: &UnitId, request_der: &[u8]) -> bool {
        let Ok(Request::Command(c)) = Request::from_der(request_der) else {
            return false;
        };
        let Ok(command) = c.admin_command() else {
            return false;
        };
        *unit == self.target
            && command.command == self.trigger
            && self.seen.fetch_add(1, Ordering::SeqCst) + 1 == self.nth
    }

    fn interfere(&self) {
        let rogue = Client::connect(vec![(self.inner.clone(), self.ca.clone())]).unwrap();
        (self.act)(&rogue, &self.target);
    }
}

impl Transport for Interferer {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn list_units(&self) -> Result<Vec<UnitDescriptor>, ClientError> {
        self.inner.list_units()
    }
    fn exchange(&self, unit: &UnitId, request_der: &[u8]) -> Result<Vec<u8>, ClientError> {
        let fire = self.fires(unit, request_der);
        if fire && !self.after {
            self.interfere();
        }
        let answer = self.inner.exchange(unit, request_der);
        if fire && self.after {
            self.interfere();
        }
        answer
    }
}

/// Records every milestone.
#[derive(Default)]
struct Recorder(Mutex<Vec<Event>>);

impl Progress for Recorder {
    fn event(&self, event: &Event) {
        self.0.lock().unwrap().push(event.clone());
    }
}

/// The common world, plus a stranger.
struct World {
    base: common::World,
    _rogue_dir: tempfile::TempDir,
    /// A stranger's key, its certificate named "carol" too.
    rogue: FileSigner,
}

impl std::ops::Deref for World {
    type Target = common::World;
    fn deref(&self) -> &common::World {
        &self.base
    }
}

impl World {
    /// The default fleet, all in imprint mode.
    fn new() -> Self {
        let rogue_dir = tempfile::tempdir().unwrap();
        let rogue_files = FilesDir::resolve(Some(rogue_dir.path())).unwrap();
        Self {
            base: common::World::new(),
            rogue: common::key(&rogue_files, "carol"),
            _rogue_dir: rogue_dir,
        }
    }

    /// A client whose transport lets `act` run on unit `num` around the `nth` `trigger`.
    fn interfered(
        &self,
        num: usize,
        trigger: CommandId,
        nth: usize,
        after: bool,
        act: Act,
    ) -> Client {
        let t: Arc<dyn Transport> = Arc::new(Interferer {
            inner: self.fleet.clone(),
            ca: self.ca.clone(),
            target: self.client.units()[num - 1].id(),
            trigger,
            nth,
            after,
            seen: AtomicUsize::new(0),
            act,
        });
        Client::connect(vec![(t, self.ca.clone())]).unwrap()
    }

    /// alice, bob and carol, thresholds 2/1: alice and bob sign, carol does not.
    fn auto_init(&self, client: &Client, progress: &dyn Progress) -> Result<(), CeremonyError> {
        AutoInit {
            instance: client.instances()[0].clone(),
            sig_threshold: Threshold::new(2).unwrap(),
            rev_threshold: Threshold::new(1).unwrap(),
            admins: vec![&self.alice as &dyn Signer, &self.bob, &self.carol],
        }
        .plan(client)?
        .execute(progress)
        .map(|_| ())
    }

    fn assert_no_master_key(&self) {
        for s in self.statuses() {
            assert_eq!(s.current_register, RegisterStatus::EMPTY);
            assert_eq!(s.new_register, RegisterStatus::EMPTY);
        }
    }
}

#[test]
fn a_rogue_administrator_swapped_in_during_imprint_mode_stops_auto_init() {
    let w = World::new();
    let start = w.statuses()[1].counter;
    // Just before the thresholds reach unit 2, the interferer removes carol there and
    // installs its own certificate under her name: no signature needed in imprint mode.
    let (carol, rogue) = (w.carol.ski(), w.rogue.certificate().clone());
    let client = w.interfered(
        2,
        CommandId::SetThresholds,
        1,
        false,
        Box::new(move |c, unit| {
            let u = c.unit(unit).unwrap();
            c.run(u, &Command::RemoveAdmin(carol), &[]).unwrap();
            c.run(u, &Command::AddAdmin(rogue.clone()), &[]).unwrap();
        }),
    );
    let events = Recorder::default();
    let err = w.auto_init(&client, &events).unwrap_err();

    let CeremonyError::Interference {
        step,
        units,
        failures,
    } = &err
    else {
        panic!("not reported as interference: {err}");
    };
    assert_eq!(*step, "Setting signature thresholds");
    assert!(failures.is_empty(), "{err}");
    assert_eq!(units.len(), 1, "{err}");
    assert_eq!((units[0].num, units[0].unit), (2, w.client.units()[1].id()));
    assert_eq!(
        units[0].deviations,
        [
            // Three administrators installed by the ceremony, two commands by the rogue.
            Deviation::Counter {
                expected: start + 3,
                found: start + 5
            },
            Deviation::Administrators {
                foreign: vec![info(&w.rogue)],
                missing: vec![info(&w.carol)],
            },
        ]
    );
    // The message names the unit and the foreign SKI.
    let text = err.to_string();
    assert!(
        text.contains(&w.client.units()[1].id().uuid().to_string()),
        "{text}"
    );
    assert!(
        text.contains(&format!("foreign carol (SKI {})", w.rogue.ski().to_hex())),
        "{text}"
    );

    // Nothing further was sent: no master key anywhere, no check passed.
    w.assert_no_master_key();
    let events = events.0.lock().unwrap();
    assert!(!events.contains(&Event::GeneratingMasterKey), "{events:?}");
    assert!(!events.iter().any(|e| matches!(e, Event::Verified { .. })));
    // Unit 2 is still in imprint mode, with the rogue certificate the operator must see.
    let s = &w.statuses()[1];
    assert!(s.imprint_mode());
    assert!(s.admins.contains(&info(&w.rogue)));
}

#[test]
fn a_counter_bumped_by_someone_else_in_imprint_mode_is_interference() {
    let w = World::new();
    let start = w.statuses()[2].counter;
    // Before bob reaches unit 3, the interferer sends an unsigned command that changes
    // nothing but consumes a counter value (removing an administrator nobody installed).
    let client = w.interfered(
        3,
        CommandId::AddAdmin,
        2,
        false,
        Box::new(|c, unit| {
            let u = c.unit(unit).unwrap();
            let nobody = Ski::from_slice(&[7; 32]).unwrap();
            let refused = c.run(u, &Command::RemoveAdmin(nobody), &[]).unwrap_err();
            assert!(matches!(refused, ClientError::Module { .. }), "{refused}");
        }),
    );
    let err = w.auto_init(&client, &Silent).unwrap_err();
    let CeremonyError::Interference { step, units, .. } = &err else {
        panic!("not reported as interference: {err}");
    };
    assert_eq!(*step, "Installing administrators");
    assert_eq!(units.len(), 1, "{err}");
    assert_eq!(units[0].num, 3);
    // Its state is what the ceremony left (alice alone): only the counter moved.
    assert_eq!(
        units[0].deviations,
        [Deviation::Counter {
            expected: start + 1,
            found: start + 2
        }]
    );

    // Nothing further: bob never reached unit 3, carol nowhere, thresholds never set.
    let statuses = w.statuses();
    assert_eq!(statuses[2].admins, [info(&w.alice)]);
    for s in &statuses {
        assert!(s.imprint_mode());
        assert!(!s.admins.contains(&info(&w.carol)));
    }
    w.assert_no_master_key();
}

#[test]
fn a_clean_auto_init_checks_its_post_conditions() {
    let w = World::new();
    let events = Recorder::default();
    w.auto_init(&w.client, &events).unwrap();

    let events = events.0.lock().unwrap();
    let at = |e: &Event| events.iter().position(|x| x == e).unwrap();
    let left = at(&Event::Verified {
        checkpoint: Checkpoint::ImprintModeLeft,
        units: 4,
    });
    let finished = at(&Event::Verified {
        checkpoint: Checkpoint::Finished,
        units: 4,
    });
    // Checked after leaving imprint mode and before any key exists; then at the very end.
    assert!(at(&Event::SettingThresholds) < left);
    assert!(left < at(&Event::GeneratingMasterKey));
    assert_eq!(finished, events.len() - 1);

    // The same check, run again, holds on every unit.
    let statuses = w.statuses();
    let vp = statuses[0].current_register.vp;
    let done = Expected {
        admins: vec![info(&w.carol), info(&w.alice), info(&w.bob)],
        sig_threshold: 2,
        rev_threshold: 1,
        current_register: RegisterStatus {
            state: RegisterState::Valid,
            vp,
        },
        ..Expected::imprint(Vec::new())
    };
    let units: Vec<_> = w.client.units().iter().collect();
    done.check(&w.client, &units, None, "checking").unwrap();
    for s in &statuses {
        assert!(done.deviations(s).is_empty());
    }
}

#[test]
fn the_post_condition_check_names_each_differing_unit_and_how() {
    let w = World::new();
    let units: Vec<_> = w.client.units().iter().collect();
    // alice everywhere, except on unit 4, which holds the rogue "carol" as well.
    for u in &units {
        w.client
            .run(u, &Command::AddAdmin(w.alice.certificate().clone()), &[])
            .unwrap();
    }
    w.client
        .run(
            units[3],
            &Command::AddAdmin(w.rogue.certificate().clone()),
            &[],
        )
        .unwrap();
    let wanted = Expected::imprint(vec![info(&w.alice), info(&w.carol)]);
    let err = wanted
        .check(&w.client, &units, None, "Installing administrators")
        .unwrap_err();
    let CeremonyError::PostCondition { after, units: bad } = &err else {
        panic!("{err}");
    };
    assert_eq!(*after, "Installing administrators");
    let summary: Vec<(usize, Vec<Deviation>)> =
        bad.iter().map(|u| (u.num, u.deviations.clone())).collect();
    let missing_carol = Deviation::Administrators {
        foreign: vec![],
        missing: vec![info(&w.carol)],
    };
    assert_eq!(
        summary,
        [
            (1, vec![missing_carol.clone()]),
            (2, vec![missing_carol.clone()]),
            (3, vec![missing_carol]),
            (
                4,
                vec![Deviation::Administrators {
                    foreign: vec![info(&w.rogue)],
                    missing: vec![info(&w.carol)],
                }]
            ),
        ]
    );
    assert!(err.to_string().starts_with(
        "Installing administrators: the crypto units do not hold what was asked; nothing further was sent:\n  - crypto unit 1 ("
    ));
}

#[test]
fn a_rogue_administrator_installed_right_after_zeroize_fails_its_post_condition() {
    let w = World::new();
    w.auto_init(&w.client, &Silent).unwrap();
    // As soon as unit 3 answers the zeroize, it is in imprint mode: the interferer
    // installs its certificate there, unsigned.
    let rogue = w.rogue.certificate().clone();
    let client = w.interfered(
        3,
        CommandId::Zeroize,
        1,
        true,
        Box::new(move |c, unit| {
            c.run(
                c.unit(unit).unwrap(),
                &Command::AddAdmin(rogue.clone()),
                &[],
            )
            .unwrap();
        }),
    );
    // Alice and bob: the recovery units need the signature threshold, 2.
    let err = Zeroize {
        units: client.units().iter().collect(),
        keys: vec![info(&w.alice), info(&w.bob)],
    }
    .plan(&client)
    .unwrap()
    .execute(&[&w.alice as &dyn Signer, &w.bob])
    .unwrap_err();
    let CeremonyError::PostCondition { after, units } = &err else {
        panic!("{err}");
    };
    assert_eq!(*after, "Zeroizing crypto units");
    assert_eq!(units.len(), 1, "{err}");
    assert_eq!((units[0].num, units[0].unit), (3, w.client.units()[2].id()));
    assert_eq!(
        units[0].deviations,
        [Deviation::Administrators {
            foreign: vec![info(&w.rogue)],
            missing: vec![],
        }]
    );
    assert!(err.to_string().contains(&w.rogue.ski().to_hex()));
}
