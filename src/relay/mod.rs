//! The sans-IO relay core: who waits on which channel, who is paired with whom,
//! which secret guards a channel, when an idle channel is forgotten.
//!
//! Nothing here touches a socket or reads a clock. Time comes in as `now`
//! (milliseconds on a monotonic scale chosen by the caller), and the caller asks
//! [`Relay::poll_timeout`] when it must call [`Relay::handle_timeout`] next.
//! Body bytes never pass through the core: it only decides pairings; the shell
//! moves the bytes.

mod link;
mod secret;

use std::collections::HashMap;

pub use link::{LinkArrival, LinkChannel};

/// Milliseconds on the caller's monotonic clock.
pub type Millis = u64;

/// The shell's handle for a waiting request (its connection id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WaiterId(pub usize);

/// Which side of a link a request is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `POST`/`PUT`: brings a body.
    Producer,
    /// `GET`: takes the body.
    Consumer,
}

/// Why the core refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayError {
    /// The channel was claimed with a different write secret.
    WrongSecret,
}

impl std::fmt::Display for RelayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RelayError::WrongSecret => f.write_str("wrong write secret for this channel"),
        }
    }
}

/// Default time an idle channel (nobody waiting) is remembered: 20 minutes.
pub const DEFAULT_IDLE_EXPIRY: Millis = 20 * 60 * 1000;

/// The registry of channels for every method.
pub struct Relay {
    links: HashMap<Box<[u8]>, LinkChannel>,
    idle_expiry: Millis,
    /// When the next sweep for idle channels is due, if any channel exists.
    next_sweep: Option<Millis>,
}

impl Relay {
    pub fn new(idle_expiry: Millis) -> Relay {
        Relay {
            links: HashMap::new(),
            idle_expiry,
            next_sweep: None,
        }
    }

    /// A link request arrives on channel `id`. `secret` is the write secret it
    /// presents (empty for none); only producers are checked.
    ///
    /// On `Paired(other)` the counterpart has left the queue and neither side is
    /// waiting any more; on `Parked` the caller must later either see it paired
    /// (returned from another arrival) or call [`Relay::link_leave`].
    pub fn link_arrive(
        &mut self,
        now: Millis,
        id: &[u8],
        role: Role,
        waiter: WaiterId,
        secret: &[u8],
    ) -> Result<LinkArrival, RelayError> {
        // Look up before inserting so that a warm channel costs no allocation.
        let channel = match self.links.get_mut(id) {
            Some(channel) => channel,
            None => self.links.entry(id.into()).or_default(),
        };
        let arrival = channel.arrive(now, role, waiter, secret);
        self.schedule_sweep(now);
        arrival
    }

    /// A parked link waiter went away. Returns whether it was still waiting.
    pub fn link_leave(&mut self, now: Millis, id: &[u8], waiter: WaiterId) -> bool {
        match self.links.get_mut(id) {
            Some(channel) => channel.leave(now, waiter),
            None => false,
        }
    }

    /// Removes every parked waiter of every channel (for shutdown) and returns them.
    pub fn drain_waiters(&mut self, out: &mut Vec<WaiterId>) {
        for channel in self.links.values_mut() {
            channel.drain(out);
        }
    }

    /// The next time [`Relay::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Option<Millis> {
        self.next_sweep
    }

    /// Forgets channels that have been idle (nobody waiting) for the expiry time.
    pub fn handle_timeout(&mut self, now: Millis) {
        if self.next_sweep.is_some_and(|due| due > now) {
            return;
        }
        let expiry = self.idle_expiry;
        self.links
            .retain(|_, channel| !channel.is_expired(now, expiry));
        self.next_sweep = None;
        if !self.links.is_empty() {
            self.schedule_sweep(now);
        }
    }

    /// Number of channels remembered (for tests, metrics and leak checks).
    pub fn channel_count(&self) -> usize {
        self.links.len()
    }

    /// Number of requests parked on any channel.
    pub fn waiter_count(&self) -> usize {
        self.links.values().map(LinkChannel::waiting_len).sum()
    }

    fn schedule_sweep(&mut self, now: Millis) {
        // Sweeping every channel at a fraction of the expiry keeps the core free of
        // per-request timer entries (no allocation); a channel is forgotten between
        // `expiry` and `expiry + interval` after it went idle.
        let interval = (self.idle_expiry / 16).clamp(10, 60_000);
        if self.next_sweep.is_none() {
            self.next_sweep = Some(now + interval);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Role = Role::Producer;
    const C: Role = Role::Consumer;

    fn w(n: usize) -> WaiterId {
        WaiterId(n)
    }

    #[test]
    fn producer_first_waits_then_pairs_with_consumer() {
        let mut relay = Relay::new(DEFAULT_IDLE_EXPIRY);
        assert_eq!(
            relay.link_arrive(0, b"x", P, w(1), b""),
            Ok(LinkArrival::Parked)
        );
        assert_eq!(
            relay.link_arrive(5, b"x", C, w(2), b""),
            Ok(LinkArrival::Paired(w(1)))
        );
        assert_eq!(relay.waiter_count(), 0);
    }

    #[test]
    fn consumer_first_waits_then_pairs_with_producer() {
        let mut relay = Relay::new(DEFAULT_IDLE_EXPIRY);
        assert_eq!(
            relay.link_arrive(0, b"x", C, w(1), b""),
            Ok(LinkArrival::Parked)
        );
        assert_eq!(
            relay.link_arrive(5, b"x", P, w(2), b""),
            Ok(LinkArrival::Paired(w(1)))
        );
        assert_eq!(relay.waiter_count(), 0);
    }

    #[test]
    fn same_role_queues_first_come_first_served() {
        let mut relay = Relay::new(DEFAULT_IDLE_EXPIRY);
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
        let mut relay = Relay::new(DEFAULT_IDLE_EXPIRY);
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
        let mut relay = Relay::new(DEFAULT_IDLE_EXPIRY);
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
        let mut relay = Relay::new(DEFAULT_IDLE_EXPIRY);
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
        let mut relay = Relay::new(DEFAULT_IDLE_EXPIRY);
        // A producer without a secret on an unclaimed channel is accepted and claims nothing.
        assert_eq!(
            relay.link_arrive(0, b"s", P, w(1), b""),
            Ok(LinkArrival::Parked)
        );
        assert_eq!(
            relay.link_arrive(0, b"s", P, w(2), b"abc"),
            Ok(LinkArrival::Parked)
        );
        assert_eq!(
            relay.link_arrive(0, b"s", P, w(3), b"xyz"),
            Err(RelayError::WrongSecret)
        );
        assert_eq!(
            relay.link_arrive(0, b"s", P, w(4), b""),
            Err(RelayError::WrongSecret)
        );
        assert_eq!(
            relay.link_arrive(0, b"s", P, w(5), b"abc"),
            Ok(LinkArrival::Parked)
        );
        assert_eq!(relay.waiter_count(), 3, "refused producers are not queued");
    }

    #[test]
    fn consumers_are_never_asked_for_the_secret() {
        let mut relay = Relay::new(DEFAULT_IDLE_EXPIRY);
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

    #[test]
    fn idle_channel_and_its_secret_are_forgotten_after_expiry() {
        let mut relay = Relay::new(1_000);
        relay.link_arrive(0, b"s", P, w(1), b"abc").unwrap();
        relay.link_arrive(10, b"s", C, w(2), b"").unwrap();
        assert_eq!(relay.channel_count(), 1);
        let due = relay.poll_timeout().expect("a sweep is scheduled");
        relay.handle_timeout(due);
        assert_eq!(relay.channel_count(), 1, "not idle long enough yet");
        let mut now = due;
        while relay.channel_count() > 0 {
            now = relay
                .poll_timeout()
                .expect("sweeps continue while channels exist");
            relay.handle_timeout(now);
        }
        assert!(now >= 1_010, "expired only after the idle time: {now}");
        assert!(
            now <= 1_010 + 1_000 / 16 + 10,
            "expired soon after the idle time: {now}"
        );
        assert_eq!(relay.poll_timeout(), None, "nothing left to sweep");
        // The secret went with the channel: a new writer may claim it.
        assert_eq!(
            relay.link_arrive(now, b"s", P, w(3), b"new"),
            Ok(LinkArrival::Parked)
        );
    }

    #[test]
    fn a_channel_with_a_waiter_never_expires() {
        let mut relay = Relay::new(1_000);
        relay.link_arrive(0, b"w", C, w(1), b"").unwrap();
        for now in (0..100_000).step_by(500) {
            relay.handle_timeout(now);
        }
        assert_eq!(relay.channel_count(), 1);
        assert_eq!(
            relay.link_arrive(100_000, b"w", P, w(2), b""),
            Ok(LinkArrival::Paired(w(1)))
        );
    }

    #[test]
    fn activity_postpones_expiry() {
        let mut relay = Relay::new(1_000);
        for step in 0..10u64 {
            let now = step * 600;
            relay.handle_timeout(now);
            relay.link_arrive(now, b"busy", C, w(1), b"").unwrap();
            relay.link_leave(now, b"busy", w(1));
        }
        assert_eq!(relay.channel_count(), 1);
    }

    #[test]
    fn drain_returns_every_parked_waiter_once() {
        let mut relay = Relay::new(DEFAULT_IDLE_EXPIRY);
        relay.link_arrive(0, b"a", C, w(1), b"").unwrap();
        relay.link_arrive(0, b"a", C, w(2), b"").unwrap();
        relay.link_arrive(0, b"b", P, w(3), b"").unwrap();
        let mut out = Vec::new();
        relay.drain_waiters(&mut out);
        out.sort();
        assert_eq!(out, vec![w(1), w(2), w(3)]);
        assert_eq!(relay.waiter_count(), 0);
        assert!(!relay.link_leave(1, b"a", w(1)));
    }
}
