//! The listening socket: accepting clients, the connection limit (a client
//! beyond it is held back; the oldest connection waiting for a head is evicted
//! after a grace), and binding helpers.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Instant;

use mio::{Interest, Token};

use super::{Listener, Server, ACCEPT_RETRY, EVICT_GRACE, LISTEN_BACKLOG};
use crate::conn::{Conn, ConnId, Phase, Stream};
use crate::evict::{eviction, Eviction};

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

    /// Room for one more connection: below the limit, or after an eviction.
    pub(super) fn make_room(&mut self) -> bool {
        self.conns.len() < self.max_conns || self.evict_one()
    }

    /// Accepts until `WouldBlock`. Nothing is evicted before an `accept` that
    /// may find nobody: a client is taken first (descriptors are reserved for
    /// one more), then room is made for it. If nothing can be evicted yet it is
    /// held back and accepting pauses until a connection closes or the oldest
    /// one waiting for a head has had its grace.
    pub(super) fn accept_all(&mut self) {
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
    pub(super) fn listener_has_pending(&self) -> bool {
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

/// Raises the accept queue from the 128 that mio (like std) asks for, so that a
/// burst of clients, or clients waiting for a free connection slot, are not
/// dropped (a dropped SYN costs the client a second before it retries).
pub(super) fn widen_backlog(listener: &Listener) {
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

pub(super) fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Raises the soft descriptor limit to the hard one; returns the limit in force.
pub(super) fn raise_descriptor_limit() -> usize {
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
