//! The key-storage guard of zeroize and clear-current, against a key-service test double:
//! the embedded fleet has no key storage yet (`Client::key_service` answers `None`), so a
//! transport wrapper offers one that says what it holds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::info;
use tke_ceremony::{
    guard::{Destruction, KeyStorageGuard, RecoverySource, Storage},
    CeremonyError, MkRegister, Problem, RegisterAction, Zeroize,
};
use tke_client::{Client, ClientError, InstanceId, Transport, UnitDescriptor};
use tke_keystore::{KeyId, KeyName};
use tke_kms::{KeyInfo, KeyService, KmsError, Progress, Rotation, Summary};
use tke_proto::{ErrorChain, UnitId, Vp};
use zeroize::Zeroizing;

/// A key service that only tells what it holds (or that it cannot be read).
struct Holding(Result<Summary, &'static str>);

impl Holding {
    fn summary_or_error(&self) -> Result<Summary, KmsError> {
        self.0
            .clone()
            .map_err(|e| KmsError::Transport(e.to_owned()))
    }
}

/// What the double does not do.
fn not_here() -> KmsError {
    KmsError::NoUnit("the test double only answers summary".to_owned())
}

impl KeyService for Holding {
    fn create(&self, _: &KeyName, _: u32) -> Result<Vec<KeyInfo>, KmsError> {
        Err(not_here())
    }
    fn list(&self) -> Result<Vec<KeyInfo>, KmsError> {
        Err(not_here())
    }
    fn show(&self, _: &KeyId) -> Result<KeyInfo, KmsError> {
        Err(not_here())
    }
    fn delete(&self, _: &KeyId) -> Result<(), KmsError> {
        Err(not_here())
    }
    fn wrap(&self, _: &KeyId, _: &[u8]) -> Result<Vec<u8>, KmsError> {
        Err(not_here())
    }
    fn unwrap(&self, _: &KeyId, _: &[u8]) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        Err(not_here())
    }
    fn summary(&self) -> Result<Summary, KmsError> {
        self.summary_or_error()
    }
    fn begin_rotation(&self, _: Rotation) -> Result<(), KmsError> {
        Err(not_here())
    }
    fn reencrypt(&self, _: u64) -> Result<Progress, KmsError> {
        Err(not_here())
    }
    fn finish_rotation(&self) -> Result<(), KmsError> {
        Err(not_here())
    }
}

/// The fleet's transport, offering `service` as every instance's key service.
struct WithKeys {
    inner: Arc<dyn Transport>,
    service: Arc<dyn KeyService>,
}

impl Transport for WithKeys {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn list_units(&self) -> Result<Vec<UnitDescriptor>, ClientError> {
        self.inner.list_units()
    }
    fn exchange(&self, unit: &UnitId, request_der: &[u8]) -> Result<Vec<u8>, ClientError> {
        self.inner.exchange(unit, request_der)
    }
    fn key_service(&self, _: &InstanceId) -> Result<Option<Arc<dyn KeyService>>, ClientError> {
        Ok(Some(self.service.clone()))
    }
}

/// An initialized fleet (units 1-2 operational, 3-4 recovery, one master key), a client
/// whose key service holds `keys` records under `vp` (the master key's when `None`), and
/// the master key's VP.
fn fleet(keys: u64, vp: Option<Vp>) -> (common::World, Client, Vp) {
    let w = common::World::initialized();
    let mk = w.statuses()[0].current_register.vp.unwrap();
    let client = with_service(
        &w,
        Ok(Summary {
            total: keys,
            by_vp: vec![(vp.unwrap_or(mk), keys)],
            rotation: None,
            location: "keys.sqlite".to_owned(),
        }),
    );
    (w, client, mk)
}

fn with_service(w: &common::World, summary: Result<Summary, &'static str>) -> Client {
    let t: Arc<dyn Transport> = Arc::new(WithKeys {
        inner: w.fleet.clone(),
        service: Arc::new(Holding(summary)),
    });
    Client::connect(vec![(t, w.ca.clone())]).unwrap()
}

/// Clearing the current register of unit 2, guarded by `guard`.
fn clear_current<'c>(
    client: &'c Client,
    guard: &KeyStorageGuard,
    alice: &tke_proto::AdminInfo,
) -> Result<tke_ceremony::Plan<'c>, CeremonyError> {
    MkRegister {
        action: RegisterAction::ClearCurrent,
        units: vec![&client.units()[1]],
        keys: vec![alice.clone()],
    }
    .plan_guarded(client, guard)
}

/// The one problem of a refused plan: the key-storage guard's, on unit `num`.
fn guarded(err: &CeremonyError, num: usize, what: Destruction) -> String {
    let CeremonyError::Problems(problems) = err else {
        panic!("refused for another reason: {err}");
    };
    match problems.as_slice() {
        [Problem::Guarded {
            num: n,
            what: w,
            guard: "key storage",
            source,
            ..
        }] if *n == num && *w == what => ErrorChain(source.as_ref()).to_string(),
        other => panic!("unexpected problems: {other:?}"),
    }
}

#[test]
fn zeroize_is_refused_while_key_storage_needs_the_unit_master_key_until_confirmed() {
    let (w, client, mk) = fleet(3, None);
    let before = w.statuses();
    let unit1 = vec![&client.units()[0]];
    let instance = client.units()[0].instance().clone();

    // Refused, naming the keys, the store and both recovery units that keep the key.
    let guard = KeyStorageGuard::survey(&client, &unit1, Destruction::Zeroize, &[]);
    let risk = guard.at_risk();
    assert_eq!(risk.len(), 1);
    assert_eq!(risk[0].instance, instance);
    assert_eq!(risk[0].units, [1]);
    let Storage::Keys {
        keys, vps, sources, ..
    } = &risk[0].storage
    else {
        panic!("{:?}", risk[0]);
    };
    assert_eq!((*keys, vps.as_slice()), (3, &[(mk, 3)][..]));
    assert_eq!(
        sources,
        &[
            RecoverySource::RecoveryUnit { num: 3, vp: mk },
            RecoverySource::RecoveryUnit { num: 4, vp: mk }
        ]
    );
    let err = Zeroize {
        units: unit1.clone(),
        keys: vec![info(&w.alice)],
    }
    .plan_guarded(&client, &guard)
    .err()
    .expect("zeroize must be refused");
    let why = guarded(&err, 1, Destruction::Zeroize);
    assert!(
        why.contains("(keys.sqlite) holds 3 key(s)")
            && why.contains("it can be recovered from: recovery crypto unit 3 holds it"),
        "{why}"
    );
    assert_eq!(w.statuses(), before, "a refused zeroize changed a unit");

    // Zeroizing the recovery units with it leaves no unit to recover from: said so, and
    // key-part files on the workstation are named as the other way back.
    let all: Vec<_> = client.units().iter().collect();
    let guard = KeyStorageGuard::survey(&client, &all, Destruction::Zeroize, &[]);
    assert_eq!(guard.at_risk()[0].units, [1, 2, 3, 4]);
    assert!(guard.at_risk()[0]
        .to_string()
        .contains("the keys would be lost"));
    let parts = vec!["P1".to_owned()];
    let guard = KeyStorageGuard::survey(&client, &all, Destruction::Zeroize, &parts);
    let Storage::Keys { sources, .. } = &guard.at_risk()[0].storage else {
        panic!();
    };
    assert_eq!(sources, &[RecoverySource::KeyPartFiles { files: parts }]);

    // Confirmed by the instance id: zeroized.
    let mut guard = KeyStorageGuard::survey(&client, &unit1, Destruction::Zeroize, &[]);
    guard.confirm(&instance);
    assert!(guard.at_risk().is_empty());
    let plan = Zeroize {
        units: unit1.clone(),
        keys: vec![info(&w.alice)],
    }
    .plan_guarded(&client, &guard)
    .unwrap();
    plan.execute(&[&w.alice as &dyn tke_sigkey::Signer])
        .unwrap();
    assert!(w.statuses()[0].imprint_mode());

    // A unit without a master key puts nothing at risk.
    let guard = KeyStorageGuard::survey(&client, &unit1, Destruction::Zeroize, &[]);
    assert!(guard.at_risk().is_empty());
}

#[test]
fn only_keys_under_a_master_key_the_unit_holds_guard_it() {
    // Keys under another master key (a unit holding it is elsewhere): unit 1 may go.
    let other = Vp::from_slice(&[7; 32]).unwrap();
    let (w, client, _) = fleet(5, Some(other));
    let unit1 = vec![&client.units()[0]];
    let guard = KeyStorageGuard::survey(&client, &unit1, Destruction::Zeroize, &[]);
    assert!(guard.at_risk().is_empty());
    // An empty key storage guards nothing either.
    let (_, client, _) = fleet(0, None);
    let guard = KeyStorageGuard::survey(&client, &[&client.units()[0]], Destruction::Zeroize, &[]);
    assert!(guard.at_risk().is_empty());
    drop(w);
}

#[test]
fn clear_current_is_guarded_and_unreadable_key_storage_counts_as_holding_keys() {
    let (w, client, _) = fleet(2, None);
    let before = w.statuses();
    let unit2 = vec![&client.units()[1]];
    let alice = info(&w.alice);
    let guard = KeyStorageGuard::survey(&client, &unit2, Destruction::ClearCurrent, &[]);
    let err = clear_current(&client, &guard, &alice)
        .err()
        .expect("clear-current must be refused");
    let why = guarded(&err, 2, Destruction::ClearCurrent);
    assert!(why.contains("holds 2 key(s)"), "{why}");

    // A key storage that cannot be read may hold keys: refused, with the reason.
    let down = with_service(&w, Err("connection refused"));
    let unit2 = vec![&down.units()[1]];
    let mut guard = KeyStorageGuard::survey(&down, &unit2, Destruction::ClearCurrent, &[]);
    assert!(matches!(
        guard.at_risk()[0].storage,
        Storage::Unreadable { .. }
    ));
    let err = clear_current(&down, &guard, &alice)
        .err()
        .expect("refused while unreadable");
    let why = guarded(&err, 2, Destruction::ClearCurrent);
    assert!(why.contains("cannot be read (connection refused)"), "{why}");
    assert_eq!(
        w.statuses(),
        before,
        "a refused clear-current changed a unit"
    );

    // The typed confirmation overrides it too.
    guard.confirm(down.units()[1].instance());
    clear_current(&down, &guard, &alice)
        .unwrap()
        .execute(&[&w.alice as &dyn tke_sigkey::Signer])
        .unwrap();
    assert!(down
        .query(&down.units()[1])
        .unwrap()
        .current_register
        .vp
        .is_none());
}
