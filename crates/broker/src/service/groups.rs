//! `brook.v1.Groups`: consumer group membership (through the
//! [`GroupCoordinator`]), committed offsets, and the operator's view
//! (list, describe with lag, delete, reset).
//!
//! Every call goes to the coordinator (the controller; others answer
//! NOT_COORDINATOR naming it): what it proposes is applied in its own
//! state before it answers, so a describe or fetch after a commit, reset
//! or delete sees it. The metadata group checks what must hold (member
//! epochs, no live members) when it applies each change.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use brook_metadata::consumer_group::{
    MAX_MEMBER_ID_BYTES, MAX_SESSION_TIMEOUT_MS, MAX_SUBSCRIBED_TOPICS, MIN_SESSION_TIMEOUT_MS,
};
use brook_metadata::group_assignment::Partition;
use brook_metadata::{Assignor, Command, CommandV1, Committer, ConsumerGroup, GroupCommit, GroupHeartbeat};
use brook_proto::v1::groups_server::Groups;
use brook_proto::v1::records_client::RecordsClient;
use brook_proto::v1::{
    CommitOffsetsRequest, CommitOffsetsResponse, CommittedOffset as WireCommittedOffset, ConsumerGroupHeartbeatRequest,
    ConsumerGroupHeartbeatResponse, DeleteGroupRequest, DeleteGroupResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, FetchOffsetsRequest, FetchOffsetsResponse, GroupDescription, GroupMemberDescription,
    GroupSummary, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, ListOffsetsRequest,
    OffsetSpec, PartitionLag, ResetOffsetsRequest, ResetOffsetsResponse, ResetTo, TopicPartition as WireTopicPartition,
};
use brook_record::TopicPartition;
use futures::StreamExt;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use crate::error::BrokerError;
use crate::group_coordinator::{heartbeat_interval, GroupCoordinator, MAX_COMMIT_BYTES};
use crate::metrics::Metrics;
use crate::replica_manager::ReplicaManager;

/// The longest group id and commit metadata accepted, in bytes.
const MAX_GROUP_ID_BYTES: usize = 255;
const MAX_METADATA_BYTES: usize = 4096;
/// Kafka's default session timeout.
const DEFAULT_SESSION_TIMEOUT_MS: u32 = 45_000;
/// The most partitions a heartbeat may report owning, and the most
/// bytes its subscription and owned partitions may take encoded (it
/// becomes a metadata command when it changes the group).
const MAX_OWNED_PARTITIONS: usize = 100_000;
const MAX_HEARTBEAT_BYTES: usize = 512 << 10;
/// How long an end-offset question to another broker may take, and how
/// many a `DescribeGroups` asks at once.
const PEER_OFFSETS_TIMEOUT: Duration = Duration::from_secs(2);
const END_OFFSET_QUESTIONS_AT_ONCE: usize = 32;
/// The most groups one `DescribeGroups` may name.
const MAX_DESCRIBED_GROUPS: usize = 100;

#[derive(Debug)]
pub struct GroupsService {
    pub(crate) registry: Arc<ReplicaManager>,
    pub(crate) coordinator: Arc<GroupCoordinator>,
    /// Channels to other brokers' client ports, for the end offsets of
    /// partitions they lead.
    pub(crate) peers: Mutex<HashMap<String, Channel>>,
    pub(crate) metrics: Arc<Metrics>,
}

fn validate_group_id(group_id: &str) -> Result<(), BrokerError> {
    if group_id.is_empty() || group_id.len() > MAX_GROUP_ID_BYTES || group_id.contains('\0') {
        return Err(BrokerError::InvalidRequest(format!(
            "group id '{group_id}' must be 1-{MAX_GROUP_ID_BYTES} bytes without NUL"
        )));
    }
    Ok(())
}

fn validate_member_id(member_id: &str) -> Result<(), BrokerError> {
    if member_id.is_empty() || member_id.len() > MAX_MEMBER_ID_BYTES || member_id.contains('\0') {
        return Err(BrokerError::InvalidRequest(format!(
            "member id '{member_id}' must be 1-{MAX_MEMBER_ID_BYTES} bytes without NUL"
        )));
    }
    Ok(())
}

fn wire_partitions<'a>(partitions: impl IntoIterator<Item = &'a Partition>) -> Vec<WireTopicPartition> {
    partitions
        .into_iter()
        .map(|(topic, partition)| WireTopicPartition { topic: topic.clone(), partition: *partition })
        .collect()
}

/// A heartbeat request as the metadata group takes it, checked.
fn heartbeat_command(request: ConsumerGroupHeartbeatRequest) -> Result<GroupHeartbeat, BrokerError> {
    validate_group_id(&request.group_id)?;
    validate_member_id(&request.member_id)?;
    let session_timeout_ms = match request.session_timeout_ms {
        0 => DEFAULT_SESSION_TIMEOUT_MS,
        ms if (MIN_SESSION_TIMEOUT_MS..=MAX_SESSION_TIMEOUT_MS).contains(&ms) => ms,
        ms => {
            return Err(BrokerError::InvalidRequest(format!(
                "session timeout {ms} ms is outside {MIN_SESSION_TIMEOUT_MS}-{MAX_SESSION_TIMEOUT_MS} ms"
            )))
        }
    };
    if request.subscribed_topics.len() > MAX_SUBSCRIBED_TOPICS {
        return Err(BrokerError::InvalidRequest(format!(
            "{} subscribed topics; at most {MAX_SUBSCRIBED_TOPICS}",
            request.subscribed_topics.len()
        )));
    }
    for topic in &request.subscribed_topics {
        brook_record::check_topic_name(topic)
            .map_err(|reason| BrokerError::InvalidTopicName { name: topic.clone(), reason })?;
    }
    if request.owned.len() > MAX_OWNED_PARTITIONS {
        return Err(BrokerError::InvalidRequest(format!(
            "{} owned partitions reported; at most {MAX_OWNED_PARTITIONS}",
            request.owned.len()
        )));
    }
    let bytes: usize = request.owned.iter().map(|owned| owned.topic.len() + 10).sum::<usize>()
        + request.subscribed_topics.iter().map(|topic| topic.len() + 5).sum::<usize>();
    if bytes > MAX_HEARTBEAT_BYTES {
        return Err(BrokerError::TooLarge {
            what: format!(
                "a heartbeat's {} subscribed topics and {} owned partitions",
                request.subscribed_topics.len(),
                request.owned.len()
            ),
            bytes,
            limit: MAX_HEARTBEAT_BYTES,
        });
    }
    if request.member_epoch == 0 && request.subscribed_topics.is_empty() {
        return Err(BrokerError::InvalidRequest(
            "a member joins (epoch 0) with at least one subscribed topic".to_string(),
        ));
    }
    let assignor = Assignor::parse(&request.assignor).ok_or_else(|| {
        BrokerError::InvalidRequest(format!("assignor '{}' is unknown: 'uniform' or 'range'", request.assignor))
    })?;
    let subscribed: BTreeSet<String> = request.subscribed_topics.into_iter().collect();
    Ok(GroupHeartbeat {
        group: request.group_id,
        member_id: request.member_id,
        member_epoch: request.member_epoch,
        subscribed: (!subscribed.is_empty()).then_some(subscribed),
        owned: Some(request.owned.into_iter().map(|owned| (owned.topic, owned.partition)).collect()),
        assignor: Some(assignor),
        session_timeout_ms,
        client_id: request.client_id.chars().take(255).collect(),
        // The coordinator's setting (see `GroupCoordinator::heartbeat`).
        max_size: None,
    })
}

/// "Empty", "Stable" or "Reconciling" (Kafka's states, KIP-848).
fn group_state(group: Option<&ConsumerGroup>) -> &'static str {
    let Some(group) = group.filter(|group| !group.members.is_empty()) else { return "Empty" };
    let settled = group.members.iter().all(|(id, member)| {
        member.revoking.is_empty() && group.target.get(id).is_none_or(|target| *target == member.assigned)
    });
    if settled {
        "Stable"
    } else {
        "Reconciling"
    }
}

impl GroupsService {
    pub fn new(
        registry: Arc<ReplicaManager>,
        coordinator: Arc<GroupCoordinator>,
        metrics: Arc<Metrics>,
    ) -> GroupsService {
        GroupsService { registry, coordinator, peers: Mutex::default(), metrics }
    }

    /// Counts and times a finished call, and makes its answer.
    fn answer<T>(&self, api: &str, started: Instant, result: Result<T, BrokerError>) -> Result<Response<T>, Status> {
        self.metrics.observe_result(api, started.elapsed(), &result);
        Ok(Response::new(result?))
    }

    async fn heartbeat(
        &self,
        request: ConsumerGroupHeartbeatRequest,
    ) -> Result<ConsumerGroupHeartbeatResponse, BrokerError> {
        let heartbeat = heartbeat_command(request)?;
        let interval = heartbeat_interval(heartbeat.session_timeout_ms);
        let (member_epoch, assigned) = self.coordinator.heartbeat(heartbeat).await?;
        Ok(ConsumerGroupHeartbeatResponse {
            member_epoch,
            heartbeat_interval_ms: u32::try_from(interval.as_millis()).unwrap_or(u32::MAX),
            assignment: wire_partitions(&assigned),
        })
    }

    async fn commit(&self, request: CommitOffsetsRequest) -> Result<(), BrokerError> {
        validate_group_id(&request.group_id)?;
        let committer = if request.member_id.is_empty() {
            Committer::Standalone
        } else {
            validate_member_id(&request.member_id)?;
            Committer::Member { member_id: request.member_id, member_epoch: request.member_epoch }
        };
        let mut offsets = Vec::with_capacity(request.offsets.len());
        for commit in request.offsets {
            if commit.offset < 0 {
                return Err(BrokerError::InvalidRequest(format!(
                    "committed offset {} for {}-{} is negative",
                    commit.offset, commit.topic, commit.partition
                )));
            }
            if commit.metadata.len() > MAX_METADATA_BYTES {
                return Err(BrokerError::OffsetMetadataTooLarge {
                    topic: commit.topic,
                    partition: commit.partition,
                    bytes: commit.metadata.len(),
                    limit: MAX_METADATA_BYTES,
                });
            }
            let topic = self.registry.topic(&commit.topic)?;
            topic.slot(commit.partition)?;
            offsets.push(brook_metadata::OffsetCommit {
                topic: commit.topic,
                partition: commit.partition,
                offset: commit.offset,
                metadata: commit.metadata,
                topic_id: Some(topic.id),
            });
        }
        let commit = GroupCommit { group: request.group_id, committer, offsets };
        let bytes = commit.encoded_bytes_bound();
        if bytes > MAX_COMMIT_BYTES {
            return Err(BrokerError::TooLarge {
                what: format!("a commit of {} offsets", commit.offsets.len()),
                bytes,
                limit: MAX_COMMIT_BYTES,
            });
        }
        self.coordinator.commit(commit).await
    }

    fn fetch_offsets(&self, request: FetchOffsetsRequest) -> Result<FetchOffsetsResponse, BrokerError> {
        validate_group_id(&request.group_id)?;
        // The coordinator's state has applied every commit it answered, and
        // every assignment it handed out since, so a member that was just
        // given a partition reads its previous owner's last commit here.
        self.coordinator.check_coordinator(&request.group_id)?;
        let wanted =
            request.partitions.into_iter().map(|wanted| TopicPartition::new(wanted.topic, wanted.partition)).collect();
        let offsets = self
            .registry
            .committed_offsets(&request.group_id, wanted)
            .into_iter()
            .map(|(partition, committed)| {
                let (offset, metadata) = committed.map_or((-1, String::new()), |c| (c.offset, c.metadata));
                WireCommittedOffset {
                    topic: partition.topic.to_string(),
                    partition: partition.partition,
                    offset,
                    metadata,
                }
            })
            .collect();
        Ok(FetchOffsetsResponse { offsets })
    }

    fn list_groups(&self) -> Result<ListGroupsResponse, BrokerError> {
        self.coordinator.check_coordinator("")?;
        let state = self.registry.metadata().state().borrow().clone();
        let names: BTreeSet<&String> = state.groups.keys().chain(state.offsets.keys()).collect();
        let groups = names
            .into_iter()
            .map(|name| {
                let group = state.groups.get(name);
                GroupSummary {
                    group_id: name.clone(),
                    state: group_state(group).to_string(),
                    members: group.map_or(0, |group| group.members.len() as u32),
                }
            })
            .collect();
        Ok(ListGroupsResponse { groups })
    }

    async fn describe_groups(&self, request: DescribeGroupsRequest) -> Result<DescribeGroupsResponse, BrokerError> {
        // Each id once, in the order first asked.
        let mut seen = BTreeSet::new();
        let group_ids: Vec<String> = request.group_ids.into_iter().filter(|id| seen.insert(id.clone())).collect();
        if group_ids.len() > MAX_DESCRIBED_GROUPS {
            return Err(BrokerError::InvalidRequest(format!(
                "{} groups asked at once; at most {MAX_DESCRIBED_GROUPS}",
                group_ids.len()
            )));
        }
        let mut groups = Vec::with_capacity(group_ids.len());
        for group_id in group_ids {
            validate_group_id(&group_id)?;
            self.coordinator.check_coordinator(&group_id)?;
            groups.push(self.describe_group(group_id).await?);
        }
        Ok(DescribeGroupsResponse { groups })
    }

    async fn describe_group(&self, group_id: String) -> Result<GroupDescription, BrokerError> {
        let state = self.registry.metadata().state().borrow().clone();
        let group = state.groups.get(&group_id);
        let committed = state.offsets.get(&group_id);
        if group.is_none() && committed.is_none() {
            return Err(brook_metadata::CommandError::UnknownGroup { group: group_id }.into());
        }
        // Every partition of the subscribed topics, and every one committed.
        let mut partitions: BTreeSet<Partition> = BTreeSet::new();
        for member in group.iter().flat_map(|group| group.members.values()) {
            for topic in &member.subscribed {
                let count = state.topics.get(topic).map_or(0, |topic| topic.partitions.len() as u32);
                partitions.extend((0..count).map(|partition| (topic.clone(), partition)));
            }
        }
        for (topic, offsets) in committed.into_iter().flatten() {
            partitions.extend(offsets.keys().map(|partition| (topic.clone(), *partition)));
        }
        let owners: BTreeMap<&Partition, &String> = group.map(ConsumerGroup::owners).unwrap_or_default();
        // End offsets asked concurrently (a partition led elsewhere is a
        // call to its leader, up to 2 s each), a bounded number at a time.
        let end_offsets: Vec<i64> = futures::stream::iter(partitions.iter().cloned())
            .map(|(topic, partition)| async move {
                self.list_offset(&topic, partition, OffsetSpec::Latest, 0).await.unwrap_or_else(|error| {
                    tracing::debug!(%topic, partition, %error, "end offset unknown");
                    -1
                })
            })
            .buffered(END_OFFSET_QUESTIONS_AT_ONCE)
            .collect()
            .await;
        let mut lags = Vec::with_capacity(partitions.len());
        for ((topic, partition), end_offset) in partitions.iter().zip(end_offsets) {
            let committed_offset = committed
                .and_then(|offsets| offsets.get(topic)?.get(partition))
                .map_or(-1, |committed| committed.offset);
            let lag =
                if committed_offset >= 0 && end_offset >= 0 { (end_offset - committed_offset).max(0) } else { -1 };
            lags.push(PartitionLag {
                topic: topic.clone(),
                partition: *partition,
                owner: owners.get(&(topic.clone(), *partition)).map_or_else(String::new, |owner| owner.to_string()),
                committed_offset,
                end_offset,
                lag,
            });
        }
        let members = group
            .iter()
            .flat_map(|group| &group.members)
            .map(|(id, member)| GroupMemberDescription {
                member_id: id.clone(),
                member_epoch: member.member_epoch,
                client_id: member.client_id.clone(),
                subscribed_topics: member.subscribed.iter().cloned().collect(),
                assigned: wire_partitions(&member.assigned),
                revoking: wire_partitions(&member.revoking),
            })
            .collect();
        Ok(GroupDescription {
            group_id,
            state: group_state(group).to_string(),
            group_epoch: group.map_or(0, |group| group.group_epoch),
            assignor: group.map_or(Assignor::default(), |group| group.assignor).name().to_string(),
            members,
            partitions: lags,
        })
    }

    async fn delete_group(&self, request: DeleteGroupRequest) -> Result<(), BrokerError> {
        validate_group_id(&request.group_id)?;
        self.coordinator.check_coordinator(&request.group_id)?;
        self.registry.metadata().propose(Command::V1(CommandV1::DeleteGroup { group: request.group_id })).await??;
        Ok(())
    }

    async fn reset_offsets(&self, request: ResetOffsetsRequest) -> Result<ResetOffsetsResponse, BrokerError> {
        validate_group_id(&request.group_id)?;
        self.coordinator.check_coordinator(&request.group_id)?;
        let topic = self.registry.topic(&request.topic)?;
        let partitions: Vec<u32> = if request.partitions.is_empty() {
            (0..topic.partition_count()).collect()
        } else {
            request.partitions.clone()
        };
        let to = ResetTo::try_from(request.to)
            .map_err(|_| BrokerError::InvalidRequest(format!("reset target {} is unknown", request.to)))?;
        let mut offsets = Vec::with_capacity(partitions.len());
        for partition in partitions {
            topic.slot(partition)?;
            let offset = match to {
                ResetTo::Earliest => self.list_offset(&request.topic, partition, OffsetSpec::Earliest, 0).await?,
                ResetTo::Latest => self.list_offset(&request.topic, partition, OffsetSpec::Latest, 0).await?,
                ResetTo::Offset => {
                    let earliest = self.list_offset(&request.topic, partition, OffsetSpec::Earliest, 0).await?;
                    let latest = self.list_offset(&request.topic, partition, OffsetSpec::Latest, 0).await?;
                    request.offset.clamp(earliest, latest.max(earliest))
                }
                ResetTo::Timestamp => {
                    match self
                        .list_offset(&request.topic, partition, OffsetSpec::Timestamp, request.timestamp_ms)
                        .await?
                    {
                        -1 => self.list_offset(&request.topic, partition, OffsetSpec::Latest, 0).await?,
                        offset => offset,
                    }
                }
            };
            offsets.push(brook_metadata::OffsetCommit {
                topic: request.topic.clone(),
                partition,
                offset,
                metadata: String::new(),
                topic_id: Some(topic.id),
            });
        }
        let commit =
            GroupCommit { group: request.group_id.clone(), committer: Committer::Reset, offsets: offsets.clone() };
        let command = Command::V1(CommandV1::CommitGroupOffsets { commits: vec![commit] });
        match self.registry.metadata().propose(command).await?? {
            brook_metadata::Outcome::Committed(mut results) if results.len() == 1 => {
                results.pop().expect("one result")?;
            }
            other => return Err(BrokerError::NoController(format!("unexpected answer to a reset: {other:?}"))),
        }
        tracing::info!(group = %request.group_id, topic = %request.topic, ?to, "offsets reset");
        Ok(ResetOffsetsResponse {
            offsets: offsets
                .into_iter()
                .map(|commit| WireCommittedOffset {
                    topic: commit.topic,
                    partition: commit.partition,
                    offset: commit.offset,
                    metadata: commit.metadata,
                })
                .collect(),
        })
    }

    /// A partition's offset by `spec` (-1 for a timestamp past every
    /// record), from its replica here if this broker leads it, else from
    /// its leader.
    async fn list_offset(
        &self,
        topic: &str,
        partition: u32,
        spec: OffsetSpec,
        timestamp_ms: i64,
    ) -> Result<i64, BrokerError> {
        let led = self.registry.topic(topic)?.led_partition(partition, self.registry.broker_id());
        let leader = match led {
            Ok(replica) => return Ok(crate::service::offset_by_spec(&replica, spec, timestamp_ms).await?.0),
            Err(BrokerError::NotLeader { leader: Some(leader), .. }) => leader,
            Err(error) => return Err(error),
        };
        let address = self
            .registry
            .metadata()
            .state()
            .borrow()
            .brokers
            .get(&leader)
            .map(|broker| broker.address.clone())
            .ok_or_else(|| BrokerError::PeerUnavailable { broker_id: leader, reason: "not registered".into() })?;
        let unavailable = |reason: String| BrokerError::PeerUnavailable { broker_id: leader, reason };
        let channel = self.peer(&address).map_err(unavailable)?;
        let request = ListOffsetsRequest { topic: topic.to_string(), partition, spec: spec as i32, timestamp_ms };
        let answer = tokio::time::timeout(PEER_OFFSETS_TIMEOUT, RecordsClient::new(channel).list_offsets(request))
            .await
            .map_err(|_| unavailable(format!("no answer within {PEER_OFFSETS_TIMEOUT:?}")))?
            .map_err(|status| unavailable(status.message().to_string()))?;
        Ok(answer.into_inner().offset)
    }

    fn peer(&self, address: &str) -> Result<Channel, String> {
        let mut peers = self.peers.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(channel) = peers.get(address) {
            return Ok(channel.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{address}")).map_err(|error| error.to_string())?;
        let channel = endpoint.connect_timeout(PEER_OFFSETS_TIMEOUT).connect_lazy();
        peers.insert(address.to_string(), channel.clone());
        Ok(channel)
    }
}

#[tonic::async_trait]
impl Groups for GroupsService {
    #[tracing::instrument(skip_all, fields(group = %request.get_ref().group_id, member = %request.get_ref().member_id, epoch = request.get_ref().member_epoch))]
    async fn consumer_group_heartbeat(
        &self,
        request: Request<ConsumerGroupHeartbeatRequest>,
    ) -> Result<Response<ConsumerGroupHeartbeatResponse>, Status> {
        let started = Instant::now();
        let result = self.heartbeat(request.into_inner()).await;
        self.answer("consumer_group_heartbeat", started, result)
    }

    #[tracing::instrument(skip_all, fields(group = %request.get_ref().group_id, member = %request.get_ref().member_id))]
    async fn leave_group(&self, request: Request<LeaveGroupRequest>) -> Result<Response<LeaveGroupResponse>, Status> {
        let started = Instant::now();
        let request = request.into_inner();
        let result = async {
            validate_group_id(&request.group_id)?;
            validate_member_id(&request.member_id)?;
            self.coordinator.leave(request.group_id, request.member_id).await?;
            Ok(LeaveGroupResponse {})
        }
        .await;
        self.answer("leave_group", started, result)
    }

    #[tracing::instrument(skip_all, fields(group = %request.get_ref().group_id, member = %request.get_ref().member_id))]
    async fn commit_offsets(
        &self,
        request: Request<CommitOffsetsRequest>,
    ) -> Result<Response<CommitOffsetsResponse>, Status> {
        let started = Instant::now();
        let result = self.commit(request.into_inner()).await.map(|()| CommitOffsetsResponse {});
        self.answer("commit_offsets", started, result)
    }

    #[tracing::instrument(skip_all, fields(group = %request.get_ref().group_id))]
    async fn fetch_offsets(
        &self,
        request: Request<FetchOffsetsRequest>,
    ) -> Result<Response<FetchOffsetsResponse>, Status> {
        let started = Instant::now();
        let result = GroupsService::fetch_offsets(self, request.into_inner());
        self.answer("fetch_offsets", started, result)
    }

    #[tracing::instrument(skip_all)]
    async fn list_groups(&self, _request: Request<ListGroupsRequest>) -> Result<Response<ListGroupsResponse>, Status> {
        let started = Instant::now();
        let result = GroupsService::list_groups(self);
        self.answer("list_groups", started, result)
    }

    #[tracing::instrument(skip_all, fields(groups = ?request.get_ref().group_ids))]
    async fn describe_groups(
        &self,
        request: Request<DescribeGroupsRequest>,
    ) -> Result<Response<DescribeGroupsResponse>, Status> {
        let started = Instant::now();
        let result = GroupsService::describe_groups(self, request.into_inner()).await;
        self.answer("describe_groups", started, result)
    }

    #[tracing::instrument(skip_all, fields(group = %request.get_ref().group_id))]
    async fn delete_group(
        &self,
        request: Request<DeleteGroupRequest>,
    ) -> Result<Response<DeleteGroupResponse>, Status> {
        let started = Instant::now();
        let result = GroupsService::delete_group(self, request.into_inner()).await.map(|()| DeleteGroupResponse {});
        self.answer("delete_group", started, result)
    }

    #[tracing::instrument(skip_all, fields(group = %request.get_ref().group_id, topic = %request.get_ref().topic))]
    async fn reset_offsets(
        &self,
        request: Request<ResetOffsetsRequest>,
    ) -> Result<Response<ResetOffsetsResponse>, Status> {
        let started = Instant::now();
        let result = GroupsService::reset_offsets(self, request.into_inner()).await;
        self.answer("reset_offsets", started, result)
    }
}
