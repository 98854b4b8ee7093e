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
use crate::raft_types::NodeId;

/// What a node knows of broker liveness, and, while it is controller,
/// since when.
#[derive(Debug, Default)]
pub(crate) struct Liveness {
    pub(crate) last_seen: HashMap<BrokerId, Instant>,
    /// Since when, and in which Raft term, this node has been controller:
    /// a new term (even one this node wins again, say after a network
    /// partition) starts a new grace period, so heartbeat times from
    /// before it are never used to judge anyone.
    controller_since: Option<(u64, Instant)>,
    /// The controller this node last accepted Raft appends from, and when.
    pub(crate) last_controller_contact: Option<(BrokerId, Instant)>,
    /// While controller: the previous controller and when this node last
    /// heard from it. Its silence is measured from then, not from this
    /// term's start: an election means a majority stopped hearing from it,
    /// so its grace has mostly run already.
    predecessor: Option<(BrokerId, Instant)>,
    /// When this node last judged liveness as controller: a long gap since
    /// means it did not run.
    last_judged: Option<Instant>,
}

/// A gap between two judgements longer than this means the controller
/// itself stalled (it judges every broker heartbeat interval).
fn stall_threshold(session_timeout: Duration) -> Duration {
    session_timeout / 2
}

impl Liveness {
    /// This node is not (or no longer) the controller.
    pub(crate) fn step_down(&mut self) {
        self.last_seen.clear();
        self.controller_since = None;
        self.predecessor = None;
        self.last_judged = None;
    }

    /// As controller `me` in `term`, at `now`: the liveness changes to
    /// propose.
    pub(crate) fn judge(
        &mut self,
        state: &ClusterState,
        term: u64,
        me: NodeId,
        now: Instant,
        session_timeout: Duration,
    ) -> Vec<CommandV1> {
        let stalled_for = self.last_judged.map(|last| now.saturating_duration_since(last));
        self.last_judged = Some(now);
        if let Some(stalled_for) = stalled_for.filter(|gap| *gap > stall_threshold(session_timeout)) {
            // Heartbeats that came while this node was not running wait in
            // its sockets: every broker gets a full session from now.
            tracing::warn!(?stalled_for, "the controller did not run for a while; judging liveness afresh");
            self.controller_since = Some((term, now));
            self.predecessor = None;
        }
        let since = match self.controller_since {
            Some((since_term, since)) if since_term == term => since,
            _ => {
                // A new term: forget what earlier terms saw.
                self.last_seen.clear();
                self.controller_since = Some((term, now));
                self.predecessor = self.last_controller_contact.filter(|(id, _)| NodeId::from(id.0) != me);
                if let Some((predecessor, heard)) = self.predecessor {
                    tracing::info!(%predecessor, silent_for = ?now.saturating_duration_since(heard), "became controller; judging the previous controller from when it was last heard from");
                }
                now
            }
        };
        liveness_changes(state, &self.last_seen, since, self.predecessor, now, session_timeout)
    }
}

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
            } else if !broker.alive && heard_recently && !broker.shutting_down {
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
    use crate::incarnation::{DirectoryId, Incarnation};

    fn state(alive: &[(u32, bool)]) -> ClusterState {
        let mut state = ClusterState::default();
        for &(id, is_alive) in alive {
            let id = BrokerId(id);
            let register = CommandV1::register(id, format!("b{id}"), Incarnation::random(), DirectoryId::random());
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
    fn a_controller_that_did_not_run_for_2_s_declares_no_broker_dead() {
        let start = Instant::now();
        let session = Duration::from_millis(800);
        let at = |millis| start + Duration::from_millis(millis);
        let cluster = state(&[(1, true), (2, true), (3, true)]);
        let mut liveness = Liveness::default();
        for millis in [0, 100, 200] {
            for broker in 1..=3 {
                liveness.last_seen.insert(BrokerId(broker), at(millis));
            }
            assert!(liveness.judge(&cluster, 1, 1, at(millis), session).is_empty());
        }
        // Paused from 200 ms to 2200 ms: the heartbeats of that time wait
        // in its sockets. Waking, it judges before reading them.
        assert!(liveness.judge(&cluster, 1, 1, at(2200), session).is_empty(), "its own stall is no one's silence");
        // Brokers 1 and 2 heartbeat again; broker 3 really is gone.
        for millis in (2300..=3000).step_by(100) {
            liveness.last_seen.insert(BrokerId(1), at(millis));
            liveness.last_seen.insert(BrokerId(2), at(millis));
            let changes = liveness.judge(&cluster, 1, 1, at(millis), session);
            assert!(changes.is_empty(), "at {millis} ms: {changes:?}");
        }
        assert_eq!(
            liveness.judge(&cluster, 1, 1, at(3100), session),
            vec![CommandV1::SetBrokerAlive { broker_id: BrokerId(3), alive: false }],
            "a full session after waking, broker 3 is judged"
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
