//! Connections and the metadata cache shared by admin, producer and
//! consumer: which broker leads each partition, and one HTTP/2 channel per
//! broker (requests to the same broker multiplex over it).

use brook_record::ErrorCode;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brook_proto::v1::metadata_client::MetadataClient;
use brook_proto::v1::{MetadataRequest, MetadataResponse};
use tonic::transport::{Channel, Endpoint};

use crate::error::ClientError;

/// Large enough for a fetch of several MiB of batches.
pub(crate) const MAX_MESSAGE_BYTES: usize = 64 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause before asking again where the group coordinator is.
const COORDINATOR_RETRY_PAUSE: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
struct MetadataCache {
    brokers: HashMap<u32, String>,
    /// topic -> each partition's leader
    topics: HashMap<String, Vec<Leader>>,
    /// Topics whose leaders may have moved: refreshed before the next
    /// leader lookup (their partition counts stay usable meanwhile).
    stale: std::collections::HashSet<String>,
    /// The controller, which coordinates consumer groups (0: none known).
    controller: u32,
}

/// A partition's leader as the metadata named it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Leader {
    id: u32,
    /// The epoch of that leadership; a cached leader is replaced only by
    /// one at the same or a newer epoch (a broker whose metadata is behind
    /// does not move the client back to a deposed leader).
    epoch: u32,
}

/// A handle on a Brook cluster. Clone the `Arc` freely.
#[derive(Debug)]
pub struct Cluster {
    bootstrap: Vec<String>,
    channels: Mutex<HashMap<String, Channel>>,
    metadata: Mutex<MetadataCache>,
}

fn endpoint(address: &str) -> Result<Endpoint, ClientError> {
    let uri = if address.contains("://") { address.to_string() } else { format!("http://{address}") };
    Endpoint::from_shared(uri)
        .map_err(|error| ClientError::InvalidAddress { address: address.to_string(), reason: error.to_string() })
        .map(|endpoint| {
            endpoint
                .connect_timeout(CONNECT_TIMEOUT)
                .tcp_nodelay(true)
                // Windows sized for 128 KiB+ batches (see the broker's server.rs).
                .initial_stream_window_size(4 << 20)
                .initial_connection_window_size(16 << 20)
                // Fetch answers in frames of up to 4 MiB, not 16 KiB: the
                // consumer decodes over the frames (`records_call`), so
                // records within one frame are not copied, and fewer frames
                // cost both sides less (BENCHMARKS.md, copies per path).
                .max_frame_size(4 << 20)
        })
}

impl Cluster {
    /// Parses `host:port[,host:port...]` and checks that one of them
    /// answers a metadata request.
    pub async fn connect(bootstrap: &str) -> Result<Arc<Cluster>, ClientError> {
        let addresses: Vec<String> =
            bootstrap.split(',').map(str::trim).filter(|address| !address.is_empty()).map(str::to_string).collect();
        if addresses.is_empty() {
            return Err(ClientError::InvalidAddress { address: bootstrap.to_string(), reason: "it is empty".into() });
        }
        for address in &addresses {
            endpoint(address)?;
        }
        let cluster =
            Arc::new(Cluster { bootstrap: addresses, channels: Mutex::default(), metadata: Mutex::default() });
        cluster.refresh(&[]).await?;
        Ok(cluster)
    }

    /// The channel to `address`, created (lazily connecting) on first use.
    pub(crate) fn channel(&self, address: &str) -> Result<Channel, ClientError> {
        let mut channels = self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let channel = endpoint(address)?.connect_lazy();
        channels.insert(address.to_string(), channel.clone());
        Ok(channel)
    }

    /// Runs `call` against one broker after another (bootstrap first, then
    /// the others known) until one is reachable: for calls any broker can
    /// answer (admin, metadata, group offsets).
    pub(crate) async fn with_any_broker<T, F, Fut>(&self, call: F) -> Result<T, ClientError>
    where
        F: Fn(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let mut candidates = self.bootstrap.clone();
        for address in self.lock_metadata().brokers.values() {
            if !candidates.contains(address) {
                candidates.push(address.clone());
            }
        }
        let mut last_error = None;
        for address in candidates {
            match call(self.channel(&address)?).await {
                Err(error) if error.is_unreachable() => last_error = Some(error),
                outcome => return outcome,
            }
        }
        Err(ClientError::Unreachable {
            addresses: self.bootstrap.join(","),
            reason: last_error.map_or_else(|| "no address to try".to_string(), |error| error.to_string()),
        })
    }

    /// Runs `call` against the consumer group coordinator (the
    /// controller), finding it again while it moves or is being elected,
    /// for at most `patience`.
    pub(crate) async fn with_coordinator<T, F, Fut>(&self, patience: Duration, call: F) -> Result<T, ClientError>
    where
        F: Fn(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let give_up_at = tokio::time::Instant::now() + patience;
        loop {
            let address = {
                let cache = self.lock_metadata();
                cache.brokers.get(&cache.controller).cloned()
            };
            let result = match address {
                Some(address) => call(self.channel(&address)?).await,
                None => Err(ClientError::Broker {
                    code: tonic::Code::Unavailable,
                    code_name: Some(ErrorCode::NotCoordinator.name().into()),
                    message: "no controller (group coordinator) is known yet".into(),
                }),
            };
            match result {
                Err(error) if error.is_retriable() && tokio::time::Instant::now() < give_up_at => {
                    tracing::debug!(%error, "group coordinator unavailable; looking for it again");
                    tokio::time::sleep(COORDINATOR_RETRY_PAUSE).await;
                    if let Err(error) = self.refresh(&[]).await {
                        tracing::debug!(%error, "metadata refresh failed");
                    }
                }
                outcome => return outcome,
            }
        }
    }

    fn lock_metadata(&self) -> std::sync::MutexGuard<'_, MetadataCache> {
        self.metadata.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Asks the brokers (known ones, then bootstrap) for metadata of
    /// `topics` (all when empty) and caches it.
    pub async fn refresh(&self, topics: &[String]) -> Result<MetadataResponse, ClientError> {
        let mut candidates: Vec<String> = self.lock_metadata().brokers.values().cloned().collect();
        candidates.extend(self.bootstrap.iter().cloned());
        let mut last_error = None;
        for address in candidates {
            let mut client = MetadataClient::new(self.channel(&address)?);
            match client.get_metadata(MetadataRequest { topics: topics.to_vec() }).await {
                Ok(response) => {
                    let response = response.into_inner();
                    let mut cache = self.lock_metadata();
                    cache.brokers = response.brokers.iter().map(|broker| (broker.id, broker.address.clone())).collect();
                    cache.controller = response.controller_id;
                    for topic in &response.topics {
                        let mut leaders = vec![Leader::default(); topic.partitions.len()];
                        let cached = cache.topics.get(&topic.name);
                        for partition in &topic.partitions {
                            let index = partition.partition as usize;
                            let named = Leader { id: partition.leader, epoch: partition.leader_epoch };
                            let known = cached.and_then(|leaders| leaders.get(index)).copied();
                            if let Some(slot) = leaders.get_mut(index) {
                                // Partition counts only grow, so a cached
                                // slot is this partition.
                                *slot = match known {
                                    Some(known) if known.epoch > named.epoch => known,
                                    _ => named,
                                };
                            }
                        }
                        cache.stale.remove(&topic.name);
                        cache.topics.insert(topic.name.clone(), leaders);
                    }
                    return Ok(response);
                }
                Err(status) => {
                    let error = ClientError::from_status(status);
                    if !error.is_retriable() {
                        if error.error_code() == Some(ErrorCode::UnknownTopicOrPartition) {
                            for topic in topics {
                                self.lock_metadata().topics.remove(topic);
                            }
                        }
                        return Err(error);
                    }
                    last_error = Some(error);
                }
            }
        }
        Err(ClientError::Unreachable {
            addresses: self.bootstrap.join(","),
            reason: last_error.map_or_else(|| "no address to try".to_string(), |error| error.to_string()),
        })
    }

    /// How many partitions `topic` has (cached; refreshed when unknown).
    pub async fn partition_count(&self, topic: &str) -> Result<u32, ClientError> {
        if let Some(leaders) = self.lock_metadata().topics.get(topic) {
            return Ok(leaders.len() as u32);
        }
        match self.refresh(&[topic.to_string()]).await {
            Err(error) if error.error_code() == Some(ErrorCode::UnknownTopicOrPartition) => {
                Err(ClientError::UnknownTopic { topic: topic.to_string() })
            }
            Err(error) => Err(error),
            Ok(_) => self
                .lock_metadata()
                .topics
                .get(topic)
                .map(|leaders| leaders.len() as u32)
                .ok_or_else(|| ClientError::UnknownTopic { topic: topic.to_string() }),
        }
    }

    /// The channel to the broker leading `topic`-`partition`.
    pub async fn leader(&self, topic: &str, partition: u32) -> Result<Channel, ClientError> {
        self.channel(&self.leader_address(topic, partition).await?.0)
    }

    /// The channel to the broker leading `topic`-`partition`, and the
    /// epoch of that leadership when known (what fetches name, KIP-320).
    pub(crate) async fn leader_and_epoch(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<(Channel, Option<u32>), ClientError> {
        let (address, epoch) = self.leader_address(topic, partition).await?;
        Ok((self.channel(&address)?, epoch))
    }

    /// The leader of `topic`-`partition` as cached, without asking any
    /// broker: `None` when unknown or possibly out of date.
    pub(crate) fn cached_leader_address(&self, topic: &str, partition: u32) -> Option<String> {
        let cache = self.lock_metadata();
        if cache.stale.contains(topic) {
            return None;
        }
        let leader = cache.topics.get(topic).and_then(|leaders| leaders.get(partition as usize)).copied();
        leader.and_then(|leader| cache.brokers.get(&leader.id).cloned())
    }

    /// The address of the broker leading `topic`-`partition` (the first
    /// bootstrap address while no leader is known), with the leadership's
    /// epoch when known.
    async fn leader_address(&self, topic: &str, partition: u32) -> Result<(String, Option<u32>), ClientError> {
        let stale = self.lock_metadata().stale.contains(topic);
        if stale {
            // Leaders may have moved; if no broker answers, the cached
            // leader is still the best guess.
            if let Err(error) = self.refresh(&[topic.to_string()]).await {
                if !error.is_retriable() {
                    return Err(error);
                }
            }
        }
        let partitions = self.partition_count(topic).await?;
        if partition >= partitions {
            return Err(ClientError::Broker {
                code: tonic::Code::NotFound,
                code_name: Some(ErrorCode::UnknownTopicOrPartition.name().into()),
                message: format!("topic '{topic}' has {partitions} partitions; partition {partition} does not exist"),
            });
        }
        let cache = self.lock_metadata();
        let leader = cache.topics.get(topic).and_then(|leaders| leaders.get(partition as usize)).copied();
        match leader.and_then(|leader| Some((cache.brokers.get(&leader.id)?.clone(), Some(leader.epoch)))) {
            Some(known) => Ok(known),
            None => Ok((self.bootstrap[0].clone(), None)),
        }
    }

    /// Marks what is cached about `topic` as possibly out of date (after a
    /// failed call), so the next leader lookup asks the brokers again.
    pub fn invalidate(&self, topic: &str) {
        self.lock_metadata().stale.insert(topic.to_string());
    }
}
