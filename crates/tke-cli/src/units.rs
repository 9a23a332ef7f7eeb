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
            .map(|u| unit_json(u, json!({ "selected": is_sel(u) })))
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
    if down.is_empty() {
        return Ok(());
    }
    for (name, e) in down {
        eprintln!("Target {name} is unreachable; its crypto units are not shown:");
        eprintln!(
            "{}\n",
            crate::targets::explain(e, None).unwrap_or_else(|| format!("{e:#}"))
        );
    }
    let names: Vec<&str> = down.iter().map(|(n, _)| n.as_str()).collect();
    bail!("unreachable targets: {}", names.join(", "))
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

/// A unit in JSON output: its identity, then `fields`.
fn unit_json(u: &KnownUnit, fields: serde_json::Value) -> serde_json::Value {
    let mut v = json!({
        "num": u.num,
        "instance": u.instance().0,
        "id": u.id().uuid(),
        "type": u.unit_type().json_name(),
        "location": u.descriptor.location,
    });
    if let (Some(m), serde_json::Value::Object(extra)) = (v.as_object_mut(), fields) {
        m.extend(extra);
    }
    v
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

/// Prints one section of a per-unit report: its title, then per instance a
/// `SERVICE INSTANCE:` line and a table whose first column is `CRYPTO UNIT NUM`.
fn section(
    report: &CompareReport<'_>,
    title: &str,
    headers: &[&'static str],
    cells: &dyn Fn(&KnownUnit, &UnitStatus) -> Vec<String>,
) {
    println!("{title}");
    for inst in report.instances() {
        println!("SERVICE INSTANCE: {inst}");
        let mut t = Table::new(headers);
        for (u, s) in report.instance_units(inst) {
            let mut c = vec![report_num(u)];
            c.extend(cells(u, s));
            t.row(c);
        }
        println!("{}", t.render());
    }
}

/// Prints the two master key register sections (`NEW MASTER KEY REGISTER`, `CURRENT
/// MASTER KEY REGISTER`): status and verification pattern of every unit.
fn register_sections(report: &CompareReport<'_>) {
    for (title, pick) in [
        ("NEW MASTER KEY REGISTER", true),
        ("CURRENT MASTER KEY REGISTER", false),
    ] {
        section(
            report,
            title,
            &["CRYPTO UNIT NUM", "STATUS", "VERIFICATION PATTERN"],
            &|_, s| {
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

/// Queries the selected units of the reachable targets for a read command; refuses when
/// nothing is selected.
fn selected_report<'f>(ctx: &Ctx, fleet: &'f Fleet) -> Result<CompareReport<'f>> {
    let units = ctx.selected(fleet)?;
    if units.is_empty() {
        bail!("no crypto units are selected: select them with `tke cryptounit-add` (see `tke cryptounits`)");
    }
    Ok(CompareReport::query(&fleet.client, &units)?)
}

/// `cryptounit-mk` (alias `cryptounit-mks`): both master key registers of every selected
/// unit, in the vendor's two-table layout.
pub fn mk(ctx: &Ctx) -> Result<()> {
    let (fleet, down) = ctx.connect_reachable()?;
    let report = selected_report(ctx, &fleet)?;
    if ctx.json {
        let v: Vec<_> = report
            .units()
            .iter()
            .map(|(u, s)| {
                unit_json(
                    u,
                    json!({
                        "new_mk": register_json(&s.new_register),
                        "current_mk": register_json(&s.current_register),
                    }),
                )
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return unreachable(&down);
    }
    header(&fleet);
    register_sections(&report);
    unreachable(&down)
}

/// `cryptounit-compare`: the configuration of every selected unit, side by side, and the
/// verdict of [`CompareReport`] per instance.
pub fn compare(ctx: &Ctx) -> Result<()> {
    let (fleet, down) = ctx.connect_reachable()?;
    let report = selected_report(ctx, &fleet)?;
    let rows = report.units();
    if ctx.json {
        let v: Vec<_> = rows
            .iter()
            .map(|(u, s)| {
                unit_json(
                    u,
                    json!({
                        "imprint_mode": s.imprint_mode(),
                        "sig_threshold": s.sig_threshold,
                        "rev_threshold": s.rev_threshold,
                        "admins": s.admins.iter().map(|a| json!({"name": a.name.as_str(), "ski": a.ski.to_hex()})).collect::<Vec<_>>(),
                        "new_mk": register_json(&s.new_register),
                        "current_mk": register_json(&s.current_register),
                        "counter": s.counter,
                    }),
                )
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return unreachable(&down);
    }
    header(&fleet);
    section(
        &report,
        "SIGNATURE THRESHOLDS",
        &[
            "CRYPTO UNIT NUM",
            "SIGNATURE THRESHOLD",
            "REVOCATION SIGNATURE THRESHOLD",
            "IMPRINT MODE",
        ],
        &|_, s| {
            vec![
                s.sig_threshold.to_string(),
                s.rev_threshold.to_string(),
                s.imprint_mode().to_string(),
            ]
        },
    );
    section(
        &report,
        "ADMINISTRATORS",
        &["CRYPTO UNIT NUM", "ADMIN NAME", "SUBJECT KEY IDENTIFIER"],
        &|_, s| {
            if s.admins.is_empty() {
                return vec!["(none)".into(), String::new()];
            }
            vec![
                s.admins
                    .iter()
                    .map(|a| a.name.to_string())
                    .collect::<Vec<_>>()
                    .join("\n"),
                s.admins
                    .iter()
                    .map(|a| a.ski.to_hex())
                    .collect::<Vec<_>>()
                    .join("\n"),
            ]
        },
    );
    register_sections(&report);
    // A one-line verdict per instance, so drift is visible at a glance.
    for inst in report.instances() {
        if report.identical(inst) {
            println!(
                "The selected crypto units of service instance {inst} are configured identically."
            );
        } else {
            println!("The selected crypto units of service instance {inst} are NOT configured identically: compare the sections above.");
        }
    }
    unreachable(&down)
}
