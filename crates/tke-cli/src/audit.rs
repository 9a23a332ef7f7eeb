//! `cryptounit-audit`: fetches the audit log of every selected unit (signed pages, bound
//! to fresh nonces), checks its hash chain against the head and counter the unit signed
//! ([`tke_proto::audit::verify_chain`]), and shows who did what. A log that fails the check
//! is reported as tampering, naming the unit and the counter, and the command fails.

use std::collections::HashMap;

use anyhow::{bail, Result};
use serde_json::json;
use tke_client::{fanout::parallel, ClientError, KnownUnit};
use tke_keystore::Created;
use tke_proto::{
    audit::{verify_chain, AuditTamper},
    AdminName, AuditLog, AuditRecord, Digest32, ModuleError, Ski, UnitStatus,
};

use crate::{
    context::Ctx,
    sigkeys::list,
    table::Table,
    units::{header, require_selected, unit_json, unreachable_units},
};

/// `cryptounit-audit` flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Show the records from this transaction counter on (the chain is checked from
    /// there, starting with the previous record's hash the unit signs); all when omitted.
    #[arg(long, value_name = "COUNTER", default_value_t = 0)]
    pub from: u64,
}

/// What one unit's log gave.
struct Checked<'u> {
    unit: &'u KnownUnit,
    log: AuditLog,
    outcome: Result<Vec<AuditRecord>, AuditTamper>,
    /// SKI → administrator name: the unit's administrators, then the workstation's keys.
    names: HashMap<Ski, AdminName>,
}

/// `cryptounit-audit`.
pub fn run(ctx: &Ctx, args: &Args) -> Result<()> {
    let (fleet, down) = ctx.connect_reachable()?;
    let units = require_selected(ctx, &fleet)?;
    let keys = list(ctx)?;
    let fetched = parallel(&units, |u| -> Result<(UnitStatus, AuditLog), ClientError> {
        Ok((fleet.client.query(u)?, fleet.client.audit(u, args.from)?))
    });
    let mut checked = Vec::new();
    let mut failed: Vec<(usize, ClientError)> = Vec::new();
    for (u, r) in units.iter().zip(fetched) {
        match r {
            Ok((status, log)) => {
                let mut names: HashMap<Ski, AdminName> =
                    keys.iter().map(|k| (k.ski, k.name.clone())).collect();
                // The unit's own list wins: it is what the unit certified.
                names.extend(status.admins.into_iter().map(|a| (a.ski, a.name)));
                checked.push(Checked {
                    unit: u,
                    outcome: verify_chain(&log),
                    log,
                    names,
                });
            }
            Err(e) => failed.push((u.num, e)),
        }
    }
    if ctx.json {
        let v: Vec<_> = checked.iter().map(unit_log_json).collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        header(&fleet);
        for c in &checked {
            print_unit(c);
        }
    }
    let tampered: Vec<&Checked> = checked.iter().filter(|c| c.outcome.is_err()).collect();
    for c in &tampered {
        if let Err(t) = &c.outcome {
            eprintln!(
                "TAMPERING: the audit log of crypto unit {} ({}) fails its check: {t}.\n",
                c.unit.num,
                c.unit.id().uuid()
            );
        }
    }
    unreachable_units(&down, &failed)?;
    if !tampered.is_empty() {
        let nums: Vec<String> = tampered.iter().map(|c| c.unit.num.to_string()).collect();
        let whose = match nums.as_slice() {
            [one] => format!("crypto unit {one}"),
            _ => format!("crypto units {}", nums.join(", ")),
        };
        bail!(
            "the audit log of {whose} shows tampering (see above): its records cannot be trusted"
        );
    }
    Ok(())
}

/// `done`, or the refusal's codes and text.
fn result_text(r: &AuditRecord) -> String {
    if r.return_code == 0 {
        return "done".to_owned();
    }
    let e = ModuleError::new(r.return_code, r.reason_code);
    format!("refused ({}/{}): {}", e.rc, e.reason, e.text())
}

/// The signers by name where known, by SKI otherwise, in alphabetical order.
fn signer_names(c: &Checked, r: &AuditRecord) -> Vec<String> {
    let mut names: Vec<String> = r
        .signers
        .iter()
        .map(|s| match c.names.get(s) {
            Some(n) => n.to_string(),
            None => format!("SKI {}", s.to_hex()),
        })
        .collect();
    names.sort();
    names
}

/// `2026-11-29T08:27:51Z`: records keep whole seconds.
fn time_text(t: u64) -> String {
    Created::from_unix_millis(i64::try_from(t.saturating_mul(1000)).unwrap_or(i64::MAX))
        .to_string()
        .replace(".000Z", "Z")
}

fn print_unit(c: &Checked) {
    println!(
        "CRYPTO UNIT NUM {} ({}), SERVICE INSTANCE {}",
        c.unit.num,
        c.unit.id().uuid(),
        c.unit.instance()
    );
    match &c.outcome {
        Err(_) => println!("The audit log fails its check: its records are not shown.\n"),
        Ok(records) => {
            println!(
                "Transaction counter {}; {} records shown, chain verified up to the head the unit signed.",
                c.log.counter,
                records.len()
            );
            let mut t = Table::new(&["COUNTER", "TIME (UTC)", "COMMAND", "SIGNERS", "RESULT"]);
            for r in records {
                let signers = signer_names(c, r);
                t.row(vec![
                    r.counter.to_string(),
                    time_text(r.time),
                    r.command.name().to_owned(),
                    if signers.is_empty() {
                        "(none)".to_owned()
                    } else {
                        signers.join(", ")
                    },
                    result_text(r),
                ]);
            }
            println!("{}", t.render());
        }
    }
}

fn unit_log_json(c: &Checked) -> serde_json::Value {
    let mut v = unit_json(c.unit);
    v.insert("counter".into(), c.log.counter.into());
    match &c.outcome {
        Ok(records) => {
            v.insert("verified".into(), true.into());
            let recs: Vec<_> = records
                .iter()
                .zip(&c.log.records)
                .map(|(r, der)| {
                    let names: Vec<_> = r
                        .signers
                        .iter()
                        .map(|s| c.names.get(s).map(|n| n.as_str().to_owned()))
                        .collect();
                    json!({
                        "counter": r.counter,
                        "command": r.command.name(),
                        "signers": r.signers.iter().map(Ski::to_hex).collect::<Vec<_>>(),
                        "signer_names": names,
                        "rc": r.return_code,
                        "reason": r.reason_code,
                        "time": time_text(r.time),
                        "command_hash": r.command_hash.to_hex(),
                        "hash": Digest32::sha256(der).to_hex(),
                        "prev": r.prev.to_hex(),
                    })
                })
                .collect();
            v.insert("records".into(), recs.into());
        }
        Err(t) => {
            v.insert("verified".into(), false.into());
            v.insert("tampering".into(), t.to_string().into());
            v.insert("records".into(), serde_json::Value::Array(Vec::new()));
        }
    }
    serde_json::Value::Object(v)
}
