//! Piping Server transfers: one sender to `n` receivers on a path. Either side
//! may come first; the transfer is established when the sender and all `n`
//! receivers are there, and the path is taken until it ends.

use super::table::Channel;
use super::{Millis, WaiterId};

/// Which side of a transfer a request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PipingRole {
    /// `POST` or `PUT`: its body goes to every receiver.
    Sender,
    /// `GET`: receives the sender's body.
    Receiver,
}

/// What became of an arriving party.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PipingArrival {
    /// It waits. A sender learns how many receivers wait already; a
    /// receiver, the sender waiting for it (to be told), if any.
    Waiting {
        receivers: usize,
        sender: Option<WaiterId>,
    },
    /// It was the last one: the transfer starts between `sender` and the
    /// receivers handed out (in arrival order), none of whom waits any more.
    Established { sender: WaiterId },
}

/// Why an arriving party is refused; the path is left as it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PipingError {
    /// A transfer on the path is under way.
    Established,
    /// A sender waits on the path already.
    AnotherSender,
    /// The parties waiting on the path asked for another number of receivers.
    Mismatch { expected: u64, got: u64 },
    /// All the receivers asked for wait already.
    ReachedLimits,
}

/// One path.
#[derive(Default, Debug)]
pub struct PipingChannel {
    /// The number of receivers the waiting parties asked for (0: nobody waits).
    n: u64,
    sender: Option<WaiterId>,
    receivers: Vec<WaiterId>,
    /// A transfer is under way: the path is taken until it ends.
    established: bool,
    last_active: Millis,
}

/// Receiver capacity a recycled channel may keep.
const RECYCLE_CAPACITY: usize = 8;

impl PipingChannel {
    /// A party asking for `n` receivers (at least 1) arrives. On
    /// `Established` the receivers are appended to `out`.
    pub(super) fn arrive(
        &mut self,
        now: Millis,
        role: PipingRole,
        n: u64,
        waiter: WaiterId,
        out: &mut Vec<WaiterId>,
    ) -> Result<PipingArrival, PipingError> {
        debug_assert!(n > 0);
        if self.established {
            return Err(PipingError::Established);
        }
        let anyone = self.sender.is_some() || !self.receivers.is_empty();
        // The order of the checks is the reference server's: a second sender
        // hears of the first before any mismatch; a receiver hears of a
        // mismatch before a full set.
        match role {
            PipingRole::Sender => {
                if self.sender.is_some() {
                    return Err(PipingError::AnotherSender);
                }
                if anyone && n != self.n {
                    return Err(PipingError::Mismatch {
                        expected: self.n,
                        got: n,
                    });
                }
                self.sender = Some(waiter);
            }
            PipingRole::Receiver => {
                if anyone && n != self.n {
                    return Err(PipingError::Mismatch {
                        expected: self.n,
                        got: n,
                    });
                }
                if self.receivers.len() as u64 >= n {
                    return Err(PipingError::ReachedLimits);
                }
                self.receivers.push(waiter);
            }
        }
        self.n = n;
        self.last_active = now;
        match self.sender {
            Some(sender) if self.receivers.len() as u64 == n => {
                out.append(&mut self.receivers);
                self.sender = None;
                self.established = true;
                Ok(PipingArrival::Established { sender })
            }
            sender => Ok(PipingArrival::Waiting {
                receivers: self.receivers.len(),
                sender: sender.filter(|_| role == PipingRole::Receiver),
            }),
        }
    }

    /// A waiting party leaves. Returns whether it was waiting.
    pub(super) fn leave(&mut self, now: Millis, waiter: WaiterId) -> bool {
        let left = if self.sender == Some(waiter) {
            self.sender = None;
            true
        } else if let Some(at) = self.receivers.iter().position(|&w| w == waiter) {
            self.receivers.remove(at);
            true
        } else {
            false
        };
        if self.sender.is_none() && self.receivers.is_empty() {
            // Nobody waits: the next party may ask for another number.
            self.n = 0;
        }
        self.last_active = now;
        left
    }

    /// The transfer under way ended (completed or not): the path is free.
    pub(super) fn finish(&mut self, now: Millis) {
        self.established = false;
        self.last_active = now;
    }
}

impl Channel for PipingChannel {
    fn waiting_len(&self) -> usize {
        self.receivers.len() + usize::from(self.sender.is_some())
    }

    fn is_busy(&self) -> bool {
        self.established || self.waiting_len() > 0
    }

    fn is_remembered(&self) -> bool {
        false
    }

    fn last_active(&self) -> Millis {
        self.last_active
    }

    fn drain(&mut self, out: &mut Vec<WaiterId>) {
        out.extend(self.sender.take());
        out.append(&mut self.receivers);
        self.n = 0;
    }

    fn recycle(&mut self) -> bool {
        let keep = self.receivers.capacity() <= RECYCLE_CAPACITY;
        *self = PipingChannel {
            receivers: std::mem::take(&mut self.receivers),
            ..PipingChannel::default()
        };
        self.receivers.clear();
        keep
    }
}

#[cfg(test)]
mod tests {
    use crate::relay::testing::w;
    use crate::relay::*;

    use PipingRole::{Receiver as R, Sender as S};

    fn waiting(receivers: usize, sender: Option<WaiterId>) -> Result<PipingArrival, PipingError> {
        Ok(PipingArrival::Waiting { receivers, sender })
    }

    #[test]
    fn the_sender_and_n_receivers_meet_in_any_order() {
        for sender_at in 0..=3 {
            let mut relay = Relay::new(Settings::default());
            let mut out = Vec::new();
            let mut receivers = 0;
            for step in 0..=3 {
                let got = if step == sender_at {
                    relay.piping_arrive(0, b"/p", S, 3, w(100), &mut out)
                } else {
                    receivers += 1;
                    relay.piping_arrive(0, b"/p", R, 3, w(receivers), &mut out)
                };
                if step < 3 {
                    let sender = (sender_at < step).then_some(w(100));
                    let sender = sender.filter(|_| step != sender_at);
                    assert_eq!(
                        got,
                        waiting(receivers, sender),
                        "sender at {sender_at}, step {step}"
                    );
                    assert!(out.is_empty());
                } else {
                    assert_eq!(got, Ok(PipingArrival::Established { sender: w(100) }));
                    assert_eq!(out, [w(1), w(2), w(3)], "in arrival order");
                }
            }
            assert_eq!(relay.waiter_count(), 0);
            assert_eq!(
                relay.channel_count(),
                1,
                "the path is taken during the transfer"
            );
            relay.piping_finish(1, b"/p");
            assert_eq!(relay.channel_count(), 0, "then forgotten");
        }
    }

    #[test]
    fn refusals_follow_the_reference_servers_order() {
        let mut relay = Relay::new(Settings::default());
        let mut out = Vec::new();
        let mut arrive = |role, n, id| relay.piping_arrive(0, b"/q", role, n, w(id), &mut out);
        assert_eq!(arrive(R, 2, 1), waiting(1, None));
        assert_eq!(
            arrive(S, 3, 2),
            Err(PipingError::Mismatch {
                expected: 2,
                got: 3
            })
        );
        assert_eq!(
            arrive(R, 1, 3),
            Err(PipingError::Mismatch {
                expected: 2,
                got: 1
            })
        );
        assert_eq!(arrive(S, 2, 4), waiting(1, None));
        assert_eq!(
            arrive(S, 5, 5),
            Err(PipingError::AnotherSender),
            "before the mismatch"
        );
        assert_eq!(
            arrive(R, 2, 6),
            Ok(PipingArrival::Established { sender: w(4) })
        );
        assert_eq!(arrive(R, 2, 7), Err(PipingError::Established));
        assert_eq!(arrive(S, 1, 8), Err(PipingError::Established));
        let mut relay = Relay::new(Settings::default());
        let mut arrive = |role, n, id| relay.piping_arrive(0, b"/r", role, n, w(id), &mut out);
        assert_eq!(arrive(R, 1, 1), waiting(1, None));
        assert_eq!(arrive(R, 1, 2), Err(PipingError::ReachedLimits));
        assert_eq!(
            arrive(R, 2, 3),
            Err(PipingError::Mismatch {
                expected: 1,
                got: 2
            }),
            "a mismatch before a full set"
        );
    }

    #[test]
    fn a_party_that_leaves_frees_its_place_and_the_last_one_the_number() {
        let mut relay = Relay::new(Settings::default());
        let mut out = Vec::new();
        relay.piping_arrive(0, b"/l", S, 2, w(1), &mut out).unwrap();
        assert_eq!(
            relay.piping_arrive(0, b"/l", R, 2, w(2), &mut out),
            waiting(1, Some(w(1))),
            "the waiting sender is to be told"
        );
        assert!(relay.piping_leave(1, b"/l", w(2)));
        assert!(!relay.piping_leave(1, b"/l", w(2)), "once");
        assert_eq!(relay.waiter_count(), 1);
        assert!(relay.piping_leave(2, b"/l", w(1)));
        assert_eq!(relay.channel_count(), 0, "nothing remembered");
        assert_eq!(
            relay.piping_arrive(3, b"/l", S, 3, w(3), &mut out),
            waiting(0, None),
            "a new number once nobody waits"
        );
    }

    #[test]
    fn shutdown_drains_every_waiting_party() {
        let mut relay = Relay::new(Settings::default());
        let mut out = Vec::new();
        relay.piping_arrive(0, b"/d", S, 3, w(1), &mut out).unwrap();
        relay.piping_arrive(0, b"/d", R, 3, w(2), &mut out).unwrap();
        let mut drained = Vec::new();
        relay.drain_waiters(&mut drained);
        drained.sort_by_key(|w| w.0);
        assert_eq!(drained, [w(1), w(2)]);
        assert_eq!(relay.channel_count(), 0);
    }
}
