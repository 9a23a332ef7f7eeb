//! `mks`, `mk-add`, `mk-rm`: master key parts on this workstation.
//!
//! As the vendor's: `mk-add --random` or `mk-add --value` (the value typed at a hidden
//! prompt), then a description and a password; the updated list is printed. The files are
//! `tke_workstation`'s master key part files; `cryptounit-mk-load --part DESCRIPTION`
//! loads them.

use std::{
    fs,
    io::Read as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};
use serde_json::json;
use tke_workstation::{KeyFileError, KeyPart, KeyPartEntry, KeyPartListing, PartDescription};
use zeroize::Zeroizing;

use crate::{
    context::Ctx,
    prompt::{parse_numbers, weak_password},
    table::{vp_lines, Table},
};

/// What `mk-add --help` adds after the options.
pub const ADD_HELP: &str = "\
A master key is made of 2 or 3 master key parts, each held by a different person in a
password-protected file. Each owner runs mk-add on their own workstation.

Prompts, in order (each answered by a flag in scripts):
  1. with --value, the part's value: 64 hex digits (32 bytes), typed at a hidden prompt
     (--value-file FILE for scripts);
  2. a description that names the part (--description): up to 64 characters, different
     from the description of every other part on the workstation;
  3. the password, twice (from --secrets FILE, a line `\"DESCRIPTION\" = \"password\"`).
     A weak password gets a warning. Keep it: nothing can recover a part without it.
Without a terminal, a missing answer is an error that names its flag.

Next: copy the owners' part files (*.mkpart.toml: their names never clash) into one
workstation directory, check them with `tke mks`, then load 2 or 3 of them into the
selected crypto units with `tke cryptounit-mk-load --part D1 --part D2`.";

/// What `mks --help` adds after the options.
pub const MKS_HELP: &str = "\
Needs no password: the description and the verification pattern of a part are stored in
the clear; the part itself is encrypted. The verification pattern (two lines of 32 hex
digits) fingerprints the part without revealing it, as the crypto units show the
verification pattern of their master key registers.

A part file that cannot be read is listed under \"Damaged master key part files\" and
makes mks fail (exit code 1): restore it from a backup.

Next: load 2 or 3 parts into the selected crypto units by description, with
`tke cryptounit-mk-load --part D1 --part D2`; `tke mk-add` adds a part.";

/// What `mk-rm --help` adds after the options.
pub const RM_HELP: &str = "\
A part file may be the only backup of the master key it belongs to: without it (and its
password), that master key can never be loaded again. mk-rm says so and asks for
confirmation (y/N; --yes answers it in scripts).";

/// The answers `mk-add` takes as flags.
#[derive(clap::Args, Debug)]
#[command(
    group(clap::ArgGroup::new("source").required(true).args(["random", "value", "value_file"])),
    after_long_help = ADD_HELP,
)]
pub struct AddArgs {
    /// Make a random part (32 random bytes).
    #[arg(long)]
    random: bool,
    /// Give the part's value: 64 hex digits (32 bytes), typed at a hidden prompt.
    #[arg(long)]
    value: bool,
    /// Read the part's value from FILE (for scripts): 64 hex digits, white space and line
    /// breaks ignored. The file must not be readable by other users.
    #[arg(long, value_name = "FILE")]
    value_file: Option<PathBuf>,
    /// The part's description, by which commands name it (up to 64 characters; asked for
    /// when omitted).
    #[arg(long, value_name = "DESCRIPTION")]
    description: Option<String>,
}

/// The answers `mk-rm` takes as arguments and flags.
#[derive(clap::Args, Debug)]
#[command(after_long_help = RM_HELP)]
pub struct RmArgs {
    /// The description of the part to delete (without it, the parts are listed and the
    /// KEYNUM of the one to delete is asked for).
    description: Option<String>,
    /// Do not ask for confirmation.
    #[arg(long)]
    yes: bool,
}

/// What to do about a damaged part file: nothing can recreate it.
const DAMAGED_ADVICE: &str = "a damaged master key part file cannot be repaired or recreated: \
    restore it from a backup (without it and its password, the master key it belongs to \
    cannot be loaded again)";

/// The largest value file read: a part is 64 hex digits, with room for white space.
const MAX_VALUE_FILE: u64 = 4096;

/// Advice for the errors of master key parts (see `report::advice`).
pub fn advice(e: &KeyFileError) -> Option<&'static str> {
    match e {
        KeyFileError::UnknownPart { .. } => {
            Some("`tke mks` lists the master key parts of this workstation.")
        }
        KeyFileError::PartDescriptionTaken { .. } => Some(
            "Choose another description (`tke mks` lists those taken), or delete that part \
             first with `tke mk-rm`.",
        ),
        KeyFileError::KeyPartZero => {
            Some("Give another value, or make a random part with `tke mk-add --random`.")
        }
        KeyFileError::PartWrongPassword { .. } => {
            Some("Only the part's owner knows its password; a forgotten one cannot be reset.")
        }
        _ => None,
    }
}

/// Prints the `KEYNUM | DESCRIPTION | VERIFICATION PATTERN` table.
fn print_table(entries: &[KeyPartEntry]) {
    print_numbered(entries.iter().enumerate().map(|(i, e)| (i + 1, e)));
}

/// Prints the `KEYNUM | DESCRIPTION | VERIFICATION PATTERN` table of these parts, each
/// with its KEYNUM.
pub fn print_numbered<'a>(parts: impl IntoIterator<Item = (usize, &'a KeyPartEntry)>) {
    let mut t = Table::new(&["KEYNUM", "DESCRIPTION", "VERIFICATION PATTERN"]);
    for (keynum, e) in parts {
        t.row(vec![
            keynum.to_string(),
            e.description.to_string(),
            vp_lines(Some(&e.vp)),
        ]);
    }
    print!("{}", t.render());
}

/// Prints the parts: the table (or a line saying there are none), or with `--output json`
/// a list of `{"keynum", "description", "vp"}`.
fn print_entries(ctx: &Ctx, entries: &[KeyPartEntry]) -> Result<()> {
    if ctx.json {
        let v: Vec<_> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                json!({
                    "keynum": i + 1,
                    "description": e.description.as_str(),
                    "vp": e.vp.to_hex(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if entries.is_empty() {
        println!("No master key parts were found. Create one with `tke mk-add --random`.");
    } else {
        print_table(entries);
    }
    Ok(())
}

/// `mks`: a damaged part file is listed as damaged, and makes the command fail, so that
/// a script notices before a load ceremony needs the part.
pub fn mks(ctx: &Ctx) -> Result<()> {
    let listing = ctx.files.key_parts()?;
    if !ctx.json {
        println!("Master key parts in {}:\n", ctx.files.path().display());
    }
    print_entries(ctx, &listing.entries)?;
    crate::report::damaged_files(
        ctx.json,
        "Damaged master key part files",
        &listing.problems,
        DAMAGED_ADVICE,
    )
}

/// Lists the parts, warning on standard error about files that cannot be read.
pub fn list(ctx: &Ctx) -> Result<KeyPartListing> {
    let listing = ctx.files.key_parts()?;
    for p in &listing.problems {
        eprintln!("Warning: {}", tke_proto::ErrorChain(p));
    }
    Ok(listing)
}

/// After a change: the updated list, then `OK`.
fn print_updated(ctx: &Ctx) -> Result<()> {
    print_entries(ctx, &list(ctx)?.entries)?;
    if !ctx.json {
        println!("\nOK");
    }
    Ok(())
}

/// Reads a part's value from a file that only its owner can read.
fn read_value_file(path: &Path) -> Result<KeyPart> {
    let shown = path.display();
    let mut file =
        fs::File::open(path).with_context(|| format!("cannot read the value file {shown}"))?;
    let meta = file
        .metadata()
        .with_context(|| format!("cannot read the value file {shown}"))?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "the value file {shown} can be read by other users, and it holds a master key part; \
             restrict it with `chmod 600 {shown}`"
        );
    }
    if meta.len() > MAX_VALUE_FILE {
        bail!(
            "the value file {shown} has {} bytes: it is not a master key part value (64 hex digits)",
            meta.len()
        );
    }
    // Room reserved first: a growing buffer would leave copies of the value behind.
    let mut bytes = Zeroizing::new(Vec::with_capacity(MAX_VALUE_FILE as usize + 1));
    file.by_ref()
        .take(MAX_VALUE_FILE + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read the value file {shown}"))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        anyhow::anyhow!("the value file {shown} is not text: it must hold 64 hex digits")
    })?;
    KeyPart::from_hex(text).with_context(|| format!("the value file {shown}"))
}

/// A description for a new part: valid and not taken on this workstation.
fn new_description(listing: &KeyPartListing, text: &str) -> Result<PartDescription> {
    let d = PartDescription::new(text)?;
    listing.check_new_description(&d)?;
    Ok(d)
}

/// `mk-add`.
pub fn add(ctx: &Ctx, a: &AddArgs) -> Result<()> {
    let part = if a.random {
        KeyPart::random()
    } else if let Some(path) = &a.value_file {
        read_value_file(path)?
    } else {
        ctx.prompt.ask_hidden(
            "Enter the master key part as 64 hex digits (32 bytes); what you type is not shown:",
            "--value-file FILE",
            |s| Ok(KeyPart::from_hex(s)?),
        )?
    };
    let listing = ctx.files.key_parts()?;
    let description = match &a.description {
        Some(d) => new_description(&listing, d)?,
        None => ctx.prompt.ask(
            "Enter a description for the master key part (up to 64 characters):",
            "--description DESCRIPTION",
            |s| new_description(&listing, s),
        )?,
    };
    let password = match ctx
        .secrets
        .as_ref()
        .and_then(|s| s.get(description.as_str()))
    {
        // A script chose this password: there is no one to ask, so a weak one is taken
        // with a warning, as for signature keys.
        Some(p) => {
            if let Some(why) = weak_password(p.expose_secret()) {
                eprintln!(
                    "Warning: the password for the master key part {:?} in the secrets file is weak: {why}.",
                    description.as_str()
                );
            }
            p.clone()
        }
        None => ctx.prompt.new_password(
            &format!("the master key part {:?}", description.as_str()),
            &format!(
                "--secrets FILE (a line `{} = \"...\"`)",
                toml::Value::String(description.to_string())
            ),
        )?,
    };
    let entry = ctx
        .files
        .write_key_part(&description, &part, &password)
        .with_context(|| format!("cannot save the master key part {:?}", description.as_str()))?;
    if !ctx.json {
        println!(
            "Master key part {:?} saved in {}.\nKeep its password: without it the part cannot be loaded, and nothing can recover it.\n",
            description.as_str(),
            entry.path.display()
        );
    }
    print_updated(ctx)
}

/// `mk-rm`.
pub fn rm(ctx: &Ctx, a: &RmArgs) -> Result<()> {
    let listing = list(ctx)?;
    let (keynum, entry) = match &a.description {
        Some(d) => {
            let entry = listing.find(d).context("nothing was deleted")?;
            (listing.keynum_of(&entry.path).unwrap_or_default(), entry)
        }
        None => {
            if listing.entries.is_empty() {
                bail!(
                    "no master key parts were found in {}; nothing to delete",
                    ctx.files.path().display()
                );
            }
            print_table(&listing.entries);
            println!();
            let n = ctx.prompt.ask(
                "Enter the KEYNUM of the master key part to delete:",
                "a DESCRIPTION argument",
                |s| match parse_numbers(s, listing.entries.len(), "KEYNUM")?[..] {
                    [n] => Ok(n),
                    _ => bail!("enter one KEYNUM"),
                },
            )?;
            (n, &listing.entries[n - 1])
        }
    };
    let warning = format!(
        "WARNING: {} may be the only backup of the master key that part {:?} (KEYNUM {keynum}) belongs to: without this file and its password, that master key can never be loaded again.",
        entry.path.display(),
        entry.description.as_str()
    );
    // Standard output is the JSON document with `--output json`.
    if ctx.json {
        eprintln!("{warning}");
    } else {
        println!("{warning}");
    }
    if !ctx.prompt.confirm(
        &format!(
            "Delete the master key part {:?}? This cannot be undone.",
            entry.description.as_str()
        ),
        a.yes,
    )? {
        println!("Cancelled. Nothing was deleted.");
        return Err(crate::Cancelled.into());
    }
    ctx.files.remove_key_part(entry)?;
    if !ctx.json {
        println!(
            "Master key part {:?} deleted.\n",
            entry.description.as_str()
        );
    }
    print_updated(ctx)
}
