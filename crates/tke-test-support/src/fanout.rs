//! Fan-out measurements: fleets of emulated units with a simulated HSM round trip, and
//! the critical path a ceremony takes through them, in commands.
//!
//! The critical path is the longest chain of exchanges (queries and commands) in which
//! each one started after the one before it had been answered: what the ceremony sends
//! one after the other, however many units it drives. With a latency well above the
//! time the client needs to start the exchanges of one parallel step (tens of
//! milliseconds on a loaded 2-core machine), exchanges that do not wait for each other
//! overlap, so the chain counts the ceremony's sequential steps and nothing else.

use std::{
    sync::{Arc, Mutex},
    time::Instant,
};

use tempfile::TempDir;
use tke_client::{
    embedded::Latency, Client, ClientError, EmbeddedFleet, FleetSpec, Provisioning, Transport,
    UnitDescriptor,
};
use tke_proto::UnitId;

/// One exchange as a [`Timeline`] saw it.
#[derive(Clone, Copy, Debug)]
struct Span {
    unit: UnitId,
    start: Instant,
    end: Instant,
}

/// Records when each exchange through the transports it wraps started and ended.
#[derive(Clone, Debug, Default)]
pub struct Timeline(Arc<Mutex<Vec<Span>>>);

impl Timeline {
    /// An empty timeline.
    pub fn new() -> Self {
        Self::default()
    }

    /// `inner`, with every exchange recorded here.
    pub fn wrap(&self, inner: Arc<dyn Transport>) -> Arc<dyn Transport> {
        Arc::new(Timed {
            inner,
            timeline: self.clone(),
        })
    }

    /// Forgets what was recorded (e.g. a client's first queries).
    pub fn clear(&self) {
        self.spans().clear();
    }

    /// How many exchanges were recorded.
    pub fn exchanges(&self) -> usize {
        self.spans().len()
    }

    /// The most exchanges recorded with one unit.
    pub fn busiest_unit(&self) -> usize {
        let spans = self.spans();
        let mut counts: std::collections::HashMap<UnitId, usize> = Default::default();
        for s in spans.iter() {
            *counts.entry(s.unit).or_default() += 1;
        }
        counts.into_values().max().unwrap_or(0)
    }

    /// The length, in exchanges, of the longest chain of recorded exchanges in which each
    /// started after the previous one ended (see the module docs).
    pub fn critical_path(&self) -> usize {
        let mut spans = self.spans().clone();
        spans.sort_by_key(|s| s.start);
        // depth[i]: the longest chain ending with spans[i]. Quadratic: a few thousand
        // exchanges at most.
        let mut depth = vec![0usize; spans.len()];
        for i in 0..spans.len() {
            let before = (0..i)
                .filter(|&j| spans[j].end <= spans[i].start)
                .map(|j| depth[j])
                .max()
                .unwrap_or(0);
            depth[i] = before + 1;
        }
        depth.into_iter().max().unwrap_or(0)
    }

    fn spans(&self) -> std::sync::MutexGuard<'_, Vec<Span>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A transport that records its exchanges in a [`Timeline`].
struct Timed {
    inner: Arc<dyn Transport>,
    timeline: Timeline,
}

impl Transport for Timed {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn list_units(&self) -> Result<Vec<UnitDescriptor>, ClientError> {
        self.inner.list_units()
    }

    fn exchange(&self, unit: &UnitId, request_der: &[u8]) -> Result<Vec<u8>, ClientError> {
        let start = Instant::now();
        let answer = self.inner.exchange(unit, request_der);
        let end = Instant::now();
        self.timeline.spans().push(Span {
            unit: *unit,
            start,
            end,
        });
        answer
    }

    fn provisioning(&self) -> Option<&dyn Provisioning> {
        self.inner.provisioning()
    }
}

/// A temporary directory in memory (`/dev/shm`) where there is one, else in the
/// temporary directory: for units whose storage must not be one disk they all queue on
/// (each real unit has its own).
///
/// # Panics
/// When it cannot be made.
pub fn memory_tempdir() -> TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .unwrap_or_else(|e| panic!("temporary directory: {e}"))
}

/// Embedded fleets standing in for servers, their units answering after a simulated
/// round trip, behind one client whose exchanges a [`Timeline`] records.
pub struct LatencyFleet {
    /// The client over every fleet.
    pub client: Client,
    /// Its exchanges (the client's first queries already forgotten).
    pub timeline: Timeline,
    _dir: TempDir,
}

impl LatencyFleet {
    /// `servers` embedded fleets of `spec` each, every unit with `latency`, all in
    /// imprint mode.
    ///
    /// The fleets live in memory (`/dev/shm`, where there is one; else the temporary
    /// directory): each real unit has storage of its own, while emulated units on one disk
    /// would queue their state writes (an fsync per command) behind each other, and the
    /// figure would measure the disk.
    ///
    /// # Panics
    /// When a fleet cannot be made.
    pub fn new(servers: usize, spec: FleetSpec, latency: Latency) -> Self {
        let dir = memory_tempdir();
        let timeline = Timeline::new();
        let endpoints = (0..servers)
            .map(|i| {
                let path = dir.path().join(format!("server-{i}"));
                let fleet = EmbeddedFleet::create(&path, spec)
                    .unwrap_or_else(|e| panic!("fleet {}: {e}", path.display()));
                fleet
                    .set_latency(latency)
                    .unwrap_or_else(|e| panic!("latency of {}: {e}", path.display()));
                let ca = fleet.ca().clone();
                (timeline.wrap(Arc::new(fleet)), ca)
            })
            .collect();
        let client = Client::connect(endpoints).unwrap_or_else(|e| panic!("connect: {e}"));
        timeline.clear();
        Self {
            client,
            timeline,
            _dir: dir,
        }
    }

    /// How many units the fleets hold.
    pub fn units(&self) -> usize {
        self.client.units().len()
    }
}
