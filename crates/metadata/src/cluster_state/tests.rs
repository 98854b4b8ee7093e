use super::*;

fn ids(raw: &[u32]) -> Vec<BrokerId> {
    raw.iter().copied().map(BrokerId).collect()
}

fn state_with_brokers(raw: &[u32]) -> ClusterState {
    let mut state = ClusterState::default();
    for id in ids(raw) {
        let command =
            CommandV1::register(id, format!("127.0.0.1:{}", 9091 + id.0), Incarnation::random(), DirectoryId::random());
        state.apply(&Command::V1(command)).expect("register");
    }
    state
}

/// A leader's ISR change of partition 0 of topic "t".
/// Built on the partition's current version.
fn change_isr(state: &ClusterState, leader_epoch: u32, isr: &[u32]) -> CommandV1 {
    CommandV1::ChangeIsr {
        topic: "t".into(),
        topic_id: state.topics["t"].id,
        partition: 0,
        leader_epoch: LeaderEpoch(leader_epoch),
        partition_epoch: state.topics["t"].partitions[0].partition_epoch,
        isr: ids(isr),
        joining: None,
    }
}

fn create(state: &mut ClusterState, name: &str, assignments: Vec<Vec<BrokerId>>) -> CommandResult {
    let replication_factor = assignments[0].len() as u32;
    state.apply(&Command::V1(CommandV1::CreateTopic {
        name: name.into(),
        topic_id: TopicId::random(),
        replication_factor,
        configs: BTreeMap::new(),
        assignments,
    }))
}

#[test]
fn a_dead_leader_hands_its_partitions_to_the_isr_at_the_next_epoch() {
    let mut state = state_with_brokers(&[1, 2, 3]);
    create(&mut state, "orders", vec![ids(&[1, 2, 3]), ids(&[2, 3, 1])]).expect("create");
    let outcome =
        state.apply(&Command::V1(CommandV1::SetBrokerAlive { broker_id: BrokerId(1), alive: false })).expect("ok");
    assert_eq!(
        outcome,
        Outcome::LeadersChanged(vec![LeaderChange {
            topic: "orders".into(),
            partition: 0,
            leader: Some(BrokerId(2)),
            leader_epoch: LeaderEpoch(1)
        }])
    );
    let partitions = &state.topics["orders"].partitions;
    assert_eq!((partitions[0].leader, partitions[0].leader_epoch), (Some(BrokerId(2)), LeaderEpoch(1)));
    assert_eq!(partitions[0].isr, ids(&[2, 3]));
    assert_eq!(
        (partitions[1].leader, partitions[1].leader_epoch),
        (Some(BrokerId(2)), LeaderEpoch(0)),
        "untouched leader keeps its epoch"
    );
    assert_eq!(partitions[1].isr, ids(&[2, 3]));
}

#[test]
fn with_no_live_isr_member_a_partition_waits_for_one() {
    let mut state = state_with_brokers(&[1, 2]);
    create(&mut state, "t", vec![ids(&[1, 2])]).expect("create");
    let isr = change_isr(&state, 0, &[1]);
    state.apply(&Command::V1(isr)).expect("shrink ISR");
    state.apply(&Command::V1(CommandV1::SetBrokerAlive { broker_id: BrokerId(1), alive: false })).expect("ok");
    let partition = &state.topics["t"].partitions[0];
    assert_eq!(partition.leader, None, "broker 2 is out of sync: no unclean election");
    assert_eq!(partition.isr, ids(&[1]));
    state.apply(&Command::V1(CommandV1::SetBrokerAlive { broker_id: BrokerId(1), alive: true })).expect("ok");
    let partition = &state.topics["t"].partitions[0];
    assert_eq!((partition.leader, partition.leader_epoch), (Some(BrokerId(1)), LeaderEpoch(2)));
}

#[test]
fn a_topic_that_allows_unclean_election_takes_any_live_replica() {
    let mut state = state_with_brokers(&[1, 2]);
    let configs = BTreeMap::from([(UNCLEAN_ELECTION.to_string(), "true".to_string())]);
    let create = CommandV1::CreateTopic {
        name: "t".into(),
        topic_id: TopicId::random(),
        replication_factor: 2,
        configs,
        assignments: vec![ids(&[1, 2])],
    };
    state.apply(&Command::V1(create)).expect("create");
    let isr = change_isr(&state, 0, &[1]);
    state.apply(&Command::V1(isr)).expect("shrink ISR");
    state.apply(&Command::V1(CommandV1::SetBrokerAlive { broker_id: BrokerId(1), alive: false })).expect("ok");
    let partition = &state.topics["t"].partitions[0];
    assert_eq!(
        (partition.leader, partition.leader_epoch, partition.isr.clone()),
        (Some(BrokerId(2)), LeaderEpoch(1), ids(&[2]))
    );
}

#[test]
fn refusals_name_the_problem_and_change_nothing() {
    let mut state = state_with_brokers(&[1, 2]);
    create(&mut state, "t", vec![ids(&[1, 2])]).expect("create");
    let before = state.clone();
    assert_eq!(
        create(&mut state, "t", vec![ids(&[1, 2])]),
        Err(CommandError::TopicAlreadyExists { topic: "t".into() })
    );
    assert!(matches!(create(&mut state, "u", vec![ids(&[1, 1])]), Err(CommandError::InvalidAssignment { .. })));
    for name in ["../x", "a/b", "", "..", &"n".repeat(250)] {
        let refused = create(&mut state, name, vec![ids(&[1, 2])]);
        assert!(matches!(refused, Err(CommandError::InvalidTopicName { .. })), "{name:?}: {refused:?}");
    }
    assert_eq!(
        create(&mut state, "u", vec![ids(&[1, 7])]),
        Err(CommandError::UnknownBroker { broker_id: BrokerId(7) })
    );
    let stale = change_isr(&state, 3, &[1]);
    assert!(matches!(
        state.apply(&Command::V1(stale)),
        Err(CommandError::StaleLeaderEpoch { current: LeaderEpoch(0), .. })
    ));
    let without_leader = change_isr(&state, 0, &[2]);
    assert!(matches!(state.apply(&Command::V1(without_leader)), Err(CommandError::InvalidIsr { .. })));
    let mut stale = change_isr(&state, 0, &[1]);
    if let CommandV1::ChangeIsr { partition_epoch, .. } = &mut stale {
        *partition_epoch = 5;
    }
    assert!(matches!(state.apply(&Command::V1(stale)), Err(CommandError::StalePartitionEpoch { current: 0, .. })));
    let mut other_topic = change_isr(&state, 0, &[1]);
    if let CommandV1::ChangeIsr { topic_id, .. } = &mut other_topic {
        *topic_id = TopicId::random();
    }
    assert!(matches!(state.apply(&Command::V1(other_topic)), Err(CommandError::TopicIdMismatch { .. })));
    let delete = CommandV1::DeleteTopic { name: "nope".into() };
    assert_eq!(state.apply(&Command::V1(delete)), Err(CommandError::UnknownTopic { topic: "nope".into() }));
    assert_eq!(state, before);
}

#[test]
fn a_dead_broker_cannot_join_the_isr() {
    let mut state = state_with_brokers(&[1, 2]);
    create(&mut state, "t", vec![ids(&[1, 2])]).expect("create");
    state
        .apply(&Command::V1(CommandV1::SetBrokerAlive { broker_id: BrokerId(2), alive: false }))
        .expect("broker 2 dies");
    assert_eq!(state.topics["t"].partitions[0].isr, ids(&[1]));
    let before = state.clone();
    let dead_joins = change_isr(&state, 0, &[1, 2]);
    let refused = state.apply(&Command::V1(dead_joins));
    assert!(
        matches!(&refused, Err(CommandError::InvalidIsr { reason, .. }) if reason.contains("not alive")),
        "{refused:?}"
    );
    assert_eq!(state, before);
}

#[test]
fn producer_ids_come_in_blocks_and_a_keyed_producer_gets_the_next_epoch() {
    let mut state = state_with_brokers(&[1, 2]);
    let allocate = |broker: u32| Command::V1(CommandV1::AllocateProducerIds { broker_id: BrokerId(broker) });
    assert_eq!(state.apply(&allocate(1)), Ok(Outcome::ProducerIds { first: 0, count: PRODUCER_ID_BLOCK }));
    assert_eq!(state.apply(&allocate(2)), Ok(Outcome::ProducerIds { first: 1000, count: PRODUCER_ID_BLOCK }));
    assert!(state.apply(&allocate(9)).is_err());
    let init = |key: &str| Command::V1(CommandV1::InitKeyedProducer { key: key.into() });
    assert_eq!(state.apply(&init("orders")), Ok(Outcome::Producer { producer_id: 2000, producer_epoch: 0 }));
    assert_eq!(state.apply(&init("orders")), Ok(Outcome::Producer { producer_id: 2000, producer_epoch: 1 }));
    assert_eq!(state.apply(&init("audit")), Ok(Outcome::Producer { producer_id: 2001, producer_epoch: 0 }));
    assert!(matches!(state.apply(&init("")), Err(CommandError::InvalidProducerKey { .. })));
    state.producer_ids.keyed.insert("old".into(), (5, i16::MAX));
    assert_eq!(state.apply(&init("old")), Ok(Outcome::Producer { producer_id: 2002, producer_epoch: 0 }));
}

#[test]
fn a_producer_key_expires_once_neither_initialised_nor_reported_for_the_expiration() {
    let mut state = state_with_brokers(&[1]);
    let init = |key: &str| Command::V1(CommandV1::InitKeyedProducer { key: key.into() });
    let pass = |state: &mut ClusterState, now_ms: i64| {
        let command = Command::V1(CommandV1::ExpireProducerKeys { now_ms, expiration_ms: 1_000 });
        state.apply(&command).expect("expire")
    };
    let (Ok(Outcome::Producer { producer_id: busy_id, .. }), Ok(Outcome::Producer { producer_id: idle_id, .. })) =
        (state.apply(&init("busy")), state.apply(&init("idle")))
    else {
        panic!("keyed producers initialised")
    };
    assert_eq!(pass(&mut state, 0), Outcome::ProducerKeysExpired(0), "the first pass only marks");
    // "busy" appends somewhere; its broker reports it (an unknown key in
    // the same report changes nothing).
    let report = Command::V1(CommandV1::ProducerKeysActive { keys: vec!["busy".into(), "never-seen".into()] });
    assert_eq!(state.apply(&report), Ok(Outcome::Done));
    assert!(!state.producer_key_activity.contains_key("never-seen"));
    assert_eq!(pass(&mut state, 900), Outcome::ProducerKeysExpired(0), "not yet a full expiration");
    assert_eq!(pass(&mut state, 1_000), Outcome::ProducerKeysExpired(1), "idle for the whole expiration");
    assert!(!state.producer_ids.keyed.contains_key("idle") && !state.producer_key_activity.contains_key("idle"));
    assert_eq!(state.producer_ids.keyed.get("busy").map(|entry| entry.0), Some(busy_id));
    // Under a forgotten key a producer starts afresh, with an id never
    // handed out before; the kept key bumps its epoch.
    let Ok(Outcome::Producer { producer_id, producer_epoch }) = state.apply(&init("idle")) else {
        panic!("re-initialised")
    };
    assert!(producer_id > busy_id.max(idle_id) && producer_epoch == 0);
    assert_eq!(state.apply(&init("busy")), Ok(Outcome::Producer { producer_id: busy_id, producer_epoch: 1 }));
    assert_eq!(pass(&mut state, 1_899), Outcome::ProducerKeysExpired(0), "both initialised: marked anew");
    assert_eq!(pass(&mut state, 2_898), Outcome::ProducerKeysExpired(0));
    assert_eq!(pass(&mut state, 2_899), Outcome::ProducerKeysExpired(2), "unchanged since their marks");
}

#[test]
fn offsets_are_committed_per_group_and_go_with_their_topic() {
    let mut state = state_with_brokers(&[1]);
    create(&mut state, "t", vec![ids(&[1]), ids(&[1])]).expect("create");
    let commit = OffsetCommit { topic: "t".into(), partition: 1, offset: 42, metadata: "m".into(), topic_id: None };
    state.apply(&Command::V1(CommandV1::CommitOffsets { group: "g".into(), offsets: vec![commit] })).expect("commit");
    assert_eq!(state.offsets["g"]["t"][&1].offset, 42);
    let json = serde_json::to_string(&state).expect("serialise");
    assert_eq!(serde_json::from_str::<ClusterState>(&json).expect("deserialise"), state);
    let old_id = state.topics["t"].id;
    state.apply(&Command::V1(CommandV1::DeleteTopic { name: "t".into() })).expect("delete");
    assert!(state.offsets["g"].is_empty());
    // A commit admitted before the delete does not land on the topic
    // created again under the name.
    create(&mut state, "t", vec![ids(&[1]), ids(&[1])]).expect("create again");
    let queued =
        OffsetCommit { topic: "t".into(), partition: 1, offset: 7, metadata: "m".into(), topic_id: Some(old_id) };
    let refused = state.apply(&Command::V1(CommandV1::CommitOffsets { group: "g".into(), offsets: vec![queued] }));
    assert!(matches!(refused, Err(CommandError::TopicIdMismatch { .. })), "{refused:?}");
    assert!(state.offsets["g"].is_empty());
}

#[test]
fn empty_groups_expire_once_unchanged_for_the_retention_and_live_ones_stay() {
    let mut state = state_with_brokers(&[1]);
    create(&mut state, "t", vec![ids(&[1])]).expect("create");
    let commit = |state: &mut ClusterState, group: &str| {
        let offsets =
            vec![OffsetCommit { topic: "t".into(), partition: 0, offset: 1, metadata: String::new(), topic_id: None }];
        state.apply(&Command::V1(CommandV1::CommitOffsets { group: group.into(), offsets })).expect("commit");
    };
    let expire = |state: &mut ClusterState, now_ms: i64| {
        state.apply(&Command::V1(CommandV1::ExpireGroups { now_ms, retention_ms: 1_000 })).expect("expire")
    };
    commit(&mut state, "idle");
    commit(&mut state, "busy");
    let join = crate::consumer_group::GroupHeartbeat {
        group: "live".into(),
        member_id: "m".into(),
        member_epoch: 0,
        subscribed: Some(["t".to_string()].into()),
        owned: None,
        assignor: None,
        session_timeout_ms: 45_000,
        client_id: String::new(),
        max_size: None,
    };
    state.apply(&Command::V1(CommandV1::GroupHeartbeat(join))).expect("join");
    assert_eq!(expire(&mut state, 0), Outcome::GroupsExpired(0), "the first pass only marks");
    commit(&mut state, "busy");
    assert_eq!(expire(&mut state, 999), Outcome::GroupsExpired(0), "not yet a second");
    assert_eq!(expire(&mut state, 1_000), Outcome::GroupsExpired(1), "idle since its mark for the retention");
    assert!(!state.offsets.contains_key("idle") && !state.group_activity.contains_key("idle"));
    assert!(state.offsets.contains_key("busy"), "changed after the first mark: marked again at 999");
    assert_eq!(expire(&mut state, 1_999), Outcome::GroupsExpired(1));
    assert!(state.groups.contains_key("live"), "a group with members never expires");
    // Every broker applies the same: the state round-trips.
    let json = serde_json::to_string(&state).expect("serialise");
    assert_eq!(serde_json::from_str::<ClusterState>(&json).expect("deserialise"), state);
}

#[test]
fn a_delayed_expansion_cannot_bring_back_a_follower_that_died_and_returned() {
    let mut state = state_with_brokers(&[1, 2]);
    create(&mut state, "t", vec![ids(&[1, 2])]).expect("create");
    state.apply(&Command::V1(change_isr(&state, 0, &[1]))).expect("shrink: 2 lags");
    // Leader 1 proposes 2 back in when it has caught up; before the
    // proposal commits (or while the leader retries it), 2 dies and
    // restarts far behind.
    let expansion = change_isr(&state, 0, &[1, 2]);
    state.apply(&Command::V1(CommandV1::SetBrokerAlive { broker_id: BrokerId(2), alive: false })).expect("dies");
    state.apply(&Command::V1(CommandV1::SetBrokerAlive { broker_id: BrokerId(2), alive: true })).expect("returns");
    let refused = state.apply(&Command::V1(expansion.clone()));
    assert!(matches!(refused, Err(CommandError::StalePartitionEpoch { .. })), "{refused:?}");
    assert_eq!(state.topics["t"].partitions[0].isr, ids(&[1]));
    // Built on the current version, the same change applies, once; a
    // repeat of it is stale.
    let fresh = change_isr(&state, 0, &[1, 2]);
    state.apply(&Command::V1(fresh.clone())).expect("applies");
    assert!(matches!(state.apply(&Command::V1(fresh)), Err(CommandError::StalePartitionEpoch { .. })));
}
/// Broker `id` registers again: a new process (incarnation) on
/// `directory`, not finding `lost` replicas.
fn restart(state: &mut ClusterState, id: u32, directory: DirectoryId, lost: Vec<(TopicId, u32)>) -> CommandResult {
    state.apply(&Command::V1(CommandV1::RegisterBroker {
        broker_id: BrokerId(id),
        address: format!("127.0.0.1:{}", 9091 + id),
        incarnation: Incarnation::random(),
        directory_id: directory,
        cluster_id: state.cluster_id,
        lost_replicas: lost,
        kafka_address: String::new(),
    }))
}

#[test]
fn a_restarted_leader_is_fenced_before_it_leads_or_counts_toward_a_high_watermark() {
    let mut state = state_with_brokers(&[1, 2, 3]);
    create(&mut state, "t", vec![ids(&[3, 1, 2])]).expect("create");
    let before = state.brokers[&BrokerId(3)].clone();
    // Restarted within its session: the controller never saw it die.
    let outcome = restart(&mut state, 3, before.directory_id, vec![]).expect("registers");
    let Outcome::Registered { broker_epoch, moved, .. } = outcome else { panic!("{outcome:?}") };
    assert!(broker_epoch > before.broker_epoch, "a new incarnation gets a new broker epoch");
    assert_eq!(
        moved,
        vec![LeaderChange { topic: "t".into(), partition: 0, leader: Some(BrokerId(1)), leader_epoch: LeaderEpoch(1) }]
    );
    let partition = &state.topics["t"].partitions[0];
    assert_eq!(partition.isr, ids(&[1, 2]), "it rejoins the ISR by catching up as a follower");
    assert!(state.brokers[&BrokerId(3)].alive);
    assert_eq!(state.brokers[&BrokerId(3)].broker_epoch, broker_epoch);
}

#[test]
fn an_expansion_seen_from_an_older_incarnation_is_refused() {
    let mut state = state_with_brokers(&[1, 2]);
    create(&mut state, "t", vec![ids(&[1, 2])]).expect("create");
    state.apply(&Command::V1(change_isr(&state, 0, &[1]))).expect("2 lags");
    let seen_as = state.brokers[&BrokerId(2)].broker_epoch;
    // Broker 2 restarts; a fetch of its old process reached the leader
    // after the leader's metadata showed the restart (so the proposal
    // is built on the current partition epoch).
    let directory = state.brokers[&BrokerId(2)].directory_id;
    restart(&mut state, 2, directory, vec![]).expect("registers");
    let mut expansion = change_isr(&state, 0, &[1, 2]);
    if let CommandV1::ChangeIsr { joining, .. } = &mut expansion {
        *joining = Some((BrokerId(2), seen_as));
    }
    let refused = state.apply(&Command::V1(expansion.clone()));
    assert!(matches!(refused, Err(CommandError::StaleBrokerEpoch { epoch, .. }) if epoch == seen_as), "{refused:?}");
    assert_eq!(state.topics["t"].partitions[0].isr, ids(&[1]));
    if let CommandV1::ChangeIsr { joining, .. } = &mut expansion {
        *joining = Some((BrokerId(2), state.brokers[&BrokerId(2)].broker_epoch));
    }
    state.apply(&Command::V1(expansion)).expect("as its current incarnation, it joins");
}

#[test]
fn a_repeated_registration_of_the_same_incarnation_changes_nothing() {
    let mut state = state_with_brokers(&[1, 2]);
    create(&mut state, "t", vec![ids(&[1, 2])]).expect("create");
    let broker = state.brokers[&BrokerId(1)].clone();
    let again = CommandV1::register(BrokerId(1), broker.address.clone(), broker.incarnation, broker.directory_id);
    let before = state.clone();
    let outcome = state.apply(&Command::V1(again)).expect("a retry is answered");
    assert!(
        matches!(outcome, Outcome::Registered { broker_epoch, ref moved, .. } if broker_epoch == broker.broker_epoch && moved.is_empty())
    );
    assert_eq!(state, before);
}

#[test]
fn the_last_in_sync_replica_back_with_its_data_leads_again_at_a_new_epoch() {
    let mut state = state_with_brokers(&[1, 2]);
    create(&mut state, "t", vec![ids(&[1, 2])]).expect("create");
    state.apply(&Command::V1(change_isr(&state, 0, &[1]))).expect("2 lags");
    let directory = state.brokers[&BrokerId(1)].directory_id;
    restart(&mut state, 1, directory, vec![]).expect("registers");
    let partition = &state.topics["t"].partitions[0];
    assert_eq!((partition.leader, partition.isr.clone()), (Some(BrokerId(1)), ids(&[1])));
    assert!(partition.leader_epoch > LeaderEpoch(0), "a new incarnation leads at a new epoch");
}

#[test]
fn the_last_in_sync_replica_back_without_its_data_leaves_the_partition_offline_until_an_unclean_election() {
    let mut state = state_with_brokers(&[1, 2]);
    create(&mut state, "t", vec![ids(&[1, 2]), ids(&[2, 1])]).expect("create");
    state.apply(&Command::V1(change_isr(&state, 0, &[1]))).expect("2 lags on t-0");
    // A replaced disk: another directory id.
    restart(&mut state, 1, DirectoryId::random(), vec![]).expect("registers");
    let partition = &state.topics["t"].partitions[0];
    assert_eq!(
        (partition.leader, partition.isr.clone(), partition.lost_by),
        (None, vec![], Some(BrokerId(1))),
        "an empty log never leads"
    );
    let other = &state.topics["t"].partitions[1];
    assert_eq!((other.leader, other.isr.clone()), (Some(BrokerId(2)), ids(&[2])), "t-1 keeps its complete leader");
    // Only an unclean election, asked for, ends it; it prefers the
    // replica that kept its data (out of sync, it may still hold more).
    let topic = &state.topics["t"];
    let configs = BTreeMap::from([(UNCLEAN_ELECTION.to_string(), "true".to_string())]);
    let allow = CommandV1::AlterTopicConfig { name: "t".into(), topic_id: topic.id, configs };
    let outcome = state.apply(&Command::V1(allow)).expect("alter");
    assert!(matches!(outcome, Outcome::LeadersChanged(ref moved) if moved.len() == 1), "{outcome:?}");
    let partition = &state.topics["t"].partitions[0];
    assert_eq!((partition.leader, partition.isr.clone(), partition.lost_by), (Some(BrokerId(2)), ids(&[2]), None));
}

#[test]
fn a_lost_partition_directory_counts_as_lost_data_for_that_partition_only() {
    let mut state = state_with_brokers(&[1]);
    create(&mut state, "t", vec![ids(&[1]), ids(&[1])]).expect("create");
    let (topic_id, directory) = (state.topics["t"].id, state.brokers[&BrokerId(1)].directory_id);
    restart(&mut state, 1, directory, vec![(topic_id, 1)]).expect("registers");
    let partitions = &state.topics["t"].partitions;
    assert_eq!(partitions[0].leader, Some(BrokerId(1)));
    assert_eq!((partitions[1].leader, partitions[1].lost_by), (None, Some(BrokerId(1))));
}

#[test]
fn a_directory_of_another_cluster_is_refused() {
    let mut state = state_with_brokers(&[1, 2]);
    let cluster = state.cluster_id.expect("the first registration names the cluster");
    let before = state.clone();
    let mut foreign = CommandV1::register(BrokerId(2), "b2", Incarnation::random(), DirectoryId::random());
    if let CommandV1::RegisterBroker { cluster_id, .. } = &mut foreign {
        *cluster_id = Some(ClusterId::random());
    }
    let refused = state.apply(&Command::V1(foreign));
    assert!(
        matches!(&refused, Err(CommandError::ForeignDirectory { cluster: ours, .. }) if *ours == cluster),
        "{refused:?}"
    );
    assert_eq!(state, before);
}
