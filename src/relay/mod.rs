//! The sans-IO relay core: who waits on which channel, who is paired with whom,
//! which secret guards a channel, when an idle channel is forgotten.
//!
//! Nothing here touches a socket or reads a clock. Time comes in as `now`
//! (milliseconds on a monotonic scale chosen by the caller), and the caller asks
//! [`Relay::poll_timeout`] when it must call [`Relay::handle_timeout`] next.
//! Body bytes never pass through the core: it only decides pairings; the shell
//! moves the bytes.

mod errors;
mod inbox;
mod key;
mod link;
mod mcast;
mod piping;
mod proxy;
mod secret;
mod sync;
mod table;

use std::rc::Rc;

pub use errors::{AppendError, ClaimError, PublishError, ResultError};
pub use inbox::{
    InboxAwait, InboxChannel, InboxGet, InboxMessage, InboxWoken, MessageParts,
    INBOX_MESSAGE_OVERHEAD, MAX_INBOX_WAITERS,
};
use key::Hashing;
pub use key::Key;
pub use link::{LinkArrival, LinkChannel};
pub use mcast::{
    McastChannel, McastGet, Message, MessageState, Missed, ProducerMeta, StreamNext,
    MESSAGE_OVERHEAD,
};
pub use piping::{PipingArrival, PipingChannel, PipingError, PipingRole};
pub use proxy::{JobId, ProxyChannel, ProxyDispatch};
pub use sync::{SyncArrival, SyncChannel};
use table::{Channel, Owner, Table, EXPIRE_BATCH};

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

/// Default time an idle channel (nobody waiting) is remembered: 20 minutes.
pub const DEFAULT_IDLE_EXPIRY: Millis = 20 * 60 * 1000;
/// Default cap on remembered channels (those holding a claim or messages).
pub const DEFAULT_MAX_CHANNELS: usize = 32 * 1024;

/// Default time an inbox entry lives after its `POST`: 5 minutes.
pub const DEFAULT_INBOX_TTL: Millis = 5 * 60 * 1000;

/// The core's limits and settings.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub idle_expiry: Millis,
    /// Bytes of complete mcast messages a channel retains (oldest dropped beyond).
    pub mcast_retain: usize,
    /// Bytes all mcast messages (retained or uploading) may hold together.
    pub mcast_total: usize,
    /// Most channels remembered for a claim or messages, over all methods.
    pub max_channels: usize,
    /// Most of those one client address makes remembered.
    pub max_channels_per_client: usize,
    /// How long an inbox entry lives after the `POST` that wrote it.
    pub inbox_ttl: Millis,
    /// Seed for job ids and the keyed hashes of ids and secrets (the shell
    /// supplies randomness; the core has no IO).
    pub seed: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            idle_expiry: DEFAULT_IDLE_EXPIRY,
            mcast_retain: 11_000_000,
            mcast_total: 64 * 1024 * 1024,
            max_channels: DEFAULT_MAX_CHANNELS,
            max_channels_per_client: DEFAULT_MAX_CHANNELS / 8,
            inbox_ttl: DEFAULT_INBOX_TTL,
            seed: 0x9e37_79b9_7f4a_7c15,
        }
    }
}

/// The relay methods, in the order every per-method figure uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Link,
    Mcast,
    Sync,
    Proxy,
    /// Piping Server transfers (with `--piping`).
    Piping,
    /// Acknowledged messages (`/inbox/{id}`).
    Inbox,
}

impl Method {
    pub const ALL: [Method; 6] = [
        Method::Link,
        Method::Mcast,
        Method::Sync,
        Method::Proxy,
        Method::Piping,
        Method::Inbox,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Method::Link => "link",
            Method::Mcast => "mcast",
            Method::Sync => "sync",
            Method::Proxy => "proxy",
            Method::Piping => "piping",
            Method::Inbox => "inbox",
        }
    }
}

/// A figure per method, indexed by [`Method`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PerMethod<T>(pub [T; 6]);

impl<T: Copy> PerMethod<T> {
    pub fn get(&self, method: Method) -> T {
        self.0[method as usize]
    }
}

/// The registry of channels for every method. Each method has its own
/// namespace of ids, as in the original.
pub struct Relay {
    links: Table<LinkChannel>,
    mcasts: Table<McastChannel>,
    syncs: Table<SyncChannel>,
    proxies: Table<ProxyChannel>,
    pipings: Table<PipingChannel>,
    inboxes: Table<InboxChannel>,
    settings: Settings,
    hashing: Hashing,
    /// What live mcast messages cost ([`Message::cost`]): retained, uploading,
    /// or dropped by their channel but still being sent to a reader.
    mcast_bytes: mcast::Ledger,
    /// What stored inbox messages cost ([`InboxMessage::cost`]), also while
    /// a reader still sends one its inbox dropped.
    inbox_bytes: mcast::Ledger,
    rng: u64,
    /// Requests refused because the cap on remembered channels was reached.
    refused_no_room: u64,
    /// Requests refused because their client address had its share of it.
    refused_client: u64,
    /// What a journal must keep, once asked for ([`Relay::keep_durable`]).
    durable: Option<Vec<Durable>>,
}

/// Who writes: the write secret presented (empty for none) and the client
/// address, whose share of remembered channels a claim or a new mcast
/// channel counts in (`None`: counted in no share). A bare secret converts.
#[derive(Clone, Copy, Debug)]
pub struct Writer<'a> {
    pub secret: &'a [u8],
    /// The address as 128 bits (an IPv6 prefix, or an IPv4-mapped address).
    pub client: Option<u128>,
}

impl<'a> From<&'a [u8]> for Writer<'a> {
    fn from(secret: &'a [u8]) -> Self {
        Writer {
            secret,
            client: None,
        }
    }
}

impl<'a, const N: usize> From<&'a [u8; N]> for Writer<'a> {
    fn from(secret: &'a [u8; N]) -> Self {
        Writer::from(&secret[..])
    }
}

impl<'a> From<&'a Vec<u8>> for Writer<'a> {
    fn from(secret: &'a Vec<u8>) -> Self {
        Writer::from(secret.as_slice())
    }
}

/// What the relay acknowledged and must not forget: kept in order for a
/// journal (see [`Relay::keep_durable`]).
#[derive(Clone, Debug)]
pub enum Durable {
    /// An inbox message was stored (its writer's claim with it).
    InboxPut {
        inbox: Key,
        secret: Option<Key>,
        message: Rc<InboxMessage>,
    },
    /// An inbox message was acknowledged.
    InboxAck { inbox: Key },
    /// A channel was claimed with a write secret.
    Claim {
        method: Method,
        channel: Key,
        secret: Key,
    },
}

/// One piece of what must survive a restart, as it stands (see
/// [`Relay::durable_state`]).
#[derive(Clone, Debug)]
pub enum Kept {
    /// An inbox entry written `age` ago, holding `message` (`None`:
    /// acknowledged), claimed by `secret`.
    Inbox {
        inbox: Key,
        age: Millis,
        secret: Option<Key>,
        message: Option<Rc<InboxMessage>>,
    },
    Claim {
        method: Method,
        channel: Key,
        secret: Key,
    },
}

/// Runs `op` on a channel; also returns the claim it made, if it made one.
fn newly_claimed<C: Channel, R>(c: &mut C, op: impl FnOnce(&mut C) -> R) -> (R, Option<Key>) {
    let before = c.claim();
    let result = op(c);
    (result, c.claim().filter(|_| before.is_none()))
}

/// Room for one more remembered channel: under the cap, and within the
/// writer's share of it.
#[derive(Clone, Copy, Debug)]
struct Room {
    cap: bool,
    share: bool,
}

impl Room {
    fn any(self) -> bool {
        self.cap && self.share
    }
}

impl Relay {
    pub fn new(settings: Settings) -> Relay {
        Relay {
            links: Table::default(),
            mcasts: Table::default(),
            syncs: Table::default(),
            proxies: Table::default(),
            pipings: Table::default(),
            inboxes: Table::default(),
            rng: settings.seed | 1,
            hashing: Hashing::new(settings.seed),
            mcast_bytes: mcast::Ledger::default(),
            inbox_bytes: mcast::Ledger::default(),
            settings,
            refused_no_room: 0,
            refused_client: 0,
            durable: None,
        }
    }

    fn id(&self, id: &[u8]) -> Key {
        self.hashing.key(key::ID, id)
    }

    fn secret(&self, secret: &[u8]) -> secret::Presented {
        (!secret.is_empty()).then(|| self.hashing.key(key::SECRET, secret))
    }

    /// A writer's channel key, owner, hashed secret and room.
    fn writer(
        &self,
        id: &[u8],
        writer: Writer<'_>,
    ) -> (Key, Option<Owner>, secret::Presented, Room) {
        let owner = self.owner(writer.client);
        (
            self.id(id),
            owner,
            self.secret(writer.secret),
            self.room(owner),
        )
    }

    /// Draws job ids from `seed` (the hash keys stay: they may come from a
    /// journal, and job ids must not repeat those of an earlier run).
    pub fn reseed(&mut self, seed: u64) {
        self.rng = seed | 1;
    }

    /// From now on, what must not be forgotten is kept for a journal: take it
    /// with [`Relay::take_durable`] after each operation.
    pub fn keep_durable(&mut self) {
        self.durable.get_or_insert_with(Vec::new);
    }

    /// Whether something marked durable waits to be taken.
    pub fn has_durable(&self) -> bool {
        self.durable.as_ref().is_some_and(|d| !d.is_empty())
    }

    /// Moves what must not be forgotten since the last call into `out`.
    pub fn take_durable(&mut self, out: &mut Vec<Durable>) {
        if let Some(kept) = &mut self.durable {
            out.append(kept);
        }
    }

    fn keep(&mut self, durable: impl FnOnce() -> Durable) {
        if let Some(kept) = &mut self.durable {
            kept.push(durable());
        }
    }

    /// Keeps a claim an operation made.
    fn claimed(&mut self, method: Method, channel: Key, secret: Option<Key>) {
        if let Some(secret) = secret {
            self.keep(|| Durable::Claim {
                method,
                channel,
                secret,
            });
        }
    }

    /// Restores an inbox entry kept from before a restart: written `age`
    /// ago, holding `message` (`None`: acknowledged), claimed by `secret`.
    /// False (nothing restored) when its TTL is over.
    pub fn restore_inbox(
        &mut self,
        now: Millis,
        inbox: Key,
        age: Millis,
        secret: Option<Key>,
        message: Option<inbox::MessageParts>,
    ) -> bool {
        let ttl = self.settings.inbox_ttl;
        if age >= ttl || age > now {
            return false;
        }
        let ledger = &self.inbox_bytes;
        let message = message.map(|(body, t)| Rc::new(InboxMessage::new(body, t, ledger)));
        self.inboxes
            .with(inbox, ttl, |c| c.restore(now - age, message, secret));
        true
    }

    /// Restores a claim kept from before a restart, idle from `now`.
    pub fn restore_claim(&mut self, now: Millis, method: Method, channel: Key, secret: Key) {
        let expiry = self.settings.idle_expiry;
        match method {
            Method::Link => self
                .links
                .with(channel, expiry, |c| c.restore_claim(now, secret)),
            Method::Mcast => self
                .mcasts
                .with(channel, expiry, |c| c.restore_claim(now, secret)),
            Method::Proxy => self
                .proxies
                .with(channel, expiry, |c| c.restore_claim(now, secret)),
            _ => {}
        }
    }

    /// What must survive a restart, as it stands now (a journal's compaction
    /// writes it anew): every inbox entry and every claim.
    pub fn durable_state(&self, now: Millis, out: &mut Vec<Kept>) {
        let ttl = self.settings.inbox_ttl;
        for (inbox, c) in self.inboxes.entries() {
            if let Some((written, message, secret)) = c.kept(now, ttl) {
                out.push(Kept::Inbox {
                    inbox,
                    age: now.saturating_sub(written),
                    secret,
                    message,
                });
            }
        }
        let claims = |method: Method,
                      entries: &mut dyn Iterator<Item = (Key, Option<Key>)>,
                      out: &mut Vec<Kept>| {
            for (channel, secret) in entries {
                if let Some(secret) = secret {
                    out.push(Kept::Claim {
                        method,
                        channel,
                        secret,
                    });
                }
            }
        };
        claims(
            Method::Link,
            &mut self.links.entries().map(|(k, c)| (k, c.claim())),
            out,
        );
        claims(
            Method::Mcast,
            &mut self.mcasts.entries().map(|(k, c)| (k, c.claim())),
            out,
        );
        claims(
            Method::Proxy,
            &mut self.proxies.entries().map(|(k, c)| (k, c.claim())),
            out,
        );
    }

    /// The share of remembered channels a writer counts in.
    fn owner(&self, client: Option<u128>) -> Option<Owner> {
        client.map(|c| self.hashing.key(key::CLIENT, &c.to_le_bytes()).low())
    }

    /// Whether one more channel may be remembered, under the cap and within
    /// the writer's share of it.
    fn room(&self, owner: Option<Owner>) -> Room {
        let owned = |o| {
            self.links.owned_by(o)
                + self.mcasts.owned_by(o)
                + self.proxies.owned_by(o)
                + self.inboxes.owned_by(o)
        };
        Room {
            cap: self.remembered_channels() < self.settings.max_channels,
            share: owner.is_none_or(|o| owned(o) < self.settings.max_channels_per_client),
        }
    }

    /// Counts a refusal for want of room, and names it: past the writer's
    /// share (with room under the cap) it is [`ClaimError::ClientFull`].
    fn note<T, E>(&mut self, result: Result<T, E>, room: Room) -> Result<T, E>
    where
        E: Copy + Into<Option<ClaimError>> + From<ClaimError>,
    {
        match &result {
            Err(e) if (*e).into() == Some(ClaimError::NoRoom) => {
                if room.cap {
                    self.refused_client += 1;
                    return Err(E::from(ClaimError::ClientFull));
                }
                self.refused_no_room += 1;
                result
            }
            _ => result,
        }
    }

    // ---- link ----

    /// A link request arrives on channel `id`. `secret` is the write secret it
    /// presents (empty for none); only producers are checked.
    ///
    /// On `Paired(other)` the counterpart has left the queue and neither side is
    /// waiting any more; on `Parked` the caller must later either see it paired
    /// (returned from another arrival) or call [`Relay::link_leave`].
    pub fn link_arrive<'w>(
        &mut self,
        now: Millis,
        id: &[u8],
        role: Role,
        waiter: WaiterId,
        writer: impl Into<Writer<'w>>,
    ) -> Result<LinkArrival, ClaimError> {
        let (key, owner, secret, room) = self.writer(id, writer.into());
        let expiry = self.settings.idle_expiry;
        let (arrival, claimed) = self.links.with_owner(key, expiry, owner, |c| {
            newly_claimed(c, |c| c.arrive(now, role, waiter, secret, room.any()))
        });
        self.claimed(Method::Link, key, claimed);
        self.note(arrival, room)
    }

    /// A parked link waiter went away. Returns whether it was still waiting.
    pub fn link_leave(&mut self, now: Millis, id: &[u8], waiter: WaiterId) -> bool {
        let expiry = self.settings.idle_expiry;
        self.links
            .with_existing(self.id(id), expiry, |c| c.leave(now, waiter))
            .unwrap_or(false)
    }

    // ---- mcast ----

    /// A producer starts a message. Readers waiting for the next message are
    /// appended to `woken`: each should be sent the returned message.
    pub fn mcast_publish<'w>(
        &mut self,
        now: Millis,
        id: &[u8],
        writer: impl Into<Writer<'w>>,
        meta: ProducerMeta,
        woken: &mut Vec<WaiterId>,
    ) -> Result<Rc<Message>, PublishError> {
        let cost = MESSAGE_OVERHEAD + meta.heap_bytes();
        if self.mcast_bytes() + cost > self.settings.mcast_total {
            return Err(PublishError::Full);
        }
        let (key, owner, secret, room) = self.writer(id, writer.into());
        let expiry = self.settings.idle_expiry;
        let ledger = &self.mcast_bytes;
        let (published, claimed) = self.mcasts.with_owner(key, expiry, owner, |c| {
            newly_claimed(c, |c| {
                c.publish(now, secret, room.any(), meta, ledger, woken)
            })
        });
        self.claimed(Method::Mcast, key, claimed);
        self.note(published, room)
    }

    /// Whether a new upload of `len` bytes (if known) fits in the total now.
    pub fn mcast_has_room(&self, len: Option<u64>) -> bool {
        let wanted = len.unwrap_or(0).saturating_add(MESSAGE_OVERHEAD as u64);
        (self.mcast_bytes() as u64).saturating_add(wanted) <= self.settings.mcast_total as u64
    }

    /// Appends uploaded bytes to a message: `TooLarge` past `max_len`, `Full`
    /// past the total of all messages. A refused append adds nothing.
    pub fn mcast_append(
        &mut self,
        message: &Message,
        bytes: &[u8],
        max_len: usize,
    ) -> Result<(), AppendError> {
        if self.mcast_bytes() + bytes.len() > self.settings.mcast_total {
            return Err(AppendError::Full);
        }
        message.append(bytes, max_len)
    }

    /// The message's upload finished; older messages may be dropped.
    pub fn mcast_complete(&mut self, now: Millis, id: &[u8], message: &Message) {
        let (retain, expiry) = (self.settings.mcast_retain, self.settings.idle_expiry);
        self.mcasts
            .with_existing(self.id(id), expiry, |c| c.complete(now, message, retain));
    }

    /// The message's upload failed: it is removed.
    pub fn mcast_abort(&mut self, now: Millis, id: &[u8], message: &Message) {
        let expiry = self.settings.idle_expiry;
        self.mcasts
            .with_existing(self.id(id), expiry, |c| c.abort(now, message));
    }

    /// What live mcast messages cost together (retained, uploading, or still
    /// being sent to a reader): body and metadata bytes plus
    /// [`MESSAGE_OVERHEAD`] each.
    pub fn mcast_bytes(&self) -> usize {
        self.mcast_bytes.get()
    }

    /// A reader asks for a message (`requested`: its sequence number, if any).
    pub fn mcast_get(
        &mut self,
        now: Millis,
        id: &[u8],
        requested: Option<u64>,
        reader: WaiterId,
    ) -> McastGet {
        let (key, expiry) = (self.id(id), self.settings.idle_expiry);
        self.mcasts
            .with(key, expiry, |c| c.get(now, requested, reader))
    }

    /// A live stream asks for its next message, at or after `from` (none:
    /// the next one published).
    pub fn mcast_stream_next(
        &mut self,
        now: Millis,
        id: &[u8],
        from: Option<u64>,
        reader: WaiterId,
    ) -> StreamNext {
        let (key, expiry) = (self.id(id), self.settings.idle_expiry);
        self.mcasts
            .with(key, expiry, |c| c.next_for_stream(now, from, reader))
    }

    pub fn mcast_leave(&mut self, now: Millis, id: &[u8], reader: WaiterId) -> bool {
        let expiry = self.settings.idle_expiry;
        self.mcasts
            .with_existing(self.id(id), expiry, |c| c.leave(now, reader))
            .unwrap_or(false)
    }

    /// Cost of the complete mcast messages retained, over all channels (visits
    /// every channel: for tests and model checks).
    pub fn mcast_held_bytes(&self) -> usize {
        self.mcasts.channels().map(McastChannel::held_bytes).sum()
    }

    // ---- sync ----

    pub fn sync_arrive(&mut self, now: Millis, id: &[u8], waiter: WaiterId) -> SyncArrival {
        let (key, expiry) = (self.id(id), self.settings.idle_expiry);
        self.syncs.with(key, expiry, |c| c.arrive(now, waiter))
    }

    pub fn sync_leave(&mut self, now: Millis, id: &[u8], waiter: WaiterId) -> bool {
        let expiry = self.settings.idle_expiry;
        self.syncs
            .with_existing(self.id(id), expiry, |c| c.leave(now, waiter))
            .unwrap_or(false)
    }

    // ---- proxy ----

    /// A client request for server `id`: handed to a waiting `SERVE`, or queued.
    /// Returns the job id given to it.
    pub fn proxy_request(
        &mut self,
        now: Millis,
        id: &[u8],
        client: WaiterId,
    ) -> (JobId, ProxyDispatch) {
        let (key, expiry) = (self.id(id), self.settings.idle_expiry);
        let rng = &mut self.rng;
        self.proxies.with(key, expiry, |proxy| {
            let mut job = next_job_id(rng);
            while proxy.has_job(&job) {
                job = next_job_id(rng);
            }
            (job, proxy.request(now, client, job))
        })
    }

    /// A `SERVE` is ready for the next job.
    pub fn proxy_serve<'w>(
        &mut self,
        now: Millis,
        id: &[u8],
        server: WaiterId,
        writer: impl Into<Writer<'w>>,
    ) -> Result<ProxyDispatch, ClaimError> {
        let (key, owner, secret, room) = self.writer(id, writer.into());
        let expiry = self.settings.idle_expiry;
        let (dispatch, claimed) = self.proxies.with_owner(key, expiry, owner, |c| {
            newly_claimed(c, |c| c.serve(now, server, secret, room.any()))
        });
        self.claimed(Method::Proxy, key, claimed);
        self.note(dispatch, room)
    }

    /// A job's request was fully delivered to its `SERVE`.
    pub fn proxy_delivered(&mut self, now: Millis, id: &[u8], job: &JobId) {
        let expiry = self.settings.idle_expiry;
        self.proxies
            .with_existing(self.id(id), expiry, |c| c.delivered(now, job));
    }

    /// A `SERVE` brings the result of `job`: returns the client to answer.
    pub fn proxy_result<'w>(
        &mut self,
        now: Millis,
        id: &[u8],
        writer: impl Into<Writer<'w>>,
        job: &JobId,
    ) -> Result<WaiterId, ResultError> {
        let (key, owner, secret, room) = self.writer(id, writer.into());
        let expiry = self.settings.idle_expiry;
        let (result, claimed) = self.proxies.with_owner(key, expiry, owner, |c| {
            newly_claimed(c, |c| c.result(now, secret, room.any(), job))
        });
        self.claimed(Method::Proxy, key, claimed);
        self.note(result, room)
    }

    pub fn proxy_client_leave(&mut self, now: Millis, id: &[u8], job: &JobId) -> bool {
        let expiry = self.settings.idle_expiry;
        self.proxies
            .with_existing(self.id(id), expiry, |c| c.client_leave(now, job))
            .unwrap_or(false)
    }

    pub fn proxy_server_leave(&mut self, now: Millis, id: &[u8], server: WaiterId) -> bool {
        let expiry = self.settings.idle_expiry;
        self.proxies
            .with_existing(self.id(id), expiry, |c| c.server_leave(now, server))
            .unwrap_or(false)
    }

    // ---- piping ----

    /// A Piping Server party asking for `n` receivers (at least 1) arrives on
    /// `path`. On `Established` the receivers are appended to `out`; the path
    /// stays taken until [`Relay::piping_finish`].
    pub fn piping_arrive(
        &mut self,
        now: Millis,
        path: &[u8],
        role: PipingRole,
        n: u64,
        waiter: WaiterId,
        out: &mut Vec<WaiterId>,
    ) -> Result<PipingArrival, PipingError> {
        let (key, expiry) = (self.id(path), self.settings.idle_expiry);
        self.pipings
            .with(key, expiry, |c| c.arrive(now, role, n, waiter, out))
    }

    /// A waiting party left. Returns whether it was waiting.
    pub fn piping_leave(&mut self, now: Millis, path: &[u8], waiter: WaiterId) -> bool {
        let expiry = self.settings.idle_expiry;
        self.pipings
            .with_existing(self.id(path), expiry, |c| c.leave(now, waiter))
            .unwrap_or(false)
    }

    /// The transfer on `path` ended, completed or not: the path is free.
    pub fn piping_finish(&mut self, now: Millis, path: &[u8]) {
        let expiry = self.settings.idle_expiry;
        self.pipings
            .with_existing(self.id(path), expiry, |c| c.finish(now));
    }

    // ---- inbox ----
    // The inbox table expires entries by the TTL (from their last write), not
    // by the idle expiry of the other methods.

    /// Whether a writer of inbox `id` presenting `secret` may store a message
    /// now (checked again when it is stored; nothing is claimed).
    pub fn inbox_check<'w>(
        &mut self,
        now: Millis,
        id: &[u8],
        writer: impl Into<Writer<'w>>,
    ) -> Result<(), ClaimError> {
        let (key, owner, secret, room) = self.writer(id, writer.into());
        let ttl = self.settings.inbox_ttl;
        let checked = self
            .inboxes
            .with_owner(key, ttl, owner, |c| c.check(now, ttl, secret, room.any()));
        self.note(checked, room)
    }

    /// Stores a message (`body`, `content_type`) in inbox `id`, replacing
    /// what it held. The waiters it wakes are appended to `woken`.
    pub fn inbox_post<'w>(
        &mut self,
        now: Millis,
        id: &[u8],
        writer: impl Into<Writer<'w>>,
        (body, content_type): inbox::MessageParts,
        woken: &mut InboxWoken,
    ) -> Result<Rc<InboxMessage>, ClaimError> {
        let (key, owner, secret, room) = self.writer(id, writer.into());
        let ttl = self.settings.inbox_ttl;
        let message = Rc::new(InboxMessage::new(body, content_type, &self.inbox_bytes));
        let (posted, claim) = self.inboxes.with_owner(key, ttl, owner, |c| {
            let posted = c.post(now, ttl, (secret, room.any()), Rc::clone(&message), woken);
            (posted, c.claim())
        });
        if posted.is_ok() {
            self.keep(|| Durable::InboxPut {
                inbox: key,
                secret: claim,
                message: Rc::clone(&message),
            });
        }
        self.note(posted, room).map(|()| message)
    }

    /// A reader asks for the message of inbox `id`.
    pub fn inbox_get(&mut self, now: Millis, id: &[u8], reader: WaiterId) -> InboxGet {
        let (key, ttl) = (self.id(id), self.settings.inbox_ttl);
        self.inboxes.with(key, ttl, |c| c.get(now, ttl, reader))
    }

    /// Acknowledges inbox `id`; its awaiters are appended to `woken`. False
    /// when there is no entry.
    pub fn inbox_ack(&mut self, now: Millis, id: &[u8], woken: &mut Vec<WaiterId>) -> bool {
        let acked = self.inbox_ack_only(now, id, woken);
        if acked {
            let inbox = self.id(id);
            self.keep(|| Durable::InboxAck { inbox });
        }
        acked
    }

    fn inbox_ack_only(&mut self, now: Millis, id: &[u8], woken: &mut Vec<WaiterId>) -> bool {
        let (key, ttl) = (self.id(id), self.settings.inbox_ttl);
        self.inboxes
            .with_existing(key, ttl, |c| c.ack(now, ttl, woken))
            .unwrap_or(false)
    }

    /// Whether inbox `id` is acknowledged; `None` without an entry.
    pub fn inbox_acked(&mut self, now: Millis, id: &[u8]) -> Option<bool> {
        let (key, ttl) = (self.id(id), self.settings.inbox_ttl);
        self.inboxes
            .with_existing(key, ttl, |c| c.acked(now, ttl))
            .flatten()
    }

    /// The writer waits for the acknowledgement of inbox `id`.
    pub fn inbox_await(&mut self, now: Millis, id: &[u8], awaiter: WaiterId) -> InboxAwait {
        let (key, ttl) = (self.id(id), self.settings.inbox_ttl);
        self.inboxes
            .with_existing(key, ttl, |c| c.await_ack(now, ttl, awaiter))
            .unwrap_or(InboxAwait::Unknown)
    }

    /// A waiting reader or awaiter left. Returns whether it was waiting.
    pub fn inbox_leave(&mut self, now: Millis, id: &[u8], waiter: WaiterId) -> bool {
        let (key, ttl) = (self.id(id), self.settings.inbox_ttl);
        self.inboxes
            .with_existing(key, ttl, |c| c.leave(now, ttl, waiter))
            .unwrap_or(false)
    }

    /// What stored inbox messages cost together (also those a reader still
    /// sends after its inbox dropped them).
    pub fn inbox_bytes(&self) -> usize {
        self.inbox_bytes.get()
    }

    // ---- all methods ----

    /// Removes every parked waiter of every channel (for shutdown) and returns them.
    pub fn drain_waiters(&mut self, out: &mut Vec<WaiterId>) {
        let expiry = self.settings.idle_expiry;
        self.links.drain(out, expiry);
        self.mcasts.drain(out, expiry);
        self.syncs.drain(out, expiry);
        self.proxies.drain(out, expiry);
        self.pipings.drain(out, expiry);
        self.inboxes.drain(out, self.settings.inbox_ttl);
    }

    /// The next time [`Relay::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Option<Millis> {
        [
            self.links.next_due(),
            self.mcasts.next_due(),
            self.syncs.next_due(),
            self.proxies.next_due(),
            self.pipings.next_due(),
            self.inboxes.next_due(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Forgets remembered channels that have been idle for the expiry time.
    /// Does a bounded amount of work per call (more is due at once when
    /// [`Relay::poll_timeout`] says so). Returns how many were forgotten.
    pub fn handle_timeout(&mut self, now: Millis) -> usize {
        let expiry = self.settings.idle_expiry;
        let mut budget = EXPIRE_BATCH;
        let mut forgotten = 0;
        let (looked, gone) = self.links.expire(now, expiry, budget);
        (budget, forgotten) = (budget - looked, forgotten + gone);
        let (looked, gone) = self.mcasts.expire(now, expiry, budget);
        (budget, forgotten) = (budget - looked, forgotten + gone);
        let (looked, gone) = self.syncs.expire(now, expiry, budget);
        (budget, forgotten) = (budget - looked, forgotten + gone);
        let (looked, gone) = self.proxies.expire(now, expiry, budget);
        (budget, forgotten) = (budget - looked, forgotten + gone);
        let (looked, gone) = self.pipings.expire(now, expiry, budget);
        (budget, forgotten) = (budget - looked, forgotten + gone);
        let (_, gone) = self.inboxes.expire(now, self.settings.inbox_ttl, budget);
        forgotten += gone;
        forgotten
    }

    /// Number of channels in memory (for tests, metrics and leak checks).
    pub fn channel_count(&self) -> usize {
        self.channels_by_method().0.iter().sum()
    }

    /// Channels in memory per method.
    pub fn channels_by_method(&self) -> PerMethod<usize> {
        PerMethod([
            self.links.len(),
            self.mcasts.len(),
            self.syncs.len(),
            self.proxies.len(),
            self.pipings.len(),
            self.inboxes.len(),
        ])
    }

    /// Channels holding a claim or messages (counted against `max_channels`).
    pub fn remembered_channels(&self) -> usize {
        self.links.remembered()
            + self.mcasts.remembered()
            + self.proxies.remembered()
            + self.inboxes.remembered()
    }

    /// Requests refused because the cap on remembered channels was reached.
    pub fn refused_no_room(&self) -> u64 {
        self.refused_no_room
    }

    /// Requests refused because their client address had its share of the
    /// remembered channels.
    pub fn refused_client(&self) -> u64 {
        self.refused_client
    }

    /// Client addresses with remembered channels (an address may count once
    /// per method).
    pub fn channel_owners(&self) -> usize {
        self.links.owners() + self.mcasts.owners() + self.proxies.owners() + self.inboxes.owners()
    }

    /// Requests parked per method.
    pub fn waiters_by_method(&self) -> PerMethod<usize> {
        PerMethod([
            self.links.waiting(),
            self.mcasts.waiting(),
            self.syncs.waiting(),
            self.proxies.waiting(),
            self.pipings.waiting(),
            self.inboxes.waiting(),
        ])
    }

    /// Number of requests parked on any channel.
    pub fn waiter_count(&self) -> usize {
        self.waiters_by_method().0.iter().sum()
    }
}

/// xorshift64*: job ids need to be unguessable by accident, not cryptographic
/// (the write secret is what guards a server id).
fn next_job_id(state: &mut u64) -> JobId {
    const ALPHABET: &[u8; 62] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut id = [0u8; 8];
    for byte in &mut id {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        let r = state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32;
        *byte = ALPHABET[(r % 62) as usize];
    }
    id
}

/// Shorthands for the core's tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::{Role, WaiterId};

    pub const P: Role = Role::Producer;
    pub const C: Role = Role::Consumer;

    pub fn w(n: usize) -> WaiterId {
        WaiterId(n)
    }
}

#[cfg(test)]
mod tests;
