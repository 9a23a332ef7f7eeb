//! The test fixture: pcscd with vsmartcard's two virtual readers, and virtual cards
//! inserted into them and removed again.
//!
//! ```no_run
//! use tke_piv_vcard::{fixture::Bench, Card, CardConfig};
//!
//! let bench = Bench::acquire(); // one test at a time, machine-wide
//! let card = bench.insert(0, Card::new(CardConfig::new(12345678)));
//! // ... talk to "Virtual PCD 00 00" through PC/SC ...
//! let card = card.remove(); // the card's final state
//! assert_eq!(card.pin_tries_left(), 3);
//! ```
//!
//! [`Bench::acquire`] makes sure pcscd runs. If it does not, it starts `pcscd --auto-exit`:
//! that pcscd exits by itself a minute after its last client, so the fixture never stops
//! a pcscd it did not start and leaves none behind. `ci/test.sh` starts pcscd for the whole
//! run instead (see `ci/pcsc.sh`). A missing component fails the test with a message that
//! names `ci/setup.sh`; nothing is skipped.

use std::{
    ffi::{CStr, CString},
    fs::File,
    net::{Shutdown, TcpStream},
    path::Path,
    process::Command,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use pcsc::{Context, ReaderState, Scope, State};

use crate::{vpcd, Card};

/// The names pcscd gives vpcd's two readers, in port order.
pub const READER_NAMES: [&str; 2] = ["Virtual PCD 00 00", "Virtual PCD 00 01"];

const SETUP: &str =
    "install the PC/SC stack with ci/setup.sh (pcscd, vsmartcard-vpcd, yubico-piv-tool)";
const WAIT: Duration = Duration::from_secs(20);

/// Exclusive use of pcscd's virtual readers for one test. Held machine-wide through a lock
/// file, so tests that use cards run one after another, in every process.
pub struct Bench {
    _lock: File,
    ctx: Context,
}

fn pcscd_binary() -> Option<std::path::PathBuf> {
    let mut dirs: Vec<std::path::PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(Into::into));
    dirs.into_iter()
        .map(|d| d.join("pcscd"))
        .find(|p| p.is_file())
}

fn vpcd_configured() -> bool {
    let Ok(dir) = std::fs::read_dir("/etc/reader.conf.d") else {
        return false;
    };
    dir.flatten()
        .any(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains("libifdvpcd")))
}

fn establish() -> Option<Context> {
    Context::establish(Scope::System).ok()
}

impl Bench {
    /// Waits for exclusive use of the virtual readers, makes sure pcscd runs with both of
    /// them, and that both are empty.
    ///
    /// # Panics
    /// When pcscd or vpcd is missing, pcscd cannot be started, or a reader holds a card
    /// that is not ours: each with a message saying what to do.
    pub fn acquire() -> Self {
        let Some(pcscd) = pcscd_binary() else {
            panic!("pcscd is not installed: {SETUP}");
        };
        if !vpcd_configured() {
            panic!(
                "vsmartcard's virtual reader is not configured (no /etc/reader.conf.d file names \
                 libifdvpcd): {SETUP}"
            );
        }
        let lock_path = std::env::temp_dir().join("tke-piv-vcard.lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .unwrap_or_else(|e| panic!("cannot open the lock file {}: {e}", lock_path.display()));
        if let Err(e) = lock.lock() {
            panic!("cannot lock {}: {e}", lock_path.display());
        }

        let ctx = match establish() {
            Some(c) => c,
            None => {
                // Another pcscd may start at the same moment (ci/pcsc.sh's watchdog, or
                // another test binary's fixture); ours then exits, and that one serves.
                let failed = start_pcscd(&pcscd).err();
                wait_for(establish).unwrap_or_else(|| {
                    panic!(
                        "{}",
                        failed.unwrap_or_else(|| {
                            "pcscd was started but does not accept clients".to_owned()
                        })
                    )
                })
            }
        };
        let bench = Self { _lock: lock, ctx };
        let have = wait_for(|| {
            let names = bench.ctx.list_readers_owned().ok()?;
            READER_NAMES
                .iter()
                .all(|w| names.iter().any(|n| n.to_str() == Ok(w)))
                .then_some(())
        });
        if have.is_none() {
            let names = bench.ctx.list_readers_owned().unwrap_or_default();
            panic!(
                "pcscd runs without vsmartcard's virtual readers {READER_NAMES:?} (it has {names:?}): \
                 {SETUP}; if pcscd started before vsmartcard-vpcd was installed, restart it"
            );
        }
        for (i, name) in READER_NAMES.iter().enumerate() {
            if !bench.wait_state(name, false) {
                panic!(
                    "the virtual reader {name:?} holds a card that no test of this run inserted \
                     (a tke-piv-vcard still running on port {}?): stop it",
                    vpcd::VPCD_PORT + i as u16
                );
            }
        }
        bench
    }

    /// Waits until `reader` has (`present`) or lacks a powered card. False on timeout.
    fn wait_state(&self, reader: &str, present: bool) -> bool {
        let Ok(name) = CString::new(reader) else {
            return false;
        };
        let deadline = Instant::now() + WAIT;
        // UNAWARE: the first call answers at once with the current state.
        let mut states = [ReaderState::new(name, State::UNAWARE)];
        loop {
            match self
                .ctx
                .get_status_change(Duration::from_millis(250), &mut states)
            {
                Ok(()) | Err(pcsc::Error::Timeout) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
            let s = states[0].event_state();
            // pcscd reports PRESENT once it has powered the card (MUTE if that failed).
            let has = s.contains(State::PRESENT) && !s.contains(State::MUTE);
            if has == present {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            states[0].sync_current_state();
        }
    }

    /// Waits until pcscd sees a card in virtual reader `index` (one served by another
    /// process, such as the `tke-piv-vcard` binary). False after 20 seconds.
    pub fn wait_present(&self, index: usize) -> bool {
        READER_NAMES
            .get(index)
            .is_some_and(|r| self.wait_state(r, true))
    }

    /// Waits until virtual reader `index` is empty. False after 20 seconds.
    pub fn wait_empty(&self, index: usize) -> bool {
        READER_NAMES
            .get(index)
            .is_some_and(|r| self.wait_state(r, false))
    }

    /// The PC/SC context the bench uses.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Inserts `card` into virtual reader `index` (0 or 1): serves it on a thread and
    /// waits until pcscd has powered it.
    ///
    /// # Panics
    /// When the reader cannot be reached or never sees the card.
    pub fn insert(&self, index: usize, mut card: Card) -> Inserted<'_> {
        let Some(&reader) = READER_NAMES.get(index) else {
            panic!("there are two virtual readers: 0 and 1, not {index}");
        };
        let port = vpcd::VPCD_PORT + index as u16;
        let stream = wait_for(|| TcpStream::connect(("127.0.0.1", port)).ok())
            .unwrap_or_else(|| panic!("cannot connect to vpcd on 127.0.0.1:{port}: {SETUP}"));
        let serial = card.serial();
        let mut serving = stream
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot clone the card's socket: {e}"));
        let thread = std::thread::spawn(move || {
            // An I/O error ends the card's life as a removal does.
            let _ = vpcd::serve(&mut serving, &mut card, |_| {});
            card
        });
        let inserted = Inserted {
            bench: self,
            reader,
            serial,
            stream,
            thread: Some(thread),
        };
        if !self.wait_state(reader, true) {
            panic!("pcscd never saw virtual card {serial} in reader {reader:?}");
        }
        inserted
    }
}

/// Starts `pcscd --auto-exit`; the error is the message to fail with when no pcscd
/// answers after all.
fn start_pcscd(pcscd: &Path) -> Result<(), String> {
    // Daemonizes; exits on its own 60 s after the last client is gone.
    match Command::new(pcscd).arg("--auto-exit").status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!(
            "pcscd is not running and `{} --auto-exit` failed ({s}); start it as root \
             (ci/test.sh does, see ci/pcsc.sh) or `systemctl start pcscd`",
            pcscd.display()
        )),
        Err(e) => Err(format!("cannot run {}: {e}; {SETUP}", pcscd.display())),
    }
}

fn wait_for<T>(mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A virtual card in a reader. Dropping it removes the card; [`Inserted::remove`] also
/// gives its final state back.
pub struct Inserted<'b> {
    bench: &'b Bench,
    reader: &'static str,
    serial: u32,
    stream: TcpStream,
    thread: Option<JoinHandle<Card>>,
}

impl Inserted<'_> {
    /// The reader's name.
    pub fn reader(&self) -> &'static str {
        self.reader
    }

    /// The reader's name as a C string, for `pcsc`.
    pub fn reader_cstr(&self) -> &'static CStr {
        match self.reader {
            "Virtual PCD 00 00" => c"Virtual PCD 00 00",
            _ => c"Virtual PCD 00 01",
        }
    }

    /// The card's serial number.
    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// Removes the card and returns its state.
    ///
    /// # Panics
    /// When the card's thread panicked.
    pub fn remove(mut self) -> Card {
        self.take()
            .unwrap_or_else(|| panic!("the virtual card {} was already removed", self.serial))
    }

    fn take(&mut self) -> Option<Card> {
        let thread = self.thread.take()?;
        let _ = self.stream.shutdown(Shutdown::Both);
        let card = thread.join().ok();
        // The next card may go into this reader only once pcscd has seen this one leave.
        self.bench.wait_state(self.reader, false);
        card
    }
}

impl Drop for Inserted<'_> {
    fn drop(&mut self) {
        self.take();
    }
}
