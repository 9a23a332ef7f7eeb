//! The server: an acceptor thread, a bounded queue of accepted connections, and a fixed
//! pool of worker threads that each serve one TLS connection at a time.
//!
//! * Every unit sits behind its own lock, so requests to one unit execute one at a time
//!   (a command whose counter is not the unit's next is refused by the unit with 163, so
//!   commands execute in counter order), while different units work in parallel.
//! * Deadlines: a whole request must arrive within `read_timeout_secs` (counted from the
//!   connection for its first request, TLS handshake included, and from the first byte
//!   for later ones), a response must leave within `write_timeout_secs`, an idle
//!   keep-alive connection is closed after `keep_alive_secs` — sooner when connections
//!   are waiting for a worker, or when the server is stopping.
//! * Stopping ([`ShutdownHandle::shutdown`], on SIGTERM/SIGINT in `tke-unitd`): the
//!   listener closes, connections not yet picked up are closed unread, requests being
//!   read or executed finish and are answered, then the workers exit. A unit writes its
//!   state durably before it answers, so what was answered is on disk.

use std::{
    collections::{HashMap, VecDeque},
    io::{self, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc, Arc, Condvar, Mutex,
    },
    time::{Duration, Instant},
};

use rustls::{
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    ServerConnection, StreamOwned,
};
use serde_json::json;
use tke_proto::{
    der::Decode, AdminCommand, CaCertificate, DeviceCertificate, ErrorChain, Request, ResponseBody,
    SignedResponse, UnitId, UnitType,
};
use tke_unit::Unit;
use tracing::{debug, error, info, warn};

use crate::{
    api::{self, ApiError, Kind, Route},
    apikey::KeyHash,
    config::{self, Config, KeyConfig, Limits},
    error::io_err,
    http::{self, ReadError, Response},
    ServerError,
};

/// How often a blocked read wakes up to check deadlines and the stop flag.
const POLL: Duration = Duration::from_millis(100);
/// An idle keep-alive connection is closed after this long when others wait for a worker.
const YIELD_AFTER: Duration = Duration::from_millis(500);
/// At most this many requests on one connection.
const MAX_REQUESTS_PER_CONNECTION: usize = 10_000;

struct HostedUnit {
    instance: String,
    unit_type: UnitType,
    location: String,
    cert_der: Vec<u8>,
    cert_pem: String,
    unit: Mutex<Unit>,
}

struct Pending {
    tcp: TcpStream,
    peer: SocketAddr,
}

struct Shared {
    tls: Arc<rustls::ServerConfig>,
    instances: Vec<String>,
    order: Vec<UnitId>,
    units: HashMap<UnitId, HostedUnit>,
    keys: Vec<KeyConfig>,
    limits: Limits,
    stopping: AtomicBool,
    queue: Mutex<VecDeque<Pending>>,
    ready: Condvar,
    wake_addr: SocketAddr,
    in_flight: AtomicUsize,
}

/// A server ready to run: units opened, TLS loaded, address bound.
pub struct Server {
    shared: Arc<Shared>,
    listener: TcpListener,
    _lock: tke_fs::DirLock,
}

/// Stops a running server from another thread (a signal handler's).
#[derive(Clone)]
pub struct ShutdownHandle(Arc<Shared>);

impl ShutdownHandle {
    /// Starts a graceful stop: no new connections; requests in progress finish.
    pub fn shutdown(&self) {
        if !self.0.stopping.swap(true, Ordering::SeqCst) {
            self.0.ready.notify_all();
            // Wake the acceptor out of accept().
            let _ = TcpStream::connect_timeout(&self.0.wake_addr, Duration::from_secs(1));
        }
    }

    /// Whether a stop was asked for.
    pub fn is_stopping(&self) -> bool {
        self.0.stopping.load(Ordering::SeqCst)
    }
}

fn lock_units(dir: &std::path::Path) -> Result<tke_fs::DirLock, ServerError> {
    tke_fs::DirLock::try_acquire(dir).map_err(|e| match e {
        tke_fs::LockError::Busy { dir, lock } => ServerError::Busy { dir, lock },
        tke_fs::LockError::Io { lock, source } => io_err("lock", &lock)(source),
    })
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
        let mut units = HashMap::new();
        let mut order = Vec::new();
        for u in &cfg.units {
            let unit = Unit::open(&u.dir).map_err(|source| ServerError::Unit {
                unit: u.id,
                path: u.dir.clone(),
                source: Box::new(source),
            })?;
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
                    unit: Mutex::new(unit),
                },
            );
        }
        let tls = tls_config(cfg)?;
        let listener = TcpListener::bind(cfg.listen).map_err(|source| ServerError::Bind {
            addr: cfg.listen.to_string(),
            source,
        })?;
        let local = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: cfg.listen.to_string(),
            source,
        })?;
        let wake_addr = if local.ip().is_unspecified() {
            let ip = if local.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            };
            SocketAddr::new(ip, local.port())
        } else {
            local
        };
        Ok(Self {
            shared: Arc::new(Shared {
                tls: Arc::new(tls),
                instances: cfg.instances.clone(),
                order,
                units,
                keys: cfg.keys.clone(),
                limits: cfg.limits,
                stopping: AtomicBool::new(false),
                queue: Mutex::new(VecDeque::new()),
                ready: Condvar::new(),
                wake_addr,
                in_flight: AtomicUsize::new(0),
            }),
            listener,
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

        let (done_tx, done_rx) = mpsc::channel::<()>();
        let mut workers = Vec::new();
        for i in 0..shared.limits.workers {
            let s = shared.clone();
            let done = done_tx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("unitd-worker-{i}"))
                .spawn(move || {
                    worker(&s);
                    let _ = done.send(());
                });
            match spawned {
                Ok(h) => workers.push(h),
                Err(e) => warn!(error = %e, "cannot start a worker thread"),
            }
        }
        drop(done_tx);

        for conn in self.listener.incoming() {
            if shared.stopping.load(Ordering::SeqCst) {
                break;
            }
            match conn {
                Ok(tcp) => {
                    let peer = tcp
                        .peer_addr()
                        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
                    let mut q = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
                    if q.len() >= shared.limits.max_pending_connections {
                        drop(q);
                        warn!(peer = %peer, "too many connections waiting for a worker: closing a new one");
                        drop(tcp);
                        continue;
                    }
                    q.push_back(Pending { tcp, peer });
                    drop(q);
                    shared.ready.notify_one();
                }
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    // Out of file descriptors and the like: do not spin.
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        drop(self.listener);
        let unserved = {
            let mut q = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            let n = q.len();
            q.clear();
            n
        };
        shared.ready.notify_all();
        info!(
            in_flight = shared.in_flight.load(Ordering::SeqCst),
            closed_unserved = unserved,
            "stopping: no new connections; finishing the requests in progress"
        );
        let deadline = Instant::now() + Duration::from_secs(shared.limits.shutdown_grace_secs);
        let mut remaining = workers.len();
        while remaining > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match done_rx.recv_timeout(left) {
                Ok(()) => remaining -= 1,
                Err(_) => break,
            }
        }
        if remaining > 0 {
            warn!(
                workers = remaining,
                "requests still in progress after the grace period; exiting anyway (unit state on disk is consistent)"
            );
        } else {
            for w in workers {
                let _ = w.join();
            }
        }
        info!("tke-unitd stopped");
    }
}

fn worker(shared: &Shared) {
    loop {
        let next = {
            let mut q = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if shared.stopping.load(Ordering::SeqCst) {
                    return;
                }
                if let Some(p) = q.pop_front() {
                    break p;
                }
                q = shared.ready.wait(q).unwrap_or_else(|p| p.into_inner());
            }
        };
        serve_connection(shared, next);
    }
}

fn queue_waiting(shared: &Shared) -> bool {
    !shared
        .queue
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .is_empty()
}

fn serve_connection(shared: &Shared, p: Pending) {
    let Pending { tcp, peer } = p;
    let limits = shared.limits;
    let read_timeout = Duration::from_secs(limits.read_timeout_secs);
    let _ = tcp.set_nodelay(true);
    if tcp.set_read_timeout(Some(POLL)).is_err()
        || tcp
            .set_write_timeout(Some(Duration::from_secs(limits.write_timeout_secs)))
            .is_err()
    {
        return;
    }
    let conn = match ServerConnection::new(shared.tls.clone()) {
        Ok(c) => c,
        Err(e) => {
            warn!(peer = %peer, error = %e, "cannot start a TLS session");
            return;
        }
    };
    let mut stream = StreamOwned::new(conn, tcp);
    let mut buf: Vec<u8> = Vec::new();
    let mut served = 0usize;
    let connected = Instant::now();
    let mut idle_since = connected;
    loop {
        let keep_alive = Duration::from_secs(limits.keep_alive_secs);
        let idle = || {
            let waited = idle_since.elapsed();
            shared.stopping.load(Ordering::SeqCst)
                || (served > 0
                    && (waited >= keep_alive || (waited >= YIELD_AFTER && queue_waiting(shared))))
        };
        // The first request's deadline counts from the connection (TLS handshake included).
        let head = http::read_head(
            &mut stream,
            &mut buf,
            limits.max_header_bytes,
            read_timeout,
            (served == 0).then_some(connected),
            &idle,
        );
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
                    let _ = http::write_response(&mut stream, &a.response(true));
                }
                break;
            }
        };
        buf.drain(..used);
        shared.in_flight.fetch_add(1, Ordering::SeqCst);
        let started = Instant::now();
        let mut log = LogLine::default();
        let mut response = handle(shared, &head, &mut stream, &mut buf, deadline, &mut log);
        shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        served += 1;
        if !head.keep_alive()
            || shared.stopping.load(Ordering::SeqCst)
            || served >= MAX_REQUESTS_PER_CONNECTION
        {
            response.close = true;
        }
        let written = http::write_response(&mut stream, &response);
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
    stream.conn.send_close_notify();
    let _ = stream.flush();
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

fn handle(
    shared: &Shared,
    head: &http::RequestHead,
    stream: &mut StreamOwned<ServerConnection, TcpStream>,
    buf: &mut Vec<u8>,
    deadline: Instant,
    log: &mut LogLine,
) -> Response {
    // Any body we do not read leaves the connection unusable: close it after answering.
    let has_body = head.header("transfer-encoding").is_some()
        || content_length(head).map_or(true, |n| n.unwrap_or(0) > 0);
    let mut r = match route(shared, head, stream, buf, deadline, log) {
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

fn route(
    shared: &Shared,
    head: &http::RequestHead,
    stream: &mut StreamOwned<ServerConnection, TcpStream>,
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
        return Ok(if shared.stopping.load(Ordering::SeqCst) {
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
            let (id, hosted) = unit_of(i, u)?;
            log.unit = Some(id.uuid());
            log.kind = Some(kind.name());
            exchange(shared, head, stream, buf, deadline, log, id, hosted, kind)
        }
    }
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
fn exchange(
    shared: &Shared,
    head: &http::RequestHead,
    stream: &mut StreamOwned<ServerConnection, TcpStream>,
    buf: &mut Vec<u8>,
    deadline: Instant,
    log: &mut LogLine,
    id: UnitId,
    hosted: &HostedUnit,
    kind: Kind,
) -> Result<Response, ApiError> {
    let ct = head
        .header("content-type")
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim)
        .unwrap_or_default();
    if !ct.eq_ignore_ascii_case(api::REQUEST_TYPE) {
        return Err(ApiError::new(
            415,
            "unsupported_media_type",
            format!(
                "Send the DER of a TKE Request with Content-Type: {}.",
                api::REQUEST_TYPE
            ),
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
        http::drain(stream, len - already, deadline);
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
    let body = http::read_body(stream, body, len, deadline).map_err(|e| match e {
        ReadError::Timeout => ApiError::new(
            408,
            "request_timeout",
            "The request body did not arrive in time.",
        ),
        _ => ApiError::new(400, "bad_http", "The request body ended early."),
    })?;
    *buf = rest;
    log.body_read = true;
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
        (_, k) => {
            return Err(ApiError::new(
                400,
                "wrong_request_kind",
                format!(
                    "This endpoint takes a {} (Request.{}); send the other kind to .../{}.",
                    k.name(),
                    k.name(),
                    if k == Kind::Query { "command" } else { "query" }
                ),
            ))
        }
    }
    // One request at a time per unit; the unit saves its state before it answers.
    let tke_unit::Answer {
        response: answer,
        internal_errors,
    } = hosted
        .unit
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .answer(&body);
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
