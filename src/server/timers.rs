//! Connection timers: one deadline per connection for the timer its phase
//! calls for, a lazy heap of deadlines, and what each timer does when it fires.

use std::cmp::Reverse;
use std::time::{Duration, Instant};

use super::stats::Timeout;
use super::{debug_assert_queued, release_free_memory, Server, LINGER};
use crate::conn::{After, Conn, ConnId, Phase, Timer, Wait};
use crate::http::Status;

impl Server {
    pub(super) fn next_timeout(&mut self, now: Instant) -> Option<Duration> {
        if !self.ready.is_empty() {
            // Connections still have work queued: only look for new events.
            return Some(Duration::ZERO);
        }
        // Drop timer entries that no longer match their connection.
        while let Some(Reverse((at, key))) = self.timers.peek().copied() {
            match self.conns.get(key) {
                Some(conn) if conn.scheduled == Some(at) => break,
                _ => {
                    self.timers.pop();
                }
            }
        }
        let core = self
            .relay
            .poll_timeout()
            .map(|due| self.started + Duration::from_millis(due));
        let conn = self.timers.peek().map(|Reverse((at, _))| *at);
        [core, conn, self.accept_retry, self.shutdown_deadline]
            .into_iter()
            .flatten()
            .min()
            // Round up so that the timer has passed when the poll returns.
            .map(|at| at.saturating_duration_since(now) + Duration::from_millis(1))
    }

    pub(super) fn fire_timers(&mut self, now: Instant) {
        let now_ms = self.now_millis();
        self.forgotten_since_trim += self.relay.handle_timeout(now_ms);
        // Expiry runs in batches; once a large burst of it is over, give the
        // freed pages back.
        let burst_over = self.relay.poll_timeout().is_none_or(|due| due > now_ms);
        if self.forgotten_since_trim >= 1024 && burst_over {
            self.forgotten_since_trim = 0;
            release_free_memory();
        }
        if self.accept_retry.is_some_and(|at| at <= now) {
            self.accept_retry = None;
            self.accept_all();
        }
        while let Some(Reverse((at, key))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(conn) = self.conns.get_mut(key).filter(|c| c.scheduled == Some(at)) else {
                continue;
            };
            conn.scheduled = None;
            match conn.deadline {
                Some(deadline) if deadline <= now => self.on_timeout(ConnId(key)),
                // The deadline moved later since this entry was pushed.
                Some(_) => self.schedule(ConnId(key)),
                None => {}
            }
        }
    }

    /// Makes sure the heap holds an entry no later than the connection's
    /// deadline. A later deadline reuses the earlier entry (which re-schedules
    /// when it fires), so phase changes on a busy connection push nothing and
    /// the heap stays as small as the number of connections.
    pub(super) fn schedule(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(id.0) else {
            return;
        };
        if let Some(deadline) = conn.deadline {
            if conn.scheduled.is_none_or(|s| deadline < s) {
                conn.scheduled = Some(deadline);
                self.timers.push(Reverse((deadline, id.0)));
            }
        }
    }

    /// The timer a connection needs in its phase.
    pub(super) fn timer_for(&self, conn: &Conn) -> Timer {
        match conn.phase {
            Phase::ReadingHead if conn.input.as_ref().is_some_and(|i| !i.is_empty()) => Timer::Head,
            Phase::ReadingHead => Timer::Idle,
            Phase::Parked(_) if self.wait_timeout.is_some() => Timer::Wait,
            Phase::Parked(_) => Timer::None,
            Phase::Lingering => Timer::Linger,
            _ => Timer::Progress,
        }
    }

    /// Arms the timer the connection's phase calls for, unless it is armed
    /// already (a head's deadline counts from its first byte, not its last).
    pub(super) fn rearm(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get(id.0) else {
            return;
        };
        debug_assert_queued(conn);
        let timer = self.timer_for(conn);
        if timer == conn.timer {
            return;
        }
        let after = match timer {
            Timer::None => None,
            Timer::Idle => Some(self.idle_timeout),
            Timer::Head => Some(self.head_timeout),
            Timer::Progress => Some(self.body_timeout / 4),
            Timer::Wait => self.wait_timeout,
            Timer::Linger => Some(LINGER),
        };
        let conn = &mut self.conns[id.0];
        conn.timer = timer;
        conn.quiet_checks = 0;
        conn.stream.progressed = false;
        conn.deadline = after.map(|after| self.now + after);
        self.schedule(id);
    }

    pub(super) fn on_timeout(&mut self, id: ConnId) {
        let conn = &mut self.conns[id.0];
        conn.deadline = None;
        match conn.timer {
            Timer::None => {}
            Timer::Idle => {
                self.stats.timed_out(Timeout::Idle);
                self.close(id);
            }
            Timer::Linger => self.close(id),
            Timer::Head => {
                self.stats.timed_out(Timeout::Head);
                conn.req.keep_alive = false;
                conn.req.method.clear();
                conn.req.origin.clear();
                if let Some(input) = conn.input.take() {
                    self.input_pool.give(input);
                }
                self.respond_text(
                    id,
                    Status(408),
                    "408 request head not received in time\n",
                    After::Close,
                );
                self.ready.push(id);
            }
            Timer::Progress => {
                if conn.stream.progressed {
                    conn.stream.progressed = false;
                    conn.quiet_checks = 0;
                } else {
                    conn.quiet_checks += 1;
                }
                if conn.quiet_checks < 4 {
                    conn.deadline = Some(self.now + self.body_timeout / 4);
                    self.schedule(id);
                    return;
                }
                // No progress for the whole body timeout: close both sides of
                // a transfer (the counterpart's response ends truncated).
                let counterpart = match conn.phase {
                    Phase::Producing { consumer, .. } => Some(consumer),
                    Phase::Consuming { producer, .. } => Some(producer),
                    _ => None,
                };
                self.stats.timed_out(Timeout::Body);
                // Reset rather than close: unsent bytes would otherwise stay
                // queued in the kernel for a client that stopped reading.
                conn.stream.reset_on_close();
                if let Some(other) = counterpart.and_then(|o| self.conns.get(o.0)) {
                    other.stream.reset_on_close();
                }
                self.close(id);
                if let Some(other) = counterpart {
                    self.close(other);
                }
            }
            Timer::Wait => {
                let Phase::Parked(wait) = conn.phase else {
                    return;
                };
                self.stats.timed_out(Timeout::Wait);
                self.leave_core(id, wait);
                let conn = &mut self.conns[id.0];
                conn.phase = Phase::ReadingHead;
                conn.req.keep_alive = false;
                let after = if matches!(wait, Wait::Link(_)) && conn.req.framing().has_body() {
                    After::Linger
                } else {
                    After::Close
                };
                self.respond_text(
                    id,
                    Status(504),
                    "504 nobody came within the wait timeout\n",
                    after,
                );
                self.ready.push(id);
            }
        }
    }
}
