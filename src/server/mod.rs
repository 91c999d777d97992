//! The mio shell: one thread, one `Poll`, a slab of connections. It reads request
//! heads, asks the relay core who pairs with whom, and moves body bytes between
//! sockets with backpressure. All socket IO happens here; the loop's clock is
//! a [`Clock`], which the shell's unit tests (`testing`) stop and move by hand.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::{TcpListener, UnixListener, UnixStream};
use mio::{Events, Poll, Token};
use slab::Slab;

use crate::buf::BufPool;
use crate::http::{HttpDate, QueryFilter, Status};
use crate::relay::{Millis, Relay, WaiterId};
use crate::server::conn::{Conn, ConnId, Phase, Transfer, Wait};
use crate::server::stream::Stream;

mod clients;
mod compaction;
mod conn;
mod durable;
mod evict;
mod fair;
mod hold;
mod inbox;
mod link;
mod listen;
mod mcast;
mod piping;
mod proxy;
mod reply;
mod respond;
mod rooms;
mod route;
mod routes;
mod shutdown;
mod stats;
mod store;
mod stream;
mod sync;
#[cfg(test)]
mod testing;
mod timers;
#[cfg(feature = "tls")]
mod tls;
mod transfer;

use evict::Queue;
pub use reply::VERSION;
use respond::{flush, Flushed};
use stats::Stats;

const LISTENER: Token = Token(usize::MAX);
const SIGNAL: Token = Token(usize::MAX - 1);
/// A journal rewrite's thread is done (`server/compaction.rs`).
const WAKER: Token = Token(usize::MAX - 2);
/// The HTTPS listener (`--tls-port`).
#[cfg(feature = "tls")]
const TLS_LISTENER: Token = Token(usize::MAX - 3);

/// How long a connection lingers after an error response before it is closed.
const LINGER: Duration = Duration::from_secs(2);
/// Descriptors kept free for the listener, the poller and the signal pipe when
/// the connection limit is derived from `RLIMIT_NOFILE`.
const RESERVED_FDS: usize = 32;
/// Clients that may wait in the kernel's accept queue (the kernel caps it at
/// `net.core.somaxconn`); at the connection limit they wait there.
const LISTEN_BACKLOG: libc::c_int = 4096;
/// Most bytes discarded while lingering.
const LINGER_MAX_BYTES: usize = 1 << 20;
/// How long shutdown waits for transfers in progress.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Phase steps one connection may take before others get a turn.
const MAX_STEPS: usize = 64;
/// The answer when a request would make the relay remember one channel more
/// than `--max-channels`.
const NO_ROOM: &str = "503 relay remembers too many channels\n";
/// The answer to a waiter whose wait timeout passed.
const WAIT_OVER: (Status, &str) = (Status(504), "504 nobody came within the wait timeout\n");
/// The answer to requests while the relay shuts down.
const SHUTTING_DOWN: (Status, &str) = (Status(503), "503 server shutting down\n");

/// Turns of `MAX_STEPS` steps without moving a byte after which a connection
/// counts as runaway and is closed.
const RUNAWAY_TURNS: u8 = 16;
/// Retry interval when accept fails for lack of descriptors or memory.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// How long a connection waits for a request head before it may be evicted:
/// every client gets a chance to send its head.
const EVICT_GRACE: Duration = Duration::from_millis(500);

/// Errors that stop the server: bind, poll, signal setup.
#[derive(Debug)]
pub enum ServerError {
    Bind(String, io::Error),
    Poll(io::Error),
    /// The journal in `--data-dir` could not be opened.
    Store(String, io::Error),
    /// The certificate pair (`--tls-cert`, `--tls-key`) could not be loaded.
    #[cfg(feature = "tls")]
    Tls(tls::LoadError),
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerError::Bind(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
            ServerError::Poll(e) => write!(f, "event loop failed: {e}"),
            ServerError::Store(dir, e) => write!(f, "cannot open the journal in {dir}: {e}"),
            #[cfg(feature = "tls")]
            ServerError::Tls(e) => write!(f, "cannot serve HTTPS: {e}"),
        }
    }
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

impl Listener {
    fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l, _) => l.as_raw_fd(),
        }
    }
}

/// Whether the loop goes on after a turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Turn {
    Continue,
    /// Shut down, and every connection is closed or out of time.
    Finished,
}

/// Where the loop reads the time: the system's monotonic clock, or one that
/// moves only when told (unit tests of the shell's timers).
#[derive(Clone, Copy, Debug)]
enum Clock {
    System,
    #[cfg_attr(not(test), allow(dead_code))]
    Manual(Instant),
}

impl Clock {
    fn now(self) -> Instant {
        match self {
            Clock::System => Instant::now(),
            Clock::Manual(at) => at,
        }
    }
}

/// Whether a connection can take another step right now.
pub(crate) enum Step {
    /// The phase changed or progress was made: look again.
    Again,
    /// Waiting for readiness, a counterpart or a timer.
    Blocked,
    /// The connection is gone.
    Closed,
}

pub struct Server {
    poll: Poll,
    /// `None` with `--tls-only`, and once shutting down.
    listener: Option<Listener>,
    /// The HTTPS listener and the certificate pair new handshakes use.
    #[cfg(feature = "tls")]
    https: Option<tls::Https>,
    /// The read end of the signal pipe; `None` when the process's signals are
    /// not this server's (a server driven by unit tests).
    signals: Option<UnixStream>,
    /// Where the loop reads the time.
    clock: Clock,
    conns: Slab<Conn>,
    relay: Relay,
    input_pool: BufPool,
    output_pool: BufPool,
    max_head: usize,
    /// Each method's own limits and counts.
    rooms: rooms::Rooms,
    trust_proxy: Vec<IpAddr>,
    timeouts: timers::Timeouts,
    max_conns: usize,
    /// The memory budget and the worst case of the flags, for `/metrics`.
    memory: stats::Memory,
    /// The journal (`--data-dir`), what the core marked durable and not yet
    /// appended, and the connections whose answers wait for it.
    store: Option<store::Store>,
    durable: Vec<crate::relay::Durable>,
    held_for_sync: Vec<ConnId>,
    /// Connections admitted per client address, and the share of each.
    clients: clients::Clients,
    per_client: usize,
    ipv6_prefix: u8,
    /// Accepting is paused at the connection limit until a connection closes
    /// or one becomes evictable (`accept_retry`).
    accept_paused: bool,
    /// A client accepted at the limit while nothing could be evicted: it gets
    /// the next free slot (not registered meanwhile; its bytes wait in the
    /// kernel), and later clients wait in the listen backlog.
    held_back: Option<(Stream, Option<SocketAddr>)>,
    /// The connections in `Phase::ReadingHead`, in the order they began
    /// waiting for their head: the eviction candidates, oldest first.
    head_queue: Queue,
    /// The time of the current loop iteration (read once per poll).
    now: Instant,
    stats: Stats,
    access_log: bool,
    #[cfg(target_os = "linux")]
    pipes: crate::sys::splice::PipePool,
    /// The one buffer content passes through socket to socket (allocated at
    /// the first pass, shared by every transfer in turn).
    #[cfg(target_os = "linux")]
    pass_buf: crate::sys::pass::PassBuf,
    started: Instant,
    date: HttpDate,
    query_filter: QueryFilter,
    secret: Vec<u8>,
    /// Connections to drive once the current batch of events is handled.
    ready: Vec<ConnId>,
    ready_spare: Vec<ConnId>,
    waiters: Vec<WaiterId>,
    /// Scratch for header values built from parts (cookie paths, URLs).
    text: Vec<u8>,
    /// Connection deadlines (lazy: an entry counts only if it still matches the
    /// connection's `deadline`).
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    accept_retry: Option<Instant>,
    shutdown_deadline: Option<Instant>,
    /// Channels expired since freed memory was last given back to the system.
    forgotten_since_trim: usize,
}

impl Server {
    /// Runs until a shutdown signal has been handled.
    pub fn run(&mut self) -> Result<(), ServerError> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.next_timeout(self.clock.now());
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(ServerError::Poll(e));
            }
            if self.turn(&events) == Turn::Finished {
                return Ok(());
            }
        }
    }

    /// One iteration of the loop after a poll: accept, drive the connections
    /// that became ready and those their counterparts woke, fire due timers.
    fn turn(&mut self, events: &Events) -> Turn {
        self.now = self.clock.now();
        let iteration_start = Instant::now();
        self.refresh_date();
        let mut accept = false;
        for event in events.iter() {
            match event.token() {
                // After the batch: an eviction frees a key that a new
                // connection reuses, and the evicted one's events in this
                // batch must not reach the new one.
                LISTENER => accept = true,
                #[cfg(feature = "tls")]
                TLS_LISTENER => accept = true,
                SIGNAL => self.on_signal(),
                // The end of the turn finishes the rewrite (`persist`).
                WAKER => {}
                Token(key) => {
                    let Some(conn) = self.conns.get_mut(key) else {
                        continue;
                    };
                    conn.readable |= event.is_readable() || event.is_read_closed();
                    conn.writable |= event.is_writable() || event.is_write_closed();
                    conn.peer_closed |= event.is_read_closed() || event.is_error();
                    if event.is_writable() {
                        // A TLS session's own records (handshake, alert)
                        // that the socket did not take at once.
                        conn.stream.flush_records();
                    }
                    self.ready.push(ConnId(key));
                }
            }
        }
        if accept {
            self.accept_all();
        }
        self.drive_ready();
        self.now = self.clock.now();
        self.fire_timers(self.now);
        self.drive_ready();
        if self.store.is_some() {
            // The turn's records made durable at once; the answers they held
            // go out.
            self.persist();
            self.drive_ready();
        }
        self.stats.loop_iteration(iteration_start.elapsed());
        match self.shutdown_deadline {
            Some(deadline) if self.conns.is_empty() || self.clock.now() >= deadline => {
                Turn::Finished
            }
            _ => Turn::Continue,
        }
    }

    /// The core's clock: milliseconds since start, from [`CLOCK_BASE`].
    fn now_millis(&self) -> Millis {
        CLOCK_BASE + self.now.saturating_duration_since(self.started).as_millis() as Millis
    }

    fn refresh_date(&mut self) {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.date.update(secs);
    }

    // ---- driving connections ---------------------------------------------------

    fn drive_ready(&mut self) {
        // Driving may queue more connections (counterparts); take turns until quiet.
        // Two vectors take turns (the batch being driven, the one filling up),
        // so that neither is reallocated once warm.
        let mut rounds = 0;
        while !self.ready.is_empty() && rounds < 16 {
            rounds += 1;
            let mut batch =
                std::mem::replace(&mut self.ready, std::mem::take(&mut self.ready_spare));
            for &id in &batch {
                self.drive(id);
            }
            batch.clear();
            self.ready_spare = batch;
        }
    }

    fn drive(&mut self, id: ConnId) {
        let Some(moved_before) = self.conns.get(id.0).map(|c| c.stream.moved_total) else {
            return;
        };
        for _ in 0..MAX_STEPS {
            let Some(conn) = self.conns.get(id.0) else {
                return;
            };
            if !conn.stashed.is_empty() && !matches!(conn.phase, Phase::Parked(_)) {
                self.unstash_input(id);
            }
            let Some(conn) = self.conns.get(id.0) else {
                return;
            };
            debug_assert_queued(conn);
            let step = match conn.phase {
                Phase::ReadingHead => self.read_head(id),
                Phase::Parked(_) => self.drive_parked(id),
                Phase::Producing { .. } => self.transfer(id),
                Phase::Consuming { producer, kind, .. } => self.drive_consumer(id, producer, kind),
                Phase::Holding { .. } => self.drive_holding(id),
                Phase::Responding(after) => self.drive_response(id, after),
                Phase::Lingering => self.linger(id),
                _ => self.drive_room(id),
            };
            match step {
                Step::Again => {}
                Step::Blocked => {
                    self.rearm(id);
                    return;
                }
                Step::Closed => return,
            }
        }
        // More work remains; let other connections run first. A connection that
        // keeps using up its steps without moving a byte is a bug in its phase
        // logic: close it loudly rather than spin at full CPU forever.
        let Some(conn) = self.conns.get_mut(id.0) else {
            return;
        };
        let moved = conn.stream.moved_total != moved_before;
        if crate::server::conn::is_runaway(&mut conn.spins, moved, RUNAWAY_TURNS) {
            eprintln!(
                "httprelay: closing a runaway connection ({} turns of {MAX_STEPS} steps without moving a byte, phase {:?})",
                conn.spins,
                conn.phase.name()
            );
            self.stats.runaway += 1;
            self.close(id);
            return;
        }
        self.rearm(id);
        self.ready.push(id);
    }

    /// A broken invariant of the shell (a state no code should reach): the
    /// connection is closed with one log line and counted, as a runaway is,
    /// rather than left to go on in a state nothing expects.
    pub(super) fn broken(&mut self, id: ConnId, what: &str) {
        eprintln!("httprelay: closing a connection: broken invariant ({what})");
        self.stats.broken += 1;
        self.close(id);
    }

    /// A consumer is driven: its producer's transfer moves, unless it is a
    /// piping receiver that left.
    fn drive_consumer(&mut self, id: ConnId, producer: ConnId, kind: Transfer) -> Step {
        if routes::gone_at_fin(kind) && self.conns[id.0].peer_closed {
            // It closed its side: gone, as the reference server counts it
            // (a link consumer may still be reading). One that has its whole
            // response already leaves quietly: the others may still be
            // receiving.
            self.receiver_done(producer, id);
            self.close(id);
            return Step::Closed;
        }
        match self.transfer(producer) {
            Step::Closed
                if matches!(
                    self.conns.get(id.0).map(|c| &c.phase),
                    Some(Phase::Consuming { .. })
                ) =>
            {
                self.broken(id, "a consumer whose producer is not sending");
                Step::Closed
            }
            Step::Closed => Step::Again,
            step => step,
        }
    }

    /// The connection waits in the core as `wait`.
    fn park(&mut self, id: ConnId, wait: Wait) -> Step {
        let conn = &mut self.conns[id.0];
        conn.phase = Phase::Parked(wait);
        // A waiter keeps no input buffer, only the bytes it already sent.
        conn.stashed = self.input_pool.stash(&mut conn.input);
        conn.trim_fields();
        Step::Again
    }

    /// A connection left `Parked`: the bytes it stashed are input again.
    fn unstash_input(&mut self, id: ConnId) {
        if let Some(conn) = self.conns.get_mut(id.0) {
            self.input_pool.unstash(&mut conn.stashed, &mut conn.input);
        }
    }

    fn drive_parked(&mut self, id: ConnId) -> Step {
        let conn = &mut self.conns[id.0];
        if conn.peer_closed {
            // A waiter that leaves is removed at once (close tells the core).
            self.close(id);
            return Step::Closed;
        }
        match self.send_output(id) {
            Flushed::Closed => Step::Closed,
            Flushed::Done | Flushed::Pending => Step::Blocked,
        }
    }

    // ---- closing ---------------------------------------------------------------

    /// Closes a connection and settles whatever depended on it: a parked waiter
    /// leaves its queue; a transfer's counterpart is told.
    fn close(&mut self, id: ConnId) {
        if !self.conns.contains(id.0) {
            return;
        }
        self.closing(id);
        self.head_done(id);
        let mut conn = self.conns.remove(id.0);
        if conn.stream.is_handshaking() {
            // Timed out, refused, or the client left before it was done.
            self.stats.tls_handshake_failures += 1;
        }
        let _ = self.poll.registry().deregister(&mut conn.stream);
        self.closed(id, &conn);
        if let Some(admission) = conn.admission {
            self.clients.release(admission);
        }
        if let Some(buf) = conn.input.take() {
            self.input_pool.give(buf);
        }
        if let Some(buf) = conn.output.take() {
            self.output_pool.give(buf);
        }
        #[cfg(target_os = "linux")]
        if let Some(pipe) = conn.pipe.take() {
            self.pipes.give(pipe);
        }
        if self.accept_paused {
            // A descriptor was freed: try accepting again now.
            self.accept_retry = Some(self.now);
        }
    }
}

impl evict::Queued for Conn {
    fn link(&self) -> &evict::Link {
        &self.head_queue
    }
    fn link_mut(&mut self) -> &mut evict::Link {
        &mut self.head_queue
    }
}

/// A connection is among the eviction candidates exactly while it waits for
/// a request head.
fn debug_assert_queued(conn: &Conn) {
    debug_assert_eq!(
        conn.head_queue.is_queued(),
        matches!(conn.phase, Phase::ReadingHead),
        "eviction queue membership must follow the phase ({:?})",
        conn.phase
    );
}

/// Where the core's clock starts: far enough from 0 that a time before the
/// start (an inbox entry restored from a journal, written before a restart)
/// is still a time.
pub(super) const CLOCK_BASE: Millis = 1 << 40;

pub(super) fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
