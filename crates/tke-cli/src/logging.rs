//! Diagnostics on standard error, enabled by `TKE_LOG=error|warn|info|debug|trace`.
//!
//! Never a secret, at any level: TKE's own records hold no password, PIN or key, and the
//! `yubikey` crate's records that can (its APDU traces show the PIN) are dropped by
//! [`tke_sigkey_yubikey::is_safe_to_log`].

use std::io::Write as _;

use log::{LevelFilter, Log, Metadata, Record};

/// The environment variable that sets the level.
pub const ENV: &str = "TKE_LOG";

struct Stderr {
    level: LevelFilter,
}

impl Log for Stderr {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.level() <= self.level && tke_sigkey_yubikey::is_safe_to_log(m)
    }

    fn log(&self, record: &Record<'_>) {
        // `log!` does not call `enabled` first: filter here.
        if !self.enabled(record.metadata()) {
            return;
        }
        let _ = writeln!(
            std::io::stderr().lock(),
            "[{} {}] {}",
            record.level(),
            record.target(),
            record.args()
        );
    }

    fn flush(&self) {}
}

/// Installs the logger when `TKE_LOG` names a level; warns about other values.
pub fn init() {
    let Some(value) = std::env::var_os(ENV) else {
        return;
    };
    let level = match value.to_str().map(str::to_ascii_lowercase).as_deref() {
        Some("off" | "") => return,
        Some("error") => LevelFilter::Error,
        Some("warn") => LevelFilter::Warn,
        Some("info") => LevelFilter::Info,
        Some("debug") => LevelFilter::Debug,
        Some("trace") => LevelFilter::Trace,
        _ => {
            eprintln!(
                "Warning: {ENV} must be one of off, error, warn, info, debug, trace; ignored"
            );
            return;
        }
    };
    let logger: &'static Stderr = Box::leak(Box::new(Stderr { level }));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
}
