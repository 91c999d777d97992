//! Connection timers: one deadline per connection for the timer its phase
//! calls for, a lazy heap of deadlines, and what each timer does when it fires.

use std::cmp::Reverse;
use std::time::{Duration, Instant};

use super::routes::{stream_timer, KEEP_ALIVE_EVERY};
use super::stats::Timeout;
use super::{debug_assert_queued, Server, LINGER};
use crate::http::Status;
use crate::server::conn::{After, ConnId, Phase, Receivers, Timer};

/// The connection timeouts (flags), and which applies when.
#[derive(Clone, Copy, Debug)]
pub(super) struct Timeouts {
    pub head: Duration,
    pub idle: Duration,
    pub body: Duration,
    pub wait: Option<Duration>,
    pub inbox: Duration,
    /// `--tls-handshake-timeout`.
    pub handshake: Duration,
}

/// Checks of progress that find none, in a row, before a transfer or a
/// response counts as stalled: the body timeout is checked every quarter.
const QUIET_CHECKS: u8 = 4;

impl Timeouts {
    /// The timer a connection needs in `phase`; `head_started`: bytes of a
    /// request head are buffered; `sending`: output waits to be sent;
    /// `handshaking`: its TLS handshake is under way.
    pub fn timer_for(
        &self,
        phase: &Phase,
        head_started: bool,
        sending: bool,
        handshaking: bool,
    ) -> Timer {
        match phase {
            Phase::ReadingHead if handshaking => Timer::Handshake,
            Phase::ReadingHead if head_started => Timer::Head,
            Phase::ReadingHead => Timer::Idle,
            Phase::Parked(wait) => wait.timer(sending, self.wait.is_some()),
            Phase::Streaming { .. } => stream_timer(phase, sending),
            Phase::Lingering => Timer::Linger,
            _ => Timer::Progress,
        }
    }

    /// How long after it is armed `timer` fires (`Progress`: the interval of
    /// its checks).
    pub fn period(&self, timer: Timer) -> Option<Duration> {
        match timer {
            Timer::None => None,
            Timer::Idle => Some(self.idle),
            Timer::Head => Some(self.head),
            Timer::Handshake => Some(self.handshake),
            Timer::Progress => Some(self.body / u32::from(QUIET_CHECKS)),
            Timer::Wait => self.wait,
            Timer::Inbox => Some(self.inbox),
            Timer::Linger => Some(LINGER),
            Timer::KeepAlive => Some(KEEP_ALIVE_EVERY),
        }
    }
}

/// One progress check: true once `QUIET_CHECKS` checks in a row found no byte
/// moved (`quiet` counts them; any progress starts the count again).
fn body_timed_out(quiet: &mut u8, progressed: bool) -> bool {
    *quiet = if progressed {
        0
    } else {
        quiet.saturating_add(1)
    };
    *quiet >= QUIET_CHECKS
}

impl Server {
    pub(super) fn next_timeout(&mut self, now: Instant) -> Option<Duration> {
        if !self.ready.is_empty() {
            // Connections still have work queued: only look for new events.
            return Some(Duration::ZERO);
        }
        // Drop timer entries that no longer match their connection.
        while let Some(Reverse((at, key))) = self.timers.peek().copied() {
            match self.conns.get(key) {
                Some(conn) if conn.timer.scheduled == Some(at) => break,
                _ => {
                    self.timers.pop();
                }
            }
        }
        let core = self
            .relay
            .poll_timeout()
            .map(|due| self.started + Duration::from_millis(due.saturating_sub(super::CLOCK_BASE)));
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
            crate::sys::process::release_free_memory();
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
            let Some(conn) = self
                .conns
                .get_mut(key)
                .filter(|c| c.timer.scheduled == Some(at))
            else {
                continue;
            };
            conn.timer.scheduled = None;
            match conn.timer.deadline {
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
        if let Some(deadline) = conn.timer.deadline {
            if conn.timer.scheduled.is_none_or(|s| deadline < s) {
                conn.timer.scheduled = Some(deadline);
                self.timers.push(Reverse((deadline, id.0)));
            }
        }
    }

    /// Arms the timer the connection's phase calls for, unless it is armed
    /// already (a head's deadline counts from its first byte, not its last).
    pub(super) fn rearm(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get(id.0) else {
            return;
        };
        debug_assert_queued(conn);
        let head_started = conn.input.as_ref().is_some_and(|i| !i.is_empty());
        let sending = conn.output.as_ref().is_some_and(|o| !o.is_empty());
        let handshaking = conn.stream.is_handshaking();
        let timer = self
            .timeouts
            .timer_for(&conn.phase, head_started, sending, handshaking);
        if timer == conn.timer.kind {
            // Armed already: a head's deadline counts from its first byte.
            return;
        }
        let conn = &mut self.conns[id.0];
        conn.timer.kind = timer;
        conn.timer.quiet_checks = 0;
        conn.stream.progressed = false;
        conn.timer.deadline = self.timeouts.period(timer).map(|after| self.now + after);
        self.schedule(id);
    }

    pub(super) fn on_timeout(&mut self, id: ConnId) {
        let conn = &mut self.conns[id.0];
        conn.timer.deadline = None;
        match conn.timer.kind {
            Timer::None => {}
            Timer::Idle => {
                self.stats.timed_out(Timeout::Idle);
                self.close(id);
            }
            Timer::Linger => self.close(id),
            Timer::Handshake => {
                // A TLS client that opened and stalls: a slowloris like any
                // other, closed without an answer it could not read.
                self.stats.timed_out(Timeout::Handshake);
                conn.stream.reset_on_close();
                self.close(id);
            }
            Timer::KeepAlive => self.keep_alive(id),
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
                let progressed = std::mem::take(&mut conn.stream.progressed);
                if !body_timed_out(&mut conn.timer.quiet_checks, progressed) {
                    conn.timer.deadline =
                        self.timeouts.period(Timer::Progress).map(|p| self.now + p);
                    self.schedule(id);
                    return;
                }
                // No progress for the whole body timeout: close both sides of
                // a transfer (the counterpart's response ends truncated).
                let counterpart = match conn.phase {
                    Phase::Producing {
                        receivers: Receivers::One(consumer),
                        ..
                    } => Some(consumer),
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
            Timer::Inbox | Timer::Wait => {
                let Phase::Parked(wait) = conn.phase else {
                    return;
                };
                self.stats.timed_out(match conn.timer.kind {
                    Timer::Inbox => Timeout::Inbox,
                    _ => Timeout::Wait,
                });
                self.wait_over(id, wait);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::Role;
    use crate::server::conn::Wait;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn timeouts(wait: Option<Duration>) -> Timeouts {
        Timeouts {
            head: S(10),
            idle: S(60),
            body: S(60),
            wait,
            inbox: S(25),
            handshake: S(10),
        }
    }

    #[test]
    fn each_phase_has_its_timer() {
        let t = timeouts(None);
        let parked = Phase::Parked(Wait::Link(Role::Consumer));
        for (phase, head_started, expected) in [
            (Phase::ReadingHead, false, Timer::Idle),
            (Phase::ReadingHead, true, Timer::Head),
            (Phase::Lingering, false, Timer::Linger),
            (
                Phase::Responding(After::NextRequest),
                false,
                Timer::Progress,
            ),
            (Phase::SendingHeld { offset: 0 }, false, Timer::Progress),
        ] {
            assert_eq!(
                t.timer_for(&phase, head_started, false, false),
                expected,
                "{phase:?}"
            );
        }
        assert_eq!(
            t.timer_for(&Phase::ReadingHead, true, false, true),
            Timer::Handshake,
            "a TLS handshake before any head"
        );
        assert_eq!(t.period(Timer::Handshake), Some(S(10)));
        assert_eq!(
            t.timer_for(&parked, false, false, false),
            Timer::None,
            "waits forever"
        );
        let t = timeouts(Some(S(5)));
        assert_eq!(t.timer_for(&parked, false, false, false), Timer::Wait);
        let stream = Phase::Parked(Wait::McastStream);
        assert_eq!(
            t.timer_for(&stream, false, false, false),
            Timer::KeepAlive,
            "a stream outlives the wait timeout"
        );
        assert_eq!(
            t.timer_for(&stream, false, true, false),
            Timer::Progress,
            "unless its reader stops reading"
        );
        assert_eq!(t.period(Timer::Wait), Some(S(5)));
        for wait in [Wait::InboxReader, Wait::InboxAwaiter] {
            let inbox = Phase::Parked(wait);
            assert_eq!(
                t.timer_for(&inbox, false, false, false),
                Timer::Inbox,
                "its own timeout"
            );
        }
        assert_eq!(t.period(Timer::Inbox), Some(S(25)));
    }

    #[test]
    fn periods_follow_the_flags() {
        let t = timeouts(None);
        assert_eq!(t.period(Timer::Idle), Some(S(60)));
        assert_eq!(t.period(Timer::Head), Some(S(10)));
        assert_eq!(t.period(Timer::Progress), Some(S(15)), "a quarter");
        assert_eq!(t.period(Timer::Linger), Some(LINGER));
        assert_eq!(t.period(Timer::Wait), None);
        assert_eq!(t.period(Timer::None), None);
    }

    #[test]
    fn a_body_times_out_after_four_quiet_checks_in_a_row() {
        // A virtual clock: one check every quarter of the body timeout.
        let t = timeouts(None);
        let check = t.period(Timer::Progress).unwrap();
        let mut quiet = 0;
        let mut now = Duration::ZERO;
        let moves = [true, false, false, false, true, false, false, false, false];
        let mut closed_at = None;
        for moved in moves {
            now += check;
            if body_timed_out(&mut quiet, moved) {
                closed_at = Some(now);
                break;
            }
        }
        assert_eq!(
            closed_at,
            Some(S(135)),
            "last byte at 75 s: closed between 1x and 1.25x the timeout later"
        );
    }

    // ---- the timers in a whole server, on its manual clock --------------------

    use crate::server::testing::{body_of, get, status_of, Shell};

    #[test]
    fn a_silent_connection_closes_quietly_after_the_idle_timeout() {
        let mut shell = Shell::new(&["--idle-timeout", "5"]);
        let mut client = shell.connect();
        shell.advance(S(4));
        assert!(!client.closed());
        shell.advance(S(2));
        assert!(client.closed());
        assert_eq!(client.take(), b"", "closed without a response");
        assert_eq!(shell.open_conns(), 0);
    }

    #[test]
    fn an_unfinished_head_gets_408_after_the_head_timeout_not_before() {
        let mut shell = Shell::new(&["--head-timeout", "3", "--idle-timeout", "60"]);
        let mut client = shell.connect();
        client.send(&mut shell, b"GET /link/a HTTP/1.1\r\nHo");
        shell.advance(Duration::from_millis(2900));
        assert_eq!(client.take(), b"");
        shell.advance(Duration::from_millis(200));
        let answer = client.text();
        assert_eq!(status_of(&answer), 408);
        assert!(answer.contains("\r\nConnection: close\r\n"));
        assert!(client.closed());
    }

    #[test]
    fn a_waiter_gets_504_after_the_wait_timeout_and_is_gone_from_its_channel() {
        let mut shell = Shell::new(&["--wait-timeout", "7"]);
        let mut consumer = shell.connect();
        consumer.send(&mut shell, &get("/link/w"));
        shell.advance(S(6));
        assert_eq!(consumer.take(), b"");
        shell.advance(S(2));
        let answer = consumer.text();
        assert_eq!(status_of(&answer), 504);
        assert!(body_of(&answer).starts_with("504 "), "{answer}");
        assert!(answer.contains("\r\nConnection: close\r\n"));
        assert!(consumer.closed());
        assert_eq!(shell.server.relay.waiter_count(), 0);
        assert_eq!(shell.server.relay.channel_count(), 0);
    }

    #[test]
    fn a_stalled_transfer_is_closed_after_the_body_timeout_and_a_moving_one_is_not() {
        let mut shell = Shell::new(&["--body-timeout", "8", "--idle-timeout", "600"]);
        let (mut consumer, mut producer) = shell.link_pair("b", "Content-Length: 100", b"abc");
        assert!(consumer.text().ends_with("\r\n\r\nabc"));
        // A byte every 6 s keeps it going well past the timeout.
        for _ in 0..5 {
            shell.advance(S(6));
            producer.send(&mut shell, b"x");
        }
        assert_eq!(consumer.take(), b"xxxxx");
        assert!(!consumer.closed() && !producer.closed());
        // Then silence: closed between 1x and 1.25x the timeout after the last byte.
        shell.advance(S(7));
        assert!(!consumer.closed());
        shell.advance(S(4));
        assert!(consumer.closed(), "the consumer's body ends short");
        assert!(producer.closed());
        assert_eq!(shell.open_conns(), 0);
    }
}
