#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The audit log's messages: strict decoding with size limits, and the client's chain
//! check ([`verify_chain`]) against every kind of tampering.

use der::{asn1::OctetString, Encode};
use tke_proto::{
    audit::{verify_chain, AuditLog, AuditTamper, MAX_AUDIT_SIGNERS},
    AuditPage, AuditRecord, CommandId, Digest32, ProtoError, Ski, MAX_AUDIT_PAGE,
};

/// A valid chain of `n` records from counter 1.
fn chain(n: u64) -> Vec<Vec<u8>> {
    let mut prev = Digest32([0; 32]);
    (1..=n)
        .map(|counter| {
            let der = AuditRecord {
                counter,
                command: CommandId::ClearNew,
                command_hash: Digest32([counter as u8; 32]),
                signers: vec![Ski([7; 32])],
                return_code: 0,
                reason_code: 0,
                time: 1_764_403_200 + counter,
                prev,
            }
            .to_der()
            .unwrap();
            prev = Digest32::sha256(&der);
            der
        })
        .collect()
}

/// The log a client fetched from `from`, for a unit whose whole log is `all` and whose
/// counter and head match it.
fn fetched(all: &[Vec<u8>], from: u64) -> AuditLog {
    let start = from.max(1);
    let i = (start - 1) as usize;
    AuditLog {
        counter: all.len() as u64,
        first: 1,
        head: all
            .last()
            .map_or(Digest32([0; 32]), |r| Digest32::sha256(r)),
        start,
        prev: if i == 0 {
            Digest32([0; 32])
        } else {
            Digest32::sha256(&all[i - 1])
        },
        records: all.get(i..).unwrap_or_default().to_vec(),
    }
}

#[test]
fn an_intact_log_checks_from_any_counter() {
    let all = chain(5);
    assert_eq!(verify_chain(&fetched(&all, 0)).unwrap().len(), 5);
    let tail = verify_chain(&fetched(&all, 3)).unwrap();
    assert_eq!(
        tail.iter().map(|r| r.counter).collect::<Vec<_>>(),
        [3, 4, 5]
    );
    assert!(verify_chain(&fetched(&all, 6)).unwrap().is_empty());
    assert!(verify_chain(&fetched(&[], 0)).unwrap().is_empty());
}

#[test]
fn each_kind_of_tampering_names_its_counter() {
    let all = chain(5);
    let check =
        |log: AuditLog, expected: AuditTamper| assert_eq!(verify_chain(&log), Err(expected));

    let mut log = fetched(&all, 0);
    log.records[1][10] ^= 1; // inside record 2's command hash
    check(log, AuditTamper::Edited { counter: 3 });

    let mut log = fetched(&all, 0);
    log.records[4][10] ^= 1;
    check(log, AuditTamper::HeadMismatch { counter: 5 });

    let mut log = fetched(&all, 0);
    log.records.remove(2);
    check(
        log,
        AuditTamper::Gap {
            expected: 3,
            found: 4,
        },
    );

    let mut log = fetched(&all, 0);
    log.records.truncate(3);
    check(
        log,
        AuditTamper::Truncated {
            last: 3,
            counter: 5,
        },
    );

    let mut log = fetched(&all, 0);
    log.records.clear();
    check(
        log,
        AuditTamper::Truncated {
            last: 0,
            counter: 5,
        },
    );

    let mut log = fetched(&all, 0);
    log.records[0].push(0);
    check(log, AuditTamper::Undecodable { counter: 1 });

    // Records past the counter the unit signed.
    let mut log = fetched(&all, 0);
    log.counter = 4;
    check(
        log,
        AuditTamper::PastCounter {
            found: 5,
            counter: 4,
        },
    );

    // From a counter on, the first record must hold the hash the unit gave.
    let mut log = fetched(&all, 3);
    log.prev = Digest32([1; 32]);
    check(log, AuditTamper::Edited { counter: 3 });

    // From the first record, `prev` must be zeros whatever the unit says.
    let mut log = fetched(&all, 0);
    log.prev = Digest32([1; 32]);
    assert!(verify_chain(&log).is_ok());
    let e = AuditTamper::Truncated {
        last: 3,
        counter: 5,
    }
    .to_string();
    assert_eq!(
        e,
        "the log is truncated: it ends at counter 3 but the unit's counter is 5"
    );
}

#[test]
fn pages_and_records_beyond_the_limits_are_refused() {
    let record = OctetString::new(chain(1).remove(0)).unwrap();
    let page = |n: usize| AuditPage {
        first: 1,
        head: Digest32([0; 32]),
        prev: Digest32([0; 32]),
        records: vec![record.clone(); n],
    };
    let ok = page(MAX_AUDIT_PAGE).to_der().unwrap();
    assert_eq!(
        AuditPage::decode_checked(&ok).unwrap().records.len(),
        MAX_AUDIT_PAGE
    );
    let over = page(MAX_AUDIT_PAGE + 1).to_der().unwrap();
    match AuditPage::decode_checked(&over) {
        Err(ProtoError::AuditSize { count, max, .. }) => {
            assert_eq!((count, max), (MAX_AUDIT_PAGE + 1, MAX_AUDIT_PAGE))
        }
        other => panic!("{other:?}"),
    }
    let mut trailing = ok.clone();
    trailing.push(0);
    assert!(matches!(
        AuditPage::decode_checked(&trailing),
        Err(ProtoError::Der(_))
    ));

    let mut r = AuditRecord::decode_checked(record.as_bytes()).unwrap();
    r.signers = vec![Ski([1; 32]); MAX_AUDIT_SIGNERS + 1];
    assert!(matches!(
        AuditRecord::decode_checked(&r.to_der().unwrap()),
        Err(ProtoError::AuditSize {
            count: 17,
            max: 16,
            ..
        })
    ));
}
