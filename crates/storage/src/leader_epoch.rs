//! The leader-epoch checkpoint (Kafka's `LeaderEpochFileCache`): for each
//! leader epoch, the first offset written in it. A follower that rejoins
//! asks the leader for the end offset of its own latest epoch and truncates
//! whatever it holds past that, so logs never silently diverge.
//!
//! File `leader-epoch-checkpoint`, text as in Kafka: a version line (0), a
//! count line, then `epoch start_offset` per line. Rewritten atomically on
//! every change (changes are rare: one per leader change).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use brook_record::{LeaderEpoch, Offset};

use crate::error::StorageError;
use crate::recovery::write_file_atomically;

pub(crate) const LEADER_EPOCH_FILE: &str = "leader-epoch-checkpoint";

/// The cache as readers see it: a copy replaced whole on every change, so
/// a reader (a leader answering a follower's epoch query on an async
/// worker) never waits on the writer, which may be in an fsync.
#[derive(Debug, Default)]
pub(crate) struct PublishedEpochs(RwLock<Arc<[(LeaderEpoch, Offset)]>>);

impl PublishedEpochs {
    pub(crate) fn get(&self) -> Arc<[(LeaderEpoch, Offset)]> {
        // Poisoned only if a writer panicked mid-swap: the Arc is whole.
        Arc::clone(&self.0.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    fn set(&self, entries: &[(LeaderEpoch, Offset)]) {
        *self.0.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::from(entries);
    }
}

/// Invariant: epochs and start offsets both strictly increase.
#[derive(Debug)]
pub(crate) struct LeaderEpochCache {
    path: PathBuf,
    entries: Vec<(LeaderEpoch, Offset)>,
    published: Arc<PublishedEpochs>,
}

impl LeaderEpochCache {
    /// Loads the checkpoint in `dir`, and whether it could be trusted: a
    /// missing or damaged file gives an empty cache and `false`, and the
    /// log then rebuilds the cache from its batches' headers
    /// ([`LeaderEpochCache::rebuild`]), since truncation after a leader
    /// change depends on it.
    pub(crate) fn load(dir: &Path) -> (LeaderEpochCache, bool) {
        let path = dir.join(LEADER_EPOCH_FILE);
        let (entries, trusted) = match std::fs::read_to_string(&path) {
            Ok(text) => match parse(&text) {
                Some(entries) => (entries, true),
                None => {
                    tracing::warn!(path = %path.display(), "leader-epoch checkpoint is damaged; rebuilding it from the log");
                    (Vec::new(), false)
                }
            },
            Err(_) => (Vec::new(), false),
        };
        let published = Arc::new(PublishedEpochs::default());
        published.set(&entries);
        (LeaderEpochCache { path, entries, published }, trusted)
    }

    /// Rebuilds the cache from `(leader epoch, base offset)` of every batch
    /// in log order (each batch carries the epoch it was written in), and
    /// writes the checkpoint.
    pub(crate) fn rebuild(
        &mut self,
        batches: impl IntoIterator<Item = (LeaderEpoch, Offset)>,
    ) -> Result<(), StorageError> {
        self.entries.clear();
        for (epoch, base_offset) in batches {
            if self.latest().is_none_or(|(latest, _)| epoch > latest) {
                self.entries.push((epoch, base_offset));
            }
        }
        self.persist()
    }

    pub(crate) fn latest(&self) -> Option<(LeaderEpoch, Offset)> {
        self.entries.last().copied()
    }

    /// The copy readers see, kept current by every change.
    pub(crate) fn published(&self) -> Arc<PublishedEpochs> {
        Arc::clone(&self.published)
    }

    #[cfg(test)]
    pub(crate) fn entries(&self) -> &[(LeaderEpoch, Offset)] {
        &self.entries
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The epoch the batch at `offset` was written in, as far as the
    /// checkpoint knows (`None` before the first epoch it records).
    pub(crate) fn epoch_at(&self, offset: Offset) -> Option<LeaderEpoch> {
        let index = self.entries.partition_point(|&(_, start)| start <= offset);
        (index > 0).then(|| self.entries[index - 1].0)
    }

    /// Records that `epoch` starts at `start_offset`, if it is newer than
    /// the latest epoch known.
    pub(crate) fn assign(&mut self, epoch: LeaderEpoch, start_offset: Offset) -> Result<(), StorageError> {
        match self.latest() {
            Some((latest, _)) if epoch <= latest => return Ok(()),
            Some((_, latest_start)) => debug_assert!(start_offset >= latest_start, "epoch starts only move forward"),
            None => {}
        }
        // A new epoch that starts where an older one did replaces it: that
        // older leader wrote nothing that survives.
        self.entries.retain(|&(_, start)| start < start_offset);
        self.entries.push((epoch, start_offset));
        self.persist()
    }

    /// The end offset of `epoch` (the start of the next epoch, or
    /// `log_end_offset` for the latest one), with the largest epoch at or
    /// below it that the log knows. `None` if the log knows no such epoch.
    pub(crate) fn end_offset_for(&self, epoch: LeaderEpoch, log_end_offset: Offset) -> Option<(LeaderEpoch, Offset)> {
        end_offset_in(&self.entries, epoch, log_end_offset)
    }

    /// Forgets epochs that start at or after `offset` (the log was cut there).
    /// Forgets every epoch: the log holds none of their records any more.
    pub(crate) fn clear(&mut self) -> Result<(), StorageError> {
        if self.entries.is_empty() {
            return Ok(());
        }
        self.entries.clear();
        self.persist()
    }

    pub(crate) fn truncate_from_end(&mut self, offset: Offset) -> Result<(), StorageError> {
        let before = self.entries.len();
        self.entries.retain(|&(_, start)| start < offset);
        if self.entries.len() != before {
            self.persist()?;
        }
        Ok(())
    }

    /// The log now starts at `log_start_offset`: epochs that ended before it
    /// go, and the one that holds it starts there.
    pub(crate) fn truncate_from_start(&mut self, log_start_offset: Offset) -> Result<(), StorageError> {
        let holding = self.entries.partition_point(|&(_, start)| start <= log_start_offset);
        if holding <= 1 && self.entries.first().is_none_or(|&(_, start)| start >= log_start_offset) {
            return Ok(());
        }
        let mut kept = self.entries.split_off(holding.saturating_sub(1));
        if let Some(first) = kept.first_mut() {
            first.1 = first.1.max(log_start_offset);
        }
        self.entries = kept;
        self.persist()
    }

    fn persist(&self) -> Result<(), StorageError> {
        self.published.set(&self.entries);
        let mut text = format!("0\n{}\n", self.entries.len());
        for (epoch, start) in &self.entries {
            text.push_str(&format!("{epoch} {start}\n"));
        }
        write_file_atomically(&self.path, text.as_bytes())
    }
}

/// [`LeaderEpochCache::end_offset_for`] over `entries`.
pub(crate) fn end_offset_in(
    entries: &[(LeaderEpoch, Offset)],
    epoch: LeaderEpoch,
    log_end_offset: Offset,
) -> Option<(LeaderEpoch, Offset)> {
    let index = entries.partition_point(|&(known, _)| known <= epoch);
    if index == 0 {
        return None;
    }
    let (found, _) = entries[index - 1];
    let end = entries.get(index).map_or(log_end_offset, |&(_, start)| start);
    Some((found, end))
}

fn parse(text: &str) -> Option<Vec<(LeaderEpoch, Offset)>> {
    let mut lines = text.lines();
    if lines.next()?.trim() != "0" {
        return None;
    }
    let count: usize = lines.next()?.trim().parse().ok()?;
    let mut entries = Vec::with_capacity(count.min(1 << 16));
    for line in lines.by_ref().take(count) {
        let mut fields = line.split_whitespace();
        let epoch = fields.next()?.parse().ok().map(LeaderEpoch)?;
        let start = fields.next()?.parse().ok().map(Offset)?;
        if let Some(&(previous_epoch, previous_start)) = entries.last() {
            if epoch <= previous_epoch || start <= previous_start {
                return None;
            }
        }
        entries.push((epoch, start));
    }
    (entries.len() == count).then_some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_offset_for_epoch_answers_as_kafka_does() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut cache, _) = LeaderEpochCache::load(dir.path());
        cache.assign(LeaderEpoch(1), Offset(0)).expect("assign");
        cache.assign(LeaderEpoch(3), Offset(10)).expect("assign");
        cache.assign(LeaderEpoch(4), Offset(25)).expect("assign");
        let leo = Offset(40);
        assert_eq!(cache.end_offset_for(LeaderEpoch(0), leo), None);
        assert_eq!(cache.end_offset_for(LeaderEpoch(1), leo), Some((LeaderEpoch(1), Offset(10))));
        // Epoch 2 never wrote: the answer is epoch 1's end.
        assert_eq!(cache.end_offset_for(LeaderEpoch(2), leo), Some((LeaderEpoch(1), Offset(10))));
        assert_eq!(cache.end_offset_for(LeaderEpoch(4), leo), Some((LeaderEpoch(4), leo)));
        assert_eq!(cache.end_offset_for(LeaderEpoch(9), leo), Some((LeaderEpoch(4), leo)));

        let (reloaded, _) = LeaderEpochCache::load(dir.path());
        assert_eq!(reloaded.entries(), cache.entries());

        cache.truncate_from_end(Offset(25)).expect("truncate");
        assert_eq!(cache.latest(), Some((LeaderEpoch(3), Offset(10))));
        cache.truncate_from_start(Offset(12)).expect("truncate");
        assert_eq!(cache.entries(), &[(LeaderEpoch(3), Offset(12))]);
        assert_eq!(LeaderEpochCache::load(dir.path()).0.entries(), cache.entries());
    }

    #[test]
    fn a_damaged_checkpoint_loads_as_empty() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join(LEADER_EPOCH_FILE), "0\n2\n5 10\nbanana\n").expect("write");
        assert!(LeaderEpochCache::load(dir.path()).0.entries().is_empty());
    }
}
