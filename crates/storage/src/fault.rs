//! Fault injection for tests, off unless its environment variable is set
//! when the process starts: `BROOK_FAULT_FSYNC_DELAY_MS=N` makes every
//! segment fsync take N ms longer (a slow disk). Read once; costs one
//! branch on a cached value when off.

use std::sync::OnceLock;
use std::time::Duration;

/// The variable that slows every segment fsync, in milliseconds.
pub const FSYNC_DELAY_VARIABLE: &str = "BROOK_FAULT_FSYNC_DELAY_MS";

fn fsync_delay() -> Option<Duration> {
    static DELAY: OnceLock<Option<Duration>> = OnceLock::new();
    *DELAY.get_or_init(|| {
        let millis: u64 = std::env::var(FSYNC_DELAY_VARIABLE).ok()?.parse().ok()?;
        tracing::warn!(millis, "fault injection: every segment fsync is slowed ({FSYNC_DELAY_VARIABLE})");
        Some(Duration::from_millis(millis))
    })
}

/// Before an fsync: waits the injected delay, if any.
pub(crate) fn slow_fsync() {
    if let Some(delay) = fsync_delay() {
        std::thread::sleep(delay);
    }
}
