//! How expiry passes judge idleness without a clock inside `apply`: a
//! count of changes per entry and the mark a pass left on it.

use serde::{Deserialize, Serialize};

/// What an expiry pass (`ExpireGroups`, `ExpireProducerKeys`) judges an
/// entry's idleness by, with no clock inside `apply`: a count of the
/// commands that changed it, and the count and time at which a pass last
/// found it idle.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    pub changes: u64,
    /// `(changes, now_ms)` when a pass last found the entry idle and
    /// changed since its previous mark.
    pub idle_mark: Option<(u64, i64)>,
}

/// What one expiry pass does with an entry.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Unchanged and idle since its mark for the whole retention.
    Expire,
    /// Kept, with this mark.
    Keep(Option<(u64, i64)>),
}

impl Activity {
    /// This pass's verdict at `now_ms`: an entry in use (`busy`) carries
    /// no mark; an idle one is marked when first found idle or changed
    /// since its mark, and expires once unchanged since its mark for
    /// `retention_ms`.
    pub(super) fn judge(&self, busy: bool, now_ms: i64, retention_ms: u64) -> Verdict {
        let retention_ms = i64::try_from(retention_ms).unwrap_or(i64::MAX);
        match self.idle_mark {
            _ if busy => Verdict::Keep(None),
            Some((changes, since)) if changes == self.changes => {
                if now_ms.saturating_sub(since) >= retention_ms {
                    Verdict::Expire
                } else {
                    Verdict::Keep(Some((changes, since)))
                }
            }
            _ => Verdict::Keep(Some((self.changes, now_ms))),
        }
    }

    /// Counts one more change to `key` in `activity`.
    pub(super) fn touch(activity: &mut imbl::OrdMap<String, Activity>, key: &str) {
        match activity.get_mut(key) {
            Some(entry) => entry.changes += 1,
            None => {
                activity.insert(key.to_string(), Activity { changes: 1, idle_mark: None });
            }
        }
    }
}
