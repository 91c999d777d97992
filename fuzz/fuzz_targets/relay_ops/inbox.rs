//! The inbox operations, each made on the core and on the model: the writer's
//! check and `POST`, readers' `GET`s, the acknowledgement, its query and the
//! writer's wait for it, waiters leaving, readers done sending a message.

use std::rc::Rc;

use httprelay::relay::{ClaimError, InboxAwait, InboxGet, InboxWoken, WaiterId, MAX_INBOX_WAITERS};

use crate::model::{admit, InboxM, InboxMsg, InboxWait, Model};
use crate::{id, IDS, INBOX_OVERHEAD};

/// Appended to by the core, never read: shows that it appends.
const MARK: WaiterId = WaiterId(usize::MAX);

impl Model {
    fn new_inbox_waiter(&mut self, wait: InboxWait, ch: usize) -> WaiterId {
        let w = self.fresh_id();
        self.inbox_waiters.push((w, wait, ch));
        w
    }

    /// The inbox `ch` as an operation with a clock finds it: created if
    /// `create` (or `None`), an entry whose TTL is over forgotten.
    fn inbox_at(&mut self, ch: usize, create: bool) -> Option<&mut InboxM> {
        let (now, ttl) = (self.now, self.inbox_ttl);
        let c = if create {
            &mut self.inboxes.entry(now, ch).state
        } else {
            self.inboxes.get(ch)?
        };
        if c.settle(now, ttl) {
            self.remembered -= 1;
        }
        Some(c)
    }

    /// What a writer presenting `secret` is told at `now`, `room` being
    /// whether the cap on remembered channels had room before the call.
    fn inbox_admission(c: &InboxM, secret: &[u8], room: bool) -> Result<(), ClaimError> {
        if c.written.is_none() && !room {
            return Err(ClaimError::NoRoom);
        }
        match &c.secret {
            Some(claimed) if claimed != secret => Err(ClaimError::WrongSecret),
            _ => Ok(()),
        }
    }

    /// A writer's head arrives: may it store a message? Claims nothing.
    pub fn inbox_check(&mut self, ch: usize, secret: &[u8]) -> Result<(), ClaimError> {
        // An entry written before, even one over its TTL, holds its place.
        let room = self.room() || self.inbox_written(ch).is_some();
        let now = self.now;
        let got = self.relay.inbox_check(now, &id(ch), secret);
        let c = self.inbox_at(ch, true).expect("created");
        let expected = Model::inbox_admission(c, secret, room);
        assert_eq!(got, expected, "inbox_check with secret {secret:?}");
        self.refused_no_room += u64::from(got == Err(ClaimError::NoRoom));
        self.inboxes.settle_one(ch);
        got
    }

    /// A writer stores a message of `len` bytes (with a `Content-Type` if
    /// `typed`), after the check the server makes on its head if `checked`.
    pub fn inbox_post(&mut self, ch: usize, secret: &[u8], len: usize, typed: bool, checked: bool) {
        if checked && self.inbox_check(ch, secret).is_err() {
            return;
        }
        let serial = self.inbox_serial;
        self.inbox_serial += 1;
        let body: std::sync::Arc<[u8]> = (0..len).map(|i| (serial as u8) ^ (i as u8)).collect();
        let content_type: Option<std::sync::Arc<[u8]>> = typed.then(|| b"text/plain".as_slice().into());
        let cost = INBOX_OVERHEAD + len + content_type.as_ref().map_or(0, |t| t.len());
        let room = self.room() || self.inbox_written(ch).is_some();
        let now = self.now;
        let mut woken = InboxWoken::default();
        woken.readers.push(MARK);
        woken.dropped.push(MARK);
        let got = self.relay.inbox_post(
            now,
            &id(ch),
            secret,
            (body.clone(), content_type.clone()),
            &mut woken,
        );
        assert_eq!(woken.readers.remove(0), MARK, "woken readers appended to");
        assert_eq!(
            woken.dropped.remove(0),
            MARK,
            "dropped awaiters appended to"
        );
        let c = self.inbox_at(ch, true).expect("created");
        let new_entry = c.written.is_none();
        let admitted = Model::inbox_admission(c, secret, room)
            .and_then(|()| admit(&mut c.secret, secret, true));
        let message = match (got, admitted) {
            (Ok(message), Ok(())) => message,
            (got, expected) => {
                assert_eq!(
                    got.err(),
                    expected.err(),
                    "inbox_post with secret {secret:?}"
                );
                assert!(woken.readers.is_empty() && woken.dropped.is_empty());
                self.refused_no_room += u64::from(expected == Err(ClaimError::NoRoom));
                self.inboxes.settle_one(ch);
                return;
            }
        };
        assert_eq!(
            (&message.body, &message.content_type),
            (&body, &content_type)
        );
        assert_eq!(message.cost(), cost, "cost of an inbox message");
        let posted = InboxMsg {
            serial,
            cost,
            record: Rc::downgrade(&message),
        };
        c.written = Some(now);
        c.acked = false;
        c.message = Some(posted.clone());
        assert_eq!(woken.readers, c.readers, "readers a POST wakes");
        assert_eq!(woken.dropped, c.awaiters, "awaiters a POST drops");
        c.readers.clear();
        c.awaiters.clear();
        self.remembered += usize::from(new_entry);
        // Each woken reader sends the message; the server's own `Rc` goes.
        for _ in &woken.readers {
            self.inbox_held.push((posted.clone(), Rc::clone(&message)));
        }
        self.inbox_messages.push(posted);
    }

    /// A reader asks for the message; one that gets it keeps sending it
    /// (holds it) if `hold`, else is done at once.
    pub fn inbox_get(&mut self, ch: usize, hold: bool) {
        let w = self.new_inbox_waiter(InboxWait::Reader, ch);
        let now = self.now;
        let got = self.relay.inbox_get(now, &id(ch), w);
        let c = self.inbox_at(ch, true).expect("created");
        match (got, &c.message) {
            (InboxGet::Message(m), Some(e)) => {
                let expected = e.record.upgrade().expect("a stored message is alive");
                assert!(Rc::ptr_eq(&m, &expected), "inbox_get gave another message");
                if hold {
                    let e = e.clone();
                    self.inbox_held.push((e, m));
                }
            }
            (got, Some(e)) => panic!("inbox_get: {got:?} but message {} is stored", e.serial),
            (InboxGet::Message(m), None) => panic!("inbox_get gave {m:?} but none is stored"),
            (InboxGet::Parked, None) if c.readers.len() < MAX_INBOX_WAITERS => c.readers.push(w),
            (InboxGet::Busy, None) if c.readers.len() >= MAX_INBOX_WAITERS => {}
            (got, None) => panic!(
                "inbox_get: {got:?} with {} readers waiting",
                c.readers.len()
            ),
        }
        self.inboxes.settle_one(ch);
    }

    /// `DELETE`: acknowledges; the awaiters are answered.
    pub fn inbox_ack(&mut self, ch: usize) {
        let now = self.now;
        let mut woken = vec![MARK];
        let got = self.relay.inbox_ack(now, &id(ch), &mut woken);
        assert_eq!(woken.remove(0), MARK, "woken awaiters appended to");
        let expected = match self.inbox_at(ch, false) {
            Some(c) if c.written.is_some() => {
                c.message = None;
                c.acked = true;
                assert_eq!(woken, c.awaiters, "awaiters an ack wakes");
                c.awaiters.clear();
                true
            }
            _ => {
                assert!(woken.is_empty(), "an ack without an entry woke {woken:?}");
                false
            }
        };
        assert_eq!(got, expected, "inbox_ack");
        self.inboxes.settle_one(ch);
    }

    pub fn inbox_acked(&mut self, ch: usize) {
        let now = self.now;
        let got = self.relay.inbox_acked(now, &id(ch));
        let expected = self
            .inbox_at(ch, false)
            .and_then(|c| c.written.map(|_| c.acked));
        assert_eq!(got, expected, "inbox_acked");
        self.inboxes.settle_one(ch);
    }

    /// The writer waits for the acknowledgement.
    pub fn inbox_await(&mut self, ch: usize) {
        let w = self.new_inbox_waiter(InboxWait::Awaiter, ch);
        let now = self.now;
        let got = self.relay.inbox_await(now, &id(ch), w);
        let expected = match self.inbox_at(ch, false) {
            Some(c) if c.written.is_some() => {
                if c.acked {
                    InboxAwait::Acked
                } else if c.awaiters.len() >= MAX_INBOX_WAITERS {
                    InboxAwait::Busy
                } else {
                    c.awaiters.push(w);
                    InboxAwait::Parked
                }
            }
            _ => InboxAwait::Unknown,
        };
        assert_eq!(got, expected, "inbox_await");
        self.inboxes.settle_one(ch);
    }

    /// `count` readers (or awaiters) arrive on `ch` one after the other.
    pub fn inbox_crowd(&mut self, ch: usize, count: usize, wait: InboxWait) {
        for _ in 0..count {
            match wait {
                InboxWait::Reader => self.inbox_get(ch, false),
                InboxWait::Awaiter => self.inbox_await(ch),
            }
        }
    }

    /// An inbox waiter disconnects (or, with `other_channel`, a leave names
    /// an inbox it never waited on).
    pub fn inbox_leave(&mut self, pick: usize, other_channel: bool) {
        let len = self.inbox_waiters.len();
        let Some(&(w, wait, ch)) = self.inbox_waiters.get(pick % len.max(1)) else {
            return;
        };
        let ch = if other_channel {
            (ch + 1) % IDS.len()
        } else {
            ch
        };
        self.inbox_leave_exact(w, wait, ch);
    }

    pub fn inbox_leave_exact(&mut self, w: WaiterId, wait: InboxWait, ch: usize) {
        let got = self.relay.inbox_leave(self.now, &id(ch), w);
        let expected = self.inbox_at(ch, false).is_some_and(|c| {
            let list = match wait {
                InboxWait::Reader => &mut c.readers,
                InboxWait::Awaiter => &mut c.awaiters,
            };
            let at = list.iter().position(|&q| q == w);
            at.map(|at| list.remove(at)).is_some()
        });
        assert_eq!(got, expected, "inbox_leave({w:?}, {wait:?}) on inbox {ch}");
        self.inboxes.settle_one(ch);
    }

    /// A reader is done sending its message.
    pub fn inbox_sent(&mut self, pick: usize) {
        if !self.inbox_held.is_empty() {
            let at = pick % self.inbox_held.len();
            self.inbox_held.swap_remove(at);
        }
    }

    /// The latest write of inbox `ch`, if it has an entry.
    pub fn inbox_written(&self, ch: usize) -> Option<u64> {
        self.inboxes.0.get(&ch).and_then(|c| c.state.written)
    }

    /// Waiting inbox requests, for the wind-down.
    pub fn inbox_parked(&self) -> Vec<(WaiterId, InboxWait, usize)> {
        let mut all = Vec::new();
        for (&ch, c) in &self.inboxes.0 {
            let readers = c.state.readers.iter().map(|&w| (w, InboxWait::Reader, ch));
            let awaiters = c
                .state
                .awaiters
                .iter()
                .map(|&w| (w, InboxWait::Awaiter, ch));
            all.extend(readers.chain(awaiters));
        }
        all
    }
}
