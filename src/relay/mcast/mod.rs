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
    fn claim(&self) -> Option<crate::relay::key::Key> {
        self.secret.claim()
    }
    fn restore_claim(&mut self, now: Millis, secret: crate::relay::key::Key) {
        self.secret.restore(secret);
        self.last_active = now;
    }

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
mod tests;
