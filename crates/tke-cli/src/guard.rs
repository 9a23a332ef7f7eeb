//! The zeroize guard on the command line: `cryptounit-zeroize` and `cryptounit-mk-clrcur`
//! refuse to destroy a master key that the instance's key storage still needs, after
//! showing where it can be recovered from, unless the operator types the instance's id
//! (or gives it with `--force-with-keys INSTANCE-ID` in scripts).
//!
//! The check itself is [`tke_ceremony::guard::KeyStorageGuard`], plugged into the
//! ceremony's plan: without a confirmation the plan is refused and nothing is changed.
//! Every other problem of the plan is reported first; the typed confirmation is asked
//! only when the guard's refusal is all that stands in the way.

use anyhow::{bail, Result};
use tke_ceremony::{
    guard::{AtRisk, Destruction, KeyStorageGuard},
    CeremonyError, Problem,
};
use tke_client::{Client, KnownUnit};

use crate::context::Ctx;

/// `--force-with-keys`, for the commands that destroy a master key.
#[derive(clap::Args, Debug, Default)]
pub struct ForceArgs {
    /// Destroy the master key even though the key storage of this service instance holds
    /// keys wrapped under it (repeat it for each instance). Without it, the command shows
    /// where the master key can be recovered from and asks you to type the instance id.
    #[arg(long = "force-with-keys", value_name = "INSTANCE-ID")]
    pub force_with_keys: Vec<String>,
}

/// The key-storage guard for doing `what` to `units`, with the instances given by
/// `--force-with-keys` confirmed. Nothing is asked: a plan it refuses for nothing else is
/// [`planned_again`] after the operator confirms on the terminal.
///
/// # Errors
/// A `--force-with-keys` value that names no service instance.
pub fn key_storage(
    ctx: &Ctx,
    client: &Client,
    units: &[&KnownUnit],
    what: Destruction,
    force: &ForceArgs,
) -> Result<KeyStorageGuard> {
    let instances = client.instances();
    for id in &force.force_with_keys {
        if !instances.iter().any(|i| i.to_string() == *id) {
            bail!(
                "--force-with-keys {id:?}: no service instance has this id (see `tke cryptounits`); nothing was changed"
            );
        }
    }
    let mut guard = KeyStorageGuard::survey(client, units, what, &key_part_files(ctx)?);
    let forced: Vec<_> = guard
        .at_risk()
        .into_iter()
        .filter(|r| force.force_with_keys.contains(&r.instance.to_string()))
        .map(|r| r.instance.clone())
        .collect();
    for instance in &forced {
        guard.confirm(instance);
    }
    Ok(guard)
}

/// The descriptions of the master key part files on this workstation: where a master key
/// may come from besides a recovery unit (shown, not checked).
///
/// # Errors
/// The key part list cannot be read.
pub fn key_part_files(ctx: &Ctx) -> Result<Vec<String>> {
    Ok(ctx
        .files
        .key_parts()?
        .entries
        .iter()
        .map(|e| e.description.to_string())
        .collect())
}

/// A plan `planned` that the key-storage guard alone refused, planned again (`plan`)
/// once the operator, shown each instance's keys at stake and where its master key can
/// be recovered from, typed the id of each. Any other outcome, or no terminal to ask
/// on, is returned as it is (the refusal names `--force-with-keys`).
///
/// # Errors
/// A typed answer that is not the instance id ([`crate::Cancelled`]); no answer.
pub fn planned_again<T>(
    ctx: &Ctx,
    guard: &mut KeyStorageGuard,
    what: Destruction,
    planned: Result<T, CeremonyError>,
    plan: impl FnOnce(&KeyStorageGuard) -> Result<T, CeremonyError>,
) -> Result<Result<T, CeremonyError>> {
    let only_guarded = matches!(&planned, Err(CeremonyError::Problems(p))
        if p.iter().all(|p| matches!(p, Problem::Guarded { guard: "key storage", .. })));
    if !only_guarded || !ctx.prompt.interactive() {
        return Ok(planned);
    }
    typed(ctx, guard, what, |_| true)?;
    Ok(plan(guard))
}

/// Each instance of `guard` still at risk that `ask` selects, shown with its keys at
/// stake and where its master key can be recovered from, confirmed by the operator
/// typing its id (call it on a terminal only).
///
/// # Errors
/// A typed answer that is not the instance id ([`crate::Cancelled`]); no answer.
pub fn typed(
    ctx: &Ctx,
    guard: &mut KeyStorageGuard,
    what: Destruction,
    ask: impl Fn(&AtRisk) -> bool,
) -> Result<()> {
    let at_risk: Vec<AtRisk> = guard
        .at_risk()
        .into_iter()
        .filter(|r| ask(r))
        .cloned()
        .collect();
    for risk in at_risk {
        let id = risk.instance.to_string();
        println!("WARNING: {risk}.\n");
        let typed = ctx.prompt.line(
            &format!(
                "To {what} anyway and lose these keys unless the master key is recovered, type the service instance id {id}; anything else cancels:"
            ),
            "--force-with-keys INSTANCE-ID",
        )?;
        if typed != id {
            println!("Cancelled. No crypto unit was changed.");
            return Err(crate::Cancelled.into());
        }
        guard.confirm(&risk.instance);
    }
    Ok(())
}

/// What to do about a plan the key-storage guard refused.
pub fn advice(e: &CeremonyError) -> Option<&'static str> {
    let guarded = matches!(e, CeremonyError::Problems(p)
        if p.iter().any(|p| matches!(p, Problem::Guarded { guard: "key storage", .. })));
    guarded.then_some(
        "Recover the master key elsewhere first (`tke auto-recover` copies it from a recovery unit into units whose current master key register is empty), or, to destroy it anyway, run the command on a terminal and type the service instance id when asked, or give --force-with-keys INSTANCE-ID.",
    )
}
