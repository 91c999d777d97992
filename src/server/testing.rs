//! Drives a whole server from a unit test: clients on Unix sockets (kernel
//! memory, no network), every turn of the loop taken when the test says, and a
//! clock that moves only when the test moves it. No sleeps: after a client
//! writes, its bytes are readable at once, so a turn sees them.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mio::Events;

use super::{Clock, Server, Turn};
use crate::config::{self, Command};

/// Turns a settle may take before the test fails: the loop must go quiet.
const MAX_TURNS: usize = 200;

/// A server under test and the folder holding its socket.
pub(super) struct Shell {
    pub server: Server,
    events: Events,
    dir: PathBuf,
    socket: PathBuf,
    /// Whether the last turn found the server shut down and done.
    pub finished: bool,
}

impl Shell {
    /// A server with `flags` (besides its listening socket), its clock stopped.
    pub fn new(flags: &[&str]) -> Shell {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "httprelay-shell-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("a folder for the socket");
        let socket = dir.join("relay.sock");
        let mut args = vec!["-u".into(), socket.clone().into_os_string()];
        args.extend(flags.iter().map(|f| f.into()));
        let config = match config::parse(args, None) {
            Ok(Command::Run(config)) => config,
            other => panic!("flags {flags:?} do not run a server: {other:?}"),
        };
        let server = Server::open(&config, false, Clock::Manual(Instant::now()), None)
            .expect("the server opens");
        Shell {
            server,
            events: Events::with_capacity(256),
            dir,
            socket,
            finished: false,
        }
    }

    /// A new client, accepted (or held back) by the turns it takes.
    pub fn connect(&mut self) -> Client {
        let stream = UnixStream::connect(&self.socket).expect("connect to the shell");
        stream.set_nonblocking(true).expect("non-blocking client");
        self.settle();
        Client {
            stream,
            received: Vec::new(),
            eof: false,
        }
    }

    /// A new client that sends `request`, and what it got back.
    pub fn ask(&mut self, request: &[u8]) -> (Client, String) {
        let mut client = self.connect();
        client.send(self, request);
        let answer = client.text();
        (client, answer)
    }

    /// Takes turns until one begins with nothing to do: no event and no
    /// connection queued. Due timers fire in every turn.
    pub fn settle(&mut self) {
        for _ in 0..MAX_TURNS {
            match self
                .server
                .poll
                .poll(&mut self.events, Some(Duration::ZERO))
            {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => panic!("poll: {e}"),
            }
            let quiet = self.events.is_empty() && self.server.ready.is_empty();
            self.finished = self.server.turn(&self.events) == Turn::Finished;
            if quiet {
                return;
            }
        }
        panic!("the loop did not go quiet in {MAX_TURNS} turns");
    }

    /// Moves the clock on by `by` the way the loop lives through it: waking
    /// at every deadline on the way (as its poll timeout would) and settling.
    pub fn advance(&mut self, by: Duration) {
        let end = self.now() + by;
        for _ in 0..1_000_000 {
            let now = self.now();
            let wake = self
                .server
                .next_timeout(now)
                .map_or(end, |wait| (now + wait).min(end));
            self.server.clock = Clock::Manual(wake);
            self.settle();
            if wake >= end {
                return;
            }
        }
        panic!("timers kept firing without the clock reaching its end");
    }

    fn now(&self) -> Instant {
        self.server.clock.now()
    }

    /// A link transfer under way: a consumer waits on `/link/{id}`, then a
    /// producer sends its head with the `framing` field and `first` body bytes.
    /// Returns (consumer, producer).
    pub fn link_pair(&mut self, id: &str, framing: &str, first: &[u8]) -> (Client, Client) {
        let mut consumer = self.connect();
        let mut producer = self.connect();
        consumer.send(self, &get(&format!("/link/{id}")));
        let mut request =
            format!("POST /link/{id} HTTP/1.1\r\nHost: relay\r\n{framing}\r\n\r\n").into_bytes();
        request.extend_from_slice(first);
        producer.send(self, &request);
        (consumer, producer)
    }

    /// Open connections the server holds.
    pub fn open_conns(&self) -> usize {
        self.server.conns.len()
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One client connection of a [`Shell`].
pub(super) struct Client {
    stream: UnixStream,
    /// Bytes received and not yet taken by the test.
    received: Vec<u8>,
    eof: bool,
}

impl Client {
    /// Writes all of `bytes`, letting the server take turns whenever the
    /// socket is full, then settles.
    pub fn send(&mut self, shell: &mut Shell, bytes: &[u8]) {
        let mut rest = bytes;
        let mut stuck = 0;
        while !rest.is_empty() {
            match self.stream.write(rest) {
                Ok(n) => {
                    rest = &rest[n..];
                    stuck = 0;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    stuck += 1;
                    assert!(stuck < MAX_TURNS, "the server stopped reading");
                    shell.settle();
                    self.pull();
                }
                Err(e) => panic!("client write: {e}"),
            }
        }
        shell.settle();
    }

    /// Writes what the socket takes of `bytes` without waiting, then settles;
    /// returns how much was written.
    pub fn try_send(&mut self, shell: &mut Shell, bytes: &[u8]) -> usize {
        let mut written = 0;
        while written < bytes.len() {
            match self.stream.write(&bytes[written..]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("client write: {e}"),
            }
        }
        shell.settle();
        written
    }

    /// Everything received so far and not yet taken.
    pub fn take(&mut self) -> Vec<u8> {
        self.pull();
        std::mem::take(&mut self.received)
    }

    /// Like [`Client::take`], as text.
    pub fn text(&mut self) -> String {
        String::from_utf8(self.take()).expect("a text response")
    }

    /// Whether the server has closed its sending side (all sent bytes read).
    pub fn closed(&mut self) -> bool {
        self.pull();
        self.eof
    }

    /// Closes the client's whole connection.
    pub fn close(self, shell: &mut Shell) {
        drop(self.stream);
        shell.settle();
    }

    /// Reads what the socket holds into `received`.
    fn pull(&mut self) {
        let mut chunk = [0u8; 16 * 1024];
        while !self.eof {
            match self.stream.read(&mut chunk) {
                Ok(0) => self.eof = true,
                Ok(n) => self.received.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // A reset after the server closed with unread bytes.
                Err(_) => self.eof = true,
            }
        }
    }
}

/// The status code of a response's head.
pub(super) fn status_of(response: &str) -> u16 {
    response
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not a response: {response:?}"))
}

/// The body of a complete response (what follows the head).
pub(super) fn body_of(response: &str) -> &str {
    response
        .split_once("\r\n\r\n")
        .map_or_else(|| panic!("no complete head: {response:?}"), |(_, b)| b)
}

/// A request without a body.
pub(super) fn get(target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: relay\r\n\r\n").into_bytes()
}

/// A request with a `Content-Length` body.
pub(super) fn post(target: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {target} HTTP/1.1\r\nHost: relay\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}
