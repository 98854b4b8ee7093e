//! The single-node catalog: topics and committed consumer offsets in a
//! small sled database under `data_dir/catalog`, so both survive a restart.
//! (The Raft metadata group takes these over when the cluster arrives.)
//!
//! Every write is flushed before it returns: a topic that was created or an
//! offset that was committed is on disk when the client hears so.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::BrokerError;

/// A topic as the catalog keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub name: String,
    pub partitions: u32,
    pub replication_factor: u32,
    /// Effective configs, Kafka names.
    pub configs: BTreeMap<String, String>,
}

/// A committed consumer offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    pub offset: i64,
    pub metadata: String,
}

#[derive(Debug, Clone)]
pub struct Catalog {
    db: sled::Db,
    topics: sled::Tree,
    offsets: sled::Tree,
}

/// Offsets are keyed `group \0 topic \0 partition(big-endian)`, so one
/// group's commits are a prefix scan. Topic names cannot hold `\0`; a group
/// id that does is refused by the service.
fn offset_key(group: &str, topic: &str, partition: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(group.len() + topic.len() + 6);
    key.extend_from_slice(group.as_bytes());
    key.push(0);
    key.extend_from_slice(topic.as_bytes());
    key.push(0);
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, BrokerError> {
    serde_json::from_slice(bytes).map_err(|error| BrokerError::Catalog(format!("damaged catalog entry: {error}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, BrokerError> {
    serde_json::to_vec(value).map_err(|error| BrokerError::Catalog(error.to_string()))
}

impl Catalog {
    pub fn open(dir: &Path) -> Result<Catalog, BrokerError> {
        let db = sled::open(dir)?;
        let topics = db.open_tree("topics")?;
        let offsets = db.open_tree("offsets")?;
        Ok(Catalog { db, topics, offsets })
    }

    /// The cluster's id, made on first start and kept from then on.
    pub fn cluster_id(&self) -> Result<String, BrokerError> {
        if let Some(id) = self.db.get(b"cluster_id")? {
            return Ok(String::from_utf8_lossy(&id).into_owned());
        }
        let seed =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_nanos())
                ^ u128::from(std::process::id());
        let id = format!("brook-{:016x}", seed as u64);
        self.db.insert(b"cluster_id", id.as_bytes())?;
        self.db.flush()?;
        Ok(id)
    }

    pub fn topics(&self) -> Result<Vec<TopicRecord>, BrokerError> {
        self.topics.iter().values().map(|value| decode(&value?)).collect()
    }

    /// Stores a new topic; fails if the name is taken.
    pub fn create_topic(&self, record: &TopicRecord) -> Result<(), BrokerError> {
        let swapped = self.topics.compare_and_swap(record.name.as_bytes(), None::<&[u8]>, Some(encode(record)?))?;
        if swapped.is_err() {
            return Err(BrokerError::TopicAlreadyExists { topic: record.name.clone() });
        }
        self.db.flush()?;
        Ok(())
    }

    /// Removes a topic and every offset committed for it.
    pub fn delete_topic(&self, name: &str) -> Result<(), BrokerError> {
        if self.topics.remove(name.as_bytes())?.is_none() {
            return Err(BrokerError::UnknownTopic { topic: name.to_string() });
        }
        let mut stale = Vec::new();
        for key in self.offsets.iter().keys() {
            let key = key?;
            let mut fields = key.split(|&byte| byte == 0);
            if fields.nth(1) == Some(name.as_bytes()) {
                stale.push(key);
            }
        }
        for key in stale {
            self.offsets.remove(key)?;
        }
        self.db.flush()?;
        Ok(())
    }

    pub fn commit_offsets(&self, group: &str, commits: &[(String, u32, CommittedOffset)]) -> Result<(), BrokerError> {
        let mut batch = sled::Batch::default();
        for (topic, partition, committed) in commits {
            batch.insert(offset_key(group, topic, *partition), encode(committed)?);
        }
        self.offsets.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    pub fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<CommittedOffset>, BrokerError> {
        self.offsets.get(offset_key(group, topic, partition))?.map(|value| decode(&value)).transpose()
    }

    /// Every offset `group` committed, as (topic, partition, offset).
    pub fn group_offsets(&self, group: &str) -> Result<Vec<(String, u32, CommittedOffset)>, BrokerError> {
        let mut prefix = group.as_bytes().to_vec();
        prefix.push(0);
        let mut offsets = Vec::new();
        for entry in self.offsets.scan_prefix(&prefix) {
            let (key, value) = entry?;
            let rest = &key[prefix.len()..];
            let damaged = || BrokerError::Catalog("damaged offset key".to_string());
            let split = rest.iter().position(|&byte| byte == 0).ok_or_else(damaged)?;
            let topic = String::from_utf8(rest[..split].to_vec()).map_err(|_| damaged())?;
            let partition = u32::from_be_bytes(rest[split + 1..].try_into().map_err(|_| damaged())?);
            offsets.push((topic, partition, decode(&value)?));
        }
        Ok(offsets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_offsets_survive_reopening() {
        let dir = tempfile::tempdir().expect("temp dir");
        let record =
            TopicRecord { name: "orders".into(), partitions: 3, replication_factor: 1, configs: BTreeMap::new() };
        {
            let catalog = Catalog::open(dir.path()).expect("open");
            catalog.create_topic(&record).expect("create");
            assert!(matches!(catalog.create_topic(&record), Err(BrokerError::TopicAlreadyExists { .. })));
            let committed = CommittedOffset { offset: 42, metadata: "m".into() };
            catalog.commit_offsets("g", &[("orders".into(), 2, committed)]).expect("commit");
        }
        let catalog = Catalog::open(dir.path()).expect("reopen");
        assert_eq!(catalog.topics().expect("topics"), vec![record]);
        let committed = catalog.committed_offset("g", "orders", 2).expect("read").expect("present");
        assert_eq!(committed.offset, 42);
        assert_eq!(catalog.group_offsets("g").expect("group").len(), 1);
        catalog.delete_topic("orders").expect("delete");
        assert!(catalog.group_offsets("g").expect("group").is_empty());
    }
}
