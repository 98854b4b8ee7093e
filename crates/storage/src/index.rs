//! Sparse, memory-mapped indexes over one segment: the offset index
//! (offset -> file position) and the time index (timestamp -> offset).
//!
//! Both are a file of fixed-size entries made of big-endian 64-bit words,
//! preallocated to the most entries the segment can need and trimmed to the
//! used entries when the segment is sealed or the log closes. A trimmed file
//! tells its own entry count; an untrimmed one (after a crash) ends in
//! zeros, which fail the sanity check and get the index rebuilt.
//!
//! The preallocation is sparse (no disk blocks until written), so that a
//! thousand partitions' indexes cost the disk only what they hold. Before a
//! write could reach a page with no block, the writer reserves the blocks
//! ahead ([`MmapIndex::reserve`], in chunks): on a full disk that fails
//! with a storage error, where a store into an unbacked page of the mapping
//! would kill the process with SIGBUS.
//!
//! Concurrency: the log's one writer appends entries while readers search.
//! Every word is read and written as an `AtomicU64` in the mapping, and the
//! entry count is published with release/acquire, so a reader sees only
//! whole entries the writer finished, and no access is ever a data race.
//! Readers never take a lock.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use memmap2::MmapRaw;

use crate::error::StorageError;

/// A file of entries of `WORDS` big-endian u64 words, mapped into memory.
#[derive(Debug)]
pub(crate) struct MmapIndex<const WORDS: usize> {
    path: PathBuf,
    file: File,
    /// `None` for an empty index that takes no entries (a sealed segment
    /// with none): a zero-length file cannot be mapped.
    map: Option<MmapRaw>,
    capacity_entries: usize,
    entries: AtomicUsize,
    /// Bytes from the start of the file known to have disk blocks.
    reserved_bytes: AtomicUsize,
}

/// How much of an index file is reserved at a time.
const RESERVE_CHUNK_BYTES: usize = 64 << 10;

impl<const WORDS: usize> MmapIndex<WORDS> {
    const ENTRY_BYTES: usize = WORDS * 8;

    /// Opens (or creates) the index at `path`. The entries already in the
    /// file are kept: their count is the file's length over the entry size.
    /// The file then grows to `capacity_entries`, so the writer can append.
    /// Also returns whether the file was there with whole entries; when it
    /// was not, the index starts empty and the caller must rebuild it.
    pub(crate) fn open(path: &Path, capacity_entries: usize) -> Result<(Self, bool), StorageError> {
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(StorageError::io("opening index", path))?;
        let length = file.metadata().map_err(StorageError::io("reading index size", path))?.len() as usize;
        // A length that is not whole entries cannot be trusted at all:
        // start the index empty, and let the caller rebuild it.
        let intact = existed && length % Self::ENTRY_BYTES == 0;
        let length = if length % Self::ENTRY_BYTES != 0 {
            tracing::warn!(path = %path.display(), length, "index size is not whole entries; discarding it");
            file.set_len(0).map_err(StorageError::io("discarding index", path))?;
            0
        } else {
            length
        };
        let entries = length / Self::ENTRY_BYTES;
        let capacity_entries = capacity_entries.max(entries);
        if capacity_entries > entries {
            file.set_len((capacity_entries * Self::ENTRY_BYTES) as u64)
                .map_err(StorageError::io("sizing index", path))?;
        }
        let map = if capacity_entries == 0 {
            None
        } else {
            Some(MmapRaw::map_raw(&file).map_err(StorageError::io("mapping index", path))?)
        };
        // What holds entries was written, so it has blocks.
        let reserved_bytes = AtomicUsize::new(entries * Self::ENTRY_BYTES);
        let index = MmapIndex {
            path: path.to_path_buf(),
            file,
            map,
            capacity_entries,
            entries: AtomicUsize::new(entries),
            reserved_bytes,
        };
        Ok((index, intact))
    }

    /// Creates an empty index at `path`, replacing any file there.
    pub(crate) fn create(path: &Path, capacity_entries: usize) -> Result<Self, StorageError> {
        let file = File::create(path).map_err(StorageError::io("creating index", path))?;
        drop(file);
        Ok(Self::open(path, capacity_entries)?.0)
    }

    fn words(&self) -> &[AtomicU64] {
        let Some(map) = &self.map else {
            return &[];
        };
        let words = self.capacity_entries * WORDS;
        // SAFETY: the mapping is `capacity_entries * ENTRY_BYTES` long (the
        // file was sized to that before mapping, and the mapping lives as
        // long as `self`); an mmap is page-aligned, so 8-byte alignment
        // holds; AtomicU64 has the layout of u64 and any bit pattern is
        // valid. Every access goes through the atomics, so concurrent
        // writer and readers never race. Slots past the file's length after
        // `trim` are never touched: only slots below `entries` are read,
        // and the writer appends only to an untrimmed index.
        unsafe { std::slice::from_raw_parts(map.as_ptr() as *const AtomicU64, words) }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.load(Ordering::Acquire)
    }

    pub(crate) fn is_full(&self) -> bool {
        self.len() >= self.capacity_entries
    }

    /// Entry `index`, which must be below `len()`.
    pub(crate) fn entry(&self, index: usize) -> [u64; WORDS] {
        let words = self.words();
        std::array::from_fn(|word| u64::from_be(words[index * WORDS + word].load(Ordering::Relaxed)))
    }

    /// Makes sure the next `more` entries have disk blocks, reserving the
    /// next chunk of the file if not (`fallocate`). Only the log's writer
    /// calls this, before a write that may append entries.
    pub(crate) fn reserve(&self, more: usize) -> Result<(), StorageError> {
        let needed = ((self.len() + more).min(self.capacity_entries)) * Self::ENTRY_BYTES;
        let reserved = self.reserved_bytes.load(Ordering::Relaxed);
        if needed <= reserved {
            return Ok(());
        }
        let end = (needed.max(reserved + RESERVE_CHUNK_BYTES)).min(self.capacity_entries * Self::ENTRY_BYTES);
        match rustix::fs::fallocate(
            &self.file,
            rustix::fs::FallocateFlags::empty(),
            reserved as u64,
            (end - reserved) as u64,
        ) {
            Ok(()) => {}
            // A file system without fallocate: nothing better to do.
            Err(rustix::io::Errno::OPNOTSUPP) => {}
            Err(error) => {
                return Err(StorageError::io("reserving index space", &self.path)(std::io::Error::from(error)));
            }
        }
        self.reserved_bytes.store(end, Ordering::Relaxed);
        Ok(())
    }

    /// Appends an entry. Only the log's writer calls this.
    pub(crate) fn append(&self, entry: [u64; WORDS]) {
        let index = self.entries.load(Ordering::Relaxed);
        assert!(index < self.capacity_entries, "callers roll the segment before its index is full");
        let words = self.words();
        for (word, value) in entry.iter().enumerate() {
            words[index * WORDS + word].store(value.to_be(), Ordering::Relaxed);
        }
        self.entries.store(index + 1, Ordering::Release);
    }

    /// The last entry for which `at_or_below` holds, given that it holds
    /// for a prefix of the entries (they are sorted by their key).
    pub(crate) fn last_where(&self, at_or_below: impl Fn(&[u64; WORDS]) -> bool) -> Option<[u64; WORDS]> {
        let count = self.len();
        let (mut low, mut high) = (0usize, count);
        while low < high {
            let middle = low + (high - low) / 2;
            if at_or_below(&self.entry(middle)) {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        (low > 0).then(|| self.entry(low - 1))
    }

    /// Forgets every entry from the first one for which `keep` is false.
    pub(crate) fn truncate_where(&self, keep: impl Fn(&[u64; WORDS]) -> bool) {
        let count = self.len();
        let kept = (0..count).take_while(|&index| keep(&self.entry(index))).count();
        self.entries.store(kept, Ordering::Release);
    }

    pub(crate) fn clear(&self) {
        self.entries.store(0, Ordering::Release);
    }

    /// Shrinks the file to the used entries (a sealed segment's index).
    pub(crate) fn trim(&self) -> Result<(), StorageError> {
        self.flush()?;
        let bytes = (self.len() * Self::ENTRY_BYTES) as u64;
        self.file.set_len(bytes).map_err(StorageError::io("trimming index", &self.path))
    }

    pub(crate) fn flush(&self) -> Result<(), StorageError> {
        match &self.map {
            Some(map) => map.flush().map_err(StorageError::io("flushing index", &self.path)),
            None => Ok(()),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// Offset index entry: the base offset of a batch, relative to the
/// segment's base offset, in the high 32 bits, and the batch's position in
/// the segment file in the low 32 bits (Kafka's layout, in one word).
#[derive(Debug)]
pub(crate) struct OffsetIndex(pub(crate) MmapIndex<1>);

impl OffsetIndex {
    pub(crate) fn append(&self, relative_offset: u32, position: u32) {
        self.0.append([(u64::from(relative_offset) << 32) | u64::from(position)]);
    }

    /// The position of the last indexed batch starting at or before
    /// `relative_offset`: the place to start scanning for it.
    pub(crate) fn lookup(&self, relative_offset: u32) -> Option<(u32, u32)> {
        let target = u64::from(relative_offset);
        self.0.last_where(|[word]| word >> 32 <= target).map(|[word]| split(word))
    }

    pub(crate) fn entries(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        (0..self.0.len()).map(|index| split(self.0.entry(index)[0]))
    }

    /// The last indexed batch that starts at or before `max_position` and
    /// at or below `max_relative_offset`. Offsets and positions grow
    /// together, so the entries where both hold are a prefix.
    pub(crate) fn last_within(&self, max_relative_offset: u32, max_position: u64) -> Option<(u32, u32)> {
        self.0
            .last_where(|[word]| {
                let (relative, position) = split(*word);
                relative <= max_relative_offset && u64::from(position) <= max_position
            })
            .map(|[word]| split(word))
    }

    /// Drops the entries of batches at or after `position`.
    pub(crate) fn truncate_to_position(&self, position: u32) {
        self.0.truncate_where(|[word]| (*word as u32) < position);
    }
}

fn split(word: u64) -> (u32, u32) {
    ((word >> 32) as u32, word as u32)
}

/// Time index entry: `(timestamp_ms, relative_offset)`, meaning every batch
/// before that offset in the segment has a max timestamp at or below
/// `timestamp_ms`. A lookup for time `t` starts scanning at the last entry
/// whose timestamp is below `t`.
#[derive(Debug)]
pub(crate) struct TimeIndex(pub(crate) MmapIndex<2>);

impl TimeIndex {
    pub(crate) fn append(&self, timestamp_ms: i64, relative_offset: u32) {
        self.0.append([timestamp_ms as u64, u64::from(relative_offset)]);
    }

    pub(crate) fn last(&self) -> Option<(i64, u32)> {
        let count = self.0.len();
        (count > 0).then(|| {
            let [timestamp, offset] = self.0.entry(count - 1);
            (timestamp as i64, offset as u32)
        })
    }

    /// The relative offset to start scanning from for the first batch with
    /// a max timestamp at or after `timestamp_ms`.
    pub(crate) fn lookup(&self, timestamp_ms: i64) -> Option<u32> {
        self.0.last_where(|[timestamp, _]| (*timestamp as i64) < timestamp_ms).map(|[_, offset]| offset as u32)
    }

    pub(crate) fn entries(&self) -> impl Iterator<Item = (i64, u32)> + '_ {
        (0..self.0.len()).map(|index| {
            let [timestamp, offset] = self.0.entry(index);
            (timestamp as i64, offset as u32)
        })
    }

    /// Drops the entries that point at or past `relative_offset`.
    pub(crate) fn truncate_to_offset(&self, relative_offset: u32) {
        self.0.truncate_where(|[_, offset]| (*offset as u32) < relative_offset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_index_finds_the_last_entry_at_or_below() {
        let dir = tempfile::tempdir().expect("temp dir");
        let index = OffsetIndex(MmapIndex::create(&dir.path().join("0.index"), 10).expect("create"));
        assert_eq!(index.lookup(5), None);
        index.append(0, 0);
        index.append(10, 4096);
        index.append(20, 8192);
        assert_eq!(index.lookup(0), Some((0, 0)));
        assert_eq!(index.lookup(9), Some((0, 0)));
        assert_eq!(index.lookup(10), Some((10, 4096)));
        assert_eq!(index.lookup(99), Some((20, 8192)));
        index.truncate_to_position(8192);
        assert_eq!(index.lookup(99), Some((10, 4096)));
    }

    #[test]
    fn a_trimmed_index_reopens_with_its_entries() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("0.timeindex");
        let index = TimeIndex(MmapIndex::create(&path, 100).expect("create"));
        index.append(1_000, 3);
        index.append(2_000, 7);
        index.0.trim().expect("trim");
        drop(index);
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), 32);
        let index = TimeIndex(MmapIndex::open(&path, 100).expect("reopen").0);
        assert_eq!(index.entries().collect::<Vec<_>>(), vec![(1_000, 3), (2_000, 7)]);
        assert_eq!(index.lookup(1_500), Some(3));
        assert_eq!(index.lookup(1_000), None);
        index.append(3_000, 9);
        assert_eq!(index.last(), Some((3_000, 9)));
    }
}
