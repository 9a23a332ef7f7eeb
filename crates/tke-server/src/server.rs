//! The server: one tokio task per connection, TLS by tokio-rustls, and unit work on
//! tokio's blocking pool.
//!
//! * A connection costs memory, not a thread, until it sends a request: idle and slow
//!   clients wait on their deadlines without starving anyone. Open connections are
//!   capped in total (`max_connections`) and per peer IP address
//!   (`max_connections_per_peer`); beyond, new ones are closed at once.
//! * Every unit sits behind its own lock, so requests to one unit execute one at a time
//!   (a command whose counter is not the unit's next is refused by the unit with 163, so
//!   commands execute in counter order), on at most `workers` threads, while different
//!   units work in parallel.
//! * Deadlines: the TLS handshake must finish within `handshake_timeout_secs`; a whole
//!   request must arrive within `read_timeout_secs` (counted from the connection for its
//!   first request, TLS handshake included, and from the first byte for later ones), a
//!   response must leave within `write_timeout_secs`, an idle keep-alive connection is
//!   closed after `keep_alive_secs` — sooner when the server is near its connection cap,
//!   or when it is stopping.
//! * Stopping ([`ShutdownHandle::shutdown`], on SIGTERM/SIGINT in `tke-unitd`): the
//!   listener closes, connections with no request begun are closed, requests being read
//!   or executed finish and are answered, then the server returns. A unit writes its
//!   state durably before it answers, so what was answered is on disk.
//! * Durability: by default the units' states go to one journal ([`tke_unit::Journal`]),
//!   whose writer thread makes the commands of every unit that saved meanwhile durable
//!   with one `fdatasync` (group commit); a stop compacts it into the units' files.

use std::{
    collections::HashMap,
    io,
    net::{IpAddr, SocketAddr, TcpListener},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::json;
use tke_proto::{
    der::Decode, AdminCommand, CaCertificate, DeviceCertificate, ErrorChain, Request, ResponseBody,
    SignedResponse, UnitId, UnitType,
};
use tke_unit::{Journal, JournalOptions, Replay, StateStore, Unit};
use tokio::{
    io::AsyncWriteExt,
    net::TcpStream,
    sync::watch,
    time::{timeout_at, Instant},
};
use tracing::{debug, error, info, warn};

use crate::{
    api::{self, ApiError, Kind, Route},
    apikey::KeyHash,
    config::{self, Config, KeyConfig, Limits, StateStoreKind},
    error::io_err,
    http::{self, HeadDeadlines, ReadError, Response},
    ServerError,
};

/// An idle keep-alive connection is closed after this long when the server is near its
/// connection cap.
const YIELD_AFTER: Duration = Duration::from_millis(500);
/// At most this many requests on one connection.
const MAX_REQUESTS_PER_CONNECTION: usize = 10_000;

type Tls = tokio_rustls::server::TlsStream<TcpStream>;

struct HostedUnit {
    instance: String,
    unit_type: UnitType,
    location: String,
    cert_der: Vec<u8>,
    cert_pem: String,
    /// Shared with the instance's key service.
    unit: Arc<Mutex<Unit>>,
}

struct Shared {
    tls: tokio_rustls::TlsAcceptor,
    instances: Vec<String>,
    order: Vec<UnitId>,
    units: HashMap<UnitId, HostedUnit>,
    /// Each instance's key service.
    kms: HashMap<String, Arc<dyn tke_kms::KeyService>>,
    keys: Vec<KeyConfig>,
    limits: Limits,
    /// `true` once a stop was asked for.
    stop: watch::Sender<bool>,
    /// Open connections per peer address; the total is `open`.
    peers: Mutex<HashMap<IpAddr, usize>>,
    open: AtomicUsize,
    in_flight: AtomicUsize,
}

impl Shared {
    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Near the connection cap: idle keep-alive connections make room.
    fn crowded(&self) -> bool {
        self.open.load(Ordering::SeqCst) >= self.limits.max_connections / 4 * 3
    }
}

/// Resolves once a stop was asked for.
async fn stopped(mut stop: watch::Receiver<bool>) {
    // An error means the server is gone: stopped too.
    let _ = stop.wait_for(|s| *s).await;
}

/// One open connection, counted against the caps until it is dropped.
struct Slot {
    shared: Arc<Shared>,
    peer: IpAddr,
}

impl Slot {
    /// Counts a new connection from `peer`, or says which cap it is over.
    fn take(shared: &Arc<Shared>, peer: IpAddr) -> Result<Self, &'static str> {
        let mut peers = shared.peers.lock().unwrap_or_else(|p| p.into_inner());
        if shared.open.load(Ordering::SeqCst) >= shared.limits.max_connections {
            return Err("too many connections: closing a new one");
        }
        let n = peers.entry(peer).or_insert(0);
        if *n >= shared.limits.max_connections_per_peer {
            return Err("too many connections from this address: closing a new one");
        }
        *n += 1;
        shared.open.fetch_add(1, Ordering::SeqCst);
        Ok(Self {
            shared: shared.clone(),
            peer,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut peers = self.shared.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = peers.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                peers.remove(&self.peer);
            }
        }
        self.shared.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A server ready to run: units opened, TLS loaded, address bound.
pub struct Server {
    shared: Arc<Shared>,
    listener: TcpListener,
    /// The units' journal (journal store only).
    journal: Option<Journal>,
    _lock: tke_fs::DirLock,
}

/// Stops a running server from another thread (a signal handler's).
#[derive(Clone)]
pub struct ShutdownHandle(Arc<Shared>);

impl ShutdownHandle {
    /// Starts a graceful stop: no new connections; requests in progress finish.
    pub fn shutdown(&self) {
        self.0.stop.send_replace(true);
    }

    /// Whether a stop was asked for.
    pub fn is_stopping(&self) -> bool {
        self.0.stopping()
    }
}

fn lock_units(dir: &std::path::Path) -> Result<tke_fs::DirLock, ServerError> {
    tke_fs::DirLock::try_acquire(dir).map_err(|e| match e {
        tke_fs::LockError::Busy { dir, lock } => ServerError::Busy { dir, lock },
        tke_fs::LockError::Io { lock, source } => io_err("lock", &lock)(source),
    })
}

/// Opens the units' journal (replaying and compacting what a previous run left) for the
/// journal store; for the file store, folds a journal left by an earlier journal run into
/// the unit files and removes it, so that no answered command is lost by switching.
fn open_journal(cfg: &Config) -> Result<Option<Journal>, ServerError> {
    let journal_err = |source| ServerError::Journal { source };
    let path = cfg.units_dir.join(tke_unit::JOURNAL_FILE);
    match cfg.state_store {
        StateStoreKind::Journal => Journal::open(&cfg.units_dir, JournalOptions::default())
            .map(Some)
            .map_err(journal_err),
        StateStoreKind::File if path.exists() => {
            Journal::open(&cfg.units_dir, JournalOptions::default())
                .and_then(Journal::close)
                .map_err(journal_err)?;
            std::fs::remove_file(&path).map_err(io_err("remove", &path))?;
            Ok(None)
        }
        StateStoreKind::File => Ok(None),
    }
}

/// Says how the units' states are kept and what the journal's replay found.
fn log_replay(path: &std::path::Path, replay: Replay) {
    info!(
        journal = %path.display(),
        replayed_records = replay.records,
        replayed_units = replay.units,
        torn_bytes = replay.torn_bytes,
        "unit states: journal with group commit{}",
        if replay.torn_bytes > 0 {
            " (a torn last record, never answered, was dropped)"
        } else {
            ""
        }
    );
}

fn read_pem(path: &std::path::Path) -> Result<Vec<u8>, ServerError> {
    let text =
        zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(io_err("read", path))?);
    let (_, der_bytes) =
        tke_proto::der::pem::decode_vec(text.as_bytes()).map_err(|_| ServerError::BadFile {
            path: path.to_path_buf(),
            what: "not a PEM file",
        })?;
    Ok(der_bytes)
}

fn tls_config(cfg: &Config) -> Result<rustls::ServerConfig, ServerError> {
    let cert = read_pem(&cfg.tls_certificate)?;
    let key = read_pem(&cfg.tls_key)?;
    let tls_err = |source| ServerError::Tls {
        path: cfg.tls_certificate.clone(),
        source,
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut c = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert)],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
        )
        .map_err(tls_err)?;
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(c)
}

/// The key service of each instance, its store in `<data dir>/keys/` (the directory of
/// the configuration file).
fn open_key_services(
    cfg: &Config,
    ca: &CaCertificate,
    order: &[UnitId],
    units: &HashMap<UnitId, HostedUnit>,
) -> Result<HashMap<String, Arc<dyn tke_kms::KeyService>>, ServerError> {
    let dir = cfg
        .path
        .parent()
        .unwrap_or_else(|| std::path::Path::new("."))
        .join("keys");
    let mut out = HashMap::new();
    for instance in &cfg.instances {
        let refs = order
            .iter()
            .filter_map(|id| units.get(id).map(|h| (id, h)))
            .filter(|(_, h)| &h.instance == instance)
            .map(|(id, h)| crate::kms::HostedRef {
                descriptor: tke_client::UnitDescriptor {
                    instance: tke_client::InstanceId(instance.clone()),
                    unit_id: *id,
                    unit_type: h.unit_type,
                    location: h.location.clone(),
                    device_certificate: h.cert_der.clone(),
                },
                unit: h.unit.clone(),
            })
            .collect();
        let kms = crate::kms::open(&dir, ca, instance, refs).map_err(|source| {
            ServerError::KeyService {
                instance: instance.clone(),
                path: dir.clone(),
                source: Box::new(source),
            }
        })?;
        out.insert(instance.clone(), kms);
    }
    Ok(out)
}

impl Server {
    /// Opens every configured unit (checking it against the configuration and the fleet
    /// CA), loads the TLS certificate and binds the listen address.
    ///
    /// # Errors
    /// [`ServerError`] naming the unit, file or address concerned.
    pub fn open(cfg: &Config) -> Result<Self, ServerError> {
        let lock = lock_units(&cfg.units_dir)?;
        let ca_pem = std::fs::read_to_string(&cfg.ca).map_err(io_err("read", &cfg.ca))?;
        let ca = CaCertificate::from_pem(&ca_pem).map_err(|source| ServerError::Certificate {
            path: cfg.ca.clone(),
            source,
        })?;
        let journal = open_journal(cfg)?;
        let mut units = HashMap::new();
        let mut order = Vec::new();
        for u in &cfg.units {
            let store: Box<dyn StateStore> = match &journal {
                Some(j) => Box::new(j.store(u.id)),
                None => Box::new(tke_unit::FileStore::new(&u.dir)),
            };
            let mut unit =
                Unit::open_with_store(&u.dir, store).map_err(|source| ServerError::Unit {
                    unit: u.id,
                    path: u.dir.clone(),
                    source: Box::new(source),
                })?;
            unit.set_latency(cfg.latency);
            let mismatch = |what| ServerError::UnitMismatch {
                path: u.dir.clone(),
                what,
            };
            if unit.id() != u.id {
                return Err(mismatch("another unit id"));
            }
            if unit.unit_type() != u.unit_type {
                return Err(mismatch("another unit type"));
            }
            let cert = unit.device_certificate();
            DeviceCertificate::verify(cert.der(), &ca).map_err(|_| {
                mismatch("its device certificate was not issued by the configured fleet CA")
            })?;
            let cert_pem = cert.to_pem().map_err(|source| ServerError::Certificate {
                path: u.dir.clone(),
                source,
            })?;
            order.push(u.id);
            units.insert(
                u.id,
                HostedUnit {
                    instance: u.instance.clone(),
                    unit_type: u.unit_type,
                    location: u.location.clone(),
                    cert_der: cert.der().to_vec(),
                    cert_pem,
                    unit: Arc::new(Mutex::new(unit)),
                },
            );
        }
        let kms = open_key_services(cfg, &ca, &order, &units)?;
        let tls = tls_config(cfg)?;
        let listener = TcpListener::bind(cfg.listen).map_err(|source| ServerError::Bind {
            addr: cfg.listen.to_string(),
            source,
        })?;
        let local = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: cfg.listen.to_string(),
            source,
        })?;
        // Accepting is asynchronous; the socket stays a std one until `run` so that
        // opening needs no runtime.
        listener
            .set_nonblocking(true)
            .map_err(|source| ServerError::Bind {
                addr: local.to_string(),
                source,
            })?;
        Ok(Self {
            shared: Arc::new(Shared {
                tls: tokio_rustls::TlsAcceptor::from(Arc::new(tls)),
                instances: cfg.instances.clone(),
                order,
                units,
                kms,
                keys: cfg.keys.clone(),
                limits: cfg.limits,
                stop: watch::Sender::new(false),
                peers: Mutex::new(HashMap::new()),
                open: AtomicUsize::new(0),
                in_flight: AtomicUsize::new(0),
            }),
            listener,
            journal,
            _lock: lock,
        })
    }

    /// The address actually bound (useful with port 0).
    ///
    /// # Errors
    /// The socket's error.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// A handle that stops the server.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shared.clone())
    }

    /// Serves until [`ShutdownHandle::shutdown`] is called, then stops gracefully.
    /// Logs one start-up line naming the address and every unit served.
    pub fn run(self) {
        let shared = self.shared.clone();
        // Before the start-up line: whoever waits for that one finds this one too.
        match &self.journal {
            Some(j) => log_replay(j.path(), j.replay()),
            None => info!("unit states: one file per unit"),
        }

        let addr = self
            .listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let units: Vec<String> = shared
            .order
            .iter()
            .filter_map(|id| {
                shared
                    .units
                    .get(id)
                    .map(|u| format!("{}:{}:{}", u.unit_type.json_name(), id.uuid(), u.location))
            })
            .collect();
        info!(
            address = %addr,
            instances = %shared.instances.join(","),
            unit_count = units.len(),
            units = %units.join(" "),
            "tke-unitd listening on https://{addr} with {} crypto unit(s) of {} service instance(s)",
            units.len(),
            shared.instances.len()
        );

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("unitd")
            // Unit work: each request executes on one of these, behind its unit's lock.
            .max_blocking_threads(shared.limits.workers)
            .build();
        let runtime = match runtime {
            Ok(r) => r,
            Err(e) => {
                error!(error = %e, "cannot start the async runtime");
                return;
            }
        };
        runtime.block_on(serve(shared.clone(), self.listener));
        // Whatever is left (only after the grace period) ends with the process.
        runtime.shutdown_timeout(Duration::from_secs(1));
        if let Some(j) = self.journal {
            let stats = j.stats();
            match j.close() {
                Ok(()) => info!(
                    records = stats.records,
                    flushes = stats.flushes,
                    "journal compacted into the unit files"
                ),
                // Nothing is lost: the next start replays the journal.
                Err(e) => error!(error = %ErrorChain(&e), "cannot compact the journal"),
            }
        }
        info!("tke-unitd stopped");
    }
}

/// Accepts connections until a stop, then waits (within the grace period) for the
/// connections still open to finish their requests.
async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            error!(error = %e, "cannot listen");
            return;
        }
    };
    let stop = shared.stop.subscribe();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = stopped(stop.clone()) => break,
        };
        match accepted {
            Ok((tcp, peer)) => match Slot::take(&shared, peer.ip()) {
                Ok(slot) => {
                    tokio::spawn(async move {
                        serve_connection(&slot.shared, tcp, peer).await;
                        drop(slot);
                    });
                }
                Err(why) => {
                    warn!(peer = %peer, "{why}");
                    drop(tcp);
                }
            },
            Err(e) => {
                warn!(error = %e, "accept failed");
                // Out of file descriptors and the like: do not spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    info!(
        in_flight = shared.in_flight.load(Ordering::SeqCst),
        open = shared.open.load(Ordering::SeqCst),
        "stopping: no new connections; finishing the requests in progress"
    );
    let deadline = Instant::now() + Duration::from_secs(shared.limits.shutdown_grace_secs);
    while shared.open.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let open = shared.open.load(Ordering::SeqCst);
    if open > 0 {
        warn!(
            connections = open,
            "requests still in progress after the grace period; exiting anyway (unit state on disk is consistent)"
        );
    }
}

async fn serve_connection(shared: &Arc<Shared>, tcp: TcpStream, peer: SocketAddr) {
    let limits = shared.limits;
    let secs = Duration::from_secs;
    let read_timeout = secs(limits.read_timeout_secs);
    let connected = Instant::now();
    // The first request's deadline counts from the connection (TLS handshake included).
    let first_deadline = connected + read_timeout;
    let handshake_deadline = first_deadline.min(connected + secs(limits.handshake_timeout_secs));
    let _ = tcp.set_nodelay(true);
    let stop = shared.stop.subscribe();
    let accepted = tokio::select! {
        a = timeout_at(handshake_deadline, shared.tls.accept(tcp)) => a,
        () = stopped(stop.clone()) => return,
    };
    let mut stream = match accepted {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            debug!(peer = %peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            debug!(peer = %peer, "no TLS handshake in time: closing");
            return;
        }
    };
    let mut buf: Vec<u8> = Vec::new();
    let mut served = 0usize;
    let mut idle_since = connected;
    loop {
        let keep_alive = if shared.crowded() {
            YIELD_AFTER
        } else {
            secs(limits.keep_alive_secs)
        };
        let deadlines = HeadDeadlines {
            request: (served == 0).then_some(first_deadline),
            idle: (served > 0).then(|| idle_since + keep_alive),
            read_timeout,
        };
        let head = http::read_head(
            &mut stream,
            &mut buf,
            limits.max_header_bytes,
            deadlines,
            stopped(stop.clone()),
        )
        .await;
        let (head, used, deadline) = match head {
            Ok(h) => h,
            Err(e) => {
                let answer = match e {
                    ReadError::Idle => None,
                    ReadError::Timeout => Some(ApiError::new(
                        408,
                        "request_timeout",
                        format!(
                            "The request did not arrive within {} seconds.",
                            limits.read_timeout_secs
                        ),
                    )),
                    ReadError::HeadTooLarge => Some(ApiError::new(
                        431,
                        "headers_too_large",
                        format!(
                            "The request line and headers exceed {} bytes.",
                            limits.max_header_bytes
                        ),
                    )),
                    ReadError::Malformed => Some(ApiError::new(
                        400,
                        "bad_http",
                        "The request is not valid HTTP/1.1.",
                    )),
                    ReadError::Io(e) => {
                        debug!(peer = %peer, error = %e, "connection ended");
                        None
                    }
                };
                if let Some(a) = answer {
                    info!(peer = %peer, status = a.status, code = a.code, "request refused");
                    let until = Instant::now() + secs(limits.write_timeout_secs);
                    let _ = http::write_response(&mut stream, &a.response(true), until).await;
                }
                break;
            }
        };
        buf.drain(..used);
        shared.in_flight.fetch_add(1, Ordering::SeqCst);
        let started = Instant::now();
        let mut log = LogLine::default();
        let mut response = handle(shared, &head, &mut stream, &mut buf, deadline, &mut log).await;
        shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        served += 1;
        if !head.keep_alive() || shared.stopping() || served >= MAX_REQUESTS_PER_CONNECTION {
            response.close = true;
        }
        let until = Instant::now() + secs(limits.write_timeout_secs);
        let written = http::write_response(&mut stream, &response, until).await;
        info!(
            peer = %peer,
            method = %head.method,
            path = %head.path,
            status = response.status,
            code = log.code,
            key_id = log.key_id.as_deref(),
            kind = log.kind,
            unit = log.unit.as_deref(),
            command = log.command.as_deref(),
            counter = log.counter,
            rc = log.rc.as_deref(),
            ms = started.elapsed().as_millis() as u64,
            "request"
        );
        if let Err(e) = written {
            debug!(peer = %peer, error = %e, "cannot send the response");
            break;
        }
        if response.close {
            break;
        }
        idle_since = Instant::now();
    }
    // close_notify, within the write timeout.
    let until = Instant::now() + secs(limits.write_timeout_secs);
    let _ = timeout_at(until, stream.shutdown()).await;
}

/// What the request log line says beyond method, path and status. Never a secret: the
/// key appears only as its id (a prefix of its hash).
#[derive(Default)]
struct LogLine {
    code: Option<&'static str>,
    key_id: Option<String>,
    kind: Option<&'static str>,
    unit: Option<String>,
    command: Option<String>,
    counter: Option<u64>,
    rc: Option<String>,
    body_read: bool,
}

fn content_length(head: &http::RequestHead) -> Result<Option<usize>, ApiError> {
    let mut value: Option<usize> = None;
    for v in head.headers_named("content-length") {
        let n = std::str::from_utf8(v)
            .ok()
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<usize>().ok())
            .ok_or_else(|| {
                ApiError::new(400, "bad_content_length", "Content-Length is not a number.")
            })?;
        if value.is_some_and(|p| p != n) {
            return Err(ApiError::new(
                400,
                "bad_content_length",
                "Several different Content-Length values were sent.",
            ));
        }
        value = Some(n);
    }
    Ok(value)
}

async fn handle(
    shared: &Arc<Shared>,
    head: &http::RequestHead,
    stream: &mut Tls,
    buf: &mut Vec<u8>,
    deadline: Instant,
    log: &mut LogLine,
) -> Response {
    // Any body we do not read leaves the connection unusable: close it after answering.
    let has_body = head.header("transfer-encoding").is_some()
        || content_length(head).map_or(true, |n| n.unwrap_or(0) > 0);
    let mut r = match route(shared, head, stream, buf, deadline, log).await {
        Ok(r) => r,
        Err(e) => {
            log.code = Some(e.code);
            e.response(false)
        }
    };
    if has_body && !log.body_read {
        r.close = true;
    }
    r
}

async fn route(
    shared: &Arc<Shared>,
    head: &http::RequestHead,
    stream: &mut Tls,
    buf: &mut Vec<u8>,
    deadline: Instant,
    log: &mut LogLine,
) -> Result<Response, ApiError> {
    let Some(route) = Route::parse(&head.path) else {
        return Err(ApiError::new(
            404,
            "not_found",
            format!(
                "There is no resource {}; see docs/protocol.md §16.",
                head.path
            ),
        ));
    };
    if head.method != route.method() {
        return Err(ApiError::new(
            405,
            "method_not_allowed",
            format!(
                "{} takes {}, not {}.",
                head.path,
                route.method(),
                head.method
            ),
        )
        .with_header("Allow", route.method()));
    }
    if route == Route::Health {
        return Ok(if shared.stopping() {
            let mut r = api::ok_json(&json!({"status": "stopping"}));
            r.status = 503;
            r
        } else {
            api::ok_json(&json!({"status": "ok"}))
        });
    }
    let key = authenticate(shared, head)?;
    log.key_id = Some(key.hash.id());
    let instance = key.instance.as_str();
    let own = |i: &str| -> Result<(), ApiError> {
        if i == instance {
            Ok(())
        } else {
            Err(ApiError::new(
                403,
                "forbidden",
                format!("This API key does not give access to service instance {i}."),
            ))
        }
    };
    let unit_of = |i: &str, u: &str| -> Result<(UnitId, &HostedUnit), ApiError> {
        own(i)?;
        UnitId::from_uuid(u)
            .ok()
            .and_then(|id| {
                shared
                    .units
                    .get(&id)
                    .filter(|h| h.instance == i)
                    .map(|h| (id, h))
            })
            .ok_or_else(|| {
                ApiError::new(
                    404,
                    "unit_not_found",
                    format!("Crypto unit {u} is not part of service instance {i} on this server."),
                )
            })
    };
    match route {
        Route::Health => Ok(api::ok_json(&json!({"status": "ok"}))),
        Route::Version => Ok(api::ok_json(&json!({
            "server": "tke-unitd",
            "version": env!("CARGO_PKG_VERSION"),
            "api": "v1",
            "protocol": format!("TKE-Protocol-v{}", tke_proto::PROTOCOL_VERSION),
        }))),
        Route::Instances => {
            let count = shared
                .units
                .values()
                .filter(|u| u.instance == instance)
                .count();
            Ok(api::ok_json(&json!({
                "instances": [{ "id": instance, "units": count }],
            })))
        }
        Route::Units(i) => {
            own(i)?;
            let units: Vec<_> = shared
                .order
                .iter()
                .filter_map(|id| shared.units.get(id).map(|u| (id, u)))
                .filter(|(_, u)| u.instance == i)
                .map(|(id, u)| {
                    json!({
                        "id": id.uuid(),
                        "type": config::type_name(u.unit_type),
                        "location": u.location,
                        "device_certificate": u.cert_pem,
                    })
                })
                .collect();
            Ok(api::ok_json(&json!({ "instance": i, "units": units })))
        }
        Route::Certificate(i, u) => {
            let (id, h) = unit_of(i, u)?;
            log.unit = Some(id.uuid());
            Ok(Response {
                status: 200,
                content_type: api::CERT_TYPE,
                body: h.cert_der.clone(),
                headers: Vec::new(),
                close: false,
            })
        }
        Route::Exchange(i, u, kind) => {
            let (id, _) = unit_of(i, u)?;
            log.unit = Some(id.uuid());
            log.kind = Some(kind.name());
            exchange(shared, head, stream, buf, deadline, log, id, kind).await
        }
        Route::Kms(i, k) => {
            own(i)?;
            log.kind = Some(k.name());
            let kms = shared.kms.get(i).cloned().ok_or_else(|| {
                ApiError::new(
                    404,
                    "instance_not_found",
                    format!("Service instance {i} is not hosted on this server."),
                )
            })?;
            let body = if k.has_body() {
                read_body(shared, head, stream, buf, deadline, log, api::JSON_TYPE).await?
            } else {
                Vec::new()
            };
            let body = zeroize::Zeroizing::new(body);
            // Units and the store block: on the blocking pool, like unit work.
            let answer =
                tokio::task::spawn_blocking(move || crate::kms::handle(kms.as_ref(), k, &body))
                    .await;
            match answer {
                Ok(Ok(v)) => Ok(api::ok_json(&v)),
                Ok(Err(e)) => Err(e),
                Err(e) => match e.try_into_panic() {
                    Ok(panic) => std::panic::resume_unwind(panic),
                    Err(_) => Err(ApiError::new(
                        503,
                        "stopping",
                        "The server stopped before the request was executed.",
                    )),
                },
            }
        }
    }
}

/// Reads a request body of media type `media` (Content-Length only, within the body
/// limit and the deadline). Leaves any bytes of the next request in `buf`.
async fn read_body(
    shared: &Arc<Shared>,
    head: &http::RequestHead,
    stream: &mut Tls,
    buf: &mut Vec<u8>,
    deadline: Instant,
    log: &mut LogLine,
    media: &str,
) -> Result<Vec<u8>, ApiError> {
    let ct = head
        .header("content-type")
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim)
        .unwrap_or_default();
    if !ct.eq_ignore_ascii_case(media) {
        let what = if media == api::REQUEST_TYPE {
            "the DER of a TKE Request"
        } else {
            "JSON"
        };
        return Err(ApiError::new(
            415,
            "unsupported_media_type",
            format!("Send {what} with Content-Type: {media}."),
        ));
    }
    if head.header("transfer-encoding").is_some() {
        return Err(ApiError::new(
            501,
            "unsupported_transfer_encoding",
            "Transfer-Encoding is not supported: send the body with Content-Length.",
        ));
    }
    let max = shared.limits.max_body_bytes;
    let len = content_length(head)?.ok_or_else(|| {
        ApiError::new(
            411,
            "length_required",
            "Send the request body with a Content-Length header.",
        )
    })?;
    if len > max {
        // Read (a bounded part of) the body first, so that the client sees the 413.
        let already = std::mem::take(buf).len().min(len);
        http::drain(stream, len - already, deadline).await;
        return Err(ApiError::new(
            413,
            "payload_too_large",
            format!("The request body is {len} bytes; this server accepts at most {max}."),
        ));
    }
    let already = std::mem::take(buf);
    let (body, rest) = if already.len() > len {
        let mut b = already;
        let rest = b.split_off(len);
        (b, rest)
    } else {
        (already, Vec::new())
    };
    let body = http::read_body(stream, body, len, deadline)
        .await
        .map_err(|e| match e {
            ReadError::Timeout => ApiError::new(
                408,
                "request_timeout",
                "The request body did not arrive in time.",
            ),
            _ => ApiError::new(400, "bad_http", "The request body ended early."),
        })?;
    *buf = rest;
    log.body_read = true;
    Ok(body)
}

fn authenticate<'s>(
    shared: &'s Shared,
    head: &http::RequestHead,
) -> Result<&'s KeyConfig, ApiError> {
    let unauthorized = |code, msg: &str| {
        ApiError::new(401, code, msg).with_header("WWW-Authenticate", "Bearer realm=\"tke-unitd\"")
    };
    let Some(value) = head.header("authorization") else {
        return Err(unauthorized(
            "missing_api_key",
            "No API key was sent: send the service instance's key as `Authorization: Bearer <key>`.",
        ));
    };
    let token = value
        .strip_prefix(b"Bearer ")
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty() && t.len() <= 512)
        .ok_or_else(|| {
            unauthorized(
                "invalid_api_key",
                "The Authorization header is not `Bearer <key>`.",
            )
        })?;
    let presented = KeyHash::of(token);
    // Compare with every key (constant time each), so timing says nothing about which.
    let mut found = None;
    for k in &shared.keys {
        if k.hash.matches(&presented) && found.is_none() {
            found = Some(k);
        }
    }
    found.ok_or_else(|| {
        unauthorized(
            "invalid_api_key",
            "The API key is not valid for this server.",
        )
    })
}

#[allow(clippy::too_many_arguments)]
async fn exchange(
    shared: &Arc<Shared>,
    head: &http::RequestHead,
    stream: &mut Tls,
    buf: &mut Vec<u8>,
    deadline: Instant,
    log: &mut LogLine,
    id: UnitId,
    kind: Kind,
) -> Result<Response, ApiError> {
    let body = read_body(shared, head, stream, buf, deadline, log, api::REQUEST_TYPE).await?;
    let request = Request::from_der(&body).map_err(|e| {
        ApiError::new(
            400,
            "malformed_request",
            format!("The request body is not the DER of a TKE Request: {e}."),
        )
    })?;
    match (&request, kind) {
        (Request::Query(_), Kind::Query) => {}
        (Request::Command(c), Kind::Command) => {
            if let Ok(cmd) = AdminCommand::from_der(c.command.as_bytes()) {
                log.command = Some(format!("{:?}", cmd.command));
                log.counter = Some(cmd.counter);
            }
        }
        (Request::Service(s), Kind::Service) => log.command = Some(s.op.name().to_owned()),
        (Request::Audit(_), Kind::Audit) => {}
        (_, k) => {
            return Err(ApiError::new(
                400,
                "wrong_request_kind",
                format!(
                    "This endpoint takes a {} (Request.{}); send queries to .../query, commands to .../command, service requests to .../service and audit queries to .../audit.",
                    k.name(),
                    k.name(),
                ),
            ))
        }
    }
    // One request at a time per unit, on the blocking pool (the unit signs, and saves its
    // state with an fsync, before it answers). Once started it runs to its end, even if
    // the connection goes away, so an executed command is always on disk.
    let unit_work = {
        let shared = shared.clone();
        tokio::task::spawn_blocking(move || {
            shared.units.get(&id).map(|hosted| {
                hosted
                    .unit
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .answer(&body)
            })
        })
    };
    let answered = match unit_work.await {
        Ok(a) => a,
        // A panic in the unit: this connection ends unanswered, as the panic says.
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(_) => None,
        },
    };
    let Some(tke_unit::Answer {
        response: answer,
        internal_errors,
    }) = answered
    else {
        // Cancelled: only when the runtime ends after the grace period.
        return Err(ApiError::new(
            503,
            "stopping",
            "The server stopped before the request was executed.",
        ));
    };
    // The client reads only "internal error": the cause is for the operator.
    for e in &internal_errors {
        error!(unit = %id.uuid(), error = %ErrorChain(e), "the unit answered an internal error");
    }
    if let Ok(r) = SignedResponse::from_der(&answer) {
        if let Ok(b) = ResponseBody::from_der(r.body.as_bytes()) {
            log.rc = Some(format!("{}/{}", b.return_code, b.reason_code));
            log.counter = Some(b.counter);
        }
    }
    debug!(unit = %id.uuid(), bytes = answer.len(), "answered");
    Ok(Response {
        status: 200,
        content_type: api::RESPONSE_TYPE,
        body: answer,
        headers: Vec::new(),
        close: false,
    })
}
