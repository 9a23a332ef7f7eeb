//! Detached approvals: `tke plan …` writes a ceremony file instead of signing, `tke
//! approve` adds one administrator's signatures offline, `tke apply` sends the approved
//! commands. The file's logic is [`tke_ceremony::approvals`]; this module parses, asks,
//! and prints.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use serde_json::json;
use tke_ceremony::{
    approvals::{self as file, ApplyError, CeremonyFile, Shortfall},
    guard::{Destruction, KeyStorageGuard},
    AdminSet, CeremonyError, Change, RegisterAction,
};
use tke_client::{fanout::parallel, KnownUnit};
use tke_proto::{AdminCertificate, AdminInfo, Command, Threshold};

use crate::{
    admins::start,
    auto_init::thresholds,
    context::{Ctx, Fleet},
    registers::hint,
    sigkeys::{keynum_by_name, list},
    signing,
    table::Table,
    Cancelled,
};

/// `tke plan`: a ceremony command, or `--desired FILE`.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct PlanArgs {
    #[command(subcommand)]
    pub command: Option<PlanCmd>,
    /// Plan the difference between the administrators and thresholds a TOML file states
    /// and what the crypto units of the service instance hold (docs/approvals.md).
    #[arg(long, value_name = "FILE", requires = "out")]
    pub desired: Option<PathBuf>,
    /// The INSTANCE NUM of the service instance (with --desired; asked for when there are
    /// several).
    #[arg(long, value_name = "NUM", requires = "desired")]
    pub instance: Option<usize>,
    /// Write the ceremony file here (with --desired; a new file).
    #[arg(long, value_name = "FILE", requires = "desired")]
    pub out: Option<PathBuf>,
}

/// The state a `--desired` file states. Strict: unknown keys are refused.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Desired {
    /// Certificate files (relative to the desired file) or names of signature keys on
    /// this workstation.
    admins: Vec<String>,
    sig_threshold: u32,
    rev_threshold: u32,
    /// Every unit holds one master key, current: when none holds one, the plan makes it
    /// (auto-init's rounds).
    #[serde(default)]
    master_key_present: bool,
}

/// The ceremony commands `tke plan` writes as files.
#[derive(clap::Subcommand, Debug)]
// The names are the vendor's command names, which `tke plan` prefixes.
#[allow(clippy::enum_variant_names)]
pub enum PlanCmd {
    /// Plan setting both thresholds of the selected crypto units
    CryptounitThrhldSet(PlanThresholds),
    /// Plan installing an administrator in the selected crypto units
    CryptounitAdminAdd(PlanAdd),
    /// Plan removing an administrator from the selected crypto units
    CryptounitAdminRm(PlanRm),
    /// Plan committing the new master key register of the selected crypto units
    CryptounitMkCommit(Out),
    /// Plan making the new master key register current on the selected crypto units
    CryptounitMkSetimm(Out),
    /// Plan clearing the new master key register of the selected crypto units
    CryptounitMkClrnew(Out),
    /// Plan clearing the current master key register of the selected crypto units
    CryptounitMkClrcur(PlanDestroy),
    /// Plan zeroizing the selected crypto units
    CryptounitZeroize(PlanDestroy),
    /// Plan rotating the selected crypto units (every unit of an instance) to the master
    /// key loaded from parts and committed in their new registers
    CryptounitMkRotate(Out),
    /// Plan initializing a service instance (three rounds: administrators, thresholds
    /// and keys; the export; import, commit, set immediate) from the administrators'
    /// certificate files; an initialization left part-way is continued from the units
    AutoInit(PlanAutoInit),
    /// Plan loading the new master key register of the selected crypto units from 2 or
    /// 3 master key parts (two rounds: importer keys; the parts sealed to them, made with
    /// --seal by whoever holds the part files and their passwords)
    CryptounitMkLoad(PlanMkLoad),
    /// Plan rotating the master key of a service instance (four rounds: generate and
    /// importer keys; the export; import and commit; set immediate, after `tke apply`
    /// re-encrypts the key storage); a rotation under way is continued from the units
    AutoMkRotate(PlanRotate),
    /// Plan copying a recovery unit's master key into the units of a service instance
    /// whose current master key register is empty (importer keys; the export; import,
    /// commit, set immediate)
    #[command(alias = "auto-mk-recover")]
    AutoRecover(PlanRecover),
}

/// `tke plan cryptounit-mk-load` flags.
#[derive(clap::Args, Debug)]
pub struct PlanMkLoad {
    /// Load the master key part of this description (see `tke mks`); give it 2 or 3
    /// times, in load order. Asked for by KEYNUM when omitted. Only the parts'
    /// verification patterns are read: no password.
    #[arg(long = "part", value_name = "DESCRIPTION")]
    pub parts: Vec<String>,
    /// Write the ceremony file here (a new file).
    #[arg(long, value_name = "FILE", required_unless_present = "seal")]
    pub out: Option<PathBuf>,
    /// Make round 2 of this ceremony file, once its round 1 is applied: open the planned
    /// parts (their passwords from --secrets FILE or asked) and seal them to each unit's
    /// importer key; the file is rewritten.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["parts", "out"])]
    pub seal: Option<PathBuf>,
}

/// `tke plan auto-mk-rotate` flags.
#[derive(clap::Args, Debug)]
pub struct PlanRotate {
    /// The INSTANCE NUM of the service instance (asked for when there are several).
    #[arg(long, value_name = "NUM", allow_negative_numbers = true,
          value_parser = |s: &str| crate::prompt::whole_number(s, "INSTANCE NUM"))]
    pub instance: Option<usize>,
    #[command(flatten)]
    pub out: Out,
}

/// `tke plan auto-recover` flags.
#[derive(clap::Args, Debug)]
pub struct PlanRecover {
    #[command(flatten)]
    pub copy: crate::auto_recover::Copy,
    #[command(flatten)]
    pub out: Out,
}

/// `tke plan cryptounit-zeroize` and `cryptounit-mk-clrcur` flags.
#[derive(clap::Args, Debug)]
pub struct PlanDestroy {
    #[command(flatten)]
    pub force: crate::guard::ForceArgs,
    #[command(flatten)]
    pub out: Out,
}

/// `tke plan auto-init` flags.
#[derive(clap::Args, Debug)]
pub struct PlanAutoInit {
    /// The INSTANCE NUM of the service instance to initialize (asked for when there are
    /// several).
    #[arg(long, value_name = "NUM", allow_negative_numbers = true,
          value_parser = |s: &str| crate::prompt::whole_number(s, "INSTANCE NUM"))]
    pub instance: Option<usize>,
    /// Signatures required on commands (1-8).
    #[arg(long, value_name = "N")]
    pub sig_threshold: Option<u32>,
    /// Signatures required to remove an administrator (1-8).
    #[arg(long, value_name = "N")]
    pub rev_threshold: Option<u32>,
    /// An administrator's certificate file (PEM or DER, made by `tke sigkey-add` on the
    /// administrator's own machine), in the order to install; repeatable, at least as
    /// many as the larger threshold.
    #[arg(long, value_name = "FILE", required = true, num_args = 1..)]
    pub admin_cert: Vec<PathBuf>,
    #[command(flatten)]
    pub out: Out,
}

/// `--out FILE`, for every `tke plan` command.
#[derive(clap::Args, Debug)]
pub struct Out {
    /// Write the ceremony file here (a new file: an existing one is never replaced).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// `tke plan cryptounit-thrhld-set` flags.
#[derive(clap::Args, Debug)]
pub struct PlanThresholds {
    /// Signatures required on commands (1-8).
    #[arg(long, value_name = "N")]
    pub sig_threshold: Option<u32>,
    /// Signatures required to remove an administrator (1-8).
    #[arg(long, value_name = "N")]
    pub rev_threshold: Option<u32>,
    #[command(flatten)]
    pub out: Out,
}

/// `tke plan cryptounit-admin-add` flags.
#[derive(clap::Args, Debug)]
pub struct PlanAdd {
    /// Install the signature key of this administrator on this workstation (only its
    /// certificate is read: no password is asked).
    #[arg(
        long = "admin",
        value_name = "NAME",
        required_unless_present = "admin_cert"
    )]
    pub admin: Option<String>,
    /// Install the administrator of this certificate file (PEM or DER, as made by `tke
    /// sigkey-add` on the administrator's own machine).
    #[arg(long, value_name = "FILE", conflicts_with = "admin")]
    pub admin_cert: Option<PathBuf>,
    #[command(flatten)]
    pub out: Out,
}

/// `tke plan cryptounit-admin-rm` flags.
#[derive(clap::Args, Debug)]
pub struct PlanRm {
    /// Remove the administrator of this name (see `tke cryptounit-admins`).
    #[arg(long = "admin", value_name = "NAME")]
    pub admin: String,
    #[command(flatten)]
    pub out: Out,
}

/// `tke approve` flags.
#[derive(clap::Args, Debug)]
pub struct ApproveArgs {
    /// The ceremony file to approve (it is rewritten with the approvals added).
    #[arg(value_name = "FILE", required_unless_present = "merge")]
    pub file: Option<PathBuf>,
    /// Approve with the signature key of this administrator.
    #[arg(long = "admin", value_name = "NAME", required_unless_present = "merge")]
    pub admin: Option<String>,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    /// Merge the approvals of copies of one ceremony file: `--merge OUT IN IN…` writes
    /// OUT (a new file) with every approval of the IN files.
    #[arg(long, value_name = "FILE", num_args = 3.., conflicts_with_all = ["file", "admin"])]
    pub merge: Vec<PathBuf>,
}

/// `tke apply` flags.
#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    /// The approved ceremony file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    // A zeroize or clear current file destroys stored keys only when it was planned with
    // the same --force-with-keys.
    #[command(flatten)]
    pub force: crate::guard::ForceArgs,
}

/// Units whose commands lack approvals: `tke apply` exits with code 4.
#[derive(Debug)]
pub struct LacksApprovals(pub String);

impl std::fmt::Display for LacksApprovals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LacksApprovals {}

/// `tke plan …`.
pub fn plan(ctx: &Ctx, args: &PlanArgs) -> Result<()> {
    match (&args.command, &args.desired, &args.out) {
        (Some(cmd), _, _) => plan_command(ctx, cmd),
        (None, Some(desired), Some(out)) => plan_desired(ctx, desired, args.instance, out),
        _ => bail!("give a ceremony command (`tke plan cryptounit-thrhld-set …`) or --desired FILE --out FILE; see `tke help plan`"),
    }
}

/// The administrator certificates of a `--desired` file's entries: a certificate file
/// (relative to the file), else a signature key of that name on this workstation.
fn desired_admins(ctx: &Ctx, path: &Path, entries: &[String]) -> Result<Vec<AdminCertificate>> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let keys = list(ctx)?;
    entries
        .iter()
        .map(|e| {
            let file = dir.join(e);
            if file.is_file() {
                return read_certificate(&file);
            }
            match keys.iter().find(|k| k.name.as_str() == e) {
                Some(k) => Ok(k.certificate.clone()),
                None => bail!(
                    "{}: administrator {e:?} is neither a certificate file (next to it) nor a signature key on this workstation (see `tke sigkeys`); no ceremony file was written",
                    path.display()
                ),
            }
        })
        .collect()
}

/// `tke plan --desired FILE --out FILE`: the difference, in the safe order.
fn plan_desired(ctx: &Ctx, path: &Path, instance: Option<usize>, out: &Path) -> Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the desired state {}", path.display()))?;
    let desired: Desired = toml::from_str(&text).with_context(|| {
        format!(
            "{} is not a desired state (admins, sig_threshold, rev_threshold)",
            path.display()
        )
    })?;
    let sig = Threshold::new(desired.sig_threshold)
        .with_context(|| format!("{}: sig_threshold", path.display()))?;
    let rev = Threshold::new(desired.rev_threshold)
        .with_context(|| format!("{}: rev_threshold", path.display()))?;
    let admins = desired_admins(ctx, path, &desired.admins)?;
    let fleet = ctx.connect()?;
    let instance = crate::auto_init::choose_instance(ctx, &fleet.client, instance, "plan")?;
    let units = fleet.client.instance_units(&instance);
    if desired.master_key_present {
        let statuses: Vec<_> = parallel(&units, |u| fleet.client.query(u))
            .into_iter()
            .collect::<Result<_, _>>()
            .map_err(|e| {
                anyhow::Error::new(e)
                    .context("the crypto units cannot be queried; no ceremony file was written")
            })?;
        let keyless =
            |s: &tke_proto::UnitStatus| s.current_register.state == tke_proto::RegisterState::Empty;
        if statuses.iter().all(tke_proto::UnitStatus::imprint_mode) {
            // Nothing is set up yet: the whole of auto-init.
            refuse_existing(out)?;
            let ceremony = file::plan_auto_init(&fleet.client, &instance, sig, rev, &admins)
                .map_err(plan_error)?;
            println!("+ administrators, thresholds and a master key (auto-init)\n");
            return write_new(&ceremony, out);
        }
        if statuses.iter().all(keyless) {
            refuse_existing(out)?;
            let change = Change::Set(AdminSet {
                admins: admins.clone(),
                sig_threshold: sig,
                rev_threshold: rev,
            });
            let setup = file::plan_admin_change(
                &fleet.client,
                "Changing administrators and thresholds",
                units.clone(),
                &change,
            )
            .map_err(signing::hint)?;
            let ceremony =
                file::plan_desired_key(&fleet.client, &instance, sig, rev, &admins, setup.as_ref())
                    .map_err(plan_error)?;
            if let Some(setup) = &setup {
                print_diff(&fleet.client, setup)?;
            }
            println!("+ master key: generated in a recovery crypto unit, copied to every crypto unit of the service instance\n");
            return write_new(&ceremony, out);
        }
        if !statuses.iter().all(|s| !keyless(s)) {
            let without: Vec<String> = units
                .iter()
                .zip(&statuses)
                .filter(|(_, s)| keyless(s))
                .map(|(u, _)| u.num.to_string())
                .collect();
            bail!(
                "{}: master_key_present, but crypto unit(s) {} hold no current master key while the others do: copy it to them with `tke auto-recover` first; no ceremony file was written",
                path.display(),
                without.join(", ")
            );
        }
    }
    let change = Change::Set(AdminSet {
        admins,
        sig_threshold: sig,
        rev_threshold: rev,
    });
    write_plan(
        &fleet,
        units,
        "Changing administrators and thresholds",
        &change,
        out,
    )
}

/// `tke plan auto-init …`: the first round now; `tke apply` writes the others.
fn plan_auto_init(ctx: &Ctx, a: &PlanAutoInit) -> Result<()> {
    refuse_existing(&a.out.out)?;
    let admins = a
        .admin_cert
        .iter()
        .map(|p| read_certificate(p))
        .collect::<Result<Vec<_>>>()?;
    let fleet = ctx.connect()?;
    let instance = crate::auto_init::choose_instance(ctx, &fleet.client, a.instance, "plan")?;
    let say = |s: &str| println!("{s}");
    let (sig, rev) = thresholds(ctx, a.sig_threshold, a.rev_threshold, &say)?;
    let ceremony =
        file::plan_auto_init(&fleet.client, &instance, sig, rev, &admins).map_err(plan_error)?;
    write_new(&ceremony, &a.out.out)
}

/// `tke plan cryptounit-mk-load …`: round 1 (importer keys) with `--out`, round 2 (the
/// sealed parts) with `--seal`.
fn plan_mk_load(ctx: &Ctx, a: &PlanMkLoad) -> Result<()> {
    if let Some(path) = &a.seal {
        return seal_mk_load(ctx, path);
    }
    let Some(out) = &a.out else {
        bail!("give --out FILE (a new ceremony file), or --seal FILE");
    };
    refuse_existing(out)?;
    let fleet = ctx.connect()?;
    let units = crate::units::require_selected(ctx, &fleet)?;
    let listing = crate::keyparts::list(ctx)?;
    let chosen = crate::mk_load::choose_parts(ctx, &listing, &a.parts)?;
    let vps: Vec<_> = chosen.iter().map(|(_, e)| e.vp).collect();
    let ceremony = file::plan_mk_load(&fleet.client, units, &vps).map_err(plan_error)?;
    println!("Master key parts to load:");
    crate::keyparts::print_numbered(chosen.iter().map(|(n, e)| (*n, *e)));
    println!();
    write_new(&ceremony, out)
}

/// `tke plan cryptounit-mk-load --seal FILE`: the planned parts, opened with their
/// owners' passwords, sealed to the importer keys round 1 recorded.
fn seal_mk_load(ctx: &Ctx, path: &Path) -> Result<()> {
    let mut ceremony = read(path)?;
    let planned = file::mk_load::parts_to_seal(&ceremony)
        .with_context(|| format!("{} cannot be sealed", path.display()))?;
    let listing = crate::keyparts::list(ctx)?;
    let mut parts = Vec::with_capacity(planned.len());
    for (i, vp) in planned.iter().enumerate() {
        let Some(entry) = listing.entries.iter().find(|e| e.vp == *vp) else {
            bail!(
                "master key part {} of the plan (verification pattern {}) is not in {}: copy its owner's part file there; nothing was written",
                i + 1,
                vp.to_hex(),
                ctx.files.path().display()
            );
        };
        let keynum = listing.keynum_of(&entry.path).unwrap_or_default();
        parts.push(crate::mk_load::open_part(ctx, keynum, entry)?);
    }
    file::seal_round(&mut ceremony, &parts).map_err(plan_error)?;
    drop(parts);
    print_commands(&ceremony);
    tke_fs::atomic::write_private(path, ceremony.to_json().as_bytes())
        .with_context(|| format!("cannot write the ceremony file {}", path.display()))?;
    println!(
        "OK\nRound 2 (the parts sealed to each crypto unit's importer key) is in {}. Each administrator approves it with `tke approve FILE --admin NAME`; then `tke apply FILE` sends it.",
        path.display()
    );
    Ok(())
}

/// A refused plan, with the advice the direct commands give.
fn plan_error(e: file::PlanError) -> anyhow::Error {
    match e {
        file::PlanError::Ceremony(e) => signing::hint(e),
        e => e.into(),
    }
}

/// `tke plan auto-mk-rotate` and `tke plan auto-recover`: the instance chosen (`what`
/// names the ceremony in the question), the file planned and written.
fn plan_transfer(
    ctx: &Ctx,
    instance: Option<usize>,
    out: &Out,
    what: &str,
    plan: impl FnOnce(
        &tke_client::Client,
        &tke_client::InstanceId,
    ) -> Result<CeremonyFile, file::PlanError>,
) -> Result<()> {
    refuse_existing(&out.out)?;
    let fleet = ctx.connect()?;
    let instance = crate::auto_init::choose_instance(ctx, &fleet.client, instance, what)?;
    let ceremony = plan(&fleet.client, &instance).map_err(plan_error)?;
    write_new(&ceremony, &out.out)
}

/// Refuses an `--out` file that exists: its approvals would be lost.
fn refuse_existing(out: &Path) -> Result<()> {
    if out.exists() {
        bail!(
            "--out {}: the file exists; a ceremony file is never replaced (its approvals would be lost): choose another file",
            out.display()
        );
    }
    Ok(())
}

/// Shows the planned commands and writes the new ceremony file `out`.
fn write_new(ceremony: &CeremonyFile, out: &Path) -> Result<()> {
    print_commands(ceremony);
    tke_fs::atomic::create_private(out, ceremony.to_json().as_bytes())
        .with_context(|| format!("cannot write the ceremony file {}", out.display()))?;
    let rounds = ceremony.total_rounds();
    let then = if rounds > 1 {
        format!(" Its {rounds} rounds are approved and applied one after the other: each `tke apply` writes the next round into the file.")
    } else {
        String::new()
    };
    println!(
        "OK\nThe ceremony file {} is written. Each administrator approves it on their own workstation with `tke approve FILE --admin NAME`; then `tke apply FILE` sends it.{then}",
        out.display()
    );
    Ok(())
}

/// `tke plan CEREMONY …`.
fn plan_command(ctx: &Ctx, cmd: &PlanCmd) -> Result<()> {
    if let Some(done) = plan_instance(ctx, cmd) {
        return done;
    }
    let fleet = ctx.connect()?;
    let units = start(ctx, &fleet)?;
    let client = &fleet.client;
    let register = |action, out: &Out| {
        refuse_existing(&out.out)?;
        let planned = file::plan_register(client, action, units.clone(), None).map_err(hint)?;
        write_file(&fleet, planned, &out.out)
    };
    let (step, change, out): (&'static str, Change, &Path) = match cmd {
        PlanCmd::CryptounitMkCommit(out) => return register(RegisterAction::Commit, out),
        PlanCmd::CryptounitMkSetimm(out) => return register(RegisterAction::SetImmediate, out),
        PlanCmd::CryptounitMkClrnew(out) => return register(RegisterAction::ClearNew, out),
        PlanCmd::CryptounitMkClrcur(a) => {
            let plan = |g: &KeyStorageGuard| {
                file::plan_register(client, RegisterAction::ClearCurrent, units.clone(), Some(g))
            };
            let planned = destroying(ctx, &fleet, &units, Destruction::ClearCurrent, a, plan)?;
            return write_file(&fleet, planned, &a.out.out);
        }
        PlanCmd::CryptounitMkRotate(out) => {
            refuse_existing(&out.out)?;
            let ceremony = file::plan_rotate_loaded(client, units.clone()).map_err(plan_error)?;
            return write_new(&ceremony, &out.out);
        }
        PlanCmd::CryptounitZeroize(a) => {
            let plan = |g: &KeyStorageGuard| file::plan_zeroize(client, units.clone(), g);
            let planned = destroying(ctx, &fleet, &units, Destruction::Zeroize, a, plan)?;
            return write_file(&fleet, planned, &a.out.out);
        }
        PlanCmd::CryptounitThrhldSet(a) => {
            let say = |s: &str| println!("{s}");
            let (signature, revocation) = thresholds(ctx, a.sig_threshold, a.rev_threshold, &say)?;
            let change = Change::Thresholds {
                signature,
                revocation,
            };
            ("Setting signature thresholds", change, &a.out.out)
        }
        PlanCmd::CryptounitAdminAdd(a) => {
            let cert = match (&a.admin, &a.admin_cert) {
                (_, Some(path)) => read_certificate(path)?,
                (Some(name), None) => {
                    let entries = list(ctx)?;
                    let n = keynum_by_name(
                        ctx,
                        &entries,
                        name,
                        "or give its certificate with --admin-cert FILE",
                    )?;
                    entries[n - 1].certificate.clone()
                }
                (None, None) => bail!("give --admin NAME or --admin-cert FILE"),
            };
            ("Adding an administrator", Change::Add(cert), &a.out.out)
        }
        PlanCmd::CryptounitAdminRm(a) => {
            let admin = installed_named(&fleet.client, &units, &a.admin)?;
            (
                "Removing an administrator",
                Change::Remove(admin),
                &a.out.out,
            )
        }
        PlanCmd::AutoInit(_)
        | PlanCmd::CryptounitMkLoad(_)
        | PlanCmd::AutoMkRotate(_)
        | PlanCmd::AutoRecover(_) => return plan_instance(ctx, cmd).unwrap_or(Ok(())),
    };
    write_plan(&fleet, units, step, &change, out)
}

/// The ceremonies of a whole service instance, which take no selection: `None` when
/// `cmd` is not one of them.
fn plan_instance(ctx: &Ctx, cmd: &PlanCmd) -> Option<Result<()>> {
    Some(match cmd {
        PlanCmd::AutoInit(a) => plan_auto_init(ctx, a),
        PlanCmd::CryptounitMkLoad(a) => plan_mk_load(ctx, a),
        PlanCmd::AutoMkRotate(a) => plan_transfer(
            ctx,
            a.instance,
            &a.out,
            "rotate the master key of",
            file::plan_rotate,
        ),
        PlanCmd::AutoRecover(a) => {
            plan_transfer(ctx, a.copy.instance, &a.out, "recover", |c, i| {
                file::plan_recover(c, i, a.copy.source)
            })
        }
        _ => return None,
    })
}

/// Plans a ceremony that destroys a master key (`what`) with the key-storage guard:
/// `--force-with-keys`, or the instance id typed on a terminal, lets an instance through
/// and is recorded in the file.
fn destroying(
    ctx: &Ctx,
    fleet: &Fleet,
    units: &[&KnownUnit],
    what: Destruction,
    args: &PlanDestroy,
    plan: impl Fn(&KeyStorageGuard) -> Result<Option<CeremonyFile>, CeremonyError>,
) -> Result<Option<CeremonyFile>> {
    refuse_existing(&args.out.out)?;
    let mut guard = crate::guard::key_storage(ctx, &fleet.client, units, what, &args.force)?;
    let planned = plan(&guard);
    crate::guard::planned_again(ctx, &mut guard, what, planned, &plan)?.map_err(hint)
}

/// Plans `change` on `units` and writes the ceremony file `out` (a new file).
fn write_plan(
    fleet: &Fleet,
    units: Vec<&KnownUnit>,
    step: &'static str,
    change: &Change,
    out: &Path,
) -> Result<()> {
    refuse_existing(out)?;
    let planned =
        file::plan_admin_change(&fleet.client, step, units, change).map_err(signing::hint)?;
    write_file(fleet, planned, out)
}

/// Shows the planned file and writes it to `out` (a new file); `None`: nothing to do.
fn write_file(fleet: &Fleet, planned: Option<CeremonyFile>, out: &Path) -> Result<()> {
    let Some(ceremony) = planned else {
        println!("OK\nThe selected crypto units hold this already; no ceremony file was written.");
        return Ok(());
    };
    print_diff(&fleet.client, &ceremony)?;
    write_new(&ceremony, out)
}

/// The administrator installed under `name` on the units (one key), for a removal.
fn installed_named(
    client: &tke_client::Client,
    units: &[&tke_client::KnownUnit],
    name: &str,
) -> Result<AdminInfo> {
    let mut found: Vec<AdminInfo> = Vec::new();
    for s in parallel(units, |u| client.query(u)).into_iter().flatten() {
        for a in s.admins {
            if a.name.as_str() == name && !found.iter().any(|b| b.ski == a.ski) {
                found.push(a);
            }
        }
    }
    match found.as_slice() {
        [a] => Ok(a.clone()),
        [] => bail!("--admin {name:?}: no administrator of that name is installed in the selected crypto units (see `tke cryptounit-admins`); no ceremony file was written"),
        _ => bail!("--admin {name:?}: administrators with different keys have that name on the selected crypto units; select the units of one of them; no ceremony file was written"),
    }
}

/// An administrator certificate file, PEM or DER.
fn read_certificate(path: &Path) -> Result<AdminCertificate> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let cert = match std::str::from_utf8(&bytes) {
        Ok(text) if text.contains("-----BEGIN") => AdminCertificate::from_pem(text),
        _ => AdminCertificate::from_der(&bytes),
    };
    cert.with_context(|| format!("{} is not an administrator certificate", path.display()))
}

/// The plan as a difference, per unit, in the order of its commands (`+ admin carol`,
/// `- admin bob`, `~ signature threshold 2 → 3`).
fn print_diff(client: &tke_client::Client, ceremony: &CeremonyFile) -> Result<()> {
    let mut shown: Vec<tke_proto::UnitId> = Vec::new();
    for (_, c) in ceremony.commands() {
        if shown.contains(&c.unit()) {
            continue;
        }
        shown.push(c.unit());
        let Some(unit) = client.unit(&c.unit()) else {
            continue;
        };
        let mut status = client.query(unit)?;
        println!("crypto unit {}:", unit.num);
        for (_, d) in ceremony.commands().filter(|(_, d)| d.unit() == c.unit()) {
            match &d.command {
                Command::AddAdmin(cert) => println!("  + admin {}", cert.name()),
                Command::RemoveAdmin(ski) => {
                    let name = status
                        .admins
                        .iter()
                        .find(|a| a.ski == *ski)
                        .map_or_else(|| ski.short(), |a| a.name.to_string());
                    println!("  - admin {name}");
                    status.admins.retain(|a| a.ski != *ski);
                }
                Command::SetThresholds {
                    signature,
                    revocation,
                } => {
                    for (what, from, to) in [
                        ("signature threshold", status.sig_threshold, signature.get()),
                        (
                            "revocation signature threshold",
                            status.rev_threshold,
                            revocation.get(),
                        ),
                    ] {
                        if from != to {
                            println!("  ~ {what} {from} → {to}");
                        }
                    }
                    status.sig_threshold = signature.get();
                    status.rev_threshold = revocation.get();
                }
                other => println!("  ~ {}", file::describe(other)),
            }
        }
    }
    println!();
    Ok(())
}

/// Reads and checks a ceremony file.
fn read(path: &Path) -> Result<CeremonyFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the ceremony file {}", path.display()))?;
    CeremonyFile::from_json(&text).with_context(|| {
        format!(
            "the ceremony file {} is refused; nothing was signed or sent",
            path.display()
        )
    })
}

/// Every command of the file: round, unit, counter, what it does, who approved.
fn print_commands(ceremony: &CeremonyFile) {
    println!("{}", ceremony.title());
    let mut t = Table::new(&[
        "ROUND",
        "CRYPTO UNIT NUM",
        "CRYPTO UNIT ID",
        "COUNTER",
        "COMMAND",
        "APPROVED BY",
    ]);
    let total = ceremony.total_rounds();
    for (round, c) in ceremony.commands() {
        let by: Vec<AdminInfo> = c.approvals.iter().map(|a| a.admin()).collect();
        let applied = ceremony.rounds.get(round - 1).is_some_and(|r| r.applied);
        t.row(vec![
            if total > 1 {
                format!("{round}/{total}{}", if applied { " (applied)" } else { "" })
            } else {
                round.to_string()
            },
            c.num.to_string(),
            c.unit().uuid(),
            c.admin_command.counter.to_string(),
            c.summary(),
            if by.is_empty() {
                "(nobody yet)".to_owned()
            } else {
                signing::names(&by)
            },
        ]);
    }
    println!("{}", t.render());
    for f in &ceremony.force_with_keys {
        println!("WARNING: {f}.");
    }
    if !ceremony.force_with_keys.is_empty() {
        println!();
    }
}

/// `tke approve FILE --admin NAME` and `tke approve --merge OUT IN…`.
pub fn approve(ctx: &Ctx, args: &ApproveArgs) -> Result<()> {
    if let [out, inputs @ ..] = args.merge.as_slice() {
        let copies = inputs.iter().map(|p| read(p)).collect::<Result<Vec<_>>>()?;
        let merged = file::merge(copies).context("the copies are not merged")?;
        tke_fs::atomic::create_private(out, merged.to_json().as_bytes())
            .with_context(|| format!("cannot write {}", out.display()))?;
        print_commands(&merged);
        println!(
            "OK\nThe approvals of {} copies are in {}.",
            inputs.len(),
            out.display()
        );
        return Ok(());
    }
    let (Some(path), Some(name)) = (&args.file, &args.admin) else {
        bail!("give the ceremony FILE and --admin NAME, or --merge OUT IN IN…");
    };
    let mut ceremony = read(path)?;
    let entries = list(ctx)?;
    let n = keynum_by_name(
        ctx,
        &entries,
        name,
        "approve on the workstation that holds that administrator's key",
    )?;
    let entry = &entries[n - 1];
    print_commands(&ceremony);
    let Some(current) = ceremony.current_round() else {
        match ceremony.awaits_planner() {
            Some((round, next_by)) => println!(
                "OK\nThere is nothing to approve yet: round {round} is not made yet ({next_by}). The file is unchanged."
            ),
            None => println!(
                "OK\nEvery round of this file is applied; there is nothing to approve. It is unchanged."
            ),
        }
        return Ok(());
    };
    if ceremony.rounds[current]
        .commands
        .iter()
        .all(|c| c.approved_by(entry.ski))
    {
        let of = if ceremony.total_rounds() > 1 {
            format!("round {} of this file", current + 1)
        } else {
            "this file".to_owned()
        };
        println!(
            "OK\n{} ({}) approved every command of {of} already; it is unchanged.",
            entry.name,
            entry.ski.short(),
        );
        return Ok(());
    }
    let what = if ceremony.total_rounds() > 1 {
        format!(
            "every command of round {} of {} above",
            current + 1,
            ceremony.total_rounds()
        )
    } else {
        "every command above".to_owned()
    };
    if !ctx.prompt.confirm(
        &format!(
            "Sign {what} as administrator {} ({})?",
            entry.name,
            entry.ski.short()
        ),
        args.yes,
    )? {
        return Err(Cancelled.into());
    }
    let signer = ctx.open_signer(entry)?;
    let signed = ceremony.approve(signer.as_ref())?;
    tke_fs::atomic::write_private(path, ceremony.to_json().as_bytes())
        .with_context(|| format!("cannot write the ceremony file {}", path.display()))?;
    println!(
        "OK\n{} ({}) approved {signed} command(s); the approvals are in {}.",
        entry.name,
        entry.ski.short(),
        path.display()
    );
    Ok(())
}

/// `tke apply FILE`.
pub fn apply(ctx: &Ctx, args: &ApplyArgs) -> Result<()> {
    let mut ceremony = read(&args.file)?;
    let fleet = ctx.connect()?;
    if !ctx.json {
        print_commands(&ceremony);
    }
    if !ctx
        .prompt
        .confirm("Send these commands to the crypto units?", args.yes)?
    {
        return Err(Cancelled.into());
    }
    let parts = crate::guard::key_part_files(ctx)?;
    let mut guards = file::apply_guard(
        &fleet.client,
        &ceremony,
        &args.force.force_with_keys,
        &parts,
    )?;
    // On a terminal, an instance the file records as forced (its approvers were shown
    // the keys at stake) is let through once the operator types its id, as the direct
    // commands ask; without a terminal it takes --force-with-keys.
    if ctx.prompt.interactive() {
        for (what, guard) in &mut guards {
            crate::guard::typed(ctx, guard, *what, |r| {
                ceremony
                    .force_with_keys
                    .iter()
                    .any(|f| f.instance == r.instance.0)
            })?;
        }
    }
    // After each round: the units' answers and the next round, atomically, 0600.
    let path = args.file.clone();
    let mut save = |f: &CeremonyFile| tke_fs::atomic::write_private(&path, f.to_json().as_bytes());
    let applied = match file::apply_guarded(&fleet.client, &mut ceremony, &mut save, &guards) {
        Ok(a) => a,
        Err(ApplyError::ShortOfApprovals {
            round,
            rounds,
            applied,
            units,
        }) => {
            let mut text = applied_before(applied, round, rounds, &args.file, true);
            if rounds > 1 {
                text.push_str(&format!("round {round} of {rounds} needs approvals: "));
            }
            text.push_str(&shortfalls(&units));
            return Err(LacksApprovals(text).into());
        }
        Err(e @ ApplyError::Stale { .. }) => bail!(
            "{e}\nRe-plan: make a new ceremony file with `tke plan …` and have it approved again."
        ),
        Err(ApplyError::AwaitsPlanner {
            round,
            rounds,
            applied,
            next_by,
        }) => {
            let mut text = applied_before(applied, round, rounds, &args.file, false);
            text.push_str(&format!(
                "round {round} of {rounds} is not made yet: {next_by}; nothing further was sent."
            ));
            return Err(LacksApprovals(text).into());
        }
        Err(e @ ApplyError::Save { .. }) => {
            return Err(anyhow::Error::new(e).context(format!(
                "{}: the units ran the round, but their answers could not be written; nothing further was sent",
                args.file.display()
            )))
        }
        Err(ApplyError::Ceremony(e @ CeremonyError::Problems(_))) => {
            return Err(guard_refused(e, &ceremony))
        }
        Err(ApplyError::Ceremony(e)) => {
            return Err(signing::partly_failed(
                e,
                "Applying the ceremony file",
                "changed",
                "`tke cryptounit-admins` and `tke cryptounit-thrhlds`",
            ))
        }
        Err(e) => return Err(e.into()),
    };
    if ctx.json {
        let v: Vec<_> = applied
            .iter()
            .map(|a| {
                json!({
                    "round": a.round,
                    "num": a.num,
                    "already_applied": a.already,
                    "signed_by": a.signed_by.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&json!({ "units": v }))?);
        return Ok(());
    }
    let several = ceremony.total_rounds() > 1;
    for a in &applied {
        let round = if several {
            format!("Round {}, crypto unit", a.round)
        } else {
            "Crypto unit".to_owned()
        };
        if a.already {
            println!(
                "{round} {}: had run this command already; nothing was sent.",
                a.num
            );
        } else {
            println!(
                "{round} {}: signed by {}.",
                a.num,
                signing::names(&a.signed_by)
            );
        }
    }
    if applied.iter().all(|a| a.already) {
        println!("OK\nThe ceremony file was applied already; nothing was sent.");
        return Ok(());
    }
    println!(
        "OK\n{} is done on the crypto units of the file.",
        ceremony.title()
    );
    if let Some(vp) = ceremony.loaded_vp() {
        println!(
            "\nVERIFICATION PATTERN OF THE NEW MASTER KEY\n{}\n\nCommit it with `tke plan cryptounit-mk-commit` or `tke cryptounit-mk-commit`, then make it current (set immediate), or rotate to it.",
            crate::table::vp_lines(Some(&vp))
        );
    }
    Ok(())
}

/// `round k of n applied; …` when this run applied rounds before `round` (`next`: the
/// file holds `round` too), else nothing.
fn applied_before(applied: usize, round: usize, rounds: usize, file: &Path, next: bool) -> String {
    if applied == 0 {
        return String::new();
    }
    let with = if next {
        format!(" and round {round}")
    } else {
        String::new()
    };
    format!(
        "round {} of {rounds} applied; the units' answers{with} are in {}.\n",
        round - 1,
        file.display()
    )
}

/// A file the key-storage guard refused at apply time, with what to do: give the
/// instance the file records with --force-with-keys, or plan again.
fn guard_refused(e: CeremonyError, ceremony: &CeremonyFile) -> anyhow::Error {
    let recorded: Vec<&str> = ceremony
        .force_with_keys
        .iter()
        .map(|f| f.instance.as_str())
        .collect();
    let advice = if recorded.is_empty() {
        "The ceremony file was not planned with --force-with-keys: recover the master key elsewhere first (`tke auto-recover`), or plan the file again with --force-with-keys INSTANCE-ID so that its approvers see the keys at stake.".to_owned()
    } else {
        format!(
            "The ceremony file was planned with --force-with-keys {}: to destroy the master key anyway, apply it with the same --force-with-keys, or on a terminal and type the instance id when asked; for another instance, plan the file again.",
            recorded.join(", ")
        )
    };
    anyhow::anyhow!("{e}\n{advice}")
}

/// What each unit short of approvals still needs, and from whom.
fn shortfalls(units: &[Shortfall]) -> String {
    let mut text = format!(
        "{} crypto unit(s) lack approvals; nothing was sent to any crypto unit:",
        units.len()
    );
    for u in units {
        text.push_str(&format!(
            "\n  - crypto unit {}: {} more approval(s) needed ({} of the installed administrators); approved by: {}; may still approve: {}",
            u.num,
            u.missing(),
            u.needed,
            who(&u.approved),
            who(&u.may_approve),
        ));
        if !u.not_installed.is_empty() {
            text.push_str(&format!(
                "; not counted, not administrators of this crypto unit: {}",
                signing::names(&u.not_installed)
            ));
        }
    }
    text.push_str("\nHave them approve with `tke approve FILE --admin NAME`, merge copies with `tke approve --merge OUT IN…`, then apply again.");
    text
}

/// `alice, bob`, or `nobody`.
fn who(admins: &[AdminInfo]) -> String {
    if admins.is_empty() {
        "nobody".to_owned()
    } else {
        signing::names(admins)
    }
}
