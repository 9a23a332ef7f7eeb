//! The audit log of a unit (`docs/protocol.md` §18, an addition to protocol version 4).
//!
//! A unit appends one [`AuditRecord`] per command that consumed its transaction counter
//! (whatever its outcome), each holding SHA-256 of the record before it, so the records
//! form a hash chain. An [`AuditQuery`] (`Request.audit`, `[3]`) asks for the records from
//! a counter on; the unit answers an [`AuditPage`] in a [`crate::SignedResponse`] signed
//! by its device key and bound to the query's nonce. The page carries the hash of the
//! unit's last record (its *head*) and the response carries the unit's counter, so a client
//! that checks the chain with [`verify_chain`] detects an edited record, a gap, and a
//! truncated tail.

use der::{asn1::OctetString, Decode, Encode, Sequence};

use crate::{CommandId, Digest32, Nonce, ProtoError, Ski, UnitId};

/// The most records one [`AuditPage`] holds; a client asks again from the next counter.
pub const MAX_AUDIT_PAGE: usize = 64;

/// The most signers a record lists (the unit refuses commands with more signer infos).
pub const MAX_AUDIT_SIGNERS: usize = 16;

/// One executed command in a unit's audit log.
///
/// ```asn1
/// AuditRecord ::= SEQUENCE {
///   counter      INTEGER (1..MAX),       -- the transaction counter the command used
///   command      CommandId,
///   commandHash  OCTET STRING (SIZE(32)), -- SHA-256 of the AdminCommand DER, as signed
///   signers      SEQUENCE SIZE (0..16) OF OCTET STRING (SIZE(32)),
///                                        -- SKIs of the distinct valid signers, ascending
///   returnCode   INTEGER (0..MAX),       -- the answer's return and reason codes
///   reasonCode   INTEGER (0..MAX),
///   time         INTEGER (0..MAX),       -- the unit's clock, seconds since 1970 (UTC)
///   prev         OCTET STRING (SIZE(32)) } -- SHA-256 of the previous record's DER;
///                                        -- 32 zero bytes for the unit's first record
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct AuditRecord {
    /// The transaction counter the command used.
    pub counter: u64,
    /// What the command was.
    pub command: CommandId,
    /// SHA-256 of the `AdminCommand` DER the administrators signed.
    pub command_hash: Digest32,
    /// The distinct administrators whose signatures the unit verified, by SKI, ascending.
    pub signers: Vec<Ski>,
    /// The answer's return code (0: done).
    pub return_code: u32,
    /// The answer's reason code.
    pub reason_code: u32,
    /// When the unit executed it: seconds since 1970-01-01 UTC, by the unit's clock.
    pub time: u64,
    /// SHA-256 of the previous record's DER (zeros for the first).
    pub prev: Digest32,
}

impl AuditRecord {
    /// SHA-256 of the record's DER: what the next record's `prev` holds.
    ///
    /// # Errors
    /// [`ProtoError::Der`] (not expected).
    pub fn hash(&self) -> Result<Digest32, ProtoError> {
        Ok(Digest32::sha256(&self.to_der()?))
    }

    /// Decodes a record strictly (canonical DER, nothing after it, at most
    /// [`MAX_AUDIT_SIGNERS`] signers).
    ///
    /// # Errors
    /// [`ProtoError::Der`] or [`ProtoError::AuditSize`].
    pub fn decode_checked(bytes: &[u8]) -> Result<Self, ProtoError> {
        let record = Self::from_der(bytes)?;
        at_most(
            "signers in a record",
            record.signers.len(),
            MAX_AUDIT_SIGNERS,
        )?;
        Ok(record)
    }
}

/// [`ProtoError::AuditSize`] when `count` exceeds `max`.
fn at_most(what: &'static str, count: usize, max: usize) -> Result<(), ProtoError> {
    if count > max {
        return Err(ProtoError::AuditSize { what, count, max });
    }
    Ok(())
}

/// A request for a unit's audit records (`Request.audit`, `[3]`). Unsigned: the log is
/// not secret, and the answer is signed and bound to the nonce.
///
/// ```asn1
/// AuditQuery ::= SEQUENCE {
///   unitId  OCTET STRING (SIZE(16)),
///   nonce   OCTET STRING (SIZE(16)),
///   from    INTEGER (0..MAX) }         -- the first counter wanted
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct AuditQuery {
    /// The unit asked.
    pub unit_id: UnitId,
    /// A fresh client nonce.
    pub nonce: Nonce,
    /// The first counter wanted (the unit starts at its first record if lower).
    pub from: u64,
}

impl AuditQuery {
    /// A query to `unit_id` from counter `from`, with a fresh random nonce.
    pub fn new(unit_id: UnitId, from: u64) -> Self {
        Self {
            unit_id,
            nonce: Nonce::random(),
            from,
        }
    }
}

/// The output of an audit query: up to [`MAX_AUDIT_PAGE`] records, the first being the
/// one of counter `max(from, first)`.
///
/// ```asn1
/// AuditPage ::= SEQUENCE {
///   first    INTEGER (1..MAX),          -- counter of the unit's first record
///   head     OCTET STRING (SIZE(32)),   -- SHA-256 of the unit's last record (the one of
///                                       -- the response's counter); zeros if none
///   prev     OCTET STRING (SIZE(32)),   -- SHA-256 of the record before records[0];
///                                       -- zeros when records[0] is the first
///   records  SEQUENCE SIZE (0..64) OF OCTET STRING }  -- DER of AuditRecord each, as stored
/// ```
///
/// The records travel as the unit stored them: the client decodes and checks them, so a
/// damaged record is reported rather than hidden by the unit.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct AuditPage {
    /// Counter of the unit's first record.
    pub first: u64,
    /// SHA-256 of the unit's last record.
    pub head: Digest32,
    /// SHA-256 of the record before the first one here.
    pub prev: Digest32,
    /// The records, DER each.
    pub records: Vec<OctetString>,
}

impl AuditPage {
    /// Decodes a page strictly (canonical DER, nothing after it, at most
    /// [`MAX_AUDIT_PAGE`] records).
    ///
    /// # Errors
    /// [`ProtoError::Der`] or [`ProtoError::AuditSize`].
    pub fn decode_checked(bytes: &[u8]) -> Result<Self, ProtoError> {
        let page = Self::from_der(bytes)?;
        at_most("records in a page", page.records.len(), MAX_AUDIT_PAGE)?;
        Ok(page)
    }
}

/// What a client fetched of a unit's log: the records from `start` on, with what the
/// unit signed about its log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditLog {
    /// The unit's counter, from the signed response of the last page.
    pub counter: u64,
    /// Counter of the unit's first record.
    pub first: u64,
    /// The unit's head hash (last page).
    pub head: Digest32,
    /// The counter of the first record fetched: `max(from, first)`.
    pub start: u64,
    /// The hash the unit gave for the record before `start` (first page).
    pub prev: Digest32,
    /// The records' DER, in the order received.
    pub records: Vec<Vec<u8>>,
}

/// How a unit's log fails the check: each names the counter concerned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditTamper {
    /// A record is not a valid `AuditRecord`.
    #[error("the record at counter {counter} is not a valid audit record (damaged or edited)")]
    Undecodable {
        /// Where it was expected.
        counter: u64,
    },
    /// A record has another counter than its place: records are missing or reordered.
    #[error("a gap in the log: counter {found} where counter {expected} was expected")]
    Gap {
        /// The counter the record's place calls for.
        expected: u64,
        /// The counter it holds.
        found: u64,
    },
    /// A record does not hold the hash of the one before it: one of the two was edited
    /// (the chain cannot tell which).
    #[error("the hash chain breaks at counter {counter}: that record does not hold the hash of the record before it, so one of the two was edited")]
    Edited {
        /// The record that does not hold its predecessor's hash.
        counter: u64,
    },
    /// The last record is not the unit's head: it was edited.
    #[error(
        "the last record (counter {counter}) was edited: its hash is not the head the unit signed"
    )]
    HeadMismatch {
        /// The last record's counter.
        counter: u64,
    },
    /// The log ends before the unit's counter.
    #[error("the log is truncated: it ends at counter {last} but the unit's counter is {counter}")]
    Truncated {
        /// The last counter present (`start - 1` when none).
        last: u64,
        /// The unit's signed counter.
        counter: u64,
    },
    /// The log holds records past the unit's counter.
    #[error("the log holds a record at counter {found}, past the unit's counter {counter}")]
    PastCounter {
        /// The record's counter.
        found: u64,
        /// The unit's signed counter.
        counter: u64,
    },
}

/// Checks a fetched log: each record decodes, holds the counter of its place and the hash
/// of the record before it (the first one: the `prev` the unit gave, zeros when it is the
/// unit's first record), and the log ends with the record of the unit's counter, whose
/// hash is the head the unit signed. Returns the decoded records.
///
/// # Errors
/// The first [`AuditTamper`] found, in log order.
pub fn verify_chain(log: &AuditLog) -> Result<Vec<AuditRecord>, AuditTamper> {
    let mut expected_prev = if log.start <= log.first {
        Digest32([0; 32])
    } else {
        log.prev
    };
    let mut out = Vec::with_capacity(log.records.len());
    for (i, bytes) in log.records.iter().enumerate() {
        let counter = log.start.saturating_add(i as u64);
        let record =
            AuditRecord::decode_checked(bytes).map_err(|_| AuditTamper::Undecodable { counter })?;
        if record.counter > log.counter {
            return Err(AuditTamper::PastCounter {
                found: record.counter,
                counter: log.counter,
            });
        }
        if record.counter != counter {
            return Err(AuditTamper::Gap {
                expected: counter,
                found: record.counter,
            });
        }
        if record.prev != expected_prev {
            return Err(AuditTamper::Edited { counter });
        }
        expected_prev = Digest32::sha256(bytes);
        out.push(record);
    }
    let last = log.start.saturating_add(out.len() as u64).saturating_sub(1);
    if log.start <= log.counter && last < log.counter {
        return Err(AuditTamper::Truncated {
            last,
            counter: log.counter,
        });
    }
    if log.counter >= log.first && !out.is_empty() && expected_prev != log.head {
        return Err(AuditTamper::HeadMismatch { counter: last });
    }
    Ok(out)
}
