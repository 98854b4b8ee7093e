//! Fault injection for tests, off unless its environment variable is set
//! when the process starts: `BROOK_FAULT_FSYNC_DELAY_MS=N` makes every
//! segment fsync take N ms longer (a slow disk); `BROOK_FAULT_NOTE_SYNCED=1`
//! writes, beside each segment file, how many of its bytes the last fsync
//! covered (`<segment>.log.synced`), so that a test can drop everything
//! else after a kill -9, as a power loss would drop the page cache (the
//! test harness's `drop_unsynced`). Read once; costs one branch on a
//! cached value when off.

use std::path::Path;
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

/// The variable that notes, beside each segment, what its last fsync covered.
pub const NOTE_SYNCED_VARIABLE: &str = "BROOK_FAULT_NOTE_SYNCED";
/// The note's suffix, after the segment file's own name.
pub const SYNCED_NOTE_SUFFIX: &str = ".synced";

fn noting_synced() -> bool {
    static NOTING: OnceLock<bool> = OnceLock::new();
    *NOTING.get_or_init(|| {
        let on = std::env::var(NOTE_SYNCED_VARIABLE).is_ok_and(|value| value == "1");
        if on {
            tracing::warn!("fault injection: noting what each segment fsync covers ({NOTE_SYNCED_VARIABLE})");
        }
        on
    })
}

/// After a segment's fsync: notes how many of its bytes are on disk, if
/// asked to. The note is itself fsynced (a power loss keeps it).
pub(crate) fn note_synced(segment: &Path, synced_bytes: u64) {
    if !noting_synced() {
        return;
    }
    let mut note = segment.as_os_str().to_owned();
    note.push(SYNCED_NOTE_SUFFIX);
    let written = std::fs::File::create(&note)
        .and_then(|mut file| std::io::Write::write_all(&mut file, synced_bytes.to_string().as_bytes()).map(|()| file))
        .and_then(|file| file.sync_all());
    if let Err(error) = written {
        tracing::warn!(note = %Path::new(&note).display(), %error, "fault injection: could not note a segment's fsync");
    }
}

/// Before an fsync: waits the injected delay, if any.
pub(crate) fn slow_fsync() {
    if let Some(delay) = fsync_delay() {
        std::thread::sleep(delay);
    }
}
