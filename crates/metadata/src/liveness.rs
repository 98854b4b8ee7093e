//! Broker liveness, the controller's duty: every broker heartbeats the
//! controller; a broker not heard from for `session_timeout` is declared
//! dead (its partitions' leadership moves, in `ClusterState::apply`), and
//! a dead broker that is heard from again is declared alive.
//!
//! The timeout is measured only on the controller's own clock, from when
//! it saw each heartbeat; a newly elected controller gives every broker a
//! full session from its election before judging it, so an election alone
//! never kills a broker.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::cluster_state::ClusterState;
use crate::command::{BrokerId, CommandV1};

/// What the controller should propose now, given when it last heard from
/// each broker (`last_seen`) and since when it has been controller.
pub fn liveness_changes(
    state: &ClusterState,
    last_seen: &HashMap<BrokerId, Instant>,
    controller_since: Instant,
    now: Instant,
    session_timeout: Duration,
) -> Vec<CommandV1> {
    let judged_from =
        |broker: BrokerId| last_seen.get(&broker).copied().unwrap_or(controller_since).max(controller_since);
    state
        .brokers
        .values()
        .filter_map(|broker| {
            let silent_for = now.saturating_duration_since(judged_from(broker.id));
            let heard_recently =
                last_seen.get(&broker.id).is_some_and(|seen| now.saturating_duration_since(*seen) <= session_timeout);
            if broker.alive && silent_for > session_timeout {
                Some(CommandV1::SetBrokerAlive { broker_id: broker.id, alive: false })
            } else if !broker.alive && heard_recently {
                Some(CommandV1::SetBrokerAlive { broker_id: broker.id, alive: true })
            } else {
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;

    fn state(alive: &[(BrokerId, bool)]) -> ClusterState {
        let mut state = ClusterState::default();
        for &(id, is_alive) in alive {
            let register = CommandV1::RegisterBroker { broker_id: id, address: format!("b{id}") };
            state.apply(&Command::V1(register)).expect("register");
            if !is_alive {
                state.apply(&Command::V1(CommandV1::SetBrokerAlive { broker_id: id, alive: false })).expect("ok");
            }
        }
        state
    }

    #[test]
    fn silent_brokers_die_and_returning_ones_live() {
        let start = Instant::now();
        let session = Duration::from_secs(1);
        let now = start + Duration::from_secs(10);
        let seen = HashMap::from([(1, now - Duration::from_millis(100)), (2, now - Duration::from_secs(3)), (3, now)]);
        let changes = liveness_changes(&state(&[(1, true), (2, true), (3, false)]), &seen, start, now, session);
        assert_eq!(
            changes,
            vec![
                CommandV1::SetBrokerAlive { broker_id: 2, alive: false },
                CommandV1::SetBrokerAlive { broker_id: 3, alive: true },
            ]
        );
    }

    #[test]
    fn a_new_controller_gives_everyone_a_full_session_first() {
        let elected = Instant::now();
        let session = Duration::from_secs(1);
        // Heartbeats seen long ago (by an earlier term) or never: no verdict
        // until a session has passed since the election.
        let seen = HashMap::from([(1, elected - Duration::from_secs(60))]);
        let cluster = state(&[(1, true), (2, true)]);
        assert!(liveness_changes(&cluster, &seen, elected, elected + Duration::from_millis(900), session).is_empty());
        assert_eq!(liveness_changes(&cluster, &seen, elected, elected + Duration::from_millis(1100), session).len(), 2);
    }
}
