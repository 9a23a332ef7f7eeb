//! The critical path of a ceremony, in commands, does not grow with the number of units:
//! per-unit steps run on every unit at once. Measured with a simulated HSM round trip
//! (see `tke_test_support::fanout`); the times are `benches/fanout.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fanout_sizes;

use fanout_sizes::{admins, on_every_instance, set_up, CEREMONIES, SIZES};
use tke_client::embedded::Latency;

/// auto-init sends, one after the other: the plan's query, 3 addAdmin, setThresholds,
/// the check's query, generateRandomMk (generateImporter on the other units, at the same
/// time), exportMkBatch, importMk, commitMk, setImmediate, the final check's query.
const AUTO_INIT_CRITICAL_PATH: usize = 12;

/// auto-mk-rotate (of an instance auto-init made, no key storage) sends, one after the
/// other: the plan's query, generateRandomMk in a recovery unit (generateImporter on the
/// other units at the same time), exportMkBatch, importMk, commitMk, the check's query,
/// setImmediate on one unit, then on the others (a crash point lies between them), the
/// final check's query.
const AUTO_MK_ROTATE_CRITICAL_PATH: usize = 9;

#[test]
fn the_critical_path_does_not_grow_with_the_number_of_units() {
    // Far above the time the client needs to start one step's exchanges on a loaded
    // 2-core machine, so that exchanges of one step overlap (see the timeline's docs).
    let latency = Latency::from_millis(200).unwrap();
    let admins = admins();
    for case in CEREMONIES {
        let name = case.name;
        let paths: Vec<(usize, usize)> = SIZES
            .iter()
            .map(|size| {
                let fleet = size.fleet(latency);
                set_up(&fleet, case, &admins);
                on_every_instance(&fleet, case.run, &admins);
                let path = fleet.timeline.critical_path();
                eprintln!(
                    "{name} on {} units: critical path {path} exchanges, {} in all, at most {} with one unit",
                    size.units,
                    fleet.timeline.exchanges(),
                    fleet.timeline.busiest_unit()
                );
                (size.units, path)
            })
            .collect();
        let expected = match name {
            "auto_init" => AUTO_INIT_CRITICAL_PATH,
            "auto_mk_rotate" => AUTO_MK_ROTATE_CRITICAL_PATH,
            other => panic!("no critical path stated for {other}"),
        };
        assert_eq!(
            paths,
            SIZES.map(|s| (s.units, expected)),
            "{name}: (units, critical path)"
        );
    }
}
