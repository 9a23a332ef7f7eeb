//! `cryptounit-mk-load`: load the new master key register of the selected crypto units
//! from 2 or 3 master key parts.
//!
//! As the vendor's: the parts are listed and 2 or 3 KEYNUMs typed (`--part DESCRIPTION`
//! in scripts), then the signature key's password, then each part's password. The
//! ceremony is [`tke_ceremony::MkLoad`]: the units and the parts' verification patterns
//! are checked before any password is asked, the parts' values once every part is open,
//! and nothing is sent to any unit before both checks passed. This module picks the
//! parts, prints the plan, opens the keys and the parts, and prints the new master key's
//! verification pattern and what comes next.

use anyhow::{bail, Context as _, Result};
use serde_json::json;
use tke_ceremony::{mk_load::STEP, CeremonyError, MkLoad, Problem, Rule};
use tke_client::ClientError;
use tke_proto::{parts::MasterKeyPart, ErrorChain, ModuleError};
use tke_sigkey::Signer;
use tke_workstation::{KeyFileError, KeyPartEntry};

use crate::{
    context::Ctx,
    keyparts,
    prompt::parse_numbers,
    registers::plan_table,
    signing::{self, SignerArgs},
    table::vp_lines,
    units::{header, require_selected},
};

/// What `cryptounit-mk-load --help` adds after the options.
pub const HELP: &str = "\
The master key is the combination (XOR) of 2 or 3 master key parts, each in a
password-protected file of its owner (`tke mk-add`). Copy the owners' part files into
this workstation directory, then select the crypto units (`tke cryptounit-add`):
operational and failover units, never recovery units.

Prompts, in order (each answered by a flag in scripts):
  1. the list of parts, and the KEYNUMs of 2 or 3 of them (--part DESCRIPTION, given 2 or
     3 times, in load order);
  2. the password of the signature key that signs (from --secrets FILE, `NAME = \"...\"`):
     one installed administrator signs the importer key and the parts of each unit;
  3. the password of each part, from its owner (from --secrets FILE, a line
     `\"DESCRIPTION\" = \"...\"`).
Without a terminal, a missing answer is an error that names its flag.

Everything is checked before anything is sent: each unit out of imprint mode with an
empty new master key register, different parts, every part opened with its password,
and a combination that is not the current master key of any unit (a rotation needs at
least one new part). Each unit makes a single-use importer key; each part is sealed to
it, and the unit combines them: the parts never travel in the clear.

Next: commit at once with `tke cryptounit-mk-commit`, then make the value current with
`tke cryptounit-mk-setimm` (first initialization, or the same value loaded again), or
rotate to it with `tke cryptounit-mk-rotate`.";

/// The flags of `cryptounit-mk-load`.
#[derive(clap::Args, Debug)]
#[command(after_long_help = HELP)]
pub struct Args {
    /// Load the master key part of this description (see `tke mks`); give it 2 or 3 times,
    /// in load order. Asked for by KEYNUM when omitted.
    #[arg(long = "part", value_name = "DESCRIPTION")]
    pub parts: Vec<String>,
    #[command(flatten)]
    pub signers: SignerArgs,
}

/// `cryptounit-mk-load`.
pub fn run(ctx: &Ctx, args: &Args) -> Result<()> {
    let fleet = ctx.connect()?;
    let client = &fleet.client;
    let units = require_selected(ctx, &fleet)?;
    if !ctx.json {
        header(&fleet);
    }
    let listing = keyparts::list(ctx)?;
    let chosen = choose_parts(ctx, &listing, &args.parts)?;
    let keys = signing::preference(ctx, &args.signers.signer, "--signer")?;
    let plan = MkLoad {
        units,
        parts: chosen.iter().map(|(_, e)| e.vp).collect(),
        keys: signing::admin_infos(&keys),
    }
    .plan(client)
    .map_err(hint)?;

    if !ctx.json {
        println!("Master key parts to load:");
        keyparts::print_numbered(chosen.iter().map(|(n, e)| (*n, *e)));
        println!();
        let rows = plan
            .units()
            .iter()
            .map(|u| (u.unit, &u.status, u.signers.iter().collect()));
        println!("{}", plan_table(rows));
    }

    // The vendor's order: the signature key's password, then each part's. Every part is
    // opened before anything is sent.
    let opened = signing::open(ctx, &keys, &plan.keys_needed())?;
    let signers: Vec<&dyn Signer> = opened.iter().map(|s| s.as_ref()).collect();
    let mut parts = Vec::with_capacity(chosen.len());
    for (keynum, entry) in &chosen {
        parts.push(open_part(ctx, *keynum, entry)?);
    }
    let ready = plan.with_parts(parts).map_err(hint)?;
    let signed_by = signing::signed_by(ready.plan());
    let names: Vec<String> = ready
        .plan()
        .keys_needed()
        .iter()
        .map(|k| k.name.to_string())
        .collect();
    let report = ready.execute(&signers).map_err(|e| {
        // Only a unit knows the key the parts make: it refuses its own current value.
        let same = matches!(&e, CeremonyError::Step { failures, .. }
            if failures.iter().any(|(_, f)| matches!(f,
                ClientError::Module { error, .. } if *error == ModuleError::SAME_VALUE)));
        let e = signing::partly_failed(e, STEP, "loaded", "`tke cryptounit-mk`");
        if same {
            anyhow::anyhow!("{e:#}\n{SAME_KEY}")
        } else {
            e
        }
    })?;

    if ctx.json {
        let parts: Vec<_> = chosen
            .iter()
            .map(|(n, e)| json!({"keynum": n, "description": e.description.as_str(), "vp": e.vp.to_hex()}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "units": report.units,
                "parts": parts,
                "vp": report.vp.to_hex(),
                "signed_by": names,
            }))?
        );
        return Ok(());
    }
    println!(
        "{signed_by}\nOK\nThe new master key registers of the selected crypto units are Full Uncommitted.\n\n\
         VERIFICATION PATTERN OF THE NEW MASTER KEY\n{}\n\n\
         Commit it at once with `tke cryptounit-mk-commit`; then make it current with \
         `tke cryptounit-mk-setimm` (first initialization, or the same value loaded again), \
         or rotate to it with `tke cryptounit-mk-rotate`.",
        vp_lines(Some(&report.vp))
    );
    Ok(())
}

/// The parts to load, with their KEYNUMs: by `--part` description, else asked for by
/// KEYNUM from the list.
pub(crate) fn choose_parts<'l>(
    ctx: &Ctx,
    listing: &'l tke_workstation::KeyPartListing,
    described: &[String],
) -> Result<Vec<(usize, &'l KeyPartEntry)>> {
    let numbered = |e: &'l KeyPartEntry| (listing.keynum_of(&e.path).unwrap_or_default(), e);
    if !described.is_empty() {
        return described
            .iter()
            .map(|d| listing.find(d).map(numbered).context("nothing was loaded"))
            .collect();
    }
    if listing.entries.is_empty() {
        bail!(
            "no master key parts were found in {}: copy the owners' part files there, or create parts with `tke mk-add`",
            ctx.files.path().display()
        );
    }
    if ctx.prompt.interactive() && !ctx.json {
        println!("Master key parts:");
        keyparts::print_numbered(listing.entries.iter().enumerate().map(|(i, e)| (i + 1, e)));
        println!();
    }
    let nums = ctx.prompt.ask(
        "Enter the KEYNUMs of the 2 or 3 master key parts to load, separated by spaces:",
        "--part DESCRIPTION (2 or 3 times)",
        |s| {
            let nums = parse_numbers(s, listing.entries.len(), "KEYNUM")?;
            if !(2..=3).contains(&nums.len()) {
                bail!("enter 2 or 3 different KEYNUMs");
            }
            Ok(nums)
        },
    )?;
    if !ctx.json {
        println!();
    }
    Ok(nums.iter().map(|&n| (n, &listing.entries[n - 1])).collect())
}

/// Opens a part with its owner's password: from `--secrets` (by description), else a
/// hidden prompt, asked again (up to three times) after a wrong password typed there.
pub(crate) fn open_part(ctx: &Ctx, keynum: usize, entry: &KeyPartEntry) -> Result<MasterKeyPart> {
    let description = entry.description.as_str();
    let scripted = ctx.secrets.as_ref().and_then(|s| s.get(description));
    let mut tries = 0;
    loop {
        let password = match scripted {
            Some(p) => p.clone(),
            None => ctx.prompt.password(
                &format!(
                    "Enter the password for the master key part {description:?} (KEYNUM {keynum}):"
                ),
                &format!(
                    "--secrets FILE (a line `{} = \"...\"`)",
                    toml::Value::String(description.to_owned())
                ),
            )?,
        };
        match entry.open(&password) {
            Ok(part) => return Ok(MasterKeyPart::from_slice(part.expose_secret())?),
            Err(e @ KeyFileError::PartWrongPassword { .. }) if scripted.is_none() && tries < 2 => {
                println!("{}\n", ErrorChain(&e));
                tries += 1;
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                    "cannot open the master key part {description:?}; no crypto unit was changed"
                )
                })
            }
        }
    }
}

/// What to do when units refuse parts that make their current master key (102/1).
const SAME_KEY: &str = "Crypto units refuse to load parts that make the master key they hold already: their new register is still Empty. To change the master key, make at least one new part (`tke mk-add --random`). To load the current value into units that lost it, select only the units whose current master key register is Empty (`tke cryptounit-mk`).";

/// A refused load, with what the operator can do about it.
fn hint(e: CeremonyError) -> anyhow::Error {
    let mut advice = Vec::new();
    if let CeremonyError::Problems(problems) = &e {
        let any = |f: fn(&Problem) -> bool| problems.iter().any(f);
        let rule = |f: fn(&Rule) -> bool| {
            problems
                .iter()
                .any(|p| matches!(p, Problem::Precondition { rule, .. } if f(rule)))
        };
        if any(|p| matches!(p, Problem::PartCount { .. } | Problem::SameParts { .. })) {
            advice.push("`tke mks` lists the master key parts of this workstation: give 2 or 3 different ones (--part DESCRIPTION, repeated).");
        }
        if any(|p| matches!(p, Problem::PartsNotIndependent)) {
            advice.push(
                "Make a new part with `tke mk-add --random` and load it instead of one of these.",
            );
        }
        if rule(|r| matches!(r, Rule::RecoveryUnitLoad)) {
            advice.push("Remove the recovery crypto units from the selection with `tke cryptounit-rm` (see `tke cryptounits`).");
        }
        if rule(|r| matches!(r, Rule::NewRegister { .. })) {
            advice.push("`tke cryptounit-mk` shows the new master key registers: finish the value they hold (`tke cryptounit-mk-commit`, then `tke cryptounit-mk-setimm`), or clear it with `tke cryptounit-mk-clrnew`.");
        }
    }
    let e = crate::registers::hint(e);
    if advice.is_empty() {
        e
    } else {
        anyhow::anyhow!("{e}\n{}", advice.join("\n"))
    }
}
