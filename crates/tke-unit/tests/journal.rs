//! Units on the journaled state store: commands saved through the journal survive a crash
//! (the journal dropped without compaction) and come back when the journal is replayed;
//! meanwhile the unit directory alone refuses to open, since its `unit.json` is older than
//! what the unit answered.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use tke_proto::{Command, UnitId, UnitType};
use tke_unit::{Journal, JournalOptions, Unit, UnitError, JOURNAL_FILE};

use support::{admins, init, ok, query, run, Fleet};

#[test]
fn commands_saved_in_the_journal_survive_a_crash_and_the_directory_alone_is_refused_meanwhile() {
    let fleet = Fleet::new("journal");
    let root = tempfile::tempdir().unwrap();
    let id = UnitId::random();
    let dir = root.path().join(id.uuid());
    let ty = UnitType::Operational;
    let unit =
        Unit::create_soft(&dir, id, ty, &fleet.ca, &mut |pk| fleet.issue(id, ty, pk)).unwrap();
    let file_state = unit.status();
    drop(unit);

    let journal = Journal::open(root.path(), JournalOptions::default()).unwrap();
    let mut unit = Unit::open_with_store(&dir, Box::new(journal.store(id))).unwrap();
    let a = admins(2);
    init(&mut unit, &fleet.ca, &a, 1, 1);
    ok(run(&mut unit, &fleet.ca, &Command::ClearNew, &[&a[1]]));
    let answered = query(&mut unit, &fleet.ca);
    assert_eq!(answered.counter, file_state.counter + 4);
    assert_eq!(journal.stats().records, 4);
    // A crash: nothing compacts.
    drop(unit);
    drop(journal);

    let e = Unit::open(&dir).unwrap_err();
    assert!(matches!(e, UnitError::StateInJournal { .. }), "{e:?}");
    let text = e.to_string();
    let journal_path = root.path().join(JOURNAL_FILE);
    assert!(
        text.contains(&dir.display().to_string())
            && text.contains(&journal_path.display().to_string()),
        "{text}"
    );

    let journal = Journal::open(root.path(), JournalOptions::default()).unwrap();
    assert_eq!(journal.replay().records, 4);
    let mut unit = Unit::open_with_store(&dir, Box::new(journal.store(id))).unwrap();
    assert_eq!(query(&mut unit, &fleet.ca), answered);
    drop(unit);
    journal.close().unwrap();
    // Compacted: the directory alone is complete again.
    assert_eq!(Unit::open(&dir).unwrap().status(), answered);
}
