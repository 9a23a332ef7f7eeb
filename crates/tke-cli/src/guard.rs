//! The zeroize guard on the command line: `cryptounit-zeroize` and `cryptounit-mk-clrcur`
//! refuse to destroy a master key that the instance's key storage still needs, after
//! showing where it can be recovered from, unless the operator types the instance's id
//! (or gives it with `--force-with-keys INSTANCE-ID` in scripts).
//!
//! The check itself is [`tke_ceremony::guard::KeyStorageGuard`], plugged into the
//! ceremony's plan: without a confirmation the plan is refused and nothing is changed.

use anyhow::{bail, Result};
use tke_ceremony::{
    guard::{Destruction, KeyStorageGuard},
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

/// The key-storage guard for doing `what` to `units`: every instance whose keys are at
/// stake is shown with where its master key can be recovered from, then confirmed by
/// `--force-with-keys` or by typing its id; on no terminal, an unconfirmed instance is
/// left for the plan to refuse.
///
/// # Errors
/// A `--force-with-keys` value that names no service instance; a typed answer that is
/// not the instance id ([`crate::Cancelled`]).
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
    // Where the master key may come from besides a recovery unit (shown, not checked).
    let parts: Vec<String> = ctx
        .files
        .key_parts()?
        .entries
        .iter()
        .map(|e| e.description.to_string())
        .collect();
    let mut guard = KeyStorageGuard::survey(client, units, what, &parts);
    let at_risk: Vec<_> = guard.at_risk().into_iter().cloned().collect();
    for risk in at_risk {
        let id = risk.instance.to_string();
        if force.force_with_keys.contains(&id) {
            guard.confirm(&risk.instance);
            continue;
        }
        if !ctx.prompt.interactive() {
            // The plan refuses it, saying what is at stake and which flag overrides.
            continue;
        }
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
    Ok(guard)
}

/// What to do about a plan the key-storage guard refused.
pub fn advice(e: &CeremonyError) -> Option<&'static str> {
    let guarded = matches!(e, CeremonyError::Problems(p)
        if p.iter().any(|p| matches!(p, Problem::Guarded { guard: "key storage", .. })));
    guarded.then_some(
        "Recover the master key elsewhere first (`tke auto-recover` copies it from a recovery unit into units whose current master key register is empty), or, to destroy it anyway, run the command on a terminal and type the service instance id when asked, or give --force-with-keys INSTANCE-ID.",
    )
}
