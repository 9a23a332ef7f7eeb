//! Remote fleets: `tke-unitd` servers this workstation drives.
//!
//! `tke target add|list|rm` keep them in `<files-dir>/targets.toml` (written atomically,
//! mode 0600). For automation, `TKE_TARGETS` (URLs separated by spaces or commas) with
//! `TKE_CA_FILE` and `TKE_API_KEY_FILE` replaces that file for one run. With no target at
//! all, commands use the embedded fleet.
//!
//! Network failures are reported in the vendor's style: what failed, `Status code:`,
//! `Message:`, and advice by status code.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tke_ceremony::{CeremonyError, Problem};
use tke_client::{ApiKey, Client, ClientError, HttpsError, HttpsTransport, InstanceId, Transport};
use tke_proto::{CaCertificate, ProtoError, UnitId};
use tke_workstation::FilesDir;

use crate::{
    context::{Ctx, Fleet},
    table::Table,
};

/// The file of targets in the workstation directory.
pub const TARGETS_FILE: &str = "targets.toml";
/// URLs of the targets of one run (automation).
pub const ENV_TARGETS: &str = "TKE_TARGETS";
/// The fleet CA file of the `TKE_TARGETS` servers.
pub const ENV_CA_FILE: &str = "TKE_CA_FILE";
/// The API key file of the `TKE_TARGETS` servers.
pub const ENV_API_KEY_FILE: &str = "TKE_API_KEY_FILE";

/// One server: where it is, the CA that certifies it and its units, and the API key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// The target's name on this workstation.
    pub name: String,
    /// `https://HOST:PORT`.
    pub url: String,
    /// The fleet CA certificate (PEM), pinned for TLS and for device certificates.
    pub ca: PathBuf,
    /// The file holding the API key (mode 0600).
    pub api_key_file: PathBuf,
    /// Only this service instance (default: every instance the key opens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetsFile {
    version: u32,
    #[serde(default, rename = "target")]
    targets: Vec<Target>,
}

/// Where the targets of this run come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// `targets.toml`.
    File(PathBuf),
    /// `TKE_TARGETS`.
    Env,
}

/// The arguments of `tke target add`.
#[derive(clap::Args, Debug)]
pub struct AddArgs {
    /// A name for the server (letters, digits, '.', '_', '-'; up to 32).
    pub name: String,
    /// Its URL, https://HOST:PORT (as `tke-unitd init` prints it).
    pub url: String,
    /// The fleet CA certificate file (the server's ca.pem).
    #[arg(long, value_name = "FILE")]
    pub ca: PathBuf,
    /// The file holding the service instance's API key (mode 0600).
    #[arg(long, value_name = "FILE")]
    pub api_key_file: PathBuf,
    /// Use only this service instance of the server (default: every instance the key opens).
    #[arg(long, value_name = "UUID")]
    pub instance: Option<String>,
    /// Do not contact the server now (to add one that is down on purpose); the files and
    /// the URL are still checked.
    #[arg(long)]
    pub no_check: bool,
}

fn path_of(files: &FilesDir) -> PathBuf {
    files.path().join(TARGETS_FILE)
}

/// The targets in `targets.toml` (none when it does not exist).
pub fn load(files: &FilesDir) -> Result<Vec<Target>> {
    let path = path_of(files);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let file: TargetsFile = toml::from_str(&text)
        .with_context(|| format!("the targets file {} is not valid", path.display()))?;
    if file.version != 1 {
        bail!(
            "the targets file {} has version {}, which this tke does not know",
            path.display(),
            file.version
        );
    }
    Ok(file.targets)
}

fn save(files: &FilesDir, targets: &[Target]) -> Result<()> {
    let path = path_of(files);
    let text = toml::to_string_pretty(&TargetsFile {
        version: 1,
        targets: targets.to_vec(),
    })
    .context("cannot encode the targets")?;
    let text = format!("# tke targets: tke-unitd servers. Edit with `tke target add|rm`.\n{text}");
    tke_fs::atomic::write_private(&path, text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The targets of this run: `TKE_TARGETS` if set, else `targets.toml`.
pub fn active(files: &FilesDir) -> Result<(Vec<Target>, Origin)> {
    active_with_env(files, |k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

fn active_with_env(
    files: &FilesDir,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(Vec<Target>, Origin)> {
    let Some(urls) = env(ENV_TARGETS) else {
        return Ok((load(files)?, Origin::File(path_of(files))));
    };
    let need = |k: &str| {
        env(k).map(PathBuf::from).with_context(|| {
            format!("{ENV_TARGETS} is set: also set {ENV_CA_FILE} to the fleet CA file and {ENV_API_KEY_FILE} to the API key file")
        })
    };
    let (ca, key) = (need(ENV_CA_FILE)?, need(ENV_API_KEY_FILE)?);
    let targets: Vec<Target> = urls
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|u| !u.is_empty())
        .enumerate()
        .map(|(i, url)| Target {
            name: format!("env-{}", i + 1),
            url: url.to_owned(),
            ca: ca.clone(),
            api_key_file: key.clone(),
            instance: None,
        })
        .collect();
    if targets.is_empty() {
        bail!("{ENV_TARGETS} is set but names no URL");
    }
    Ok((targets, Origin::Env))
}

fn read_ca(path: &Path) -> Result<CaCertificate> {
    let pem = fs::read_to_string(path)
        .with_context(|| format!("cannot read the CA file {}", path.display()))?;
    CaCertificate::from_pem(&pem)
        .with_context(|| format!("the CA file {} cannot be used", path.display()))
}

fn transport(t: &Target) -> Result<HttpsTransport> {
    let ca = read_ca(&t.ca).with_context(|| format!("target {}", t.name))?;
    let key = ApiKey::from_file(&t.api_key_file).with_context(|| format!("target {}", t.name))?;
    let mut tr = HttpsTransport::new(&t.name, &t.url, &ca, key)
        .with_context(|| format!("target {}", t.name))?;
    if let Some(i) = &t.instance {
        tr = tr.for_instance(InstanceId(i.clone()));
    }
    Ok(tr)
}

/// Connects a client to every target. Units are numbered over all of them, as the vendor
/// numbers the units of every instance with one sequence.
pub fn connect(targets: &[Target]) -> Result<Fleet> {
    let mut endpoints: Vec<(Arc<dyn Transport>, CaCertificate)> = Vec::new();
    for t in targets {
        let tr = transport(t)?;
        let ca = read_ca(&t.ca)?;
        endpoints.push((Arc::new(tr), ca));
    }
    let client = match Client::connect(endpoints) {
        Err(ClientError::DuplicateUnit { unit, .. }) => bail!(
            "crypto unit {} is listed by more than one target: remove the duplicate target with `tke target rm` (see `tke target list`)",
            unit.uuid()
        ),
        Err(e @ ClientError::DisagreesWithCertificate { .. }) => {
            return Err(anyhow::Error::new(e).context(
                "a target misreports its crypto units: nothing was sent to any unit; check the targets (`tke target list`) and who runs their servers",
            ))
        }
        other => other?,
    };
    Ok(Fleet { client })
}

/// As [`connect`], leaving out the targets that cannot be reached or refuse us, for the
/// commands that only read: they show what they can and name the rest. Returns the fleet
/// of the reachable targets and, per unreachable target, its name and the error. Fails
/// only when no target can be reached (with the first target's error).
pub fn connect_reachable(targets: &[Target]) -> Result<(Fleet, Vec<(String, anyhow::Error)>)> {
    let mut reachable = Vec::new();
    let mut down = Vec::new();
    for t in targets {
        match connect(std::slice::from_ref(t)) {
            Ok(_) => reachable.push(t.clone()),
            Err(e) => down.push((t.name.clone(), e)),
        }
    }
    if reachable.is_empty() && !down.is_empty() {
        return Err(down.swap_remove(0).1);
    }
    Ok((connect(&reachable)?, down))
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn absolute(p: &Path) -> PathBuf {
    fs::canonicalize(p).unwrap_or_else(|_| std::path::absolute(p).unwrap_or_else(|_| p.into()))
}

/// `tke target add`.
pub fn add(ctx: &Ctx, a: &AddArgs) -> Result<()> {
    if !valid_name(&a.name) {
        bail!(
            "{:?} is not a valid target name: use 1 to 32 letters, digits, '.', '_' or '-'",
            a.name
        );
    }
    if let Some(i) = &a.instance {
        if UnitId::from_uuid(i).is_err() {
            bail!("--instance {i:?} is not a service instance id (a UUID)");
        }
    }
    let mut targets = load(&ctx.files)?;
    if targets.iter().any(|t| t.name == a.name) {
        bail!(
            "a target named {} already exists; remove it first with `tke target rm {}`",
            a.name,
            a.name
        );
    }
    let mut t = Target {
        name: a.name.clone(),
        url: a.url.clone(),
        ca: absolute(&a.ca),
        api_key_file: absolute(&a.api_key_file),
        instance: a.instance.clone(),
    };
    // Check every file and the URL now, so that mistakes show at once.
    let tr = transport(&t)?;
    t.url = tr.url().to_owned();
    // And the server, the CA and the API key together: a wrong one is refused here rather
    // than found at the next ceremony.
    if !a.no_check {
        if let Err(e) = connect(std::slice::from_ref(&t)) {
            // The advice must not point at `tke target list`: the target is not in it yet.
            let why = explain(&e, None)
                .unwrap_or_else(|| format!("{e:#}"))
                .replace(" (`tke target list`)", "");
            // Only a server that does not answer may be added unchecked; a wrong CA or API
            // key is never worth adding.
            let down = e.chain().any(|c| {
                matches!(
                    c.downcast_ref::<ClientError>().and_then(network),
                    Some((
                        ..,
                        HttpsError::Resolve { .. }
                            | HttpsError::Connect { .. }
                            | HttpsError::Timeout { .. }
                    ))
                )
            });
            if down {
                bail!("{why}\nThe target was not added. To add a server that is down on purpose, run the same command with --no-check.");
            }
            bail!("{why}\nThe target was not added.");
        }
    }
    targets.push(t);
    save(&ctx.files, &targets)?;
    print_targets(ctx, &targets, &Origin::File(path_of(&ctx.files)))?;
    if !ctx.json {
        println!("OK");
    }
    Ok(())
}

/// `tke target rm`.
pub fn rm(ctx: &Ctx, name: &str) -> Result<()> {
    let mut targets = load(&ctx.files)?;
    if !targets.iter().any(|t| t.name == name) {
        let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
        let names = if names.is_empty() {
            "there are none".to_owned()
        } else {
            names.join(", ")
        };
        bail!("there is no target named {name:?} (targets: {names}); nothing was changed");
    }
    targets.retain(|t| t.name != name);
    save(&ctx.files, &targets)?;
    print_targets(ctx, &targets, &Origin::File(path_of(&ctx.files)))?;
    if !ctx.json {
        println!("OK");
    }
    Ok(())
}

/// `tke target list`.
pub fn list(ctx: &Ctx) -> Result<()> {
    let (targets, origin) = active(&ctx.files)?;
    print_targets(ctx, &targets, &origin)
}

fn print_targets(ctx: &Ctx, targets: &[Target], origin: &Origin) -> Result<()> {
    if ctx.json {
        let v: Vec<_> = targets
            .iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "url": t.url,
                    "ca": t.ca.display().to_string(),
                    "api_key_file": t.api_key_file.display().to_string(),
                    "instance": t.instance,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    match origin {
        Origin::File(p) => println!("Targets in {}:\n", p.display()),
        Origin::Env => println!("Targets from {ENV_TARGETS} (targets.toml is not used):\n"),
    }
    if targets.is_empty() {
        println!("No targets: commands use the embedded fleet. Add a tke-unitd server with `tke target add NAME URL --ca FILE --api-key-file FILE`.");
        return Ok(());
    }
    let mut t = Table::new(&["NAME", "URL", "CA FILE", "API KEY FILE", "INSTANCE"]);
    for x in targets {
        t.row(vec![
            x.name.clone(),
            x.url.clone(),
            x.ca.display().to_string(),
            x.api_key_file.display().to_string(),
            x.instance.clone().unwrap_or_else(|| "(all)".into()),
        ]);
    }
    print!("{}", t.render());
    Ok(())
}

fn advice(status: u16) -> &'static str {
    match status {
        401 => "The API key was refused: it is not valid for this server, or it was replaced. Check the target's API key file (`tke target list`) and get the service instance's key from the server's operator.",
        403 => "The API key does not give access to this service instance. Use the key of the instance you want (`tke target add ... --api-key-file FILE`), or drop --instance from the target.",
        404 => "The service instance or crypto unit was not found on this server. Check the target's URL and instance (`tke target list`) and list the crypto units with `tke cryptounits`.",
        500..=599 => "The service is unavailable. Try again later; if it persists, check the server's logs.",
        _ => "The server refused the request. tke and tke-unitd may be of different versions.",
    }
}

/// The vendor-style explanation of one network failure.
fn explain_network(
    target: &str,
    url: &str,
    unit: Option<UnitId>,
    source: &HttpsError,
    targets: &[Target],
) -> String {
    let mut lines = vec![match unit {
        None => "Error querying crypto units.".to_owned(),
        Some(u) => format!(
            "Error sending a request to crypto unit {} of the target service instance.",
            u.uuid()
        ),
    }];
    lines.push(format!("Target: {target} ({url})"));
    let t = targets.iter().find(|t| t.name == target);
    match source {
        HttpsError::Status {
            status, message, ..
        } => {
            lines.push(format!("Status code: {status}"));
            lines.push(format!("Message: {message}"));
            lines.push(advice(*status).to_owned());
        }
        HttpsError::UntrustedServer { source } => {
            let ca = t
                .map(|t| t.ca.display().to_string())
                .unwrap_or_else(|| "the target's CA file".into());
            lines.push(format!(
                "The server's TLS certificate was not issued by the pinned CA ({ca}), or does not name this host: {source}."
            ));
            lines.push("The server may not be the one you meant: check the target's URL and --ca file (`tke target list`). Nothing was sent.".into());
        }
        HttpsError::Connect { source, .. } | HttpsError::Resolve { source, .. } => {
            lines.push(format!("Cannot connect: {source}."));
            lines.push("Check that tke-unitd is running there and that the URL is right (`tke target list`).".into());
        }
        other => {
            lines.push(format!("{}.", tke_proto::ErrorChain(other)));
            if unit.is_some() && other.may_have_reached_server() {
                lines.push("The request may or may not have run on the crypto unit: check with `tke cryptounit-compare` before you try again.".into());
            } else {
                lines.push("Try again; if it persists, check the server and the network.".into());
            }
        }
    }
    lines.join("\n")
}

fn network(e: &ClientError) -> Option<(&str, &str, Option<UnitId>, &HttpsError)> {
    match e {
        ClientError::Network {
            target,
            url,
            unit,
            source,
        } => Some((target, url, *unit, source.as_ref())),
        _ => None,
    }
}

/// Explains an error in the vendor's style when a network failure is behind it, and says
/// what to upgrade when a unit speaks another protocol version; `None` for other errors
/// (they print as they are).
pub fn explain(err: &anyhow::Error, files: Option<&FilesDir>) -> Option<String> {
    let targets = files
        .and_then(|f| active(f).ok())
        .map(|(t, _)| t)
        .unwrap_or_default();
    for cause in err.chain() {
        if let Some(ProtoError::ProtocolVersion {
            found, expected, ..
        }) = cause.downcast_ref::<ProtoError>()
        {
            let older = if found < expected { "tke-unitd" } else { "tke" };
            return Some(format!(
                "{err:#}\nThis tke and the unit's server speak different protocol versions: upgrade {older}, so that the workstations and every server of an instance run the same release."
            ));
        }
        if let Some((target, url, unit, source)) =
            cause.downcast_ref::<ClientError>().and_then(network)
        {
            return Some(explain_network(target, url, unit, source, &targets));
        }
        if let Some(c) = cause.downcast_ref::<CeremonyError>() {
            let unreachable = match c {
                CeremonyError::Problems(ps) => ps.iter().any(|p| {
                    matches!(p, Problem::Unreachable { source, .. } if network(source).is_some())
                }),
                CeremonyError::Step { failures, .. } => {
                    failures.iter().any(|(_, e)| network(e).is_some())
                }
                _ => false,
            };
            if unreachable {
                return Some(format!(
                    "{}\nSome crypto units could not be reached. A command may or may not have run on them: check every unit with `tke cryptounit-compare` before you go on (the README explains how to finish an interrupted initialization).",
                    crate::report::chain(err)
                ));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn environment_targets() {
        let d = tempfile::tempdir().unwrap();
        let files = FilesDir::resolve(Some(d.path())).unwrap();
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let (t, o) = active_with_env(&files, env(&[])).unwrap();
        assert!(t.is_empty());
        assert!(matches!(o, Origin::File(_)));
        let err = active_with_env(&files, env(&[(ENV_TARGETS, "https://a:1")])).unwrap_err();
        assert!(err.to_string().contains(ENV_CA_FILE), "{err}");
        let (t, o) = active_with_env(
            &files,
            env(&[
                (ENV_TARGETS, "https://a:1, https://b:2"),
                (ENV_CA_FILE, "/ca.pem"),
                (ENV_API_KEY_FILE, "/key"),
            ]),
        )
        .unwrap();
        assert_eq!(o, Origin::Env);
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].name, "env-2");
        assert_eq!(t[1].url, "https://b:2");
    }

    #[test]
    fn names() {
        assert!(valid_name("zone-a.1_x"));
        for bad in ["", "a b", "a/b", &"x".repeat(33)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
