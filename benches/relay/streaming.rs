//! Streaming: one large transfer, Content-Length and chunked.

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::thread;
use std::time::{Duration, Instant};

use httprelay_testkit::{cpu_time_of, req_host, Addr, Conn, RelayProcess};

use crate::baselines::Forwarder;
use crate::relay::get_request;
use crate::report::{met, ratio, row3, size_label, Report};
use crate::stats::Series;
use crate::usage::thread_usage;
use crate::{Res, Setup, GIB, MIB, STREAM_UNIT};

pub struct StreamData {
    /// `STREAM_UNIT` bytes of a pattern.
    pub raw: Vec<u8>,
    /// The same as one chunk: size line, data, CRLF.
    chunk: Vec<u8>,
}

impl StreamData {
    pub fn new() -> StreamData {
        let raw: Vec<u8> = (0..STREAM_UNIT).map(|i| (i % 251) as u8).collect();
        let mut chunk = format!("{STREAM_UNIT:x}\r\n").into_bytes();
        chunk.extend_from_slice(&raw);
        chunk.extend_from_slice(b"\r\n");
        StreamData { raw, chunk }
    }
}

/// [MiB/s, relay CPU s per GiB] for one link transfer of `bytes`.
fn relay_stream(
    relay: &RelayProcess,
    data: &StreamData,
    bytes: u64,
    chunked: bool,
) -> Res<[f64; 2]> {
    let server = Server {
        addr: relay.addr(),
        pid: relay.pid(),
        path: "/link/stream",
        sender_answer: SenderAnswer::Empty,
    };
    let [rate, cpu, _clients] = stream_through(&server, data, bytes, chunked)?;
    Ok([rate, cpu])
}

/// A server a stream goes through: this relay or a reference.
pub struct Server<'a> {
    pub addr: &'a Addr,
    pub pid: u32,
    pub path: &'a str,
    pub sender_answer: SenderAnswer,
}

/// What the sender gets once its body is through.
pub enum SenderAnswer {
    /// `200` with an empty body (a link producer).
    Empty,
    /// `200` with any body (a Piping sender's progress lines).
    Any,
}

/// [MiB/s, server CPU s per GiB, the two clients' CPU s per GiB] for one
/// transfer of `bytes` from a sender to a receiver through `server`, the
/// receiver reading every byte.
pub fn stream_through(
    server: &Server,
    data: &StreamData,
    bytes: u64,
    chunked: bool,
) -> Res<[f64; 3]> {
    let path = server.path;
    let mut c = Conn::try_open(server.addr, STREAM_UNIT, crate::IO_TIMEOUT)?;
    c.try_send(&get_request(path))?;
    thread::sleep(Duration::from_millis(10));
    let mut p = Conn::try_open(server.addr, 16 * 1024, crate::IO_TIMEOUT)?;
    let units = bytes / STREAM_UNIT as u64;
    let length = bytes.to_string();
    let framing = if chunked {
        ("Transfer-Encoding", "chunked")
    } else {
        ("Content-Length", length.as_str())
    };
    let content_type = ("Content-Type", "application/octet-stream");
    let head = req_host("POST", path, "bench", &[content_type, framing], b"");
    let server_cpu = || cpu_time_of(server.pid).map_or(f64::NAN, |d| d.as_secs_f64());
    let cpu0 = server_cpu();
    let t0 = Instant::now();
    let (got, elapsed, clients_cpu) = thread::scope(|s| {
        let producer = s.spawn(move || -> Res<f64> {
            let cpu0 = thread_usage("/proc/thread-self").0;
            p.try_send(&head)?;
            let unit = if chunked { &data.chunk } else { &data.raw };
            for _ in 0..units {
                p.try_send(unit)?;
            }
            if chunked {
                p.try_send(b"0\r\n\r\n")?;
            }
            match server.sender_answer {
                SenderAnswer::Empty => p.expect_ok(0)?,
                SenderAnswer::Any => match p.read_status_and_body(None)? {
                    (200, _) => {}
                    (status, _) => return Err(format!("sender got {status}").into()),
                },
            }
            Ok(thread_usage("/proc/thread-self").0 - cpu0)
        });
        let cpu0 = thread_usage("/proc/thread-self").0;
        let got: Res<(u16, u64)> = c.read_status_and_body(None).map_err(Into::into);
        let elapsed = t0.elapsed();
        let receiver_cpu = thread_usage("/proc/thread-self").0 - cpu0;
        let sent = producer
            .join()
            .unwrap_or_else(|_| Err("producer panicked".into()));
        let clients = sent.as_ref().map_or(f64::NAN, |s| s + receiver_cpu);
        (got.and_then(|g| sent.map(|_| g)), elapsed, clients)
    });
    let cpu = server_cpu() - cpu0;
    let (status, n) = got?;
    if status != 200 || n != bytes {
        return Err(format!("stream: got {status} with {n} of {bytes} bytes").into());
    }
    let gib = bytes as f64 / GIB as f64;
    Ok([
        bytes as f64 / MIB as f64 / elapsed.as_secs_f64(),
        cpu / gib,
        clients_cpu / gib,
    ])
}

/// [MiB/s, forwarder CPU s per GiB] for one transfer of `bytes` through `fwd`.
pub fn base_stream(fwd: &Forwarder, data: &StreamData, bytes: u64) -> Res<[f64; 2]> {
    let (mut p, mut c) = fwd.pair()?;
    let units = bytes / STREAM_UNIT as u64;
    let mut buf = vec![0u8; STREAM_UNIT];
    let cpu0 = fwd.book.total();
    let t0 = Instant::now();
    let (got, elapsed) = thread::scope(|s| {
        let producer = s.spawn(move || -> Res<()> {
            for _ in 0..units {
                p.write_all(&data.raw)?;
            }
            Ok(p.shutdown(Shutdown::Write)?)
        });
        let mut got = 0u64;
        while got < bytes {
            match c.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got += n as u64,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let elapsed = t0.elapsed();
        let sent = producer
            .join()
            .unwrap_or_else(|_| Err("producer panicked".into()));
        (sent.map(|()| got), elapsed)
    });
    let got = got?;
    // The forwarder thread records its CPU on exit, after the producer's EOF.
    thread::sleep(Duration::from_millis(20));
    let cpu = fwd.book.total() - cpu0;
    if got != bytes {
        return Err(format!("forwarder stream: {got} of {bytes} bytes").into());
    }
    Ok([
        bytes as f64 / MIB as f64 / elapsed.as_secs_f64(),
        cpu / (bytes as f64 / GIB as f64),
    ])
}

struct StreamResults {
    length: Series,
    chunked: Series,
    copy: Series,
    big: Series,
}

fn streaming(setup: &Setup) -> Res<StreamResults> {
    let data = StreamData::new();
    let bytes = setup.plan.stream_bytes;
    // Warm-up: a short transfer of each kind.
    relay_stream(setup.relay, &data, 16 * MIB, false)?;
    relay_stream(setup.relay, &data, 16 * MIB, true)?;
    base_stream(setup.copy, &data, 16 * MIB)?;
    base_stream(setup.big, &data, 16 * MIB)?;
    let mut out = StreamResults {
        length: Series::default(),
        chunked: Series::default(),
        copy: Series::default(),
        big: Series::default(),
    };
    for run in 0..setup.plan.runs {
        eprintln!("bench: streaming run {}/{}", run + 1, setup.plan.runs);
        out.length
            .push(&relay_stream(setup.relay, &data, bytes, false)?);
        out.chunked
            .push(&relay_stream(setup.relay, &data, bytes, true)?);
        out.copy.push(&base_stream(setup.copy, &data, bytes)?);
        out.big.push(&base_stream(setup.big, &data, bytes)?);
    }
    Ok(out)
}

/// MiB/s of one large transfer each way of framing, and CPU per GiB.
pub fn section(setup: &Setup, report: &mut Report) -> Res<()> {
    let plan = setup.plan;
    let s = streaming(setup)?;
    let size = size_label(plan.stream_bytes);
    for (name, series) in [("Content-Length", &s.length), ("chunked", &s.chunked)] {
        let (r, c, b) = (series.median(0), s.copy.median(0), s.big.median(0));
        let mut row = row3(&format!("stream {size}, {name}: MiB/s"), r, c, b, 0);
        row.target = "≥ 1.3× 256 KiB".into();
        row.met = met((!ratio(r, b).is_nan()).then(|| ratio(r, b) >= 1.3));
        report.rows.push(row);
    }
    for (name, series) in [("Content-Length", &s.length), ("chunked", &s.chunked)] {
        report.rows.push(row3(
            &format!("stream {name}: CPU s per GiB"),
            series.median(1),
            s.copy.median(1),
            s.big.median(1),
            3,
        ));
    }
    Ok(())
}
