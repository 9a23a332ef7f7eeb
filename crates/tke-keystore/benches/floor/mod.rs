//! The yardstick of the rotation benchmarks (this crate's and tke-kms's): the rotation's
//! rewrite of a key store's rows as plain SQL, with no store code and no crypto.

use std::time::{Duration, Instant};

use tke_proto::Vp;

/// A second connection to the store file at `path` with the store's settings (the
/// crate documentation), so that only the code differs.
pub fn raw_connection(path: &std::path::Path) -> rusqlite::Connection {
    let raw = rusqlite::Connection::open(path).unwrap();
    raw.pragma_update(None, "synchronous", "FULL").unwrap();
    raw
}

/// Moves every row tagged `old` to `new` in transactions of `batch` rows, as a rotation
/// does: per batch, select the rows still under `old`, then `UPDATE OR FAIL` each one's
/// wrapped value (the same bytes) and VP. Returns the time taken.
pub fn rewrite(raw: &mut rusqlite::Connection, old: &Vp, new: &Vp, batch: usize) -> Duration {
    let vp_id = |raw: &rusqlite::Connection, vp: &Vp| -> i64 {
        raw.execute(
            "INSERT OR IGNORE INTO vps (vp) VALUES (?1)",
            [vp.as_bytes().as_slice()],
        )
        .unwrap();
        raw.query_row(
            "SELECT vp_id FROM vps WHERE vp = ?1",
            [vp.as_bytes().as_slice()],
            |r| r.get(0),
        )
        .unwrap()
    };
    let (from, to) = (vp_id(raw, old), vp_id(raw, new));
    let limit = i64::try_from(batch).unwrap();
    let start = Instant::now();
    loop {
        let tx = raw
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .unwrap();
        let rows: Vec<(i64, Vec<u8>)> = {
            let mut sel = tx
                .prepare_cached("SELECT rowid, wrapped FROM keys WHERE vp_id = ?1 LIMIT ?2")
                .unwrap();
            sel.query_map([from, limit], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        {
            let mut upd = tx
                .prepare_cached("UPDATE OR FAIL keys SET wrapped = ?1, vp_id = ?2 WHERE rowid = ?3")
                .unwrap();
            for (rowid, wrapped) in &rows {
                upd.execute(rusqlite::params![wrapped, to, rowid]).unwrap();
            }
        }
        tx.commit().unwrap();
        if rows.is_empty() {
            break;
        }
    }
    start.elapsed()
}
