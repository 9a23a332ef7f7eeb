//! `cryptounit-admins`, `cryptounit-thrhlds`: the administrators and thresholds of the
//! selected crypto units.

use anyhow::Result;
use tke_client::{fanout::parallel, ClientError, KnownUnit};
use tke_proto::UnitStatus;

use crate::{
    context::Ctx,
    units::{
        admin_cells, admins_json, by_instance, header, require_selected, threshold_cells,
        thresholds_json, unit_json, unreachable_units, ADMIN_HEADERS, THRESHOLD_HEADERS,
    },
};

/// What a read command shows of each unit.
#[derive(Clone, Copy)]
pub enum View {
    /// `cryptounit-admins`: name and SKI of every installed administrator.
    Admins,
    /// `cryptounit-thrhlds`: both thresholds (0/0 is imprint mode).
    Thresholds,
}

/// Shows `view` of every selected unit, grouped by service instance, or as JSON. Units
/// that cannot be queried, and targets that cannot be reached, are named on standard
/// error after what could be shown, and the command fails: a partial listing never passes
/// for the whole selection.
pub fn show(ctx: &Ctx, view: View) -> Result<()> {
    let (fleet, down) = ctx.connect_reachable()?;
    let units = require_selected(ctx, &fleet)?;
    let mut rows: Vec<(&KnownUnit, UnitStatus)> = Vec::new();
    let mut failed: Vec<(usize, ClientError)> = Vec::new();
    for (u, s) in units
        .iter()
        .zip(parallel(&units, |u| fleet.client.query(u)))
    {
        match s {
            Ok(s) => rows.push((*u, s)),
            Err(e) => failed.push((u.num, e)),
        }
    }
    if ctx.json {
        let v: Vec<_> = rows
            .iter()
            .map(|(u, s)| {
                let mut v = unit_json(u);
                match view {
                    View::Admins => {
                        v.insert("admins".into(), admins_json(s));
                    }
                    View::Thresholds => v.extend(thresholds_json(s)),
                }
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        header(&fleet);
        match view {
            View::Admins => by_instance(&rows, &ADMIN_HEADERS, &admin_cells),
            View::Thresholds => by_instance(&rows, &THRESHOLD_HEADERS, &threshold_cells),
        }
    }
    unreachable_units(&down, &failed)
}
