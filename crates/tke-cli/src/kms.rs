//! `tke kms`: the key-management service of a service instance (root keys in its key
//! storage, data keys wrapped and unwrapped under them).

use std::{fs, path::PathBuf, sync::Arc};

use anyhow::{anyhow, bail, Context as _, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use tke_client::InstanceId;
use tke_keystore::{KeyId, KeyName};
use tke_kms::{KeyInfo, KeyService};
use zeroize::Zeroizing;

use crate::{context::Ctx, table::Table};

/// `tke kms` subcommands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Create root keys, generated inside a crypto unit of the instance
    ///
    /// Create a root key (or --count K keys named NAME-1 … NAME-K, in one batch),
    /// generated inside a crypto unit and stored wrapped under the master key. Prints
    /// each new key's id.
    Create(CreateArgs),
    /// List the root keys of the instance's key storage
    List(InstanceArg),
    /// Show one root key
    Show(KeyArgs),
    /// Delete a root key (data keys wrapped under it can no longer be unwrapped)
    Delete(KeyArgs),
    /// Wrap a data key under a root key, inside a crypto unit
    ///
    /// Wrap the data key in --in (8 to 4096 bytes, a multiple of 8) under a root key, inside a crypto
    /// unit, into a new file --out that `tke kms unwrap` reads.
    Wrap(FileArgs),
    /// Unwrap a data key that `tke kms wrap` wrapped, inside a crypto unit
    ///
    /// Unwrap the file --in that `tke kms wrap` wrote, with the root key it was wrapped
    /// under, into a new file --out (mode 0600).
    Unwrap(FileArgs),
}

/// `--instance`.
#[derive(Args, Debug)]
pub struct InstanceArg {
    /// The INSTANCE NUM of the service instance, as `tke cryptounits` lists the
    /// instances (1 for the first). May be left out when there is one instance.
    #[arg(long, value_name = "NUM",
          value_parser = |s: &str| crate::prompt::whole_number(s, "INSTANCE NUM"))]
    instance: Option<usize>,
}

/// `kms create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    #[command(flatten)]
    instance: InstanceArg,
    /// The key's name: 1 to 90 ASCII letters, digits, '.', '_' and '-', starting with a
    /// letter or digit. Names need not be unique.
    #[arg(long)]
    name: String,
    /// Create this many keys (1 to 100000) named NAME-1 … NAME-K, in one batch.
    #[arg(long, value_name = "K",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    count: Option<u32>,
}

/// `--instance` and `--key`.
#[derive(Args, Debug)]
pub struct KeyArgs {
    #[command(flatten)]
    instance: InstanceArg,
    /// The key's id (a UUID, as `tke kms list` shows it).
    #[arg(long, value_name = "ID")]
    key: String,
}

/// `--instance`, `--key`, `--in` and `--out`.
#[derive(Args, Debug)]
pub struct FileArgs {
    #[command(flatten)]
    key: KeyArgs,
    /// The file to read.
    #[arg(id = "in", long = "in", value_name = "FILE")]
    input: PathBuf,
    /// The file to write: a new file, never one that exists.
    #[arg(id = "out", long = "out", value_name = "FILE")]
    out: PathBuf,
}

/// Runs a `tke kms` command.
pub fn run(ctx: &Ctx, cmd: &Cmd) -> Result<()> {
    match cmd {
        Cmd::Create(a) => create(ctx, a),
        Cmd::List(a) => list(ctx, a),
        Cmd::Show(a) => show(ctx, a),
        Cmd::Delete(a) => delete(ctx, a),
        Cmd::Wrap(a) => wrap(ctx, a),
        Cmd::Unwrap(a) => unwrap(ctx, a),
    }
}

/// The key service of the instance `--instance` names.
fn service(ctx: &Ctx, arg: &InstanceArg) -> Result<Arc<dyn KeyService>> {
    let fleet = ctx.connect()?;
    let instances = fleet.client.instances();
    let instance: InstanceId = match (arg.instance, instances.as_slice()) {
        (_, []) => bail!("no service instance was found in the fleet"),
        (Some(n), all) if n >= 1 && n <= all.len() => all[n - 1].clone(),
        (Some(n), all) => bail!(
            "INSTANCE NUM {n} does not exist: there are {} service instance(s) (see `tke \
             cryptounits`)",
            all.len()
        ),
        (None, [one]) => one.clone(),
        (None, all) => bail!(
            "there are {} service instances: give --instance NUM (1 to {}, as `tke \
             cryptounits` lists them)",
            all.len(),
            all.len()
        ),
    };
    fleet
        .client
        .key_service(&instance)
        .with_context(|| format!("cannot open the key storage of service instance {instance}"))?
        .ok_or_else(|| {
            anyhow!(
                "service instance {instance} has no key storage reachable here: its crypto \
                 units are on several targets, or its target offers no key service"
            )
        })
}

fn key_id(text: &str) -> Result<KeyId> {
    KeyId::parse(text).map_err(|e| anyhow!("--key: {e}"))
}

fn key_json(k: &KeyInfo) -> Value {
    json!({
        "id": k.id.to_string(),
        "name": k.name.as_str(),
        "created": k.created.to_string(),
        "vp": k.vp.to_hex(),
    })
}

fn print_keys(ctx: &Ctx, keys: &[KeyInfo]) -> Result<()> {
    if ctx.json {
        let v: Vec<Value> = keys.iter().map(key_json).collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let mut t = Table::new(&["KEY ID", "NAME", "CREATED", "VERIFICATION PATTERN"]);
    for k in keys {
        t.row(vec![
            k.id.to_string(),
            k.name.to_string(),
            k.created.to_string(),
            crate::table::vp_lines(Some(&k.vp)),
        ]);
    }
    println!("{}", t.render());
    Ok(())
}

fn create(ctx: &Ctx, a: &CreateArgs) -> Result<()> {
    let name = KeyName::new(&a.name).map_err(|e| anyhow!("--name: {e}"))?;
    let kms = service(ctx, &a.instance)?;
    let keys = kms.create(&name, a.count.unwrap_or(1))?;
    if ctx.json {
        let v: Vec<Value> = keys
            .iter()
            .map(|k| json!({"id": k.id.to_string(), "name": k.name.as_str()}))
            .collect();
        let out = match (a.count, v.as_slice()) {
            (None, [one]) => one.clone(),
            _ => Value::Array(v),
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for k in &keys {
            println!("{}", k.id);
        }
    }
    Ok(())
}

fn list(ctx: &Ctx, a: &InstanceArg) -> Result<()> {
    let kms = service(ctx, a)?;
    print_keys(ctx, &kms.list()?)
}

fn show(ctx: &Ctx, a: &KeyArgs) -> Result<()> {
    let id = key_id(&a.key)?;
    let kms = service(ctx, &a.instance)?;
    let key = kms.show(&id)?;
    if ctx.json {
        println!("{}", serde_json::to_string_pretty(&key_json(&key))?);
        return Ok(());
    }
    print_keys(ctx, &[key])
}

fn delete(ctx: &Ctx, a: &KeyArgs) -> Result<()> {
    let id = key_id(&a.key)?;
    let kms = service(ctx, &a.instance)?;
    kms.delete(&id)?;
    if !ctx.json {
        println!("Key {id} was deleted.");
    }
    Ok(())
}

/// `wrap` or `unwrap`: reads `--in` (after checking that `--out` does not exist yet, so
/// that nothing is asked of a unit in vain), runs `op` with the key's service, writes its
/// result to the new file `--out` (0600, atomically).
fn transform(
    ctx: &Ctx,
    a: &FileArgs,
    done: &str,
    op: impl FnOnce(&dyn KeyService, &KeyId, &[u8]) -> Result<Zeroizing<Vec<u8>>, tke_kms::KmsError>,
) -> Result<()> {
    let id = key_id(&a.key.key)?;
    if a.out.exists() {
        bail!(
            "--out {} exists; give a new file (nothing is ever overwritten)",
            a.out.display()
        );
    }
    let input = Zeroizing::new(
        fs::read(&a.input).with_context(|| format!("cannot read --in {}", a.input.display()))?,
    );
    let kms = service(ctx, &a.key.instance)?;
    let output = op(kms.as_ref(), &id, &input)?;
    tke_fs::atomic::create_private(&a.out, &output)
        .with_context(|| format!("cannot write --out {}", a.out.display()))?;
    if !ctx.json {
        println!("The data key was {done} key {id} into {}.", a.out.display());
    }
    Ok(())
}

fn wrap(ctx: &Ctx, a: &FileArgs) -> Result<()> {
    transform(ctx, a, "wrapped under", |kms, id, data| {
        kms.wrap(id, data).map(Zeroizing::new)
    })
}

fn unwrap(ctx: &Ctx, a: &FileArgs) -> Result<()> {
    transform(ctx, a, "unwrapped with", |kms, id, wrapped| {
        kms.unwrap(id, wrapped)
    })
}
