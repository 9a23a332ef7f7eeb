//! Idle and slow clients cannot starve tke-unitd: a bounded flood on loopback of 5,000
//! idle TCP connections and 200 clients sending one byte a second, during which a good
//! client's health check and signed command are answered within seconds and the
//! server's memory stays bounded; and the connection caps close what is beyond them.
//! Every count and every wait is fixed, and the tests stop by themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    fs,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::*;
use tke_proto::Command;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};

const IDLE: usize = 5000;
const SLOW: usize = 200;
/// The flood comes from this many loopback addresses (127.0.1.1, 127.0.1.2, ...), as
/// from a few machines, each under the per-address cap; the good client is 127.0.0.1.
const SOURCES: usize = 20;
/// How long the flood lasts.
const FLOOD: Duration = Duration::from_secs(14);

fn source(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 1, (i % SOURCES) as u8 + 1))
}

async fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

/// What the flood did, counted by its tasks.
#[derive(Default)]
struct Counts {
    /// Connections made.
    connected: AtomicUsize,
    /// Connections the server closed (deadlines); their tasks connect again.
    closed_by_server: AtomicUsize,
    /// Bytes the slow clients got to send.
    slow_bytes: AtomicUsize,
}

/// Holds a connection that sends nothing until the server closes it, then opens
/// another, until `end`.
async fn idle_client(from: IpAddr, to: SocketAddr, end: tokio::time::Instant, n: Arc<Counts>) {
    while tokio::time::Instant::now() < end {
        let Ok(mut tcp) = connect_from(from, to).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        n.connected.fetch_add(1, Ordering::Relaxed);
        let mut b = [0u8; 64];
        match tokio::time::timeout_at(end, tcp.read(&mut b)).await {
            Ok(_) => {
                n.closed_by_server.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => return,
        }
    }
}

/// Sends one byte a second until the server closes the connection, then opens another,
/// until `end`. With `tls`, the bytes are those of an HTTP request head after a TLS
/// handshake; without, those of a TLS record that never completes.
async fn slow_client(
    from: IpAddr,
    to: SocketAddr,
    tls: Option<tokio_rustls::TlsConnector>,
    end: tokio::time::Instant,
    n: Arc<Counts>,
) {
    let head = b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ".repeat(4);
    let record = [&[0x16u8, 0x03, 0x01, 0x02, 0x00][..], &[0u8; 512]].concat();
    while tokio::time::Instant::now() < end {
        let Ok(tcp) = connect_from(from, to).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        n.connected.fetch_add(1, Ordering::Relaxed);
        let mut stream: Box<dyn AsyncStream> = match &tls {
            Some(c) => {
                let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
                match tokio::time::timeout_at(end, c.connect(name, tcp)).await {
                    Ok(Ok(s)) => Box::new(s),
                    Ok(Err(_)) => continue,
                    Err(_) => return,
                }
            }
            None => Box::new(tcp),
        };
        let bytes = if tls.is_some() {
            &head[..]
        } else {
            &record[..]
        };
        for b in bytes {
            if stream.write_all(&[*b]).await.is_err() || stream.flush().await.is_err() {
                break;
            }
            n.slow_bytes.fetch_add(1, Ordering::Relaxed);
            // A read that ends within the second: the server closed (or answered).
            let mut r = [0u8; 256];
            match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut r)).await {
                Ok(_) => {
                    n.closed_by_server.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(_) if tokio::time::Instant::now() >= end => return,
                Err(_) => {}
            }
        }
    }
}

trait AsyncStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> AsyncStream for T {}

/// Enough file descriptors for this process's side of the flood (the server raises its
/// own limit); the child server inherits the raised soft limit too.
fn raise_open_files(wanted: u64) {
    let got = rlimit::increase_nofile_limit(wanted).unwrap();
    assert!(
        got >= wanted,
        "this test needs {wanted} open files; the hard limit allows {got}"
    );
}

#[test]
fn idle_and_slow_clients_do_not_starve_a_good_client() {
    raise_open_files((IDLE + SLOW + 1024) as u64);
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("srv");
    let port = free_port();
    init(&dir, port, &["--operational", "1", "--recovery", "0"]);
    let server = ServerProc::start(&dir, port);
    let ca = ca_of(&dir);
    let client = client(&server);
    let unit = &client.units()[0];
    let alice = MemSigner::new("alice");
    set_up(&client, &alice);
    let rss_before = server.rss_kib();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let to = SocketAddr::from(([127, 0, 0, 1], port));
    let counts = Arc::new(Counts::default());
    let end = tokio::time::Instant::now() + FLOOD;
    let connector = tokio_rustls::TlsConnector::from(tls_client(&ca));
    let mut tasks = Vec::new();
    for i in 0..IDLE {
        tasks.push(runtime.spawn(idle_client(source(i), to, end, counts.clone())));
    }
    for i in 0..SLOW {
        let tls = (i % 2 == 0).then(|| connector.clone());
        tasks.push(runtime.spawn(slow_client(source(i), to, tls, end, counts.clone())));
    }
    // Let the flood build up.
    let started = Instant::now();
    while counts.connected.load(Ordering::Relaxed) < IDLE + SLOW
        && started.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let flooding = counts.connected.load(Ordering::Relaxed);
    assert!(
        flooding >= IDLE + SLOW,
        "the flood reached {flooding} connections"
    );

    // The good client, three times over the flood (the third after the server's
    // handshake deadline has closed the first idle wave and it has come back).
    let mut timings = Vec::new();
    let mut rss_during = 0;
    for round in 0..3 {
        let t = Instant::now();
        let r = raw(
            port,
            &ca,
            &request("GET", "/v1/health", &[("Connection", "close")], b""),
        );
        assert_eq!(r.status, 200, "round {round}: {:?}", r.json());
        let health = t.elapsed();
        let t = Instant::now();
        client.run(unit, &Command::ClearNew, &[&alice]).unwrap();
        let command = t.elapsed();
        timings.push((health, command));
        assert!(
            health < Duration::from_secs(3) && command < Duration::from_secs(5),
            "round {round}: health check in {health:?}, signed command in {command:?}"
        );
        rss_during = rss_during.max(server.rss_kib());
        std::thread::sleep(Duration::from_secs(3));
    }
    for t in tasks {
        runtime.block_on(t).unwrap();
    }
    drop(runtime);
    eprintln!(
        "flood: {} connections made, {} closed by the server, {} slow bytes sent; server \
         RSS {rss_before} KiB before, at most {rss_during} KiB during; good client \
         (health, signed command): {timings:?}",
        counts.connected.load(Ordering::Relaxed),
        counts.closed_by_server.load(Ordering::Relaxed),
        counts.slow_bytes.load(Ordering::Relaxed),
    );
    // The deadlines did their work: idle connections were closed (after the handshake
    // deadline, 5 s), and so were the slow ones. How many closes fit in the test's 14 s
    // depends on how fast the 5,000 connections could be opened on a loaded 2-core
    // machine (4,584 to over 5,000 seen), so this asks for half of them; the exact
    // deadlines are checked with paused time in `http.rs`'s unit tests.
    assert!(
        counts.closed_by_server.load(Ordering::Relaxed) >= IDLE / 2,
        "the server closed only {} connections",
        counts.closed_by_server.load(Ordering::Relaxed)
    );
    // A connection that waits costs memory, bounded: here about 10 KiB each.
    assert!(
        rss_during <= rss_before + 96 * 1024,
        "the server grew from {rss_before} KiB to {rss_during} KiB under the flood"
    );
    // And the server serves on, without a panic.
    assert!(client.query(unit).is_ok());
    assert!(!server.logs().contains("panicked"));
}

#[test]
fn connections_beyond_the_caps_are_closed_at_once() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("srv");
    let port = free_port();
    init(&dir, port, &["--operational", "1", "--recovery", "0"]);
    let config = dir.join("unitd.toml");
    let text = fs::read_to_string(&config).unwrap();
    let mut edited = text.clone();
    for (from, to) in [
        ("max_connections = 8192", "max_connections = 60"),
        (
            "max_connections_per_peer = 2048",
            "max_connections_per_peer = 40",
        ),
        // Held connections stay open for the whole test.
        ("handshake_timeout_secs = 5", "handshake_timeout_secs = 60"),
        ("read_timeout_secs = 10", "read_timeout_secs = 60"),
    ] {
        assert!(edited.contains(from), "{from} in {text}");
        edited = edited.replace(from, to);
    }
    fs::write(&config, edited).unwrap();
    let server = ServerProc::start(&dir, port);
    let to = SocketAddr::from(([127, 0, 0, 1], port));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // 45 connections from one address, then 30 from another: the first address gets
    // its 40, the second the 20 left of the 60.
    let mut held = Vec::new();
    let closed: Vec<bool> = runtime.block_on(async {
        for i in 0..75 {
            let from = IpAddr::V4(Ipv4Addr::new(127, 0, 1, if i < 45 { 1 } else { 2 }));
            held.push(connect_from(from, to).await.unwrap());
            // In order: the server accepts them one after another.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        // The server sends nothing on a connection it keeps: a read that ends at once
        // means it closed the connection.
        let mut closed = Vec::new();
        for s in &mut held {
            let mut b = [0u8; 16];
            closed.push(
                tokio::time::timeout(Duration::from_millis(20), s.read(&mut b))
                    .await
                    .is_ok(),
            );
        }
        closed
    });
    let expected: Vec<bool> = (0..75).map(|i| (40..45).contains(&i) || i >= 65).collect();
    assert_eq!(closed, expected, "which connections the server closed");
    let logs = server.logs();
    assert_eq!(
        logs.matches("too many connections from this address")
            .count(),
        5,
        "{logs}"
    );
    assert_eq!(
        logs.matches("too many connections: closing a new one")
            .count(),
        10,
        "{logs}"
    );
    // Once they go, the server takes new clients again.
    drop(held);
    drop(runtime);
    // (The server sees them close at once: a second is plenty.)
    std::thread::sleep(Duration::from_secs(1));
    let client = client(&server);
    assert!(client.query(&client.units()[0]).is_ok());
}
