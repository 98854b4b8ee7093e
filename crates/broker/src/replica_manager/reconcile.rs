//! Reconciliation: bringing the replicas a broker hosts in line with each
//! new metadata state (Kafka's `ReplicaManager.applyDelta`): opening the
//! replicas assigned here, leading or following each at its epoch, closing
//! and deleting those no longer assigned, and sweeping directories of
//! topics the metadata no longer holds.

use super::*;

impl ReplicaManager {
    /// Brings the hosted replicas in line with `state`. Blocking.
    ///
    /// Until the metadata is caught up (`MetadataNode::caught_up`), this
    /// broker is fenced: it hosts and follows, but leads nothing, as its
    /// state may be one from before it stopped; and it removes no
    /// directory, as a topic it does not know yet may own it.
    pub fn reconcile(&self, state: &ClusterState) {
        let fenced = !*self.metadata.caught_up().borrow();
        let old = self.read().clone();
        let alive = state.alive_brokers();
        let next: BTreeMap<String, Arc<Topic>> = state
            .topics
            .values()
            .filter_map(|record| self.reconcile_topic(record, old.get(&record.name), fenced, &alive))
            .map(|topic| (topic.name.clone(), Arc::new(topic)))
            .collect();
        self.close_deleted(&old, &next);
        self.replace(next);
        if !fenced {
            self.sweep_left_overs(state);
        }
    }

    /// One topic of the new state: its slots, with the replicas hosted here
    /// opened (or kept) and told their role. `None` if its configs cannot
    /// be used here.
    fn reconcile_topic(
        &self,
        record: &TopicRecord,
        previous: Option<&Arc<Topic>>,
        fenced: bool,
        alive: &[BrokerId],
    ) -> Option<Topic> {
        let config = match TopicConfig::from_map(&record.configs) {
            Ok(config) => config,
            Err(error) => {
                tracing::error!(topic = %record.name, %error, "topic has configs this broker cannot use; skipping it");
                return None;
            }
        };
        // A previous topic of the same name but another id is another
        // topic: none of its replicas carry over.
        let previous = previous.filter(|topic| topic.id == record.id);
        let config_changed = previous.is_some_and(|topic| topic.configs != record.configs);
        let partitions = record
            .partitions
            .iter()
            .enumerate()
            .map(|(index, partition)| {
                let mut assignment = Assignment::from(partition);
                assignment.unavailable.retain(|replica| !alive.contains(replica));
                if fenced && assignment.leader == Some(self.broker_id) {
                    assignment.leader = None;
                }
                let previous_slot = previous.and_then(|topic| topic.partitions.get(index));
                let slot = self.reconcile_slot(record, &config, index as u32, assignment, previous_slot);
                if let (true, Some(log), Some(_)) = (config_changed, &slot.log, previous_slot) {
                    if let Err(error) = log.set_log_config(config.log_config()) {
                        tracing::error!(topic = %record.name, partition = index, %error, "could not apply the topic's new config");
                    }
                }
                slot
            })
            .collect();
        Some(Topic {
            name: record.name.clone(),
            id: record.id,
            replication_factor: record.replication_factor,
            configs: record.configs.clone(),
            config,
            partitions,
        })
    }

    /// One partition: open, keep or drop this broker's replica, and set
    /// its role.
    fn reconcile_slot(
        &self,
        record: &TopicRecord,
        config: &TopicConfig,
        partition: u32,
        assignment: Assignment,
        previous: Option<&PartitionSlot>,
    ) -> PartitionSlot {
        let me = self.broker_id;
        let role = Role {
            broker_id: me,
            leader: assignment.leader,
            leader_epoch: assignment.leader_epoch,
            isr: assignment.isr.clone(),
            partition_epoch: assignment.partition_epoch,
            unavailable: assignment.unavailable.clone(),
        };
        let hosted = assignment.replicas.contains(&me);
        let log = match (hosted, previous.and_then(|slot| slot.log.clone())) {
            (true, Some(log)) => Some(log),
            (true, None) => self.open_replica(record, config, partition, role.clone()),
            (false, Some(log)) => {
                close_and_remove(&log);
                None
            }
            (false, None) => None,
        };
        if let Some(log) = &log {
            log.set_role(role);
            let was = previous.map(|slot| (slot.assignment.leader == Some(me), slot.assignment.leader_epoch));
            let leads = assignment.leader == Some(me);
            if was != Some((leads, assignment.leader_epoch)) {
                let (name, epoch) = (&record.name, assignment.leader_epoch);
                let doing = if leads { "leads" } else { "follows" };
                tracing::info!(broker_id = %me, topic = %name, partition, %epoch, leader = ?assignment.leader, "broker {me} now {doing} {name}-{partition} at epoch {epoch}");
            }
        }
        PartitionSlot { id: partition, assignment, log }
    }

    fn open_replica(
        &self,
        record: &TopicRecord,
        config: &TopicConfig,
        partition: u32,
        role: Role,
    ) -> Option<Arc<Replica>> {
        let dir = partition_dir(&self.topics_dir, &record.name, record.id, partition);
        let topic_partition = TopicPartition::new(record.name.as_str(), partition);
        let opened =
            Replica::open(topic_partition, record.id, dir, config.log_config(), role, Arc::clone(&self.appended));
        match opened {
            Ok(log) => Some(Arc::new(log)),
            Err(error) => {
                tracing::error!(topic = %record.name, partition, %error, "cannot open an assigned partition");
                None
            }
        }
    }

    /// Closes and removes the replicas of topics that are gone (deleted,
    /// or replaced by a topic of the same name with another id).
    fn close_deleted(&self, old: &BTreeMap<String, Arc<Topic>>, next: &BTreeMap<String, Arc<Topic>>) {
        for (name, topic) in old {
            if next.get(name).is_some_and(|current| current.id == topic.id) {
                continue;
            }
            for (_, log) in topic.hosted() {
                close_and_remove(log);
            }
            tracing::info!(topic = %name, topic_id = %topic.id, "deleted topic");
        }
    }

    /// Removes partition directories this broker's (current) metadata does
    /// not assign here: what a topic deleted while this broker was down,
    /// or a crash during a removal, left behind. Runs when the set of
    /// partitions assigned here changed. Blocking.
    fn sweep_left_overs(&self, state: &ClusterState) {
        let assigned: BTreeSet<(TopicId, u32)> = state
            .topics
            .values()
            .flat_map(|topic| {
                topic
                    .partitions
                    .iter()
                    .enumerate()
                    .filter(|(_, partition)| partition.replicas.contains(&self.broker_id))
                    .map(|(index, _)| (topic.id, index as u32))
            })
            .collect();
        let mut swept_for = self.swept_for.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if swept_for.as_ref() == Some(&assigned) {
            return;
        }
        let entries = match std::fs::read_dir(&self.topics_dir) {
            Ok(entries) => entries,
            Err(error) => {
                tracing::warn!(dir = %self.topics_dir.display(), %error, "cannot list partition directories");
                return;
            }
        };
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str() else { continue };
            match parse_partition_dir(name) {
                Some(partition) if assigned.contains(&partition) => {}
                Some((topic_id, partition)) => {
                    tracing::info!(dir = name, %topic_id, partition, "removing the files of a partition the metadata does not assign here");
                    remove_dir(&entry.path());
                }
                None => tracing::warn!(dir = name, "not a partition directory; leaving it alone"),
            }
        }
        *swept_for = Some(assigned);
    }
}
