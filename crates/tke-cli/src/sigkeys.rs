//! `sigkeys`, `sigkey-add`, `sigkey-rm`, `sigkey-sel`: signature keys on this workstation.

use anyhow::{bail, Context as _, Result};
use serde_json::json;
use tke_ceremony::InstalledKeys;
use tke_proto::{AdminInfo, AdminName};
use tke_sigkey::Signer as _;
use tke_sigkey_file::FileSigner;
use tke_sigkey_pkcs11::{tke_pkcs11, Pkcs11Error, Pkcs11Uri, TokenSession};
use tke_workstation::{SigKeyEntry, SigKeyKind};

use crate::{context::Ctx, prompt::parse_numbers, table::Table};

/// Lists signature keys, warning on standard error about files that cannot be read.
pub fn list(ctx: &Ctx) -> Result<Vec<SigKeyEntry>> {
    let listing = ctx.files.signature_keys()?;
    for p in &listing.problems {
        eprintln!("Warning: {}", tke_proto::ErrorChain(p));
    }
    Ok(listing.entries)
}

/// The KEYNUM of the one signature key named `name` (`--admin NAME`); `create` says how
/// to make a key when there is none.
pub fn keynum_by_name(
    ctx: &Ctx,
    entries: &[SigKeyEntry],
    name: &str,
    create: &str,
) -> Result<usize> {
    let matches: Vec<usize> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.name.as_str() == name)
        .map(|(i, _)| i + 1)
        .collect();
    match matches.as_slice() {
        [n] => Ok(*n),
        [] if !ctx.files.signature_keys()?.problems.is_empty() => bail!(
            "--admin {name:?}: no usable signature key of that name in {}; some key files there are damaged (see the warnings above): {}",
            ctx.files.path().display(),
            DAMAGED_ADVICE
        ),
        [] => bail!("--admin {name:?}: no signature key of that name in {} (see `tke sigkeys`); {create}", ctx.files.path().display()),
        _ => bail!("--admin {name:?}: several signature keys have that name (files copied in from elsewhere?); remove the extra ones with `tke sigkey-rm KEYNUM` (see `tke sigkeys`)"),
    }
}

/// A key as the ceremonies know it: by administrator name and SKI.
pub fn admin_info(e: &SigKeyEntry) -> AdminInfo {
    AdminInfo {
        ski: e.ski,
        name: e.name.clone(),
    }
}

/// Prints the `KEYNUM | DESCRIPTION | SUBJECT KEY IDENTIFIER` table.
pub fn print_table(entries: &[SigKeyEntry], selected: &[tke_proto::Ski]) {
    let mut t = Table::new(&[
        "KEYNUM",
        "DESCRIPTION",
        "SUBJECT KEY IDENTIFIER",
        "KIND",
        "SELECTED",
    ]);
    for (i, e) in entries.iter().enumerate() {
        t.row(vec![
            (i + 1).to_string(),
            e.name.to_string(),
            e.ski.short(),
            e.kind.label().to_owned(),
            selected.contains(&e.ski).to_string(),
        ]);
    }
    print!("{}", t.render());
}

/// `sigkeys`: a damaged key file is listed as damaged, and makes the command fail, so
/// that a script notices before a ceremony needs the key.
pub fn sigkeys(ctx: &Ctx) -> Result<()> {
    let listing = ctx.files.signature_keys()?;
    let entries = listing.entries;
    let damaged = || {
        crate::report::damaged_files(
            ctx.json,
            "Damaged signature key files",
            &listing.problems,
            DAMAGED_ADVICE,
        )
    };
    let selected = ctx.files.load_selection()?.sigkeys;
    if ctx.json {
        let v: Vec<_> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let mut v = json!({
                    "keynum": i + 1,
                    "name": e.name.as_str(),
                    "ski": e.ski.to_hex(),
                    "kind": e.kind.label(),
                    "selected": selected.contains(&e.ski),
                    "certificate": e.cert_path.display().to_string(),
                });
                if let SigKeyKind::YubiKey(r) = e.kind {
                    v["serial"] = json!(r.serial);
                    v["slot"] = json!(format!("{:02x}", r.slot));
                }
                if let Some(uri) = &e.token_uri {
                    v["uri"] = json!(uri);
                }
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return damaged();
    }
    println!("Signature key files in {}:\n", ctx.files.path().display());
    if entries.is_empty() {
        println!("No signature keys were found. Create one with `tke sigkey-add`.");
    } else {
        print_table(&entries, &selected);
    }
    damaged()
}

/// What to do about a damaged key file: a new key would be another administrator.
pub const DAMAGED_ADVICE: &str = "a damaged signature key file cannot be repaired or \
    recreated: restore it, with its certificate, from a backup (a new key, even with the \
    same name, is a different administrator)";

/// Creates one new file signature key; the password comes from `--secrets` or is asked
/// twice on the terminal.
pub fn create_key(ctx: &Ctx, name: &AdminName) -> Result<FileSigner> {
    let pw = match ctx.secrets.as_ref().and_then(|s| s.get(name.as_str())) {
        // A script chose this password in its secrets file: there is no one to ask, so
        // a weak one is taken with a warning (documented in the README).
        Some(p) => {
            if let Some(why) = crate::prompt::weak_password(p.expose_secret()) {
                eprintln!("Warning: the password for the new signature key of {name} in the secrets file is weak: {why}.");
            }
            p.clone()
        }
        None => ctx.prompt.new_password(
            &format!("the new signature key of {name}"),
            &format!("--secrets FILE (a line `{name} = \"...\"`)"),
        )?,
    };
    FileSigner::generate(&ctx.files, name, &pw)
        .with_context(|| format!("cannot create a signature key for {name}"))
}

/// Parses an administrator name, with the vendor's limit stated.
pub fn parse_name(s: &str) -> Result<AdminName> {
    Ok(AdminName::new(s)?)
}

/// `sigkey-add --pkcs11 URI`: generates the key on the token, or registers the key pair
/// the URI names if it is there already (saying so first), then records the URI and the
/// certificate in the workstation directory.
fn add_token_key(ctx: &Ctx, name: &AdminName, uri_text: &str) -> Result<()> {
    let uri = Pkcs11Uri::parse(uri_text).context("--pkcs11")?;
    if uri.object().is_none() && uri.id().is_none() {
        bail!("--pkcs11: the URI names no key: add `object=LABEL` (the key's label on the token)");
    }
    // A PIN typed on a terminal is asked again after a wrong one, at most three times.
    let mut tries = 0;
    let session = loop {
        let (pin, asked) = ctx.token_pin(name.as_str(), &uri)?;
        match TokenSession::open(&uri, &pin) {
            Ok(s) => break s,
            Err(e @ Pkcs11Error::Pkcs11(tke_pkcs11::Error::WrongPin { .. }))
                if asked && tries < 2 =>
            {
                println!("{e}\n");
                tries += 1;
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot add a signature key for {name} on a PKCS#11 token")
                })
            }
        }
    };
    let token = session.token().clone();
    let registered = session.has_key_pair()?;
    let signer = if registered {
        let notice = format!(
            "A key pair ({}) is already on {token}: registering it as the signature key of {name}. No new key is generated.",
            uri.key_description()
        );
        if ctx.json {
            eprintln!("{notice}");
        } else {
            println!("{notice}\n");
        }
        session
            .register(name)
            .with_context(|| format!("cannot register the key pair on {token} for {name}"))?
    } else {
        session
            .generate(name)
            .with_context(|| format!("cannot generate a signature key for {name} on {token}"))?
    };
    if let Some(e) = ctx.files.signature_keys()?.by_ski(&signer.ski()) {
        bail!(
            "the key {} on {token} is already recorded in this workstation as the signature key of {} ({}); nothing was changed",
            uri.key_description(),
            e.name,
            e.key_path.display()
        );
    }
    let entry = ctx
        .files
        .write_token_reference(signer.certificate(), &signer.uri().to_string())
        .with_context(|| {
            format!(
                "the key of {name} is on {token}, but the workstation could not record it; run \
                 the same `tke sigkey-add --pkcs11` again to register it"
            )
        })?;
    if ctx.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "name": name.as_str(),
                "ski": signer.ski().to_hex(),
                "kind": SigKeyKind::Pkcs11.label(),
                "uri": signer.uri().to_string(),
                "registered": registered,
                "reference_file": entry.key_path.display().to_string(),
            }))?
        );
    } else {
        println!(
            "Signature key for {name} ({}) {} {token}, recorded in {}.\nThe key never leaves the token; the token's PIN is needed to sign with it.\n",
            signer.ski().short(),
            if registered { "registered on" } else { "generated on" },
            entry.key_path.display()
        );
        print_table(&list(ctx)?, &ctx.files.load_selection()?.sigkeys);
        println!("\nOK");
    }
    Ok(())
}

/// Refuses a name that is, or looks like, the name of a signature key on this
/// workstation: `--admin NAME` selects keys by name, so a second key with the same name
/// could never be selected, and a unit would refuse to install a look-alike (256/40)
/// that an operator could not tell apart from the first.
fn refuse_taken_name(ctx: &Ctx, name: &AdminName) -> Result<()> {
    let listing = ctx.files.signature_keys()?;
    let entries = listing.entries.iter().enumerate();
    if let Some((i, _)) = entries.clone().find(|(_, e)| e.name == *name) {
        bail!(
            "the administrator name {:?} is taken by signature key {} (see `tke sigkeys`): \
             names are unique on a workstation; choose another name, or remove that key \
             first with `tke sigkey-rm {}`",
            name.as_str(),
            i + 1,
            i + 1
        );
    }
    if let Some((i, e)) = entries.clone().find(|(_, e)| e.name.looks_like(name)) {
        bail!(
            "the administrator name {:?} looks the same as {:?}, the name of signature key {} \
             (see `tke sigkeys`): a crypto unit installs no two administrators whose names \
             look the same; choose a name that looks different",
            name.as_str(),
            e.name.as_str(),
            i + 1
        );
    }
    Ok(())
}

/// `sigkey-add`: a file key, or with `pkcs11` a key on a PKCS#11 token, or with
/// `--yubikey` a key on a YubiKey (clap makes the two exclusive).
pub fn add(
    ctx: &Ctx,
    name: Option<&str>,
    pkcs11: Option<&str>,
    yubikey: &crate::yubikey::AddArgs,
) -> Result<()> {
    let name = match name {
        Some(n) => parse_name(n)?,
        None => ctx.prompt.ask(
            "Enter an administrator name to be associated with the signature key (up to 30 characters):",
            "--name NAME",
            parse_name,
        )?,
    };
    refuse_taken_name(ctx, &name)?;
    if let Some(uri) = pkcs11 {
        return add_token_key(ctx, &name, uri);
    }
    if yubikey.yubikey {
        return crate::yubikey::add(ctx, &name, yubikey);
    }
    let signer = create_key(ctx, &name)?;
    if ctx.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"name": name.as_str(), "ski": signer.ski().to_hex(), "key_file": signer.entry().key_path.display().to_string()})
            )?
        );
    } else {
        println!(
            "Signature key for {name} ({}) saved in {}.\nKeep its password: without it the key cannot sign, and nothing can recover it.\n",
            signer.ski().short(),
            signer.entry().key_path.display()
        );
        print_table(&list(ctx)?, &ctx.files.load_selection()?.sigkeys);
        println!("\nOK");
    }
    Ok(())
}

fn pick_keys(ctx: &Ctx, entries: &[SigKeyEntry], nums: &[usize], what: &str) -> Result<Vec<usize>> {
    if entries.is_empty() {
        bail!(
            "no signature keys were found in {}; create one with `tke sigkey-add`",
            ctx.files.path().display()
        );
    }
    if nums.is_empty() {
        print_table(entries, &ctx.files.load_selection()?.sigkeys);
        println!();
        return ctx.prompt.ask(
            &format!("Enter the KEYNUM of the signature keys to {what}, separated by spaces:"),
            "KEYNUM arguments",
            |s| {
                let v = parse_numbers(s, entries.len(), "KEYNUM")?;
                if v.is_empty() {
                    bail!("enter at least one KEYNUM");
                }
                Ok(v)
            },
        );
    }
    for &n in nums {
        if n == 0 || n > entries.len() {
            bail!("KEYNUM {n} does not exist: there are {} signature keys (see `tke sigkeys`); nothing was changed", entries.len());
        }
    }
    Ok(nums.to_vec())
}

/// `sigkey-rm`.
pub fn rm(ctx: &Ctx, nums: &[usize], yes: bool) -> Result<()> {
    let entries = list(ctx)?;
    let nums = pick_keys(ctx, &entries, nums, "delete")?;
    // Warn when a key is installed as an administrator on a known unit, or may be on a
    // unit that cannot be asked: without it, no signed command (zeroize included) may be
    // possible any more.
    if tke_client::EmbeddedFleet::exists(&ctx.files.local_dir()) {
        let fleet = ctx.connect()?;
        let keys: Vec<AdminInfo> = nums.iter().map(|&n| admin_info(&entries[n - 1])).collect();
        let found = InstalledKeys::find(&fleet.client, &keys);
        for i in &found.installed {
            println!(
                "WARNING: {} is an administrator of crypto unit {}.",
                i.key.name, i.num
            );
        }
        for u in &found.unreachable {
            println!(
                "WARNING: crypto unit {} cannot be queried, so whether these signature keys are installed on it is unknown: {}.",
                u.num,
                tke_client::untrusted::sanitize(&tke_proto::ErrorChain(&u.source).to_string())
            );
        }
        if !found.installed.is_empty() || !found.unreachable.is_empty() {
            println!("Without this signature key, commands that need its signature (zeroize included) may become impossible.");
        }
    }
    let names: Vec<String> = nums
        .iter()
        .map(|&n| entries[n - 1].name.to_string())
        .collect();
    let on_tokens: Vec<String> = nums
        .iter()
        .map(|&n| &entries[n - 1])
        .filter(|e| e.kind == SigKeyKind::Pkcs11)
        .map(|e| e.name.to_string())
        .collect();
    let question = if on_tokens.is_empty() {
        format!(
            "Delete the signature key file(s) of {}? This cannot be undone.",
            names.join(", ")
        )
    } else {
        format!(
            "Delete the signature key file(s) of {}? The key(s) of {} stay on their PKCS#11 token(s): only their reference and certificate files are deleted from this workstation, and no token is touched.",
            names.join(", "),
            on_tokens.join(", ")
        )
    };
    if !ctx.prompt.confirm(&question, yes)? {
        println!("Cancelled. Nothing was deleted.");
        return Err(crate::Cancelled.into());
    }
    let mut sel = ctx.files.load_selection()?;
    for &n in &nums {
        ctx.files.remove_signature_key(&entries[n - 1])?;
        sel.sigkeys.retain(|s| *s != entries[n - 1].ski);
        if let SigKeyKind::YubiKey(r) = entries[n - 1].kind {
            println!(
                "The key of {} stays in slot {:02x} of YubiKey {}: only this workstation's reference was deleted.",
                entries[n - 1].name, r.slot, r.serial
            );
        }
    }
    ctx.files.save_selection(&sel)?;
    for n in &on_tokens {
        println!("The key of {n} is still on its PKCS#11 token; only this workstation's reference to it was deleted.");
    }
    println!("OK");
    Ok(())
}

/// `sigkey-sel`: which keys may sign later commands. `show` prints the selection and
/// changes nothing; `clear` empties it (then every key may sign).
pub fn sel(ctx: &Ctx, nums: &[usize], show: bool, clear: bool) -> Result<()> {
    let entries = list(ctx)?;
    let mut sel = ctx.files.load_selection()?;
    if !show {
        sel.sigkeys = if clear {
            Vec::new()
        } else {
            let nums = pick_keys(ctx, &entries, nums, "select")?;
            nums.iter().map(|&n| entries[n - 1].ski).collect()
        };
        ctx.files.save_selection(&sel)?;
    }
    let selected: Vec<(usize, &SigKeyEntry)> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| sel.sigkeys.contains(&e.ski))
        .map(|(i, e)| (i + 1, e))
        .collect();
    if ctx.json {
        let v: Vec<_> = selected
            .iter()
            .map(|(n, e)| json!({"keynum": n, "name": e.name.as_str(), "ski": e.ski.to_hex()}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if selected.is_empty() {
        println!(
            "No signature keys are selected: every signature key on this workstation may sign."
        );
    } else {
        let names: Vec<&str> = selected.iter().map(|(_, e)| e.name.as_str()).collect();
        println!(
            "Selected signature keys: {}. These may sign: each command uses as many of them as it needs among the administrators installed on each crypto unit, and asks only their passwords.",
            names.join(", ")
        );
    }
    if !entries.is_empty() {
        println!();
        print_table(&entries, &sel.sigkeys);
    }
    if !show {
        println!("\nOK");
    }
    Ok(())
}
