//! One client connection: its socket, its phase in the request lifecycle, the
//! readiness the poller reported, and the buffers it holds while it works.

use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Instant;

use crate::buf::{Buf, BufPool};
use crate::server::stream::{fill, Fill, Stream};

use crate::http::sse::EventWriter;
use crate::http::Status;
use crate::http::{BodyDecoder, Encoder, MultipartDecoder, Request};
use crate::relay::{InboxMessage, JobId, Message, Role};
use crate::server::reply::{self, Expose, Head, Meta};

/// A connection's key in the server's slab (also its poll token and its
/// [`crate::relay::WaiterId`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnId(pub usize);

/// What the connection does next.
#[derive(Debug)]
pub enum Phase {
    /// Waiting for (the rest of) a request head: idle keep-alive, or mid-head.
    ReadingHead,
    /// Waiting in the relay core on the channel in `Conn::channel`.
    Parked(Wait),
    /// Sending its request body to its receivers as it arrives (the
    /// transfer engine, `server/transfer`).
    Producing {
        body: BodyDecoder,
        receivers: Receivers,
        kind: Transfer,
        /// A piping sender's `multipart/form-data` upload: only its first
        /// part is sent.
        form: Option<Box<Form>>,
    },
    /// Receiving `producer`'s body as its response body, framed (or dropped,
    /// for a response without a body) by `encoder`.
    Consuming {
        producer: ConnId,
        kind: Transfer,
        encoder: Encoder,
        /// The most the next pass straight from the producer's socket may
        /// move (it follows what this receiver took at the last one).
        pass_window: u32,
    },
    /// An mcast producer storing its body in `message`.
    Publishing {
        message: Rc<Message>,
        body: BodyDecoder,
    },
    /// An mcast reader that has its message but has not written its head yet.
    /// Heads are written when the reader is driven, one reader after another,
    /// so that a message for many readers needs few output buffers at once.
    Delivering { message: Rc<Message> },
    /// An mcast reader sending `message` from `offset` on, framed by `encoder`.
    Reading {
        message: Rc<Message>,
        offset: usize,
        encoder: Encoder,
    },
    /// An mcast live stream (Server-Sent Events) sending `message` as an
    /// event once its upload is complete (until then it follows the upload,
    /// holding no output buffer). Between messages it waits as
    /// `Parked(Wait::McastStream)`.
    Streaming {
        message: Rc<Message>,
        event: EventWriter,
    },
    /// A request reading its whole body before it goes on, as `hold` says.
    Holding { body: BodyDecoder, hold: Hold },
    /// Sending a response whose body is `Conn::held[offset..]`.
    SendingHeld { offset: usize },
    /// An inbox reader sending the stored message (shared with its inbox and
    /// other readers) from `offset` on, after its head.
    SendingMessage {
        message: Rc<InboxMessage>,
        offset: usize,
    },
    /// Writing the rest of a response that is entirely in the output buffer.
    Responding(After),
    /// Response sent and sending side shut: discarding what the client still
    /// sends until it closes or the deadline passes, so that closing does not
    /// reset the connection and destroy the response in flight.
    Lingering,
}

/// The receivers of a producer's body: one (link, proxy, a piping path with
/// one receiver: no allocation) or several (piping with `?n=`).
#[derive(Debug)]
pub enum Receivers {
    One(ConnId),
    Many(Vec<ConnId>),
}

/// None: what stands in a producer's phase while its transfer's round holds
/// the receivers.
impl Default for Receivers {
    fn default() -> Receivers {
        Receivers::Many(Vec::new())
    }
}

impl Receivers {
    pub fn as_slice(&self) -> &[ConnId] {
        match self {
            Receivers::One(r) => std::slice::from_ref(r),
            Receivers::Many(rs) => rs,
        }
    }

    /// `r` is no longer a receiver.
    pub fn remove(&mut self, r: ConnId) {
        match self {
            Receivers::One(one) if *one == r => *self = Receivers::Many(Vec::new()),
            Receivers::One(_) => {}
            Receivers::Many(rs) => rs.retain(|&other| other != r),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }
}

impl From<Vec<ConnId>> for Receivers {
    fn from(receivers: Vec<ConnId>) -> Receivers {
        match receivers[..] {
            [one] => Receivers::One(one),
            _ => Receivers::Many(receivers),
        }
    }
}

impl Phase {
    /// The phase's name, for log lines.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::ReadingHead => "reading head",
            Phase::Parked(_) => "parked",
            Phase::Producing { .. } => "producing",
            Phase::Consuming { .. } => "consuming",
            Phase::Publishing { .. } => "publishing",
            Phase::Delivering { .. } => "delivering",
            Phase::Reading { .. } => "reading",
            Phase::Streaming { .. } => "streaming",
            Phase::Holding { .. } => "holding",
            Phase::SendingHeld { .. } => "sending held",
            Phase::SendingMessage { .. } => "sending message",
            Phase::Responding(_) => "responding",
            Phase::Lingering => "lingering",
        }
    }
}

/// A piping sender's `multipart/form-data` upload (a browser form): its first
/// part is what the receivers get.
#[derive(Debug)]
pub struct Form {
    pub decoder: MultipartDecoder,
    pub part: FormPart,
}

/// Where a form upload is relative to its first part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormPart {
    /// Not there yet: the receivers' heads wait for its fields.
    Before,
    /// Its content is being sent.
    In,
    /// Sent whole; the rest of the upload is read and dropped.
    After,
}

/// Why a request's body is read whole before the request goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// sync: the body is kept in `Conn::held`; then the request meets its peer.
    Sync,
    /// A proxy `SERVE` without a job id: the body is dropped as it arrives;
    /// then the request waits for a job.
    Discard,
    /// An inbox message: the body is kept in `Conn::held`; then it is stored.
    Inbox,
}

/// What a parked connection waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    Link(Role),
    /// An mcast reader waiting for the next message.
    McastReader,
    /// An mcast live stream (its head sent) waiting for the next message.
    McastStream,
    /// A sync request (body held) waiting for its peer.
    Sync,
    /// A proxy client: its job is queued or awaits a result.
    ProxyClient(JobId),
    /// A `SERVE` request waiting for a job.
    ProxyServer,
    /// A Piping Server sender waiting for its receivers; its response (the
    /// progress lines) has begun.
    PipingSender,
    /// A Piping Server receiver waiting for the sender or the other receivers.
    PipingReceiver,
    /// An inbox reader waiting for a message.
    InboxReader,
    /// An inbox writer waiting for the acknowledgement.
    InboxAwaiter,
}

/// The kinds of streamed body transfer between two connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transfer {
    /// link: producer's body to consumer.
    Link,
    /// proxy: a client's request (its job) to a `SERVE` response.
    ProxyJob(JobId),
    /// proxy: a `SERVE` request's body (the result) to the client's response.
    ProxyResult,
    /// Piping Server: a sender's body to a receiver; the sender's response
    /// is its progress lines.
    Piping,
}

/// What follows a fully written response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum After {
    /// Keep-alive: read the next request (maybe already buffered).
    NextRequest,
    /// Close now: nothing unread is left that could provoke a reset.
    Close,
    /// Unread request bytes may remain: shut the sending side and linger.
    Linger,
}

impl After {
    /// What follows a response to a request read whole: the next request, or
    /// the close the request asked for.
    pub fn keeping(keep_alive: bool) -> After {
        if keep_alive {
            After::NextRequest
        } else {
            After::Close
        }
    }
}

/// Which timeout a connection's deadline stands for (one at a time, chosen by
/// its phase).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Timer {
    #[default]
    None,
    /// Between requests, or fresh and silent: closed quietly.
    Idle,
    /// A request head has started: it must complete in time, else `408`.
    Head,
    /// A TLS handshake is under way: it must be done in time, else closed.
    Handshake,
    /// A body or response is moving: checked every quarter of the body timeout.
    Progress,
    /// Parked, with a wait timeout configured: `504` when it passes.
    Wait,
    /// Waiting on an inbox: `408` when the inbox timeout passes.
    Inbox,
    /// Lingering after an error response.
    Linger,
    /// A live stream with nothing to send: a comment when it fires, so that
    /// proxies do not close a silent stream.
    KeepAlive,
}

/// A connection's timer: which one, when it fires, and the entry the server's
/// timer heap holds for it.
#[derive(Debug, Default)]
pub struct Armed {
    pub kind: Timer,
    /// When it fires.
    pub deadline: Option<Instant>,
    /// The earliest heap entry for this connection (at or before `deadline`).
    pub scheduled: Option<Instant>,
    /// Consecutive body-timeout checks without progress.
    pub quiet_checks: u8,
}

pub struct Conn {
    pub stream: Stream,
    /// The client's address; `None` for Unix-socket clients.
    pub peer: Option<SocketAddr>,
    pub phase: Phase,
    /// Readiness as last reported by the poller and not yet used up
    /// (edge-triggered: cleared only when an operation would block).
    pub readable: bool,
    pub writable: bool,
    /// The client closed its sending side or reset the connection.
    pub peer_closed: bool,
    /// Bytes received and not yet used. Held only while reading or relaying.
    pub input: Option<Buf>,
    /// While parked: the input's pending bytes (body bytes that came with the
    /// head, a pipelined request), in an allocation of their size.
    pub stashed: Box<[u8]>,
    /// Bytes to send. Held only while a response is being written.
    pub output: Option<Buf>,
    /// The current request's head.
    pub req: Request,
    /// When the current request's head was complete, Unix milliseconds.
    pub arrived_unix_ms: u64,
    /// The channel id of the current request.
    pub channel: Vec<u8>,
    /// The address other parties see (`X-Real-IP`/`X-Real-Port`): the socket's,
    /// or the forwarded one from a trusted proxy.
    pub real_ip: Option<IpAddr>,
    pub real_port: Option<u16>,
    /// The peer is a trusted reverse proxy (its forwarding fields count).
    pub trusted: bool,
    /// The request arrived over HTTPS (per a trusted `X-Forwarded-Proto`).
    pub https: bool,
    /// sync: the body held (own, then the peer's after the swap).
    pub held: Vec<u8>,
    /// proxy: the request head as received (its fields are forwarded).
    pub head_copy: Vec<u8>,
    /// The one timer its phase calls for.
    pub timer: Armed,
    /// When the connection began waiting for its current request head (the
    /// oldest are evicted first at the connection limit).
    pub head_since: Instant,
    /// Its place among the connections waiting for a head: a member exactly
    /// while in [`Phase::ReadingHead`].
    pub(crate) head_queue: crate::server::evict::Link,
    /// Consecutive turns that used up their steps without moving a byte.
    pub spins: u8,
    /// The status of the response to the current request (0 before its head).
    pub status: u16,
    /// Its answer acknowledges something not yet durable: it waits for the
    /// journal (see `durable.rs`).
    pub awaiting_sync: bool,
    /// The limit that refused the current request, for the access log.
    pub refused_by: Option<crate::budget::Limit>,
    /// Its place among the connections of its client address, once a request
    /// other than `/health` or `/metrics` was admitted on it.
    pub admission: Option<crate::server::clients::Admission>,
    /// The pipe carrying a body to this consumer without copying (Linux).
    #[cfg(target_os = "linux")]
    pub pipe: Option<crate::sys::splice::Pipe>,
}

/// Notes a turn in which a connection used up its steps; `moved`: whether any
/// byte moved in it. True once `limit` such turns in a row moved nothing (a
/// phase that keeps asking to run without making progress: a bug to stop, not
/// to spin on).
pub fn is_runaway(spins: &mut u8, moved: bool, limit: u8) -> bool {
    *spins = if moved { 0 } else { spins.saturating_add(1) };
    *spins >= limit
}

impl Conn {
    /// Reads what the socket has into the input buffer (taken from `pool` if
    /// needed). Call only when `readable`.
    pub fn fill_input(&mut self, pool: &mut BufPool) -> Fill {
        fill(
            &mut self.stream,
            &mut self.input,
            &mut self.readable,
            self.peer_closed,
            pool,
        )
    }

    /// Begins the response to the current request ([`reply::begin`]): its
    /// head in this connection's output, and the request it answers, which
    /// the caller reads while it adds its fields.
    pub fn begin_response(
        &mut self,
        pool: &mut BufPool,
        status: Status,
        date: &[u8],
        expose: Expose,
    ) -> (Head<'_>, &Request) {
        let Conn {
            output,
            status: recorded,
            req,
            ..
        } = self;
        let head = reply::begin(output, pool, recorded, status, date, &req.origin, expose);
        (head, req)
    }

    /// Gives back field capacity an earlier, larger request left behind (see
    /// [`crate::http::trim_capacity`]); done when the connection waits or idles.
    pub fn trim_fields(&mut self) {
        self.req.trim_capacity();
        for field in [&mut self.channel, &mut self.head_copy] {
            crate::http::trim_capacity(field);
        }
    }

    /// What a counterpart learns about this connection's current request.
    /// `query` is its query as `HttpRelay-Query` shows it: computed by the
    /// caller into scratch space when needed, rather than kept per connection
    /// (its re-encoding can triple the query's length).
    pub fn meta<'a>(&'a self, query: &'a [u8]) -> Meta<'a> {
        Meta {
            ip: self.real_ip,
            port: self.real_port,
            arrived_unix_ms: self.arrived_unix_ms,
            method: &self.req.method,
            query,
        }
    }

    pub fn new(stream: Stream, peer: Option<SocketAddr>, now: Instant) -> Conn {
        Conn {
            stream,
            peer,
            phase: Phase::ReadingHead,
            readable: false,
            writable: false,
            peer_closed: false,
            input: None,
            stashed: Box::default(),
            output: None,
            req: Request::default(),
            arrived_unix_ms: 0,
            channel: Vec::new(),
            real_ip: None,
            real_port: None,
            trusted: false,
            https: false,
            held: Vec::new(),
            head_copy: Vec::new(),
            timer: Armed::default(),
            head_since: now,
            head_queue: Default::default(),
            spins: 0,
            status: 0,
            refused_by: None,
            awaiting_sync: false,
            admission: None,
            #[cfg(target_os = "linux")]
            pipe: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runaway_after_enough_turns_in_a_row_without_bytes() {
        let mut spins = 0;
        for _ in 0..15 {
            assert!(!is_runaway(&mut spins, false, 16));
        }
        assert!(!is_runaway(&mut spins, true, 16), "a byte moved: reset");
        for _ in 0..15 {
            assert!(!is_runaway(&mut spins, false, 16));
        }
        assert!(is_runaway(&mut spins, false, 16));
        let mut stuck = u8::MAX;
        assert!(is_runaway(&mut stuck, false, 16), "no overflow");
    }
}
