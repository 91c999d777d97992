//! link: one producer to one consumer, matched first come first served.

use std::collections::VecDeque;

use super::secret::{Presented, WriteSecret};
use super::table::Channel;
use super::{ClaimError, Millis, Role, WaiterId};

/// What became of an arriving link request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkArrival {
    /// Nobody of the other role is waiting: the request waits in the queue.
    Parked,
    /// Paired with this waiter of the other role, which left the queue.
    Paired(WaiterId),
}

/// One link channel. Only one role can be waiting at a time: an arrival of the
/// other role is paired at once, so a single queue and its role suffice.
#[derive(Default, Debug)]
pub struct LinkChannel {
    waiting: VecDeque<WaiterId>,
    waiting_role: Option<Role>,
    secret: WriteSecret,
    last_active: Millis,
}

/// Queue capacity a recycled channel may keep.
const RECYCLE_CAPACITY: usize = 8;

impl LinkChannel {
    pub(super) fn arrive(
        &mut self,
        now: Millis,
        role: Role,
        waiter: WaiterId,
        secret: Presented,
        room: bool,
    ) -> Result<LinkArrival, ClaimError> {
        self.last_active = now;
        if role == Role::Producer {
            self.secret.admit(secret, room)?;
        }
        if self.waiting_role.is_some_and(|r| r != role) {
            if let Some(counterpart) = self.waiting.pop_front() {
                if self.waiting.is_empty() {
                    self.waiting_role = None;
                }
                return Ok(LinkArrival::Paired(counterpart));
            }
        }
        self.waiting.push_back(waiter);
        self.waiting_role = Some(role);
        Ok(LinkArrival::Parked)
    }

    pub(super) fn leave(&mut self, now: Millis, waiter: WaiterId) -> bool {
        let Some(at) = self.waiting.iter().position(|&w| w == waiter) else {
            return false;
        };
        self.waiting.remove(at);
        if self.waiting.is_empty() {
            self.waiting_role = None;
        }
        self.last_active = now;
        true
    }
}

impl Channel for LinkChannel {
    fn claim(&self) -> Option<super::key::Key> {
        self.secret.claim()
    }
    fn restore_claim(&mut self, now: Millis, secret: super::key::Key) {
        self.secret.restore(secret);
        self.last_active = now;
    }

    fn waiting_len(&self) -> usize {
        self.waiting.len()
    }

    fn is_busy(&self) -> bool {
        !self.waiting.is_empty()
    }

    fn is_remembered(&self) -> bool {
        self.secret.is_claimed()
    }

    fn last_active(&self) -> Millis {
        self.last_active
    }

    fn drain(&mut self, out: &mut Vec<WaiterId>) {
        out.extend(self.waiting.drain(..));
        self.waiting_role = None;
    }

    fn recycle(&mut self) -> bool {
        let keep = self.waiting.capacity() <= RECYCLE_CAPACITY;
        self.waiting.clear();
        self.waiting_role = None;
        self.secret = WriteSecret::default();
        self.last_active = 0;
        keep
    }
}

#[cfg(test)]
mod tests {
    use crate::relay::testing::{w, C, P};
    use crate::relay::*;

    #[test]
    fn whichever_comes_first_waits_then_pairs_with_the_other() {
        for (first, second) in [(P, C), (C, P)] {
            let mut relay = Relay::new(Settings::default());
            assert_eq!(
                relay.link_arrive(0, b"x", first, w(1), b""),
                Ok(LinkArrival::Parked)
            );
            assert_eq!(
                relay.link_arrive(5, b"x", second, w(2), b""),
                Ok(LinkArrival::Paired(w(1))),
                "{first:?} first"
            );
            assert_eq!(relay.waiter_count(), 0);
        }
    }

    #[test]
    fn same_role_queues_first_come_first_served() {
        let mut relay = Relay::new(Settings::default());
        for n in 1..=3 {
            assert_eq!(
                relay.link_arrive(n as u64, b"q", P, w(n), b""),
                Ok(LinkArrival::Parked)
            );
        }
        for (n, expected) in (4..=6).zip(1..=3) {
            assert_eq!(
                relay.link_arrive(n as u64, b"q", C, w(n), b""),
                Ok(LinkArrival::Paired(w(expected)))
            );
        }
        assert_eq!(relay.waiter_count(), 0);
    }

    #[test]
    fn consumers_queue_first_come_first_served() {
        let mut relay = Relay::new(Settings::default());
        for n in 1..=3 {
            relay.link_arrive(0, b"q", C, w(n), b"").unwrap();
        }
        for (n, expected) in (4..=6).zip(1..=3) {
            assert_eq!(
                relay.link_arrive(0, b"q", P, w(n), b""),
                Ok(LinkArrival::Paired(w(expected)))
            );
        }
    }

    #[test]
    fn channels_are_independent() {
        let mut relay = Relay::new(Settings::default());
        relay.link_arrive(0, b"a", P, w(1), b"").unwrap();
        assert_eq!(
            relay.link_arrive(0, b"b", C, w(2), b""),
            Ok(LinkArrival::Parked)
        );
        assert_eq!(
            relay.link_arrive(0, b"", C, w(3), b""),
            Ok(LinkArrival::Parked)
        );
        assert_eq!(
            relay.link_arrive(0, b"a", C, w(4), b""),
            Ok(LinkArrival::Paired(w(1)))
        );
    }

    #[test]
    fn a_waiter_that_left_is_never_matched() {
        let mut relay = Relay::new(Settings::default());
        relay.link_arrive(0, b"x", C, w(1), b"").unwrap();
        relay.link_arrive(0, b"x", C, w(2), b"").unwrap();
        assert!(relay.link_leave(1, b"x", w(1)));
        assert!(!relay.link_leave(1, b"x", w(1)), "leaving twice is a no-op");
        assert_eq!(
            relay.link_arrive(2, b"x", P, w(3), b""),
            Ok(LinkArrival::Paired(w(2)))
        );
        relay.link_arrive(3, b"x", C, w(4), b"").unwrap();
        relay.link_leave(4, b"x", w(4));
        assert_eq!(
            relay.link_arrive(5, b"x", P, w(5), b""),
            Ok(LinkArrival::Parked)
        );
    }

    #[test]
    fn first_producer_with_a_secret_claims_the_channel() {
        let mut relay = Relay::new(Settings::default());
        let wrong = Err(ClaimError::WrongSecret);
        for (n, secret, expected) in [
            // Without a secret on an unclaimed channel: accepted, claims nothing.
            (1, &b""[..], Ok(LinkArrival::Parked)),
            (2, b"abc", Ok(LinkArrival::Parked)),
            (3, b"xyz", wrong),
            (4, b"", wrong),
            (5, b"abc", Ok(LinkArrival::Parked)),
        ] {
            let got = relay.link_arrive(0, b"s", P, w(n), secret);
            assert_eq!(got, expected, "producer {n}");
        }
        assert_eq!(relay.waiter_count(), 3, "refused producers are not queued");
    }

    #[test]
    fn consumers_are_never_asked_for_the_secret() {
        let mut relay = Relay::new(Settings::default());
        relay.link_arrive(0, b"s", P, w(1), b"abc").unwrap();
        assert_eq!(
            relay.link_arrive(0, b"s", C, w(2), b"other"),
            Ok(LinkArrival::Paired(w(1)))
        );
        assert_eq!(
            relay.link_arrive(0, b"s", C, w(3), b""),
            Ok(LinkArrival::Parked)
        );
    }
}
