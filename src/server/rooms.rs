//! The rooms: each relay method (link, mcast, sync, proxy, inbox, piping) is
//! a folder of the shell that owns its requests, its phases' data and what
//! becomes of its connections. These hooks are the one place where the
//! generic shell (the loop, closing, timers, shutdown, the transfer engine)
//! calls into a method; what it only asks about a method (a path's method,
//! a waiter's timer) is answered by `routes`:
//!
//! - `enter`: a routed request goes to its method's handler;
//! - `drive_room`: a connection in a phase of a method's own is driven;
//! - `leave`: a parked waiter leaves its queue in the relay core;
//! - `wait_over`: a parked waiter's timer fired;
//! - `shut`: a parked waiter when the relay shuts down;
//! - `body_held`: a body read whole for a method is complete;
//! - `transfer_done` and `consumer_gone`: a streamed transfer ended, whole or
//!   cut short by its consumer;
//! - `closing` and `closed`: a connection closes (before and after it leaves
//!   the slab), and what depended on it is settled.
//!
//! Adding a method: a folder with its handler and hooks, a line in
//! `routes::route` (or a fallback like piping's), an arm in each hook it
//! needs here, its state in [`Rooms`], its flags in `config` and its label in
//! `relay::Method`.

use super::conn::{Conn, ConnId, Hold, Phase, Transfer, Wait};
use super::{Server, Step};
use crate::http::{BodyError, HeadWriter, QueryFilter, Status};
use crate::relay::Method;

/// A link producer's answer when its consumer left mid-body.
const CONSUMER_LEFT: (Status, &str) = (Status(502), "502 consumer disconnected\n");
/// A proxy client's answer when the `SERVE` request taking its job left.
const PROXY_SERVER_LEFT: (Status, &str) = (Status(502), "502 proxy server disconnected\n");
/// A `SERVE` request's answer when the client its result was for left.
const PROXY_CLIENT_LEFT: (Status, &str) = (Status(406), "406 the client left\n");

/// Each method's own limits and counts, kept by the server for its rooms.
pub(super) struct Rooms {
    pub mcast: super::mcast::McastRoom,
    pub sync: super::sync::SyncRoom,
    pub inbox: super::inbox::InboxRoom,
    /// Piping Server transfers on the paths no prefix takes (`--piping`).
    pub piping: bool,
}

impl Rooms {
    pub fn new(config: &crate::config::Config) -> Rooms {
        Rooms {
            mcast: super::mcast::McastRoom::new(config),
            sync: super::sync::SyncRoom::new(config),
            inbox: super::inbox::InboxRoom::new(config),
            piping: config.piping,
        }
    }

    /// The method that takes a path no prefix names, if any.
    pub fn fallback(&self) -> Option<Method> {
        self.piping.then_some(Method::Piping)
    }
}

/// The status of a receiver's answer in a transfer of `kind`: a proxy
/// result's own, else `200`.
pub(super) fn receiver_status(kind: Transfer, producer: &Conn) -> Status {
    match kind {
        Transfer::ProxyResult => super::proxy::result_status(&producer.head_copy),
        _ => Status(200),
    }
}

/// The fields a receiver's head carries before its framing, as the method of
/// the transfer writes them; `scratch` for the filtered query.
pub(super) fn receiver_fields(
    kind: Transfer,
    w: &mut HeadWriter,
    producer: &Conn,
    consumer: &Conn,
    date: &[u8],
    scratch: (&mut QueryFilter, &mut Vec<u8>),
) {
    match kind {
        Transfer::Link => super::link::consumer_fields(w, producer, consumer, date, scratch),
        Transfer::ProxyJob(job) => super::proxy::job_head_fields(w, producer, consumer, date, &job),
        Transfer::ProxyResult => super::proxy::result_head_fields(w, producer, consumer, date),
        Transfer::Piping => super::piping::receiver_head_fields(w, producer, date),
    }
}

impl Server {
    /// A producer's chunked framing broke mid-transfer: its method decides
    /// what its answer can still be.
    pub(super) fn bad_body(&mut self, p: ConnId, kind: Transfer, error: BodyError) {
        match kind {
            Transfer::Piping => self.piping_sender_broke(p),
            Transfer::ProxyJob(job) => {
                self.proxy_forget_job(p, job);
                self.cut_transfer(p, error);
            }
            Transfer::Link | Transfer::ProxyResult => self.cut_transfer(p, error),
        }
    }

    /// Drives a connection in a phase of a method's own.
    pub(super) fn drive_room(&mut self, id: ConnId) -> Step {
        match self.conns[id.0].phase {
            Phase::Publishing { .. } => self.drive_publishing(id),
            Phase::Delivering { .. } => self.begin_reading(id),
            Phase::Reading { .. } => self.drive_reading(id),
            Phase::Streaming { .. } => self.drive_streaming(id),
            Phase::SendingHeld { .. } | Phase::SendingMessage { .. } => {
                self.drive_sending_memory(id)
            }
            _ => Step::Again,
        }
    }

    /// The figures `/metrics` shows beside the counters, each method's held
    /// bytes among them.
    pub(super) fn gauges(&self) -> super::stats::Gauges {
        super::stats::Gauges {
            open_connections: self.conns.len(),
            waiters: self.relay.waiters_by_method(),
            channels: self.relay.channels_by_method(),
            remembered_channels: self.relay.remembered_channels(),
            refused_no_room: self.relay.refused_no_room(),
            refused_client_channels: self.relay.refused_client(),
            channel_owners: self.relay.channel_owners(),
            mcast_bytes: self.relay.mcast_bytes(),
            sync_bytes: self.rooms.sync.held,
            inbox_bytes: self.inbox_held(),
            memory: self.memory,
            clients: self.clients.len(),
            journal_bytes: self.store.as_ref().map(super::store::Store::len),
            journal_rewriting: self
                .store
                .as_ref()
                .is_some_and(super::store::Store::rewriting),
            resident: crate::sys::process::resident_bytes(),
        }
    }

    /// Hands a routed request to its method's handler.
    pub(super) fn enter(&mut self, id: ConnId, method: Method) -> Step {
        match method {
            Method::Link => self.handle_link(id),
            Method::Mcast => self.handle_mcast(id),
            Method::Sync => self.handle_sync(id),
            Method::Proxy => self.handle_proxy(id),
            Method::Inbox => self.handle_inbox(id),
            Method::Piping => self.handle_piping(id),
        }
    }

    /// A parked connection leaves the core's queue for `wait`.
    pub(super) fn leave(&mut self, id: ConnId, wait: Wait) {
        let now = self.now_millis();
        let conn = &self.conns[id.0];
        let channel = &conn.channel;
        let waiter = crate::relay::WaiterId(id.0);
        match wait.method() {
            Method::Link => self.relay.link_leave(now, channel, waiter),
            Method::Mcast => self.relay.mcast_leave(now, channel, waiter),
            Method::Sync => self.relay.sync_leave(now, channel, waiter),
            Method::Proxy => match wait {
                Wait::ProxyClient(job) => self.relay.proxy_client_leave(now, channel, &job),
                _ => self.relay.proxy_server_leave(now, channel, waiter),
            },
            Method::Piping => self.relay.piping_leave(now, channel, waiter),
            Method::Inbox => self.relay.inbox_leave(now, channel, waiter),
        };
    }

    /// A parked waiter's timer fired (the wait timeout; the inbox timeout for
    /// inbox waiters): it has left the core, and gets its method's answer.
    pub(super) fn wait_over(&mut self, id: ConnId, wait: Wait) {
        self.leave(id, wait);
        match wait {
            Wait::InboxReader | Wait::InboxAwaiter => self.inbox_wait_over(id),
            Wait::PipingSender => self.piping_sender_wait_over(id),
            _ => self.answer_and_close(id, matches!(wait, Wait::Link(_)), super::WAIT_OVER),
        }
    }

    /// The relay shuts down: a waiter (already out of the core) is answered
    /// as its method ends a response.
    pub(super) fn shut(&mut self, id: ConnId, wait: Wait) {
        match wait {
            Wait::McastStream => {
                self.end_stream(id);
            }
            Wait::PipingSender => self.piping_sender_shut(id),
            _ => self.answer_and_close(id, true, super::SHUTTING_DOWN),
        }
    }

    /// A body read whole (see `hold`) is complete: the request goes on.
    pub(super) fn body_held(&mut self, id: ConnId, hold: Hold) -> Step {
        match hold {
            Hold::Sync => self.sync_arrive(id),
            Hold::Discard => self.proxy_body_dropped(id),
            Hold::Inbox => self.inbox_store(id),
        }
    }

    /// The whole body of a transfer of `kind` reached its consumer: both
    /// move on as the method says.
    /// `c`: the first receiver (a link's only one).
    pub(super) fn transfer_done(&mut self, p: ConnId, c: Option<ConnId>, kind: Transfer) {
        match kind {
            Transfer::Link => {
                if let Some(c) = c {
                    self.link_transfer_done(p, c)
                }
            }
            Transfer::ProxyJob(job) => self.proxy_job_delivered(p, job),
            Transfer::ProxyResult => self.proxy_result_delivered(p),
            Transfer::Piping => self.piping_transfer_done(p),
        }
    }

    /// The consumer `c` of a transfer of `kind` left mid-body: its producer
    /// `p` learns it.
    pub(super) fn consumer_gone(&mut self, p: ConnId, c: ConnId, kind: Transfer) {
        match kind {
            Transfer::Link => self.producer_failed(p, CONSUMER_LEFT),
            Transfer::ProxyJob(job) => {
                self.proxy_forget_job(p, job);
                self.producer_failed(p, PROXY_SERVER_LEFT)
            }
            Transfer::ProxyResult => self.producer_failed(p, PROXY_CLIENT_LEFT),
            Transfer::Piping => self.piping_receiver_gone(p, c),
        }
    }

    /// A connection is about to close (it is still in the slab): a waiter
    /// leaves its queue, a live stream its count, a proxy job is forgotten.
    pub(super) fn closing(&mut self, id: ConnId) {
        match self.conns[id.0].phase {
            Phase::Streaming { .. } => self.stream_closing(id),
            Phase::Parked(wait) => {
                if wait == Wait::McastStream {
                    self.stream_closing(id);
                }
                self.leave(id, wait)
            }
            Phase::Producing {
                kind: Transfer::ProxyJob(job),
                ..
            } => self.proxy_forget_job(id, job),
            _ => {}
        }
    }

    /// A connection has closed: what it held is given back, and the
    /// counterparts of its transfer or its message learn it.
    pub(super) fn closed(&mut self, id: ConnId, conn: &super::conn::Conn) {
        let now = self.now_millis();
        match conn.phase {
            Phase::Holding {
                hold: Hold::Inbox, ..
            } => self.rooms.inbox.uploading -= conn.held.len(),
            _ => self.rooms.sync.held -= conn.held.len(),
        }
        match conn.phase {
            Phase::Producing {
                ref receivers,
                kind,
                ..
            } => {
                if kind == Transfer::Piping {
                    self.relay.piping_finish(now, &conn.channel);
                }
                // Every receiver's response stays visibly incomplete.
                for &r in receivers.as_slice() {
                    if matches!(
                        self.conns.get(r.0).map(|c| &c.phase),
                        Some(Phase::Consuming { producer, .. }) if *producer == id
                    ) {
                        self.truncate_consumer(r);
                    }
                }
            }
            Phase::Consuming { producer, kind, .. } => self.consumer_gone(producer, id, kind),
            Phase::Publishing { ref message, .. } => {
                self.relay.mcast_abort(now, &conn.channel, message);
                self.wake_followers(message);
            }
            _ => {}
        }
    }
}
