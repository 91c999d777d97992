//! Counters for `/metrics` (Prometheus text format) and the access log. The
//! counters are plain integers bumped in the loop; a scrape formats them into
//! one reused buffer.

use std::io::Write as _;
use std::time::Duration;

use crate::budget::{Budget, Limit, Source};
use crate::relay::{Method, PerMethod};
use crate::server::reply::VERSION;

/// Error statuses the relay sends, counted by `httprelay_rejections_total`.
const REJECTIONS: [u16; 18] = [
    400, 401, 404, 405, 406, 408, 413, 417, 429, 431, 500, 501, 502, 503, 504, 505, 507, 0,
];

#[derive(Default, Debug)]
pub struct Stats {
    pub accepted: u64,
    /// Connections closed to make room at the connection limit.
    pub evicted: u64,
    /// Completed exchanges per method: link transfers, mcast deliveries to
    /// readers, sync pairs, proxy results delivered.
    pub transfers: PerMethod<u64>,
    /// mcast messages stored.
    pub messages: u64,
    /// Body bytes delivered to receivers.
    pub relayed_bytes: u64,
    /// Of those, the bytes that went through a pipe (zero copy).
    pub spliced_bytes: u64,
    /// Of those, the bytes passed socket to socket through the loop's pass
    /// buffer (never in a connection's buffers).
    pub passed_bytes: u64,
    /// TLS handshakes completed, and those that did not (an error, plain
    /// HTTP on the TLS port, the handshake timeout, a client that left).
    pub tls_handshakes: u64,
    pub tls_handshake_failures: u64,
    /// SIGHUP reloads of the certificate pair, and those that kept the old one.
    pub tls_reloads: u64,
    pub tls_reload_failures: u64,
    /// Responses by error status (index into `REJECTIONS`; the last counts others).
    rejections: [u64; REJECTIONS.len()],
    /// Connections closed by a timeout, indexed by [`Timeout`].
    timeouts: [u64; Timeout::ALL.len()],
    /// Connections closed for being driven again and again without moving a byte.
    pub runaway: u64,
    /// Connections closed because a shell invariant was found broken.
    pub broken: u64,
    /// Requests refused because their address held its share of connections.
    pub client_refusals: u64,
    /// Waiting requests ended to make room for an address holding fewer.
    pub fair_share_evictions: u64,
    /// Journal commits that failed (their answers became `507`).
    pub store_failures: u64,
    /// Inbox messages refused because the journal reached `--data-max`.
    pub store_full: u64,
    /// Journal rewrites to its live records, and the time they took.
    pub compactions: u64,
    pub compaction_seconds: f64,
    /// Requests refused by a limit the budget sets, indexed by [`Limit`].
    limit_refusals: [u64; Limit::ALL.len()],
    /// mcast live streams (Server-Sent Events) open now.
    pub sse_streams: usize,
    /// Events sent to live streams.
    pub sse_events: u64,
    /// Loop iterations (events handled, connections driven, timers fired) by
    /// duration: counts per bucket of `LOOP_BUCKETS`, the last for longer ones.
    loop_buckets: [u64; LOOP_BUCKETS.len() + 1],
    loop_seconds: f64,
    loop_longest: Duration,
}

/// The timeouts that end a connection, as metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timeout {
    Idle,
    Head,
    Body,
    Wait,
    /// A request waiting on an inbox (`408`).
    Inbox,
    /// A TLS handshake not done in time.
    Handshake,
}

impl Timeout {
    const ALL: [Timeout; 6] = [
        Timeout::Idle,
        Timeout::Head,
        Timeout::Body,
        Timeout::Wait,
        Timeout::Inbox,
        Timeout::Handshake,
    ];

    fn label(self) -> &'static str {
        match self {
            Timeout::Idle => "idle",
            Timeout::Head => "head",
            Timeout::Body => "body",
            Timeout::Wait => "wait",
            Timeout::Handshake => "tls_handshake",
            Timeout::Inbox => "inbox",
        }
    }
}

/// The limits whose refusals `httprelay_limit_refusals_total` counts: those
/// that answer a request with an error (the connection limit holds clients
/// back instead, and the retain limit drops old messages).
const REFUSING: [Limit; 8] = [
    Limit::MaxHead,
    Limit::McastMaxMessage,
    Limit::McastTotal,
    Limit::SyncMaxBody,
    Limit::SyncTotal,
    Limit::InboxMaxMessage,
    Limit::InboxTotal,
    Limit::MaxChannels,
];

/// The memory budget and the worst case of the flags, fixed at start.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    pub budget: Option<Budget>,
    pub bound: u64,
}

/// Upper bounds of the loop-iteration histogram buckets, in seconds.
const LOOP_BUCKETS: [f64; 6] = [0.0001, 0.001, 0.005, 0.025, 0.1, 1.0];

/// Values read at scrape time rather than counted.
pub struct Gauges {
    pub open_connections: usize,
    pub waiters: PerMethod<usize>,
    pub channels: PerMethod<usize>,
    /// Channels holding a claim or messages (capped by `--max-channels`).
    pub remembered_channels: usize,
    /// Requests refused because that cap was reached.
    pub refused_no_room: u64,
    /// Requests refused because their address had its share of that cap.
    pub refused_client_channels: u64,
    /// Client addresses with remembered channels (once per method).
    pub channel_owners: usize,
    pub mcast_bytes: usize,
    pub sync_bytes: usize,
    /// Stored inbox messages and those uploading.
    pub inbox_bytes: usize,
    pub memory: Memory,
    /// Client addresses holding connections.
    pub clients: usize,
    /// Bytes in the journal (`--data-dir`).
    pub journal_bytes: Option<u64>,
    /// Whether a rewrite of the journal is under way.
    pub journal_rewriting: bool,
    /// The relay's resident memory now (`None` where it cannot be read).
    pub resident: Option<u64>,
}

impl Stats {
    /// Records how long one loop iteration took.
    pub fn loop_iteration(&mut self, took: Duration) {
        let secs = took.as_secs_f64();
        let at = LOOP_BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(LOOP_BUCKETS.len());
        self.loop_buckets[at] += 1;
        self.loop_seconds += secs;
        self.loop_longest = self.loop_longest.max(took);
    }

    /// Counts a connection ended by `timeout`.
    pub fn timed_out(&mut self, timeout: Timeout) {
        self.timeouts[timeout as usize] += 1;
    }

    /// Counts one completed exchange of `method`.
    pub fn transferred(&mut self, method: Method) {
        self.transfers.0[method as usize] += 1;
    }

    /// Counts a request refused by `limit` (besides its status).
    pub fn refused_by(&mut self, limit: Limit) {
        self.limit_refusals[limit as usize] += 1;
    }

    pub fn reject(&mut self, status: u16) {
        let at = REJECTIONS
            .iter()
            .position(|&s| s == status)
            .unwrap_or(REJECTIONS.len() - 1);
        self.rejections[at] += 1;
    }

    /// Writes the Prometheus text exposition into `out` (cleared first).
    pub fn render(&self, gauges: &Gauges, out: &mut Vec<u8>) {
        out.clear();
        render_build_info(out);
        self.render_connections(gauges, out);
        self.render_exchanges(gauges, out);
        self.render_refusals(out);
        render_memory(gauges, out);
        render_budget(gauges, out);
        self.render_loop(out);
        render_channel_cap(gauges, out);
        self.render_live_streams(out);
    }

    /// Connections open, accepted, and evicted at the connection limit.
    fn render_connections(&self, gauges: &Gauges, w: &mut Vec<u8>) {
        metric(
            w,
            "connections_open",
            "gauge",
            "Client connections open.",
            gauges.open_connections as u64,
        );
        metric(
            w,
            "connections_accepted_total",
            "counter",
            "Client connections accepted.",
            self.accepted,
        );
        metric(
            w,
            "connections_evicted_total",
            "counter",
            "Connections without a complete request head closed at the connection limit.",
            self.evicted,
        );
    }

    /// Requests waiting, exchanges completed, mcast messages stored and body
    /// bytes delivered.
    fn render_exchanges(&self, gauges: &Gauges, w: &mut Vec<u8>) {
        labelled(
            w,
            ("waiters", "gauge", "Requests waiting for a counterpart."),
            "method",
            Method::ALL.map(|m| (m.name(), gauges.waiters.get(m) as u64)),
        );
        labelled(
            w,
            (
                "transfers_total",
                "counter",
                "Completed exchanges: link transfers, mcast deliveries, sync pairs, proxy results.",
            ),
            "method",
            Method::ALL.map(|m| (m.name(), self.transfers.get(m))),
        );
        metric(
            w,
            "mcast_messages_total",
            "counter",
            "mcast messages stored.",
            self.messages,
        );
        metric(
            w,
            "relayed_bytes_total",
            "counter",
            "Body bytes delivered to receivers.",
            self.relayed_bytes,
        );
        metric(
            w,
            "spliced_bytes_total",
            "counter",
            "Of the body bytes delivered, those moved socket to pipe to socket without a copy (Linux).",
            self.spliced_bytes,
        );
        metric(
            w,
            "passed_bytes_total",
            "counter",
            "Of the body bytes delivered, those passed socket to socket through the relay's pass buffer (Linux).",
            self.passed_bytes,
        );
        labelled(
            w,
            (
                "tls_handshakes_total",
                "counter",
                "TLS handshakes that completed, and those that did not (error, plain HTTP on the TLS port, timeout, client gone).",
            ),
            "result",
            [
                ("done", self.tls_handshakes),
                ("failed", self.tls_handshake_failures),
            ],
        );
        labelled(
            w,
            (
                "tls_reloads_total",
                "counter",
                "SIGHUP reloads of the certificate pair: done, or failed (the pair in use stayed).",
            ),
            "result",
            [
                ("done", self.tls_reloads),
                ("failed", self.tls_reload_failures),
            ],
        );
    }

    /// Error responses by status and connections ended by a timeout.
    fn render_refusals(&self, w: &mut Vec<u8>) {
        let rejections = REJECTIONS.iter().zip(self.rejections);
        labelled(
            w,
            ("rejections_total", "counter", "Error responses by status."),
            "status",
            rejections.map(|(&status, n)| (StatusLabel(status), n)),
        );
        labelled(
            w,
            (
                "timeouts_total",
                "counter",
                "Connections ended by a timeout.",
            ),
            "timeout",
            Timeout::ALL.map(|t| (t.label(), self.timeouts[t as usize])),
        );
        labelled(
            w,
            (
                "limit_refusals_total",
                "counter",
                "Requests refused by a limit the memory budget sets (413, 431 or 503), by the flag that sets it.",
            ),
            "limit",
            REFUSING.map(|l| (l.flag(), self.limit_refusals[l as usize])),
        );
        metric(
            w,
            "client_refusals_total",
            "counter",
            "Requests refused with 429 because their address held --max-conns-per-client connections.",
            self.client_refusals,
        );
        metric(
            w,
            "store_failures_total",
            "counter",
            "Journal writes that failed (--data-dir); the answers waiting for them got 507.",
            self.store_failures,
        );
        metric(
            w,
            "store_full_total",
            "counter",
            "Inbox messages refused with 507 because the journal reached --data-max.",
            self.store_full,
        );
        metric(
            w,
            "journal_compactions_total",
            "counter",
            "Rewrites of the journal to its live records.",
            self.compactions,
        );
        let _ = writeln!(
            w,
            "# HELP httprelay_journal_compaction_seconds_total Time the journal's rewrites took, from snapshot to rename (on a thread of their own: the loop's part is in httprelay_loop_iteration_seconds)."
        );
        let _ = writeln!(
            w,
            "# TYPE httprelay_journal_compaction_seconds_total counter"
        );
        let _ = writeln!(
            w,
            "httprelay_journal_compaction_seconds_total {:.6}",
            self.compaction_seconds
        );
        metric(
            w,
            "fair_share_evictions_total",
            "counter",
            "Waiting requests ended with 503 when the relay was full, to make room for an address holding fewer.",
            self.fair_share_evictions,
        );
    }

    /// The event loop's health: connections closed for spinning without
    /// progress or for a broken invariant, and how long iterations take
    /// (histogram and longest).
    fn render_loop(&self, w: &mut Vec<u8>) {
        metric(
            w,
            "runaway_closed_total",
            "counter",
            "Connections closed for being driven repeatedly without moving a byte.",
            self.runaway,
        );
        metric(
            w,
            "broken_invariants_total",
            "counter",
            "Connections closed because the relay found its own state inconsistent (a bug).",
            self.broken,
        );
        let _ = writeln!(
            w,
            "# HELP httprelay_loop_iteration_seconds Event-loop iterations by how long they took (a long one delays every connection)."
        );
        let _ = writeln!(w, "# TYPE httprelay_loop_iteration_seconds histogram");
        let mut cumulative = 0;
        for (le, n) in LOOP_BUCKETS.iter().zip(self.loop_buckets) {
            cumulative += n;
            let _ = writeln!(
                w,
                "httprelay_loop_iteration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
            );
        }
        cumulative += self.loop_buckets[LOOP_BUCKETS.len()];
        let _ = writeln!(
            w,
            "httprelay_loop_iteration_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let _ = writeln!(
            w,
            "httprelay_loop_iteration_seconds_sum {:.6}",
            self.loop_seconds
        );
        let _ = writeln!(w, "httprelay_loop_iteration_seconds_count {cumulative}");
        let _ = writeln!(
            w,
            "# HELP httprelay_loop_iteration_max_seconds The longest event-loop iteration since start."
        );
        let _ = writeln!(w, "# TYPE httprelay_loop_iteration_max_seconds gauge");
        let _ = writeln!(
            w,
            "httprelay_loop_iteration_max_seconds {:.6}",
            self.loop_longest.as_secs_f64()
        );
    }

    /// mcast live streams open and the events sent to them.
    fn render_live_streams(&self, w: &mut Vec<u8>) {
        metric(
            w,
            "sse_streams",
            "gauge",
            "mcast live streams (Server-Sent Events) open.",
            self.sse_streams as u64,
        );
        metric(
            w,
            "sse_events_total",
            "counter",
            "Events (messages) sent to mcast live streams.",
            self.sse_events,
        );
    }
}

/// The version, as a label of a constant 1.
fn render_build_info(w: &mut Vec<u8>) {
    let _ = writeln!(
        w,
        "# HELP httprelay_build_info Version of the running relay."
    );
    let _ = writeln!(w, "# TYPE httprelay_build_info gauge");
    let _ = writeln!(w, "httprelay_build_info{{version=\"{VERSION}\"}} 1");
}

/// Body bytes held in memory and channels in memory.
fn render_memory(gauges: &Gauges, w: &mut Vec<u8>) {
    labelled(
        w,
        (
            "held_bytes",
            "gauge",
            "Body bytes held in memory (mcast messages, waiting sync bodies, inbox messages).",
        ),
        "method",
        [
            ("mcast", gauges.mcast_bytes as u64),
            ("sync", gauges.sync_bytes as u64),
            ("inbox", gauges.inbox_bytes as u64),
        ],
    );
    labelled(
        w,
        (
            "channels",
            "gauge",
            "Channels in memory: with a waiter, an upload, a claim or messages.",
        ),
        "method",
        Method::ALL.map(|m| (m.name(), gauges.channels.get(m) as u64)),
    );
}

/// The memory budget, the worst case of the flags within it, and the
/// relay's resident memory now.
fn render_budget(gauges: &Gauges, w: &mut Vec<u8>) {
    metric(
        w,
        "clients",
        "gauge",
        "Client addresses holding connections (IPv6 by --ipv6-client-prefix).",
        gauges.clients as u64,
    );
    let memory = gauges.memory;
    if let Some(budget) = memory.budget {
        let source = match budget.source {
            Source::Flag => "flag",
            Source::Cgroup { .. } => "cgroup",
            Source::Meminfo { .. } => "meminfo",
            Source::Unknown => "default",
        };
        labelled(
            w,
            (
                "memory_budget_bytes",
                "gauge",
                "The memory budget the limits are derived from, by where it came from (--memory, the cgroup's limit, the machine's memory).",
            ),
            "source",
            [(source, budget.bytes)],
        );
    }
    metric(
        w,
        "memory_bound_bytes",
        "gauge",
        "The most memory the relay can use with its flags, whatever clients do (docs/memory.md).",
        memory.bound,
    );
    if let Some(bytes) = gauges.journal_bytes {
        metric(
            w,
            "journal_bytes",
            "gauge",
            "Bytes in the journal of --data-dir.",
            bytes,
        );
        metric(
            w,
            "journal_compacting",
            "gauge",
            "1 while a rewrite of the journal runs on its thread, else 0.",
            u64::from(gauges.journal_rewriting),
        );
    }
    if let Some(resident) = gauges.resident {
        let _ = writeln!(
            w,
            "# HELP process_resident_memory_bytes Resident memory size in bytes."
        );
        let _ = writeln!(w, "# TYPE process_resident_memory_bytes gauge");
        let _ = writeln!(w, "process_resident_memory_bytes {resident}");
    }
}

/// The channels remembered against `--max-channels` and the requests refused
/// when it is reached.
fn render_channel_cap(gauges: &Gauges, w: &mut Vec<u8>) {
    metric(
        w,
        "channels_remembered",
        "gauge",
        "Channels holding a write-secret claim or mcast messages (capped by --max-channels).",
        gauges.remembered_channels as u64,
    );
    metric(
        w,
        "channels_refused_total",
        "counter",
        "Requests refused with 503 because --max-channels channels are remembered.",
        gauges.refused_no_room,
    );
    metric(
        w,
        "channels_client_refused_total",
        "counter",
        "Requests refused with 429 because their address made --max-channels-per-client channels remembered.",
        gauges.refused_client_channels,
    );
    metric(
        w,
        "channel_owners",
        "gauge",
        "Client addresses with remembered channels (counted once per method).",
        gauges.channel_owners as u64,
    );
}

/// One family with one sample per label value; `family`: (name, type, help).
fn labelled<L: std::fmt::Display>(
    w: &mut Vec<u8>,
    (name, kind, help): (&str, &str, &str),
    label: &str,
    samples: impl IntoIterator<Item = (L, u64)>,
) {
    let _ = writeln!(w, "# HELP httprelay_{name} {help}");
    let _ = writeln!(w, "# TYPE httprelay_{name} {kind}");
    for (value, n) in samples {
        let _ = writeln!(w, "httprelay_{name}{{{label}=\"{value}\"}} {n}");
    }
}

/// A rejection's status as a label value; 0 stands for every other status.
struct StatusLabel(u16);

impl std::fmt::Display for StatusLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            0 => f.write_str("other"),
            status => write!(f, "{status}"),
        }
    }
}

fn metric(w: &mut Vec<u8>, name: &str, kind: &str, help: &str, value: u64) {
    let _ = writeln!(w, "# HELP httprelay_{name} {help}");
    let _ = writeln!(w, "# TYPE httprelay_{name} {kind}");
    let _ = writeln!(w, "httprelay_{name} {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_values() {
        let mut stats = Stats {
            accepted: 7,
            ..Stats::default()
        };
        stats.transferred(Method::Sync);
        stats.transferred(Method::Sync);
        stats.transferred(Method::Sync);
        stats.reject(404);
        stats.reject(404);
        stats.reject(418);
        stats.loop_iteration(Duration::from_micros(50));
        stats.loop_iteration(Duration::from_millis(3));
        stats.loop_iteration(Duration::from_secs(2));
        stats.refused_by(Limit::SyncTotal);
        stats.refused_by(Limit::SyncTotal);
        let gauges = Gauges {
            open_connections: 2,
            waiters: PerMethod([1, 0, 0, 4, 2, 0]),
            channels: PerMethod([5, 0, 1, 0, 3, 0]),
            remembered_channels: 3,
            refused_no_room: 2,
            refused_client_channels: 1,
            channel_owners: 1,
            mcast_bytes: 10,
            sync_bytes: 0,
            inbox_bytes: 0,
            memory: Memory {
                budget: Some(Budget {
                    bytes: 64 << 20,
                    source: Source::Cgroup { limit: 128 << 20 },
                }),
                bound: 60 << 20,
            },
            resident: Some(3 << 20),
            clients: 4,
            journal_bytes: Some(77),
            journal_rewriting: false,
        };
        let mut out = Vec::new();
        stats.render(&gauges, &mut out);
        let text = String::from_utf8(out).unwrap();
        for line in [
            "httprelay_connections_accepted_total 7",
            "httprelay_connections_open 2",
            "httprelay_transfers_total{method=\"sync\"} 3",
            "httprelay_rejections_total{status=\"404\"} 2",
            "httprelay_rejections_total{status=\"other\"} 1",
            "httprelay_waiters{method=\"proxy\"} 4",
            "httprelay_waiters{method=\"piping\"} 2",
            "httprelay_channels{method=\"piping\"} 3",
            "httprelay_held_bytes{method=\"mcast\"} 10",
            "httprelay_channels{method=\"link\"} 5",
            "httprelay_channels{method=\"sync\"} 1",
            "httprelay_channels_remembered 3",
            "httprelay_loop_iteration_seconds_bucket{le=\"0.0001\"} 1",
            "httprelay_loop_iteration_seconds_bucket{le=\"0.001\"} 1",
            "httprelay_loop_iteration_seconds_bucket{le=\"0.005\"} 2",
            "httprelay_loop_iteration_seconds_bucket{le=\"1\"} 2",
            "httprelay_loop_iteration_seconds_bucket{le=\"+Inf\"} 3",
            "httprelay_loop_iteration_seconds_count 3",
            "httprelay_loop_iteration_max_seconds 2.000000",
            "httprelay_runaway_closed_total 0",
            "httprelay_broken_invariants_total 0",
            "httprelay_channels_refused_total 2",
            "httprelay_limit_refusals_total{limit=\"sync-total\"} 2",
            "httprelay_limit_refusals_total{limit=\"max-head\"} 0",
            "httprelay_memory_budget_bytes{source=\"cgroup\"} 67108864",
            "httprelay_memory_bound_bytes 62914560",
            "process_resident_memory_bytes 3145728",
            "httprelay_clients 4",
            "httprelay_journal_bytes 77",
            "httprelay_channels_client_refused_total 1",
            "httprelay_client_refusals_total 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // Every sample line belongs to a family announced by a TYPE line.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let histogram = ["_bucket", "_sum", "_count"]
                .iter()
                .filter_map(|suffix| name.strip_suffix(suffix))
                .any(|base| text.contains(&format!("# TYPE {base} histogram")));
            assert!(
                histogram || text.contains(&format!("# TYPE {name} ")),
                "no TYPE for {name}"
            );
        }
    }
}
