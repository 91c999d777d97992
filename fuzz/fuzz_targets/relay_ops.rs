//! The sans-IO relay core driven by a sequence of operations, checked against a
//! model of who is parked where and of what each channel holds.
//!
//! The input is read as a byte stream: four bytes of settings (idle expiry,
//! mcast retention, start time; two bytes of hashing seed; mcast total, cap on
//! remembered channels `max_channels` (0, 1, 2, ... up to large), mcast message
//! limit), then operations (one byte picks the operation, the following bytes
//! its parameters). Single operations use three channel ids per method; a bulk
//! operation claims or publishes on hundreds of further ids at once (to fill the
//! cap and to have more channels due at once than one `handle_timeout` call
//! handles).
//!
//! The harness only makes calls the server could make: waiter ids are never
//! reused; an mcast upload is published only when `mcast_has_room` agreed and
//! its declared length is within the message limit (a fixed setting), takes no
//! bytes past its declared length, is aborted at once when an append fails, is
//! completed only with its whole declared body, and ends once; `proxy_delivered`
//! is reported once, for a dispatched job; after `drain_waiters` (shutdown)
//! nothing arrives any more. Leaves may name a waiter that is no longer parked,
//! or a channel it never waited on: the core reports whether it was waiting.
//!
//! The rules checked after every step:
//! - a channel exists exactly while it holds something: a waiter (link queue,
//!   mcast reader, sync waiter, proxy `SERVE` or job in any state), an upload in
//!   progress, a write-secret claim or mcast messages: `channel_count()` and
//!   `channels_by_method()` equal the model's; so do `waiter_count()` and
//!   `waiters_by_method()`;
//! - channels holding a claim or messages are remembered:
//!   `remembered_channels()` equals the model's and never exceeds
//!   `max_channels`; a request that would remember one more channel (a producer
//!   or `SERVE` claiming with a secret, a first mcast message) at the cap is
//!   refused with `NoRoom`, and `refused_no_room()` counts exactly those;
//! - every returned counterpart is exactly the one the model expects (first
//!   come first served), so a waiter that left or was already paired is never
//!   returned; leaving returns whether the waiter was still parked; write
//!   secrets (hashed by the core, compared in clear here) are honoured until the
//!   channel expired, and a claim is never dropped early;
//! - mcast accounting: a message costs its body, its metadata (method, query,
//!   content type) and `MESSAGE_OVERHEAD`; `mcast_bytes()` (every message) and
//!   `mcast_held_bytes()` (complete retained ones) equal the model's sums;
//!   `Full`, `TooLarge`, retention and `mcast_has_room` follow from those;
//! - expiry: while a remembered channel is idle (no waiter, no upload),
//!   `poll_timeout()` is due no later than its deadline (last activity plus the
//!   idle expiry), and it is `None` when nothing is remembered. On a clock step
//!   the harness calls `handle_timeout(now)` once, then again while
//!   `poll_timeout()` is not after `now`: no more calls than it takes to look at
//!   each remembered channel once at 256 a call, each forgetting at most 256 and
//!   returning how many it forgot. Afterwards every remembered idle channel past
//!   its deadline is gone, every other channel is still there, and
//!   `poll_timeout()` is after `now`. Where the rules leave open whether an
//!   operation counts as activity (a refused or failed one, a drain), the clock
//!   skips the ambiguous window.
//!
//! At the end everyone leaves, every upload ends, time passes beyond the idle
//! expiry, and nothing may remain.
#![no_main]

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use httprelay::relay::{
    AppendError, ClaimError, JobId, LinkArrival, McastGet, Message, MessageState, Millis,
    ProducerMeta, ProxyDispatch, PublishError, Relay, ResultError, Role, Settings, SyncArrival,
    WaiterId, MESSAGE_OVERHEAD,
};
use libfuzzer_sys::fuzz_target;

const IDS: [&[u8]; 3] = [b"a", b"b", b""];
const SECRETS: [&[u8]; 3] = [b"", b"s1", b"s2"];
const EXPIRIES: [Millis; 4] = [100, 1_000, 60_000, 20 * 60 * 1000];
const RETAINS: [usize; 4] = [0, 300, 700, 11_000_000];
const TOTALS: [usize; 8] = [0, 256, 300, 600, 1_000, 2_000, 5_000, 64 * 1024 * 1024];
const MAX_CHANNELS: [usize; 8] = [0, 1, 2, 3, 8, 257, 400, 32 * 1024];
const MAX_LENS: [usize; 4] = [0, 10, 40, usize::MAX];
const STEPS: [Millis; 8] = [0, 1, 7, 60, 999, 5_000, 61_000, 25 * 60 * 1000];
const BULK_COUNTS: [usize; 4] = [3, 40, 300, 520];

const METHODS: [&[u8]; 2] = [b"POST", b"PUT"];
const LONG_QUERY: &[u8] = b"q=0123456789012345678901234567890123456789012345678901234567";
const QUERIES: [&[u8]; 3] = [b"", b"n=1", LONG_QUERY];
const CONTENT_TYPES: [&[u8]; 2] = [b"", b"text/plain"];

/// What every mcast message costs beyond its body and metadata.
const OVERHEAD: usize = 256;
const _: () = assert!(MESSAGE_OVERHEAD == OVERHEAD);
/// Most channels one `handle_timeout` call forgets.
const EXPIRE_BATCH: usize = 256;

/// The id of channel `ch`: the first three are `IDS`, bulk ones are generated.
fn id(ch: usize) -> Cow<'static, [u8]> {
    match IDS.get(ch) {
        Some(id) => Cow::Borrowed(id),
        None => Cow::Owned(format!("bulk{ch}").into_bytes()),
    }
}

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn pick<T: Copy>(&mut self, from: &[T]) -> Option<T> {
        Some(from[usize::from(self.byte()?) % from.len()])
    }
}

/// When a channel was last active: `sure` counts operations that certainly
/// refresh it (arrivals, successful leaves, progress), `maybe` also those whose
/// effect on idleness the rules leave open (a failed leave, a refused secret, a
/// result for an unknown job, a drain).
#[derive(Clone, Copy)]
struct Activity {
    sure: Millis,
    maybe: Millis,
}

impl Activity {
    fn touch(&mut self, now: Millis, sure: bool) {
        self.maybe = now;
        if sure {
            self.sure = now;
        }
    }
}

/// What the rules need to know of a channel of any method.
trait State: Default {
    /// Requests parked (what `waiter_count` counts).
    fn waiting(&self) -> usize;
    /// A waiter or an upload in progress: never expires.
    fn busy(&self) -> bool;
    /// A claim or mcast messages: counted against `max_channels`.
    fn remembered(&self) -> bool;
}

#[derive(Default)]
struct LinkM {
    queue: VecDeque<(WaiterId, Role)>,
    secret: Option<Vec<u8>>,
}

impl State for LinkM {
    fn waiting(&self) -> usize {
        self.queue.len()
    }
    fn busy(&self) -> bool {
        !self.queue.is_empty()
    }
    fn remembered(&self) -> bool {
        self.secret.is_some()
    }
}

#[derive(Default)]
struct SyncM {
    waiting: Option<WaiterId>,
}

impl State for SyncM {
    fn waiting(&self) -> usize {
        usize::from(self.waiting.is_some())
    }
    fn busy(&self) -> bool {
        self.waiting.is_some()
    }
    fn remembered(&self) -> bool {
        false
    }
}

struct Msg {
    message: Rc<Message>,
    complete: bool,
}

/// What holding a message costs: body, metadata and the overhead.
fn cost(m: &Message) -> usize {
    m.len() + m.meta.method.len() + m.meta.query.len() + m.meta.content_type.len() + OVERHEAD
}

#[derive(Default)]
struct McastM {
    /// Retained and uploading messages, in sequence order.
    messages: VecDeque<Msg>,
    next_seq: u64,
    waiting: Vec<WaiterId>,
    secret: Option<Vec<u8>>,
}

impl McastM {
    /// Cost of the complete messages retained.
    fn held(&self) -> usize {
        let complete = self.messages.iter().filter(|m| m.complete);
        complete.map(|m| cost(&m.message)).sum()
    }
}

impl State for McastM {
    fn waiting(&self) -> usize {
        self.waiting.len()
    }
    fn busy(&self) -> bool {
        !self.waiting.is_empty() || self.messages.iter().any(|m| !m.complete)
    }
    fn remembered(&self) -> bool {
        !self.messages.is_empty() || self.secret.is_some()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum JobState {
    Queued,
    Dispatched,
    AwaitingResult,
}

#[derive(Default)]
struct ProxyM {
    servers: VecDeque<WaiterId>,
    queued: VecDeque<JobId>,
    jobs: HashMap<JobId, (WaiterId, JobState)>,
    secret: Option<Vec<u8>>,
}

impl State for ProxyM {
    fn waiting(&self) -> usize {
        let parked_jobs = self.jobs.values().filter(|j| j.1 != JobState::Dispatched);
        self.servers.len() + parked_jobs.count()
    }
    fn busy(&self) -> bool {
        !self.servers.is_empty() || !self.jobs.is_empty()
    }
    fn remembered(&self) -> bool {
        self.secret.is_some()
    }
}

struct Chan<T> {
    active: Activity,
    state: T,
}

/// Channels of one method, by channel number (see [`id`]); present iff the
/// relay has them.
struct Channels<T>(HashMap<usize, Chan<T>>);

impl<T: State> Channels<T> {
    /// The channel an operation that creates channels works on.
    fn entry(&mut self, now: Millis, ch: usize) -> &mut Chan<T> {
        self.0.entry(ch).or_insert_with(|| Chan {
            active: Activity {
                sure: now,
                maybe: now,
            },
            state: T::default(),
        })
    }
    /// Activity on an existing channel.
    fn touch(&mut self, now: Millis, ch: usize, sure: bool) {
        if let Some(c) = self.0.get_mut(&ch) {
            c.active.touch(now, sure);
        }
    }
    fn get(&mut self, ch: usize) -> Option<&mut T> {
        self.0.get_mut(&ch).map(|c| &mut c.state)
    }
    /// A channel that holds nothing is removed at once.
    fn settle(&mut self) {
        self.0.retain(|_, c| c.state.busy() || c.state.remembered());
    }
    fn settle_one(&mut self, ch: usize) {
        if self
            .0
            .get(&ch)
            .is_some_and(|c| !c.state.busy() && !c.state.remembered())
        {
            self.0.remove(&ch);
        }
    }
    fn waiting(&self) -> usize {
        self.0.values().map(|c| c.state.waiting()).sum()
    }
    fn remembered(&self) -> usize {
        self.0.values().filter(|c| c.state.remembered()).count()
    }
    /// The activity of every remembered idle channel (those that may expire).
    fn expiring(&self) -> impl Iterator<Item = &Activity> + '_ {
        let idle = self
            .0
            .values()
            .filter(|c| c.state.remembered() && !c.state.busy());
        idle.map(|c| &c.active)
    }
    /// Forgets remembered idle channels idle since `now - expiry` or longer,
    /// showing each to `on_forget`; returns how many.
    fn expire(&mut self, now: Millis, expiry: Millis, mut on_forget: impl FnMut(&T)) -> usize {
        let before = self.0.len();
        self.0.retain(|_, c| {
            let due = c.state.remembered() && !c.state.busy() && now - c.active.sure >= expiry;
            if due {
                on_forget(&c.state);
            }
            !due
        });
        before - self.0.len()
    }
}

impl<T> Default for Channels<T> {
    fn default() -> Self {
        Channels(HashMap::new())
    }
}

/// Whether a writer presenting `presented` is admitted by `claimed`, claiming
/// the channel if it presents a secret and there is room for one more
/// remembered channel.
fn admit(claimed: &mut Option<Vec<u8>>, presented: &[u8], room: bool) -> Result<(), ClaimError> {
    match claimed {
        Some(c) if c == presented => Ok(()),
        Some(_) => Err(ClaimError::WrongSecret),
        None if presented.is_empty() => Ok(()),
        None if !room => Err(ClaimError::NoRoom),
        None => {
            *claimed = Some(presented.to_vec());
            Ok(())
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Link,
    Mcast,
    Sync,
    ProxyServer,
}

/// An mcast message still uploading.
struct Upload {
    ch: usize,
    message: Rc<Message>,
    declared: Option<u64>,
}

struct Model {
    relay: Relay,
    expiry: Millis,
    retain: usize,
    total: usize,
    max_channels: usize,
    max_len: usize,
    now: Millis,
    next_waiter: usize,
    links: Channels<LinkM>,
    mcasts: Channels<McastM>,
    syncs: Channels<SyncM>,
    proxies: Channels<ProxyM>,
    /// Remembered channels and mcast bytes, kept up to date by the operations
    /// (bulk operations make thousands) and recounted by every check.
    remembered: usize,
    mcast_bytes: usize,
    refused_no_room: u64,
    /// `drain_waiters` was called: the server is shutting down.
    shut_down: bool,
    /// Every waiter ever created (by kind and channel), for leave operations.
    waiters: Vec<(WaiterId, Kind, usize)>,
    /// Every proxy job ever created.
    jobs: Vec<(usize, JobId)>,
    uploading: Vec<Upload>,
}

impl Model {
    fn fresh_id(&mut self) -> WaiterId {
        let w = WaiterId(self.next_waiter);
        self.next_waiter += 1;
        w
    }

    fn new_waiter(&mut self, kind: Kind, ch: usize) -> WaiterId {
        let w = self.fresh_id();
        self.waiters.push((w, kind, ch));
        w
    }

    fn parked(&self) -> Vec<WaiterId> {
        let mut all = Vec::new();
        for c in self.links.0.values() {
            all.extend(c.state.queue.iter().map(|&(w, _)| w));
        }
        for c in self.mcasts.0.values() {
            all.extend(c.state.waiting.iter().copied());
        }
        for c in self.syncs.0.values() {
            all.extend(c.state.waiting);
        }
        for c in self.proxies.0.values() {
            all.extend(c.state.servers.iter().copied());
            all.extend(
                c.state
                    .jobs
                    .values()
                    .filter(|(_, s)| *s != JobState::Dispatched)
                    .map(|&(w, _)| w),
            );
        }
        all
    }

    /// What every message a channel owns costs, retained or uploading (counted
    /// afresh; `self.mcast_bytes` is the running count).
    fn count_mcast_bytes(&self) -> usize {
        let messages = self.mcasts.0.values().flat_map(|c| &c.state.messages);
        messages.map(|m| cost(&m.message)).sum()
    }

    /// Remembered channels, counted afresh (`self.remembered` is the running count).
    fn count_remembered(&self) -> usize {
        self.links.remembered() + self.mcasts.remembered() + self.proxies.remembered()
    }

    /// Whether one more channel may be remembered.
    fn room(&self) -> bool {
        self.remembered < self.max_channels
    }

    /// The earliest time a remembered idle channel is certainly due to expire.
    fn deadline(&self) -> Option<Millis> {
        let all = (self.links.expiring())
            .chain(self.mcasts.expiring())
            .chain(self.proxies.expiring());
        all.map(|a| a.maybe + self.expiry).min()
    }

    fn settle(&mut self) {
        self.links.settle();
        self.mcasts.settle();
        self.syncs.settle();
        self.proxies.settle();
    }

    fn check(&self) {
        let waiters = [
            self.links.waiting(),
            self.mcasts.waiting(),
            self.syncs.waiting(),
            self.proxies.waiting(),
        ];
        assert_eq!(
            self.relay.waiters_by_method().0,
            waiters,
            "waiters_by_method"
        );
        assert_eq!(
            self.relay.waiter_count(),
            self.parked().len(),
            "waiter_count"
        );
        let channels = [
            self.links.0.len(),
            self.mcasts.0.len(),
            self.syncs.0.len(),
            self.proxies.0.len(),
        ];
        assert_eq!(
            self.relay.channels_by_method().0,
            channels,
            "channels_by_method"
        );
        assert_eq!(
            self.relay.channel_count(),
            channels.iter().sum(),
            "channel_count"
        );
        let remembered = self.count_remembered();
        assert_eq!(
            self.remembered, remembered,
            "the model's running count of remembered channels"
        );
        assert_eq!(
            self.relay.remembered_channels(),
            remembered,
            "remembered_channels"
        );
        assert!(
            remembered <= self.max_channels,
            "more remembered channels than the cap"
        );
        assert_eq!(
            self.relay.refused_no_room(),
            self.refused_no_room,
            "refused_no_room"
        );

        let held: usize = self.mcasts.0.values().map(|c| c.state.held()).sum();
        assert_eq!(self.relay.mcast_held_bytes(), held, "mcast_held_bytes");
        let bytes = self.count_mcast_bytes();
        assert_eq!(
            self.mcast_bytes, bytes,
            "the model's running count of mcast bytes"
        );
        assert_eq!(self.relay.mcast_bytes(), bytes, "mcast_bytes");
        for len in [None, Some(0), Some(1), Some(7), Some(u64::MAX)] {
            let wanted = len.unwrap_or(0).saturating_add(OVERHEAD as u64);
            let room = (bytes as u64).saturating_add(wanted) <= self.total as u64;
            assert_eq!(
                self.relay.mcast_has_room(len),
                room,
                "mcast_has_room({len:?})"
            );
        }
        for u in &self.uploading {
            assert_eq!(u.message.state(), MessageState::Uploading);
            assert!(u.declared.is_none_or(|n| u.message.len() as u64 <= n));
        }

        match (self.deadline(), self.relay.poll_timeout()) {
            (Some(deadline), None) => {
                panic!("a remembered channel is idle until {deadline} but no timeout is due")
            }
            (Some(deadline), Some(due)) => {
                assert!(
                    due <= deadline,
                    "timeout due {due} after the deadline {deadline}"
                )
            }
            (None, Some(due)) if remembered == 0 => {
                panic!("timeout due {due} but nothing is remembered")
            }
            _ => {}
        }
    }

    // ---- link ----

    fn link_arrive(&mut self, ch: usize, role: Role, secret: &[u8]) -> WaiterId {
        let w = self.new_waiter(Kind::Link, ch);
        let (now, room) = (self.now, self.room());
        let got = self.relay.link_arrive(now, &id(ch), role, w, secret);
        let c = self.links.entry(now, ch);
        if role == Role::Producer {
            let claimed = c.state.secret.is_some();
            if let Err(e) = admit(&mut c.state.secret, secret, room) {
                assert_eq!(got, Err(e), "link producer with secret {secret:?}");
                c.active.touch(now, false);
                self.refused_no_room += u64::from(e == ClaimError::NoRoom);
                return w;
            }
            self.remembered += usize::from(!claimed && c.state.secret.is_some());
        }
        c.active.touch(now, true);
        let queue = &mut c.state.queue;
        let expected = match queue.front() {
            Some(&(head, r)) if r != role => {
                queue.pop_front();
                LinkArrival::Paired(head)
            }
            _ => {
                queue.push_back((w, role));
                LinkArrival::Parked
            }
        };
        assert_eq!(got, Ok(expected), "link arrival");
        w
    }

    fn link_leave(&mut self, ch: usize, w: WaiterId) {
        let now = self.now;
        let got = self.relay.link_leave(now, &id(ch), w);
        let expected = self.links.get(ch).is_some_and(|c| {
            let at = c.queue.iter().position(|&(q, _)| q == w);
            at.map(|at| c.queue.remove(at)).is_some()
        });
        assert_eq!(got, expected, "link_leave({w:?}) on channel {ch}");
        self.links.touch(now, ch, expected);
    }

    // ---- sync ----

    fn sync_arrive(&mut self, ch: usize) {
        let w = self.new_waiter(Kind::Sync, ch);
        let now = self.now;
        let got = self.relay.sync_arrive(now, &id(ch), w);
        let c = self.syncs.entry(now, ch);
        c.active.touch(now, true);
        let expected = match c.state.waiting.take() {
            Some(peer) => SyncArrival::Paired(peer),
            None => {
                c.state.waiting = Some(w);
                SyncArrival::Parked
            }
        };
        assert_eq!(got, expected, "sync arrival");
    }

    fn sync_leave(&mut self, ch: usize, w: WaiterId) {
        let now = self.now;
        let got = self.relay.sync_leave(now, &id(ch), w);
        let expected = self
            .syncs
            .get(ch)
            .is_some_and(|c| c.waiting == Some(w) && c.waiting.take().is_some());
        assert_eq!(got, expected, "sync_leave({w:?}) on channel {ch}");
        self.syncs.touch(now, ch, expected);
    }

    // ---- mcast ----

    /// A producer starts a message with the declared body length (`None`:
    /// chunked) and metadata picked by `meta`.
    fn mcast_publish(&mut self, ch: usize, secret: &[u8], declared: Option<u64>, meta: u8) {
        // What the server refuses before asking the core: a declared length over
        // the message limit, or one the total has no room for.
        if declared.is_some_and(|n| n > self.max_len as u64) {
            return;
        }
        if !self.relay.mcast_has_room(declared) {
            return;
        }
        let now = self.now;
        let meta = ProducerMeta {
            method: METHODS[usize::from(meta & 1)].into(),
            query: QUERIES[usize::from(meta >> 1 & 3) % QUERIES.len()].into(),
            content_type: CONTENT_TYPES[usize::from(meta >> 3 & 1)].into(),
            content_length: declared,
            ..ProducerMeta::default()
        };
        let meta_bytes = meta.method.len() + meta.query.len() + meta.content_type.len();
        let mut woken = vec![WaiterId(usize::MAX)];
        let got = self
            .relay
            .mcast_publish(now, &id(ch), secret, meta, &mut woken);
        assert_eq!(
            woken.remove(0),
            WaiterId(usize::MAX),
            "woken must be appended to"
        );
        if self.mcast_bytes + OVERHEAD + meta_bytes > self.total {
            assert_eq!(
                got.err(),
                Some(PublishError::Full),
                "publish past the total"
            );
            assert!(woken.is_empty(), "a refused publish woke readers");
            self.mcasts.touch(now, ch, false);
            return;
        }
        let room = self.room();
        let c = self.mcasts.entry(now, ch);
        // A first message makes the channel remembered, as a claim does.
        let remembered = c.state.remembered();
        let room = room || remembered;
        let admitted = admit(&mut c.state.secret, secret, room).and_then(|()| {
            if room {
                Ok(())
            } else {
                Err(ClaimError::NoRoom)
            }
        });
        if let Err(e) = admitted {
            assert_eq!(
                got.err(),
                Some(PublishError::Claim(e)),
                "publish with secret {secret:?}"
            );
            assert!(woken.is_empty(), "a refused publish woke readers");
            c.active.touch(now, false);
            self.refused_no_room += u64::from(e == ClaimError::NoRoom);
            return;
        }
        c.active.touch(now, true);
        let message = got.expect("publish admitted");
        assert_eq!(message.seq, c.state.next_seq, "sequence numbers");
        assert_eq!(message.state(), MessageState::Uploading);
        assert!(message.is_empty());
        assert_eq!(
            message.cost(),
            OVERHEAD + meta_bytes,
            "cost of an empty message"
        );
        c.state.next_seq += 1;
        self.remembered += usize::from(!remembered);
        self.mcast_bytes += OVERHEAD + meta_bytes;
        assert_eq!(woken, c.state.waiting, "woken readers");
        c.state.waiting.clear();
        c.state.messages.push_back(Msg {
            message: Rc::clone(&message),
            complete: false,
        });
        self.uploading.push(Upload {
            ch,
            message,
            declared,
        });
    }

    /// Body bytes arrive for the upload `at` (never past its declared length).
    /// When the core refuses them the server aborts the upload at once, as
    /// happens here; returns whether they were taken.
    fn mcast_append(&mut self, at: usize, bytes: &[u8]) -> bool {
        let Upload {
            message, declared, ..
        } = &self.uploading[at];
        let message = Rc::clone(message);
        let before = message.len();
        let room_left = declared.map_or(usize::MAX, |n| n as usize - before);
        let bytes = &bytes[..bytes.len().min(room_left)];
        let full = self.mcast_bytes + bytes.len() > self.total;
        let got = self.relay.mcast_append(&message, bytes, self.max_len);
        let expected = if full {
            Err(AppendError::Full)
        } else if before + bytes.len() > self.max_len {
            Err(AppendError::TooLarge)
        } else {
            Ok(())
        };
        assert_eq!(got, expected, "append of {} bytes to {before}", bytes.len());
        if got.is_err() {
            assert_eq!(message.len(), before, "a refused append added bytes");
            self.mcast_finish(at, false);
            return false;
        }
        assert_eq!(message.len(), before + bytes.len());
        message.with_bytes(before, |tail| assert_eq!(tail, bytes));
        self.mcast_bytes += bytes.len();
        true
    }

    /// The upload `at` ends, once: completed (after the rest of its declared
    /// body, which may be refused and abort it) or aborted.
    fn mcast_finish(&mut self, at: usize, complete: bool) {
        if complete {
            let Upload {
                message, declared, ..
            } = &self.uploading[at];
            if let Some(rest) = declared.map(|n| n as usize - message.len()) {
                if rest > 0 && !self.mcast_append(at, &vec![0xab; rest]) {
                    return;
                }
            }
        }
        let Upload { ch, message, .. } = self.uploading.swap_remove(at);
        let (now, retain) = (self.now, self.retain);
        let c = self
            .mcasts
            .get(ch)
            .expect("an uploading message keeps its channel");
        let at = c
            .messages
            .iter()
            .position(|m| Rc::ptr_eq(&m.message, &message))
            .expect("an uploading message is retained");
        if complete {
            self.relay.mcast_complete(now, &id(ch), &message);
            assert_eq!(message.state(), MessageState::Complete);
            c.messages[at].complete = true;
            // The oldest complete messages go while over budget; the newest
            // and the one just completed stay.
            while c.held() > retain {
                let Some(oldest) = c.messages.iter().position(|m| m.complete) else {
                    break;
                };
                if oldest + 1 == c.messages.len()
                    || Rc::ptr_eq(&c.messages[oldest].message, &message)
                {
                    break;
                }
                let dropped = c.messages.remove(oldest).expect("in range");
                self.mcast_bytes -= cost(&dropped.message);
            }
        } else {
            self.relay.mcast_abort(now, &id(ch), &message);
            assert_eq!(message.state(), MessageState::Aborted);
            c.messages.remove(at);
            self.mcast_bytes -= cost(&message);
            self.remembered -= usize::from(!c.remembered());
        }
        self.mcasts.touch(now, ch, true);
    }

    fn mcast_get(&mut self, ch: usize, requested: Option<u64>) {
        let w = self.new_waiter(Kind::Mcast, ch);
        let now = self.now;
        let got = self.relay.mcast_get(now, &id(ch), requested, w);
        let c = self.mcasts.entry(now, ch);
        c.active.touch(now, true);
        let c = &mut c.state;
        let expected = match requested {
            None => c.messages.back(),
            Some(seq) if seq >= c.next_seq => None,
            Some(seq) => c.messages.iter().find(|m| m.message.seq >= seq),
        };
        match (got, expected) {
            (McastGet::Message(m), Some(e)) => assert!(
                Rc::ptr_eq(&m, &e.message),
                "mcast_get({requested:?}) gave seq {} instead of {}",
                m.seq,
                e.message.seq
            ),
            (McastGet::Parked, None) => c.waiting.push(w),
            (McastGet::Message(m), None) => {
                panic!(
                    "mcast_get({requested:?}) gave seq {} but should wait",
                    m.seq
                )
            }
            (McastGet::Parked, Some(e)) => {
                panic!(
                    "mcast_get({requested:?}) waits but seq {} is there",
                    e.message.seq
                )
            }
        }
    }

    fn mcast_leave(&mut self, ch: usize, w: WaiterId) {
        let now = self.now;
        let got = self.relay.mcast_leave(now, &id(ch), w);
        let expected = self.mcasts.get(ch).is_some_and(|c| {
            let before = c.waiting.len();
            c.waiting.retain(|&r| r != w);
            before != c.waiting.len()
        });
        assert_eq!(got, expected, "mcast_leave({w:?}) on channel {ch}");
        self.mcasts.touch(now, ch, expected);
    }

    // ---- proxy ----

    fn proxy_request(&mut self, ch: usize) {
        // A client leaves by its job id, not its waiter id.
        let w = self.fresh_id();
        let now = self.now;
        let (job, got) = self.relay.proxy_request(now, &id(ch), w);
        assert!(job.iter().all(u8::is_ascii_alphanumeric), "job id {job:?}");
        let c = self.proxies.entry(now, ch);
        c.active.touch(now, true);
        let c = &mut c.state;
        assert!(
            !c.jobs.contains_key(&job),
            "job id {job:?} reused while live"
        );
        let expected = match c.servers.pop_front() {
            Some(server) => {
                c.jobs.insert(job, (w, JobState::Dispatched));
                ProxyDispatch::Dispatched {
                    job,
                    counterpart: server,
                }
            }
            None => {
                c.jobs.insert(job, (w, JobState::Queued));
                c.queued.push_back(job);
                ProxyDispatch::Parked
            }
        };
        assert_eq!(got, expected, "proxy request");
        self.jobs.push((ch, job));
    }

    fn proxy_serve(&mut self, ch: usize, secret: &[u8]) -> WaiterId {
        let w = self.new_waiter(Kind::ProxyServer, ch);
        let (now, room) = (self.now, self.room());
        let got = self.relay.proxy_serve(now, &id(ch), w, secret);
        let c = self.proxies.entry(now, ch);
        let claimed = c.state.secret.is_some();
        if let Err(e) = admit(&mut c.state.secret, secret, room) {
            assert_eq!(got, Err(e), "SERVE with secret {secret:?}");
            c.active.touch(now, false);
            self.refused_no_room += u64::from(e == ClaimError::NoRoom);
            return w;
        }
        self.remembered += usize::from(!claimed && c.state.secret.is_some());
        c.active.touch(now, true);
        let c = &mut c.state;
        let expected = match c.queued.pop_front() {
            Some(job) => {
                let entry = c.jobs.get_mut(&job).expect("queued jobs exist");
                entry.1 = JobState::Dispatched;
                ProxyDispatch::Dispatched {
                    job,
                    counterpart: entry.0,
                }
            }
            None => {
                c.servers.push_back(w);
                ProxyDispatch::Parked
            }
        };
        assert_eq!(got, Ok(expected), "serve");
        w
    }

    fn proxy_delivered(&mut self, pick: usize) {
        let Some(&(ch, job)) = self.jobs.get(pick % self.jobs.len().max(1)) else {
            return;
        };
        let Some(c) = self.proxies.get(ch) else {
            return;
        };
        // The server reports each job it handed out once, when delivered.
        let Some(entry) = c.jobs.get_mut(&job).filter(|j| j.1 == JobState::Dispatched) else {
            return;
        };
        entry.1 = JobState::AwaitingResult;
        let now = self.now;
        self.relay.proxy_delivered(now, &id(ch), &job);
        self.proxies.touch(now, ch, true);
    }

    /// A `SERVE` brings a result for a job of the channel, or (`bogus`) for a
    /// job id nobody was given.
    fn proxy_result(&mut self, pick: usize, secret: &[u8], bogus: bool) {
        let Some(&(ch, job)) = self.jobs.get(pick % self.jobs.len().max(1)) else {
            return;
        };
        let job = if bogus { *b"--none--" } else { job };
        let (now, room) = (self.now, self.room());
        let got = self.relay.proxy_result(now, &id(ch), secret, &job);
        // An arrival on its channel: it may create it and claim its secret.
        let c = self.proxies.entry(now, ch);
        c.active.touch(now, false);
        let claimed = c.state.secret.is_some();
        if let Err(e) = admit(&mut c.state.secret, secret, room) {
            assert_eq!(
                got,
                Err(ResultError::Claim(e)),
                "result with secret {secret:?}"
            );
            self.refused_no_room += u64::from(e == ClaimError::NoRoom);
            return;
        }
        self.remembered += usize::from(!claimed && c.state.secret.is_some());
        match c.state.jobs.get(&job) {
            Some(&(client, JobState::AwaitingResult)) => {
                c.state.jobs.remove(&job);
                assert_eq!(got, Ok(client), "result answers its client");
                c.active.touch(now, true);
            }
            _ => assert_eq!(got, Err(ResultError::UnknownJob), "result for {job:?}"),
        }
    }

    fn proxy_client_leave(&mut self, pick: usize) {
        let Some(&(ch, job)) = self.jobs.get(pick % self.jobs.len().max(1)) else {
            return;
        };
        let now = self.now;
        let got = self.relay.proxy_client_leave(now, &id(ch), &job);
        let expected = self.proxies.get(ch).is_some_and(|c| {
            c.queued.retain(|j| *j != job);
            c.jobs.remove(&job).is_some()
        });
        assert_eq!(got, expected, "proxy_client_leave({job:?})");
        self.proxies.touch(now, ch, expected);
    }

    fn proxy_server_leave(&mut self, ch: usize, w: WaiterId) {
        let now = self.now;
        let got = self.relay.proxy_server_leave(now, &id(ch), w);
        let expected = self.proxies.get(ch).is_some_and(|c| {
            let before = c.servers.len();
            c.servers.retain(|&s| s != w);
            before != c.servers.len()
        });
        assert_eq!(got, expected, "proxy_server_leave({w:?}) on channel {ch}");
        self.proxies.touch(now, ch, expected);
    }

    /// A waiter leaves (or, with `other_channel`, a leave names a channel it
    /// never waited on: the core must report it was not waiting there).
    fn leave(&mut self, pick: usize, other_channel: bool) {
        let Some(&(w, kind, ch)) = self.waiters.get(pick % self.waiters.len().max(1)) else {
            return;
        };
        let ch = if other_channel {
            (ch + 1) % IDS.len()
        } else {
            ch
        };
        self.leave_exact(w, kind, ch);
    }

    fn leave_exact(&mut self, w: WaiterId, kind: Kind, ch: usize) {
        match kind {
            Kind::Link => self.link_leave(ch, w),
            Kind::Mcast => self.mcast_leave(ch, w),
            Kind::Sync => self.sync_leave(ch, w),
            Kind::ProxyServer => self.proxy_server_leave(ch, w),
        }
    }

    // ---- many channels ----

    /// `count` channels from `first` on each get a claim (link producers, or
    /// `SERVE`s, with `secret`) or a message (mcast), and are left idle.
    fn bulk(&mut self, kind: u8, first: usize, count: usize, secret: &[u8]) {
        let waiters = self.waiters.len();
        for ch in first..first + count {
            match kind % 3 {
                0 => {
                    let w = self.link_arrive(ch, Role::Producer, secret);
                    if self
                        .links
                        .get(ch)
                        .is_some_and(|c| c.queue.iter().any(|q| q.0 == w))
                    {
                        self.link_leave(ch, w);
                    }
                    self.links.settle_one(ch);
                }
                1 => {
                    let uploads = self.uploading.len();
                    self.mcast_publish(ch, secret, Some(0), 0);
                    if self.uploading.len() > uploads {
                        self.mcast_finish(uploads, true);
                    }
                    self.mcasts.settle_one(ch);
                }
                _ => {
                    let w = self.proxy_serve(ch, secret);
                    if self.proxies.get(ch).is_some_and(|c| c.servers.contains(&w)) {
                        self.proxy_server_leave(ch, w);
                    }
                    self.proxies.settle_one(ch);
                }
            }
        }
        // They all left: nothing for later leave operations to pick.
        self.waiters.truncate(waiters);
    }

    // ---- all methods ----

    fn drain(&mut self) {
        let mut out = Vec::new();
        self.relay.drain_waiters(&mut out);
        let mut expected = self.parked();
        out.sort();
        expected.sort();
        assert_eq!(out, expected, "drain_waiters");
        let now = self.now;
        for c in self.links.0.values_mut() {
            c.state.queue.clear();
            c.active.touch(now, false);
        }
        for c in self.mcasts.0.values_mut() {
            c.state.waiting.clear();
            c.active.touch(now, false);
        }
        for c in self.syncs.0.values_mut() {
            c.state.waiting = None;
            c.active.touch(now, false);
        }
        for c in self.proxies.0.values_mut() {
            c.state.servers.clear();
            c.state.queued.clear();
            c.state.jobs.retain(|_, j| j.1 == JobState::Dispatched);
            c.active.touch(now, false);
        }
        self.shut_down = true;
    }

    /// Moves the clock forward by at least `step` and handles the timeout as the
    /// server does: once, then again while more is due.
    fn advance(&mut self, step: Millis) {
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
        let expected = self.links.expire(now, self.expiry, |_| ())
            + self.mcasts.expire(now, self.expiry, |c| freed += c.held())
            + self.proxies.expire(now, self.expiry, |_| ());
        assert_eq!(forgotten, expected, "channels forgotten at {now}");
        self.remembered -= expected;
        self.mcast_bytes -= freed;
    }

    /// Everyone leaves, every upload ends, time passes: nothing may remain.
    fn wind_down(&mut self) {
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
        self.check();
        assert_eq!(
            self.relay.waiter_count(),
            0,
            "waiters left after everyone left"
        );
        self.advance(self.expiry + 60_001);
        self.check();
        assert_eq!(self.relay.channel_count(), 0, "channel leak");
        assert_eq!(self.relay.remembered_channels(), 0);
        assert_eq!(self.relay.mcast_bytes(), 0);
        assert_eq!(
            self.relay.poll_timeout(),
            None,
            "a timeout with no channel left"
        );
    }
}

fn setup(input: &mut Input) -> Option<Model> {
    let settings_byte = input.byte()?;
    let seed = u64::from(input.byte()?) << 8 | u64::from(input.byte()?);
    let limits = input.byte()?;
    let expiry = EXPIRIES[usize::from(settings_byte & 3)];
    let retain = RETAINS[usize::from(settings_byte >> 2 & 3)];
    let total = TOTALS[usize::from(limits & 7)];
    let max_channels = MAX_CHANNELS[usize::from(limits >> 3 & 7)];
    let max_len = MAX_LENS[usize::from(limits >> 6)];
    Some(Model {
        relay: Relay::new(Settings {
            idle_expiry: expiry,
            mcast_retain: retain,
            mcast_total: total,
            max_channels,
            seed: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        }),
        expiry,
        retain,
        total,
        max_channels,
        max_len,
        now: u64::from(settings_byte >> 4) * 1_000,
        next_waiter: 0,
        links: Channels::default(),
        mcasts: Channels::default(),
        syncs: Channels::default(),
        proxies: Channels::default(),
        remembered: 0,
        mcast_bytes: 0,
        refused_no_room: 0,
        shut_down: false,
        waiters: Vec::new(),
        jobs: Vec::new(),
        uploading: Vec::new(),
    })
}

/// Runs operations until the input runs out (`None` mid-operation).
fn run(m: &mut Model, input: &mut Input) -> Option<()> {
    for _ in 0..2_000 {
        let op = input.byte()?;
        // After a shutdown nothing arrives any more; what is under way ends.
        let arrivals = !m.shut_down;
        match op % 20 {
            0 | 1 => {
                let ch = input.pick(&[0, 1, 2])?;
                let role = input.pick(&[Role::Producer, Role::Consumer])?;
                let secret = input.pick(&SECRETS)?;
                if arrivals {
                    m.link_arrive(ch, role, secret);
                }
            }
            2 | 3 => {
                let pick = usize::from(input.byte()?);
                m.leave(pick, op >= 128);
            }
            4 => {
                let ch = input.pick(&[0, 1, 2])?;
                let secret = input.pick(&SECRETS)?;
                let length = input.byte()?;
                let meta = input.byte()?;
                let declared = (length < 128).then_some(u64::from(length % 48));
                if arrivals {
                    m.mcast_publish(ch, secret, declared, meta);
                }
            }
            5 => {
                let pick = usize::from(input.byte()?);
                let len = usize::from(input.byte()? % 16);
                let bytes: Vec<u8> = (0..len).map(|i| i as u8 ^ op).collect();
                if !m.uploading.is_empty() {
                    m.mcast_append(pick % m.uploading.len(), &bytes);
                }
            }
            6 => {
                let pick = usize::from(input.byte()?);
                if !m.uploading.is_empty() {
                    m.mcast_finish(pick % m.uploading.len(), op < 128);
                }
            }
            7 => {
                let ch = input.pick(&[0, 1, 2])?;
                let r = input.byte()?;
                let requested = (r < 200).then_some(u64::from(r % 8));
                if arrivals {
                    m.mcast_get(ch, requested);
                }
            }
            8 | 9 => {
                let ch = input.pick(&[0, 1, 2])?;
                if arrivals {
                    m.sync_arrive(ch);
                }
            }
            10 => {
                let ch = input.pick(&[0, 1, 2])?;
                if arrivals {
                    m.proxy_request(ch);
                }
            }
            11 => {
                let ch = input.pick(&[0, 1, 2])?;
                let secret = input.pick(&SECRETS)?;
                if arrivals {
                    m.proxy_serve(ch, secret);
                }
            }
            12 => {
                let pick = usize::from(input.byte()?);
                m.proxy_delivered(pick);
            }
            13 => {
                let pick = usize::from(input.byte()?);
                let secret = input.pick(&SECRETS)?;
                if arrivals {
                    m.proxy_result(pick, secret, op >= 128);
                }
            }
            14 => {
                let pick = usize::from(input.byte()?);
                m.proxy_client_leave(pick);
            }
            15 | 16 => {
                let step = input.pick(&STEPS)?;
                let jitter = Millis::from(input.byte()?);
                m.advance(step + jitter);
            }
            17 if op >= 128 => {
                if arrivals {
                    m.drain();
                }
            }
            17 => {
                let what = input.byte()?;
                let secret = input.pick(&SECRETS)?;
                let count = BULK_COUNTS[usize::from(what >> 2 & 3)];
                // Four overlapping ranges of ids past the first three.
                let first = 3 + usize::from(what >> 4 & 3) * 256;
                if arrivals {
                    m.bulk(what & 3, first, count, secret);
                }
            }
            _ => {
                // As the server does: sleep until poll_timeout (or `step`), then
                // handle the timeout.
                let step = input.pick(&STEPS)?;
                let target = m.now + step;
                match m.relay.poll_timeout() {
                    Some(due) if due <= target => m.advance(due.saturating_sub(m.now)),
                    _ => m.advance(step),
                }
            }
        }
        m.settle();
        m.check();
    }
    Some(())
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let Some(mut model) = setup(&mut input) else {
        return;
    };
    // Running out of input mid-operation just ends the run.
    let _ = run(&mut model, &mut input);
    model.settle();
    model.check();
    model.wind_down();
});
