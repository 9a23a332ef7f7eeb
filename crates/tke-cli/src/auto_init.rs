//! `auto-init`: initialize a service instance with recovery crypto units, interactive as
//! the vendor's, or scripted with one flag per prompt.

use std::io::Write as _;

use anyhow::{bail, Context as _, Result};
use serde_json::json;
use tke_ceremony::{AutoInit, Event, Progress};
use tke_proto::Threshold;
use tke_sigkey::Signer;

use crate::{
    context::Ctx,
    prompt::parse_numbers,
    sigkeys::{create_key, keynum_by_name, list, parse_name, print_table},
    table::Table,
};

/// The answers `auto-init` takes as flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The INSTANCE NUM of the service instance to initialize (as listed when there are
    /// several).
    #[arg(long, value_name = "NUM", allow_negative_numbers = true,
          value_parser = |s: &str| crate::prompt::whole_number(s, "INSTANCE NUM"))]
    pub instance: Option<usize>,
    /// Signatures required on commands (1-8; at least 2 for dual control).
    #[arg(long, value_name = "N")]
    pub sig_threshold: Option<u32>,
    /// Signatures required to remove an administrator (1-8).
    #[arg(long, value_name = "N")]
    pub rev_threshold: Option<u32>,
    /// Install the existing signature key of this administrator (repeatable).
    #[arg(long = "admin", value_name = "NAME")]
    pub admins: Vec<String>,
    /// Create a new signature key for this administrator and install it (repeatable).
    #[arg(long = "new-admin", value_name = "NAME")]
    pub new_admins: Vec<String>,
    /// Do not ask for confirmation before changing the crypto units.
    #[arg(long)]
    pub yes: bool,
}

/// Prints the vendor's progress lines of the auto-* ceremonies (nothing when `quiet`).
pub struct Printer {
    /// Print nothing (`--output json`).
    pub quiet: bool,
}

impl Progress for Printer {
    fn event(&self, e: &Event) {
        if self.quiet {
            return;
        }
        let line = match e {
            Event::ClearingImprintUnits { units } => {
                format!("Clearing {units} crypto unit(s) left half-initialized in imprint mode....")
            }
            Event::InstallingAdmin { index, total } => {
                format!("Installing {index} of {total} administrators....")
            }
            Event::SettingThresholds => "Setting signature thresholds....".to_owned(),
            Event::GeneratingMasterKey => "Generating a random master key value....".to_owned(),
            Event::TransferringMasterKey { index, total } => {
                format!("Transferring the master key value to {index} of {total} crypto units....")
            }
            _ => return,
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// The signature and revocation thresholds: from `--sig-threshold` and `--rev-threshold`,
/// else asked, with the vendor's heading and questions (`say` prints the explanations).
pub fn thresholds(
    ctx: &Ctx,
    sig: Option<u32>,
    rev: Option<u32>,
    say: &dyn Fn(&str),
) -> Result<(Threshold, Threshold)> {
    // The explanations go with the questions: a scripted run prints only what it does.
    let asked = sig.is_none() || rev.is_none();
    if asked {
        say("ENTER SIGNATURE THRESHOLD VALUES\n");
    }
    let ask = |n: Option<u32>, flag: &'static str, question: &str| match n {
        Some(n) => Threshold::new(n).context(flag),
        None => ctx.prompt.ask(question, &format!("{flag} N"), threshold),
    };
    let sig = ask(
        sig,
        "--sig-threshold",
        "Enter the number of signatures to be required on commands sent to the service instance.  This must be a number between 1 and 8.  To enforce dual control, this must be at least 2:",
    )?;
    if asked {
        say("");
    }
    let rev = ask(
        rev,
        "--rev-threshold",
        "Enter the number of signatures to be required on commands to remove an administrator.  This must be a number between 1 and 8.  To enforce dual control, this must be at least 2:",
    )?;
    Ok((sig, rev))
}

fn threshold(s: &str) -> Result<Threshold> {
    let n: u32 = s
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("{s:?} is not a number: enter a number between 1 and 8"))?;
    Ok(Threshold::new(n)?)
}

fn plural(n: usize, one: &str, many: &str) -> String {
    match n {
        0 => format!("no {many}"),
        1 => format!("one {one}"),
        n => format!("{n} {many}"),
    }
}

/// Runs `auto-init`.
pub fn run(ctx: &Ctx, args: &Args) -> Result<()> {
    let fleet = ctx.connect()?;
    // Which fleet this changes, first: the operator must see it before any question.
    if !ctx.json {
        crate::units::header(&fleet);
    }
    let client = &fleet.client;

    // 1. The instance.
    let instance = choose_instance(ctx, client, args.instance, "initialize")?;

    // Every unit of the instance must be in imprint mode: check before asking anything.
    tke_ceremony::auto_init::precheck(client, &instance)?;

    // 2. Thresholds.
    let quiet = ctx.json;
    let say = |s: &str| {
        if !quiet {
            println!("{s}");
        }
    };
    let (sig, rev) = thresholds(ctx, args.sig_threshold, args.rev_threshold, &say)?;
    let needed = usize::from(sig.get().max(rev.get()));

    // 3. How many administrators.
    let scripted = !args.admins.is_empty() || !args.new_admins.is_empty();
    let say_admins = |s: &str| {
        if !scripted {
            say(s);
        }
    };
    say_admins("\nENTER NUMBER OF ADMINISTRATORS TO INSTALL\n");
    say_admins("To initialize and maintain your crypto units, administrators must be installed. Each administrator has an associated signature key. Signature keys are stored in files protected by a password. To use the signature key, you must supply the password.\n");
    say_admins("To enforce dual control, each signature key file needs to be assigned to a different user and only that user needs to know the password.\n");
    say_admins(&format!(
        "You can install up to eight administrators in a crypto unit.  To set a signature threshold value of {sig} and a revocation signature threshold of {rev}, you must install at least {needed} administrator{}.\n",
        if needed == 1 { "" } else { "s" }
    ));
    let count = if scripted {
        let n = args.admins.len() + args.new_admins.len();
        if n > 8 {
            bail!("{n} administrators were given with --admin/--new-admin; a crypto unit holds at most 8");
        }
        if n < needed {
            bail!("{n} administrator(s) were given with --admin/--new-admin, but thresholds {sig}/{rev} need at least {needed}");
        }
        n
    } else {
        ctx.prompt.ask(
            "Enter the number of administrators you want to install:",
            "--admin NAME / --new-admin NAME",
            |s| {
                let n: usize = s
                    .trim()
                    .parse()
                    .map_err(|_| anyhow::anyhow!("{s:?} is not a number"))?;
                if n < needed || n > 8 {
                    bail!("the number of administrators must be between {needed} and 8");
                }
                Ok(n)
            },
        )?
    };

    // 4. Existing keys.
    let entries = list(ctx)?;
    let chosen: Vec<usize> = if scripted {
        let mut v = Vec::new();
        for name in &args.admins {
            v.push(keynum_by_name(
                ctx,
                &entries,
                name,
                "use --new-admin to create one",
            )?);
        }
        v
    } else if entries.is_empty() {
        Vec::new()
    } else {
        say("\nSELECT EXISTING SIGNATURE KEY FILES TO USE\n");
        say("The following signature key files were found on this workstation:\n");
        if !quiet {
            print_table(&entries, &[]);
        }
        say("\nEnter the KEYNUM of any existing signature key files you want to use to create administrators. If you don't want to use existing signature key files, press enter without entering any KEYNUM values.\n");
        say("If you want to use a combination of existing and new signature keys, enter the KEYNUM values of the existing signature key files you want to use.  You will be prompted to enter information for any new signature key files after that.\n");
        ctx.prompt.ask(
            "Enter the KEYNUM of the existing signature key files you want to use to create administrators:",
            "--admin NAME",
            |s| {
                let v = parse_numbers(s, entries.len(), "KEYNUM")?;
                if v.len() > count {
                    bail!("you asked for {count} administrators: select at most {count} keys");
                }
                Ok(v)
            },
        )?
    };
    let mut signers: Vec<Box<dyn Signer>> = Vec::new();
    for n in &chosen {
        signers.push(ctx.open_signer(&entries[n - 1])?);
    }

    // 5. New keys for the rest.
    let missing = count - signers.len();
    let taken: Vec<&tke_proto::AdminName> = entries.iter().map(|e| &e.name).collect();
    let new_names: Vec<tke_proto::AdminName> = if scripted {
        let mut v: Vec<tke_proto::AdminName> = Vec::new();
        for n in &args.new_admins {
            let name = parse_name(n).with_context(|| format!("--new-admin {n:?}"))?;
            if let Err(e) = check_new_name(&taken, &v, &name, scripted) {
                return Err(e.context(format!("--new-admin {n:?}")));
            }
            v.push(name);
        }
        v
    } else {
        // A taken or repeated name is asked again, keeping the answers given so far.
        let mut v: Vec<tke_proto::AdminName> = Vec::new();
        for i in 0..missing {
            let name = ctx.prompt.ask(
                &format!("\nEnter an administrator name for new signature key {} of {missing} (up to 30 characters):", i + 1),
                "--new-admin NAME",
                |s| {
                    let name = parse_name(s)?;
                    check_new_name(&taken, &v, &name, scripted)?;
                    Ok(name)
                },
            )?;
            v.push(name);
        }
        v
    };

    let existing = signers.len();
    say(&format!(
        "{}You asked to install {} and selected {} to use.  {}",
        if scripted { "" } else { "\n" },
        plural(count, "administrator", "administrators"),
        plural(
            existing,
            "existing signature key",
            "existing signature keys"
        ),
        match new_names.len() {
            0 => "No new signature key files will be created.".to_owned(),
            1 => "One new signature key file will be created.".to_owned(),
            n => format!("{n} new signature key files will be created."),
        }
    ));
    let units = client.instance_units(&instance);
    if !ctx.prompt.confirm(
        &format!(
            "\nInitialize service instance {instance} ({} crypto units) at {}?",
            units.len(),
            client.describe().join(", ")
        ),
        args.yes,
    )? {
        println!("Cancelled. No crypto unit was changed.");
        return Err(crate::Cancelled.into());
    }
    for n in &new_names {
        signers.push(Box::new(create_key(ctx, n)?));
    }
    say("");

    // 6. Plan (every check, before any change), then act.
    let admins: Vec<&dyn Signer> = signers.iter().map(|s| s.as_ref()).collect();
    let plan = AutoInit {
        instance: instance.clone(),
        sig_threshold: sig,
        rev_threshold: rev,
        admins,
    }
    .plan(client)?;
    // The vendor's auto-init selects the whole instance. Do it before acting, so that
    // after an interrupted run `cryptounit-compare` and `cryptounit-zeroize` address
    // exactly the units it touched.
    ctx.save_selected(&units)?;
    let report = plan.execute(&Printer { quiet })?;

    if ctx.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "instance": report.instance.0,
                "units": report.units,
                "generated_in": report.generated_in,
                "vp": report.vp.to_hex(),
                "admins": signers.iter().map(|s| json!({"name": s.name().as_str(), "ski": s.ski().to_hex()})).collect::<Vec<_>>(),
            }))?
        );
    } else {
        println!("\nOK\nThe selected service instance has been initialized.\nTo see what administrators are installed and what signature threshold and master key register values are set, use the 'tke cryptounit-compare' command.");
    }
    Ok(())
}

/// The service instance a command acts on: `--instance NUM` (its INSTANCE NUM), the only
/// one, or asked for from the `INSTANCE NUM | INSTANCE ID` table; `verb` completes "the
/// service instance you want to ...".
pub fn choose_instance(
    ctx: &Ctx,
    client: &tke_client::Client,
    arg: Option<usize>,
    verb: &str,
) -> Result<tke_client::InstanceId> {
    let instances = client.instances();
    if instances.is_empty() {
        bail!("No service instances were found in the fleet.");
    }
    Ok(match arg {
        Some(n) if n >= 1 && n <= instances.len() => instances[n - 1].clone(),
        Some(n) => bail!(
            "INSTANCE NUM {n} does not exist: there are {} service instance(s); nothing was changed",
            instances.len()
        ),
        None if instances.len() == 1 => instances[0].clone(),
        None => {
            println!("More than one service instance is assigned to the current resource group.\n");
            let mut t = Table::new(&["INSTANCE NUM", "INSTANCE ID"]);
            for (i, inst) in instances.iter().enumerate() {
                t.row(vec![(i + 1).to_string(), inst.to_string()]);
            }
            println!("{}", t.render());
            let n = ctx.prompt.ask(
                &format!("Enter the INSTANCE NUM of the service instance you want to {verb}."),
                "--instance NUM",
                |s| {
                    let v = parse_numbers(s, instances.len(), "INSTANCE NUM")?;
                    match v.as_slice() {
                        [n] => Ok(*n),
                        _ => bail!("enter one INSTANCE NUM"),
                    }
                },
            )?;
            instances[n - 1].clone()
        }
    })
}

/// Refuses a name for a new key that is the name of a key on the workstation (`--admin`
/// could not tell the two apart), was given for an earlier new key, or looks like either
/// (every unit would refuse the second administrator, 256/40, halfway through).
fn check_new_name(
    taken: &[&tke_proto::AdminName],
    earlier: &[tke_proto::AdminName],
    n: &tke_proto::AdminName,
    scripted: bool,
) -> Result<()> {
    if let Some(i) = taken.iter().position(|m| *m == n) {
        bail!(
            "the name {:?} is taken by signature key {} (see `tke sigkeys`): {}, or choose \
             another name",
            n.as_str(),
            i + 1,
            if scripted {
                format!("use `--admin {:?}` to reuse that key", n.as_str())
            } else {
                "select that key among the existing ones to reuse it".to_owned()
            }
        );
    }
    if earlier.contains(n) {
        bail!(
            "the name {:?} was given for another new key: choose another name",
            n.as_str()
        );
    }
    let others = taken.iter().copied().chain(earlier);
    if let Some(m) = others.filter(|m| *m != n).find(|m| m.looks_like(n)) {
        bail!(
            "the name {:?} looks the same as the administrator name {:?}: a crypto unit \
             installs no two administrators whose names look the same; choose a name that \
             looks different",
            n.as_str(),
            m.as_str()
        );
    }
    Ok(())
}
