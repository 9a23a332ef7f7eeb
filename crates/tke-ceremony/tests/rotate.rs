//! Master key rotation through the library, on an embedded fleet whose transport offers a
//! key-management service: an in-memory stand-in that keeps only what a rotation looks at
//! (each record's VP and the rotation marker) and can be made to fail part-way, as a
//! crash or a lost server would. It proves the ceremony's side of the contract: the
//! rotation it begins is exactly (current VP → new VP), it re-encrypts until nothing is
//! left, finishes, and only then sets the new key immediately; a rotation stopped inside
//! the re-encryption leaves every unit on the old key, is refused by a plain rerun and
//! finished by a resume; records under a value no unit holds stop the rotation before
//! any change.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};

use common::{info, World};
use tke_ceremony::{
    rotate::Reencryption, CeremonyError, Event, Flow, Problem, Progress, Rotate, RotationEvent,
    RotationProblem, RotationStage, Silent,
};
use tke_client::{Client, ClientError, InstanceId, Transport, UnitDescriptor};
use tke_keystore::{KeyId, KeyName};
use tke_kms::{KeyInfo, KeyService, KmsError, Rotation, Summary};
use tke_proto::{RegisterState, UnitId, Vp};
use tke_sigkey::Signer;
use zeroize::Zeroizing;

/// What the stand-in holds: one VP per record, the marker, and how many more
/// `reencrypt` calls succeed before it fails (`None`: never fails).
struct Store {
    records: Vec<Vp>,
    rotation: Option<Rotation>,
    calls_left: Option<usize>,
    /// Every call, in order, to check the ceremony's sequence.
    log: Vec<String>,
}

struct Keys(Mutex<Store>);

impl Keys {
    fn new(records: Vec<Vp>) -> Arc<Self> {
        Arc::new(Self(Mutex::new(Store {
            records,
            rotation: None,
            calls_left: None,
            log: Vec::new(),
        })))
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.0.lock().unwrap()
    }
}

fn unsupported() -> KmsError {
    KmsError::Input("not part of this stand-in".to_owned())
}

impl KeyService for Keys {
    fn create(&self, _: &KeyName, _: u32) -> Result<Vec<KeyInfo>, KmsError> {
        Err(unsupported())
    }
    fn list(&self) -> Result<Vec<KeyInfo>, KmsError> {
        Err(unsupported())
    }
    fn show(&self, _: &KeyId) -> Result<KeyInfo, KmsError> {
        Err(unsupported())
    }
    fn delete(&self, _: &KeyId) -> Result<(), KmsError> {
        Err(unsupported())
    }
    fn wrap(&self, _: &KeyId, _: &[u8]) -> Result<Vec<u8>, KmsError> {
        Err(unsupported())
    }
    fn unwrap(&self, _: &KeyId, _: &[u8]) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        Err(unsupported())
    }

    fn summary(&self) -> Result<Summary, KmsError> {
        let s = self.store();
        let mut by_vp: Vec<(Vp, u64)> = Vec::new();
        for vp in &s.records {
            match by_vp.iter_mut().find(|(v, _)| v == vp) {
                Some((_, n)) => *n += 1,
                None => by_vp.push((*vp, 1)),
            }
        }
        by_vp.sort();
        Ok(Summary {
            total: s.records.len() as u64,
            by_vp,
            rotation: s.rotation,
            location: "the test's key storage".to_owned(),
        })
    }

    fn begin_rotation(&self, rotation: Rotation) -> Result<(), KmsError> {
        let mut s = self.store();
        s.log.push("begin".to_owned());
        match s.rotation {
            Some(r) if r != rotation => Err(KmsError::Rotation("another rotation".to_owned())),
            _ => {
                s.rotation = Some(rotation);
                Ok(())
            }
        }
    }

    fn reencrypt(&self, max_records: u64) -> Result<Reencryption, KmsError> {
        let mut s = self.store();
        s.log.push("reencrypt".to_owned());
        let Some(r) = s.rotation else {
            return Err(KmsError::Rotation("no rotation".to_owned()));
        };
        if let Some(left) = s.calls_left.as_mut() {
            if *left == 0 {
                return Err(KmsError::Transport("the server went away".to_owned()));
            }
            *left -= 1;
        }
        // A small batch whatever is asked, so that a rotation takes several calls.
        let mut n = max_records.min(3);
        for vp in s.records.iter_mut().filter(|v| **v == r.from) {
            if n == 0 {
                break;
            }
            *vp = r.to;
            n -= 1;
        }
        Ok(Reencryption {
            done: s.records.iter().filter(|v| **v == r.to).count() as u64,
            total: s.records.len() as u64,
        })
    }

    fn finish_rotation(&self) -> Result<(), KmsError> {
        let mut s = self.store();
        s.log.push("finish".to_owned());
        match s.rotation {
            Some(r) if s.records.iter().all(|v| *v != r.from) => {
                s.rotation = None;
                Ok(())
            }
            _ => Err(KmsError::Rotation("records left".to_owned())),
        }
    }
}

/// The fleet's transport, with the key service.
struct WithKeys {
    fleet: Arc<dyn Transport>,
    keys: Arc<Keys>,
}

impl Transport for WithKeys {
    fn describe(&self) -> String {
        self.fleet.describe()
    }
    fn list_units(&self) -> Result<Vec<UnitDescriptor>, ClientError> {
        self.fleet.list_units()
    }
    fn exchange(&self, unit: &UnitId, request_der: &[u8]) -> Result<Vec<u8>, ClientError> {
        self.fleet.exchange(unit, request_der)
    }
    fn key_service(&self, _: &InstanceId) -> Result<Option<Arc<dyn KeyService>>, ClientError> {
        Ok(Some(self.keys.clone()))
    }
}

/// An initialized fleet (thresholds 2/1), a client whose instance has key storage of
/// `records` keys under the current master key, and that key's VP.
fn fleet_with_keys(records: usize) -> (World, Client, Arc<Keys>, Vp) {
    let w = World::initialized();
    let vp = w.statuses()[0].current_register.vp.unwrap();
    let keys = Keys::new(vec![vp; records]);
    let transport = Arc::new(WithKeys {
        fleet: w.fleet.clone(),
        keys: keys.clone(),
    });
    let client = Client::connect(vec![(transport as Arc<dyn Transport>, w.ca.clone())]).unwrap();
    (w, client, keys, vp)
}

fn rotate<'c>(
    w: &World,
    client: &'c Client,
    flow: Flow,
    resume: bool,
) -> Result<tke_ceremony::RotatePlan<'c>, CeremonyError> {
    Rotate {
        flow,
        units: client.units().iter().collect(),
        keys: vec![info(&w.alice), info(&w.bob)],
        resume,
    }
    .plan(client)
}

fn signers(w: &World) -> [&dyn Signer; 2] {
    [&w.alice as &dyn Signer, &w.bob]
}

/// Collects the rotation's events.
#[derive(Default)]
struct Events(Mutex<Vec<RotationEvent>>);

impl Progress for Events {
    fn event(&self, e: &Event) {
        if let Event::Rotation(r) = e {
            self.0.lock().unwrap().push(r.clone());
        }
    }
}

fn rotation_problems(e: CeremonyError) -> Vec<RotationProblem> {
    match e {
        CeremonyError::Problems(p) => p
            .into_iter()
            .map(|p| match p {
                Problem::Rotation(r) => *r,
                other => panic!("{other}"),
            })
            .collect(),
        other => panic!("{other}"),
    }
}

#[test]
fn auto_rotation_reencrypts_every_record_before_setting_the_new_key() {
    let (w, client, keys, old) = fleet_with_keys(10);
    let plan = rotate(&w, &client, Flow::Auto, false).unwrap();
    assert_eq!(plan.stage(), &RotationStage::NotStarted);
    assert!(plan.has_key_storage());
    let events = Events::default();
    let report = plan.execute(&signers(&w), &events).unwrap();

    assert_eq!(report.from, old);
    assert_ne!(report.to, old);
    assert_eq!(
        report.reencrypted,
        Some(Reencryption {
            done: 10,
            total: 10
        })
    );
    // Every record under the new key, the marker gone; begin, where it stands (a call of
    // 0 records), batches of 3, finish.
    let s = keys.store();
    assert!(s.records.iter().all(|v| *v == report.to));
    assert_eq!(s.rotation, None);
    assert_eq!(
        s.log,
        [
            "begin",
            "reencrypt",
            "reencrypt",
            "reencrypt",
            "reencrypt",
            "reencrypt",
            "finish"
        ]
    );
    drop(s);
    // The milestones in order: committed, re-encryption from 0 to 10, rewrapped, then
    // set immediate.
    let ev = events.0.lock().unwrap().clone();
    let at = |e: &RotationEvent| ev.iter().position(|x| x == e).unwrap();
    let reencrypting = |done| {
        ev.iter()
            .position(|x| matches!(x, RotationEvent::Reencrypting(r) if r.progress == Reencryption { done, total: 10 }))
            .unwrap()
    };
    let rewrapped = at(&RotationEvent::Rewrapped);
    assert!(at(&RotationEvent::Committed) < reencrypting(0));
    assert!(reencrypting(10) < rewrapped);
    assert!(rewrapped < at(&RotationEvent::SettingImmediate { units: 4 }));
    for s in w.statuses() {
        assert_eq!(s.current_register.vp, Some(report.to));
        assert_eq!(s.new_register.state, RegisterState::Empty);
    }
}

#[test]
fn a_rotation_stopped_inside_the_reencryption_keeps_the_old_key_and_resumes() {
    let (w, client, keys, old) = fleet_with_keys(10);
    // The call that says where it stands and two batches succeed, then key storage
    // fails.
    keys.store().calls_left = Some(3);
    let plan = rotate(&w, &client, Flow::Auto, false).unwrap();
    let err = plan.execute(&signers(&w), &Silent).unwrap_err();
    assert!(matches!(err, CeremonyError::KeyStorage { .. }), "{err}");
    // No unit dropped the old key: it is current everywhere, the new one committed.
    let statuses = w.statuses();
    let new = statuses[0].new_register.vp.unwrap();
    for s in &statuses {
        assert_eq!(s.current_register.vp, Some(old));
        assert_eq!(s.new_register.state, RegisterState::FullCommitted);
        assert_eq!(s.new_register.vp, Some(new));
    }
    keys.store().calls_left = None;

    // A plain rerun would generate another key: refused, saying where it stands.
    let stage = RotationStage::Committed {
        reencrypted: Some(Reencryption { done: 6, total: 10 }),
    };
    match rotation_problems(rotate(&w, &client, Flow::Auto, false).err().unwrap()).as_slice() {
        [RotationProblem::Interrupted { stage: s, .. }] => assert_eq!(s, &stage),
        other => panic!("{other:?}"),
    }
    // The key-part flow refuses a plain run too: the marker says a rotation is under way.
    assert!(rotate(&w, &client, Flow::KeyParts, false).is_err());

    // Resumed with the key-part command (the vendor's advice once the first milestone
    // was shown): the same rotation continues, one signature sets the key.
    let plan = rotate(&w, &client, Flow::KeyParts, true).unwrap();
    assert_eq!(plan.stage(), &stage);
    assert_eq!(plan.to(), Some(new));
    assert_eq!(plan.keys_needed().len(), 1);
    let report = plan.execute(&signers(&w), &Silent).unwrap();
    assert_eq!(report.to, new);
    assert!(keys.store().records.iter().all(|v| *v == new));
    assert_eq!(keys.store().rotation, None);
    for s in w.statuses() {
        assert_eq!(s.current_register.vp, Some(new));
        assert_eq!(s.new_register.state, RegisterState::Empty);
    }
}

#[test]
fn records_under_a_value_no_unit_holds_stop_the_rotation_before_any_change() {
    let (w, client, keys, _) = fleet_with_keys(2);
    let stranger = Vp([7; 32]);
    keys.store().records.push(stranger);
    let before = w.statuses();
    match rotation_problems(rotate(&w, &client, Flow::Auto, false).err().unwrap()).as_slice() {
        [RotationProblem::ForeignRecords { vp, count: 1, .. }] => assert_eq!(*vp, stranger),
        other => panic!("{other:?}"),
    }
    assert_eq!(w.statuses(), before);
    assert!(keys.store().log.is_empty());
}
