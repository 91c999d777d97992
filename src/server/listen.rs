//! The listening socket: accepting clients, the connection limit (a client
//! beyond it is held back; the oldest connection waiting for a head is evicted
//! after a grace), and binding helpers.

use std::collections::BinaryHeap;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Instant;

use mio::net::{TcpListener, UnixListener};
use mio::{Interest, Poll, Token};
use slab::Slab;

use super::reply;
use super::stats::Stats;
use super::{
    timers, Clock, Listener, Server, ServerError, ACCEPT_RETRY, EVICT_GRACE, LISTENER,
    LISTEN_BACKLOG, RESERVED_FDS, SIGNAL,
};
use crate::bound::{MemoryBound, OUTPUT_BUF_SIZE, POOL_KEEP};
use crate::budget::{Budget, Limit};
use crate::buf::BufPool;
use crate::config::{Config, Listen, DEFAULT_MAX_CONNS};
use crate::http::{HttpDate, QueryFilter};
use crate::server::conn::{Conn, ConnId, Phase};
use crate::server::evict::{eviction, Eviction, Queue};
use crate::server::stream::Stream;
use crate::sys::{process, signal, socket};

impl Server {
    /// Listens as `config` says, with SIGINT/SIGTERM starting a shutdown.
    pub fn bind(config: &Config) -> Result<Server, ServerError> {
        Server::open(config, true, Clock::System, None)
    }

    /// [`Server::bind`], for flags fitted to `budget` (shown in `/metrics`).
    pub fn bind_with_budget(config: &Config, budget: Budget) -> Result<Server, ServerError> {
        Server::open(config, true, Clock::System, Some(budget))
    }

    /// Listens as `config` says; `signals`: whether this server handles the
    /// process's SIGINT and SIGTERM.
    pub(super) fn open(
        config: &Config,
        signals: bool,
        clock: Clock,
        budget: Option<Budget>,
    ) -> Result<Server, ServerError> {
        let poll = Poll::new().map_err(ServerError::Poll)?;
        let registry = poll.registry();
        let plain = config.tls.as_ref().is_none_or(|t| !t.only);
        let mut shown = Vec::new();
        let listener = if plain {
            let (mut listener, at) = bind(&config.listen)?;
            socket::widen_backlog(listener.raw_fd(), LISTEN_BACKLOG);
            match &mut listener {
                Listener::Tcp(l) => registry.register(l, LISTENER, Interest::READABLE),
                Listener::Unix(l, _) => registry.register(l, LISTENER, Interest::READABLE),
            }
            .map_err(ServerError::Poll)?;
            shown.push(at);
            Some(listener)
        } else {
            None
        };
        #[cfg(feature = "tls")]
        let https = match &config.tls {
            Some(tls) => {
                let https = super::tls::Https::open(tls, registry, super::TLS_LISTENER)?;
                socket::widen_backlog(https.raw_fd(), LISTEN_BACKLOG);
                shown.push(format!("https://{}", https.shown));
                Some(https)
            }
            None => None,
        };
        let shown = shown.join(" and ");
        let signals = if signals {
            let mut pipe = signal::install(config.tls.is_some()).map_err(ServerError::Poll)?;
            registry
                .register(&mut pipe, SIGNAL, Interest::READABLE)
                .map_err(ServerError::Poll)?;
            Some(pipe)
        } else {
            None
        };
        let descriptors = process::raise_descriptor_limit();
        let max_conns = match config.max_conns {
            Some(given) if config.given.has(Limit::MaxConns) => given,
            // Derived or default: no more than the descriptors allow.
            derived => derived
                .unwrap_or(DEFAULT_MAX_CONNS)
                .min(descriptors.saturating_sub(RESERVED_FDS))
                .max(16),
        };
        let (relay, mut store) = super::durable::open(config, process::random_seed())?;
        if let Some(store) = &mut store {
            let waker = mio::Waker::new(registry, super::WAKER).map_err(ServerError::Poll)?;
            store.set_waker(std::sync::Arc::new(waker));
        }
        let bound = MemoryBound::new(config, max_conns);
        eprintln!("httprelay {} listening on {shown}", reply::VERSION);
        eprintln!("httprelay: worst-case memory for these flags: {bound}");
        let now = clock.now();
        Ok(Server {
            poll,
            listener,
            #[cfg(feature = "tls")]
            https,
            signals,
            clock,
            conns: Slab::new(),
            relay,
            store,
            durable: Vec::new(),
            held_for_sync: Vec::new(),
            input_pool: BufPool::new(config.max_head, POOL_KEEP),
            output_pool: BufPool::new(OUTPUT_BUF_SIZE, POOL_KEEP),
            max_head: config.max_head,
            rooms: super::rooms::Rooms::new(config),
            trust_proxy: config.trust_proxy.clone(),
            timeouts: timers::Timeouts {
                head: config.head_timeout,
                idle: config.idle_timeout,
                body: config.body_timeout,
                wait: config.wait_timeout,
                inbox: config.inbox_timeout,
                handshake: config
                    .tls
                    .as_ref()
                    .map_or(crate::config::DEFAULT_TLS_HANDSHAKE_TIMEOUT, |t| {
                        t.handshake_timeout
                    }),
            },
            max_conns,
            clients: super::clients::Clients::default(),
            per_client: config
                .max_conns_per_client
                .unwrap_or((max_conns / 8).max(2)),
            ipv6_prefix: config.ipv6_client_prefix,
            memory: super::stats::Memory {
                budget,
                bound: bound.total(),
            },
            accept_paused: false,
            held_back: None,
            head_queue: Queue::default(),
            now,
            stats: Stats::default(),
            access_log: config.access_log,
            #[cfg(target_os = "linux")]
            pipes: crate::sys::splice::PipePool::default(),
            #[cfg(target_os = "linux")]
            pass_buf: crate::sys::pass::PassBuf::default(),
            started: now,
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
}

impl Server {
    /// The connection begins waiting for a request head: it joins the
    /// eviction candidates as the newest.
    pub(super) fn await_head(&mut self, id: ConnId) {
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
    pub(super) fn head_done(&mut self, id: ConnId) {
        self.head_queue.unlink(&mut self.conns, id.0);
    }

    pub(super) fn retry_accept_at(&mut self, at: Instant) {
        self.accept_retry = Some(self.accept_retry.map_or(at, |r| r.min(at)));
    }

    /// Closes the connection that has waited longest for a request head (a
    /// slow or idle client), never a parked waiter or a transfer, and only
    /// once it has waited [`EVICT_GRACE`]. Returns whether one was closed; if
    /// the oldest is too young, `accept_retry` is set to when it is not.
    pub(super) fn evict_one(&mut self) -> bool {
        let Some(key) = self.head_queue.front() else {
            return false;
        };
        match eviction(self.conns[key].head_since, self.now, EVICT_GRACE) {
            Eviction::Now => {}
            Eviction::At(at) => {
                self.retry_accept_at(at);
                return false;
            }
        }
        debug_assert!(matches!(self.conns[key].phase, Phase::ReadingHead));
        self.head_queue.pop_front(&mut self.conns);
        self.stats.evicted += 1;
        self.close(ConnId(key));
        true
    }

    /// Room for one more connection from `peer`: below the limit, or after
    /// an eviction (of a connection waiting for its head, else of the oldest
    /// waiter of the address holding the most, see [`Server::evict_for`]).
    pub(super) fn make_room(&mut self, peer: Option<SocketAddr>) -> bool {
        self.conns.len() < self.max_conns || self.evict_one() || self.evict_for(peer)
    }

    /// Accepts until `WouldBlock`. Nothing is evicted before an `accept` that
    /// may find nobody: a client is taken first (descriptors are reserved for
    /// one more), then room is made for it. If nothing can be evicted yet it is
    /// held back and accepting pauses until a connection closes or the oldest
    /// one waiting for a head has had its grace.
    pub(super) fn accept_all(&mut self) {
        let was_paused = std::mem::replace(&mut self.accept_paused, false);
        if let Some((stream, peer)) = self.held_back.take() {
            if !self.make_room(peer) {
                self.held_back = Some((stream, peer));
                self.accept_paused = true;
                return;
            }
            self.add_conn(stream, peer);
        }
        for port in [Port::Plain, Port::Tls] {
            if !self.accept_from(port, was_paused) {
                return;
            }
        }
    }

    /// Accepts from one listener until `WouldBlock`; `false` when accepting
    /// paused.
    fn accept_from(&mut self, port: Port, was_paused: bool) -> bool {
        loop {
            let Some(accepted) = self.accept_one(port) else {
                return true;
            };
            match accepted {
                Ok((stream, peer)) => {
                    if !self.make_room(peer) {
                        // Full of real work or of clients still within their
                        // grace: this one waits for the next slot (its bytes
                        // stay in the kernel), later ones in the backlog.
                        self.held_back = Some((stream, peer));
                        self.accept_paused = true;
                        return false;
                    }
                    self.add_conn(stream, peer);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if socket::is_resource_exhaustion(&e) => {
                    // Out of descriptors before the configured limit (accept
                    // fails so even when nobody waits). With a client waiting,
                    // make room the same way, or retry on a timer (readiness is
                    // edge-triggered, so no new event would come); with nobody
                    // waiting, the next client is reported anyway.
                    if !self.listener_has_pending() {
                        return true;
                    }
                    if self.evict_one() {
                        continue;
                    }
                    if !was_paused {
                        eprintln!("httprelay: accept paused: {e}");
                    }
                    self.retry_accept_at(self.now + ACCEPT_RETRY);
                    self.accept_paused = true;
                    return false;
                }
                // The client gave up before we accepted (ECONNABORTED and such).
                Err(_) => {}
            }
        }
    }

    /// One client from the listener of `port`; `None` when there is no
    /// such listener.
    fn accept_one(&mut self, port: Port) -> Option<io::Result<(Stream, Option<SocketAddr>)>> {
        match port {
            Port::Plain => Some(match self.listener.as_ref()? {
                Listener::Tcp(l) => l.accept().map(|(s, addr)| {
                    // Small relayed messages must not wait for Nagle's algorithm.
                    let _ = s.set_nodelay(true);
                    (Stream::tcp(s), Some(addr))
                }),
                Listener::Unix(l, _) => l.accept().map(|(s, _)| (Stream::unix(s), None)),
            }),
            #[cfg(feature = "tls")]
            Port::Tls => {
                let https = self.https.as_ref()?;
                Some(https.listener.accept().and_then(|(s, addr)| {
                    let _ = s.set_nodelay(true);
                    let session = https.identity.accept(s).map_err(io::Error::other)?;
                    Ok((Stream::tls(session), Some(addr)))
                }))
            }
            #[cfg(not(feature = "tls"))]
            Port::Tls => None,
        }
    }

    /// Whether a client waits in a listen backlog.
    pub(super) fn listener_has_pending(&self) -> bool {
        let plain = self
            .listener
            .as_ref()
            .is_some_and(|l| socket::has_pending(l.raw_fd()));
        #[cfg(feature = "tls")]
        let tls = self.https.as_ref().is_some_and(|h| {
            use std::os::fd::AsRawFd;
            socket::has_pending(h.listener.as_raw_fd())
        });
        #[cfg(not(feature = "tls"))]
        let tls = false;
        plain || tls
    }

    pub(super) fn add_conn(&mut self, mut stream: Stream, peer: Option<SocketAddr>) {
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
}

/// The listeners a client can come from.
#[derive(Clone, Copy)]
enum Port {
    /// `--port` or `--unix`.
    Plain,
    /// `--tls-port`.
    Tls,
}

/// Binds the listening socket; returns it with the address it is shown as.
fn bind(listen: &Listen) -> Result<(Listener, String), ServerError> {
    let bound = match listen {
        Listen::Tcp { addr, port } => {
            let (l, shown) = bind_tcp(addr, *port)?;
            (Listener::Tcp(l), shown)
        }
        Listen::Unix(path) => {
            let shown = format!("unix:{}", path.display());
            remove_stale_socket(path).map_err(|e| ServerError::Bind(shown.clone(), e))?;
            let l = UnixListener::bind(path).map_err(|e| ServerError::Bind(shown.clone(), e))?;
            (Listener::Unix(l, path.clone()), shown)
        }
    };
    Ok(bound)
}

/// Binds a TCP listener on `addr` (an IPv6 literal without brackets, too)
/// and `port`; returns it with the address it is shown as.
pub(super) fn bind_tcp(addr: &str, port: u16) -> Result<(TcpListener, String), ServerError> {
    let text = if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    };
    let sockaddr = resolve(&text).map_err(|e| ServerError::Bind(text.clone(), e))?;
    let l = TcpListener::bind(sockaddr).map_err(|e| ServerError::Bind(text.clone(), e))?;
    let shown = l.local_addr().map(|a| a.to_string()).unwrap_or(text);
    Ok((l, shown))
}

pub(super) fn resolve(text: &str) -> io::Result<SocketAddr> {
    text.to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::AddrNotAvailable, "no address"))
}

/// Removes a socket file left by an earlier run; refuses to remove anything else.
pub(super) fn remove_stale_socket(path: &std::path::Path) -> io::Result<()> {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::server::testing::{get, status_of, Shell};
    use crate::server::EVICT_GRACE;

    #[test]
    fn beyond_the_limit_a_client_is_held_back_until_the_oldest_silent_one_had_its_grace() {
        let mut shell = Shell::new(&["--max-conns", "2"]);
        let mut oldest = shell.connect();
        shell.advance(Duration::from_millis(100));
        let mut younger = shell.connect();
        let mut third = shell.connect();
        assert_eq!(shell.open_conns(), 2, "the third is held back, not served");
        assert!(shell.server.held_back.is_some());
        third.send(&mut shell, &get("/health"));
        assert_eq!(third.take(), b"", "its request waits in the kernel");
        shell.advance(EVICT_GRACE - Duration::from_millis(150));
        assert!(!oldest.closed(), "within its grace");
        shell.advance(Duration::from_millis(100));
        assert!(oldest.closed(), "evicted once its grace is over");
        assert!(!younger.closed(), "only one is evicted per client waiting");
        assert_eq!(shell.server.stats.evicted, 1);
        assert_eq!(
            status_of(&third.text()),
            200,
            "the held-back client is served"
        );
    }

    #[test]
    fn parked_waiters_are_never_evicted_and_a_freed_slot_goes_to_the_held_back_client() {
        let mut shell = Shell::new(&["--max-conns", "2"]);
        let mut waiters = [shell.connect(), shell.connect()];
        for (n, waiter) in waiters.iter_mut().enumerate() {
            waiter.send(&mut shell, &get(&format!("/link/w{n}")));
        }
        let mut third = shell.connect();
        third.send(&mut shell, &get("/health"));
        shell.advance(EVICT_GRACE * 4);
        assert!(waiters.iter_mut().all(|w| !w.closed()));
        assert_eq!(shell.server.stats.evicted, 0);
        assert_eq!(third.take(), b"");
        let [first, _second] = waiters;
        first.close(&mut shell);
        assert_eq!(status_of(&third.text()), 200);
        assert_eq!(shell.open_conns(), 2);
    }
}
