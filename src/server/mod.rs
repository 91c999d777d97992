//! The mio shell: one thread, one `Poll`, a slab of connections. It reads request
//! heads, asks the relay core who pairs with whom, and moves body bytes between
//! sockets with backpressure. All socket IO and all clock reads happen here.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::{TcpListener, UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::buf::BufPool;
use crate::config::{Config, Listen};
use crate::conn::{After, Conn, ConnId, Fill, Phase, Stream, Timer, Wait};
use crate::http::{
    find_param, parse_request, Framing, HeadWriter, HttpDate, QueryFilter, Status, Target,
};
use crate::relay::{Method, Millis, Relay, Settings, WaiterId};
use crate::reply::{self, Expose};
use crate::signal;

pub(crate) mod evict;
mod link;
mod mcast;
mod proxy;
mod stats;
mod sync;
mod transfer;

use evict::Queue;
use stats::{Gauges, Stats};

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
/// `--max-conns` when not given (fewer when descriptors are scarcer): what
/// keeps the relay's worst case within a small gateway's memory (README,
/// "Memory bound").
pub const DEFAULT_MAX_CONNS: usize = 1024;
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
    head_timeout: Duration,
    idle_timeout: Duration,
    body_timeout: Duration,
    wait_timeout: Option<Duration>,
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
            head_timeout: config.head_timeout,
            idle_timeout: config.idle_timeout,
            body_timeout: config.body_timeout,
            wait_timeout: config.wait_timeout,
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

    fn next_timeout(&mut self, now: Instant) -> Option<Duration> {
        if !self.ready.is_empty() {
            // Connections still have work queued: only look for new events.
            return Some(Duration::ZERO);
        }
        // Drop timer entries that no longer match their connection.
        while let Some(Reverse((at, key))) = self.timers.peek().copied() {
            match self.conns.get(key) {
                Some(conn) if conn.scheduled == Some(at) => break,
                _ => {
                    self.timers.pop();
                }
            }
        }
        let core = self
            .relay
            .poll_timeout()
            .map(|due| self.started + Duration::from_millis(due));
        let conn = self.timers.peek().map(|Reverse((at, _))| *at);
        [core, conn, self.accept_retry, self.shutdown_deadline]
            .into_iter()
            .flatten()
            .min()
            // Round up so that the timer has passed when the poll returns.
            .map(|at| at.saturating_duration_since(now) + Duration::from_millis(1))
    }

    fn fire_timers(&mut self, now: Instant) {
        let now_ms = self.now_millis();
        self.forgotten_since_trim += self.relay.handle_timeout(now_ms);
        // Expiry runs in batches; once a large burst of it is over, give the
        // freed pages back.
        let burst_over = self.relay.poll_timeout().is_none_or(|due| due > now_ms);
        if self.forgotten_since_trim >= 1024 && burst_over {
            self.forgotten_since_trim = 0;
            release_free_memory();
        }
        if self.accept_retry.is_some_and(|at| at <= now) {
            self.accept_retry = None;
            self.accept_all();
        }
        while let Some(Reverse((at, key))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(conn) = self.conns.get_mut(key).filter(|c| c.scheduled == Some(at)) else {
                continue;
            };
            conn.scheduled = None;
            match conn.deadline {
                Some(deadline) if deadline <= now => self.on_timeout(ConnId(key)),
                // The deadline moved later since this entry was pushed.
                Some(_) => self.schedule(ConnId(key)),
                None => {}
            }
        }
    }

    /// Makes sure the heap holds an entry no later than the connection's
    /// deadline. A later deadline reuses the earlier entry (which re-schedules
    /// when it fires), so phase changes on a busy connection push nothing and
    /// the heap stays as small as the number of connections.
    fn schedule(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(id.0) else {
            return;
        };
        if let Some(deadline) = conn.deadline {
            if conn.scheduled.is_none_or(|s| deadline < s) {
                conn.scheduled = Some(deadline);
                self.timers.push(Reverse((deadline, id.0)));
            }
        }
    }

    /// The timer a connection needs in its phase.
    fn timer_for(&self, conn: &Conn) -> Timer {
        match conn.phase {
            Phase::ReadingHead if conn.input.as_ref().is_some_and(|i| !i.is_empty()) => Timer::Head,
            Phase::ReadingHead => Timer::Idle,
            Phase::Parked(_) if self.wait_timeout.is_some() => Timer::Wait,
            Phase::Parked(_) => Timer::None,
            Phase::Lingering => Timer::Linger,
            _ => Timer::Progress,
        }
    }

    /// Arms the timer the connection's phase calls for, unless it is armed
    /// already (a head's deadline counts from its first byte, not its last).
    fn rearm(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get(id.0) else {
            return;
        };
        debug_assert_queued(conn);
        let timer = self.timer_for(conn);
        if timer == conn.timer {
            return;
        }
        let after = match timer {
            Timer::None => None,
            Timer::Idle => Some(self.idle_timeout),
            Timer::Head => Some(self.head_timeout),
            Timer::Progress => Some(self.body_timeout / 4),
            Timer::Wait => self.wait_timeout,
            Timer::Linger => Some(LINGER),
        };
        let conn = &mut self.conns[id.0];
        conn.timer = timer;
        conn.quiet_checks = 0;
        conn.stream.progressed = false;
        conn.deadline = after.map(|after| self.now + after);
        self.schedule(id);
    }

    fn on_timeout(&mut self, id: ConnId) {
        let conn = &mut self.conns[id.0];
        conn.deadline = None;
        match conn.timer {
            Timer::None => {}
            Timer::Idle => {
                self.stats.timeouts[0] += 1;
                self.close(id);
            }
            Timer::Linger => self.close(id),
            Timer::Head => {
                self.stats.timeouts[1] += 1;
                conn.req.keep_alive = false;
                conn.req.method.clear();
                conn.req.origin.clear();
                if let Some(input) = conn.input.take() {
                    self.input_pool.give(input);
                }
                self.respond_text(
                    id,
                    Status(408),
                    "408 request head not received in time\n",
                    After::Close,
                );
                self.ready.push(id);
            }
            Timer::Progress => {
                if conn.stream.progressed {
                    conn.stream.progressed = false;
                    conn.quiet_checks = 0;
                } else {
                    conn.quiet_checks += 1;
                }
                if conn.quiet_checks < 4 {
                    conn.deadline = Some(self.now + self.body_timeout / 4);
                    self.schedule(id);
                    return;
                }
                // No progress for the whole body timeout: close both sides of
                // a transfer (the counterpart's response ends truncated).
                let counterpart = match conn.phase {
                    Phase::Producing { consumer, .. } => Some(consumer),
                    Phase::Consuming { producer, .. } => Some(producer),
                    _ => None,
                };
                self.stats.timeouts[2] += 1;
                // Reset rather than close: unsent bytes would otherwise stay
                // queued in the kernel for a client that stopped reading.
                conn.stream.reset_on_close();
                if let Some(other) = counterpart.and_then(|o| self.conns.get(o.0)) {
                    other.stream.reset_on_close();
                }
                self.close(id);
                if let Some(other) = counterpart {
                    self.close(other);
                }
            }
            Timer::Wait => {
                let Phase::Parked(wait) = conn.phase else {
                    return;
                };
                self.stats.timeouts[3] += 1;
                self.leave_core(id, wait);
                let conn = &mut self.conns[id.0];
                conn.phase = Phase::ReadingHead;
                conn.req.keep_alive = false;
                let after = if matches!(wait, Wait::Link(_)) && conn.req.framing().has_body() {
                    After::Linger
                } else {
                    After::Close
                };
                self.respond_text(
                    id,
                    Status(504),
                    "504 nobody came within the wait timeout\n",
                    after,
                );
                self.ready.push(id);
            }
        }
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

    /// The connection begins waiting for a request head: it joins the
    /// eviction candidates as the newest.
    fn await_head(&mut self, id: ConnId) {
        let conn = &mut self.conns[id.0];
        conn.phase = Phase::ReadingHead;
        conn.head_since = self.now;
        self.head_queue.push_back(&mut self.conns, id.0);
        if self.accept_paused {
            // A client may be held back: it can have this slot after the grace.
            self.retry_accept_at(self.now + EVICT_GRACE);
        }
    }

    /// The connection no longer waits for a head (one arrived, or it is being
    /// answered or closed): it is no eviction candidate any more.
    fn head_done(&mut self, id: ConnId) {
        self.head_queue.unlink(&mut self.conns, id.0);
    }

    fn retry_accept_at(&mut self, at: Instant) {
        self.accept_retry = Some(self.accept_retry.map_or(at, |r| r.min(at)));
    }

    /// Closes the connection that has waited longest for a request head (a
    /// slow or idle client), never a parked waiter or a transfer, and only
    /// once it has waited [`EVICT_GRACE`]. Returns whether one was closed; if
    /// the oldest is too young, `accept_retry` is set to when it is not.
    fn evict_one(&mut self) -> bool {
        let Some(key) = self.head_queue.front() else {
            return false;
        };
        let evictable_at = self.conns[key].head_since + EVICT_GRACE;
        if evictable_at > self.now {
            self.retry_accept_at(evictable_at);
            return false;
        }
        debug_assert!(matches!(self.conns[key].phase, Phase::ReadingHead));
        self.head_queue.pop_front(&mut self.conns);
        self.stats.evicted += 1;
        self.close(ConnId(key));
        true
    }

    /// Room for one more connection: below the limit, or after an eviction.
    fn make_room(&mut self) -> bool {
        self.conns.len() < self.max_conns || self.evict_one()
    }

    // ---- accepting and shutting down -------------------------------------------

    /// Accepts until `WouldBlock`. Nothing is evicted before an `accept` that
    /// may find nobody: a client is taken first (descriptors are reserved for
    /// one more), then room is made for it. If nothing can be evicted yet it is
    /// held back and accepting pauses until a connection closes or the oldest
    /// one waiting for a head has had its grace.
    fn accept_all(&mut self) {
        let was_paused = std::mem::replace(&mut self.accept_paused, false);
        if let Some((stream, peer)) = self.held_back.take() {
            if !self.make_room() {
                self.held_back = Some((stream, peer));
                self.accept_paused = true;
                return;
            }
            self.add_conn(stream, peer);
        }
        loop {
            let accepted = match &self.listener {
                Some(Listener::Tcp(l)) => l.accept().map(|(s, addr)| {
                    // Small relayed messages must not wait for Nagle's algorithm.
                    let _ = s.set_nodelay(true);
                    (Stream::tcp(s), Some(addr))
                }),
                Some(Listener::Unix(l, _)) => l.accept().map(|(s, _)| (Stream::unix(s), None)),
                None => return,
            };
            match accepted {
                Ok((stream, peer)) => {
                    if !self.make_room() {
                        // Full of real work or of clients still within their
                        // grace: this one waits for the next slot (its bytes
                        // stay in the kernel), later ones in the backlog.
                        self.held_back = Some((stream, peer));
                        self.accept_paused = true;
                        return;
                    }
                    self.add_conn(stream, peer);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_resource_exhaustion(&e) => {
                    // Out of descriptors before the configured limit (accept
                    // fails so even when nobody waits). With a client waiting,
                    // make room the same way, or retry on a timer (readiness is
                    // edge-triggered, so no new event would come); with nobody
                    // waiting, the next client is reported anyway.
                    if !self.listener_has_pending() {
                        return;
                    }
                    if self.evict_one() {
                        continue;
                    }
                    if !was_paused {
                        eprintln!("httprelay: accept paused: {e}");
                    }
                    self.retry_accept_at(self.now + ACCEPT_RETRY);
                    self.accept_paused = true;
                    return;
                }
                // The client gave up before we accepted (ECONNABORTED and such).
                Err(_) => {}
            }
        }
    }

    /// Whether a client waits in the listen backlog.
    fn listener_has_pending(&self) -> bool {
        use std::os::fd::AsRawFd;
        let fd = match &self.listener {
            Some(Listener::Tcp(l)) => l.as_raw_fd(),
            Some(Listener::Unix(l, _)) => l.as_raw_fd(),
            None => return false,
        };
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, and no waiting.
        let ready = unsafe { libc::poll(&mut pfd, 1, 0) };
        ready > 0 && pfd.revents & libc::POLLIN != 0
    }

    fn add_conn(&mut self, mut stream: Stream, peer: Option<SocketAddr>) {
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let registered = self.poll.registry().register(
            &mut stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        );
        if let Err(e) = registered {
            eprintln!("httprelay: cannot register connection: {e}");
            return;
        }
        entry.insert(Conn::new(stream, peer, self.now));
        self.head_queue.push_back(&mut self.conns, key);
        self.stats.accepted += 1;
        self.rearm(ConnId(key));
    }

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

    fn read_head(&mut self, id: ConnId) -> Step {
        let shutting_down = self.shutdown_deadline.is_some();
        let conn = &mut self.conns[id.0];
        if let Some(input) = conn.input.as_mut().filter(|i| !i.is_empty()) {
            match parse_request(input.pending(), self.max_head, &mut conn.req) {
                Ok(Some(head_len)) => {
                    conn.head_copy.clear();
                    if conn.req.path.starts_with(b"/proxy/") {
                        // Proxy forwards the request's fields; keep the head.
                        conn.head_copy
                            .extend_from_slice(&input.pending()[..head_len]);
                    }
                    input.consume(head_len);
                    return self.handle_request(id);
                }
                Ok(None) => {}
                Err(e) => {
                    let status = Status(e.status());
                    let text = format!("{} {e}\n", status.0);
                    conn.req.keep_alive = false;
                    self.respond_text(id, status, &text, After::Linger);
                    return Step::Again;
                }
            }
        } else if shutting_down {
            self.close(id);
            return Step::Closed;
        }
        if !conn.readable {
            self.input_pool.give_if_empty(&mut conn.input);
            return Step::Blocked;
        }
        match conn.fill_input(&mut self.input_pool) {
            Fill::Read => Step::Again,
            Fill::Blocked => {
                self.input_pool.give_if_empty(&mut conn.input);
                Step::Blocked
            }
            Fill::Gone => {
                // The client closed between requests (or mid-head: nothing to answer).
                self.close(id);
                Step::Closed
            }
        }
    }

    fn handle_request(&mut self, id: ConnId) -> Step {
        self.head_done(id);
        let conn = &mut self.conns[id.0];
        conn.arrived_unix_ms = unix_millis();
        // The next head (maybe already buffered) gets its own deadline.
        conn.timer = Timer::None;
        conn.status = 0;
        conn.stream.written = 0;
        let trusted = conn
            .peer
            .is_some_and(|p| self.trust_proxy.contains(&p.ip().to_canonical()));
        see_through_proxy(conn, trusted);
        if self.shutdown_deadline.is_some() {
            conn.req.keep_alive = false;
            return self.refuse(id, Status(503), "503 server shutting down\n");
        }
        let req = &conn.req;
        if req.target == Some(Target::Asterisk) {
            if req.method_is("OPTIONS") {
                return self.refuse(id, Status(200), "");
            }
            conn.req.keep_alive = false;
            return self.refuse(id, Status(400), "400 the * target is only for OPTIONS\n");
        }
        let path = req.path.as_slice();
        if path == b"/health" {
            return self.refuse(id, Status(200), reply::VERSION);
        }
        if path == b"/metrics" {
            return self.respond_metrics(id);
        }
        let Some((method, rest)) = route(path) else {
            return self.refuse(id, Status(404), "404 page not found\n");
        };
        // link, mcast, sync: the last segment; proxy: the segment after /proxy/.
        let channel = match method {
            Method::Proxy => rest.split(|&b| b == b'/').next().unwrap_or_default(),
            _ => rest.rsplit(|&b| b == b'/').next().unwrap_or_default(),
        };
        conn.channel.clear();
        conn.channel.extend_from_slice(channel);
        if conn.req.method_is("OPTIONS") {
            self.respond_preflight(id, method == Method::Proxy);
            return Step::Again;
        }
        match method {
            Method::Link => self.handle_link(id),
            Method::Mcast => self.handle_mcast(id),
            Method::Sync => self.handle_sync(id),
            Method::Proxy => self.handle_proxy(id),
        }
    }

    /// Answers a request the relay will not take further (errors, `/health`),
    /// skipping or refusing its unread body.
    fn refuse(&mut self, id: ConnId, status: Status, text: &str) -> Step {
        let after = body_after(&mut self.conns[id.0]);
        self.respond_text(id, status, text, after);
        Step::Again
    }

    /// The write secret the request presents: query `wsecret`, else the header.
    fn load_secret(&mut self, id: ConnId) {
        let req = &self.conns[id.0].req;
        if !find_param(&req.query, b"wsecret", &mut self.secret) {
            self.secret.clear();
            self.secret.extend_from_slice(&req.wsecret_header);
        }
    }

    /// The request was accepted: a client that waits for `100 Continue` gets it.
    fn continue_body(&mut self, id: ConnId) {
        let conn = &mut self.conns[id.0];
        if conn.req.expect_continue {
            conn.req.expect_continue = false;
            let output = conn.output.get_or_insert_with(|| self.output_pool.take());
            output.push(b"HTTP/1.1 100 Continue\r\n\r\n");
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
        match flush(conn) {
            Ok(()) => {
                self.output_pool.give_if_empty(&mut conn.output);
                Step::Blocked
            }
            Err(_) => {
                self.close(id);
                Step::Closed
            }
        }
    }

    fn drive_response(&mut self, id: ConnId, after: After) -> Step {
        let conn = &mut self.conns[id.0];
        if flush(conn).is_err() {
            self.close(id);
            return Step::Closed;
        }
        if conn.output.as_ref().is_some_and(|o| !o.is_empty()) {
            return Step::Blocked;
        }
        self.output_pool.give_if_empty(&mut conn.output);
        if self.access_log && conn.status != 0 {
            log_request(conn);
            conn.status = 0;
        }
        match after {
            After::NextRequest => {
                conn.trim_fields();
                self.await_head(id);
                Step::Again
            }
            After::Close => {
                self.close(id);
                Step::Closed
            }
            After::Linger => {
                conn.stream.shutdown_write();
                conn.phase = Phase::Lingering;
                if let Some(input) = conn.input.take() {
                    self.input_pool.give(input);
                }
                Step::Again
            }
        }
    }

    fn linger(&mut self, id: ConnId) -> Step {
        let conn = &mut self.conns[id.0];
        let mut scratch = [0u8; 4096];
        let mut discarded = 0;
        while conn.readable && discarded < LINGER_MAX_BYTES {
            match conn.stream.read(&mut scratch) {
                Ok(0) => break,
                Ok(n) => discarded += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.readable = false;
                    return Step::Blocked;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        if !conn.readable {
            return Step::Blocked;
        }
        self.close(id);
        Step::Closed
    }

    // ---- responses -------------------------------------------------------------

    /// Queues a complete response with a short text body (no body for `HEAD`)
    /// and moves the connection to [`Phase::Responding`].
    fn respond_text(&mut self, id: ConnId, status: Status, text: &str, after: After) {
        self.respond_body(
            id,
            status,
            b"text/plain; charset=utf-8",
            text.as_bytes(),
            after,
        );
    }

    /// Queues a complete response with a short body (no body for `HEAD`) and
    /// moves the connection to [`Phase::Responding`].
    fn respond_body(
        &mut self,
        id: ConnId,
        status: Status,
        content_type: &[u8],
        body: &[u8],
        after: After,
    ) {
        // Answered: no longer waiting for a head (if it was).
        self.head_done(id);
        let Some(conn) = self.conns.get_mut(id.0) else {
            return;
        };
        conn.status = status.0;
        if status.0 >= 400 {
            self.stats.reject(status.0);
        }
        let after = match after {
            After::NextRequest if !conn.req.keep_alive => After::Close,
            other => other,
        };
        let keep_alive = after == After::NextRequest;
        let output = conn.output.get_or_insert_with(|| self.output_pool.take());
        let mut w = HeadWriter::new(output.spare(), status);
        let expose = expose_for(&conn.req.path);
        reply::common(&mut w, self.date.as_bytes(), &conn.req.origin, expose);
        if !body.is_empty() {
            w.header("Content-Type", content_type);
        }
        if status.0 == 405 {
            // Only link and mcast refuse methods (sync takes any).
            w.header("Allow", b"GET, POST, PUT, OPTIONS");
        }
        w.header_number("Content-Length", body.len() as u64);
        reply::persistence(&mut w, keep_alive, conn.req.minor_version);
        let body = if conn.req.method_is("HEAD") {
            b""
        } else {
            body
        };
        if let Some(n) = w.finish_with_body(body) {
            output.commit(n);
        } else {
            // Only a huge reflected Origin can overflow; answer without it.
            conn.req.origin.clear();
            const TEXT: &[u8] = b"431 Origin too large to reflect\n";
            let mut w = HeadWriter::new(output.spare(), Status(431));
            w.header("Content-Type", b"text/plain; charset=utf-8")
                .header_number("Content-Length", TEXT.len() as u64)
                .header("Connection", b"close");
            let n = w.finish_with_body(TEXT).unwrap_or(0);
            output.commit(n);
            conn.phase = Phase::Responding(After::Linger);
            return;
        }
        conn.phase = Phase::Responding(after);
    }

    /// A response head did not fit in the output buffer (it reflects values
    /// from up to two request heads, and the `HttpRelay-Query` re-encoding can
    /// triple a query): the request gets `500` instead, and the connection closes.
    fn refuse_oversized_head(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(id.0) else {
            return;
        };
        conn.phase = Phase::ReadingHead;
        conn.req.keep_alive = false;
        let after = if conn.req.framing().has_body() {
            After::Linger
        } else {
            After::Close
        };
        self.respond_text(id, Status(500), "500 response head too large\n", after);
        self.ready.push(id);
    }

    fn respond_metrics(&mut self, id: ConnId) -> Step {
        let gauges = Gauges {
            open_connections: self.conns.len(),
            waiters: self.relay.waiters_by_method(),
            channels: self.relay.channels_by_method(),
            remembered_channels: self.relay.remembered_channels(),
            refused_no_room: self.relay.refused_no_room(),
            mcast_bytes: self.relay.mcast_bytes(),
            sync_bytes: self.sync_held,
        };
        let mut text = std::mem::take(&mut self.text);
        self.stats.render(&gauges, &mut text);
        let after = body_after(&mut self.conns[id.0]);
        self.respond_body(
            id,
            Status(200),
            b"text/plain; version=0.0.4; charset=utf-8",
            &text,
            after,
        );
        self.text = text;
        Step::Again
    }

    fn respond_preflight(&mut self, id: ConnId, proxy: bool) {
        let conn = &mut self.conns[id.0];
        conn.status = 200;
        let after = body_after(conn);
        let keep_alive = after == After::NextRequest;
        let output = conn.output.get_or_insert_with(|| self.output_pool.take());
        let mut w = HeadWriter::new(output.spare(), Status(200));
        let expose = if proxy {
            Expose::All
        } else {
            expose_for(&conn.req.path)
        };
        reply::common(&mut w, self.date.as_bytes(), &conn.req.origin, expose);
        let allow_headers = if proxy { b"*" } else { reply::ALLOW_HEADERS };
        w.header("Access-Control-Allow-Methods", reply::ALLOW_METHODS)
            .header("Access-Control-Allow-Headers", allow_headers)
            .header("Access-Control-Max-Age", b"86400");
        w.header_number("Content-Length", 0);
        reply::persistence(&mut w, keep_alive, conn.req.minor_version);
        let n = w.finish().unwrap_or(0);
        output.commit(n);
        conn.phase = Phase::Responding(after);
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

/// Writes pending output until it is empty or the socket would block.
fn flush(conn: &mut Conn) -> io::Result<()> {
    let Some(output) = conn.output.as_mut() else {
        return Ok(());
    };
    while !output.is_empty() && conn.writable {
        let asked = output.len();
        match conn.stream.write(output.pending()) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                output.consume(n);
                // A short write means the socket buffer is full: readiness will
                // be reported again when it drains (saves a write that would block).
                if n < asked {
                    conn.writable = false;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => conn.writable = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// What follows a response to a request whose body the handler does not read:
/// a small body already buffered is skipped and the connection stays usable;
/// otherwise it closes (lingering, so the response survives).
fn body_after(conn: &mut Conn) -> After {
    let skipped = match conn.req.framing() {
        Framing::Empty | Framing::Length(0) => true,
        Framing::Length(n) => match conn.input.as_mut() {
            Some(input) if input.len() as u64 >= n => {
                input.consume(n as usize);
                true
            }
            _ => false,
        },
        Framing::Chunked => false,
    };
    match (skipped, conn.req.keep_alive) {
        (true, true) => After::NextRequest,
        (true, false) => After::Close,
        (false, _) => {
            conn.req.keep_alive = false;
            After::Linger
        }
    }
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

fn resolve(text: &str) -> io::Result<SocketAddr> {
    text.to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::AddrNotAvailable, "no address"))
}

/// Removes a socket file left by an earlier run; refuses to remove anything else.
fn remove_stale_socket(path: &std::path::Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "path exists and is not a socket",
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Raises the accept queue from the 128 that mio (like std) asks for, so that a
/// burst of clients, or clients waiting for a free connection slot, are not
/// dropped (a dropped SYN costs the client a second before it retries).
fn widen_backlog(listener: &Listener) {
    use std::os::fd::AsRawFd;
    let fd = match listener {
        Listener::Tcp(l) => l.as_raw_fd(),
        Listener::Unix(l, _) => l.as_raw_fd(),
    };
    // SAFETY: listen(2) on a socket that is already listening only changes its
    // backlog.
    unsafe {
        libc::listen(fd, LISTEN_BACKLOG);
    }
}

fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// The method and the rest of the path after its prefix.
fn route(path: &[u8]) -> Option<(Method, &[u8])> {
    [
        (&b"/link/"[..], Method::Link),
        (b"/mcast/", Method::Mcast),
        (b"/sync/", Method::Sync),
        (b"/proxy/", Method::Proxy),
    ]
    .into_iter()
    .find_map(|(prefix, method)| path.strip_prefix(prefix).map(|rest| (method, rest)))
}

fn expose_for(path: &[u8]) -> Expose {
    match route(path) {
        Some((Method::Mcast, _)) => Expose::Mcast,
        Some((Method::Proxy, _)) => Expose::All,
        _ => Expose::Metadata,
    }
}

/// Sets the address and scheme other parties see: the socket's, or those a
/// trusted reverse proxy forwarded.
fn see_through_proxy(conn: &mut Conn, trusted: bool) {
    let req = &conn.req;
    let forwarded_ip = trusted
        .then(|| {
            std::str::from_utf8(&req.x_real_ip)
                .ok()?
                .trim()
                .parse::<IpAddr>()
                .ok()
        })
        .flatten();
    match forwarded_ip {
        Some(ip) => {
            conn.real_ip = Some(ip);
            conn.real_port = std::str::from_utf8(&req.x_real_port)
                .ok()
                .and_then(|p| p.trim().parse().ok());
        }
        None => {
            conn.real_ip = conn.peer.map(|p| p.ip());
            conn.real_port = conn.peer.map(|p| p.port());
        }
    }
    conn.trusted = trusted;
    conn.https = trusted && req.forwarded_proto.eq_ignore_ascii_case(b"https");
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

/// Raises the soft descriptor limit to the hard one; returns the limit in force.
fn raise_descriptor_limit() -> usize {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
        usize::try_from(limit.rlim_cur)
            .unwrap_or(usize::MAX)
            .min(1 << 24)
    }
}

/// One access-log line: time, client, method, path (never the query: it may
/// carry a write secret), status, bytes sent, duration.
fn log_request(conn: &Conn) {
    let now_ms = unix_millis();
    let mut time = [0u8; 20];
    crate::http::format_rfc3339(now_ms / 1000, &mut time);
    let client = match conn.peer {
        Some(peer) => peer.to_string(),
        None => String::from("unix"),
    };
    eprintln!(
        "{} {client} {} {} {} {} {}ms",
        String::from_utf8_lossy(&time),
        String::from_utf8_lossy(&conn.req.method),
        String::from_utf8_lossy(&conn.req.raw_path),
        conn.status,
        conn.stream.written,
        now_ms.saturating_sub(conn.arrived_unix_ms),
    );
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
