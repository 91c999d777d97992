//! inbox: one stored message per id, which its reader may fetch again and
//! again and then acknowledge; the writer may wait for the acknowledgement
//! (as pubky's `http-relay` serves `/inbox/{id}`).
//!
//! A `POST` stores a message (replacing one unread), an entry that lives for
//! the inbox TTL from that `POST`. `DELETE` acknowledges: the body is dropped,
//! the entry stays (acknowledged) until its TTL is over. A `GET` waits while
//! there is no body; an `await` waits while the entry is not acknowledged.

use std::rc::Rc;
use std::sync::Arc;

use super::mcast::Ledger;
use super::secret::{Presented, WriteSecret};
use super::table::Channel;
use super::{ClaimError, Millis, WaiterId};

/// Most requests of each kind waiting on one inbox.
pub const MAX_INBOX_WAITERS: usize = 10;

/// What a stored message costs beyond its body and type: its record, the
/// reference to it, the allocator's rounding.
pub const INBOX_MESSAGE_OVERHEAD: usize = 128;

/// A stored message. It counts in its ledger (the relay's total of inbox
/// bytes) from when it is made until its last holder lets go of it: the
/// channel, or a reader still sending it.
#[derive(Debug)]
pub struct InboxMessage {
    /// Shared (not copied) with the journal's records of it, which may be
    /// written on the compaction thread.
    pub body: Arc<[u8]>,
    /// The writer's `Content-Type`, if it sent one.
    pub content_type: Option<Arc<[u8]>>,
    ledger: Ledger,
}

impl InboxMessage {
    pub fn new(body: Arc<[u8]>, content_type: Option<Arc<[u8]>>, ledger: &Ledger) -> InboxMessage {
        let message = InboxMessage {
            body,
            content_type,
            ledger: Rc::clone(ledger),
        };
        ledger.set(ledger.get() + message.cost());
        message
    }

    /// What holding it costs against the total.
    pub fn cost(&self) -> usize {
        INBOX_MESSAGE_OVERHEAD + self.body.len() + self.content_type.as_ref().map_or(0, |t| t.len())
    }
}

impl Drop for InboxMessage {
    fn drop(&mut self) {
        self.ledger.set(self.ledger.get() - self.cost());
    }
}

impl PartialEq for InboxMessage {
    fn eq(&self, other: &Self) -> bool {
        (&self.body, &self.content_type) == (&other.body, &other.content_type)
    }
}

impl Eq for InboxMessage {}

/// A message's body and its writer's `Content-Type`, as a journal keeps them.
pub type MessageParts = (Arc<[u8]>, Option<Arc<[u8]>>);

/// The waiters a stored message wakes.
#[derive(Debug, Default)]
pub struct InboxWoken {
    /// Readers that waited for a message: each gets it.
    pub readers: Vec<WaiterId>,
    /// Writers that waited for the acknowledgement of the entry it replaced:
    /// each is told that entry is gone.
    pub dropped: Vec<WaiterId>,
}

impl InboxWoken {
    pub fn clear(&mut self) {
        self.readers.clear();
        self.dropped.clear();
    }
}

/// What a `GET` of the message found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InboxGet {
    Message(Rc<InboxMessage>),
    /// No message: the request waits for one.
    Parked,
    /// [`MAX_INBOX_WAITERS`] wait already.
    Busy,
}

/// What a wait for the acknowledgement found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InboxAwait {
    /// Acknowledged already.
    Acked,
    /// Not yet: the request waits.
    Parked,
    /// No entry (never written, or its TTL is over).
    Unknown,
    /// [`MAX_INBOX_WAITERS`] wait already.
    Busy,
}

/// One inbox id.
#[derive(Default, Debug)]
pub struct InboxChannel {
    /// The message, until it is acknowledged.
    message: Option<Rc<InboxMessage>>,
    /// When the entry was last written (`None`: there is none). It lives for the
    /// TTL from then; the table expires it by this time too.
    written: Option<Millis>,
    acked: bool,
    /// A writer's secret holds the inbox while its entry lives.
    secret: WriteSecret,
    readers: Vec<WaiterId>,
    awaiters: Vec<WaiterId>,
}

/// Waiter capacity a recycled channel may keep.
const RECYCLE_CAPACITY: usize = MAX_INBOX_WAITERS;

impl InboxChannel {
    /// Whether there is an entry at `now` (written, TTL not over).
    fn present(&self, now: Millis, ttl: Millis) -> bool {
        self.written.is_some_and(|at| now < at.saturating_add(ttl))
    }

    /// Forgets an entry whose TTL is over.
    fn settle(&mut self, now: Millis, ttl: Millis) {
        if !self.present(now, ttl) {
            self.message = None;
            self.written = None;
            self.acked = false;
            self.secret = WriteSecret::default();
        }
    }

    /// Whether a writer presenting `secret` may write (checked again, and the
    /// inbox claimed, by [`InboxChannel::post`]). A new entry needs `room`
    /// under the cap on remembered channels.
    pub fn check(
        &mut self,
        now: Millis,
        ttl: Millis,
        secret: Presented,
        room: bool,
    ) -> Result<(), ClaimError> {
        // An entry written before, even one whose TTL is over, holds its place
        // under the cap already: a new message takes that place.
        let room = room || self.written.is_some();
        self.settle(now, ttl);
        if !room {
            return Err(ClaimError::NoRoom);
        }
        self.secret.check(secret)
    }

    /// Stores `message`, after the same checks as [`InboxChannel::check`].
    /// The waiters it wakes are appended to `woken`.
    pub fn post(
        &mut self,
        now: Millis,
        ttl: Millis,
        (secret, room): (Presented, bool),
        message: Rc<InboxMessage>,
        woken: &mut InboxWoken,
    ) -> Result<(), ClaimError> {
        let room = room || self.written.is_some();
        self.settle(now, ttl);
        if !room {
            return Err(ClaimError::NoRoom);
        }
        self.secret.admit(secret, room)?;
        self.message = Some(message);
        self.written = Some(now);
        self.acked = false;
        woken.readers.append(&mut self.readers);
        woken.dropped.append(&mut self.awaiters);
        Ok(())
    }

    /// Restores an entry kept from before a restart: written at `written`,
    /// holding `message` (`None`: acknowledged), claimed by `secret`.
    pub fn restore(
        &mut self,
        written: Millis,
        message: Option<Rc<InboxMessage>>,
        secret: Option<super::key::Key>,
    ) {
        self.acked = message.is_none();
        self.message = message;
        self.written = Some(written);
        self.secret = WriteSecret::default();
        if let Some(secret) = secret {
            self.secret.restore(secret);
        }
    }

    /// The entry as a journal keeps it, if there is one at `now`: when it was
    /// written, its message (`None`: acknowledged), its writer's claim.
    pub fn kept(
        &self,
        now: Millis,
        ttl: Millis,
    ) -> Option<(Millis, Option<Rc<InboxMessage>>, Option<super::key::Key>)> {
        if !self.present(now, ttl) {
            return None;
        }
        Some((self.written?, self.message.clone(), self.secret.claim()))
    }

    /// The writer's claim (stored with its message).
    pub fn claim(&self) -> Option<super::key::Key> {
        self.secret.claim()
    }

    /// A reader asks for the message; without one it waits.
    pub fn get(&mut self, now: Millis, ttl: Millis, reader: WaiterId) -> InboxGet {
        self.settle(now, ttl);
        if let Some(message) = &self.message {
            return InboxGet::Message(Rc::clone(message));
        }
        if self.readers.len() >= MAX_INBOX_WAITERS {
            return InboxGet::Busy;
        }
        self.readers.push(reader);
        InboxGet::Parked
    }

    /// Acknowledges: the body goes, the entry stays acknowledged. The waiting
    /// awaiters are appended to `woken`. False when there is no entry.
    pub fn ack(&mut self, now: Millis, ttl: Millis, woken: &mut Vec<WaiterId>) -> bool {
        self.settle(now, ttl);
        if self.written.is_none() {
            return false;
        }
        self.message = None;
        self.acked = true;
        woken.append(&mut self.awaiters);
        true
    }

    /// Whether the entry is acknowledged; `None` without an entry.
    pub fn acked(&mut self, now: Millis, ttl: Millis) -> Option<bool> {
        self.settle(now, ttl);
        self.written.map(|_| self.acked)
    }

    /// The writer waits for the acknowledgement.
    pub fn await_ack(&mut self, now: Millis, ttl: Millis, awaiter: WaiterId) -> InboxAwait {
        self.settle(now, ttl);
        if self.written.is_none() {
            return InboxAwait::Unknown;
        }
        if self.acked {
            return InboxAwait::Acked;
        }
        if self.awaiters.len() >= MAX_INBOX_WAITERS {
            return InboxAwait::Busy;
        }
        self.awaiters.push(awaiter);
        InboxAwait::Parked
    }

    /// A waiting reader or awaiter left. Returns whether it was waiting. An
    /// entry whose TTL is over is forgotten now, so that the inbox is not
    /// left remembered with nothing to keep.
    pub fn leave(&mut self, now: Millis, ttl: Millis, waiter: WaiterId) -> bool {
        self.settle(now, ttl);
        for list in [&mut self.readers, &mut self.awaiters] {
            if let Some(at) = list.iter().position(|&w| w == waiter) {
                list.remove(at);
                return true;
            }
        }
        false
    }

    /// The bytes the entry holds.
    pub fn held(&self) -> usize {
        self.message.as_ref().map_or(0, |m| {
            m.body.len() + m.content_type.as_ref().map_or(0, |t| t.len())
        })
    }
}

impl Channel for InboxChannel {
    fn waiting_len(&self) -> usize {
        self.readers.len() + self.awaiters.len()
    }

    fn is_busy(&self) -> bool {
        self.waiting_len() > 0
    }

    /// An entry is remembered (and counted under the cap) until its TTL is
    /// over; the table's expiry, given the TTL, removes it then.
    fn is_remembered(&self) -> bool {
        self.written.is_some()
    }

    fn last_active(&self) -> Millis {
        self.written.unwrap_or(0)
    }

    fn drain(&mut self, out: &mut Vec<WaiterId>) {
        out.append(&mut self.readers);
        out.append(&mut self.awaiters);
    }

    fn recycle(&mut self) -> bool {
        let keep = self.readers.capacity() <= RECYCLE_CAPACITY
            && self.awaiters.capacity() <= RECYCLE_CAPACITY;
        self.message = None;
        self.written = None;
        self.acked = false;
        self.secret = WriteSecret::default();
        self.readers.clear();
        self.awaiters.clear();
        keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::key::{Hashing, SECRET};
    use crate::relay::testing::w;

    const TTL: Millis = 300_000;

    fn message(body: &str) -> Rc<InboxMessage> {
        let content_type = Some(b"text/plain".as_slice().into());
        Rc::new(InboxMessage::new(
            body.as_bytes().into(),
            content_type,
            &Ledger::default(),
        ))
    }

    #[test]
    fn a_message_is_read_again_and_again_until_acknowledged() {
        let mut inbox = InboxChannel::default();
        let mut woken_by_post = InboxWoken::default();
        assert_eq!(inbox.acked(0, TTL), None, "no entry yet");
        assert_eq!(inbox.get(0, TTL, w(1)), InboxGet::Parked);
        inbox
            .post(10, TTL, (None, true), message("hi"), &mut woken_by_post)
            .unwrap();
        assert_eq!(woken_by_post.readers, [w(1)], "the waiting reader gets it");
        assert_eq!(inbox.get(11, TTL, w(2)), InboxGet::Message(message("hi")));
        assert_eq!(
            inbox.get(12, TTL, w(3)),
            InboxGet::Message(message("hi")),
            "not consumed"
        );
        assert_eq!(inbox.acked(13, TTL), Some(false));
        assert_eq!(inbox.held(), 2 + 10);
        let mut woken = Vec::new();
        assert!(inbox.ack(14, TTL, &mut woken));
        assert_eq!(inbox.acked(15, TTL), Some(true));
        assert_eq!(inbox.held(), 0, "the body goes with the acknowledgement");
        assert_eq!(
            inbox.get(16, TTL, w(4)),
            InboxGet::Parked,
            "a reader waits again"
        );
        assert!(
            inbox.ack(17, TTL, &mut woken),
            "acknowledging twice is fine"
        );
    }

    #[test]
    fn the_writer_waits_for_the_acknowledgement() {
        let mut inbox = InboxChannel::default();
        let (mut woken_by_post, mut woken) = (InboxWoken::default(), Vec::new());
        assert_eq!(
            inbox.await_ack(0, TTL, w(1)),
            InboxAwait::Unknown,
            "nothing to wait for"
        );
        inbox
            .post(1, TTL, (None, true), message("m"), &mut woken_by_post)
            .unwrap();
        assert_eq!(inbox.await_ack(2, TTL, w(2)), InboxAwait::Parked);
        assert_eq!(inbox.get(3, TTL, w(9)), InboxGet::Message(message("m")));
        assert!(inbox.ack(4, TTL, &mut woken));
        assert_eq!(
            woken,
            [w(2)],
            "a read does not wake it; the acknowledgement does"
        );
        assert_eq!(inbox.await_ack(5, TTL, w(3)), InboxAwait::Acked);
        // A new message while someone waits: the wait was for the old one.
        assert_eq!(inbox.await_ack(6, TTL, w(4)), InboxAwait::Acked);
        inbox
            .post(7, TTL, (None, true), message("n"), &mut woken_by_post)
            .unwrap();
        assert_eq!(inbox.await_ack(8, TTL, w(5)), InboxAwait::Parked);
        inbox
            .post(9, TTL, (None, true), message("o"), &mut woken_by_post)
            .unwrap();
        assert_eq!(woken_by_post.dropped, [w(5)]);
    }

    #[test]
    fn an_entry_lives_for_the_ttl_from_its_last_write() {
        let mut inbox = InboxChannel::default();
        let (mut woken_by_post, mut woken) = (InboxWoken::default(), Vec::new());
        inbox
            .post(1_000, TTL, (None, true), message("m"), &mut woken_by_post)
            .unwrap();
        assert!(
            inbox.ack(2_000, TTL, &mut woken),
            "an acknowledgement does not extend it"
        );
        assert_eq!(inbox.acked(1_000 + TTL - 1, TTL), Some(true));
        assert_eq!(inbox.acked(1_000 + TTL, TTL), None, "over at the TTL");
        assert!(!inbox.ack(1_000 + TTL, TTL, &mut woken));
        assert!(!inbox.is_remembered(), "nothing left to remember");
        inbox
            .post(
                5_000_000,
                TTL,
                (None, true),
                message("again"),
                &mut woken_by_post,
            )
            .unwrap();
        assert_eq!(
            inbox.last_active(),
            5_000_000,
            "the table expires it from the write"
        );
    }

    #[test]
    fn a_secret_holds_the_inbox_while_its_entry_lives() {
        let mut inbox = InboxChannel::default();
        let mut woken_by_post = InboxWoken::default();
        let hashing = Hashing::new(7);
        let (mine, theirs) = (
            Some(hashing.key(SECRET, b"mine")),
            Some(hashing.key(SECRET, b"theirs")),
        );
        assert_eq!(inbox.check(0, TTL, mine, true), Ok(()));
        assert_eq!(
            inbox.check(0, TTL, theirs, true),
            Ok(()),
            "a check claims nothing"
        );
        inbox
            .post(1, TTL, (mine, true), message("m"), &mut woken_by_post)
            .unwrap();
        for other in [theirs, None] {
            assert_eq!(
                inbox.check(2, TTL, other, true),
                Err(ClaimError::WrongSecret)
            );
            let refused = inbox.post(2, TTL, (other, true), message("x"), &mut woken_by_post);
            assert_eq!(refused, Err(ClaimError::WrongSecret));
        }
        assert_eq!(inbox.get(3, TTL, w(1)), InboxGet::Message(message("m")));
        assert_eq!(
            inbox.check(1 + TTL, TTL, theirs, true),
            Ok(()),
            "gone with its entry"
        );
    }

    #[test]
    fn a_new_entry_needs_room_and_a_present_one_does_not() {
        let mut inbox = InboxChannel::default();
        let mut woken_by_post = InboxWoken::default();
        assert_eq!(inbox.check(0, TTL, None, false), Err(ClaimError::NoRoom));
        let refused = inbox.post(0, TTL, (None, false), message("m"), &mut woken_by_post);
        assert_eq!(refused, Err(ClaimError::NoRoom));
        assert!(!inbox.is_remembered());
        inbox
            .post(0, TTL, (None, true), message("m"), &mut woken_by_post)
            .unwrap();
        assert_eq!(inbox.check(1, TTL, None, false), Ok(()));
        inbox
            .post(1, TTL, (None, false), message("n"), &mut woken_by_post)
            .unwrap();
    }

    #[test]
    fn an_expired_entry_gives_its_place_to_the_next_message_and_a_leaver_settles_it() {
        let mut inbox = InboxChannel::default();
        let mut woken_by_post = InboxWoken::default();
        inbox
            .post(0, TTL, (None, true), message("m"), &mut woken_by_post)
            .unwrap();
        inbox
            .post(TTL, TTL, (None, false), message("n"), &mut woken_by_post)
            .expect("its own place");
        inbox.ack(TTL + 1, TTL, &mut Vec::new());
        assert_eq!(inbox.get(TTL + 2, TTL, w(1)), InboxGet::Parked);
        assert!(inbox.leave(2 * TTL, TTL, w(1)));
        assert!(!inbox.is_remembered(), "expired: nothing left to remember");
    }

    #[test]
    fn a_message_counts_in_its_ledger_until_its_last_holder_lets_go() {
        let ledger = Ledger::default();
        let body: Arc<[u8]> = b"12345".as_slice().into();
        let message = Rc::new(InboxMessage::new(body, None, &ledger));
        assert_eq!(ledger.get(), 5 + INBOX_MESSAGE_OVERHEAD);
        let mut inbox = InboxChannel::default();
        let (mut woken_by_post, mut woken) = (InboxWoken::default(), Vec::new());
        inbox
            .post(
                0,
                TTL,
                (None, true),
                Rc::clone(&message),
                &mut woken_by_post,
            )
            .unwrap();
        drop(message);
        let InboxGet::Message(sending) = inbox.get(1, TTL, w(1)) else {
            panic!("stored")
        };
        assert!(inbox.ack(2, TTL, &mut woken));
        assert_eq!(
            ledger.get(),
            5 + INBOX_MESSAGE_OVERHEAD,
            "a reader still sends it"
        );
        drop(sending);
        assert_eq!(ledger.get(), 0);
    }

    #[test]
    fn at_most_ten_of_each_kind_wait_and_a_leaver_frees_its_place() {
        let mut inbox = InboxChannel::default();
        for n in 0..MAX_INBOX_WAITERS {
            assert_eq!(inbox.get(0, TTL, w(n)), InboxGet::Parked);
        }
        assert_eq!(inbox.get(0, TTL, w(99)), InboxGet::Busy);
        assert!(inbox.leave(0, TTL, w(3)));
        assert!(!inbox.leave(0, TTL, w(3)));
        assert_eq!(inbox.get(0, TTL, w(99)), InboxGet::Parked);
        let mut drained = Vec::new();
        inbox.drain(&mut drained);
        assert_eq!(drained.len(), MAX_INBOX_WAITERS);
        assert!(!inbox.is_busy());
    }
}
