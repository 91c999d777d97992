//! `cargo bench --bench relay`: the release relay against two baselines that
//! need no relay logic, measured in the same run, interleaved (A B C A B C ...),
//! medians over runs; prints one table with the targets (issue 7).
//!
//! Baselines, implemented as threads of this process (`baselines`):
//! - `io::copy`: a blocking TCP forwarder; it pairs accepted connections
//!   2k (producer) and 2k+1 (consumer) and runs `std::io::copy` from one to
//!   the other on a thread per pair (8 KiB buffer on sockets).
//! - `256 KiB`: the same with a 256 KiB read buffer and `write_all`.
//!
//! The client writes a body to the producer connection and reads it from the
//! consumer connection in both cases; against the relay it speaks HTTP/1.1
//! keep-alive (`GET /link/id` on the consumer, `POST /link/id` on the producer),
//! with the testkit's blocking client, or the event-driven one in `pairs`.
//!
//! Environment:
//! - `HTTPRELAY_BENCH_QUICK=1`: small counts, for a smoke run under a minute.
//! - `HTTPRELAY_BENCH_RUNS=N`: runs per figure (default 5, quick 3).
//! - `HTTPRELAY_BENCH_ONLY=latency,pairs,stream,fanout,piping,memory,footprint`.
//! - `HTTPRELAY_BENCH_CLIENTS=N`: client threads driving the pairs (default 1).
//! - `HTTPRELAY_BENCH_BIN=PATH`: another relay binary (e.g. one with symbols,
//!   for `perf record -p`); the footprint rows still describe this build's.
//! - `HTTPRELAY_BENCH_PIPING_RUST=PATH`: piping-server-rust's binary (a hyper
//!   server, built by whoever runs the bench): the stream section adds rows
//!   of the same transfers through it, interleaved (`hyper_ref.rs`).
//!
//! Nothing here asserts on timing: it is a report.

mod baselines;
mod fanout;
mod footprint;
mod hyper_ref;
mod latency;
mod limits;
mod memory;
mod pairs;
mod piping;
mod plan;
mod relay;
mod report;
mod stats;
mod streaming;
mod usage;

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use baselines::{Forwarder, FwdKind};
use httprelay_testkit::RelayProcess;
use plan::Plan;
use report::Report;

/// The relay and the two baselines, as every section that compares them gets them.
struct Setup<'a> {
    plan: &'a Plan,
    relay: &'a RelayProcess,
    copy: &'a Forwarder,
    big: &'a Forwarder,
}

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;
/// Body size for latency and pair throughput.
const SMALL: usize = 64;
/// Mcast fan-out message size.
const FAN_MESSAGE: usize = 1024;
/// Client write unit for streaming (one chunk when chunked).
const STREAM_UNIT: usize = MIB as usize;
/// Any client socket read blocks at most this long.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A raw TCP connection, as the baselines and the event-driven client use.
fn plain_connect(addr: SocketAddr) -> Res<TcpStream> {
    httprelay_testkit::connect_tcp(addr, IO_TIMEOUT)
        .map_err(|e| format!("connect {addr}: {e}").into())
}

/// Exits with the reason when the bench cannot start at all.
fn or_exit<T, E: std::fmt::Display>(result: Result<T, E>, what: &str) -> T {
    result.unwrap_or_else(|e| {
        eprintln!("bench: {what}{e}");
        std::process::exit(1);
    })
}

fn main() {
    // `cargo test --benches` runs this without `--bench`: nothing to measure then.
    if !std::env::args().any(|a| a == "--bench")
        && std::env::var_os("HTTPRELAY_BENCH_QUICK").is_none()
    {
        println!("relay bench: run it with `cargo bench --bench relay` (skipped)");
        return;
    }
    let plan = Plan::from_env();
    let started = Instant::now();
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let bin = or_exit(relay::relay_binary(), "");
    limits::raise_nofile(0);
    let relay = or_exit(relay::start_relay(&bin), "");
    let copy = or_exit(Forwarder::start(FwdKind::Copy), "forwarder: ");
    let big = or_exit(Forwarder::start(FwdKind::Big), "forwarder: ");
    let mut report = Report::default();
    let mut rss_trail: Vec<String> = Vec::new();
    let mut rss_mark = |what: &str| {
        if let Some(kib) = relay::rss_kib(&relay) {
            rss_trail.push(format!("{what} {kib}"));
        }
    };
    rss_mark("start");

    let setup = Setup {
        plan: &plan,
        relay: &relay,
        copy: &copy,
        big: &big,
    };
    if plan.wants("latency") {
        report.section("link latency", |r| latency::section(&setup, r));
        rss_mark("latency");
    }
    if plan.wants("pairs") {
        report.section("pair throughput", |r| pairs::section(&setup, r));
        rss_mark("pairs");
    }
    if plan.wants("stream") {
        report.section("streaming", |r| streaming::section(&setup, r));
        rss_mark("streaming");
        report.section("streaming against hyper", |r| hyper_ref::section(&setup, r));
    }
    if plan.wants("fanout") {
        report.section("mcast fan-out", |r| fanout::section(&plan, &relay, r));
        rss_mark("fan-out");
    }
    report.notes.push(format!(
        "relay RSS (KiB) at start and after each section: {}",
        rss_trail.join(", ")
    ));
    drop(relay);

    if plan.wants("piping") {
        report.section("piping", |r| piping::section(&plan, &bin, &copy, &big, r));
    }
    if plan.wants("memory") {
        report.section("memory", |r| memory::section(&plan, &bin, r));
    }
    if plan.wants("footprint") {
        footprint::section(&plan, &bin, &mut report);
    }
    report.print(&plan, &bin, &load_before, started);
}
