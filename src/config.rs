//! Command-line flags (lexopt) and their defaults.

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::relay;

/// Where the server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    Tcp { addr: String, port: u16 },
    Unix(PathBuf),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub listen: Listen,
    /// Idle channels (nobody waiting) are forgotten after this long.
    pub idle_expiry: Duration,
    /// Largest request head accepted (`431` beyond).
    pub max_head: usize,
    /// Largest mcast message (`413` beyond).
    pub mcast_max_message: usize,
    /// Bytes of messages an mcast channel retains; oldest dropped beyond.
    pub mcast_retain: usize,
    /// Largest sync body (`413` beyond).
    pub sync_max_body: usize,
    /// Peers whose `X-Real-IP`/`X-Real-Port`/`X-Forwarded-*` are believed.
    pub trust_proxy: Vec<IpAddr>,
    /// A request head must be complete this long after its first byte.
    pub head_timeout: Duration,
    /// An idle connection (between requests, or fresh) is closed after this long.
    pub idle_timeout: Duration,
    /// A transfer or response that makes no progress for this long is closed.
    pub body_timeout: Duration,
    /// A parked waiter gets `504` after this long (`None`: waits forever).
    pub wait_timeout: Option<Duration>,
    /// Most open client connections (`None`: derived from `RLIMIT_NOFILE`).
    pub max_conns: Option<usize>,
    /// Most connections one client address holds (`None`: an eighth of
    /// `max_conns`).
    pub max_conns_per_client: Option<usize>,
    /// Most remembered channels one client address makes (`None`: an eighth
    /// of `max_channels`).
    pub max_channels_per_client: Option<usize>,
    /// IPv6 clients count as one address per this many leading bits.
    pub ipv6_client_prefix: u8,
    /// Most bytes held by mcast messages over all channels.
    pub mcast_total: usize,
    /// Most bytes held by sync bodies over all channels.
    pub sync_total: usize,
    /// Most channels remembered for a write-secret claim or mcast messages.
    pub max_channels: usize,
    /// A request waiting on an inbox gets `408` after this long.
    pub inbox_timeout: Duration,
    /// An inbox entry lives this long after the `POST` that wrote it.
    pub inbox_ttl: Duration,
    /// Largest inbox message (`413` beyond).
    pub inbox_max_message: usize,
    /// Most bytes held by inbox messages (stored or uploading) over all inboxes.
    pub inbox_total: usize,
    /// Log one line per completed request on stderr.
    pub access_log: bool,
    /// Serve the Piping Server protocol on every path the relay's own routes
    /// do not take.
    pub piping: bool,
    /// `--data-dir`: where the journal of what must survive a restart lives
    /// (`None`: nothing touches the disk).
    pub data_dir: Option<PathBuf>,
    /// `--fsync`: when the journal's records are made durable.
    pub fsync: crate::journal::Fsync,
    /// `--data-max`: the most bytes the journal may take.
    pub data_max: Option<u64>,
    /// `--memory`: the budget every limit not given is derived from (`None`:
    /// read from the machine when the relay starts).
    pub memory: Option<u64>,
    /// The limits the command line set.
    pub given: Given,
    /// `--tls-cert`/`--tls-key`: HTTPS as well (`None`: plain HTTP only).
    pub tls: Option<Tls>,
}

/// HTTPS: the certificate pair and where it is served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tls {
    /// PEM: the certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// `--addr`, which HTTPS listens on even when plain HTTP is on `--unix`.
    pub addr: String,
    /// The HTTPS port.
    pub port: u16,
    /// `--tls-only`: no plain HTTP listener.
    pub only: bool,
    /// A TLS handshake must be done this long after the connection opened.
    pub handshake_timeout: Duration,
}

pub const DEFAULT_TLS_PORT: u16 = 8443;
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The limits a budget may set: those that enter the bound, and the
/// per-message ones derived from their totals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    MaxConns,
    MaxHead,
    McastTotal,
    SyncTotal,
    InboxTotal,
    MaxChannels,
    McastMaxMessage,
    McastRetain,
    SyncMaxBody,
    InboxMaxMessage,
}

impl Limit {
    pub const ALL: [Limit; 10] = [
        Limit::MaxConns,
        Limit::MaxHead,
        Limit::McastTotal,
        Limit::SyncTotal,
        Limit::InboxTotal,
        Limit::MaxChannels,
        Limit::McastMaxMessage,
        Limit::McastRetain,
        Limit::SyncMaxBody,
        Limit::InboxMaxMessage,
    ];

    /// The flag that sets it, without its dashes (also its metric label).
    pub fn flag(self) -> &'static str {
        match self {
            Limit::MaxConns => "max-conns",
            Limit::MaxHead => "max-head",
            Limit::McastTotal => "mcast-total",
            Limit::SyncTotal => "sync-total",
            Limit::InboxTotal => "inbox-total",
            Limit::MaxChannels => "max-channels",
            Limit::McastMaxMessage => "mcast-max-message",
            Limit::McastRetain => "mcast-retain",
            Limit::SyncMaxBody => "sync-max-body",
            Limit::InboxMaxMessage => "inbox-max-message",
        }
    }

    /// Its value in `config` (`--max-conns` before the descriptor limit).
    pub fn value(self, config: &Config) -> u64 {
        let v = match self {
            Limit::MaxConns => config.max_conns.unwrap_or(DEFAULT_MAX_CONNS),
            Limit::MaxHead => config.max_head,
            Limit::McastTotal => config.mcast_total,
            Limit::SyncTotal => config.sync_total,
            Limit::InboxTotal => config.inbox_total,
            Limit::MaxChannels => config.max_channels,
            Limit::McastMaxMessage => config.mcast_max_message,
            Limit::McastRetain => config.mcast_retain,
            Limit::SyncMaxBody => config.sync_max_body,
            Limit::InboxMaxMessage => config.inbox_max_message,
        };
        v as u64
    }
}

/// Which limits the command line set; the budget derives the others.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Given(u16);

impl Given {
    pub fn set(&mut self, limit: Limit) {
        self.0 |= 1 << limit as u16;
    }

    pub fn has(self, limit: Limit) -> bool {
        self.0 & (1 << limit as u16) != 0
    }
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Run(Box<Config>),
    /// Ask a running relay at the configured address for `/health` (for
    /// container health checks, where no other client exists).
    HealthCheck(Box<Config>),
    Help,
    Version,
}

/// A command-line mistake: printed as one line, exit status 2.
#[derive(Debug)]
pub struct UsageError(String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<lexopt::Error> for UsageError {
    fn from(e: lexopt::Error) -> Self {
        UsageError(e.to_string())
    }
}

pub const DEFAULT_PORT: u16 = 8080;
/// The smallest `--memory` accepted: the process, and a few connections.
pub const MIN_MEMORY: u64 = 8 << 20;
pub const DEFAULT_MAX_HEAD: usize = 16 * 1024;
pub const DEFAULT_MCAST_MAX_MESSAGE: usize = 10 * 1024 * 1024;
pub const DEFAULT_MCAST_RETAIN: usize = 11_000_000;
pub const DEFAULT_SYNC_MAX_BODY: usize = 10 * 1024 * 1024;
pub const DEFAULT_HEAD_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// `--max-conns` when not given (fewer when descriptors are scarcer): what
/// keeps the relay's worst case within a small gateway's memory
/// (docs/memory.md, "Memory bound").
pub const DEFAULT_MAX_CONNS: usize = 1024;
pub const DEFAULT_MCAST_TOTAL: usize = 64 * 1024 * 1024;
pub const DEFAULT_SYNC_TOTAL: usize = 64 * 1024 * 1024;
pub const DEFAULT_INBOX_TIMEOUT: Duration = Duration::from_secs(25);
pub const DEFAULT_INBOX_MAX_MESSAGE: usize = 64 * 1024;
pub const DEFAULT_INBOX_TOTAL: usize = 16 * 1024 * 1024;
/// Largest `--max-head` accepted: a response head reflects at most two request
/// heads (own Origin, counterpart's query and content type), and must fit in one
/// output buffer.
pub const MAX_MAX_HEAD: usize = 24 * 1024;

pub const HELP: &str = "\
httprelay: an HTTP relay server (httprelay 2.0.0 protocol). Clients that cannot
accept connections talk to each other through it.

Usage: httprelay [OPTIONS]

Endpoints:
  /link/{id}                  one producer (POST, PUT) to one consumer (GET)
  /mcast/{id}                 one producer to many readers, numbered messages
  /sync/{id}                  two requests swap bodies
  /inbox/{id}                 a message kept until acknowledged: POST stores,
                              GET reads (waits for one), DELETE acknowledges;
                              /inbox/{id}/ack tells, /inbox/{id}/await waits
  /proxy/{serverId}/{path}    a SERVE long-poll loop answers clients
  /health, /metrics           version; Prometheus metrics

Listening:
  -a, --addr ADDR             bind address [default: 0.0.0.0]
  -p, --port PORT             TCP port [default: $PORT if it is a number, else 8080]
  -u, --unix PATH             listen on a Unix socket instead (an existing socket
                              file is replaced)

HTTPS (builds with the tls feature: cargo build --release --features tls):
      --tls-cert FILE             serve HTTPS with this PEM certificate chain
                                  (leaf first); SIGHUP reads it and the key
                                  again [default: none, plain HTTP only]
      --tls-key FILE              the PEM private key of --tls-cert (RSA, ECDSA
                                  or Ed25519)
      --tls-port PORT             the HTTPS port, on --addr [default: 8443]
      --tls-only                  serve HTTPS alone, no plain HTTP on --port
      --tls-handshake-timeout SECS
                                  close a connection whose TLS handshake is
                                  not done this long after it opened
                                  [default: 10]

Memory (sizes in bytes, or with K, M, G: 48M is 48 MiB):
      --memory SIZE               the most memory the relay may use, whatever
                                  clients do; every limit below without a flag
                                  of its own is derived from it (see
                                  docs/memory.md) [default: half the cgroup's
                                  memory limit, else a quarter of the machine's
                                  memory, between 16M and 360M]

Channels:
      --idle-expiry SECS          forget a channel that holds only a write-secret
                                  claim or mcast messages once idle this long
                                  (channels that hold nothing are forgotten at
                                  once) [default: 1200]
      --max-channels N            most channels remembered for a claim or mcast
                                  messages; requests that would add one get 503
                                  beyond [default: from --memory]
      --mcast-max-message SIZE    largest mcast message, 413 beyond
                                  [default: 10M, at most --mcast-total]
      --mcast-retain SIZE         bytes of messages an mcast channel keeps; the
                                  oldest are dropped beyond [default: 11000000,
                                  at most --mcast-total]
      --sync-max-body SIZE        largest sync body, 413 beyond [default: 10M,
                                  at most --sync-total]
      --inbox-ttl SECS            an inbox message (or its acknowledgement) is
                                  kept this long after its POST [default: 300]
      --inbox-max-message SIZE    largest inbox message, 413 beyond [default:
                                  64K, at most --inbox-total]

Storage:
      --data-dir DIR              keep what the relay acknowledged and must not
                                  forget (inbox messages and acknowledgements,
                                  write-secret claims) in a journal in DIR, so
                                  that it survives a restart or a crash
                                  [default: none, nothing touches the disk]
      --fsync MODE                with --data-dir: when the journal is made
                                  durable: always (each record), batch (once
                                  per loop turn, before the answers that need
                                  it) or off (the kernel's choice) [default:
                                  batch]
      --data-max SIZE             with --data-dir: the most the journal may take;
                                  an inbox message that would pass it gets 507
                                  [default: none; compaction keeps the journal
                                  within twice its live records plus 1M]

Protocols:
      --piping                    also serve Piping Server transfers (POST/PUT
                                  a body to any other path, GET it there; ?n=
                                  receivers) [default: off]

Proxies:
      --trust-proxy ADDRS         comma-separated peer IPs whose X-Real-IP,
                                  X-Real-Port and X-Forwarded-* are believed
                                  [default: none]

Limits:
      --max-head SIZE             largest request head, 431 beyond [default:
                                  8K below a 128M budget, else 16K]
      --max-conns N               most open connections; at the limit the oldest
                                  connections without a complete request head are
                                  closed, else accepting pauses [default: from
                                  --memory, at most the descriptor limit minus 32]
      --mcast-total SIZE          most bytes held by mcast messages in all;
                                  503 for new uploads beyond [default: from
                                  --memory]
      --sync-total SIZE           most bytes held by sync bodies in all; 503 for
                                  new uploads beyond [default: from --memory]
      --inbox-total SIZE          most bytes held by inbox messages in all; 503
                                  for new messages beyond [default: from
                                  --memory]

Fair share (per client address: an IPv4 address, or an IPv6 prefix):
      --max-conns-per-client N    most connections one address holds; its
                                  requests beyond get 429 [default: an eighth
                                  of --max-conns, at least 2]
      --max-channels-per-client N most remembered channels (claims, mcast
                                  channels, inbox entries) one address makes;
                                  429 beyond [default: an eighth of
                                  --max-channels]
      --ipv6-client-prefix BITS   IPv6 clients count as one address per this
                                  prefix [default: 64]

Timeouts (seconds, fractions allowed):
      --head-timeout SECS         a request head must be complete this long after
                                  its first byte, else 408 [default: 10]
      --idle-timeout SECS         close idle connections after [default: 60]
      --body-timeout SECS         close a transfer or response that makes no
                                  progress this long [default: 60]
      --wait-timeout SECS         answer a waiting request 504 after this long;
                                  0 waits forever [default: 0]
      --inbox-timeout SECS        answer a request waiting on an inbox (for its
                                  message or its acknowledgement) 408 after
                                  this long [default: 25]

Logging:
      --access-log                one line per completed request on stderr
                                  (errors are always logged) [default: off]

Other:
      --health-check              ask the relay at -a/-p (or -u) for /health and
                                  exit 0 if it answers 200, else 1
  -h, --help                      print this help
  -V, --version                   print the version

Signals: SIGINT or SIGTERM stop accepting, answer waiting requests 503, let
transfers finish (at most 10 s) and exit 0. With --tls-cert, SIGHUP reloads
the certificate and key (a bad file keeps the pair in use).
Exit status: 0 after a signal, 1 when listening fails, 2 for a bad command line.
";

impl Config {
    /// The relay core's settings from the flags; `seed` keys its hashes.
    pub fn relay_settings(&self, seed: u64) -> relay::Settings {
        let millis = |d: Duration| d.as_millis().min(u128::from(u64::MAX)) as u64;
        relay::Settings {
            idle_expiry: millis(self.idle_expiry).max(1),
            mcast_retain: self.mcast_retain,
            mcast_total: self.mcast_total,
            max_channels: self.max_channels,
            max_channels_per_client: self
                .max_channels_per_client
                .unwrap_or((self.max_channels / 8).max(1)),
            inbox_ttl: millis(self.inbox_ttl),
            seed,
        }
    }
}

/// Parses the arguments (without the program name). `port_env` is `$PORT`.
pub fn parse(
    args: impl IntoIterator<Item = OsString>,
    port_env: Option<OsString>,
) -> Result<Command, UsageError> {
    let mut flags = Flags::new(port_env);
    let mut parser = lexopt::Parser::from_args(args);
    if let Some(command) = flags.read(&mut parser)? {
        return Ok(command);
    }
    flags.finish()
}

/// The flags read so far, with the defaults where none was given.
struct Flags {
    /// `-a` and `-p`. `-u` wins over them in whatever order they come, so
    /// where to listen is settled only by [`Flags::finish`].
    addr: String,
    port: u16,
    unix: Option<PathBuf>,
    health_check: bool,
    /// The HTTPS flags, checked together by [`Flags::finish`].
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_port: u16,
    tls_only: bool,
    tls_handshake_timeout: Duration,
    /// Everything else; its `listen` is a placeholder until [`Flags::finish`].
    config: Config,
}

impl Flags {
    /// Nothing given yet. `$PORT` (`port_env`) counts only when it is a port number.
    fn new(port_env: Option<OsString>) -> Flags {
        let port = port_env
            .and_then(|p| p.into_string().ok())
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or(DEFAULT_PORT);
        let config = Config {
            listen: Listen::Tcp {
                addr: String::new(),
                port,
            },
            idle_expiry: Duration::from_millis(relay::DEFAULT_IDLE_EXPIRY),
            max_head: DEFAULT_MAX_HEAD,
            mcast_max_message: DEFAULT_MCAST_MAX_MESSAGE,
            mcast_retain: DEFAULT_MCAST_RETAIN,
            sync_max_body: DEFAULT_SYNC_MAX_BODY,
            trust_proxy: Vec::new(),
            head_timeout: DEFAULT_HEAD_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            wait_timeout: None,
            max_conns: None,
            max_conns_per_client: None,
            max_channels_per_client: None,
            ipv6_client_prefix: 64,
            mcast_total: DEFAULT_MCAST_TOTAL,
            sync_total: DEFAULT_SYNC_TOTAL,
            max_channels: relay::DEFAULT_MAX_CHANNELS,
            inbox_timeout: DEFAULT_INBOX_TIMEOUT,
            inbox_ttl: Duration::from_millis(relay::DEFAULT_INBOX_TTL),
            inbox_max_message: DEFAULT_INBOX_MAX_MESSAGE,
            inbox_total: DEFAULT_INBOX_TOTAL,
            access_log: false,
            piping: false,
            data_dir: None,
            fsync: crate::journal::Fsync::Batch,
            data_max: None,
            memory: None,
            given: Given::default(),
            tls: None,
        };
        Flags {
            addr: String::from("0.0.0.0"),
            port,
            unix: None,
            health_check: false,
            tls_cert: None,
            tls_key: None,
            tls_port: DEFAULT_TLS_PORT,
            tls_only: false,
            tls_handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
            config,
        }
    }

    /// Reads every flag (and its value) from `parser`. `Some`: a flag that is
    /// a command of its own (`-h`, `-V`), answered at once whatever follows.
    fn read(&mut self, parser: &mut lexopt::Parser) -> Result<Option<Command>, UsageError> {
        use lexopt::prelude::*;

        while let Some(arg) = parser.next()? {
            let c = &mut self.config;
            if let Some(limit) = limit_of(&arg) {
                read_limit(parser, c, limit)?;
                c.given.set(limit);
                continue;
            }
            match arg {
                Short('a') | Long("addr") => self.addr = parser.value()?.string()?,
                Short('p') | Long("port") => self.port = number(parser, "port")?,
                Short('u') | Long("unix") => self.unix = Some(parser.value()?.into()),
                Long("memory") => c.memory = Some(memory(parser)?),
                Long("data-dir") => c.data_dir = Some(parser.value()?.into()),
                Long("fsync") => c.fsync = fsync(parser)?,
                Long("data-max") => c.data_max = Some(size(parser, "data-max")? as u64),
                Long("max-conns-per-client") => c.max_conns_per_client = Some(max_conns(parser)?),
                Long("max-channels-per-client") => {
                    c.max_channels_per_client = Some(max_conns(parser)?)
                }
                Long("ipv6-client-prefix") => c.ipv6_client_prefix = ipv6_prefix(parser)?,
                Long("idle-expiry") => c.idle_expiry = seconds(parser, "idle-expiry")?,
                Long("head-timeout") => c.head_timeout = seconds(parser, "head-timeout")?,
                Long("idle-timeout") => c.idle_timeout = seconds(parser, "idle-timeout")?,
                Long("body-timeout") => c.body_timeout = seconds(parser, "body-timeout")?,
                Long("wait-timeout") => c.wait_timeout = wait_timeout(parser)?,
                Long("inbox-timeout") => c.inbox_timeout = seconds(parser, "inbox-timeout")?,
                Long("inbox-ttl") => c.inbox_ttl = seconds(parser, "inbox-ttl")?,
                Long("access-log") => c.access_log = true,
                Long("piping") => c.piping = true,
                Long("tls-cert") => self.tls_cert = Some(parser.value()?.into()),
                Long("tls-key") => self.tls_key = Some(parser.value()?.into()),
                Long("tls-port") => self.tls_port = number(parser, "tls-port")?,
                Long("tls-only") => self.tls_only = true,
                Long("tls-handshake-timeout") => {
                    self.tls_handshake_timeout = seconds(parser, "tls-handshake-timeout")?;
                }
                Long("health-check") => self.health_check = true,
                Long("trust-proxy") => trust_proxy(parser, &mut c.trust_proxy)?,
                Short('h') | Long("help") => return Ok(Some(Command::Help)),
                Short('V') | Long("version") => return Ok(Some(Command::Version)),
                _ => return Err(arg.unexpected().into()),
            }
        }
        Ok(None)
    }

    /// The command the flags make up: `-u` wins over `-a`/`-p`.
    fn finish(self) -> Result<Command, UsageError> {
        let mut config = Box::new(self.config);
        config.tls = match (self.tls_cert, self.tls_key) {
            (Some(_), _) | (_, Some(_)) if !cfg!(feature = "tls") => {
                return Err(UsageError(
                    "--tls-cert: this build has no TLS (build it with --features tls)".into(),
                ))
            }
            (Some(cert), Some(key)) => Some(Tls {
                cert,
                key,
                addr: self.addr.clone(),
                port: self.tls_port,
                only: self.tls_only,
                handshake_timeout: self.tls_handshake_timeout,
            }),
            (Some(_), None) => return Err(UsageError("--tls-cert needs --tls-key".into())),
            (None, Some(_)) => return Err(UsageError("--tls-key needs --tls-cert".into())),
            (None, None) if self.tls_only => {
                return Err(UsageError(
                    "--tls-only needs --tls-cert and --tls-key".into(),
                ))
            }
            (None, None) => None,
        };
        if self.tls_only && self.unix.is_some() {
            return Err(UsageError(
                "--tls-only serves HTTPS alone: leave out --unix".into(),
            ));
        }
        config.listen = match self.unix {
            Some(path) => Listen::Unix(path),
            None => Listen::Tcp {
                addr: self.addr,
                port: self.port,
            },
        };
        Ok(if self.health_check {
            Command::HealthCheck(config)
        } else {
            Command::Run(config)
        })
    }
}

/// The limit a flag sets, if it sets one a budget could derive.
fn limit_of(arg: &lexopt::Arg) -> Option<Limit> {
    let lexopt::Arg::Long(name) = arg else {
        return None;
    };
    Limit::ALL.into_iter().find(|l| l.flag() == *name)
}

/// Reads the value of the flag that sets `limit` into `c`.
fn read_limit(parser: &mut lexopt::Parser, c: &mut Config, limit: Limit) -> Result<(), UsageError> {
    let flag = limit.flag();
    match limit {
        Limit::MaxConns => c.max_conns = Some(max_conns(parser)?),
        Limit::MaxHead => c.max_head = max_head(parser)?,
        Limit::MaxChannels => c.max_channels = number(parser, flag)?,
        Limit::McastTotal => c.mcast_total = size(parser, flag)?,
        Limit::SyncTotal => c.sync_total = size(parser, flag)?,
        Limit::InboxTotal => c.inbox_total = size(parser, flag)?,
        Limit::McastMaxMessage => c.mcast_max_message = size(parser, flag)?,
        Limit::McastRetain => c.mcast_retain = size(parser, flag)?,
        Limit::SyncMaxBody => c.sync_max_body = size(parser, flag)?,
        Limit::InboxMaxMessage => c.inbox_max_message = size(parser, flag)?,
    }
    Ok(())
}

/// `--memory`: a size of at least [`MIN_BUDGET`].
fn memory(parser: &mut lexopt::Parser) -> Result<u64, UsageError> {
    let bytes = size(parser, "memory")? as u64;
    if bytes < MIN_MEMORY {
        return Err(UsageError(format!(
            "--memory must be at least {}M",
            MIN_MEMORY >> 20
        )));
    }
    Ok(bytes)
}

/// A size in bytes: a number, or one with a binary unit (`K`, `M`, `G`, `T`,
/// or `KiB`, `MiB`, `GiB`, `TiB`, in either case): `48M` is 48 MiB.
fn size(parser: &mut lexopt::Parser, flag: &str) -> Result<usize, UsageError> {
    let value = parser.value()?;
    let text = value.to_string_lossy().into_owned();
    parse_size(&text).ok_or_else(|| UsageError(format!("invalid size '{text}' for --{flag}")))
}

/// See [`size`].
pub fn parse_size(text: &str) -> Option<usize> {
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let n: usize = text[..digits].parse().ok()?;
    let unit = text[digits..].to_ascii_lowercase();
    let shift = match unit.strip_suffix("ib").unwrap_or(&unit) {
        "" if unit.is_empty() => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return None,
    };
    n.checked_mul(1usize.checked_shl(shift)?)
}

/// `--max-head`: at least 1 KiB, at most [`MAX_MAX_HEAD`].
fn max_head(parser: &mut lexopt::Parser) -> Result<usize, UsageError> {
    let max_head = size(parser, "max-head")?;
    if !(1024..=MAX_MAX_HEAD).contains(&max_head) {
        return Err(UsageError(format!(
            "--max-head must be between 1024 and {MAX_MAX_HEAD}"
        )));
    }
    Ok(max_head)
}

/// `--wait-timeout`: seconds like [`seconds`], except that 0 (waiting
/// forever, `None`) is allowed.
fn wait_timeout(parser: &mut lexopt::Parser) -> Result<Option<Duration>, UsageError> {
    let secs: f64 = number(parser, "wait-timeout")?;
    if !(secs >= 0.0 && secs.is_finite()) {
        return Err(UsageError(
            "--wait-timeout must be 0 or a positive number of seconds".into(),
        ));
    }
    Ok((secs > 0.0).then(|| Duration::from_secs_f64(secs)))
}

/// `--fsync`: `always`, `batch` or `off`.
fn fsync(parser: &mut lexopt::Parser) -> Result<crate::journal::Fsync, UsageError> {
    use crate::journal::Fsync;
    let value = parser.value()?;
    match value.to_string_lossy().as_ref() {
        "always" => Ok(Fsync::Always),
        "batch" => Ok(Fsync::Batch),
        "off" => Ok(Fsync::Off),
        other => Err(UsageError(format!(
            "invalid value '{other}' for --fsync (always, batch or off)"
        ))),
    }
}

/// `--ipv6-client-prefix`: 1 to 128 bits.
fn ipv6_prefix(parser: &mut lexopt::Parser) -> Result<u8, UsageError> {
    let bits: u8 = number(parser, "ipv6-client-prefix")?;
    if !(1..=128).contains(&bits) {
        return Err(UsageError(
            "--ipv6-client-prefix must be between 1 and 128".into(),
        ));
    }
    Ok(bits)
}

/// `--max-conns`: at least 1.
fn max_conns(parser: &mut lexopt::Parser) -> Result<usize, UsageError> {
    let n: usize = number(parser, "max-conns")?;
    if n == 0 {
        return Err(UsageError("connection limits must be at least 1".into()));
    }
    Ok(n)
}

/// `--trust-proxy`: a comma-separated list of addresses, added to `trusted`
/// (the flag may be given more than once; empty items are skipped).
fn trust_proxy(parser: &mut lexopt::Parser, trusted: &mut Vec<IpAddr>) -> Result<(), UsageError> {
    use lexopt::prelude::*;

    let list = parser.value()?.string()?;
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let ip = item
            .parse()
            .map_err(|_| UsageError(format!("invalid address '{item}' for --trust-proxy")))?;
        trusted.push(ip);
    }
    Ok(())
}

/// A positive number of seconds (fractions allowed).
fn seconds(parser: &mut lexopt::Parser, flag: &str) -> Result<Duration, UsageError> {
    let secs: f64 = number(parser, flag)?;
    if !(secs > 0.0 && secs.is_finite() && secs < 1e9) {
        return Err(UsageError(format!(
            "--{flag} must be a positive number of seconds"
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn number<T: std::str::FromStr>(parser: &mut lexopt::Parser, flag: &str) -> Result<T, UsageError> {
    let value = parser.value()?;
    let text = value.to_string_lossy().into_owned();
    text.parse()
        .map_err(|_| UsageError(format!("invalid value '{text}' for --{flag}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str], port_env: Option<&str>) -> Result<Command, UsageError> {
        parse(
            args.iter().map(OsString::from),
            port_env.map(OsString::from),
        )
    }

    fn config(args: &[&str], port_env: Option<&str>) -> Config {
        match run(args, port_env).unwrap() {
            Command::Run(c) => *c,
            other => panic!("expected a config, got {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let c = config(&[], None);
        assert_eq!(
            c.listen,
            Listen::Tcp {
                addr: "0.0.0.0".into(),
                port: 8080
            }
        );
        assert_eq!(c.idle_expiry, Duration::from_secs(1200));
        assert_eq!(c.max_head, 16 * 1024);
        assert_eq!(c.mcast_max_message, 10 * 1024 * 1024);
        assert_eq!(c.mcast_retain, 11_000_000);
        assert_eq!(c.sync_max_body, 10 * 1024 * 1024);
        assert!(c.trust_proxy.is_empty());
        assert_eq!(c.head_timeout, Duration::from_secs(10));
        assert_eq!(c.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.body_timeout, Duration::from_secs(60));
        assert_eq!(c.wait_timeout, None);
        assert_eq!(c.max_conns, None);
        assert_eq!(c.max_channels, 32 * 1024);
        assert_eq!(c.inbox_timeout, Duration::from_secs(25));
        assert_eq!(c.inbox_ttl, Duration::from_secs(300));
        assert_eq!(c.inbox_max_message, 64 * 1024);
        assert_eq!(c.inbox_total, 16 * 1024 * 1024);
    }

    #[test]
    fn timeouts() {
        let c = config(
            &[
                "--head-timeout",
                "0.5",
                "--wait-timeout",
                "3",
                "--max-conns",
                "9",
            ],
            None,
        );
        assert_eq!(c.head_timeout, Duration::from_millis(500));
        assert_eq!(c.wait_timeout, Some(Duration::from_secs(3)));
        assert_eq!(c.max_conns, Some(9));
        assert_eq!(config(&["--wait-timeout", "0"], None).wait_timeout, None);
        assert!(run(&["--body-timeout", "0"], None).is_err());
        assert!(run(&["--max-conns", "0"], None).is_err());
    }

    #[test]
    fn help_lists_every_flag_the_parser_takes() {
        let flags: [(&str, Option<&str>); 36] = [
            ("--tls-port", Some("443")),
            ("--tls-handshake-timeout", Some("5")),
            ("--data-max", Some("64M")),
            ("--data-dir", Some("/tmp/x")),
            ("--fsync", Some("off")),
            ("--max-channels-per-client", Some("4")),
            ("--max-conns-per-client", Some("4")),
            ("--ipv6-client-prefix", Some("48")),
            ("--addr", Some("1.2.3.4")),
            ("--memory", Some("48M")),
            ("--port", Some("1")),
            ("--unix", Some("/x")),
            ("--idle-expiry", Some("1")),
            ("--mcast-max-message", Some("1")),
            ("--mcast-retain", Some("1")),
            ("--sync-max-body", Some("1")),
            ("--trust-proxy", Some("::1")),
            ("--max-head", Some("2048")),
            ("--max-conns", Some("1")),
            ("--mcast-total", Some("1")),
            ("--sync-total", Some("1")),
            ("--head-timeout", Some("1")),
            ("--idle-timeout", Some("1")),
            ("--body-timeout", Some("1")),
            ("--wait-timeout", Some("1")),
            ("--inbox-timeout", Some("1")),
            ("--inbox-ttl", Some("1")),
            ("--inbox-max-message", Some("1")),
            ("--inbox-total", Some("1")),
            ("--access-log", None),
            ("--piping", None),
            ("--health-check", None),
            ("--help", None),
            ("--version", None),
            ("-h", None),
            ("-V", None),
        ];
        for (flag, value) in flags {
            assert!(
                HELP.contains(&format!("{flag} ")) || HELP.contains(&format!("{flag},")),
                "{flag} missing from --help"
            );
            let mut args = vec![flag];
            args.extend(value);
            assert!(run(&args, None).is_ok(), "{flag} not accepted");
        }
    }

    #[test]
    fn tls_flags_go_together() {
        for flag in ["--tls-cert", "--tls-key", "--tls-only"] {
            assert!(
                HELP.contains(&format!("{flag} ")),
                "{flag} missing from --help"
            );
        }
        let both = ["--tls-cert", "c.pem", "--tls-key", "k.pem"];
        if cfg!(feature = "tls") {
            let c = config(&both, None);
            assert_eq!(
                c.tls,
                Some(Tls {
                    cert: "c.pem".into(),
                    key: "k.pem".into(),
                    addr: "0.0.0.0".into(),
                    port: DEFAULT_TLS_PORT,
                    only: false,
                    handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
                })
            );
            let mut only = both.to_vec();
            only.extend(["--tls-only", "--tls-port", "443"]);
            let c = config(&only, None);
            let tls = c.tls.expect("tls");
            assert!(tls.only);
            assert_eq!(tls.port, 443);
            let mut unix = only.clone();
            unix.extend(["-u", "/tmp/x.sock"]);
            assert!(
                run(&unix, None).is_err(),
                "--tls-only leaves no plain listener"
            );
            let mut beside_unix = both.to_vec();
            beside_unix.extend(["-u", "/tmp/x.sock", "-a", "127.0.0.1"]);
            let c = config(&beside_unix, None);
            assert_eq!(c.listen, Listen::Unix("/tmp/x.sock".into()));
            assert_eq!(c.tls.expect("tls").addr, "127.0.0.1", "HTTPS on --addr");
        } else {
            let e = run(&both, None).unwrap_err().to_string();
            assert!(e.contains("--features tls"), "{e}");
        }
        assert_eq!(config(&[], None).tls, None);
        assert!(run(&["--tls-cert", "c.pem"], None).is_err());
        assert!(run(&["--tls-key", "k.pem"], None).is_err());
        assert!(run(&["--tls-only"], None).is_err());
    }

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("48M"), Some(48 << 20));
        assert_eq!(parse_size("48MiB"), Some(48 << 20));
        assert_eq!(parse_size("64k"), Some(64 << 10));
        assert_eq!(parse_size("1g"), Some(1 << 30));
        assert_eq!(parse_size("1000"), Some(1000));
        for bad in ["", "M", "48MB", "4.5M", "-1", "48 M", "48X"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
        let c = config(&["--memory", "48M", "--mcast-total", "2M"], None);
        assert_eq!(c.memory, Some(48 << 20));
        assert_eq!(c.mcast_total, 2 << 20);
        assert!(c.given.has(Limit::McastTotal));
        assert!(!c.given.has(Limit::SyncTotal));
        assert!(run(&["--memory", "4M"], None).is_err());
    }

    #[test]
    fn trust_proxy_list() {
        let c = config(&["--trust-proxy", "127.0.0.1, ::1"], None);
        assert_eq!(
            c.trust_proxy,
            vec![
                "127.0.0.1".parse::<IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
        assert!(run(&["--trust-proxy", "localhost"], None).is_err());
    }

    #[test]
    fn port_from_environment_only_when_numeric() {
        assert_eq!(
            config(&[], Some("9000")).listen,
            Listen::Tcp {
                addr: "0.0.0.0".into(),
                port: 9000
            }
        );
        assert_eq!(
            config(&[], Some("http")).listen,
            Listen::Tcp {
                addr: "0.0.0.0".into(),
                port: 8080
            }
        );
        assert_eq!(
            config(&["-p", "81"], Some("9000")).listen,
            Listen::Tcp {
                addr: "0.0.0.0".into(),
                port: 81
            }
        );
    }

    #[test]
    fn short_and_long_forms() {
        assert_eq!(
            config(&["-a", "127.0.0.1", "--port=0"], None).listen,
            Listen::Tcp {
                addr: "127.0.0.1".into(),
                port: 0
            }
        );
        assert_eq!(
            config(&["--addr", "::1", "-p9"], None).listen,
            Listen::Tcp {
                addr: "::1".into(),
                port: 9
            }
        );
        assert_eq!(
            config(&["-u", "/tmp/r.sock"], None).listen,
            Listen::Unix("/tmp/r.sock".into())
        );
        assert_eq!(
            config(&["--unix=/x"], None).listen,
            Listen::Unix("/x".into())
        );
        assert_eq!(
            config(&["--idle-expiry", "0.5"], None).idle_expiry,
            Duration::from_millis(500)
        );
        assert_eq!(run(&["-h"], None).unwrap(), Command::Help);
        assert_eq!(run(&["--version"], None).unwrap(), Command::Version);
        assert!(
            matches!(run(&["--health-check", "-p", "9"], None).unwrap(), Command::HealthCheck(c) if c.listen == Listen::Tcp { addr: "0.0.0.0".into(), port: 9 })
        );
    }

    #[test]
    fn mistakes_are_one_line_errors() {
        for args in [
            &["-x"][..],
            &["-p", "99999"],
            &["-p"],
            &["extra"],
            &["--idle-expiry", "-1"],
            &["--max-head", "10"],
            &["--memory", "lots"],
            &["--memory", "1M"],
        ] {
            let err = run(args, None).unwrap_err().to_string();
            assert!(!err.is_empty() && !err.contains('\n'), "{args:?}: {err}");
        }
    }
}
