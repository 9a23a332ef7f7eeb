//! Control points: `cryptounit-cp` (show them, or set or reset one), and
//! `cryptounit-cp-btc`, `cryptounit-cp-eddsa`, `cryptounit-cp-sig-other` (turn one named
//! point on); the `CONTROL POINTS` section of `cryptounit-compare`.
//!
//! The change is [`tke_ceremony::ControlPointChange`] on the shared plan: every unit is
//! checked (imprint mode, enough installed keys that may sign) before anything is asked
//! or sent, and a unit that holds the wanted value already is sent nothing. This module
//! parses the point, prints the plan, asks (`cryptounit-cp` only), opens only the keys
//! the plan needs and says who signed.

use anyhow::{bail, Result};
use serde_json::json;
use tke_ceremony::{CeremonyError, CompareReport, ControlPointChange, Problem, Rule};
use tke_client::KnownUnit;
use tke_proto::{ControlPoint, ControlPoints, UnitStatus};

use crate::{
    admins::start,
    context::{Ctx, Fleet},
    signing::{self, SignerArgs},
    table::Table,
    units::{by_instance, header, print_json, require_selected, unreachable_units},
};

/// What `cryptounit-cp --help` adds: what the named control points enable.
pub const CP_HELP: &str = "\
Control points are the 128 bits (0 to 127) of a crypto unit's control point mask: each
enables a family of mechanisms for the keys of the service instance. Three are named:

  55  XCP_CPB_ALG_EC_25519  EdDSA over Edwards curves (Ed25519, Ed448)
  66  XCP_CPB_BTC           BIP32 key derivation and other bitcoin functions
  67  XCP_CPB_ECDSA_OTHER   elliptic curve signatures other than ECDSA and EdDSA
                            (Schnorr and similar)

New crypto units have the three set. `tke cryptounit-cp-eddsa`, `cryptounit-cp-btc` and
`cryptounit-cp-sig-other` set one of them on every selected crypto unit.

Changing a control point needs the signatures of as many administrators as each crypto
unit's signature threshold, and is refused in imprint mode. A crypto unit that holds the
wanted value already is sent nothing. Check the result with `tke cryptounit-compare`.";

/// `cryptounit-cp` flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Set this control point on every selected crypto unit: a number from 0 to 127, or
    /// a name (XCP_CPB_ALG_EC_25519, XCP_CPB_BTC, XCP_CPB_ECDSA_OTHER). Without --set or
    /// --reset the control points are shown (and, on a terminal, one can be changed).
    #[arg(long, value_name = "N", value_parser = parse_point, conflicts_with = "reset")]
    pub set: Option<ControlPoint>,
    /// Reset (clear) this control point on every selected crypto unit: a number from 0
    /// to 127, or a name.
    #[arg(long, value_name = "N", value_parser = parse_point)]
    pub reset: Option<ControlPoint>,
    #[command(flatten)]
    pub signers: SignerArgs,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
}

/// `cryptounit-cp-btc`, `-eddsa`, `-sig-other` flags.
#[derive(clap::Args, Debug)]
pub struct EnableArgs {
    #[command(flatten)]
    pub signers: SignerArgs,
}

/// A control point as the operator types it: `66`, or `XCP_CPB_BTC`.
fn parse_point(s: &str) -> std::result::Result<ControlPoint, String> {
    s.parse().map_err(|e: tke_proto::ProtoError| e.to_string())
}

/// `XCP_CPB_BTC (66)`, or `12` for a point with no name.
fn label(p: ControlPoint) -> String {
    match p.name() {
        Some(name) => format!("{name} ({})", p.number()),
        None => p.number().to_string(),
    }
}

/// What a named point enables.
fn feature(p: ControlPoint) -> Option<&'static str> {
    match p {
        ControlPoint::ALG_EC_25519 => Some("EdDSA over Edwards curves"),
        ControlPoint::BTC => Some("BIP32 and other bitcoin functions"),
        ControlPoint::ECDSA_OTHER => {
            Some("elliptic curve signatures other than ECDSA and EdDSA, such as Schnorr")
        }
        _ => None,
    }
}

/// `Set` / `Not Set`, as the vendor shows a control point.
fn value(set: bool) -> &'static str {
    if set {
        "Set"
    } else {
        "Not Set"
    }
}

/// The points set in `mask` that have no name, as numbers, or `(none)`.
fn others(mask: &ControlPoints) -> String {
    let v: Vec<String> = mask
        .iter()
        .filter(|p| p.name().is_none())
        .map(|p| p.number().to_string())
        .collect();
    if v.is_empty() {
        "(none)".to_owned()
    } else {
        v.join(" ")
    }
}

/// The header of the column of other points set.
const OTHERS: &str = "OTHER CONTROL POINTS SET";

/// Prints the `CONTROL POINTS` tables of `rows`, one per service instance: one column per
/// named point, and, when `always_others` or any unit has one, the other points set.
pub fn print_section(rows: &[(&KnownUnit, UnitStatus)], always_others: bool) {
    let with_others = always_others
        || rows
            .iter()
            .any(|(_, s)| s.control_points.iter().any(|p| p.name().is_none()));
    let mut headers = vec!["CRYPTO UNIT NUM"];
    headers.extend(ControlPoint::NAMED.iter().filter_map(|p| p.name()));
    if with_others {
        headers.push(OTHERS);
    }
    by_instance(rows, &headers, &|s| {
        let mut cells: Vec<String> = ControlPoint::NAMED
            .iter()
            .map(|p| value(s.control_points.contains(*p)).to_owned())
            .collect();
        if with_others {
            cells.push(others(&s.control_points));
        }
        cells
    });
}

/// A unit's control points as JSON: the mask, the points set, and each named point.
pub fn json(mask: &ControlPoints) -> serde_json::Value {
    let named: serde_json::Map<String, serde_json::Value> = ControlPoint::NAMED
        .iter()
        .filter_map(|p| Some((p.name()?.to_owned(), mask.contains(*p).into())))
        .collect();
    json!({
        "mask": mask.to_hex(),
        "set": mask.iter().map(ControlPoint::number).collect::<Vec<_>>(),
        "named": named,
    })
}

/// `cryptounit-cp`: shows the control points, or changes one.
pub fn run(ctx: &Ctx, args: &Args) -> Result<()> {
    let flags = match (args.set, args.reset) {
        (Some(p), _) => Some((p, true)),
        (None, Some(p)) => Some((p, false)),
        (None, None) => None,
    };
    let wanted = match flags {
        Some(wanted) => wanted,
        None => {
            let (fleet, down) = ctx.connect_reachable()?;
            let units = require_selected(ctx, &fleet)?;
            match show(ctx, &fleet, &units, &down)? {
                Some(wanted) => wanted,
                None => return Ok(()),
            }
        }
    };
    // A change needs every target (a show leaves out those that are down); the plan
    // queries every unit again. After a show, the fleet header is on the screen already.
    let fleet = ctx.connect()?;
    let units = if flags.is_some() {
        start(ctx, &fleet)?
    } else {
        require_selected(ctx, &fleet)?
    };
    change(ctx, &fleet, units, wanted, &args.signers, Some(args.yes))
}

/// Shows the control points of `units`; on a terminal (not with `--output json`), then
/// asks which point to change and how: `None` when none.
fn show(
    ctx: &Ctx,
    fleet: &Fleet,
    units: &[&KnownUnit],
    down: &[(String, anyhow::Error)],
) -> Result<Option<(ControlPoint, bool)>> {
    let report = CompareReport::query(&fleet.client, units)?;
    if ctx.json {
        print_json(report.units(), &|s, v| {
            v.insert("control_points".into(), json(&s.control_points));
        })?;
        unreachable_units(down, &[])?;
        return Ok(None);
    }
    header(fleet);
    print_section(report.units(), true);
    unreachable_units(down, &[])?;
    // On a terminal the vendor's command goes on to change one; a script gives --set or
    // --reset instead.
    if !ctx.prompt.interactive() {
        return Ok(None);
    }
    let Some(point) = ctx.prompt.ask(
        "Enter the number (0-127) or name of the control point to set or reset, or nothing to leave them as they are:",
        "--set N or --reset N",
        |s| {
            if s.is_empty() {
                Ok(None)
            } else {
                parse_point(s).map(Some).map_err(anyhow::Error::msg)
            }
        },
    )?
    else {
        println!("OK\nNo control point was changed.");
        return Ok(None);
    };
    let set = ctx.prompt.ask(
        &format!(
            "Set or reset control point {}? Enter set or reset:",
            label(point)
        ),
        "--set N or --reset N",
        |s| match s.to_ascii_lowercase().as_str() {
            "set" | "s" => Ok(true),
            "reset" | "r" => Ok(false),
            _ => bail!("{s:?} is neither set nor reset"),
        },
    )?;
    println!();
    Ok(Some((point, set)))
}

/// `cryptounit-cp-btc`, `-eddsa`, `-sig-other`: sets `point` on every selected unit.
pub fn enable(ctx: &Ctx, point: ControlPoint, args: &EnableArgs) -> Result<()> {
    let fleet = ctx.connect()?;
    let units = start(ctx, &fleet)?;
    change(ctx, &fleet, units, (point, true), &args.signers, None)
}

/// Sets (`set`) or resets `point` on `units`: plans, prints the plan, asks when `confirm`
/// is given (`Some(yes)`: `--yes` answers), opens the keys the plan needs, runs it.
fn change(
    ctx: &Ctx,
    fleet: &Fleet,
    units: Vec<&KnownUnit>,
    (point, set): (ControlPoint, bool),
    signer_args: &SignerArgs,
    confirm: Option<bool>,
) -> Result<()> {
    let client = &fleet.client;
    let keys = signing::preference(ctx, &signer_args.signer, "--signer")?;
    let only = ControlPoints::of(&[point]);
    let (set_mask, reset_mask) = if set {
        (only, ControlPoints::NONE)
    } else {
        (ControlPoints::NONE, only)
    };
    let plan = ControlPointChange {
        units,
        set: set_mask,
        reset: reset_mask,
        keys: signing::admin_infos(&keys),
    }
    .plan(client)
    .map_err(hint)?;
    let changing: Vec<usize> = plan
        .units()
        .iter()
        .filter(|u| !u.commands.is_empty())
        .map(|u| u.unit.num)
        .collect();
    let holding: Vec<usize> = plan
        .units()
        .iter()
        .filter(|u| u.commands.is_empty())
        .map(|u| u.unit.num)
        .collect();
    let state = value(set);

    if !ctx.json {
        match feature(point) {
            Some(f) => println!("Control point {}: {f}.", label(point)),
            None => println!("Control point {}.", label(point)),
        }
        let mut t = Table::new(&["CRYPTO UNIT NUM", "TYPE", "NOW", "AFTER", "SIGNED BY"]);
        for u in plan.units() {
            t.row(vec![
                u.unit.num.to_string(),
                u.unit.unit_type().label().to_owned(),
                value(u.status.control_points.contains(point)).to_owned(),
                state.to_owned(),
                if u.commands.is_empty() {
                    "(nothing to change)".to_owned()
                } else {
                    signing::names(u.signed_by())
                },
            ]);
        }
        println!("{}", t.render());
    }
    let result = |signed_by: Vec<String>| {
        json!({
            "control_point": point.number(),
            "name": point.name(),
            "set": set,
            "changed": changing,
            "unchanged": holding,
            "signed_by": signed_by,
        })
    };
    if changing.is_empty() {
        if ctx.json {
            println!("{}", serde_json::to_string_pretty(&result(vec![]))?);
        } else {
            println!(
                "OK\nControl point {} is {} on every selected crypto unit already; nothing was sent.",
                label(point),
                state.to_ascii_lowercase()
            );
        }
        return Ok(());
    }
    if let Some(yes) = confirm {
        let question = format!(
            "{} control point {} on {} crypto unit(s) at {}?",
            if set { "Set" } else { "Reset" },
            label(point),
            changing.len(),
            client.describe().join(", ")
        );
        if !ctx.prompt.confirm(&question, yes)? {
            println!("Cancelled. No crypto unit was changed.");
            return Err(crate::Cancelled.into());
        }
    }

    let (signed_by, names) = signing::execute(ctx, &keys, plan, "`tke cryptounit-cp`")?;
    if ctx.json {
        println!("{}", serde_json::to_string_pretty(&result(names))?);
        return Ok(());
    }
    println!(
        "{signed_by}\nOK\nControl point {} is {} on the selected crypto units. Check with `tke cryptounit-compare`.",
        label(point),
        state.to_ascii_lowercase()
    );
    Ok(())
}

/// A refused plan, with what the operator can do about it.
fn hint(e: CeremonyError) -> anyhow::Error {
    let imprint = matches!(&e, CeremonyError::Problems(p) if p.iter().any(|p| matches!(
        p,
        Problem::Precondition {
            rule: Rule::ImprintMode,
            ..
        }
    )));
    let e = signing::hint(e);
    if imprint {
        anyhow::anyhow!("{e}\nControl points change only out of imprint mode: install the administrators (`tke cryptounit-admin-add`) and set the signature thresholds (`tke cryptounit-thrhld-set`) first, or initialize the instance with `tke auto-init`.")
    } else {
        e
    }
}
