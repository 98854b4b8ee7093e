//! ISR membership: a follower outside the ISR rejoins once it has caught
//! up with the leader.

use brook_record::Offset;

/// Whether a follower fetching from `fetch_offset` has caught up with a
/// leader whose LEO is `leader_log_end` (it has every record the leader
/// has). Kafka also lets a follower rejoin once it reaches the HW; Brook
/// asks for the LEO, which keeps the rule simple and the ISR honest.
pub fn caught_up(fetch_offset: Offset, leader_log_end: Offset) -> bool {
    fetch_offset >= leader_log_end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caught_up_means_reaching_the_leaders_log_end() {
        assert!(caught_up(Offset(10), Offset(10)));
        assert!(!caught_up(Offset(9), Offset(10)));
    }
}
