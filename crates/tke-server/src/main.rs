//! `tke-unitd`: serves TKE crypto units over HTTPS.
//!
//! Exit codes: 0 success (and a graceful stop), 1 failure, 2 usage error.
#![forbid(unsafe_code)]

use std::{
    io::IsTerminal as _,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand, ValueEnum};
use signal_hook::{
    consts::{SIGINT, SIGTERM},
    iterator::Signals,
};
use tke_pkcs8::Password;
use tke_server::{
    config::{StateStoreKind, CONFIG_FILE},
    Config, InitOptions, InitReport, Server,
};

/// Serves TKE crypto units of one or more service instances over HTTPS.
#[derive(Parser, Debug)]
#[command(name = "tke-unitd", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum LogFormat {
    /// `key=value` text lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create the crypto units this server hosts, their device certificates, a TLS
    /// certificate and the API keys, and write DIR/unitd.toml. Makes a new fleet CA
    /// (its key encrypted in DIR/ca.key.pem) unless --ca-dir names one.
    Init(InitArgs),
    /// Join a server to an existing fleet without its CA key: first `--request FILE`
    /// (make the units' device keys and the TLS key, write the certificate request), then,
    /// once the CA holder has run `ca-sign`, `--certificates FILE` (install them).
    Join(JoinArgs),
    /// Issue, with the fleet CA, the certificates a join request asks for.
    CaSign(CaSignArgs),
    /// Serve the units of a configuration until SIGTERM or SIGINT.
    Serve {
        /// The configuration file (DIR/unitd.toml).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Log format (on standard error).
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
        /// Least severe level logged. `info` logs one line per request.
        #[arg(long, value_enum, default_value_t = LogLevel::Info)]
        log_level: LogLevel,
        /// Test and benchmark tooling, never for production: every crypto unit waits MS
        /// milliseconds (0-10000) before answering each request, standing in for a real
        /// HSM's round trip. Overrides `latency_ms` of the configuration; 0 turns it off.
        #[arg(long = "latency-ms", value_name = "MS")]
        latency: Option<tke_unit::Latency>,
        /// How each unit's state is made durable before it answers: `journal` (one
        /// journal for all units, the commands of several units made durable by one
        /// fdatasync, compacted into the unit files) or `file` (each unit's unit.json
        /// rewritten atomically). Overrides `state_store` of the configuration (default:
        /// journal).
        #[arg(long = "state-store", value_enum, value_name = "KIND")]
        state_store: Option<StoreArg>,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum StoreArg {
    /// One journal with group commit.
    Journal,
    /// One file per unit.
    File,
}

#[derive(clap::Args, Debug)]
struct LayoutArgs {
    /// Service instances (1-16). Default: the number of --instance-id values, else 1.
    #[arg(long, value_name = "N")]
    instances: Option<u32>,
    /// Operational crypto units per instance on this server (0-6).
    #[arg(long, default_value_t = 2, value_name = "N")]
    operational: u32,
    /// Recovery crypto units per instance on this server (0-2).
    #[arg(long, default_value_t = 2, value_name = "N")]
    recovery: u32,
    /// Failover crypto units per instance on this server (0-3).
    #[arg(long, default_value_t = 0, value_name = "N")]
    failover: u32,
    /// The zone named in the units' locations.
    #[arg(long, default_value = "zone-1", value_name = "NAME")]
    zone: String,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:8443", value_name = "ADDR:PORT")]
    listen: SocketAddr,
    /// Add the units to this existing service instance (repeatable, one per instance),
    /// or `@FILE` to read the ids from a file such as another server's DIR/instance-id.
    #[arg(long = "instance-id", value_name = "UUID|@FILE")]
    instance_ids: Vec<String>,
    /// The instance's API key file: reused when it exists (servers of one instance then
    /// share one key), created otherwise. Default: DIR/api-key.
    #[arg(long, value_name = "FILE")]
    api_key_file: Option<PathBuf>,
    /// A DNS name or IP address for the TLS certificate besides the listen address
    /// (repeatable). Loopback names (127.0.0.1, ::1, localhost) are named only when
    /// given here.
    #[arg(long = "tls-name", value_name = "NAME")]
    tls_names: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct InitArgs {
    /// The server's directory (created; must be absent or empty).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    #[command(flatten)]
    layout: LayoutArgs,
    /// Issue the certificates from this existing fleet CA (a directory with ca.pem and
    /// the encrypted ca.key.pem) instead of making a new CA.
    #[arg(long, value_name = "DIR")]
    ca_dir: Option<PathBuf>,
    /// The fleet CA key's passphrase, on the first line of FILE (mode 0600). Default:
    /// asked on the terminal.
    #[arg(long, value_name = "FILE")]
    ca_passphrase_file: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct JoinArgs {
    /// The server's directory (--request: created, must be absent or empty;
    /// --certificates: the directory --request made).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    #[command(flatten)]
    layout: LayoutArgs,
    /// The fleet CA certificate (ca.pem of the first server) the certificates must come from.
    #[arg(long, value_name = "FILE", required_unless_present = "certificates")]
    ca: Option<PathBuf>,
    /// Write the certificate request to FILE (PEM) for the CA holder's `ca-sign`.
    #[arg(long, value_name = "FILE", required_unless_present = "certificates")]
    request: Option<PathBuf>,
    /// Install the certificates `ca-sign` issued for this server's request.
    #[arg(long, value_name = "FILE", conflicts_with_all = [
        "request", "ca", "instances", "operational", "recovery", "failover", "zone",
        "listen", "instance_ids", "api_key_file", "tls_names",
    ])]
    certificates: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct CaSignArgs {
    /// The directory of the fleet CA (ca.pem and the encrypted ca.key.pem), such as the
    /// first server's directory.
    #[arg(long, value_name = "DIR")]
    ca_dir: PathBuf,
    /// The join request (`tke-unitd join --request` wrote it).
    #[arg(long, value_name = "FILE")]
    request: PathBuf,
    /// Where to write the certificates (created; never overwritten).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// The fleet CA key's passphrase, on the first line of FILE (mode 0600). Default:
    /// asked on the terminal.
    #[arg(long, value_name = "FILE")]
    ca_passphrase_file: Option<PathBuf>,
}

/// The fleet CA key's passphrase: from the file, else from the terminal (twice for a new
/// key), else an error naming the flag.
fn ca_passphrase(file: Option<&Path>, new_key: bool) -> Result<Password> {
    if let Some(f) = file {
        return Ok(tke_server::ca::read_passphrase_file(f)?);
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "the fleet CA key needs its passphrase and there is no terminal to ask it on: \
             give --ca-passphrase-file FILE (mode 0600)"
        );
    }
    let p = Password::new(
        rpassword::prompt_password("Fleet CA key passphrase: ")
            .context("reading the passphrase")?,
    );
    if p.is_empty() {
        bail!("the fleet CA key needs a passphrase that is not empty");
    }
    if new_key {
        let again = rpassword::prompt_password("Repeat it: ").context("reading the passphrase")?;
        if again != p.expose_secret() {
            bail!("the two passphrases differ");
        }
    }
    Ok(p)
}

fn layout_options(dir: PathBuf, a: LayoutArgs, ca_dir: Option<PathBuf>) -> Result<InitOptions> {
    let mut ids = Vec::new();
    for v in &a.instance_ids {
        match v.strip_prefix('@') {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the instance ids in {path}"))?;
                ids.extend(
                    text.lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(str::to_owned),
                );
            }
            None => ids.push(v.clone()),
        }
    }
    Ok(InitOptions {
        dir,
        instances: a.instances,
        operational: a.operational,
        recovery: a.recovery,
        failover: a.failover,
        zone: a.zone,
        ca_dir,
        listen: a.listen,
        instance_ids: ids,
        api_key_file: a.api_key_file,
        tls_names: a.tls_names,
    })
}

fn print_units(r: &InitReport) {
    let mut instances: Vec<&str> = Vec::new();
    for u in &r.units {
        if !instances.contains(&u.instance.as_str()) {
            instances.push(&u.instance);
        }
    }
    for inst in &instances {
        println!("SERVICE INSTANCE: {inst}");
        for u in r.units.iter().filter(|u| u.instance == *inst) {
            println!(
                "  {:<12} {}   {}",
                u.unit_type.label(),
                u.id.uuid(),
                u.location
            );
        }
    }
    println!();
}

fn print_api_keys(r: &InitReport) {
    for k in &r.api_keys {
        println!(
            "API key file:     {} (service instance {}{})",
            k.path.display(),
            k.instance,
            if k.created { "" } else { ", reused" }
        );
    }
}

fn join(a: JoinArgs) -> Result<()> {
    if let Some(certs) = a.certificates {
        let r = tke_server::join_install(&a.dir, &certs)?;
        print_units(&r);
        println!("Configuration:    {}", r.config.display());
        println!("Endpoint:         {}", r.endpoint);
        println!();
        println!(
            "Start the server:  tke-unitd serve --config {}",
            r.config.display()
        );
        return Ok(());
    }
    let (Some(ca), Some(request)) = (a.ca, a.request) else {
        bail!("give --ca FILE and --request FILE, or --certificates FILE");
    };
    let opts = layout_options(a.dir, a.layout, None)?;
    let r = tke_server::join_request(&opts, &ca, &request)?;
    print_units(&r.server);
    println!("Request:          {}", r.request.display());
    println!("Request SHA-256:  {}", r.request_sha256);
    print_api_keys(&r.server);
    println!();
    println!(
        "Next: the fleet CA holder runs  tke-unitd ca-sign --ca-dir CA_DIR --request {} --out FILE",
        r.request.display()
    );
    println!(
        "      (checking the SHA-256 above), then here:  tke-unitd join --dir {} --certificates FILE",
        opts.dir.display()
    );
    Ok(())
}

fn ca_sign(a: CaSignArgs) -> Result<()> {
    let passphrase = ca_passphrase(a.ca_passphrase_file.as_deref(), false)?;
    let r = tke_server::ca::sign_request(&a.ca_dir, &passphrase, &a.request, &a.out)?;
    println!("Request SHA-256:  {}", r.request_sha256);
    println!("TLS names:        {}", r.request.tls_names.join(" "));
    for u in &r.request.units {
        println!(
            "  {:<12} {}   service instance {}",
            u.unit_type.label(),
            u.id.uuid(),
            u.instance
        );
    }
    println!("Certificates:     {}", r.out.display());
    Ok(())
}

fn init(a: InitArgs) -> Result<()> {
    let new_key = a.ca_dir.is_none();
    let opts = layout_options(a.dir, a.layout, a.ca_dir)?;
    tke_server::init::check_target(&opts.dir)?;
    let passphrase = ca_passphrase(a.ca_passphrase_file.as_deref(), new_key)?;
    let r = tke_server::init(&opts, &passphrase)?;
    print_units(&r);
    println!("Configuration:    {}", r.config.display());
    println!(
        "CA file:          {}{}",
        r.ca.display(),
        if r.new_ca {
            " (a new fleet CA; its key, encrypted, is ca.key.pem beside it: serve never needs it, keep it offline)"
        } else {
            ""
        }
    );
    print_api_keys(&r);
    println!("Instance id file: {}", r.instance_id_file.display());
    println!("Endpoint:         {}", r.endpoint);
    println!();
    println!(
        "Start the server:  tke-unitd serve --config {}",
        r.config.display()
    );
    if let Some(k) = r.api_keys.first() {
        println!(
            "Add it to tke:     tke target add NAME {} --ca {} --api-key-file {}",
            r.endpoint,
            r.ca.display(),
            k.path.display()
        );
    }
    Ok(())
}

fn serve(
    config: PathBuf,
    format: LogFormat,
    level: LogLevel,
    latency: Option<tke_unit::Latency>,
    state_store: Option<StoreArg>,
) -> Result<()> {
    let level = match level {
        LogLevel::Error => tracing::Level::ERROR,
        LogLevel::Warn => tracing::Level::WARN,
        LogLevel::Info => tracing::Level::INFO,
        LogLevel::Debug => tracing::Level::DEBUG,
    };
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .with_ansi(false);
    if format == LogFormat::Json {
        builder.json().init();
    } else {
        builder.init();
    }
    let path = if config.is_dir() {
        config.join(CONFIG_FILE)
    } else {
        config
    };
    let mut cfg = Config::load(&path)?;
    if let Some(latency) = latency {
        cfg.latency = latency;
    }
    match state_store {
        Some(StoreArg::Journal) => cfg.state_store = StateStoreKind::Journal,
        Some(StoreArg::File) => cfg.state_store = StateStoreKind::File,
        None => {}
    }
    if !cfg.latency.is_none() {
        tracing::warn!(
            latency_ms = cfg.latency.as_millis(),
            "every crypto unit waits before answering: a simulated HSM round trip, for tests and benchmarks only"
        );
    }
    raise_open_files(&cfg.limits);
    let server = Server::open(&cfg)?;
    let stop = server.shutdown_handle();
    let mut signals = Signals::new([SIGTERM, SIGINT])
        .map_err(|source| tke_server::ServerError::Signals { source })?;
    std::thread::Builder::new()
        .name("unitd-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let name = if sig == SIGTERM { "SIGTERM" } else { "SIGINT" };
                if stop.is_stopping() {
                    tracing::warn!(signal = name, "second signal: exiting now");
                    std::process::exit(130);
                }
                tracing::info!(signal = name, "signal received: stopping gracefully");
                stop.shutdown();
            }
        })
        .context("cannot start the signal thread")?;
    server.run();
    Ok(())
}

/// Each connection holds a file descriptor: raise the soft limit to the hard one (a soft
/// limit of 1024 is common), and say so when even that is below the connection cap.
fn raise_open_files(limits: &tke_server::config::Limits) {
    // Unit directories, the listener, logs: a margin beyond the connections.
    let wanted = limits.max_connections as u64 + 256;
    match rlimit::increase_nofile_limit(wanted) {
        Ok(got) if got < wanted => tracing::warn!(
            open_files = got,
            max_connections = limits.max_connections,
            "the open-file limit is below max_connections: new connections fail beyond it"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Init(a) => init(a),
        Cmd::Join(a) => join(a),
        Cmd::CaSign(a) => ca_sign(a),
        Cmd::Serve {
            config,
            log_format,
            log_level,
            latency,
            state_store,
        } => serve(config, log_format, log_level, latency, state_store),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Each cause once: library errors leave their causes to `source()`.
            eprintln!("FAILED\n{}", tke_proto::ErrorChain(e.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}
