//! A transport that tampers with what units answer, so that tests prove the client refuses
//! forged answers itself rather than trusting whatever carries the bytes.
//!
//! [`TamperingTransport`] wraps any [`Transport`] (an embedded fleet, an HTTPS target),
//! records every exchange, and applies the [`Tamper`]s a test arms, one per exchange with
//! a unit, in the order armed.

use std::sync::{Arc, Mutex, MutexGuard};

use tke_client::{ClientError, Transport, UnitDescriptor};
use tke_proto::{
    der::{asn1::OctetString, Decode, Encode},
    ResponseBody, SignedResponse, UnitId,
};

/// Edits a response body.
pub type BodyEdit = Box<dyn FnOnce(&mut ResponseBody) + Send>;

/// Edits a unit listing.
pub type ListingEdit = Box<dyn FnOnce(&mut Vec<UnitDescriptor>) + Send>;

/// A byte of an answer, counted from its start or from its end (answers vary by a byte
/// or two: DER signatures do).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteAt {
    /// The byte at this offset (0: the first).
    Start(usize),
    /// The byte this many bytes before the last (0: the last).
    End(usize),
}

/// One way of tampering with one exchange.
pub enum Tamper {
    /// The request reaches the unit; one byte of its answer is XORed with `mask` (a bit
    /// error or a deliberate change on the wire).
    FlipByte {
        /// Which byte of the `SignedResponse` DER.
        at: ByteAt,
        /// The bits to flip (not 0).
        mask: u8,
    },
    /// The request reaches the unit; its signed body is decoded, changed by the edit and
    /// encoded again, and the unit's signature is kept: a forged answer (e.g. success
    /// where the unit refused).
    EditBody(BodyEdit),
    /// The request never reaches the unit; the caller gets the last answer that another
    /// unit gave through this transport: answers swapped between units.
    AnswerOf(UnitId),
    /// The request never reaches the unit; the caller gets the answer recorded as
    /// exchange `index` (see [`TamperingTransport::exchanges`]): an old answer replayed.
    Replay(usize),
}

impl core::fmt::Debug for Tamper {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::FlipByte { at, mask } => write!(f, "FlipByte({at:?}, {mask:#04x})"),
            Self::EditBody(_) => f.write_str("EditBody"),
            Self::AnswerOf(u) => write!(f, "AnswerOf({})", u.uuid()),
            Self::Replay(i) => write!(f, "Replay({i})"),
        }
    }
}

/// One request and its answer, as this transport saw them.
#[derive(Clone, Debug)]
pub struct Exchange {
    /// The unit addressed.
    pub unit: UnitId,
    /// The request's DER.
    pub request: Vec<u8>,
    /// What the unit answered; `None` when the request was withheld from it.
    pub answer: Option<Vec<u8>>,
    /// What the caller got.
    pub delivered: Vec<u8>,
    /// How it was tampered with, if it was.
    pub tamper: Option<String>,
}

#[derive(Default)]
struct State {
    armed: Vec<(UnitId, Tamper)>,
    listing: Vec<ListingEdit>,
    log: Vec<Exchange>,
}

/// Wraps a transport and tampers with the exchanges a test arms; passes the others
/// through unchanged. Every exchange is recorded.
pub struct TamperingTransport {
    inner: Arc<dyn Transport>,
    state: Mutex<State>,
}

impl TamperingTransport {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Transport>) -> Self {
        Self {
            inner,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock has failed already; later calls
        // still see consistent records.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tampers with the next exchange with `unit` not yet claimed by an earlier `tamper`.
    pub fn tamper(&self, unit: UnitId, how: Tamper) {
        self.state().armed.push((unit, how));
    }

    /// Edits the next unit listing ([`Transport::list_units`]).
    pub fn tamper_listing(&self, edit: ListingEdit) {
        self.state().listing.push(edit);
    }

    /// Every exchange so far, in order.
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.state().log.clone()
    }

    /// How many exchanges there were so far.
    pub fn exchange_count(&self) -> usize {
        self.state().log.len()
    }

    /// Armed tampers not used yet (a test that armed one expects it used).
    pub fn pending(&self) -> usize {
        self.state().armed.len()
    }

    fn take_tamper(&self, unit: &UnitId) -> Option<Tamper> {
        let mut s = self.state();
        let i = s.armed.iter().position(|(u, _)| u == unit)?;
        Some(s.armed.remove(i).1)
    }

    /// The answer to deliver instead of the unit's, for the tampers that withhold the
    /// request.
    fn stand_in(&self, how: &Tamper) -> Option<Vec<u8>> {
        let s = self.state();
        let found = match how {
            Tamper::AnswerOf(other) => s
                .log
                .iter()
                .rev()
                .filter(|e| e.unit == *other)
                .find_map(|e| e.answer.clone()),
            Tamper::Replay(i) => s.log.get(*i).and_then(|e| e.answer.clone()),
            Tamper::FlipByte { .. } | Tamper::EditBody(_) => return None,
        };
        Some(found.unwrap_or_else(|| panic!("{how:?}: no such answer recorded")))
    }
}

/// Applies a tamper that lets the request through to the unit's answer.
fn alter(answer: &[u8], how: Tamper) -> Vec<u8> {
    match how {
        Tamper::FlipByte { at, mask } => {
            let mut v = answer.to_vec();
            let len = v.len();
            let index = match at {
                ByteAt::Start(i) => Some(i),
                ByteAt::End(i) => len.checked_sub(i + 1),
            };
            let b = index
                .and_then(|i| v.get_mut(i))
                .unwrap_or_else(|| panic!("FlipByte({at:?}): the answer has {len} bytes"));
            *b ^= mask;
            v
        }
        Tamper::EditBody(edit) => {
            let mut signed = SignedResponse::from_der(answer)
                .unwrap_or_else(|e| panic!("the unit's answer is not a SignedResponse: {e}"));
            let mut body = ResponseBody::from_der(signed.body.as_bytes())
                .unwrap_or_else(|e| panic!("the unit's answer has no ResponseBody: {e}"));
            edit(&mut body);
            let der = body
                .to_der()
                .unwrap_or_else(|e| panic!("cannot encode the edited body: {e}"));
            signed.body = OctetString::new(der).unwrap_or_else(|e| panic!("the edited body: {e}"));
            signed
                .to_der()
                .unwrap_or_else(|e| panic!("cannot encode the forged answer: {e}"))
        }
        Tamper::AnswerOf(_) | Tamper::Replay(_) => answer.to_vec(),
    }
}

impl Transport for TamperingTransport {
    fn describe(&self) -> String {
        format!("{} (tampering)", self.inner.describe())
    }

    fn list_units(&self) -> Result<Vec<UnitDescriptor>, ClientError> {
        let mut units = self.inner.list_units()?;
        let edit = {
            let mut s = self.state();
            (!s.listing.is_empty()).then(|| s.listing.remove(0))
        };
        if let Some(edit) = edit {
            edit(&mut units);
        }
        Ok(units)
    }

    fn exchange(&self, unit: &UnitId, request_der: &[u8]) -> Result<Vec<u8>, ClientError> {
        let how = self.take_tamper(unit);
        let label = how.as_ref().map(|h| format!("{h:?}"));
        // The lock is not held while the unit works: the client fans out to many units.
        let (answer, delivered) = match how {
            None => {
                let a = self.inner.exchange(unit, request_der)?;
                (Some(a.clone()), a)
            }
            Some(how) => match self.stand_in(&how) {
                Some(stand_in) => (None, stand_in),
                None => {
                    let a = self.inner.exchange(unit, request_der)?;
                    let altered = alter(&a, how);
                    (Some(a), altered)
                }
            },
        };
        self.state().log.push(Exchange {
            unit: *unit,
            request: request_der.to_vec(),
            answer,
            delivered: delivered.clone(),
            tamper: label,
        });
        Ok(delivered)
    }
}
