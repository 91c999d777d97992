//! The model: what each channel of each method holds, who is parked where,
//! and the running counts the checks compare with the core.

use std::collections::{HashMap, VecDeque};
use std::rc::{Rc, Weak};

use httprelay::relay::{ClaimError, InboxMessage, JobId, Message, Millis, Relay, Role, WaiterId};

use crate::OVERHEAD;

/// When a channel was last active: `sure` counts operations that certainly
/// refresh it (arrivals, successful leaves, progress), `maybe` also those whose
/// effect on idleness the rules leave open (a failed leave, a refused secret, a
/// result for an unknown job, a drain).
#[derive(Clone, Copy)]
pub struct Activity {
    pub sure: Millis,
    pub maybe: Millis,
}

impl Activity {
    pub fn touch(&mut self, now: Millis, sure: bool) {
        self.maybe = now;
        if sure {
            self.sure = now;
        }
    }
}

/// What the rules need to know of a channel of any method.
pub trait State: Default {
    /// Requests parked (what `waiter_count` counts).
    fn waiting(&self) -> usize;
    /// A waiter or an upload in progress: never expires.
    fn busy(&self) -> bool;
    /// A claim or mcast messages: counted against `max_channels`.
    fn remembered(&self) -> bool;
}

#[derive(Default)]
pub struct LinkM {
    pub queue: VecDeque<(WaiterId, Role)>,
    pub secret: Option<Vec<u8>>,
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
pub struct SyncM {
    pub waiting: Option<WaiterId>,
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

pub struct Msg {
    pub message: Rc<Message>,
    pub complete: bool,
}

/// What holding a message costs: body, metadata and the overhead.
pub fn cost(m: &Message) -> usize {
    m.len() + m.meta.method.len() + m.meta.query.len() + m.meta.content_type.len() + OVERHEAD
}

#[derive(Default)]
pub struct McastM {
    /// Retained and uploading messages, in sequence order.
    pub messages: VecDeque<Msg>,
    pub next_seq: u64,
    pub waiting: Vec<WaiterId>,
    pub secret: Option<Vec<u8>>,
}

impl McastM {
    /// Cost of the complete messages retained.
    pub fn held(&self) -> usize {
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
pub enum JobState {
    Queued,
    Dispatched,
    AwaitingResult,
}

#[derive(Default)]
pub struct ProxyM {
    pub servers: VecDeque<WaiterId>,
    pub queued: VecDeque<JobId>,
    pub jobs: HashMap<JobId, (WaiterId, JobState)>,
    pub secret: Option<Vec<u8>>,
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

/// An inbox message as the model knows it: which one (the core's record,
/// watched without keeping it alive) and what it costs in `inbox_bytes`.
#[derive(Clone)]
pub struct InboxMsg {
    pub serial: u64,
    pub cost: usize,
    pub record: Weak<InboxMessage>,
}

/// An inbox id. Like the core, the model forgets an entry whose TTL is over
/// only when an operation with a clock looks at it ([`InboxM::settle`]) or when
/// `handle_timeout` expires it: until then it still counts as remembered.
#[derive(Default)]
pub struct InboxM {
    /// When the entry was last written (`None`: no entry).
    pub written: Option<Millis>,
    /// The stored message, until acknowledged.
    pub message: Option<InboxMsg>,
    pub acked: bool,
    pub secret: Option<Vec<u8>>,
    pub readers: Vec<WaiterId>,
    pub awaiters: Vec<WaiterId>,
}

impl InboxM {
    /// Forgets an entry whose TTL is over at `now` (as every inbox operation
    /// with a clock does first); returns whether one was forgotten.
    pub fn settle(&mut self, now: Millis, ttl: Millis) -> bool {
        match self.written {
            Some(at) if now >= at.saturating_add(ttl) => {
                *self = InboxM {
                    readers: std::mem::take(&mut self.readers),
                    awaiters: std::mem::take(&mut self.awaiters),
                    ..InboxM::default()
                };
                true
            }
            _ => false,
        }
    }
}

impl State for InboxM {
    fn waiting(&self) -> usize {
        self.readers.len() + self.awaiters.len()
    }
    fn busy(&self) -> bool {
        self.waiting() > 0
    }
    fn remembered(&self) -> bool {
        self.written.is_some()
    }
}

pub struct Chan<T> {
    pub active: Activity,
    pub state: T,
}

/// Channels of one method, by channel number (see [`id`]); present iff the
/// relay has them.
pub struct Channels<T>(pub HashMap<usize, Chan<T>>);

impl<T: State> Channels<T> {
    /// The channel an operation that creates channels works on.
    pub fn entry(&mut self, now: Millis, ch: usize) -> &mut Chan<T> {
        self.0.entry(ch).or_insert_with(|| Chan {
            active: Activity {
                sure: now,
                maybe: now,
            },
            state: T::default(),
        })
    }
    /// Activity on an existing channel.
    pub fn touch(&mut self, now: Millis, ch: usize, sure: bool) {
        if let Some(c) = self.0.get_mut(&ch) {
            c.active.touch(now, sure);
        }
    }
    pub fn get(&mut self, ch: usize) -> Option<&mut T> {
        self.0.get_mut(&ch).map(|c| &mut c.state)
    }
    /// A channel that holds nothing is removed at once.
    pub fn settle(&mut self) {
        self.0.retain(|_, c| c.state.busy() || c.state.remembered());
    }
    pub fn settle_one(&mut self, ch: usize) {
        if self
            .0
            .get(&ch)
            .is_some_and(|c| !c.state.busy() && !c.state.remembered())
        {
            self.0.remove(&ch);
        }
    }
    pub fn waiting(&self) -> usize {
        self.0.values().map(|c| c.state.waiting()).sum()
    }
    pub fn remembered(&self) -> usize {
        self.0.values().filter(|c| c.state.remembered()).count()
    }
    /// The activity of every remembered idle channel (those that may expire).
    pub fn expiring(&self) -> impl Iterator<Item = &Activity> + '_ {
        let idle = self
            .0
            .values()
            .filter(|c| c.state.remembered() && !c.state.busy());
        idle.map(|c| &c.active)
    }
    /// Forgets remembered idle channels idle since `now - expiry` or longer,
    /// showing each to `on_forget`; returns how many.
    pub fn expire(&mut self, now: Millis, expiry: Millis, mut on_forget: impl FnMut(&T)) -> usize {
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
pub fn admit(
    claimed: &mut Option<Vec<u8>>,
    presented: &[u8],
    room: bool,
) -> Result<(), ClaimError> {
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
pub enum Kind {
    Link,
    Mcast,
    Sync,
    ProxyServer,
}

/// Which wait an inbox waiter is in.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum InboxWait {
    /// A `GET` waiting for a message.
    Reader,
    /// A writer waiting for the acknowledgement.
    Awaiter,
}

/// An mcast message still uploading.
pub struct Upload {
    pub ch: usize,
    pub message: Rc<Message>,
    pub declared: Option<u64>,
}

pub struct Model {
    pub relay: Relay,
    pub expiry: Millis,
    pub retain: usize,
    pub total: usize,
    pub max_channels: usize,
    pub max_len: usize,
    pub now: Millis,
    pub next_waiter: usize,
    pub links: Channels<LinkM>,
    pub mcasts: Channels<McastM>,
    pub syncs: Channels<SyncM>,
    pub proxies: Channels<ProxyM>,
    pub inboxes: Channels<InboxM>,
    pub inbox_ttl: Millis,
    /// Every inbox waiter ever created, for inbox leaves (apart from
    /// `waiters`, so that the other leaves pick as they always did).
    pub inbox_waiters: Vec<(WaiterId, InboxWait, usize)>,
    /// Messages readers are still sending: the harness holds the core's `Rc`
    /// until an operation lets go of it.
    pub inbox_held: Vec<(InboxMsg, Rc<InboxMessage>)>,
    /// Every inbox message not yet seen gone, to check that each goes when
    /// its last holder lets go (and not before).
    pub inbox_messages: Vec<InboxMsg>,
    pub inbox_serial: u64,
    /// Remembered channels and mcast bytes, kept up to date by the operations
    /// (bulk operations make thousands) and recounted by every check.
    pub remembered: usize,
    pub mcast_bytes: usize,
    pub refused_no_room: u64,
    /// `drain_waiters` was called: the server is shutting down.
    pub shut_down: bool,
    /// Every waiter ever created (by kind and channel), for leave operations.
    pub waiters: Vec<(WaiterId, Kind, usize)>,
    /// Every proxy job ever created.
    pub jobs: Vec<(usize, JobId)>,
    pub uploading: Vec<Upload>,
}

impl Model {
    pub fn fresh_id(&mut self) -> WaiterId {
        let w = WaiterId(self.next_waiter);
        self.next_waiter += 1;
        w
    }

    pub fn new_waiter(&mut self, kind: Kind, ch: usize) -> WaiterId {
        let w = self.fresh_id();
        self.waiters.push((w, kind, ch));
        w
    }

    pub fn parked(&self) -> Vec<WaiterId> {
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
        for c in self.inboxes.0.values() {
            all.extend(c.state.readers.iter().copied());
            all.extend(c.state.awaiters.iter().copied());
        }
        all
    }

    /// The inbox messages alive as the model sees them (held by their inbox or
    /// by a reader still sending one), each once.
    pub fn inbox_alive(&self) -> HashMap<u64, &InboxMsg> {
        let stored = self
            .inboxes
            .0
            .values()
            .filter_map(|c| c.state.message.as_ref());
        let sending = self.inbox_held.iter().map(|(m, _)| m);
        stored.chain(sending).map(|m| (m.serial, m)).collect()
    }

    /// What every message a channel owns costs, retained or uploading (counted
    /// afresh; `self.mcast_bytes` is the running count).
    pub fn count_mcast_bytes(&self) -> usize {
        let messages = self.mcasts.0.values().flat_map(|c| &c.state.messages);
        messages.map(|m| cost(&m.message)).sum()
    }

    /// Remembered channels, counted afresh (`self.remembered` is the running count).
    pub fn count_remembered(&self) -> usize {
        self.links.remembered()
            + self.mcasts.remembered()
            + self.proxies.remembered()
            + self.inboxes.remembered()
    }

    /// Whether one more channel may be remembered.
    pub fn room(&self) -> bool {
        self.remembered < self.max_channels
    }

    /// The earliest time a remembered idle channel is certainly due to expire.
    pub fn deadline(&self) -> Option<Millis> {
        let all = (self.links.expiring())
            .chain(self.mcasts.expiring())
            .chain(self.proxies.expiring());
        let inboxes = self.inboxes.0.values().filter(|c| !c.state.busy());
        let inboxes = inboxes.filter_map(|c| c.state.written.map(|at| at + self.inbox_ttl));
        all.map(|a| a.maybe + self.expiry).chain(inboxes).min()
    }

    pub fn settle(&mut self) {
        self.links.settle();
        self.mcasts.settle();
        self.syncs.settle();
        self.proxies.settle();
        self.inboxes.settle();
        // A message no longer held is gone at once; one still held is there.
        let alive = self.inbox_alive();
        for m in &self.inbox_messages {
            let live = m.record.strong_count() > 0;
            assert_eq!(
                live,
                alive.contains_key(&m.serial),
                "inbox message {} alive",
                m.serial
            );
        }
        self.inbox_messages.retain(|m| m.record.strong_count() > 0);
    }
}
