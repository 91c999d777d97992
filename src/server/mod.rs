//! The mio shell: one thread, one `Poll`, a slab of connections. It reads request
//! heads, asks the relay core who pairs with whom, and moves body bytes between
//! sockets with backpressure. All socket IO and all clock reads happen here.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::{TcpListener, UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::buf::BufPool;
use crate::config::{Config, Listen, DEFAULT_MAX_CONNS};
use crate::conn::{After, Conn, ConnId, Phase, Stream, Wait};
use crate::http::{HttpDate, QueryFilter, Status};
use crate::relay::{Millis, Relay, Settings, WaiterId};
use crate::reply;
use crate::signal;

mod link;
mod listen;
mod mcast;
mod proxy;
mod respond;
mod route;
mod stats;
mod sync;
mod timers;
mod transfer;

use crate::evict::{self, Queue};
use listen::{raise_descriptor_limit, remove_stale_socket, resolve, widen_backlog};
use respond::{flush, Flushed};
use stats::Stats;

const LISTENER: Token = Token(usize::MAX);
const SIGNAL: Token = Token(usize::MAX - 1);

/// Output buffers hold a response head plus a slice of relayed body; 64 KiB
/// keeps syscalls per relayed megabyte low.
use crate::bound::{MemoryBound, OUTPUT_BUF_SIZE, POOL_KEEP};
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
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerError::Bind(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
            ServerError::Poll(e) => write!(f, "event loop failed: {e}"),
        }
    }
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
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
    listener: Option<Listener>,
    signals: UnixStream,
    conns: Slab<Conn>,
    relay: Relay,
    input_pool: BufPool,
    output_pool: BufPool,
    max_head: usize,
    mcast_max_message: usize,
    sync_max_body: usize,
    sync_total: usize,
    /// Bytes held by sync bodies in all connections.
    sync_held: usize,
    trust_proxy: Vec<IpAddr>,
    timeouts: timers::Timeouts,
    max_conns: usize,
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
    pipes: crate::splice::PipePool,
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
    pub fn bind(config: &Config) -> Result<Server, ServerError> {
        let poll = Poll::new().map_err(ServerError::Poll)?;
        let (mut listener, shown) = match &config.listen {
            Listen::Tcp { addr, port } => {
                let text = if addr.contains(':') {
                    format!("[{addr}]:{port}")
                } else {
                    format!("{addr}:{port}")
                };
                let sockaddr = resolve(&text).map_err(|e| ServerError::Bind(text.clone(), e))?;
                let l =
                    TcpListener::bind(sockaddr).map_err(|e| ServerError::Bind(text.clone(), e))?;
                let shown = l.local_addr().map(|a| a.to_string()).unwrap_or(text);
                (Listener::Tcp(l), shown)
            }
            Listen::Unix(path) => {
                let shown = format!("unix:{}", path.display());
                remove_stale_socket(path).map_err(|e| ServerError::Bind(shown.clone(), e))?;
                let l =
                    UnixListener::bind(path).map_err(|e| ServerError::Bind(shown.clone(), e))?;
                (Listener::Unix(l, path.clone()), shown)
            }
        };
        widen_backlog(&listener);
        let registry = poll.registry();
        match &mut listener {
            Listener::Tcp(l) => registry.register(l, LISTENER, Interest::READABLE),
            Listener::Unix(l, _) => registry.register(l, LISTENER, Interest::READABLE),
        }
        .map_err(ServerError::Poll)?;
        let mut signals = signal::install().map_err(ServerError::Poll)?;
        registry
            .register(&mut signals, SIGNAL, Interest::READABLE)
            .map_err(ServerError::Poll)?;
        let descriptors = raise_descriptor_limit();
        let max_conns = config.max_conns.unwrap_or_else(|| {
            descriptors
                .saturating_sub(RESERVED_FDS)
                .clamp(16, DEFAULT_MAX_CONNS)
        });
        eprintln!("httprelay {} listening on {shown}", reply::VERSION);
        eprintln!(
            "httprelay: worst-case memory for these flags: {}",
            MemoryBound::new(config, max_conns)
        );
        let idle_expiry = config.idle_expiry.as_millis().min(u128::from(u64::MAX)) as u64;
        Ok(Server {
            poll,
            listener: Some(listener),
            signals,
            conns: Slab::new(),
            relay: Relay::new(Settings {
                idle_expiry: idle_expiry.max(1),
                mcast_retain: config.mcast_retain,
                mcast_total: config.mcast_total,
                max_channels: config.max_channels,
                seed: random_seed(),
            }),
            input_pool: BufPool::new(config.max_head, POOL_KEEP),
            output_pool: BufPool::new(OUTPUT_BUF_SIZE, POOL_KEEP),
            max_head: config.max_head,
            mcast_max_message: config.mcast_max_message,
            sync_max_body: config.sync_max_body,
            sync_total: config.sync_total,
            sync_held: 0,
            trust_proxy: config.trust_proxy.clone(),
            timeouts: timers::Timeouts {
                head: config.head_timeout,
                idle: config.idle_timeout,
                body: config.body_timeout,
                wait: config.wait_timeout,
            },
            max_conns,
            accept_paused: false,
            held_back: None,
            head_queue: Queue::default(),
            now: Instant::now(),
            stats: Stats::default(),
            access_log: config.access_log,
            #[cfg(target_os = "linux")]
            pipes: crate::splice::PipePool::default(),
            started: Instant::now(),
            date: HttpDate::default(),
            query_filter: QueryFilter::default(),
            secret: Vec::new(),
            ready: Vec::new(),
            ready_spare: Vec::new(),
            waiters: Vec::new(),
            text: Vec::new(),
            timers: BinaryHeap::new(),
            accept_retry: None,
            shutdown_deadline: None,
            forgotten_since_trim: 0,
        })
    }

    /// Runs until a shutdown signal has been handled.
    pub fn run(&mut self) -> Result<(), ServerError> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.next_timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(ServerError::Poll(e));
            }
            self.now = Instant::now();
            let iteration_start = self.now;
            self.refresh_date();
            let mut accept = false;
            for event in events.iter() {
                match event.token() {
                    // After the batch: an eviction frees a key that a new
                    // connection reuses, and the evicted one's events in this
                    // batch must not reach the new one.
                    LISTENER => accept = true,
                    SIGNAL => self.on_signal(),
                    Token(key) => {
                        let Some(conn) = self.conns.get_mut(key) else {
                            continue;
                        };
                        conn.readable |= event.is_readable() || event.is_read_closed();
                        conn.writable |= event.is_writable() || event.is_write_closed();
                        conn.peer_closed |= event.is_read_closed() || event.is_error();
                        self.ready.push(ConnId(key));
                    }
                }
            }
            if accept {
                self.accept_all();
            }
            self.drive_ready();
            self.now = Instant::now();
            self.fire_timers(self.now);
            self.drive_ready();
            self.stats.loop_iteration(iteration_start.elapsed());
            if let Some(deadline) = self.shutdown_deadline {
                if self.conns.is_empty() || Instant::now() >= deadline {
                    return Ok(());
                }
            }
        }
    }

    fn now_millis(&self) -> Millis {
        self.started.elapsed().as_millis() as Millis
    }

    fn refresh_date(&mut self) {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.date.update(secs);
    }

    /// Removes a parked connection from the core's queue for `wait`.
    fn leave_core(&mut self, id: ConnId, wait: Wait) {
        let now = self.now_millis();
        let conn = &self.conns[id.0];
        let (channel, waiter) = (&conn.channel, WaiterId(id.0));
        match wait {
            Wait::Link(_) => self.relay.link_leave(now, channel, waiter),
            Wait::McastReader => self.relay.mcast_leave(now, channel, waiter),
            Wait::Sync => self.relay.sync_leave(now, channel, waiter),
            Wait::ProxyClient => self.relay.proxy_client_leave(now, channel, &conn.job),
            Wait::ProxyServer => self.relay.proxy_server_leave(now, channel, waiter),
        };
    }

    // ---- accepting and shutting down -------------------------------------------

    fn on_signal(&mut self) {
        let mut drained = [0u8; 64];
        while matches!(self.signals.read(&mut drained), Ok(n) if n > 0) {}
        if self.shutdown_deadline.is_some() {
            return;
        }
        eprintln!("httprelay: shutting down");
        self.shutdown_deadline = Some(Instant::now() + SHUTDOWN_GRACE);
        match self.listener.take() {
            Some(Listener::Tcp(mut l)) => {
                let _ = self.poll.registry().deregister(&mut l);
            }
            Some(Listener::Unix(mut l, path)) => {
                let _ = self.poll.registry().deregister(&mut l);
                let _ = std::fs::remove_file(path);
            }
            None => {}
        }
        self.held_back = None;
        let mut waiters = std::mem::take(&mut self.waiters);
        waiters.clear();
        self.relay.drain_waiters(&mut waiters);
        for &WaiterId(key) in &waiters {
            let id = ConnId(key);
            if let Some(conn) = self.conns.get_mut(key) {
                conn.phase = Phase::ReadingHead;
                let after = if conn.req.framing().has_body() {
                    After::Linger
                } else {
                    After::Close
                };
                self.respond_text(id, Status(503), "503 server shutting down\n", after);
            }
        }
        self.waiters = waiters;
        // Idle keep-alive connections close; busy ones close after their response.
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.ready.push(ConnId(key));
        }
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
                Phase::Producing { consumer, .. } => self.pump(id, consumer),
                Phase::Consuming { producer, .. } => self.pump(producer, id),
                Phase::Publishing { .. } => self.drive_publishing(id),
                Phase::Delivering { .. } => self.begin_reading(id),
                Phase::Reading { .. } => self.drive_reading(id),
                Phase::Holding { .. } => self.drive_holding(id),
                Phase::SendingHeld { .. } => self.drive_sending_held(id),
                Phase::Responding(after) => self.drive_response(id, after),
                Phase::Lingering => self.linger(id),
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
        if crate::conn::is_runaway(&mut conn.spins, moved, RUNAWAY_TURNS) {
            eprintln!(
                "httprelay: closing a runaway connection ({} turns of {MAX_STEPS} steps without moving a byte, phase {:?})",
                conn.spins,
                phase_name(&conn.phase)
            );
            self.stats.runaway += 1;
            self.close(id);
            return;
        }
        self.rearm(id);
        self.ready.push(id);
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
        match self.conns[id.0].phase {
            Phase::Parked(wait) => self.leave_core(id, wait),
            Phase::Producing {
                kind: crate::conn::Transfer::ProxyJob,
                ..
            } => self.proxy_forget_job(id),
            _ => {}
        }
        self.head_done(id);
        let mut conn = self.conns.remove(id.0);
        let _ = self.poll.registry().deregister(&mut conn.stream);
        let now = self.now_millis();
        self.sync_held -= conn.held.len();
        match conn.phase {
            Phase::Producing { consumer, .. } => self.truncate_consumer(consumer),
            Phase::Consuming { producer, kind, .. } => self.consumer_left(producer, kind),
            Phase::Publishing { ref message, .. } => {
                self.relay.mcast_abort(now, &conn.channel, message);
                self.wake_followers(message);
            }
            _ => {}
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

/// A phase's name, for log lines.
fn phase_name(phase: &Phase) -> &'static str {
    match phase {
        Phase::ReadingHead => "reading head",
        Phase::Parked(_) => "parked",
        Phase::Producing { .. } => "producing",
        Phase::Consuming { .. } => "consuming",
        Phase::Publishing { .. } => "publishing",
        Phase::Delivering { .. } => "delivering",
        Phase::Reading { .. } => "reading",
        Phase::Holding { .. } => "holding",
        Phase::SendingHeld { .. } => "sending held",
        Phase::Responding(_) => "responding",
        Phase::Lingering => "lingering",
    }
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Seed for job ids: the kernel's randomness when available, else the clock.
fn random_seed() -> u64 {
    let mut seed = [0u8; 8];
    // SAFETY: the buffer is valid for 8 bytes of writes.
    let got = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), 0) };
    if got == 8 {
        return u64::from_ne_bytes(seed);
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

/// Hands freed heap pages back to the system after a burst (glibc keeps them
/// otherwise; other allocators return them on their own).
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
