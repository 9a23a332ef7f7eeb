//! A simulated round trip: test and benchmark tooling that makes an emulated unit answer
//! as slowly as a real HSM behind a network does.

use std::time::Duration;

/// How long a unit waits before answering each request (query or command), standing in
/// for a real HSM's round trip. Off (zero) by default. Test and benchmark tooling: it
/// lets a fan-out figure measure the design rather than this machine's cores, since real
/// units are separate HSMs that work while the client waits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Latency(Duration);

/// Why a latency was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LatencyError {
    /// Above [`Latency::MAX_MS`].
    #[error(
        "a crypto unit latency of {ms} ms is out of range: give 0 to {max} milliseconds (0: none)",
        max = Latency::MAX_MS
    )]
    OutOfRange {
        /// The value given.
        ms: u64,
    },
}

impl Latency {
    /// No latency: a unit answers as soon as its work is done.
    pub const NONE: Self = Self(Duration::ZERO);

    /// The largest latency accepted, in milliseconds (10 s, far above any HSM's round
    /// trip, below the clients' and servers' timeouts).
    pub const MAX_MS: u64 = 10_000;

    /// A latency of `ms` milliseconds.
    ///
    /// # Errors
    /// [`LatencyError::OutOfRange`] above [`Latency::MAX_MS`].
    pub fn from_millis(ms: u64) -> Result<Self, LatencyError> {
        if ms > Self::MAX_MS {
            return Err(LatencyError::OutOfRange { ms });
        }
        Ok(Self(Duration::from_millis(ms)))
    }

    /// The latency in milliseconds.
    pub fn as_millis(self) -> u64 {
        // At most MAX_MS: the conversion cannot truncate.
        u64::try_from(self.0.as_millis()).unwrap_or(Self::MAX_MS)
    }

    /// The latency as a duration.
    pub fn duration(self) -> Duration {
        self.0
    }

    /// Whether there is none.
    pub fn is_none(self) -> bool {
        self.0.is_zero()
    }
}

impl core::str::FromStr for Latency {
    type Err = LatencyParseError;

    /// Parses a number of milliseconds (as `--latency-ms` takes it).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ms: u64 = s
            .trim()
            .parse()
            .map_err(|_| LatencyParseError::NotANumber)?;
        Self::from_millis(ms).map_err(LatencyParseError::Range)
    }
}

/// Why a latency in milliseconds could not be read from text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LatencyParseError {
    /// Not a whole number of milliseconds.
    #[error(
        "a crypto unit latency is a whole number of milliseconds from 0 to {max}",
        max = Latency::MAX_MS
    )]
    NotANumber,
    /// Out of range.
    #[error(transparent)]
    Range(LatencyError),
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_range_is_checked() {
        assert_eq!(Latency::default(), Latency::NONE);
        assert!(Latency::NONE.is_none());
        assert_eq!(Latency::from_millis(0).unwrap(), Latency::NONE);
        assert_eq!(Latency::from_millis(20).unwrap().as_millis(), 20);
        assert_eq!(
            Latency::from_millis(10_000).unwrap().duration(),
            Duration::from_secs(10)
        );
        assert_eq!(
            Latency::from_millis(10_001),
            Err(LatencyError::OutOfRange { ms: 10_001 })
        );
        assert_eq!("25".parse::<Latency>().unwrap().as_millis(), 25);
        for bad in ["-1", "1.5", "", "20ms"] {
            assert_eq!(
                bad.parse::<Latency>(),
                Err(LatencyParseError::NotANumber),
                "{bad}"
            );
        }
        let e = "99999".parse::<Latency>().unwrap_err().to_string();
        assert!(
            e.contains("99999 ms is out of range: give 0 to 10000"),
            "{e}"
        );
    }
}
