//! The operations, each made on the core and on the model, with the core's
//! answer checked against the model's: link, sync, mcast and proxy arrivals,
//! uploads, results and leaves, bulk claims, the drain at shutdown (the inbox
//! ones are in `inbox.rs`).

use std::rc::Rc;

use httprelay::relay::{
    AppendError, ClaimError, LinkArrival, McastGet, MessageState, ProducerMeta, ProxyDispatch,
    PublishError, ResultError, Role, SyncArrival, WaiterId,
};

use crate::model::{admit, cost, JobState, Kind, Model, Msg, State, Upload};
use crate::{id, CONTENT_TYPES, IDS, METHODS, OVERHEAD, QUERIES};

impl Model {
    // ---- link ----

    pub fn link_arrive(&mut self, ch: usize, role: Role, secret: &[u8]) -> WaiterId {
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

    pub fn link_leave(&mut self, ch: usize, w: WaiterId) {
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

    pub fn sync_arrive(&mut self, ch: usize) {
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

    pub fn sync_leave(&mut self, ch: usize, w: WaiterId) {
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
    pub fn mcast_publish(&mut self, ch: usize, secret: &[u8], declared: Option<u64>, meta: u8) {
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
    pub fn mcast_append(&mut self, at: usize, bytes: &[u8]) -> bool {
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
    pub fn mcast_finish(&mut self, at: usize, complete: bool) {
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

    pub fn mcast_get(&mut self, ch: usize, requested: Option<u64>) {
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

    pub fn mcast_leave(&mut self, ch: usize, w: WaiterId) {
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

    pub fn proxy_request(&mut self, ch: usize) {
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

    pub fn proxy_serve(&mut self, ch: usize, secret: &[u8]) -> WaiterId {
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

    pub fn proxy_delivered(&mut self, pick: usize) {
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
    pub fn proxy_result(&mut self, pick: usize, secret: &[u8], bogus: bool) {
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

    pub fn proxy_client_leave(&mut self, pick: usize) {
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

    pub fn proxy_server_leave(&mut self, ch: usize, w: WaiterId) {
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
    pub fn leave(&mut self, pick: usize, other_channel: bool) {
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

    pub fn leave_exact(&mut self, w: WaiterId, kind: Kind, ch: usize) {
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
    pub fn bulk(&mut self, kind: u8, first: usize, count: usize, secret: &[u8]) {
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

    pub fn drain(&mut self) {
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
        for c in self.inboxes.0.values_mut() {
            c.state.readers.clear();
            c.state.awaiters.clear();
        }
        self.shut_down = true;
    }
}
