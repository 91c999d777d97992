//! Time: clock steps with the expiry they bring, and the final wind-down.

use httprelay::relay::Millis;

use crate::model::{Activity, Kind, Model, State};
use crate::EXPIRE_BATCH;

impl Model {
    /// Moves the clock forward by at least `step` and handles the timeout as the
    /// server does: once, then again while more is due.
    pub fn advance(&mut self, step: Millis) {
        let mut now = self.now + step;
        // Where the rules leave open whether an operation refreshed a channel,
        // move on until the channel is idle long enough either way.
        loop {
            let expiry = self.expiry;
            let ambiguous = |a: &&Activity| a.sure + expiry <= now && now < a.maybe + expiry;
            let later = (self.links.expiring())
                .chain(self.mcasts.expiring())
                .chain(self.proxies.expiring())
                .filter(ambiguous)
                .map(|a| a.maybe + expiry)
                .max();
            match later {
                Some(later) => now = later,
                None => break,
            }
        }
        self.now = now;

        let remembered = self.relay.remembered_channels();
        let (mut forgotten, mut calls) = (0, 0);
        loop {
            let before = self.relay.channel_count();
            let gone = self.relay.handle_timeout(now);
            calls += 1;
            assert_eq!(
                gone,
                before - self.relay.channel_count(),
                "handle_timeout's count"
            );
            assert!(
                gone <= EXPIRE_BATCH,
                "{gone} channels forgotten in one call"
            );
            forgotten += gone;
            match self.relay.poll_timeout() {
                // Each remembered channel has at most one entry to look at.
                Some(due) if due <= now => assert!(
                    calls * EXPIRE_BATCH < remembered,
                    "still due at {due} after {calls} calls at {now} ({remembered} remembered)"
                ),
                _ => break,
            }
        }
        let mut freed = 0;
        // An inbox entry goes at the TTL from its last write, unless a waiter
        // keeps the channel.
        let inboxes = self.inboxes.0.len();
        let ttl = self.inbox_ttl;
        self.inboxes.0.retain(|_, c| {
            c.state.busy()
                || c.state
                    .written
                    .is_none_or(|at| now < at.saturating_add(ttl))
        });
        let expected = self.links.expire(now, self.expiry, |_| ())
            + self.mcasts.expire(now, self.expiry, |c| freed += c.held())
            + self.proxies.expire(now, self.expiry, |_| ())
            + (inboxes - self.inboxes.0.len());
        assert_eq!(forgotten, expected, "channels forgotten at {now}");
        self.remembered -= expected;
        self.mcast_bytes -= freed;
    }

    /// Everyone leaves, every upload ends, time passes: nothing may remain.
    pub fn wind_down(&mut self) {
        for (w, kind, ch) in self.waiters.clone() {
            let parked = match kind {
                Kind::Link => self
                    .links
                    .get(ch)
                    .is_some_and(|c| c.queue.iter().any(|q| q.0 == w)),
                Kind::Mcast => self.mcasts.get(ch).is_some_and(|c| c.waiting.contains(&w)),
                Kind::Sync => self.syncs.get(ch).is_some_and(|c| c.waiting == Some(w)),
                Kind::ProxyServer => self.proxies.get(ch).is_some_and(|c| c.servers.contains(&w)),
            };
            if parked {
                self.leave_exact(w, kind, ch);
                self.settle();
            }
        }
        for pick in 0..self.jobs.len() {
            let (ch, job) = self.jobs[pick];
            if self
                .proxies
                .get(ch)
                .is_some_and(|c| c.jobs.contains_key(&job))
            {
                self.proxy_client_leave(pick);
                self.settle();
            }
        }
        while !self.uploading.is_empty() {
            let complete = self.uploading.len() % 2 == 0;
            self.mcast_finish(0, complete);
            self.settle();
        }
        for (w, wait, ch) in self.inbox_parked() {
            self.inbox_leave_exact(w, wait, ch);
            self.settle();
        }
        while !self.inbox_held.is_empty() {
            self.inbox_sent(0);
            self.settle();
        }
        self.check();
        assert_eq!(
            self.relay.waiter_count(),
            0,
            "waiters left after everyone left"
        );
        self.advance(self.expiry.max(self.inbox_ttl) + 60_001);
        self.check();
        assert_eq!(self.relay.channel_count(), 0, "channel leak");
        assert_eq!(self.relay.remembered_channels(), 0);
        assert_eq!(self.relay.mcast_bytes(), 0);
        assert_eq!(self.relay.inbox_bytes(), 0);
        assert_eq!(
            self.relay.poll_timeout(),
            None,
            "a timeout with no channel left"
        );
    }
}
