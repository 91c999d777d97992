//! sync: two requests swap bodies. The first waits; the second completes the
//! pair; a third starts a new pair.

use super::table::Channel;
use super::{Millis, WaiterId};

/// What became of an arriving sync request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncArrival {
    Parked,
    Paired(WaiterId),
}

#[derive(Default, Debug)]
pub struct SyncChannel {
    /// At most one request waits: the next arrival pairs with it. Leaving only
    /// ever clears the waiter that left, so a finished pair can never remove a
    /// newer waiter.
    waiting: Option<WaiterId>,
    last_active: Millis,
}

impl SyncChannel {
    pub(super) fn arrive(&mut self, now: Millis, waiter: WaiterId) -> SyncArrival {
        self.last_active = now;
        match self.waiting.take() {
            Some(peer) => SyncArrival::Paired(peer),
            None => {
                self.waiting = Some(waiter);
                SyncArrival::Parked
            }
        }
    }

    pub(super) fn leave(&mut self, now: Millis, waiter: WaiterId) -> bool {
        self.last_active = now;
        if self.waiting == Some(waiter) {
            self.waiting = None;
            return true;
        }
        false
    }
}

impl Channel for SyncChannel {
    fn waiting_len(&self) -> usize {
        usize::from(self.waiting.is_some())
    }

    fn is_busy(&self) -> bool {
        self.waiting.is_some()
    }

    /// A sync channel has nothing but its waiter: it is never remembered.
    fn is_remembered(&self) -> bool {
        false
    }

    fn last_active(&self) -> Millis {
        self.last_active
    }

    fn drain(&mut self, out: &mut Vec<WaiterId>) {
        out.extend(self.waiting.take());
    }

    fn recycle(&mut self) -> bool {
        *self = SyncChannel::default();
        true
    }
}

#[cfg(test)]
mod tests {
    use crate::relay::*;

    #[test]
    fn pairs_form_two_by_two() {
        let mut relay = Relay::new(Settings::default());
        assert_eq!(relay.sync_arrive(0, b"s", WaiterId(1)), SyncArrival::Parked);
        assert_eq!(
            relay.sync_arrive(0, b"s", WaiterId(2)),
            SyncArrival::Paired(WaiterId(1))
        );
        assert_eq!(
            relay.sync_arrive(0, b"s", WaiterId(3)),
            SyncArrival::Parked,
            "a third starts a new pair"
        );
        assert_eq!(
            relay.sync_arrive(0, b"s", WaiterId(4)),
            SyncArrival::Paired(WaiterId(3))
        );
    }

    #[test]
    fn a_finished_pair_never_removes_a_newer_waiter() {
        let mut relay = Relay::new(Settings::default());
        relay.sync_arrive(0, b"s", WaiterId(1));
        relay.sync_arrive(0, b"s", WaiterId(2));
        relay.sync_arrive(0, b"s", WaiterId(3));
        // The finished pair's connections closing must not touch waiter 3.
        assert!(!relay.sync_leave(0, b"s", WaiterId(1)));
        assert!(!relay.sync_leave(0, b"s", WaiterId(2)));
        assert_eq!(
            relay.sync_arrive(0, b"s", WaiterId(4)),
            SyncArrival::Paired(WaiterId(3))
        );
    }

    #[test]
    fn a_waiter_that_left_is_not_paired() {
        let mut relay = Relay::new(Settings::default());
        relay.sync_arrive(0, b"s", WaiterId(1));
        assert!(relay.sync_leave(0, b"s", WaiterId(1)));
        assert_eq!(relay.sync_arrive(0, b"s", WaiterId(2)), SyncArrival::Parked);
    }
}
