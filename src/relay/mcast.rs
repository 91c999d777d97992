//! mcast: one producer to many readers. Messages are numbered per channel and
//! retained up to a byte budget; readers pick one by sequence number.
//!
//! A message is shared (`Rc`) by the channel and every reader sending it, so its
//! bytes exist once however many readers there are, and a reader that is still
//! sending a message the channel has since dropped keeps it alive until done.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::IpAddr;
use std::rc::Rc;

use super::secret::{Presented, WriteSecret};
use super::table::Channel;
use super::{AppendError, ClaimError, Millis, PublishError, WaiterId};

/// What a message costs beyond its body and metadata bytes (its record, the
/// channel's reference, the allocator's share), counted against the retention
/// budget and the total so that empty messages are not free.
pub const MESSAGE_OVERHEAD: usize = 256;

/// What a reader learns about the producer of a message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerMeta {
    pub ip: Option<IpAddr>,
    pub port: Option<u16>,
    pub arrived_unix_ms: u64,
    pub method: Box<[u8]>,
    /// Filtered query (as `HttpRelay-Query` shows it).
    pub query: Box<[u8]>,
    pub content_type: Box<[u8]>,
    /// The declared body length, when the producer sent one.
    pub content_length: Option<u64>,
}

impl ProducerMeta {
    /// Bytes the metadata holds on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.method.len() + self.query.len() + self.content_type.len()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageState {
    /// The producer is still sending the body; readers follow it as it grows.
    Uploading,
    Complete,
    /// The upload failed: readers that started must end visibly truncated.
    Aborted,
}

/// What all live mcast messages cost together. Each message adds what it is
/// charged and takes it back when its last holder lets go of it, so a message
/// the channel dropped while readers still send it keeps counting against the
/// total until they are done.
pub type Ledger = Rc<Cell<usize>>;

/// One mcast message.
#[derive(Debug)]
pub struct Message {
    pub seq: u64,
    pub meta: ProducerMeta,
    data: RefCell<Vec<u8>>,
    state: Cell<MessageState>,
    /// Readers that have sent everything uploaded so far and wait for more.
    followers: RefCell<Vec<WaiterId>>,
    ledger: Ledger,
    /// What this message has added to the ledger.
    charged: Cell<usize>,
}

impl Drop for Message {
    fn drop(&mut self) {
        self.ledger.set(self.ledger.get() - self.charged.get());
    }
}

impl Message {
    pub fn state(&self) -> MessageState {
        self.state.get()
    }

    pub fn len(&self) -> usize {
        self.data.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What holding this message costs: body, metadata and [`MESSAGE_OVERHEAD`].
    pub fn cost(&self) -> usize {
        self.len() + self.meta.heap_bytes() + MESSAGE_OVERHEAD
    }

    /// Calls `f` with the bytes from `offset` on (empty if none yet).
    pub fn with_bytes<R>(&self, offset: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        let data = self.data.borrow();
        f(data.get(offset..).unwrap_or_default())
    }

    /// Appends uploaded bytes. Fails, appending nothing, when the message would
    /// exceed `max_len`. (The relay's [`super::Relay::mcast_append`] also keeps
    /// the total over all channels.)
    pub(super) fn append(&self, bytes: &[u8], max_len: usize) -> Result<(), AppendError> {
        let mut data = self.data.borrow_mut();
        if data.len() + bytes.len() > max_len {
            return Err(AppendError::TooLarge);
        }
        crate::buf::reserve_body(&mut data, bytes.len(), max_len);
        data.extend_from_slice(bytes);
        self.charged.set(self.charged.get() + bytes.len());
        self.ledger.set(self.ledger.get() + bytes.len());
        Ok(())
    }

    /// A reader caught up with the upload: wake it when more arrives.
    pub fn follow(&self, reader: WaiterId) {
        let mut followers = self.followers.borrow_mut();
        if !followers.contains(&reader) {
            followers.push(reader);
        }
    }

    /// Readers to wake because the message grew or ended.
    pub fn take_followers(&self, out: &mut Vec<WaiterId>) {
        out.append(&mut self.followers.borrow_mut());
    }
}

/// What became of a reader's `GET`.
#[derive(Debug)]
pub enum McastGet {
    /// Send this message now (it may still be uploading).
    Message(Rc<Message>),
    /// Nothing to send yet: the reader waits for the next message.
    Parked,
}

/// Messages `first..=last` that a stream asked for but retention had
/// dropped already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Missed {
    pub first: u64,
    pub last: u64,
}

/// What a live stream (Server-Sent Events) sends next.
#[derive(Debug)]
pub enum StreamNext {
    /// This message (once its upload is complete), after telling the reader
    /// of the messages it missed, if any.
    Message {
        message: Rc<Message>,
        missed: Option<Missed>,
    },
    /// Nothing to send yet: the stream waits for the next message.
    Parked,
}

#[derive(Default, Debug)]
pub struct McastChannel {
    /// Retained and uploading messages, in sequence order.
    messages: VecDeque<Rc<Message>>,
    next_seq: u64,
    /// Cost ([`Message::cost`]) of the complete messages retained.
    held: usize,
    /// Messages still uploading.
    uploading: usize,
    /// Readers waiting for the next message.
    waiting: Vec<WaiterId>,
    /// One past the newest message retention dropped: a stream asking for an
    /// older one missed it.
    dropped_until: u64,
    secret: WriteSecret,
    last_active: Millis,
}

impl McastChannel {
    pub(super) fn publish(
        &mut self,
        now: Millis,
        secret: Presented,
        room: bool,
        meta: ProducerMeta,
        ledger: &Ledger,
        woken: &mut Vec<WaiterId>,
    ) -> Result<Rc<Message>, PublishError> {
        self.last_active = now;
        // A channel that already holds something is counted already.
        let room = room || self.is_remembered();
        self.secret.admit(secret, room)?;
        if !room {
            return Err(ClaimError::NoRoom.into());
        }
        let capacity = meta.content_length.map_or(0, |n| n as usize);
        let charged = MESSAGE_OVERHEAD + meta.heap_bytes();
        ledger.set(ledger.get() + charged);
        let message = Rc::new(Message {
            seq: self.next_seq,
            meta,
            data: RefCell::new(Vec::with_capacity(capacity)),
            state: Cell::new(MessageState::Uploading),
            followers: RefCell::new(Vec::new()),
            ledger: Rc::clone(ledger),
            charged: Cell::new(charged),
        });
        self.next_seq += 1;
        self.uploading += 1;
        self.messages.push_back(Rc::clone(&message));
        // Everyone waiting was waiting for exactly this: the next message.
        woken.append(&mut self.waiting);
        Ok(message)
    }

    /// Marks the message complete and drops old ones over `retain` (their
    /// cost leaves the ledger when their last reader lets go).
    pub(super) fn complete(&mut self, now: Millis, message: &Message, retain: usize) {
        self.last_active = now;
        if message.state() != MessageState::Uploading {
            return;
        }
        message.state.set(MessageState::Complete);
        message.data.borrow_mut().shrink_to_fit();
        self.uploading -= 1;
        self.held += message.cost();
        // Drop the oldest complete messages while over budget, keeping the newest.
        while self.held > retain {
            let Some(at) = self
                .messages
                .iter()
                .position(|m| m.state() == MessageState::Complete)
            else {
                break;
            };
            // Never drop the newest message, nor the one that just completed
            // (a newer upload may still be in progress).
            let candidate = &self.messages[at];
            if Rc::ptr_eq(candidate, self.messages.back().expect("non-empty"))
                || std::ptr::eq(Rc::as_ptr(candidate), message)
            {
                break;
            }
            let dropped = self.messages.remove(at).expect("position is in range");
            self.held -= dropped.cost();
            self.dropped_until = self.dropped_until.max(dropped.seq + 1);
        }
    }

    /// Removes a failed upload (its readers still hold it, and it still counts
    /// in the ledger until they are done).
    pub(super) fn abort(&mut self, now: Millis, message: &Message) {
        self.last_active = now;
        // Uploads are among the newest messages: look from the back.
        let at = self
            .messages
            .iter()
            .rposition(|m| std::ptr::eq(Rc::as_ptr(m), message));
        let state = message.state();
        message.state.set(MessageState::Aborted);
        let Some(at) = at else {
            return;
        };
        self.messages.remove(at);
        match state {
            MessageState::Uploading => self.uploading -= 1,
            MessageState::Complete => self.held -= message.cost(),
            MessageState::Aborted => {}
        }
    }

    pub(super) fn get(
        &mut self,
        now: Millis,
        requested: Option<u64>,
        reader: WaiterId,
    ) -> McastGet {
        self.last_active = now;
        let found = match requested {
            None => self.messages.back(),
            Some(seq) if seq >= self.next_seq => None,
            // Too old: the oldest retained. Otherwise that one, or the next that
            // exists when it was removed by a failed upload.
            Some(seq) => self
                .messages
                .get(self.messages.partition_point(|m| m.seq < seq)),
        };
        match found {
            Some(message) => McastGet::Message(Rc::clone(message)),
            None => {
                self.waiting.push(reader);
                McastGet::Parked
            }
        }
    }

    /// A live stream asks for its next message: the first at or after `from`
    /// that exists (none: only a message published from now on). A `from`
    /// that retention has dropped yields the oldest retained and the range
    /// missed; one not written yet waits for the next message, like a plain
    /// reader's.
    pub(super) fn next_for_stream(
        &mut self,
        now: Millis,
        from: Option<u64>,
        reader: WaiterId,
    ) -> StreamNext {
        self.last_active = now;
        let found = from.and_then(|seq| {
            let at = self.messages.partition_point(|m| m.seq < seq);
            let message = self.messages.get(at)?;
            // Missed: what retention dropped between `seq` and the one found
            // (not failed uploads, which never were messages).
            let last = self.dropped_until.min(message.seq);
            let missed = (seq < last).then(|| Missed {
                first: seq,
                last: last - 1,
            });
            Some((Rc::clone(message), missed))
        });
        match found {
            Some((message, missed)) => StreamNext::Message { message, missed },
            None => {
                self.waiting.push(reader);
                StreamNext::Parked
            }
        }
    }

    pub(super) fn leave(&mut self, now: Millis, reader: WaiterId) -> bool {
        let before = self.waiting.len();
        self.waiting.retain(|&w| w != reader);
        self.last_active = now;
        self.waiting.len() != before
    }

    pub(super) fn held_bytes(&self) -> usize {
        self.held
    }
}

impl Channel for McastChannel {
    fn waiting_len(&self) -> usize {
        self.waiting.len()
    }

    fn is_busy(&self) -> bool {
        !self.waiting.is_empty() || self.uploading > 0
    }

    fn is_remembered(&self) -> bool {
        !self.messages.is_empty() || self.secret.is_claimed()
    }

    fn last_active(&self) -> Millis {
        self.last_active
    }

    fn drain(&mut self, out: &mut Vec<WaiterId>) {
        out.append(&mut self.waiting);
    }

    fn recycle(&mut self) -> bool {
        let keep = self.messages.capacity() <= 8 && self.waiting.capacity() <= 8;
        self.messages.clear();
        self.waiting.clear();
        let (messages, waiting) = (
            std::mem::take(&mut self.messages),
            std::mem::take(&mut self.waiting),
        );
        *self = McastChannel {
            messages,
            waiting,
            ..McastChannel::default()
        };
        keep
    }
}

/// The mcast rules, through the relay's API.
#[cfg(test)]
mod tests {
    use crate::relay::*;
    use std::rc::Rc;

    fn meta(len: Option<u64>) -> ProducerMeta {
        ProducerMeta {
            content_length: len,
            ..ProducerMeta::default()
        }
    }

    /// Publishes and completes a message with `body`; returns it.
    fn write(relay: &mut Relay, id: &[u8], body: &[u8]) -> Rc<Message> {
        let mut woken = Vec::new();
        let m = relay
            .mcast_publish(0, id, b"", meta(Some(body.len() as u64)), &mut woken)
            .unwrap();
        relay.mcast_append(&m, body, usize::MAX).unwrap();
        relay.mcast_complete(0, id, &m);
        m
    }

    fn got(relay: &mut Relay, id: &[u8], requested: Option<u64>) -> Option<u64> {
        match relay.mcast_get(0, id, requested, WaiterId(99)) {
            McastGet::Message(m) => Some(m.seq),
            McastGet::Parked => {
                relay.mcast_leave(0, id, WaiterId(99));
                None
            }
        }
    }

    #[test]
    fn sequence_numbers_start_at_zero_per_channel() {
        let mut relay = Relay::new(Settings::default());
        assert_eq!(write(&mut relay, b"a", b"x").seq, 0);
        assert_eq!(write(&mut relay, b"a", b"y").seq, 1);
        assert_eq!(write(&mut relay, b"b", b"z").seq, 0);
    }

    #[test]
    fn get_rules() {
        let mut relay = Relay::new(Settings::default());
        assert_eq!(got(&mut relay, b"c", None), None, "no message yet: wait");
        for body in [b"0", b"1", b"2"] {
            write(&mut relay, b"c", body);
        }
        assert_eq!(got(&mut relay, b"c", None), Some(2), "no seqid: the newest");
        assert_eq!(got(&mut relay, b"c", Some(1)), Some(1), "exact");
        assert_eq!(
            got(&mut relay, b"c", Some(3)),
            None,
            "the next to be written: wait"
        );
        assert_eq!(
            got(&mut relay, b"c", Some(50)),
            None,
            "too new: wait for the next"
        );
    }

    #[test]
    fn too_old_gets_the_oldest_retained() {
        let cost = 10 + MESSAGE_OVERHEAD;
        let mut relay = Relay::new(Settings {
            mcast_retain: 2 * cost + cost / 2,
            ..Settings::default()
        });
        for _ in 0..5 {
            write(&mut relay, b"r", &[7; 10]);
        }
        // Five messages written, two and a half retained: messages 3 and 4 remain.
        assert_eq!(relay.mcast_held_bytes(), 2 * cost);
        assert_eq!(got(&mut relay, b"r", Some(0)), Some(3));
        assert_eq!(got(&mut relay, b"r", Some(4)), Some(4));
    }

    #[test]
    fn the_newest_message_is_kept_even_over_budget() {
        let mut relay = Relay::new(Settings {
            mcast_retain: 5,
            ..Settings::default()
        });
        write(&mut relay, b"r", &[1; 10]);
        write(&mut relay, b"r", &[1; 10]);
        assert_eq!(relay.mcast_held_bytes(), 10 + MESSAGE_OVERHEAD);
        assert_eq!(got(&mut relay, b"r", Some(0)), Some(1));
    }

    #[test]
    fn waiting_readers_are_woken_by_the_next_message() {
        let mut relay = Relay::new(Settings::default());
        for n in 1..=3 {
            assert!(matches!(
                relay.mcast_get(0, b"w", None, WaiterId(n)),
                McastGet::Parked
            ));
        }
        relay.mcast_leave(0, b"w", WaiterId(2));
        let mut woken = Vec::new();
        let m = relay
            .mcast_publish(0, b"w", b"", meta(None), &mut woken)
            .unwrap();
        assert_eq!(woken, vec![WaiterId(1), WaiterId(3)]);
        assert_eq!(m.state(), MessageState::Uploading);
        assert_eq!(relay.waiter_count(), 0);
    }

    #[test]
    fn an_uploading_message_is_readable_and_growing() {
        let mut relay = Relay::new(Settings::default());
        let mut woken = Vec::new();
        let m = relay
            .mcast_publish(0, b"u", b"", meta(None), &mut woken)
            .unwrap();
        relay.mcast_append(&m, b"abc", 10).unwrap();
        let McastGet::Message(seen) = relay.mcast_get(0, b"u", None, WaiterId(1)) else {
            panic!("the uploading message is the newest");
        };
        assert!(Rc::ptr_eq(&seen, &m), "one shared copy");
        seen.follow(WaiterId(1));
        seen.follow(WaiterId(1));
        relay.mcast_append(&m, b"def", 10).unwrap();
        let mut followers = Vec::new();
        m.take_followers(&mut followers);
        assert_eq!(followers, vec![WaiterId(1)]);
        assert_eq!(seen.with_bytes(2, <[u8]>::to_vec), b"cdef");
        assert_eq!(
            relay.mcast_append(&m, b"12345", 10),
            Err(AppendError::TooLarge)
        );
        assert_eq!(m.len(), 6, "a refused append adds nothing");
        assert_eq!(relay.mcast_bytes(), 6 + MESSAGE_OVERHEAD);
    }

    #[test]
    fn a_failed_upload_disappears() {
        let mut relay = Relay::new(Settings::default());
        write(&mut relay, b"f", b"0");
        let mut woken = Vec::new();
        let broken = relay
            .mcast_publish(0, b"f", b"", meta(None), &mut woken)
            .unwrap();
        write(&mut relay, b"f", b"2");
        relay.mcast_abort(0, b"f", &broken);
        assert_eq!(broken.state(), MessageState::Aborted);
        assert_eq!(
            got(&mut relay, b"f", Some(1)),
            Some(2),
            "the next that exists"
        );
        assert_eq!(got(&mut relay, b"f", None), Some(2));
    }

    #[test]
    fn the_total_over_all_channels_is_kept() {
        let o = MESSAGE_OVERHEAD;
        let mut relay = Relay::new(Settings {
            mcast_total: 2 * o + 10,
            mcast_retain: 10 * o,
            ..Settings::default()
        });
        write(&mut relay, b"a", b"123456");
        assert_eq!(relay.mcast_bytes(), o + 6);
        assert!(relay.mcast_has_room(Some(4)));
        assert!(!relay.mcast_has_room(Some(5)));
        let mut woken = Vec::new();
        let m = relay
            .mcast_publish(0, b"b", b"", meta(None), &mut woken)
            .unwrap();
        relay.mcast_append(&m, b"1234", 100).unwrap();
        assert_eq!(relay.mcast_append(&m, b"5", 100), Err(AppendError::Full));
        assert_eq!(
            relay
                .mcast_publish(0, b"c", b"", meta(None), &mut woken)
                .err(),
            Some(PublishError::Full),
            "even an empty message costs its overhead"
        );
        relay.mcast_abort(0, b"b", &m);
        relay.mcast_abort(0, b"b", &m);
        assert_eq!(
            relay.mcast_bytes(),
            2 * o + 10,
            "a reader still holds the aborted message: it still counts"
        );
        drop(m);
        assert_eq!(
            relay.mcast_bytes(),
            o + 6,
            "the last holder gone, its bytes are given back, once"
        );
        assert_eq!(
            relay.channel_count(),
            1,
            "the aborted upload's channel is gone"
        );
    }

    #[test]
    fn a_dropped_message_counts_until_its_last_reader_is_done() {
        let o = MESSAGE_OVERHEAD;
        let mut relay = Relay::new(Settings {
            mcast_retain: 0,
            ..Settings::default()
        });
        let first = write(&mut relay, b"d", b"12345");
        write(&mut relay, b"d", b"6789");
        assert_eq!(
            relay.mcast_held_bytes(),
            o + 4,
            "the channel keeps the newest"
        );
        assert_eq!(
            relay.mcast_bytes(),
            2 * o + 9,
            "a reader still sends the first"
        );
        drop(first);
        assert_eq!(relay.mcast_bytes(), o + 4);
    }

    #[test]
    fn empty_messages_are_not_free() {
        let o = MESSAGE_OVERHEAD;
        let mut relay = Relay::new(Settings {
            mcast_retain: 3 * o,
            ..Settings::default()
        });
        for _ in 0..100 {
            write(&mut relay, b"e", b"");
        }
        assert_eq!(relay.mcast_held_bytes(), 3 * o, "three retained");
        assert_eq!(relay.mcast_bytes(), 3 * o);
        assert_eq!(got(&mut relay, b"e", Some(0)), Some(97));
    }

    #[test]
    fn retention_and_expiry_give_bytes_back() {
        let mut relay = Relay::new(Settings {
            mcast_retain: 10,
            idle_expiry: 100,
            ..Settings::default()
        });
        for _ in 0..5 {
            write(&mut relay, b"r", &[0; 8]);
        }
        assert_eq!(
            relay.mcast_bytes(),
            8 + MESSAGE_OVERHEAD,
            "only the newest is retained"
        );
        relay.handle_timeout(10_000);
        relay.handle_timeout(20_000);
        assert_eq!(relay.channel_count(), 0);
        assert_eq!(relay.mcast_bytes(), 0);
    }

    /// What a stream asking from `from` gets: (seq, missed), or `None` when
    /// it waits (it then leaves).
    fn streamed(relay: &mut Relay, id: &[u8], from: Option<u64>) -> Option<(u64, Option<Missed>)> {
        match relay.mcast_stream_next(0, id, from, WaiterId(98)) {
            StreamNext::Message { message, missed } => Some((message.seq, missed)),
            StreamNext::Parked => {
                assert!(
                    relay.mcast_leave(0, id, WaiterId(98)),
                    "it waits in the channel"
                );
                None
            }
        }
    }

    #[test]
    fn a_stream_gets_each_message_from_where_it_asks_and_waits_for_new_ones() {
        let mut relay = Relay::new(Settings::default());
        assert_eq!(streamed(&mut relay, b"s", Some(0)), None, "nothing yet");
        for body in [b"0", b"1", b"2"] {
            write(&mut relay, b"s", body);
        }
        assert_eq!(
            streamed(&mut relay, b"s", None),
            None,
            "none: only new ones"
        );
        assert_eq!(streamed(&mut relay, b"s", Some(0)), Some((0, None)));
        assert_eq!(streamed(&mut relay, b"s", Some(2)), Some((2, None)));
        assert_eq!(streamed(&mut relay, b"s", Some(3)), None, "caught up");
        assert_eq!(streamed(&mut relay, b"s", Some(99)), None);
        let mut woken = Vec::new();
        assert!(matches!(
            relay.mcast_stream_next(0, b"s", Some(3), WaiterId(1)),
            StreamNext::Parked
        ));
        let m = relay
            .mcast_publish(0, b"s", b"", meta(None), &mut woken)
            .unwrap();
        assert_eq!((woken, m.seq), (vec![WaiterId(1)], 3), "woken by the next");
        assert_eq!(
            streamed(&mut relay, b"s", Some(3)).map(|(seq, _)| seq),
            Some(3),
            "an upload in progress is the stream's next (sent once complete)"
        );
    }

    #[test]
    fn a_stream_behind_retention_learns_what_it_missed_but_not_failed_uploads() {
        let cost = 10 + MESSAGE_OVERHEAD;
        let mut relay = Relay::new(Settings {
            mcast_retain: 2 * cost,
            ..Settings::default()
        });
        for _ in 0..5 {
            write(&mut relay, b"r", &[7; 10]);
        }
        let missed = |first, last| Some(Missed { first, last });
        assert_eq!(streamed(&mut relay, b"r", Some(0)), Some((3, missed(0, 2))));
        assert_eq!(streamed(&mut relay, b"r", Some(2)), Some((3, missed(2, 2))));
        assert_eq!(streamed(&mut relay, b"r", Some(3)), Some((3, None)));
        let mut woken = Vec::new();
        let failed = relay
            .mcast_publish(0, b"r", b"", meta(None), &mut woken)
            .unwrap();
        relay.mcast_abort(0, b"r", &failed);
        write(&mut relay, b"r", &[7; 10]);
        assert_eq!(
            streamed(&mut relay, b"r", Some(5)),
            Some((6, None)),
            "a failed upload is no missed message"
        );
    }

    #[test]
    fn mcast_secret_guards_producers_only() {
        let mut relay = Relay::new(Settings::default());
        let mut woken = Vec::new();
        relay
            .mcast_publish(0, b"s", b"k", meta(None), &mut woken)
            .unwrap();
        assert_eq!(
            relay
                .mcast_publish(0, b"s", b"other", meta(None), &mut woken)
                .unwrap_err(),
            PublishError::Claim(ClaimError::WrongSecret)
        );
        assert!(matches!(
            relay.mcast_get(0, b"s", None, WaiterId(1)),
            McastGet::Message(_)
        ));
    }

    #[test]
    fn mcast_channels_expire_with_their_messages() {
        let mut relay = Relay::new(Settings {
            idle_expiry: 100,
            ..Settings::default()
        });
        let mut woken = Vec::new();
        let uploading = relay
            .mcast_publish(0, b"e", b"", meta(None), &mut woken)
            .unwrap();
        relay.handle_timeout(1_000);
        assert_eq!(
            relay.channel_count(),
            1,
            "an upload in progress keeps the channel"
        );
        relay.mcast_complete(1_000, b"e", &uploading);
        let mut now = 1_000;
        while relay.channel_count() > 0 && now < 5_000 {
            now += 10;
            relay.handle_timeout(now);
        }
        assert_eq!(relay.channel_count(), 0);
        assert_eq!(relay.mcast_held_bytes(), 0);
    }
}
