//! Signature keys on YubiKeys: `sigkey-add --yubikey`, and opening them with their PIN.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use serde_json::json;
use tke_proto::{AdminName, Ski};
use tke_sigkey::Signer as _;
use tke_sigkey_yubikey::{
    CardInfo, CertificateWrite, Enrollment, ManagementKey, ManagementKeySource, Pin, PinPolicy,
    Slot, SlotCertificate, SlotContent, TouchPolicy, TouchPrompt, YubiKeyError, YubiKeySigner,
};
use tke_workstation::{SigKeyEntry, YubiKeyRef};

use crate::{context::Ctx, sigkeys::print_table};

/// PIN policy of a new key.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum PinPolicyArg {
    /// The PIN once per session.
    Once,
    /// The PIN before every signature.
    Always,
}

/// Touch policy of a new key.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum TouchPolicyArg {
    /// No touch.
    Never,
    /// A touch for every signature.
    Always,
    /// A touch, then none for 15 seconds.
    Cached,
}

/// Where the management key comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ManagementKeyArg {
    /// The PIN-protected key if the YubiKey stores one, else the factory default if the
    /// YubiKey says it is set, else ask.
    Auto,
    /// The factory default.
    Default,
    /// The PIN-protected key stored on the YubiKey.
    PinProtected,
    /// From --secrets (a line `"management-key-SERIAL" = "hex"`) or a hidden prompt.
    Ask,
}

/// The YubiKey options of `sigkey-add`.
#[derive(clap::Args, Debug)]
pub struct AddArgs {
    /// Make the signature key on a YubiKey (PIV, ECC P-256) instead of in a file: the key
    /// never leaves the YubiKey; this workstation records its serial number and slot.
    #[arg(long)]
    pub yubikey: bool,
    /// The serial number of the YubiKey to use (needed when several are attached).
    #[arg(long, value_name = "N", requires = "yubikey")]
    pub serial: Option<u32>,
    /// The PIV slot: 9c (digital signature), 9a, 9d, 9e, or a retired slot 82 to 95.
    #[arg(long, value_name = "SLOT", default_value = "9c", requires = "yubikey")]
    pub slot: Slot,
    /// When the new key needs the PIN.
    #[arg(long, value_enum, default_value_t = PinPolicyArg::Always, requires = "yubikey")]
    pub pin_policy: PinPolicyArg,
    /// When the new key needs a touch of the YubiKey.
    #[arg(long, value_enum, default_value_t = TouchPolicyArg::Cached, requires = "yubikey")]
    pub touch_policy: TouchPolicyArg,
    /// The management key that allows generating a key and writing its certificate.
    #[arg(long, value_enum, default_value_t = ManagementKeyArg::Auto, requires = "yubikey")]
    pub management_key: ManagementKeyArg,
    /// Register the key already in the slot (made by yubico-piv-tool, ykman or another
    /// workstation) instead of generating one. Its certificate is written to the slot
    /// unless the slot holds this administrator's certificate already.
    #[arg(long, requires = "yubikey", conflicts_with_all = ["pin_policy", "touch_policy"])]
    pub existing: bool,
    /// Confirm overwriting what the slot holds: its key when generating (the key is
    /// destroyed), or another certificate with --existing. Without it an occupied slot is
    /// refused (on a terminal, you are asked).
    #[arg(long, requires = "yubikey")]
    pub overwrite_slot: bool,
}

/// Shows the touch message on standard error: every time for touch policy "always",
/// at most every 15 seconds per YubiKey for "cached".
#[derive(Default)]
pub struct TerminalTouch {
    last: Mutex<HashMap<u32, Instant>>,
}

impl TouchPrompt for TerminalTouch {
    fn touch(&self, card: &CardInfo, slot: Slot, policy: TouchPolicy) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let recent = last
            .get(&card.serial)
            .is_some_and(|t| t.elapsed() < Duration::from_secs(15));
        if policy == TouchPolicy::Cached && recent {
            return;
        }
        last.insert(card.serial, Instant::now());
        eprintln!(
            "Touch YubiKey {} now (slot {slot}): it blinks while it waits.",
            card.serial
        );
    }
}

/// The secrets-file entry that holds a YubiKey's management key.
fn management_key_entry(serial: u32) -> String {
    format!("management-key-{serial}")
}

/// The PIN for administrator `name`'s key on `card`: from `--secrets`, else a hidden
/// prompt.
fn pin(ctx: &Ctx, name: &str, what: &str) -> Result<(Pin, bool)> {
    if let Some(p) = ctx.secrets.as_ref().and_then(|s| s.get(name)) {
        let pin = Pin::new(p.expose_secret())
            .with_context(|| format!("the secrets file's entry for {name} is not a YubiKey PIN"))?;
        return Ok((pin, true));
    }
    loop {
        let p = ctx.prompt.password(
            &format!("Enter the PIN of {what}:"),
            &format!("--secrets FILE (a line `{name} = \"PIN\"`)"),
        )?;
        match Pin::new(p.expose_secret()) {
            Ok(pin) => return Ok((pin, false)),
            Err(e) => println!("{e}\n"),
        }
    }
}

/// Adds what the operator can do about an error to the library's message.
pub fn hint(e: YubiKeyError) -> anyhow::Error {
    let extra = match &e {
        YubiKeyError::Several { .. } => Some("Give --serial N."),
        YubiKeyError::SlotOccupied { .. } | YubiKeyError::SlotMayBeOccupied { .. } => Some(
            "Give --overwrite-slot to destroy the key that is there, or --existing to register it.",
        ),
        YubiKeyError::SlotCertificateOccupied { .. } => {
            Some("Give --overwrite-slot to replace it.")
        }
        YubiKeyError::ManagementKeyRefused { .. }
        | YubiKeyError::ManagementKeyLength { .. }
        | YubiKeyError::NoProtectedManagementKey { .. } => Some(
            "Choose it with --management-key default|pin-protected|ask (ask: from --secrets, a \
             line `\"management-key-SERIAL\" = \"hex\"`, or a hidden prompt).",
        ),
        YubiKeyError::AfterGeneration { .. } => {
            Some("Register it with `tke sigkey-add --yubikey --existing`.")
        }
        _ => None,
    };
    match extra {
        Some(x) => anyhow::anyhow!("{}. {x}", tke_proto::ErrorChain(&e)),
        None => e.into(),
    }
}

/// Opens a YubiKey signature key, asking again after a wrong PIN typed on the terminal
/// while at least two tries are left (a PIN from --secrets is never retried: a wrong one
/// would eat the tries).
pub fn open(ctx: &Ctx, entry: &SigKeyEntry, r: &YubiKeyRef) -> Result<YubiKeySigner> {
    let name = entry.name.as_str();
    let what = format!(
        "YubiKey {} (slot {:02x}) for the signature key identified by:\n{name} ({})",
        r.serial,
        r.slot,
        entry.ski.short()
    );
    loop {
        let (pin, from_secrets) = pin(ctx, name, &what)?;
        match YubiKeySigner::open(
            r,
            entry.certificate.clone(),
            pin,
            Arc::new(TerminalTouch::default()),
        ) {
            Ok(s) => return Ok(s),
            Err(e @ YubiKeyError::WrongPin { tries_left, .. })
                if !from_secrets && ctx.prompt.interactive() && tries_left >= 2 =>
            {
                println!("{e}\n");
            }
            Err(e) => {
                return Err(hint(e))
                    .with_context(|| format!("cannot open the signature key of {name}"))
            }
        }
    }
}

fn management_source(
    ctx: &Ctx,
    choice: ManagementKeyArg,
    en: &Enrollment,
) -> Result<ManagementKeySource> {
    let info = en.management_key();
    let serial = en.card().serial;
    let ask = || -> Result<ManagementKeySource> {
        let entry = management_key_entry(serial);
        let hex = match ctx.secrets.as_ref().and_then(|s| s.get(&entry)) {
            Some(p) => p.clone(),
            None => ctx.prompt.password(
                &format!(
                    "Enter the management key of YubiKey {serial} ({}, {} hexadecimal digits):",
                    info.algorithm,
                    info.algorithm.key_len() * 2
                ),
                &format!("--secrets FILE (a line `\"{entry}\" = \"hex\"`)"),
            )?,
        };
        let key = ManagementKey::from_hex(hex.expose_secret())
            .with_context(|| format!("the management key of YubiKey {serial}"))?;
        Ok(ManagementKeySource::Given(key))
    };
    match choice {
        ManagementKeyArg::Default => Ok(ManagementKeySource::Default),
        ManagementKeyArg::PinProtected => Ok(ManagementKeySource::PinProtected),
        ManagementKeyArg::Ask => ask(),
        ManagementKeyArg::Auto => match info.automatic_source() {
            Some(s) => Ok(s),
            None => ask(),
        },
    }
}

fn describe_certificate(c: &SlotCertificate) -> String {
    match c {
        SlotCertificate::None => "no certificate".to_owned(),
        SlotCertificate::Admin(a) => format!(
            "the TKE administrator certificate of {} ({})",
            a.name(),
            a.ski().short()
        ),
        SlotCertificate::Other { subject } => format!("a certificate for {subject}"),
    }
}

/// Asks for (or takes from `--overwrite-slot`) the confirmation to overwrite. Without a
/// terminal and without the flag, `refusal` is the answer, before any PIN is asked.
fn confirm_overwrite(
    ctx: &Ctx,
    args: &AddArgs,
    question: &str,
    refusal: YubiKeyError,
) -> Result<bool> {
    if args.overwrite_slot {
        return Ok(true);
    }
    if !ctx.prompt.interactive() {
        return Err(hint(refusal));
    }
    if ctx.prompt.confirm(question, false)? {
        Ok(true)
    } else {
        println!("Cancelled. Nothing was changed.");
        Err(crate::Cancelled.into())
    }
}

/// `sigkey-add --yubikey`.
pub fn add(ctx: &Ctx, name: &AdminName, args: &AddArgs) -> Result<()> {
    let slot = args.slot;
    let en = Enrollment::open(args.serial, slot).map_err(hint)?;
    let card = en.card().clone();
    let say = |s: &str| {
        if !ctx.json {
            println!("{s}");
        }
    };
    say(&format!("{card}."));
    if en.pin_is_default() == Some(true) {
        say("Warning: this YubiKey still has the default PIN 123456. Change it (`ykman piv access change-pin`) before relying on the key.");
    }
    let mgm = en.management_key();
    let listing = ctx.files.signature_keys()?;
    let content = en.content().clone();
    let pin_policy = match args.pin_policy {
        PinPolicyArg::Once => PinPolicy::Once,
        PinPolicyArg::Always => PinPolicy::Always,
    };
    let touch_policy = match args.touch_policy {
        TouchPolicyArg::Never => TouchPolicy::Never,
        TouchPolicyArg::Always => TouchPolicy::Always,
        TouchPolicyArg::Cached => TouchPolicy::Cached,
    };

    // Show what will happen, and get every confirmation, before the PIN.
    let mut overwrite = false;
    let mut keeps_certificate = false;
    if args.existing {
        let (public, policy, certificate) = match &content {
            SlotContent::Key {
                public,
                policy,
                certificate,
            } => (public, policy, certificate),
            _ => {
                return Err(hint(YubiKeyError::SlotEmpty {
                    serial: card.serial,
                    slot,
                }))
            }
        };
        say(&format!(
            "Slot {slot} ({}) holds a key and {}. It will be registered for {name}.",
            slot.purpose(),
            describe_certificate(certificate)
        ));
        if let Some((p, t)) = policy {
            say(&format!(
                "  PIN policy:   {p} ({})\n  Touch policy: {t} ({})",
                p.explain(),
                t.explain()
            ));
        }
        if let Some(p) = public {
            let ski = Ski::of_public_key(p);
            if let Some(e) = listing.by_ski(&ski) {
                bail!(
                    "the key in slot {slot} of YubiKey {} is already registered as {} ({}); nothing was changed",
                    card.serial,
                    e.name,
                    e.cert_path.display()
                );
            }
        }
        match certificate {
            SlotCertificate::Admin(a) if public.is_some_and(|p| p == *a.public_key()) => {
                if a.name() != name {
                    return Err(hint(YubiKeyError::OtherAdministrator {
                        serial: card.serial,
                        slot,
                        found: a.name().clone(),
                        wanted: name.clone(),
                    }));
                }
                keeps_certificate = true;
            }
            SlotCertificate::Other { subject } => {
                overwrite = confirm_overwrite(
                    ctx,
                    args,
                    &format!(
                        "Replace the certificate in slot {slot} with the administrator certificate of {name}? The key stays."
                    ),
                    YubiKeyError::SlotCertificateOccupied {
                        serial: card.serial,
                        slot,
                        subject: subject.clone(),
                    },
                )?;
            }
            _ => {}
        }
    } else {
        match &content {
            SlotContent::Key { certificate, .. } => {
                say(&format!(
                    "Slot {slot} ({}) already holds a key and {}.",
                    slot.purpose(),
                    describe_certificate(certificate)
                ));
                overwrite = confirm_overwrite(
                    ctx,
                    args,
                    &format!("Generating a new key destroys the key in slot {slot} for good. Destroy it?"),
                    YubiKeyError::SlotOccupied {
                        serial: card.serial,
                        slot,
                    },
                )?;
            }
            SlotContent::Unknown => {
                say(&format!(
                    "This YubiKey's firmware (before 5.3) cannot tell whether slot {slot} holds a key."
                ));
                overwrite = confirm_overwrite(
                    ctx,
                    args,
                    &format!("Generate a new key in slot {slot}, destroying any key there?"),
                    YubiKeyError::SlotMayBeOccupied {
                        serial: card.serial,
                        slot,
                    },
                )?;
            }
            SlotContent::Empty => {}
        }
        say(&format!(
            "A new ECC P-256 key will be generated in slot {slot} ({}):\n  PIN policy:   {pin_policy} ({})\n  Touch policy: {touch_policy} ({})",
            slot.purpose(),
            pin_policy.explain(),
            touch_policy.explain()
        ));
    }
    let source = if keeps_certificate {
        // Nothing is written to the card: no management key needed.
        ManagementKeySource::Default
    } else {
        let s = management_source(ctx, args.management_key, &en)?;
        say(&format!(
            "Management key: {}, {s}.{}",
            mgm.algorithm,
            if mgm.is_default == Some(true) {
                " Warning: it is the factory default, so anyone holding the YubiKey can replace its keys; set your own (`ykman piv access change-management-key --protect`)."
            } else {
                ""
            }
        ));
        s
    };
    say("");
    let mut en = en;
    let pin = loop {
        let (pin, from_secrets) = pin(
            ctx,
            name.as_str(),
            &format!("YubiKey {} for {name}", card.serial),
        )?;
        match en.verify_pin(&pin) {
            Ok(()) => break pin,
            Err(e @ YubiKeyError::WrongPin { tries_left, .. })
                if !from_secrets && ctx.prompt.interactive() && tries_left >= 2 =>
            {
                println!("{e}\n");
            }
            Err(e) => return Err(hint(e)),
        }
    };
    let prompt = Arc::new(TerminalTouch::default());
    let (signer, written) = if args.existing {
        let (s, w) = en
            .register_existing(name, pin, &source, overwrite, prompt)
            .map_err(hint)?;
        (s, w == CertificateWrite::Written)
    } else {
        say(&format!(
            "Generating the key on YubiKey {} in slot {slot}....",
            card.serial
        ));
        let s = en
            .generate(
                name,
                pin,
                &source,
                pin_policy,
                touch_policy,
                overwrite,
                prompt,
            )
            .map_err(hint)?;
        (s, true)
    };
    let entry = ctx
        .files
        .write_yubikey_reference(name, signer.certificate(), signer.reference())
        .with_context(|| {
            format!(
                "the key is in slot {slot} of YubiKey {} but could not be recorded on this workstation; \
                 run `tke sigkey-add --yubikey --existing --serial {} --slot {slot} --name {name}` once this is fixed",
                card.serial, card.serial
            )
        })?;
    if ctx.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "name": name.as_str(),
                "ski": signer.ski().to_hex(),
                "kind": "yubikey",
                "serial": card.serial,
                "slot": slot.to_string(),
                "certificate_written": written,
                "reference_file": entry.key_path.display().to_string(),
            }))?
        );
    } else {
        println!(
            "Signature key for {name} ({}) on YubiKey {}, slot {slot}{}. Reference saved in {}.\n\
             The key never leaves the YubiKey: keep the YubiKey and its PIN (docs/yubikey.md says what to do if it is lost).\n",
            signer.ski().short(),
            card.serial,
            if written { "; its certificate was written to the slot" } else { "" },
            entry.key_path.display()
        );
        print_table(
            &ctx.files.signature_keys()?.entries,
            &ctx.files.load_selection()?.sigkeys,
        );
        println!("\nOK");
    }
    Ok(())
}
