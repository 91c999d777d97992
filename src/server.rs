//! The mio shell: one thread, one `Poll`, a slab of connections. It reads request
//! heads, asks the relay core who pairs with whom, and moves body bytes between
//! sockets with backpressure. All socket IO and all clock reads happen here.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::{TcpListener, UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::buf::{Buf, BufPool};
use crate::config::{Config, Listen};
use crate::conn::{After, Conn, ConnId, Phase, Stream};
use crate::http::{
    chunk_header, find_param, parse_request, BodyDecoder, BodyError, Framing, HeadWriter, HttpDate,
    QueryFilter, Status, Target,
};
use crate::relay::{LinkArrival, Millis, Relay, RelayError, Role, WaiterId};
use crate::reply::{self, Meta};
use crate::signal;

const LISTENER: Token = Token(usize::MAX);
const SIGNAL: Token = Token(usize::MAX - 1);

/// Output buffers hold a response head plus a slice of relayed body; 64 KiB
/// keeps syscalls per relayed megabyte low.
const OUTPUT_BUF_SIZE: usize = 64 * 1024;
/// Buffers kept in each pool for reuse.
const POOL_KEEP: usize = 256;
/// How long a connection lingers after an error response before it is closed.
const LINGER: Duration = Duration::from_secs(2);
/// Most bytes discarded while lingering.
const LINGER_MAX_BYTES: usize = 1 << 20;
/// How long shutdown waits for transfers in progress.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Phase steps one connection may take before others get a turn.
const MAX_STEPS: usize = 64;
/// Retry interval when accept fails for lack of descriptors or memory.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

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
enum Step {
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
    started: Instant,
    date: HttpDate,
    query_filter: QueryFilter,
    secret: Vec<u8>,
    /// Connections to drive once the current batch of events is handled.
    ready: Vec<ConnId>,
    waiters: Vec<WaiterId>,
    /// Connection deadlines (lazy: an entry counts only if it still matches the
    /// connection's `deadline`).
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    accept_retry: Option<Instant>,
    shutdown_deadline: Option<Instant>,
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
        eprintln!("httprelay {} listening on {shown}", reply::VERSION);
        let idle_expiry = config.idle_expiry.as_millis().min(u128::from(u64::MAX)) as u64;
        Ok(Server {
            poll,
            listener: Some(listener),
            signals,
            conns: Slab::new(),
            relay: Relay::new(idle_expiry.max(1)),
            input_pool: BufPool::new(config.max_head, POOL_KEEP),
            output_pool: BufPool::new(OUTPUT_BUF_SIZE, POOL_KEEP),
            max_head: config.max_head,
            started: Instant::now(),
            date: HttpDate::default(),
            query_filter: QueryFilter::default(),
            secret: Vec::new(),
            ready: Vec::new(),
            waiters: Vec::new(),
            timers: BinaryHeap::new(),
            accept_retry: None,
            shutdown_deadline: None,
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
            self.refresh_date();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(),
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
            self.drive_ready();
            self.fire_timers(Instant::now());
            self.drive_ready();
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
                Some(conn) if conn.deadline == Some(at) => break,
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
        self.relay.handle_timeout(self.now_millis());
        if self.accept_retry.is_some_and(|at| at <= now) {
            self.accept_retry = None;
            self.accept_all();
        }
        while let Some(Reverse((at, key))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if self.conns.get(key).is_some_and(|c| c.deadline == Some(at)) {
                // The only connection deadline so far: lingering is over.
                self.close(ConnId(key));
            }
        }
    }

    fn set_deadline(&mut self, id: ConnId, after: Duration) {
        let at = Instant::now() + after;
        if let Some(conn) = self.conns.get_mut(id.0) {
            conn.deadline = Some(at);
            self.timers.push(Reverse((at, id.0)));
        }
    }

    // ---- accepting and shutting down -------------------------------------------

    fn accept_all(&mut self) {
        loop {
            let accepted = match &self.listener {
                Some(Listener::Tcp(l)) => l.accept().map(|(s, addr)| {
                    // Small relayed messages must not wait for Nagle's algorithm.
                    let _ = s.set_nodelay(true);
                    (Stream::Tcp(s), Some(addr))
                }),
                Some(Listener::Unix(l, _)) => l.accept().map(|(s, _)| (Stream::Unix(s), None)),
                None => return,
            };
            match accepted {
                Ok((stream, peer)) => self.add_conn(stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_resource_exhaustion(&e) => {
                    // Readiness is edge-triggered: retry on a timer, not on an event.
                    eprintln!("httprelay: accept paused: {e}");
                    self.accept_retry = Some(Instant::now() + ACCEPT_RETRY);
                    return;
                }
                // The client gave up before we accepted (ECONNABORTED and such).
                Err(_) => {}
            }
        }
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
        entry.insert(Conn::new(stream, peer));
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
        let mut rounds = 0;
        while !self.ready.is_empty() && rounds < 16 {
            rounds += 1;
            let batch = std::mem::take(&mut self.ready);
            for &id in &batch {
                self.drive(id);
            }
            let mut batch = batch;
            batch.clear();
            if self.ready.is_empty() {
                self.ready = batch;
            }
        }
    }

    fn drive(&mut self, id: ConnId) {
        for _ in 0..MAX_STEPS {
            let Some(conn) = self.conns.get(id.0) else {
                return;
            };
            let step = match conn.phase {
                Phase::ReadingHead => self.read_head(id),
                Phase::Parked(_) => self.drive_parked(id),
                Phase::Producing { consumer, .. } => self.pump(id, consumer),
                Phase::Consuming { producer, .. } => self.pump(producer, id),
                Phase::Responding(after) => self.drive_response(id, after),
                Phase::Lingering => self.linger(id),
            };
            match step {
                Step::Again => {}
                Step::Blocked | Step::Closed => return,
            }
        }
        // More work remains; let other connections run first.
        self.ready.push(id);
    }

    fn read_head(&mut self, id: ConnId) -> Step {
        let shutting_down = self.shutdown_deadline.is_some();
        let conn = &mut self.conns[id.0];
        if let Some(input) = conn.input.as_mut().filter(|i| !i.is_empty()) {
            match parse_request(input.pending(), self.max_head, &mut conn.req) {
                Ok(Some(head_len)) => {
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
        let input = conn.input.get_or_insert_with(|| self.input_pool.take());
        match conn.stream.read(input.spare()) {
            Ok(0) => {
                // The client closed between requests (or mid-head: nothing to answer).
                self.close(id);
                Step::Closed
            }
            Ok(n) => {
                input.commit(n);
                Step::Again
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                conn.readable = false;
                self.input_pool.give_if_empty(&mut conn.input);
                Step::Blocked
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Step::Again,
            Err(_) => {
                self.close(id);
                Step::Closed
            }
        }
    }

    fn handle_request(&mut self, id: ConnId) -> Step {
        let conn = &mut self.conns[id.0];
        conn.arrived_unix_ms = unix_millis();
        if self.shutdown_deadline.is_some() {
            conn.req.keep_alive = false;
            let after = body_after(conn);
            self.respond_text(id, Status(503), "503 server shutting down\n", after);
            return Step::Again;
        }
        let req = &conn.req;
        if req.target == Some(Target::Asterisk) {
            let (status, text) = if req.method_is("OPTIONS") {
                (Status(200), "")
            } else {
                (Status(400), "400 the * target is only for OPTIONS\n")
            };
            let after = body_after(conn);
            self.respond_text(id, status, text, after);
            return Step::Again;
        }
        let path = req.path.as_slice();
        if path == b"/health" {
            let after = body_after(conn);
            self.respond_text(id, Status(200), reply::VERSION, after);
            return Step::Again;
        }
        if let Some(rest) = path.strip_prefix(b"/link/") {
            // The channel id is the last path segment.
            let id_start = rest.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
            conn.channel.clear();
            conn.channel.extend_from_slice(&rest[id_start..]);
            return self.handle_link(id);
        }
        let after = body_after(conn);
        self.respond_text(id, Status(404), "404 page not found\n", after);
        Step::Again
    }

    fn handle_link(&mut self, id: ConnId) -> Step {
        let now = self.now_millis();
        let conn = &mut self.conns[id.0];
        let role = match conn.req.method.as_slice() {
            b"GET" => Role::Consumer,
            b"POST" | b"PUT" => Role::Producer,
            b"OPTIONS" => {
                self.respond_preflight(id);
                return Step::Again;
            }
            _ => {
                let after = body_after(conn);
                self.respond_text(
                    id,
                    Status(405),
                    "405 method not allowed: link takes GET, POST and PUT\n",
                    after,
                );
                return Step::Again;
            }
        };
        if !find_param(&conn.req.query, b"wsecret", &mut self.secret) {
            self.secret.clear();
            self.secret.extend_from_slice(&conn.req.wsecret_header);
        }
        match self
            .relay
            .link_arrive(now, &conn.channel, role, WaiterId(id.0), &self.secret)
        {
            Err(RelayError::WrongSecret) => {
                let after = body_after(conn);
                self.respond_text(
                    id,
                    Status(401),
                    "401 wrong write secret for this channel\n",
                    after,
                );
                Step::Again
            }
            Ok(arrival) => {
                self.query_filter
                    .filter(&conn.req.query, &mut conn.query_meta);
                if conn.req.expect_continue {
                    let output = conn.output.get_or_insert_with(|| self.output_pool.take());
                    output.push(b"HTTP/1.1 100 Continue\r\n\r\n");
                }
                match arrival {
                    LinkArrival::Parked => {
                        conn.phase = Phase::Parked(role);
                        // A request without a body needs no input buffer while it waits.
                        self.input_pool.give_if_empty(&mut conn.input);
                        Step::Again
                    }
                    LinkArrival::Paired(WaiterId(other)) => {
                        let other = ConnId(other);
                        match role {
                            Role::Producer => self.start_transfer(id, other),
                            Role::Consumer => self.start_transfer(other, id),
                        }
                        Step::Again
                    }
                }
            }
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

    /// Pairs producer `p` and consumer `c`: the consumer's response head goes out
    /// at once and the producer's body follows as it arrives.
    fn start_transfer(&mut self, p: ConnId, c: ConnId) {
        let Some((producer, consumer)) = self.conns.get2_mut(p.0, c.0) else {
            debug_assert!(false, "paired with a connection that is gone");
            return;
        };
        debug_assert!(matches!(
            producer.phase,
            Phase::Parked(_) | Phase::ReadingHead
        ));
        debug_assert!(matches!(
            consumer.phase,
            Phase::Parked(_) | Phase::ReadingHead
        ));
        let framing = producer.req.framing();
        // An HTTP/1.0 consumer cannot take chunked coding: its body ends at close.
        let until_close = framing == Framing::Chunked && consumer.req.minor_version == 0;
        if until_close {
            consumer.req.keep_alive = false;
        }
        let output = consumer
            .output
            .get_or_insert_with(|| self.output_pool.take());
        let mut w = HeadWriter::new(output.spare(), Status(200));
        reply::common(&mut w, self.date.as_bytes(), &consumer.req.origin);
        let meta = Meta {
            peer: producer.peer,
            arrived_unix_ms: producer.arrived_unix_ms,
            method: &producer.req.method,
            query: &producer.query_meta,
        };
        reply::metadata(&mut w, &meta, consumer.arrived_unix_ms);
        if !producer.req.content_type.is_empty() {
            w.header("Content-Type", &producer.req.content_type);
        }
        match framing {
            Framing::Length(n) => {
                w.header_number("Content-Length", n);
            }
            Framing::Empty => {
                w.header_number("Content-Length", 0);
            }
            Framing::Chunked if !until_close => {
                w.header("Transfer-Encoding", b"chunked");
            }
            Framing::Chunked => {}
        }
        reply::persistence(&mut w, consumer.req.keep_alive, consumer.req.minor_version);
        match w.finish() {
            Some(n) => output.commit(n),
            None => {
                // Reflected values too large for one head: refuse both sides.
                producer.phase = Phase::ReadingHead;
                consumer.phase = Phase::ReadingHead;
                producer.req.keep_alive = false;
                consumer.req.keep_alive = false;
                let text = "500 response head too large\n";
                self.respond_text(c, Status(500), text, After::Close);
                self.respond_text(p, Status(500), text, After::Linger);
                self.ready.extend([p, c]);
                return;
            }
        }
        producer.phase = Phase::Producing {
            consumer: c,
            body: BodyDecoder::new(framing),
        };
        consumer.phase = Phase::Consuming {
            producer: p,
            chunked: framing == Framing::Chunked && !until_close,
            ended: false,
        };
        self.ready.extend([p, c]);
    }

    /// Moves body bytes from producer `p` to consumer `c` until one side blocks.
    fn pump(&mut self, p: ConnId, c: ConnId) -> Step {
        loop {
            let Some((producer, consumer)) = self.conns.get2_mut(p.0, c.0) else {
                return Step::Closed;
            };
            // A `100 Continue` may still be on its way to the producer.
            if producer.output.is_some() {
                if flush(producer).is_err() {
                    self.close(p);
                    return Step::Again;
                }
                self.output_pool.give_if_empty(&mut producer.output);
            }
            let Phase::Producing { body, .. } = &mut producer.phase else {
                return Step::Closed;
            };
            let Phase::Consuming { chunked, ended, .. } = &mut consumer.phase else {
                return Step::Closed;
            };
            let chunked = *chunked;
            let Some(output) = consumer.output.as_mut() else {
                debug_assert!(false, "a consumer holds its output buffer");
                return Step::Closed;
            };
            let mut progress = false;

            // 1. Decode buffered producer bytes into the consumer's output.
            if let Some(input) = producer.input.as_mut() {
                while !input.is_empty() && !body.is_done() {
                    // Room for a chunk-size line and the CRLF after the data.
                    let overhead = if chunked { 20 } else { 0 };
                    let room = output.spare_len().saturating_sub(overhead);
                    if room == 0 {
                        break;
                    }
                    let decoded = match body.decode(input.pending(), room) {
                        Ok(d) => d,
                        Err(e) => {
                            self.abort_bad_body(p, c, e);
                            return Step::Again;
                        }
                    };
                    if !decoded.data.is_empty() {
                        let data = &input.pending()[decoded.data.clone()];
                        if chunked {
                            let mut line = [0u8; 20];
                            let n = chunk_header(data.len(), &mut line);
                            output.push(&line[..n]);
                        }
                        output.push(data);
                        if chunked {
                            output.push(b"\r\n");
                        }
                    }
                    input.consume(decoded.consumed);
                    progress |= decoded.consumed > 0;
                    if decoded.consumed == 0 {
                        break;
                    }
                }
            }
            if body.is_done() && chunked && !*ended && output.spare_len() >= 5 {
                output.push(b"0\r\n\r\n");
                *ended = true;
            }
            let done = body.is_done() && (!chunked || *ended);

            // 2. Send what the consumer's output holds.
            if !output.is_empty() && consumer.writable {
                match consumer.stream.write(output.pending()) {
                    Ok(n) => {
                        output.consume(n);
                        progress = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => consumer.writable = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => progress = true,
                    Err(_) => {
                        self.close(c);
                        return Step::Again;
                    }
                }
            }

            // 3. Read more of the body, only when the output has room for it
            //    (this is the backpressure: a slow consumer slows the producer).
            let input_empty = producer.input.as_ref().is_none_or(Buf::is_empty);
            let direct = body
                .remaining_in_length()
                .filter(|_| input_empty && !chunked);
            if let Some(remaining) = direct.filter(|_| producer.readable) {
                // A Content-Length body needs no decoding: read it straight into
                // the consumer's output, never past its end (pipelined bytes
                // after it belong to the producer's next request).
                let spare = output.spare();
                let limit = usize::try_from(remaining).map_or(spare.len(), |r| r.min(spare.len()));
                if limit > 0 {
                    match producer.stream.read(&mut spare[..limit]) {
                        Ok(0) => {
                            self.close(p);
                            return Step::Again;
                        }
                        Ok(n) => {
                            let _ = body.decode(&spare[..n], n);
                            output.commit(n);
                            progress = true;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            producer.readable = false
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => progress = true,
                        Err(_) => {
                            self.close(p);
                            return Step::Again;
                        }
                    }
                }
            } else if direct.is_none()
                && !body.is_done()
                && input_empty
                && producer.readable
                && output.spare_len() > 20
            {
                let input = producer.input.get_or_insert_with(|| self.input_pool.take());
                match producer.stream.read(input.spare()) {
                    Ok(0) => {
                        // The producer left mid-body: the consumer's response stays
                        // visibly incomplete.
                        self.close(p);
                        return Step::Again;
                    }
                    Ok(n) => {
                        input.commit(n);
                        progress = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => producer.readable = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => progress = true,
                    Err(_) => {
                        self.close(p);
                        return Step::Again;
                    }
                }
            }

            if done && output.is_empty() {
                self.finish_transfer(p, c);
                return Step::Again;
            }
            if !progress {
                return Step::Blocked;
            }
        }
    }

    /// The whole body reached the consumer: both get their final state.
    fn finish_transfer(&mut self, p: ConnId, c: ConnId) {
        let Some((producer, consumer)) = self.conns.get2_mut(p.0, c.0) else {
            return;
        };
        consumer.phase = Phase::Responding(if consumer.req.keep_alive {
            After::NextRequest
        } else {
            After::Close
        });
        let output = producer
            .output
            .get_or_insert_with(|| self.output_pool.take());
        let mut w = HeadWriter::new(output.spare(), Status(200));
        reply::common(&mut w, self.date.as_bytes(), &producer.req.origin);
        let meta = Meta {
            peer: consumer.peer,
            arrived_unix_ms: consumer.arrived_unix_ms,
            method: &consumer.req.method,
            query: &consumer.query_meta,
        };
        reply::metadata(&mut w, &meta, producer.arrived_unix_ms);
        w.header_number("Content-Length", 0);
        reply::persistence(&mut w, producer.req.keep_alive, producer.req.minor_version);
        let after = if producer.req.keep_alive {
            After::NextRequest
        } else {
            After::Close
        };
        match w.finish() {
            Some(n) => {
                output.commit(n);
                producer.phase = Phase::Responding(after);
            }
            None => {
                producer.phase = Phase::ReadingHead;
                producer.req.keep_alive = false;
                self.respond_text(
                    p,
                    Status(500),
                    "500 response head too large\n",
                    After::Close,
                );
            }
        }
        self.ready.extend([p, c]);
    }

    /// The producer's chunked framing is broken: it gets `400`, the consumer a
    /// truncated body.
    fn abort_bad_body(&mut self, p: ConnId, c: ConnId, error: BodyError) {
        self.truncate_consumer(c);
        if let Some(producer) = self.conns.get_mut(p.0) {
            producer.phase = Phase::ReadingHead;
            producer.req.keep_alive = false;
            let text = format!("400 {error}\n");
            self.respond_text(p, Status(400), &text, After::Linger);
        }
    }

    /// The consumer's response can never complete: send what is buffered (no
    /// final chunk) and close, so that it ends visibly short.
    fn truncate_consumer(&mut self, c: ConnId) {
        if let Some(consumer) = self.conns.get_mut(c.0) {
            consumer.phase = Phase::Responding(After::Close);
            consumer.req.keep_alive = false;
            self.ready.push(c);
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
        match after {
            After::NextRequest => {
                conn.phase = Phase::ReadingHead;
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
                self.set_deadline(id, LINGER);
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
        let Some(conn) = self.conns.get_mut(id.0) else {
            return;
        };
        let after = match after {
            After::NextRequest if !conn.req.keep_alive => After::Close,
            other => other,
        };
        let keep_alive = after == After::NextRequest;
        let output = conn.output.get_or_insert_with(|| self.output_pool.take());
        let mut w = HeadWriter::new(output.spare(), status);
        reply::common(&mut w, self.date.as_bytes(), &conn.req.origin);
        if !text.is_empty() {
            w.header("Content-Type", b"text/plain; charset=utf-8");
        }
        if status.0 == 405 {
            w.header("Allow", b"GET, POST, PUT, OPTIONS");
        }
        w.header_number("Content-Length", text.len() as u64);
        reply::persistence(&mut w, keep_alive, conn.req.minor_version);
        let body = if conn.req.method_is("HEAD") {
            b""
        } else {
            text.as_bytes()
        };
        if let Some(n) = w.finish_with_body(body) {
            output.commit(n);
        } else {
            // Only a huge reflected Origin can overflow; answer without it.
            conn.req.origin.clear();
            let mut w = HeadWriter::new(output.spare(), Status(431));
            w.header_number("Content-Length", 0)
                .header("Connection", b"close");
            let n = w.finish().unwrap_or(0);
            output.commit(n);
            conn.phase = Phase::Responding(After::Linger);
            return;
        }
        conn.phase = Phase::Responding(after);
    }

    fn respond_preflight(&mut self, id: ConnId) {
        let conn = &mut self.conns[id.0];
        let after = body_after(conn);
        let keep_alive = after == After::NextRequest;
        let output = conn.output.get_or_insert_with(|| self.output_pool.take());
        let mut w = HeadWriter::new(output.spare(), Status(200));
        reply::common(&mut w, self.date.as_bytes(), &conn.req.origin);
        w.header("Access-Control-Allow-Methods", reply::ALLOW_METHODS)
            .header("Access-Control-Allow-Headers", reply::ALLOW_HEADERS)
            .header("Access-Control-Max-Age", b"86400")
            .header_number("Content-Length", 0);
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
        let mut conn = self.conns.remove(id.0);
        let _ = self.poll.registry().deregister(&mut conn.stream);
        match conn.phase {
            Phase::Parked(_) => {
                let now = self.now_millis();
                self.relay.link_leave(now, &conn.channel, WaiterId(id.0));
            }
            Phase::Producing { consumer, .. } => self.truncate_consumer(consumer),
            Phase::Consuming { producer, .. } => {
                // The consumer left mid-body: the producer learns it failed.
                if let Some(p) = self.conns.get_mut(producer.0) {
                    p.phase = Phase::ReadingHead;
                    p.req.keep_alive = false;
                    self.respond_text(
                        producer,
                        Status(502),
                        "502 consumer disconnected\n",
                        After::Linger,
                    );
                    self.ready.push(producer);
                }
            }
            _ => {}
        }
        if let Some(buf) = conn.input.take() {
            self.input_pool.give(buf);
        }
        if let Some(buf) = conn.output.take() {
            self.output_pool.give(buf);
        }
        if self.accept_retry.is_some() {
            // A descriptor was freed: try accepting again now.
            self.accept_retry = Some(Instant::now());
        }
    }
}

/// Writes pending output until it is empty or the socket would block.
fn flush(conn: &mut Conn) -> io::Result<()> {
    let Some(output) = conn.output.as_mut() else {
        return Ok(());
    };
    while !output.is_empty() && conn.writable {
        match conn.stream.write(output.pending()) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => output.consume(n),
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

fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}
