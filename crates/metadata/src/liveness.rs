//! Broker liveness, the controller's duty: every broker heartbeats the
//! controller; a broker not heard from for `session_timeout` is declared
//! dead (its partitions' leadership moves, in `ClusterState::apply`), and
//! a dead broker that is heard from again is declared alive.
//!
//! The timeout is measured only on the controller's own clock, from when
//! it saw each heartbeat; a newly elected controller gives every broker a
//! full session from its election before judging it, so an election alone
//! never kills a broker, except its predecessor: that one is judged from
//! when the new controller last heard from it (as Raft leader), since the
//! election itself happened because it fell silent, with a quarter session
//! of grace from the election. A controller kill then costs about one
//! session, not an election plus a session.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::cluster_state::ClusterState;
use crate::command::{BrokerId, CommandV1};

/// What the controller should propose now, given when it last heard from
/// each broker (`last_seen`), since when it has been controller, and the
/// previous controller with when it was last heard from.
pub fn liveness_changes(
    state: &ClusterState,
    last_seen: &HashMap<BrokerId, Instant>,
    controller_since: Instant,
    predecessor: Option<(BrokerId, Instant)>,
    now: Instant,
    session_timeout: Duration,
) -> Vec<CommandV1> {
    // Even the predecessor gets a short grace from the election (a quarter
    // session: a live one learns of the new controller from its first
    // append and heartbeats it within a couple of 100 ms ticks), so a
    // controller that was only cut off briefly is not declared dead at once.
    let predecessor_floor = (controller_since + session_timeout / 4).checked_sub(session_timeout);
    let judged_from = |broker: BrokerId| {
        let floor = match (predecessor, predecessor_floor) {
            (Some((id, heard)), Some(grace)) if id == broker => heard.max(grace).min(controller_since),
            _ => controller_since,
        };
        last_seen.get(&broker).copied().unwrap_or(floor).max(floor)
    };
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

    fn state(alive: &[(u32, bool)]) -> ClusterState {
        let mut state = ClusterState::default();
        for &(id, is_alive) in alive {
            let id = BrokerId(id);
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
        let seen = HashMap::from([
            (BrokerId(1), now - Duration::from_millis(100)),
            (BrokerId(2), now - Duration::from_secs(3)),
            (BrokerId(3), now),
        ]);
        let changes = liveness_changes(&state(&[(1, true), (2, true), (3, false)]), &seen, start, None, now, session);
        assert_eq!(
            changes,
            vec![
                CommandV1::SetBrokerAlive { broker_id: BrokerId(2), alive: false },
                CommandV1::SetBrokerAlive { broker_id: BrokerId(3), alive: true },
            ]
        );
    }

    #[test]
    fn a_new_controller_gives_everyone_a_full_session_first() {
        let elected = Instant::now();
        let session = Duration::from_secs(1);
        // Heartbeats seen long ago (by an earlier term) or never: no verdict
        // until a session has passed since the election.
        let seen = HashMap::from([(BrokerId(1), elected - Duration::from_secs(60))]);
        let cluster = state(&[(1, true), (2, true)]);
        assert!(
            liveness_changes(&cluster, &seen, elected, None, elected + Duration::from_millis(900), session).is_empty()
        );
        assert_eq!(
            liveness_changes(&cluster, &seen, elected, None, elected + Duration::from_millis(1100), session).len(),
            2
        );
    }

    #[test]
    fn the_previous_controller_is_judged_from_when_it_was_last_heard() {
        let elected = Instant::now();
        let session = Duration::from_secs(1);
        let cluster = state(&[(1, true), (2, true), (3, true)]);
        // Broker 1 led until 700 ms before this election.
        let predecessor = Some((BrokerId(1), elected - Duration::from_millis(700)));
        let at = |millis| elected + Duration::from_millis(millis);
        let seen = HashMap::from([(BrokerId(3), at(250))]);
        assert!(liveness_changes(&cluster, &seen, elected, predecessor, at(250), session).is_empty());
        // Long silent (this node was cut off itself): still a quarter
        // session of grace from the election.
        let long_ago = Some((BrokerId(1), elected - Duration::from_secs(30)));
        assert!(liveness_changes(&cluster, &seen, elected, long_ago, at(200), session).is_empty());
        assert_eq!(liveness_changes(&cluster, &seen, elected, long_ago, at(300), session).len(), 1);
        assert_eq!(
            liveness_changes(&cluster, &seen, elected, predecessor, at(350), session),
            vec![CommandV1::SetBrokerAlive { broker_id: BrokerId(1), alive: false }],
            "the predecessor's session ran out; broker 2 still has its grace"
        );
        // A predecessor that heartbeats the new controller lives on.
        let seen = HashMap::from([(BrokerId(1), at(300)), (BrokerId(3), at(300))]);
        assert!(liveness_changes(&cluster, &seen, elected, predecessor, at(350), session).is_empty());
    }
}
