//! A unit listed by two transports is refused when the client connects.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use tke_client::{Client, ClientError, EmbeddedFleet, FleetSpec, Transport, UnitDescriptor};
use tke_proto::UnitId;

/// Reaches the same units as the fleet it wraps, under another name: a second server
/// configured for units the first one already serves.
struct Alias {
    name: &'static str,
    inner: Arc<dyn Transport>,
}

impl Transport for Alias {
    fn describe(&self) -> String {
        self.name.to_owned()
    }
    fn list_units(&self) -> Result<Vec<UnitDescriptor>, ClientError> {
        self.inner.list_units()
    }
    fn exchange(&self, unit: &UnitId, request_der: &[u8]) -> Result<Vec<u8>, ClientError> {
        self.inner.exchange(unit, request_der)
    }
}

#[test]
fn a_unit_listed_by_two_transports_is_refused_naming_the_unit_and_both_transports() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = EmbeddedFleet::create(&dir.path().join("local"), FleetSpec::default()).unwrap();
    let ca = fleet.ca().clone();
    let first_unit = fleet.list_units().unwrap()[0].unit_id;
    let fleet: Arc<dyn Transport> = Arc::new(fleet);
    let a: Arc<dyn Transport> = Arc::new(Alias {
        name: "server-a",
        inner: fleet.clone(),
    });
    let b: Arc<dyn Transport> = Arc::new(Alias {
        name: "server-b",
        inner: fleet,
    });

    // Each transport alone is fine.
    assert_eq!(
        Client::connect(vec![(a.clone(), ca.clone())])
            .unwrap()
            .units()
            .len(),
        4
    );
    match Client::connect(vec![(a, ca.clone()), (b, ca)]) {
        Err(ClientError::DuplicateUnit {
            unit,
            first,
            second,
        }) => {
            // The first unit in CRYPTO UNIT NUM order that appears twice.
            assert_eq!(unit, first_unit);
            assert_eq!(first, "server-a");
            assert_eq!(second, "server-b");
        }
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("a unit listed by two transports was accepted"),
    }
}
