//! The topics this broker hosts: the catalog's records, and an open
//! [`Partition`] per partition. Handlers look partitions up here; nothing
//! else holds them.
//!
//! Each partition's log lives in `data_dir/topics/<topic>-<partition>/`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use crate::catalog::{Catalog, TopicRecord};
use crate::error::BrokerError;
use crate::partition::Partition;
use crate::topic_config::{validate_topic_name, TopicConfig};

/// The most partitions one topic may have.
pub const MAX_PARTITIONS: u32 = 1000;

#[derive(Debug)]
pub struct Topic {
    pub record: TopicRecord,
    pub config: TopicConfig,
    pub partitions: Vec<Arc<Partition>>,
}

impl Topic {
    pub fn partition(&self, partition: u32) -> Result<Arc<Partition>, BrokerError> {
        self.partitions.get(partition as usize).cloned().ok_or_else(|| BrokerError::PartitionNotFound {
            topic: self.record.name.clone(),
            partition,
            partitions: self.record.partitions,
        })
    }
}

#[derive(Debug)]
pub struct TopicRegistry {
    topics_dir: PathBuf,
    catalog: Catalog,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    broker_count: u32,
}

fn partition_dir(topics_dir: &std::path::Path, topic: &str, partition: u32) -> PathBuf {
    topics_dir.join(format!("{topic}-{partition}"))
}

/// Opens every partition log of `record`. Blocking.
fn open_topic(topics_dir: &std::path::Path, record: TopicRecord) -> Result<Topic, BrokerError> {
    let config = TopicConfig::from_map(&record.configs)?;
    let partitions = (0..record.partitions)
        .map(|partition| {
            let dir = partition_dir(topics_dir, &record.name, partition);
            Partition::open(&record.name, partition, dir, config.log_config()).map(Arc::new)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Topic { record, config, partitions })
}

impl TopicRegistry {
    /// Opens the catalog's topics (recovering their logs). Blocking.
    pub fn open(data_dir: &std::path::Path, catalog: Catalog) -> Result<TopicRegistry, BrokerError> {
        let topics_dir = data_dir.join("topics");
        std::fs::create_dir_all(&topics_dir)
            .map_err(|error| BrokerError::Catalog(format!("creating {}: {error}", topics_dir.display())))?;
        let mut topics = BTreeMap::new();
        for record in catalog.topics()? {
            let topic = open_topic(&topics_dir, record)?;
            tracing::info!(topic = %topic.record.name, partitions = topic.record.partitions, "opened topic");
            topics.insert(topic.record.name.clone(), Arc::new(topic));
        }
        Ok(TopicRegistry { topics_dir, catalog, topics: RwLock::new(topics), broker_count: 1 })
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Topic>>> {
        self.topics.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn list(&self) -> Vec<Arc<Topic>> {
        self.read().values().cloned().collect()
    }

    pub fn topic(&self, name: &str) -> Result<Arc<Topic>, BrokerError> {
        self.read().get(name).cloned().ok_or_else(|| BrokerError::UnknownTopic { topic: name.to_string() })
    }

    /// The shared first step of every data request.
    pub fn partition(&self, name: &str, partition: u32) -> Result<Arc<Partition>, BrokerError> {
        self.topic(name)?.partition(partition)
    }

    /// Validates and creates a topic: catalog first (that decides a race
    /// between two creates), then the logs.
    pub async fn create(
        self: &Arc<Self>,
        name: String,
        partitions: u32,
        replication_factor: u32,
        configs: BTreeMap<String, String>,
    ) -> Result<Arc<Topic>, BrokerError> {
        validate_topic_name(&name)?;
        if partitions == 0 || partitions > MAX_PARTITIONS {
            return Err(BrokerError::InvalidPartitions { partitions, max: MAX_PARTITIONS });
        }
        if replication_factor == 0 || replication_factor > self.broker_count {
            return Err(BrokerError::InvalidReplicationFactor {
                requested: replication_factor,
                brokers: self.broker_count,
            });
        }
        let config = TopicConfig::from_map(&configs)?;
        if self.read().contains_key(&name) {
            return Err(BrokerError::TopicAlreadyExists { topic: name });
        }
        let record = TopicRecord { name: name.clone(), partitions, replication_factor, configs: config.to_map() };
        let registry = Arc::clone(self);
        let topic = tokio::task::spawn_blocking(move || {
            registry.catalog.create_topic(&record)?;
            // Left-overs of an earlier topic of this name (a crash during
            // its deletion) are not this topic's data.
            for partition in 0..partitions {
                let dir = partition_dir(&registry.topics_dir, &name, partition);
                if dir.exists() {
                    tracing::warn!(dir = %dir.display(), "removing stale data of an earlier topic");
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }
            match open_topic(&registry.topics_dir, record) {
                Ok(topic) => Ok(topic),
                Err(error) => {
                    let _ = registry.catalog.delete_topic(&name);
                    Err(error)
                }
            }
        })
        .await
        .map_err(|_| BrokerError::ShuttingDown)??;
        let topic = Arc::new(topic);
        self.topics
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(topic.record.name.clone(), Arc::clone(&topic));
        tracing::info!(topic = %topic.record.name, partitions, replication_factor, "created topic");
        Ok(topic)
    }

    /// Deletes a topic: out of the catalog, logs closed, files removed.
    pub async fn delete(self: &Arc<Self>, name: &str) -> Result<(), BrokerError> {
        validate_topic_name(name)?;
        let topic = self
            .topics
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(name)
            .ok_or_else(|| BrokerError::UnknownTopic { topic: name.to_string() })?;
        let registry = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            registry.catalog.delete_topic(&topic.record.name)?;
            for partition in &topic.partitions {
                partition.close()?;
                let dir = partition_dir(&registry.topics_dir, partition.topic(), partition.partition());
                if let Err(error) = std::fs::remove_dir_all(&dir) {
                    tracing::warn!(dir = %dir.display(), %error, "could not remove a deleted topic's files");
                }
            }
            tracing::info!(topic = %topic.record.name, "deleted topic");
            Ok(())
        })
        .await
        .map_err(|_| BrokerError::ShuttingDown)?
    }

    /// Retention and time-based flushes on every partition. Blocking.
    pub fn maintain(&self, now_ms: i64) {
        for topic in self.list() {
            for partition in &topic.partitions {
                if let Err(error) = partition.maintain(now_ms) {
                    tracing::warn!(topic = partition.topic(), partition = partition.partition(), %error, "log maintenance failed");
                }
            }
        }
    }

    /// Closes every log cleanly. Blocking.
    pub fn close(&self) {
        for topic in self.list() {
            for partition in &topic.partitions {
                if let Err(error) = partition.close() {
                    tracing::error!(topic = partition.topic(), partition = partition.partition(), %error, "closing log failed");
                }
            }
        }
    }
}
