//! The client refuses every answer it did not get, as sent, from the unit it asked, for
//! the request it sent: answers altered on the wire, forged bodies under the unit's own
//! signature, answers swapped between units, old answers replayed, and a listing that
//! swaps device certificates. Each refusal has its own error kind, and nothing refused is
//! acted on: no output is returned, no counter is taken from it, no command is sent again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use tke_client::{Client, ClientError, EmbeddedFleet, FleetSpec, KnownUnit, Transport};
use tke_proto::{Command, ModuleError, ProtoError, SignedCommand, UnitId, UnitStatus, UnitType};
use tke_sigkey::Signer as _;
use tke_test_support::{ByteAt, MemSigner, Tamper, TamperingTransport};

/// An embedded fleet of two operational and two recovery units behind a tampering
/// transport, and a client over it.
struct Setup {
    _dir: tempfile::TempDir,
    fleet: Arc<EmbeddedFleet>,
    wire: Arc<TamperingTransport>,
    client: Client,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let fleet =
        Arc::new(EmbeddedFleet::create(&dir.path().join("local"), FleetSpec::default()).unwrap());
    let ca = fleet.ca().clone();
    let wire = Arc::new(TamperingTransport::new(fleet.clone()));
    let t: Arc<dyn Transport> = wire.clone();
    let client = Client::connect(vec![(t, ca)]).unwrap();
    Setup {
        _dir: dir,
        fleet,
        wire,
        client,
    }
}

impl Setup {
    fn unit(&self, i: usize) -> &KnownUnit {
        &self.client.units()[i]
    }

    /// The unit's status from a second client straight on the fleet (no tampering).
    fn truth(&self, unit: &KnownUnit) -> UnitStatus {
        let t: Arc<dyn Transport> = self.fleet.clone();
        let honest = Client::connect(vec![(t, self.fleet.ca().clone())]).unwrap();
        honest.query(honest.unit(&unit.id()).unwrap()).unwrap()
    }

    /// Runs `AddAdmin(name)` (imprint mode: no signature needed).
    fn add_admin(&self, unit: &KnownUnit, name: &str) -> Result<Vec<u8>, ClientError> {
        let cert = MemSigner::new(name).certificate().clone();
        self.client.run(unit, &Command::AddAdmin(cert), &[])
    }
}

fn names(s: &UnitStatus) -> Vec<&str> {
    s.admins.iter().map(|a| a.name.as_str()).collect()
}

/// The error is `Response { unit, source }` for this unit; returns the source.
#[track_caller]
fn response_error(e: ClientError, unit: UnitId) -> ProtoError {
    match e {
        ClientError::Response { unit: u, source } if u == unit => source,
        other => panic!(
            "expected a refused answer of unit {}, got {other:?}",
            unit.uuid()
        ),
    }
}

#[track_caller]
fn assert_bad_signature(e: ClientError, unit: UnitId) {
    let source = response_error(e, unit);
    assert!(
        matches!(source, ProtoError::ResponseSignature { unit: u } if u == unit),
        "expected ResponseSignature, got {source:?}"
    );
}

#[track_caller]
fn assert_not_bound(e: ClientError, unit: UnitId) {
    let source = response_error(e, unit);
    assert!(
        matches!(source, ProtoError::ResponseBinding { unit: u, .. } if u == unit),
        "expected ResponseBinding, got {source:?}"
    );
}

#[test]
fn every_flipped_byte_of_an_answer_is_refused() {
    let s = setup();
    let u = s.unit(0);
    s.client.query(u).unwrap();
    let len = s.wire.exchanges().last().unwrap().delivered.len();
    let before = s.wire.exchange_count();
    let (mut malformed, mut unsigned) = (0, 0);
    for index in 0..len {
        let mask = 1u8 << (index % 8);
        // The first half from the start, the rest from the end: the signature's length
        // varies from answer to answer.
        let at = if index < len / 2 {
            ByteAt::Start(index)
        } else {
            ByteAt::End(len - 1 - index)
        };
        s.wire.tamper(u.id(), Tamper::FlipByte { at, mask });
        let e = s.client.query(u).unwrap_err();
        // Either the answer no longer decodes, or what decodes is not what the unit
        // signed; never an answer to another request, never a status.
        match response_error(e, u.id()) {
            ProtoError::Der(_) => malformed += 1,
            ProtoError::ResponseSignature { unit } if unit == u.id() => unsigned += 1,
            other => panic!("byte {at:?} (mask {mask:#04x}): refused as {other:?}"),
        }
    }
    // The outer DER header breaks decoding; the body and the signature break the check.
    assert!(
        malformed >= 2 && unsigned > len / 2,
        "{malformed} / {unsigned} of {len}"
    );
    assert_eq!(s.wire.pending(), 0);
    // One exchange per query: the client sent nothing again.
    assert_eq!(s.wire.exchange_count(), before + len);
    // The wire was the only thing wrong: an untouched answer is accepted again.
    assert_eq!(s.client.query(u).unwrap(), s.truth(u));
}

#[test]
fn a_forged_success_is_refused() {
    let s = setup();
    let u = s.unit(0);
    let before = s.truth(u);
    // A command for a counter the unit will refuse (163: it runs nothing).
    let cert = MemSigner::new("alice").certificate().clone();
    let wire = Command::AddAdmin(cert)
        .to_wire(u.id(), before.counter + 5)
        .unwrap();
    let signed = SignedCommand::unsigned(&wire).unwrap();
    let e = s.client.submit(u, &signed).unwrap_err();
    assert!(
        matches!(e, ClientError::Module { error, .. } if error == ModuleError::INVALID_COUNTER),
        "{e:?}"
    );
    // The same refusal rewritten as a success under the unit's own signature.
    s.wire.tamper(
        u.id(),
        Tamper::EditBody(Box::new(|b| {
            b.return_code = 0;
            b.reason_code = 0;
        })),
    );
    assert_bad_signature(s.client.submit(u, &signed).unwrap_err(), u.id());
    assert_eq!(s.wire.pending(), 0);
    let after = s.truth(u);
    assert!(after.admins.is_empty(), "{:?}", names(&after));
}

#[test]
fn a_forged_counter_refusal_does_not_make_the_client_send_the_command_again() {
    let s = setup();
    let u = s.unit(0);
    s.add_admin(u, "alice").unwrap();
    let before = s.truth(u);
    let sent = s.wire.exchange_count();
    // The unit runs the command; its answer comes back as "invalid counter" (163). Were
    // the client to believe it, it would read the counter and send the command again.
    s.wire.tamper(
        u.id(),
        Tamper::EditBody(Box::new(|b| {
            b.return_code = ModuleError::INVALID_COUNTER.rc;
            b.reason_code = ModuleError::INVALID_COUNTER.reason;
        })),
    );
    assert_bad_signature(s.add_admin(u, "bob").unwrap_err(), u.id());
    assert_eq!(
        s.wire.exchange_count(),
        sent + 1,
        "the command went out once"
    );
    let after = s.truth(u);
    assert_eq!(names(&after), ["alice", "bob"]);
    assert_eq!(after.counter, before.counter + 1, "it ran exactly once");
}

#[test]
fn an_answer_swapped_in_from_another_unit_is_refused_and_the_request_never_ran() {
    let s = setup();
    let (a, b) = (s.unit(0), s.unit(1));
    assert_ne!(a.id(), b.id());
    // Both units answer honestly once (so the client knows A's counter, and the wire
    // holds an answer of B's, signed by B's device key under the same fleet CA).
    s.add_admin(a, "alice").unwrap();
    s.add_admin(b, "alice").unwrap();
    let before = s.truth(a);

    s.wire.tamper(a.id(), Tamper::AnswerOf(b.id()));
    assert_bad_signature(s.client.query(a).unwrap_err(), a.id());

    let sent = s.wire.exchange_count();
    s.wire.tamper(a.id(), Tamper::AnswerOf(b.id()));
    assert_bad_signature(s.add_admin(a, "bob").unwrap_err(), a.id());
    let log = s.wire.exchanges();
    assert_eq!(log.len(), sent + 1, "the command went out once");
    assert!(
        log[sent].answer.is_none(),
        "the request was withheld from A"
    );
    assert_eq!(s.wire.pending(), 0);
    // A ran nothing, and the client took no counter from B's answer: its next command
    // goes out once, with A's own next counter.
    assert_eq!(s.truth(a), before);
    s.add_admin(a, "bob").unwrap();
    assert_eq!(s.wire.exchange_count(), sent + 2);
    assert_eq!(names(&s.truth(a)), ["alice", "bob"]);
}

#[test]
fn a_replayed_answer_is_refused_and_its_counter_is_not_taken() {
    let s = setup();
    let u = s.unit(0);
    // A query's answer replayed to a fresh query (another nonce).
    s.client.query(u).unwrap();
    let old_query = s.wire.exchange_count() - 1;
    s.wire.tamper(u.id(), Tamper::Replay(old_query));
    assert_not_bound(s.client.query(u).unwrap_err(), u.id());

    // The unit's answer to alice's command, replayed when bob's is sent: the success of
    // another command, with an older counter.
    s.add_admin(u, "alice").unwrap();
    let alice_answer = s.wire.exchange_count() - 1;
    assert!(s.wire.exchanges()[alice_answer].request != s.wire.exchanges()[old_query].request);
    s.add_admin(u, "bob").unwrap();
    let before = s.truth(u);
    let sent = s.wire.exchange_count();
    s.wire.tamper(u.id(), Tamper::Replay(alice_answer));
    assert_not_bound(s.add_admin(u, "carol").unwrap_err(), u.id());
    assert_eq!(
        s.wire.exchange_count(),
        sent + 1,
        "the command went out once"
    );
    assert_eq!(s.wire.pending(), 0);
    assert_eq!(s.truth(u), before, "carol's command never reached the unit");
    // Had the client taken the replayed (older) counter, its next command would be
    // refused as stale and go out again after a query: it goes out once.
    s.add_admin(u, "carol").unwrap();
    assert_eq!(s.wire.exchange_count(), sent + 2);
    assert_eq!(names(&s.truth(u)), ["alice", "bob", "carol"]);
}

#[test]
fn a_listing_that_swaps_device_certificates_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fleet =
        Arc::new(EmbeddedFleet::create(&dir.path().join("local"), FleetSpec::default()).unwrap());
    let listed = fleet.list_units().unwrap();
    let wire = Arc::new(TamperingTransport::new(fleet.clone()));
    wire.tamper_listing(Box::new(|units| {
        let first = units[0].device_certificate.clone();
        units[0].device_certificate = std::mem::replace(&mut units[1].device_certificate, first);
    }));
    let t: Arc<dyn Transport> = wire.clone();
    let e = Client::connect(vec![(t.clone(), fleet.ca().clone())])
        .err()
        .expect("a swapped certificate is refused");
    assert!(
        matches!(
            &e,
            ClientError::Untrusted { unit, source: ProtoError::Certificate(_) }
                if *unit == listed[0].unit_id
        ),
        "{e:?}"
    );
    assert_eq!(wire.exchange_count(), 0, "no unit was asked anything");
    // The next, honest listing is trusted.
    let client = Client::connect(vec![(t, fleet.ca().clone())]).unwrap();
    assert_eq!(client.units().len(), listed.len());
}

/// A server that lists a unit with another type or instance than its device certificate
/// states (say, an operational unit shown as the recovery unit, or a unit of another
/// instance slipped into this one) is refused, naming the unit, before any unit is asked
/// anything.
#[test]
fn a_listing_that_disagrees_with_the_certificates_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fleet =
        Arc::new(EmbeddedFleet::create(&dir.path().join("local"), FleetSpec::default()).unwrap());
    let listed = fleet.list_units().unwrap();
    assert_eq!(listed[0].unit_type, UnitType::Operational);
    assert_eq!(listed[2].unit_type, UnitType::Recovery);
    let wire = Arc::new(TamperingTransport::new(fleet.clone()));
    let t: Arc<dyn Transport> = wire.clone();
    let other_instance = tke_client::InstanceId(tke_proto::InstanceId::random().uuid());
    let cases: Vec<(usize, &str, tke_test_support::tamper::ListingEdit)> = vec![
        (
            0,
            "the listing gives the type",
            Box::new(|units| units[0].unit_type = UnitType::Recovery),
        ),
        (
            2,
            "the listing gives the type",
            Box::new(|units| units[2].unit_type = UnitType::Operational),
        ),
        (
            2,
            "the listing gives the instance",
            Box::new(move |units| units[2].instance = other_instance),
        ),
    ];
    for (i, expected, edit) in cases {
        wire.tamper_listing(edit);
        let e = Client::connect(vec![(t.clone(), fleet.ca().clone())])
            .err()
            .expect("the listing is refused");
        match &e {
            ClientError::DisagreesWithCertificate { unit, what, .. } => {
                assert_eq!((*unit, *what), (listed[i].unit_id, expected), "{e}");
            }
            other => panic!("{expected}: {other:?}"),
        }
        assert!(e.to_string().contains(&listed[i].unit_id.uuid()), "{e}");
    }
    assert_eq!(wire.exchange_count(), 0, "no unit was asked anything");
    // The honest listing is trusted, and the types shown are the certificates'.
    let client = Client::connect(vec![(t, fleet.ca().clone())]).unwrap();
    for u in client.units() {
        assert_eq!(u.unit_type(), u.certificate.unit_type());
        assert_eq!(u.instance().0, u.certificate.instance_id().uuid());
    }
}

#[test]
fn the_tampered_bytes_are_what_the_client_got() {
    // The fixture itself: a flipped byte changes exactly that byte of what the unit said.
    let s = setup();
    let u = s.unit(0);
    s.wire.tamper(
        u.id(),
        Tamper::FlipByte {
            at: ByteAt::Start(3),
            mask: 0x10,
        },
    );
    s.client.query(u).unwrap_err();
    let e = s.wire.exchanges().pop().unwrap();
    let answer = e.answer.unwrap();
    let diff: Vec<usize> = (0..answer.len())
        .filter(|&i| answer[i] != e.delivered[i])
        .collect();
    assert_eq!(diff, [3]);
    assert_eq!(answer[3] ^ e.delivered[3], 0x10);
    assert_eq!(e.tamper.as_deref(), Some("FlipByte(Start(3), 0x10)"));
}
