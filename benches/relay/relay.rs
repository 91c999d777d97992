//! The relay under test: which binary, how it is started, what it says about
//! itself (CPU, run-queue wait, RSS, `/metrics`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use httprelay_testkit::{req_host, rss_kib_of, Conn, Launch, RelayProcess};

use crate::usage::Usage;
use crate::Res;

/// `HTTPRELAY_BENCH_BIN`, else this build's binary, else a fresh release build.
pub fn relay_binary() -> Res<PathBuf> {
    if let Some(bin) = std::env::var_os("HTTPRELAY_BENCH_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_httprelay"));
    if bin.exists() {
        return Ok(bin);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let release = root.join("target/release/httprelay");
    if !release.exists() {
        eprintln!(
            "bench: {} missing; cargo build --release",
            release.display()
        );
        let status = Command::new("cargo")
            .args(["build", "--release"])
            .current_dir(root)
            .status()
            .map_err(|e| format!("cargo build --release: {e}"))?;
        if !status.success() {
            return Err(format!("cargo build --release failed: {status}").into());
        }
    }
    Ok(release)
}

/// Starts `bin` on 127.0.0.1 with as many connections as descriptors allow
/// (the per-waiter figure parks tens of thousands); its output goes to stderr.
pub fn start_relay(bin: &Path) -> Res<RelayProcess> {
    start_relay_with(bin, &[])
}

/// [`start_relay`] with more flags (e.g. `--piping`).
pub fn start_relay_with(bin: &Path, flags: &[&str]) -> Res<RelayProcess> {
    let mut args = vec![
        "-a",
        "127.0.0.1",
        "-p",
        "0",
        "--idle-timeout",
        "3600",
        "--max-conns",
        "1000000",
    ];
    args.extend_from_slice(flags);
    Ok(Launch::new(bin, &args).echo("relay: ").start()?)
}

/// CPU seconds the relay has used (NaN if `/proc` does not say).
pub fn cpu(relay: &RelayProcess) -> f64 {
    httprelay_testkit::cpu_time_of(relay.pid()).map_or(f64::NAN, |d| d.as_secs_f64())
}

/// CPU seconds and run-queue wait seconds of the relay.
pub fn usage(relay: &RelayProcess) -> Usage {
    (
        cpu(relay),
        relay.run_queue_wait().map_or(f64::NAN, |d| d.as_secs_f64()),
    )
}

pub fn rss_kib(relay: &RelayProcess) -> Option<u64> {
    rss_kib_of(relay.pid())
}

/// A connection to the relay with a read buffer of `buffer` bytes.
pub fn connect(relay: &RelayProcess, buffer: usize) -> Res<Conn> {
    Ok(Conn::try_open(relay.addr(), buffer, crate::IO_TIMEOUT)?)
}

pub fn get_request(path: &str) -> Vec<u8> {
    req_host("GET", path, "bench", &[], b"")
}

pub fn post_request(path: &str, body: &[u8]) -> Vec<u8> {
    req_host(
        "POST",
        path,
        "bench",
        &[("Content-Type", "application/octet-stream")],
        body,
    )
}

/// The value of the first metric line starting with `name` (labels included).
pub fn metric(conn: &mut Conn, name: &str) -> Res<f64> {
    conn.try_send(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")?;
    let mut body = Vec::new();
    conn.read_status_and_body(Some(&mut body))?;
    let text = String::from_utf8_lossy(&body);
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("metric {name} not found").into())
}

/// Polls `/metrics` until `name` reaches `target`; returns the last value.
pub fn wait_metric(conn: &mut Conn, name: &str, target: f64, timeout: Duration) -> Res<f64> {
    let deadline = Instant::now() + timeout;
    loop {
        let v = metric(conn, name)?;
        if v >= target || Instant::now() >= deadline {
            return Ok(v);
        }
        thread::sleep(Duration::from_millis(2));
    }
}
