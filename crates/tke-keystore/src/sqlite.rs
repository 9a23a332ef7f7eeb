//! The embedded key store: one SQLite file per service instance.
//!
//! VPs are stored once, in table `vps`; each record refers to its VP by a small integer,
//! so the index on it (which every rotation batch updates) stays small.

use std::{
    collections::HashMap,
    fs, io,
    num::NonZeroUsize,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use rusqlite::{
    params, Connection, ErrorCode, OpenFlags, OptionalExtension, Row, Transaction,
    TransactionBehavior,
};
use tke_proto::Vp;

use crate::{
    BatchCursor, BatchRewrapFn, Created, KeyDataError, KeyId, KeyName, KeyStore, ListCursor,
    ReadBatch, Record, RewrapFn, RotationMarker, StoreError, WrappedKey,
};

/// `PRAGMA application_id` of a key store ("TKEK"), so that another SQLite file is
/// never taken for one.
const APPLICATION_ID: i64 = 0x544B_454B;
/// `PRAGMA user_version`: the format of the tables below. Version 1 had no `rotation`
/// table; [`SqliteKeyStore::open`] adds it.
const FORMAT_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE vps (
    vp_id INTEGER PRIMARY KEY,
    vp BLOB NOT NULL UNIQUE CHECK (length(vp) = 32)
);
CREATE TABLE keys (
    id BLOB NOT NULL UNIQUE CHECK (length(id) = 16),
    name TEXT NOT NULL,
    created INTEGER NOT NULL,
    wrapped BLOB NOT NULL,
    vp_id INTEGER NOT NULL REFERENCES vps (vp_id)
);
CREATE INDEX keys_vp ON keys (vp_id);
CREATE INDEX keys_created ON keys (created, id);
";

/// The rotation in progress: at most one row (format 2).
const ROTATION_TABLE: &str = "
CREATE TABLE rotation (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    from_vp BLOB NOT NULL CHECK (length(from_vp) = 32),
    to_vp BLOB NOT NULL CHECK (length(to_vp) = 32)
);
";

const SELECT_RECORD: &str = "SELECT keys.rowid, id, name, created, wrapped, vp \
     FROM keys JOIN vps USING (vp_id)";

/// What [`SqliteKeyStore::rewrap_rows`] calls: the batch's key ids and wrapped values in,
/// the new values out, in the same order.
type RowsRewrapFn<'a> =
    dyn FnMut(&[KeyId], &[WrappedKey]) -> Result<Vec<WrappedKey>, StoreError> + 'a;

/// The label of a store that has no file.
const IN_MEMORY: &str = "(in-memory key store)";

/// A key store in an SQLite file (WAL journal, `synchronous = FULL`), or in memory for
/// tests. See the crate documentation for the measurements behind the settings.
pub struct SqliteKeyStore {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteKeyStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteKeyStore {
    /// Creates a new, empty store file at `path`, mode 0600. Never replaces a file.
    ///
    /// # Errors
    /// [`StoreError::Create`] when the file exists or cannot be made;
    /// [`StoreError::Database`].
    pub fn create(path: &Path) -> Result<Self, StoreError> {
        // An empty file made 0600 before SQLite writes a byte; SQLite gives its WAL and
        // shared-memory files the same mode.
        tke_fs::create_private(path, b"").map_err(|source| StoreError::Create {
            path: path.to_owned(),
            source,
        })?;
        let mut store = Self::connect(path)?;
        store.init_schema()?;
        Ok(store)
    }

    /// Opens an existing store file.
    ///
    /// # Errors
    /// [`StoreError::Open`] when it is missing or unreadable; [`StoreError::Permissions`]
    /// when others than its owner may access it; [`StoreError::NotAStore`];
    /// [`StoreError::Version`]; [`StoreError::Database`].
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let meta = fs::metadata(path).map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
        if !meta.is_file() {
            return Err(StoreError::Open {
                path: path.to_owned(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
            });
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(StoreError::Permissions {
                path: path.to_owned(),
                mode,
            });
        }
        let store = Self::connect(path)?;
        let app_id: i64 = store.pragma("application_id", "read the store header")?;
        if app_id != APPLICATION_ID {
            return Err(StoreError::NotAStore {
                path: path.to_owned(),
            });
        }
        let version: i64 = store.pragma("user_version", "read the store header")?;
        let mut store = store;
        if version == 1 {
            store.upgrade_from_1()?;
        } else if version != FORMAT_VERSION {
            return Err(StoreError::Version {
                path: path.to_owned(),
                found: version,
                expected: FORMAT_VERSION,
            });
        }
        Ok(store)
    }

    /// A store in memory, gone when dropped: for tests.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub fn in_memory() -> Result<Self, StoreError> {
        let path = PathBuf::from(IN_MEMORY);
        let conn = Connection::open_in_memory().map_err(|source| StoreError::Database {
            store: path.clone(),
            action: "open",
            source,
        })?;
        let mut store = Self { conn, path };
        store.init_schema()?;
        Ok(store)
    }

    fn connect(path: &Path) -> Result<Self, StoreError> {
        // No SQLITE_OPEN_CREATE: only `create` makes a file, with its mode set first.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn =
            Connection::open_with_flags(path, flags).map_err(|e| opening_err(path, "open", e))?;
        // WAL: one fsync per commit instead of two, and readers never block the rotation.
        // FULL: a commit the caller saw succeed survives a power loss (measured cost in
        // the crate documentation).
        conn.pragma_update(None, "journal_mode", "WAL")
            .and_then(|()| conn.pragma_update(None, "synchronous", "FULL"))
            .and_then(|()| conn.busy_timeout(std::time::Duration::from_secs(5)))
            .map_err(|e| opening_err(path, "configure the database", e))?;
        Ok(Self {
            conn,
            path: path.to_owned(),
        })
    }

    fn init_schema(&mut self) -> Result<(), StoreError> {
        let tx = write_tx(&mut self.conn, &self.path)?;
        tx.execute_batch(SCHEMA)
            .and_then(|()| tx.execute_batch(ROTATION_TABLE))
            .and_then(|()| tx.pragma_update(None, "application_id", APPLICATION_ID))
            .and_then(|()| tx.pragma_update(None, "user_version", FORMAT_VERSION))
            .map_err(|e| db_err(&self.path, "create the tables", e))?;
        tx.commit()
            .map_err(|e| db_err(&self.path, "create the tables", e))
    }

    /// Format 1 to 2: the rotation marker's table, in one transaction.
    fn upgrade_from_1(&mut self) -> Result<(), StoreError> {
        let tx = write_tx(&mut self.conn, &self.path)?;
        tx.execute_batch(ROTATION_TABLE)
            .and_then(|()| tx.pragma_update(None, "user_version", FORMAT_VERSION))
            .map_err(|e| db_err(&self.path, "upgrade the store to format 2", e))?;
        tx.commit()
            .map_err(|e| db_err(&self.path, "upgrade the store to format 2", e))
    }

    /// Reads up to `limit` records tagged `from` and stores what `rewrap` makes of them
    /// tagged `to`, in one transaction; `rewrap` gets the batch's row ids, key ids and
    /// wrapped values, and returns the new values in the same order.
    fn rewrap_rows(
        &mut self,
        from: &Vp,
        to: &Vp,
        limit: NonZeroUsize,
        rewrap: &mut RowsRewrapFn<'_>,
    ) -> Result<usize, StoreError> {
        self.distinct(from, to)?;
        let path = self.path.clone();
        let db = |e| db_err(&path, "rewrap a batch", e);
        let tx = write_tx(&mut self.conn, &path)?;
        let Some(from_id) = vp_id(&tx, from).map_err(db)? else {
            return Ok(0);
        };
        let batch = read_rows(&tx, &path, from_id, None, limit)?;
        if batch.is_empty() {
            return Ok(0);
        }
        // A failure returns before the commit: dropping `tx` rolls the batch back.
        let new = rewrap(batch.ids(), batch.wrapped())?;
        let to_id = ensure_vp_id(&tx, to).map_err(db)?;
        let moved = update_rows(&tx, &path, from_id, to_id, &batch, &new)?;
        tx.commit().map_err(db)?;
        Ok(moved)
    }

    /// A rotation step must move records between two different master keys.
    fn distinct(&self, from: &Vp, to: &Vp) -> Result<(), StoreError> {
        if from == to {
            return Err(StoreError::SameVp {
                store: self.path.clone(),
                vp: *from,
            });
        }
        Ok(())
    }

    fn pragma(&self, name: &str, action: &'static str) -> Result<i64, StoreError> {
        self.conn
            .pragma_query_value(None, name, |r| r.get(0))
            .map_err(|e| opening_err(&self.path, action, e))
    }

    fn row_to_record(&self, row: &Row<'_>) -> Result<Record, StoreError> {
        let db = |e| db_err(&self.path, "read a record", e);
        let rowid: i64 = row.get(0).map_err(db)?;
        let malformed = |source| StoreError::Malformed {
            store: self.path.clone(),
            table: "keys",
            row: rowid,
            source,
        };
        let id = KeyId::from_slice(blob(row, 1).map_err(db)?).map_err(malformed)?;
        let name = row.get_ref(2).and_then(|v| Ok(v.as_str()?)).map_err(db)?;
        let name = KeyName::new(name).map_err(malformed)?;
        let created = Created::from_unix_millis(row.get(3).map_err(db)?);
        let wrapped = WrappedKey::new(row.get(4).map_err(db)?).map_err(malformed)?;
        let vp_bytes = blob(row, 5).map_err(db)?;
        let vp = Vp::from_slice(vp_bytes).map_err(|_| {
            malformed(KeyDataError::VpLength {
                actual: vp_bytes.len(),
            })
        })?;
        Ok(Record {
            id,
            name,
            created,
            wrapped,
            vp,
        })
    }
}

/// A write transaction that takes the write lock at once, so that it never fails
/// half-way for want of it.
fn write_tx<'c>(conn: &'c mut Connection, path: &Path) -> Result<Transaction<'c>, StoreError> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| db_err(path, "start a transaction", e))
}

/// An error while opening: SQLite's "not a database" means the file is no key store.
fn opening_err(path: &Path, action: &'static str, source: rusqlite::Error) -> StoreError {
    if source.sqlite_error_code() == Some(ErrorCode::NotADatabase) {
        StoreError::NotAStore {
            path: path.to_owned(),
        }
    } else {
        db_err(path, action, source)
    }
}

fn db_err(path: &Path, action: &'static str, source: rusqlite::Error) -> StoreError {
    StoreError::Database {
        store: path.to_owned(),
        action,
        source,
    }
}

/// Column `i` of `row` as a blob.
fn blob<'r>(row: &'r Row<'_>, i: usize) -> rusqlite::Result<&'r [u8]> {
    Ok(row.get_ref(i)?.as_blob()?)
}

/// The rotation marker, read inside `conn` (a transaction or the connection).
fn read_rotation(path: &Path, conn: &Connection) -> Result<Option<RotationMarker>, StoreError> {
    let db = |e| db_err(path, "read the rotation marker", e);
    let row: Option<(Vec<u8>, Vec<u8>)> = conn
        .prepare_cached("SELECT from_vp, to_vp FROM rotation WHERE one = 1")
        .and_then(|mut s| s.query_row([], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(db)?;
    let Some((from, to)) = row else {
        return Ok(None);
    };
    let vp = |b: &[u8]| {
        Vp::from_slice(b).map_err(|_| StoreError::Malformed {
            store: path.to_owned(),
            table: "rotation",
            row: 1,
            source: KeyDataError::VpLength { actual: b.len() },
        })
    };
    Ok(Some(RotationMarker {
        from: vp(&from)?,
        to: vp(&to)?,
    }))
}

/// Reads up to `limit` records tagged with VP row `from_id` after row `after`, in row
/// order, inside `conn` (a transaction or the connection). The batch is read whole
/// before any row changes: updating the index a query is walking could skip rows or see
/// them twice.
fn read_rows(
    conn: &Connection,
    path: &Path,
    from_id: i64,
    after: Option<BatchCursor>,
    limit: NonZeroUsize,
) -> Result<ReadBatch, StoreError> {
    let db = |e| db_err(path, "read a batch to rewrap", e);
    let cap = limit.get().min(65_536);
    let (mut rowids, mut ids, mut wrapped) = (
        Vec::with_capacity(cap),
        Vec::with_capacity(cap),
        Vec::with_capacity(cap),
    );
    // The index on vp_id holds (vp_id, rowid): the range after `after` is one seek.
    let mut stmt = conn
        .prepare_cached(
            "SELECT rowid, id, wrapped FROM keys WHERE vp_id = ?1 AND rowid > ?2 \
             ORDER BY rowid LIMIT ?3",
        )
        .map_err(db)?;
    let after = after.map_or(i64::MIN, BatchCursor::position);
    let mut rows = stmt
        .query(params![from_id, after, limit_param(limit)])
        .map_err(db)?;
    while let Some(row) = rows.next().map_err(db)? {
        let rowid: i64 = row.get(0).map_err(db)?;
        let malformed = |source| StoreError::Malformed {
            store: path.to_owned(),
            table: "keys",
            row: rowid,
            source,
        };
        ids.push(KeyId::from_slice(blob(row, 1).map_err(db)?).map_err(malformed)?);
        wrapped.push(WrappedKey::new(row.get(2).map_err(db)?).map_err(malformed)?);
        rowids.push(rowid);
    }
    ReadBatch::new(path, rowids, ids, wrapped)
}

/// Stores `new` for the rows of `batch` still tagged `from_id` with the same id, tagged
/// `to_id`, inside the caller's transaction; returns how many rows changed.
fn update_rows(
    tx: &Transaction<'_>,
    path: &Path,
    from_id: i64,
    to_id: i64,
    batch: &ReadBatch,
    new: &[WrappedKey],
) -> Result<usize, StoreError> {
    if new.len() != batch.len() {
        return Err(StoreError::RewrapCount {
            store: path.to_owned(),
            expected: batch.len(),
            actual: new.len(),
        });
    }
    let db = |e| db_err(path, "store a rewrapped batch", e);
    // OR FAIL: no statement journal for each row (a quarter of the time of a batch); a
    // failure drops the transaction, which rolls the whole batch back anyway. The VP and
    // id guards keep a row deleted (or moved) since it was read as it is.
    let mut stmt = tx
        .prepare_cached(
            "UPDATE OR FAIL keys SET wrapped = ?1, vp_id = ?2 \
             WHERE rowid = ?3 AND vp_id = ?4 AND id = ?5",
        )
        .map_err(db)?;
    let mut moved = 0;
    for ((rowid, id), value) in batch.positions().iter().zip(batch.ids()).zip(new) {
        moved += stmt
            .execute(params![
                value.as_bytes(),
                to_id,
                rowid,
                from_id,
                id.as_bytes().as_slice()
            ])
            .map_err(db)?;
    }
    Ok(moved)
}

/// The row id of `vp` in table `vps`, if it has one.
fn vp_id(conn: &Connection, vp: &Vp) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT vp_id FROM vps WHERE vp = ?1")?
        .query_row([vp.as_bytes().as_slice()], |r| r.get(0))
        .optional()
}

/// The row id of `vp` in table `vps`, added if missing (inside the caller's transaction).
fn ensure_vp_id(conn: &Connection, vp: &Vp) -> rusqlite::Result<i64> {
    if let Some(id) = vp_id(conn, vp)? {
        return Ok(id);
    }
    conn.prepare_cached("INSERT INTO vps (vp) VALUES (?1)")?
        .execute([vp.as_bytes().as_slice()])?;
    Ok(conn.last_insert_rowid())
}

fn limit_param(limit: NonZeroUsize) -> i64 {
    i64::try_from(limit.get()).unwrap_or(i64::MAX)
}

impl KeyStore for SqliteKeyStore {
    fn location(&self) -> &Path {
        &self.path
    }

    fn insert(&mut self, record: &Record) -> Result<(), StoreError> {
        self.insert_all(std::slice::from_ref(record))
    }

    fn insert_all(&mut self, records: &[Record]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let db = |e| db_err(&path, "store a record", e);
        let tx = write_tx(&mut self.conn, &path)?;
        {
            let mut vp_ids: HashMap<Vp, i64> = HashMap::new();
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO keys (id, name, created, wrapped, vp_id) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(db)?;
            for record in records {
                let vp_row = match vp_ids.get(&record.vp) {
                    Some(&id) => id,
                    None => {
                        let id = ensure_vp_id(&tx, &record.vp).map_err(db)?;
                        vp_ids.insert(record.vp, id);
                        id
                    }
                };
                stmt.execute(params![
                    record.id.as_bytes().as_slice(),
                    record.name.as_str(),
                    record.created.unix_millis(),
                    record.wrapped.as_bytes(),
                    vp_row,
                ])
                .map_err(|e| {
                    if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) {
                        StoreError::DuplicateId {
                            store: path.clone(),
                            id: record.id,
                        }
                    } else {
                        db(e)
                    }
                })?;
            }
        }
        tx.commit().map_err(db)
    }

    fn get(&self, id: &KeyId) -> Result<Record, StoreError> {
        let db = |e| db_err(&self.path, "read a record", e);
        let mut stmt = self
            .conn
            .prepare_cached(&format!("{SELECT_RECORD} WHERE id = ?1"))
            .map_err(db)?;
        let mut rows = stmt.query([id.as_bytes().as_slice()]).map_err(db)?;
        match rows.next().map_err(db)? {
            Some(row) => self.row_to_record(row),
            None => Err(StoreError::NotFound {
                store: self.path.clone(),
                id: *id,
            }),
        }
    }

    fn list(
        &self,
        after: Option<&ListCursor>,
        limit: NonZeroUsize,
    ) -> Result<Vec<Record>, StoreError> {
        let db = |e| db_err(&self.path, "list records", e);
        let (created, id) = match after {
            Some(c) => (c.created.unix_millis(), c.id.as_bytes().to_vec()),
            // Before every record: no id sorts before the empty blob.
            None => (i64::MIN, Vec::new()),
        };
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "{SELECT_RECORD} WHERE (created, id) > (?1, ?2) ORDER BY created, id LIMIT ?3"
            ))
            .map_err(db)?;
        let mut rows = stmt
            .query(params![created, id, limit_param(limit)])
            .map_err(db)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(db)? {
            out.push(self.row_to_record(row)?);
        }
        Ok(out)
    }

    fn delete(&mut self, id: &KeyId) -> Result<(), StoreError> {
        let changed = self
            .conn
            .prepare_cached("DELETE FROM keys WHERE id = ?1")
            .and_then(|mut s| s.execute([id.as_bytes().as_slice()]))
            .map_err(|e| db_err(&self.path, "delete a record", e))?;
        if changed == 0 {
            return Err(StoreError::NotFound {
                store: self.path.clone(),
                id: *id,
            });
        }
        Ok(())
    }

    fn count(&self) -> Result<u64, StoreError> {
        self.conn
            .prepare_cached("SELECT count(*) FROM keys")
            .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)))
            .map(|n| n.unsigned_abs())
            .map_err(|e| db_err(&self.path, "count records", e))
    }

    fn count_by_vp(&self, vp: &Vp) -> Result<u64, StoreError> {
        self.conn
            .prepare_cached("SELECT count(*) FROM keys JOIN vps USING (vp_id) WHERE vp = ?1")
            .and_then(|mut s| s.query_row([vp.as_bytes().as_slice()], |r| r.get::<_, i64>(0)))
            .map(|n| n.unsigned_abs())
            .map_err(|e| db_err(&self.path, "count records", e))
    }

    fn vp_counts(&self) -> Result<Vec<(Vp, u64)>, StoreError> {
        let db = |e| db_err(&self.path, "count records", e);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT vp_id, vp, count(*) FROM keys JOIN vps USING (vp_id) \
                 GROUP BY vp_id ORDER BY vp",
            )
            .map_err(db)?;
        let mut rows = stmt.query([]).map_err(db)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(db)? {
            let row_id: i64 = row.get(0).map_err(db)?;
            let bytes = blob(row, 1).map_err(db)?;
            let vp = Vp::from_slice(bytes).map_err(|_| StoreError::Malformed {
                store: self.path.clone(),
                table: "vps",
                row: row_id,
                source: KeyDataError::VpLength {
                    actual: bytes.len(),
                },
            })?;
            out.push((vp, row.get::<_, i64>(2).map_err(db)?.unsigned_abs()));
        }
        Ok(out)
    }

    fn rewrap_batch(
        &mut self,
        from: &Vp,
        to: &Vp,
        limit: NonZeroUsize,
        rewrap: &mut RewrapFn<'_>,
    ) -> Result<usize, StoreError> {
        let path = self.path.clone();
        self.rewrap_rows(from, to, limit, &mut |ids, wrapped| {
            ids.iter()
                .zip(wrapped)
                .map(|(id, w)| {
                    rewrap(id, w).map_err(|source| StoreError::Rewrap {
                        store: path.clone(),
                        id: *id,
                        source,
                    })
                })
                .collect()
        })
    }

    fn rewrap_batch_whole(
        &mut self,
        from: &Vp,
        to: &Vp,
        limit: NonZeroUsize,
        rewrap: &mut BatchRewrapFn<'_>,
    ) -> Result<usize, StoreError> {
        let path = self.path.clone();
        self.rewrap_rows(from, to, limit, &mut |ids, wrapped| {
            rewrap(wrapped).map_err(|source| StoreError::RewrapBatch {
                store: path.clone(),
                first: ids[0],
                count: ids.len(),
                source,
            })
        })
    }

    fn read_batch(
        &self,
        from: &Vp,
        after: Option<BatchCursor>,
        limit: NonZeroUsize,
    ) -> Result<ReadBatch, StoreError> {
        match vp_id(&self.conn, from)
            .map_err(|e| db_err(&self.path, "read a batch to rewrap", e))?
        {
            Some(from_id) => read_rows(&self.conn, &self.path, from_id, after, limit),
            None => Ok(ReadBatch::default()),
        }
    }

    fn commit_batch(
        &mut self,
        from: &Vp,
        to: &Vp,
        batch: &ReadBatch,
        new: &[WrappedKey],
    ) -> Result<usize, StoreError> {
        self.distinct(from, to)?;
        if batch.is_empty() {
            return Ok(0);
        }
        let path = self.path.clone();
        let db = |e| db_err(&path, "store a rewrapped batch", e);
        let tx = write_tx(&mut self.conn, &path)?;
        let Some(from_id) = vp_id(&tx, from).map_err(db)? else {
            return Ok(0);
        };
        let to_id = ensure_vp_id(&tx, to).map_err(db)?;
        let moved = update_rows(&tx, &path, from_id, to_id, batch, new)?;
        tx.commit().map_err(db)?;
        Ok(moved)
    }

    fn rotation(&self) -> Result<Option<RotationMarker>, StoreError> {
        read_rotation(&self.path, &self.conn)
    }

    fn begin_rotation(&mut self, marker: &RotationMarker) -> Result<(), StoreError> {
        if marker.from == marker.to {
            return Err(StoreError::SameVp {
                store: self.path.clone(),
                vp: marker.from,
            });
        }
        let path = self.path.clone();
        let db = |e| db_err(&path, "write the rotation marker", e);
        let tx = write_tx(&mut self.conn, &path)?;
        match read_rotation(&path, &tx)? {
            Some(m) if m == *marker => return Ok(()),
            Some(m) => {
                return Err(StoreError::OtherRotation {
                    store: path.clone(),
                    in_progress: m,
                })
            }
            None => {}
        }
        tx.execute(
            "INSERT INTO rotation (one, from_vp, to_vp) VALUES (1, ?1, ?2)",
            params![
                marker.from.as_bytes().as_slice(),
                marker.to.as_bytes().as_slice()
            ],
        )
        .map_err(db)?;
        tx.commit().map_err(db)
    }

    fn finish_rotation(&mut self, marker: &RotationMarker) -> Result<(), StoreError> {
        let path = self.path.clone();
        let db = |e| db_err(&path, "clear the rotation marker", e);
        let tx = write_tx(&mut self.conn, &path)?;
        match read_rotation(&path, &tx)? {
            Some(m) if m == *marker => {}
            in_progress => {
                return Err(StoreError::NotThisRotation {
                    store: path.clone(),
                    in_progress,
                })
            }
        }
        // Counted inside the transaction that clears the marker: no record can slip in
        // under the old key between the check and the end.
        let left: i64 = tx
            .prepare_cached("SELECT count(*) FROM keys JOIN vps USING (vp_id) WHERE vp = ?1")
            .and_then(|mut s| s.query_row([marker.from.as_bytes().as_slice()], |r| r.get(0)))
            .map_err(db)?;
        if left > 0 {
            return Err(StoreError::RecordsLeft {
                store: path.clone(),
                vp: marker.from,
                count: left.unsigned_abs(),
            });
        }
        tx.execute("DELETE FROM rotation", []).map_err(db)?;
        tx.commit().map_err(db)?;
        // The marker's end is what lets the units discard the old key: on disk first.
        self.sync()
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        // With synchronous = FULL every commit is already on disk; the checkpoint also
        // moves the WAL into the database file and fsyncs it, so a later open reads
        // everything from the main file. TRUNCATE empties the WAL too: a process killed
        // after a sync leaves no journal for the next one to fold in.
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(|e| db_err(&self.path, "checkpoint the journal", e))
    }
}
