//! Crash injection: named points in a ceremony where a test can make the process die
//! as a power loss or `kill -9` would, to prove that the ceremony resumes from there.
//!
//! A point fires only when the environment variable [`CRASH_AT`] names it exactly (a
//! comma-separated list may name several); the process then sends itself `SIGKILL`, so
//! no destructor, flush or unwinding runs. Without the variable a point costs one
//! environment lookup. Point names are `<ceremony>:<step>`, e.g.
//! `auto-init:after-thresholds`; each ceremony's docs list its points.
//!
//! ```
//! // Nothing happens unless TKE_CRASH_AT names the point.
//! tke_ceremony::crash::point("example:nowhere");
//! ```

use nix::sys::signal::{raise, Signal};

/// The environment variable that names the crash points to fire.
pub const CRASH_AT: &str = "TKE_CRASH_AT";

/// Kills the process with `SIGKILL` when [`CRASH_AT`] names `name`.
pub fn point(name: &str) {
    let Some(wanted) = std::env::var_os(CRASH_AT) else {
        return;
    };
    let wanted = wanted.to_string_lossy();
    if wanted.split(',').any(|w| w.trim() == name) {
        // SIGKILL cannot be caught: the process stops here, as on a power loss. If
        // raising fails (it cannot for SIGKILL on Linux), abort rather than go on.
        let _ = raise(Signal::SIGKILL);
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_point_not_named_does_nothing() {
        // The variable is not set in unit tests, or names other points.
        super::point("tests:never-named");
    }
}
