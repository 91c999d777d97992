//! The sans-IO relay core driven by a sequence of operations, checked against a
//! model of who is parked where.
//!
//! The input is read as a byte stream: three bytes of settings, then operations
//! (one byte picks the operation, the following bytes its parameters). Waiter ids
//! are never reused within a run. The harness only makes calls the server could
//! make (e.g. `mcast_complete`/`mcast_abort` once per uploading message,
//! `proxy_delivered` only for a dispatched job).
//!
//! After every step: `waiter_count()`, `channel_count()` and `mcast_held_bytes()`
//! equal the model's; a sweep is scheduled while channels exist. Every returned
//! counterpart is exactly the one the model expects (first come first served), so
//! a waiter that left or was already paired is never returned; leaving returns
//! whether the waiter was still parked; write secrets are honoured until the
//! channel expired. At the end everyone leaves, time passes beyond the idle
//! expiry, and no channel may remain.
#![no_main]

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use httprelay::relay::{
    JobId, LinkArrival, McastGet, Message, MessageState, Millis, ProducerMeta, ProxyDispatch,
    Relay, RelayError, Role, Settings, SyncArrival, WaiterId,
};
use libfuzzer_sys::fuzz_target;

const IDS: [&[u8]; 3] = [b"a", b"b", b""];
const SECRETS: [&[u8]; 3] = [b"", b"s1", b"s2"];
const EXPIRIES: [Millis; 4] = [100, 1_000, 60_000, 20 * 60 * 1000];
const RETAINS: [usize; 4] = [0, 8, 40, 11_000_000];
const TOTALS: [usize; 4] = [0, 24, 100, 64 * 1024 * 1024];
const STEPS: [Millis; 8] = [0, 1, 7, 60, 999, 5_000, 61_000, 25 * 60 * 1000];

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
/// effect on idleness the API leaves open (a failed leave, a refused secret).
#[derive(Clone, Copy)]
struct Activity {
    sure: Millis,
    maybe: Millis,
}

#[derive(Default)]
struct LinkM {
    queue: VecDeque<(WaiterId, Role)>,
    secret: Option<Vec<u8>>,
}

#[derive(Default)]
struct SyncM {
    waiting: Option<WaiterId>,
}

struct Msg {
    message: Rc<Message>,
    complete: bool,
}

#[derive(Default)]
struct McastM {
    messages: VecDeque<Msg>,
    next_seq: u64,
    held: usize,
    waiting: Vec<WaiterId>,
    secret: Option<Vec<u8>>,
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

struct Chan<T> {
    active: Activity,
    state: T,
}

/// Channels of one method, by index into `IDS`; present iff the relay has them.
struct Method<T>(HashMap<usize, Chan<T>>);

impl<T: Default> Method<T> {
    /// An arrival: the channel exists afterwards and is certainly refreshed.
    fn arrive(&mut self, now: Millis, ch: usize) -> &mut T {
        let c = self.0.entry(ch).or_insert_with(|| Chan {
            active: Activity { sure: now, maybe: now },
            state: T::default(),
        });
        c.active = Activity { sure: now, maybe: now };
        &mut c.state
    }
    /// Anything else: touches an existing channel only.
    fn touch(&mut self, now: Millis, ch: usize, sure: bool) {
        if let Some(c) = self.0.get_mut(&ch) {
            c.active.maybe = now;
            if sure {
                c.active.sure = now;
            }
        }
    }
    fn get(&mut self, ch: usize) -> Option<&mut T> {
        self.0.get_mut(&ch).map(|c| &mut c.state)
    }
}

impl<T> Default for Method<T> {
    fn default() -> Self {
        Method(HashMap::new())
    }
}

/// Whether a writer with `presented` is admitted by `claimed` (claiming it).
fn admit(claimed: &mut Option<Vec<u8>>, presented: &[u8]) -> bool {
    match claimed {
        Some(c) => c == presented,
        None => {
            if !presented.is_empty() {
                *claimed = Some(presented.to_vec());
            }
            true
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

struct Model {
    relay: Relay,
    expiry: Millis,
    retain: usize,
    total: usize,
    now: Millis,
    next_waiter: usize,
    links: Method<LinkM>,
    mcasts: Method<McastM>,
    syncs: Method<SyncM>,
    proxies: Method<ProxyM>,
    /// Every waiter ever created (by kind and channel), for leave operations.
    waiters: Vec<(WaiterId, Kind, usize)>,
    /// Every proxy job ever created.
    jobs: Vec<(usize, JobId)>,
    /// Messages still uploading, with their channel.
    uploading: Vec<(usize, Rc<Message>)>,
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

    /// Bytes of every message a channel owns, retained or uploading.
    fn mcast_bytes(&self) -> usize {
        let messages = self.mcasts.0.values().flat_map(|c| &c.state.messages);
        messages.map(|m| m.message.len()).sum()
    }

    fn channels(&self) -> usize {
        self.links.0.len() + self.mcasts.0.len() + self.syncs.0.len() + self.proxies.0.len()
    }

    fn check(&self) {
        let parked = self.parked();
        assert_eq!(self.relay.waiter_count(), parked.len(), "waiter_count");
        assert_eq!(self.relay.channel_count(), self.channels(), "channel_count");
        let held: usize = self.mcasts.0.values().map(|c| c.state.held).sum();
        assert_eq!(self.relay.mcast_held_bytes(), held, "mcast_held_bytes");
        assert_eq!(self.relay.mcast_bytes(), self.mcast_bytes(), "mcast_bytes");
        for len in [None, Some(0), Some(1), Some(7), Some(u64::MAX)] {
            let wanted = len.map_or(1, |n| n.max(1));
            let room = (self.mcast_bytes() as u64).saturating_add(wanted) <= self.total as u64;
            assert_eq!(self.relay.mcast_has_room(len), room, "mcast_has_room({len:?})");
        }
        if self.channels() > 0 {
            let due = self.relay.poll_timeout().expect("channels exist but no sweep is due");
            assert!(due <= self.now + self.expiry, "sweep due {due} too late (now {})", self.now);
        }
    }

    // ---- link ----

    fn link_arrive(&mut self, ch: usize, role: Role, secret: &[u8]) {
        let w = self.new_waiter(Kind::Link, ch);
        let now = self.now;
        let got = self.relay.link_arrive(now, IDS[ch], role, w, secret);
        let refused = role == Role::Producer
            && self
                .links
                .get(ch)
                .is_some_and(|c| c.secret.as_deref().is_some_and(|s| s != secret));
        if refused {
            assert_eq!(got, Err(RelayError::WrongSecret), "link secret not honoured");
            self.links.touch(now, ch, false);
            return;
        }
        let c = self.links.arrive(now, ch);
        if role == Role::Producer {
            assert!(admit(&mut c.secret, secret));
        }
        let expected = match c.queue.front() {
            Some(&(head, r)) if r != role => {
                c.queue.pop_front();
                LinkArrival::Paired(head)
            }
            _ => {
                c.queue.push_back((w, role));
                LinkArrival::Parked
            }
        };
        assert_eq!(got, Ok(expected), "link arrival");
    }

    fn link_leave(&mut self, ch: usize, w: WaiterId) {
        let now = self.now;
        let got = self.relay.link_leave(now, IDS[ch], w);
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
        let got = self.relay.sync_arrive(now, IDS[ch], w);
        let c = self.syncs.arrive(now, ch);
        let expected = match c.waiting.take() {
            Some(peer) => SyncArrival::Paired(peer),
            None => {
                c.waiting = Some(w);
                SyncArrival::Parked
            }
        };
        assert_eq!(got, expected, "sync arrival");
    }

    fn sync_leave(&mut self, ch: usize, w: WaiterId) {
        let now = self.now;
        let got = self.relay.sync_leave(now, IDS[ch], w);
        let expected = self
            .syncs
            .get(ch)
            .is_some_and(|c| c.waiting == Some(w) && c.waiting.take().is_some());
        assert_eq!(got, expected, "sync_leave({w:?}) on channel {ch}");
        self.syncs.touch(now, ch, expected);
    }

    // ---- mcast ----

    fn mcast_publish(&mut self, ch: usize, secret: &[u8], length: Option<u64>) {
        let now = self.now;
        let meta = ProducerMeta {
            content_length: length,
            ..ProducerMeta::default()
        };
        let mut woken = vec![WaiterId(usize::MAX)];
        let got = self.relay.mcast_publish(now, IDS[ch], secret, meta, &mut woken);
        assert_eq!(woken.remove(0), WaiterId(usize::MAX), "woken must be appended to");
        let refused = self
            .mcasts
            .get(ch)
            .is_some_and(|c| c.secret.as_deref().is_some_and(|s| s != secret));
        if refused {
            assert_eq!(got.err(), Some(RelayError::WrongSecret), "mcast secret not honoured");
            assert!(woken.is_empty(), "a refused publish woke readers");
            self.mcasts.touch(now, ch, false);
            return;
        }
        let c = self.mcasts.arrive(now, ch);
        assert!(admit(&mut c.secret, secret));
        let message = got.expect("publish admitted");
        assert_eq!(message.seq, c.next_seq, "sequence numbers");
        assert_eq!(message.state(), MessageState::Uploading);
        assert!(message.is_empty());
        c.next_seq += 1;
        assert_eq!(woken, c.waiting, "woken readers");
        c.waiting.clear();
        c.messages.push_back(Msg {
            message: Rc::clone(&message),
            complete: false,
        });
        self.uploading.push((ch, message));
    }

    fn mcast_append(&mut self, pick: usize, bytes: &[u8], max_len: usize) {
        let Some((_, message)) = self.uploading.get(pick % self.uploading.len().max(1)) else {
            return;
        };
        let message = Rc::clone(message);
        let before = message.len();
        let full = self.mcast_bytes() + bytes.len() > self.total;
        let got = self.relay.mcast_append(&message, bytes, max_len);
        if full {
            assert_eq!(got, Err(RelayError::Full), "append past the total");
            assert_eq!(message.len(), before, "a refused append added bytes");
        } else if before + bytes.len() > max_len {
            assert_eq!(got, Err(RelayError::TooLarge), "append past max_len");
            assert_eq!(message.len(), before, "a refused append added bytes");
        } else {
            assert_eq!(got, Ok(()));
            assert_eq!(message.len(), before + bytes.len());
            message.with_bytes(before, |tail| assert_eq!(tail, bytes));
        }
    }

    /// The upload of one message ends (completed or aborted), once.
    fn mcast_finish(&mut self, pick: usize, complete: bool) {
        if self.uploading.is_empty() {
            return;
        }
        let (ch, message) = self.uploading.swap_remove(pick % self.uploading.len());
        let now = self.now;
        let retain = self.retain;
        let c = self.mcasts.get(ch).expect("an uploading message keeps its channel");
        let at = c
            .messages
            .iter()
            .position(|m| Rc::ptr_eq(&m.message, &message))
            .expect("an uploading message is retained");
        if complete {
            self.relay.mcast_complete(now, IDS[ch], &message);
            assert_eq!(message.state(), MessageState::Complete);
            c.messages[at].complete = true;
            c.held += message.len();
            // The oldest complete messages go while over budget; the newest
            // and the one just completed stay.
            while c.held > retain {
                let Some(oldest) = c.messages.iter().position(|m| m.complete) else {
                    break;
                };
                if oldest + 1 == c.messages.len() || Rc::ptr_eq(&c.messages[oldest].message, &message) {
                    break;
                }
                let dropped = c.messages.remove(oldest).expect("in range");
                c.held -= dropped.message.len();
            }
        } else {
            self.relay.mcast_abort(now, IDS[ch], &message);
            assert_eq!(message.state(), MessageState::Aborted);
            c.messages.remove(at);
        }
        self.mcasts.touch(now, ch, true);
    }

    fn mcast_get(&mut self, ch: usize, requested: Option<u64>) {
        let w = self.new_waiter(Kind::Mcast, ch);
        let now = self.now;
        let got = self.relay.mcast_get(now, IDS[ch], requested, w);
        let c = self.mcasts.arrive(now, ch);
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
                panic!("mcast_get({requested:?}) gave seq {} but should wait", m.seq)
            }
            (McastGet::Parked, Some(e)) => {
                panic!("mcast_get({requested:?}) waits but seq {} is there", e.message.seq)
            }
        }
    }

    fn mcast_leave(&mut self, ch: usize, w: WaiterId) {
        let now = self.now;
        let got = self.relay.mcast_leave(now, IDS[ch], w);
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
        let (job, got) = self.relay.proxy_request(now, IDS[ch], w);
        assert!(job.iter().all(u8::is_ascii_alphanumeric), "job id {job:?}");
        let c = self.proxies.arrive(now, ch);
        assert!(!c.jobs.contains_key(&job), "job id {job:?} reused while live");
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

    fn proxy_serve(&mut self, ch: usize, secret: &[u8]) {
        let w = self.new_waiter(Kind::ProxyServer, ch);
        let now = self.now;
        let got = self.relay.proxy_serve(now, IDS[ch], w, secret);
        let refused = self
            .proxies
            .get(ch)
            .is_some_and(|c| c.secret.as_deref().is_some_and(|s| s != secret));
        if refused {
            assert_eq!(got, Err(RelayError::WrongSecret), "serve secret not honoured");
            self.proxies.touch(now, ch, false);
            return;
        }
        let c = self.proxies.arrive(now, ch);
        assert!(admit(&mut c.secret, secret));
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
    }

    fn proxy_delivered(&mut self, pick: usize) {
        let Some(&(ch, job)) = self.jobs.get(pick % self.jobs.len().max(1)) else {
            return;
        };
        let state = self.proxies.get(ch).and_then(|c| c.jobs.get(&job)).map(|j| j.1);
        if state == Some(JobState::Queued) {
            return; // the server only reports jobs it was handed
        }
        let now = self.now;
        self.relay.proxy_delivered(now, IDS[ch], &job);
        let dispatched = state == Some(JobState::Dispatched);
        if dispatched {
            let c = self.proxies.get(ch).expect("checked above");
            c.jobs.get_mut(&job).expect("checked above").1 = JobState::AwaitingResult;
        }
        self.proxies.touch(now, ch, dispatched);
    }

    fn proxy_result(&mut self, pick: usize, secret: &[u8]) {
        let Some(&(ch, job)) = self.jobs.get(pick % self.jobs.len().max(1)) else {
            return;
        };
        let now = self.now;
        let got = self.relay.proxy_result(now, IDS[ch], secret, &job);
        let refused = self
            .proxies
            .get(ch)
            .is_some_and(|c| c.secret.as_deref().is_some_and(|s| s != secret));
        if refused {
            assert_eq!(got, Err(RelayError::WrongSecret), "result secret not honoured");
            self.proxies.touch(now, ch, false);
            return;
        }
        // A SERVE bringing a result is an arrival on its channel (creating it and
        // claiming its secret); an unknown job may or may not count as activity.
        if self.proxies.0.contains_key(&ch) {
            self.proxies.touch(now, ch, false);
        } else {
            self.proxies.arrive(now, ch);
        }
        let c = self.proxies.get(ch).expect("exists now");
        assert!(admit(&mut c.secret, secret));
        match c.jobs.get(&job) {
            Some(&(client, JobState::AwaitingResult)) => {
                c.jobs.remove(&job);
                assert_eq!(got, Ok(client), "result answers its client");
                self.proxies.touch(now, ch, true);
            }
            _ => assert_eq!(got, Err(RelayError::UnknownJob), "result for {job:?}"),
        }
    }

    fn proxy_client_leave(&mut self, pick: usize) {
        let Some(&(ch, job)) = self.jobs.get(pick % self.jobs.len().max(1)) else {
            return;
        };
        let now = self.now;
        let got = self.relay.proxy_client_leave(now, IDS[ch], &job);
        let expected = self.proxies.get(ch).is_some_and(|c| {
            c.queued.retain(|j| *j != job);
            c.jobs.remove(&job).is_some()
        });
        assert_eq!(got, expected, "proxy_client_leave({job:?})");
        self.proxies.touch(now, ch, expected);
    }

    fn proxy_server_leave(&mut self, ch: usize, w: WaiterId) {
        let now = self.now;
        let got = self.relay.proxy_server_leave(now, IDS[ch], w);
        let expected = self.proxies.get(ch).is_some_and(|c| {
            let before = c.servers.len();
            c.servers.retain(|&s| s != w);
            before != c.servers.len()
        });
        assert_eq!(got, expected, "proxy_server_leave({w:?}) on channel {ch}");
        self.proxies.touch(now, ch, expected);
    }

    fn leave(&mut self, pick: usize, other_channel: bool) {
        let Some(&(w, kind, ch)) = self.waiters.get(pick % self.waiters.len().max(1)) else {
            return;
        };
        let ch = if other_channel { (ch + 1) % IDS.len() } else { ch };
        match kind {
            Kind::Link => self.link_leave(ch, w),
            Kind::Mcast => self.mcast_leave(ch, w),
            Kind::Sync => self.sync_leave(ch, w),
            Kind::ProxyServer => self.proxy_server_leave(ch, w),
        }
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
            c.active.maybe = now;
        }
        for c in self.mcasts.0.values_mut() {
            c.state.waiting.clear();
            c.active.maybe = now;
        }
        for c in self.syncs.0.values_mut() {
            c.state.waiting = None;
            c.active.maybe = now;
        }
        for c in self.proxies.0.values_mut() {
            c.state.servers.clear();
            c.state.queued.clear();
            c.state.jobs.retain(|_, j| j.1 == JobState::Dispatched);
            c.active.maybe = now;
        }
    }

    /// Moves the clock forward by at least `step` and handles the timeout.
    fn advance(&mut self, step: Millis) {
        let mut now = self.now + step;
        // Where the API leaves open whether an operation refreshed a channel, move
        // on until the channel is idle long enough either way.
        loop {
            let expiry = self.expiry;
            let ambiguous = |a: &Activity| a.sure + expiry <= now && now < a.maybe + expiry;
            let later = [
                self.links.0.values().map(|c| &c.active).filter(|a| ambiguous(a)).map(|a| a.maybe).max(),
                self.mcasts.0.values().map(|c| &c.active).filter(|a| ambiguous(a)).map(|a| a.maybe).max(),
                self.syncs.0.values().map(|c| &c.active).filter(|a| ambiguous(a)).map(|a| a.maybe).max(),
                self.proxies.0.values().map(|c| &c.active).filter(|a| ambiguous(a)).map(|a| a.maybe).max(),
            ];
            match later.into_iter().flatten().max() {
                Some(maybe) => now = maybe + expiry,
                None => break,
            }
        }
        self.now = now;
        let due = self.relay.poll_timeout();
        let before = self.relay.channel_count();
        let forgotten = self.relay.handle_timeout(now);
        assert_eq!(forgotten, before - self.relay.channel_count(), "handle_timeout's count");
        if due.is_none_or(|due| due > now) {
            assert_eq!(forgotten, 0, "nothing is forgotten before the sweep is due");
            return;
        }
        let idle = |a: &Activity| now - a.sure >= self.expiry;
        self.links
            .0
            .retain(|_, c| !(c.state.queue.is_empty() && idle(&c.active)));
        self.mcasts.0.retain(|_, c| {
            !(c.state.waiting.is_empty()
                && c.state.messages.iter().all(|m| m.complete)
                && idle(&c.active))
        });
        self.syncs
            .0
            .retain(|_, c| !(c.state.waiting.is_none() && idle(&c.active)));
        self.proxies.0.retain(|_, c| {
            !(c.state.servers.is_empty() && c.state.jobs.is_empty() && idle(&c.active))
        });
        if let Some(due) = self.relay.poll_timeout() {
            assert!(due > now, "the next sweep {due} is not after this one {now}");
        }
    }

    /// Everyone leaves, every upload ends, time passes: nothing may remain.
    fn wind_down(&mut self) {
        for (w, kind, ch) in self.waiters.clone() {
            let parked = match kind {
                Kind::Link => self.links.get(ch).is_some_and(|c| c.queue.iter().any(|q| q.0 == w)),
                Kind::Mcast => self.mcasts.get(ch).is_some_and(|c| c.waiting.contains(&w)),
                Kind::Sync => self.syncs.get(ch).is_some_and(|c| c.waiting == Some(w)),
                Kind::ProxyServer => self.proxies.get(ch).is_some_and(|c| c.servers.contains(&w)),
            };
            if parked {
                self.leave_exact(w, kind, ch);
            }
        }
        for pick in 0..self.jobs.len() {
            let (ch, job) = self.jobs[pick];
            if self.proxies.get(ch).is_some_and(|c| c.jobs.contains_key(&job)) {
                self.proxy_client_leave(pick);
            }
        }
        while !self.uploading.is_empty() {
            let complete = self.uploading.len() % 2 == 0;
            self.mcast_finish(0, complete);
        }
        self.check();
        assert_eq!(self.relay.waiter_count(), 0, "waiters left after everyone left");
        self.advance(self.expiry + 60_001);
        self.check();
        assert_eq!(self.relay.channel_count(), 0, "channel leak");
        assert_eq!(self.relay.mcast_held_bytes(), 0);
    }

    fn leave_exact(&mut self, w: WaiterId, kind: Kind, ch: usize) {
        match kind {
            Kind::Link => self.link_leave(ch, w),
            Kind::Mcast => self.mcast_leave(ch, w),
            Kind::Sync => self.sync_leave(ch, w),
            Kind::ProxyServer => self.proxy_server_leave(ch, w),
        }
    }
}

fn setup(input: &mut Input) -> Option<Model> {
    let settings_byte = input.byte()?;
    let seed = u64::from(input.byte()?) << 8 | u64::from(input.byte()?);
    let expiry = EXPIRIES[usize::from(settings_byte & 3)];
    let retain = RETAINS[usize::from(settings_byte >> 2 & 3)];
    let total = TOTALS[usize::from(seed as u8 & 3)];
    Some(Model {
        relay: Relay::new(Settings {
            idle_expiry: expiry,
            mcast_retain: retain,
            mcast_total: total,
            seed: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        }),
        expiry,
        retain,
        total,
        now: u64::from(settings_byte >> 4) * 1_000,
        next_waiter: 0,
        links: Method::default(),
        mcasts: Method::default(),
        syncs: Method::default(),
        proxies: Method::default(),
        waiters: Vec::new(),
        jobs: Vec::new(),
        uploading: Vec::new(),
    })
}

/// Runs operations until the input runs out (`None` mid-operation).
fn run(m: &mut Model, input: &mut Input) -> Option<()> {
    for _ in 0..2_000 {
        let op = input.byte()?;
        match op % 20 {
            0 | 1 => {
                let ch = input.pick(&[0, 1, 2])?;
                let role = input.pick(&[Role::Producer, Role::Consumer])?;
                let secret = input.pick(&SECRETS)?;
                m.link_arrive(ch, role, secret);
            }
            2 | 3 => {
                let pick = usize::from(input.byte()?);
                m.leave(pick, op >= 128);
            }
            4 => {
                let ch = input.pick(&[0, 1, 2])?;
                let secret = input.pick(&SECRETS)?;
                let length = input.byte()?;
                m.mcast_publish(ch, secret, (length < 128).then_some(u64::from(length % 32)));
            }
            5 => {
                let pick = usize::from(input.byte()?);
                let len = usize::from(input.byte()? % 16);
                let max_len = usize::from(input.byte()?);
                let bytes: Vec<u8> = (0..len).map(|i| i as u8 ^ op).collect();
                m.mcast_append(pick, &bytes, max_len);
            }
            6 => {
                let pick = usize::from(input.byte()?);
                m.mcast_finish(pick, op < 128);
            }
            7 => {
                let ch = input.pick(&[0, 1, 2])?;
                let r = input.byte()?;
                let requested = (r < 200).then_some(u64::from(r % 8));
                m.mcast_get(ch, requested);
            }
            8 | 9 => {
                let ch = input.pick(&[0, 1, 2])?;
                m.sync_arrive(ch);
            }
            10 => {
                let ch = input.pick(&[0, 1, 2])?;
                m.proxy_request(ch);
            }
            11 => {
                let ch = input.pick(&[0, 1, 2])?;
                let secret = input.pick(&SECRETS)?;
                m.proxy_serve(ch, secret);
            }
            12 => {
                let pick = usize::from(input.byte()?);
                m.proxy_delivered(pick);
            }
            13 => {
                let pick = usize::from(input.byte()?);
                let secret = input.pick(&SECRETS)?;
                m.proxy_result(pick, secret);
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
            17 => {
                if op >= 128 {
                    m.drain();
                }
            }
            _ => {
                // As the server does: sleep until poll_timeout (or `step`), then
                // handle the timeout.
                let step = input.pick(&STEPS)?;
                let target = m.now + step;
                match m.relay.poll_timeout() {
                    Some(due) if due <= target => m.advance(due - m.now),
                    _ => m.advance(step),
                }
            }
        }
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
    model.check();
    model.wind_down();
});
