//! `cryptounits`, `cryptounit-add`, `cryptounit-rm`, `cryptounit-compare`.

use anyhow::{bail, Result};
use serde_json::json;
use tke_ceremony::CompareReport;
use tke_client::KnownUnit;
use tke_proto::{RegisterStatus, UnitStatus, UnitType};

use crate::{
    context::{Ctx, Fleet},
    prompt::parse_numbers,
    table::{vp_lines, Table},
};

/// The context header: the endpoints (targets) the units were listed from.
pub fn header(fleet: &Fleet) {
    for d in fleet.client.describe() {
        println!("API endpoint:   {d}");
    }
    println!();
}

/// Prints the units grouped by instance (`CRYPTO UNIT NUM | SELECTED | TYPE | LOCATION`).
pub fn print_units(ctx: &Ctx, fleet: &Fleet) -> Result<()> {
    let selected = ctx.selected(fleet)?;
    let is_sel = |u: &KnownUnit| selected.iter().any(|s| s.id() == u.id());
    if ctx.json {
        let v: Vec<_> = fleet
            .client
            .units()
            .iter()
            .map(|u| {
                let mut v = unit_json(u);
                v.insert("selected".into(), is_sel(u).into());
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    header(fleet);
    for inst in fleet.client.instances() {
        println!("SERVICE INSTANCE: {inst}");
        let mut t = Table::new(&["CRYPTO UNIT NUM", "SELECTED", "TYPE", "LOCATION"]);
        for u in fleet.client.instance_units(&inst) {
            t.row(vec![
                u.num.to_string(),
                is_sel(u).to_string(),
                u.unit_type().label().to_owned(),
                u.descriptor.location.clone(),
            ]);
        }
        println!("{}", t.render());
    }
    Ok(())
}

/// `cryptounits`.
pub fn cryptounits(ctx: &Ctx) -> Result<()> {
    let (fleet, down) = ctx.connect_reachable()?;
    print_units(ctx, &fleet)?;
    unreachable(&down)
}

/// Names each target that could not be reached, with why, on standard error; fails when
/// there is one, so that a partial listing never passes for the whole fleet.
fn unreachable(down: &[(String, anyhow::Error)]) -> Result<()> {
    unreachable_units(down, &[])
}

/// As [`unreachable()`], with the crypto units of reachable targets that could not be
/// queried (`CRYPTO UNIT NUM` and why) named too.
pub fn unreachable_units(
    down: &[(String, anyhow::Error)],
    failed: &[(usize, tke_client::ClientError)],
) -> Result<()> {
    for (num, e) in failed {
        eprintln!(
            "Crypto unit {num} cannot be queried; it is not shown:\n{}\n",
            tke_client::untrusted::sanitize(&tke_proto::ErrorChain(e).to_string())
        );
    }
    for (name, e) in down {
        eprintln!("Target {name} is unreachable; its crypto units are not shown:");
        eprintln!(
            "{}\n",
            crate::targets::explain(e, None).unwrap_or_else(|| format!("{e:#}"))
        );
    }
    if !down.is_empty() {
        // Units are numbered over every target: without one, the others' numbers shift.
        eprintln!("The CRYPTO UNIT NUMs above count only the crypto units of the targets that answered: they may change when every target answers again. Commands that take CRYPTO UNIT NUMs (`tke cryptounit-add`, `tke cryptounit-rm`) wait until then.\n");
    }
    let mut what = Vec::new();
    if !failed.is_empty() {
        let nums: Vec<String> = failed.iter().map(|(n, _)| n.to_string()).collect();
        what.push(format!(
            "crypto units that cannot be queried: {}",
            nums.join(", ")
        ));
    }
    if !down.is_empty() {
        let names: Vec<&str> = down.iter().map(|(n, _)| n.as_str()).collect();
        what.push(format!("unreachable targets: {}", names.join(", ")));
    }
    if what.is_empty() {
        Ok(())
    } else {
        bail!("{}", what.join("; "))
    }
}

/// The selected units, or an error saying how to select some.
pub fn require_selected<'f>(ctx: &Ctx, fleet: &'f Fleet) -> Result<Vec<&'f KnownUnit>> {
    let units = ctx.selected(fleet)?;
    if units.is_empty() {
        bail!("no crypto units are selected: select them with `tke cryptounit-add` (see `tke cryptounits`)");
    }
    Ok(units)
}

/// What JSON output says of every unit: its number, instance, id, type and location.
pub fn unit_json(u: &KnownUnit) -> serde_json::Map<String, serde_json::Value> {
    let v = json!({
        "num": u.num,
        "instance": u.instance().0,
        "id": u.id().uuid(),
        "type": u.unit_type().json_name(),
        "location": u.descriptor.location,
    });
    match v {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

/// Prints `rows` as a JSON array, one object per unit: [`unit_json`], then the fields
/// `fields` adds from its state.
pub fn print_json(
    rows: &[(&KnownUnit, UnitStatus)],
    fields: &dyn Fn(&UnitStatus, &mut serde_json::Map<String, serde_json::Value>),
) -> Result<()> {
    let v: Vec<_> = rows
        .iter()
        .map(|(u, s)| {
            let mut v = unit_json(u);
            fields(s, &mut v);
            v
        })
        .collect();
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

/// A unit's thresholds as JSON fields: `imprint_mode`, `sig_threshold`, `rev_threshold`.
pub fn thresholds_json(s: &UnitStatus) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("imprint_mode".into(), s.imprint_mode().into());
    m.insert("sig_threshold".into(), s.sig_threshold.into());
    m.insert("rev_threshold".into(), s.rev_threshold.into());
    m
}

/// A unit's administrators as JSON: name and full SKI of each.
pub fn admins_json(s: &UnitStatus) -> serde_json::Value {
    s.admins
        .iter()
        .map(|a| json!({"name": a.name.as_str(), "ski": a.ski.to_hex()}))
        .collect()
}

/// `cryptounit-add` / `cryptounit-rm`.
pub fn change_selection(ctx: &Ctx, nums: &[usize], add: bool) -> Result<()> {
    let fleet = ctx.connect()?;
    let max = fleet.client.units().len();
    let nums = if nums.is_empty() {
        if !ctx.json {
            print_units(ctx, &fleet)?;
        }
        let verb = if add { "add to" } else { "remove from" };
        ctx.prompt.ask(
            &format!(
                "Enter a list of CRYPTO UNIT NUM to {verb} the selection, separated by spaces:"
            ),
            "CRYPTO UNIT NUM arguments",
            |s| {
                let v = parse_numbers(s, max, "CRYPTO UNIT NUM")?;
                if v.is_empty() {
                    bail!("enter at least one CRYPTO UNIT NUM");
                }
                Ok(v)
            },
        )?
    } else {
        for &n in nums {
            if n == 0 || n > max {
                bail!("CRYPTO UNIT NUM {n} does not exist: there are {max} crypto units (see `tke cryptounits`); the selection is unchanged");
            }
        }
        nums.to_vec()
    };
    let mut selected = ctx.selected(&fleet)?;
    for n in nums {
        let Some(u) = fleet.client.units().iter().find(|u| u.num == n) else {
            continue;
        };
        if add {
            if !selected.iter().any(|s| s.id() == u.id()) {
                selected.push(u);
            }
        } else {
            selected.retain(|s| s.id() != u.id());
        }
    }
    selected.sort_by_key(|u| u.num);
    ctx.save_selected(&selected)?;
    print_units(ctx, &fleet)?;
    if !ctx.json {
        println!("OK");
    }
    Ok(())
}

fn register_json(r: &RegisterStatus) -> serde_json::Value {
    json!({ "state": r.state.json_name(), "vp": r.vp.map(|v| v.to_hex()) })
}

/// Prints one table per service instance of `rows` (in order of first appearance), each
/// under its `SERVICE INSTANCE:` line: the unit's number, then `cells` of its state.
pub fn by_instance(
    rows: &[(&KnownUnit, UnitStatus)],
    headers: &[&'static str],
    cells: &dyn Fn(&UnitStatus) -> Vec<String>,
) {
    let mut instances: Vec<&tke_client::InstanceId> = Vec::new();
    for (u, _) in rows {
        if !instances.contains(&u.instance()) {
            instances.push(u.instance());
        }
    }
    for inst in instances {
        println!("SERVICE INSTANCE: {inst}");
        let mut t = Table::new(headers);
        for (u, s) in rows.iter().filter(|(u, _)| u.instance() == inst) {
            let mut c = vec![report_num(u)];
            c.extend(cells(s));
            t.row(c);
        }
        println!("{}", t.render());
    }
}

/// The columns of a unit's thresholds.
pub const THRESHOLD_HEADERS: [&str; 4] = [
    "CRYPTO UNIT NUM",
    "SIGNATURE THRESHOLD",
    "REVOCATION SIGNATURE THRESHOLD",
    "IMPRINT MODE",
];

/// A unit's thresholds, under [`THRESHOLD_HEADERS`].
pub fn threshold_cells(s: &UnitStatus) -> Vec<String> {
    vec![
        s.sig_threshold.to_string(),
        s.rev_threshold.to_string(),
        s.imprint_mode().to_string(),
    ]
}

/// The columns of a unit's administrators.
pub const ADMIN_HEADERS: [&str; 3] = ["CRYPTO UNIT NUM", "ADMIN NAME", "SUBJECT KEY IDENTIFIER"];

/// A unit's administrators, one per line, under [`ADMIN_HEADERS`].
pub fn admin_cells(s: &UnitStatus) -> Vec<String> {
    if s.admins.is_empty() {
        return vec!["(none)".into(), String::new()];
    }
    let column = |f: &dyn Fn(&tke_proto::AdminInfo) -> String| {
        s.admins.iter().map(f).collect::<Vec<_>>().join("\n")
    };
    vec![column(&|a| a.name.to_string()), column(&|a| a.ski.to_hex())]
}

/// A unit's `CRYPTO UNIT NUM` in a report, recovery units marked: their rules differ
/// (they export the master key, and clearing it takes their signature threshold).
fn report_num(u: &KnownUnit) -> String {
    if u.unit_type() == UnitType::Recovery {
        format!("{} (recovery)", u.num)
    } else {
        u.num.to_string()
    }
}

/// Prints the two master key register sections (`NEW MASTER KEY REGISTER`, `CURRENT
/// MASTER KEY REGISTER`): status and verification pattern of every unit.
fn register_sections(rows: &[(&KnownUnit, UnitStatus)]) {
    for (title, pick) in [
        ("NEW MASTER KEY REGISTER", true),
        ("CURRENT MASTER KEY REGISTER", false),
    ] {
        println!("{title}");
        by_instance(
            rows,
            &["CRYPTO UNIT NUM", "STATUS", "VERIFICATION PATTERN"],
            &|s| {
                let r = if pick {
                    s.new_register
                } else {
                    s.current_register
                };
                vec![r.state.label().to_owned(), vp_lines(r.vp.as_ref())]
            },
        );
    }
}

/// `cryptounit-mk` (alias `cryptounit-mks`): both master key registers of every selected
/// unit, in the vendor's two-table layout.
pub fn mk(ctx: &Ctx) -> Result<()> {
    let (fleet, down) = ctx.connect_reachable()?;
    let units = require_selected(ctx, &fleet)?;
    let report = CompareReport::query(&fleet.client, &units)?;
    if ctx.json {
        print_json(report.units(), &|s, v| {
            v.insert("new_mk".into(), register_json(&s.new_register));
            v.insert("current_mk".into(), register_json(&s.current_register));
        })?;
        return unreachable(&down);
    }
    header(&fleet);
    register_sections(report.units());
    unreachable(&down)
}

/// `cryptounit-compare`: the configuration of every selected unit, side by side, and the
/// verdict of [`CompareReport`] per instance.
pub fn compare(ctx: &Ctx) -> Result<()> {
    let (fleet, down) = ctx.connect_reachable()?;
    let units = require_selected(ctx, &fleet)?;
    let report = CompareReport::query(&fleet.client, &units)?;
    let rows = report.units();
    if ctx.json {
        print_json(rows, &|s, v| {
            v.extend(thresholds_json(s));
            v.insert("admins".into(), admins_json(s));
            v.insert(
                "control_points".into(),
                crate::control_points::json(&s.control_points),
            );
            v.insert("new_mk".into(), register_json(&s.new_register));
            v.insert("current_mk".into(), register_json(&s.current_register));
            v.insert("counter".into(), s.counter.into());
        })?;
        return unreachable(&down);
    }
    header(&fleet);
    let instances = report.instances();
    let section =
        |title: &str, headers: &[&'static str], cells: &dyn Fn(&UnitStatus) -> Vec<String>| {
            println!("{title}");
            by_instance(rows, headers, cells);
        };
    section("SIGNATURE THRESHOLDS", &THRESHOLD_HEADERS, &threshold_cells);
    section("ADMINISTRATORS", &ADMIN_HEADERS, &admin_cells);
    println!("CONTROL POINTS");
    crate::control_points::print_section(rows, false);
    register_sections(rows);
    // Selected units that did not answer (their target is down) are not compared: a
    // verdict over the others must not pass for one over the whole selection.
    let selection = ctx.files.load_selection()?.units;
    let missing = selection
        .iter()
        .filter(|id| !fleet.client.units().iter().any(|u| u.id().uuid() == **id))
        .count();
    // A one-line verdict per instance, so drift is visible at a glance.
    for inst in &instances {
        if report.identical(inst) && missing > 0 {
            println!(
                "The selected crypto units of service instance {inst} that answered are configured identically."
            );
        } else if report.identical(inst) {
            println!(
                "The selected crypto units of service instance {inst} are configured identically."
            );
        } else {
            println!("The selected crypto units of service instance {inst} are NOT configured identically: compare the sections above.");
        }
    }
    if missing > 0 {
        println!("{missing} selected crypto unit(s) did not answer and are not compared: an instance they belong to is not known to be configured identically.");
    }
    unreachable(&down)
}
