//! Replica assignment for a new topic, done by the controller before it
//! proposes `CreateTopic`: replicas on distinct brokers, leaders (the
//! first replica) spread evenly, as Kafka's rack-unaware assignment does.

use crate::command::{BrokerId, CommandError};

/// Assigns `replication_factor` distinct brokers from `alive` (any order)
/// to each of `partitions` partitions. Partition `p`'s replicas are
/// consecutive brokers starting at `(start + p) % n`, so leaders rotate.
pub fn assign_replicas(
    alive: &[BrokerId],
    partitions: u32,
    replication_factor: u32,
    start: usize,
) -> Result<Vec<Vec<BrokerId>>, CommandError> {
    let mut brokers = alive.to_vec();
    brokers.sort_unstable();
    brokers.dedup();
    let count = brokers.len();
    if replication_factor == 0 || replication_factor as usize > count {
        return Err(CommandError::InvalidReplicationFactor { requested: replication_factor, alive: count as u32 });
    }
    Ok((0..partitions as usize)
        .map(|partition| {
            (0..replication_factor as usize).map(|replica| brokers[(start + partition + replica) % count]).collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_are_distinct_and_leaders_even() {
        let assignments = assign_replicas(&[BrokerId(3), BrokerId(1), BrokerId(2)], 6, 3, 0).expect("valid");
        let mut leaders = [0; 4];
        for replicas in &assignments {
            let mut sorted = replicas.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), 3, "distinct replicas: {replicas:?}");
            leaders[replicas[0].0 as usize] += 1;
        }
        assert_eq!(&leaders[1..], &[2, 2, 2]);
    }

    #[test]
    fn a_replication_factor_above_the_brokers_is_refused() {
        assert_eq!(
            assign_replicas(&[BrokerId(1), BrokerId(2)], 3, 3, 0),
            Err(CommandError::InvalidReplicationFactor { requested: 3, alive: 2 })
        );
    }
}
