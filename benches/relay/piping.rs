//! Piping: one sender to one receiver (`/x?n=1`, the zero-copy path of a link
//! transfer) and to three (`/y?n=3`, a broadcast at the pace of the slowest),
//! on a relay of its own started with `--piping`; the body is the stream
//! section's pattern and size, checked byte for byte at every receiver.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use httprelay_testkit::{req_host, Conn, RelayProcess, RssSampler};

use crate::baselines::Forwarder;
use crate::plan::Plan;
use crate::relay::{connect, cpu, get_request, rss_kib, start_relay_with, wait_metric};
use crate::report::{failed, num, ratio, row3, size_label, Report, Row};
use crate::stats::Series;
use crate::streaming::{base_stream, StreamData};
use crate::{Res, GIB, MIB, STREAM_UNIT};

/// The receivers of the broadcast.
const FAN: usize = 3;
/// The sender's last progress line when every receiver has the body.
const ALL_RECEIVED: &str = "[INFO] All receiver(s) was/were received successfully.\n";

/// One transfer: [MiB/s per receiver, aggregate MiB/s, relay CPU s per GiB
/// delivered], and the relay's RSS just before it and at its peak.
struct Piped {
    figures: [f64; 3],
    before_kib: u64,
    peak_kib: u64,
}

/// Compares a received body with the repeated pattern, piece by piece.
struct PatternCheck<'a> {
    raw: &'a [u8],
    at: u64,
    first_mismatch: Option<u64>,
}

impl PatternCheck<'_> {
    fn feed(&mut self, mut piece: &[u8]) {
        while !piece.is_empty() {
            let pos = (self.at % self.raw.len() as u64) as usize;
            let k = piece.len().min(self.raw.len() - pos);
            let (now, rest) = piece.split_at(k);
            if self.first_mismatch.is_none() && now != &self.raw[pos..pos + k] {
                let i = now.iter().zip(&self.raw[pos..]).take_while(|(a, b)| a == b);
                self.first_mismatch = Some(self.at + i.count() as u64);
            }
            self.at += k as u64;
            piece = rest;
        }
    }
}

/// Reads one receiver's response: its head must say 200 and `bytes`, its body
/// must be the pattern. Returns when the last byte arrived.
fn receive(mut conn: Conn, raw: &[u8], bytes: u64) -> Res<Instant> {
    let head = conn
        .try_read_head()
        .ok_or("closed before a response head")?;
    if head.status != 200 || head.content_length() != Some(bytes) {
        let length = head.header("content-length").unwrap_or("none");
        return Err(format!("got {} with Content-Length {length}", head.status).into());
    }
    let mut check = PatternCheck {
        raw,
        at: 0,
        first_mismatch: None,
    };
    let (_, got) = conn.stream_body(&head, false, usize::MAX, |piece| check.feed(piece));
    let done = Instant::now();
    if got != bytes {
        return Err(format!("received {got} of {bytes} bytes").into());
    }
    if let Some(at) = check.first_mismatch {
        return Err(format!("body differs from the pattern at byte {at}").into());
    }
    Ok(done)
}

/// What a panicked thread said (the testkit's client panics on a broken read).
fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panicked".into())
}

/// `n` receivers park on `path`, then the sender `PUT`s `bytes` of the pattern;
/// timed from the sender's first byte to the last receiver's last.
fn transfer(
    relay: &RelayProcess,
    metrics: &mut Conn,
    data: &StreamData,
    bytes: u64,
    n: usize,
    path: &str,
) -> Res<Piped> {
    let mut receivers = Vec::with_capacity(n);
    for _ in 0..n {
        let mut c = connect(relay, STREAM_UNIT)?;
        c.try_send(&get_request(path))?;
        receivers.push(c);
    }
    let waiters = "httprelay_waiters{method=\"piping\"}";
    let parked = wait_metric(metrics, waiters, n as f64, Duration::from_secs(10))?;
    if parked < n as f64 {
        return Err(format!("only {parked} of {n} receivers parked on {path}").into());
    }
    let mut sender = connect(relay, 16 * 1024)?;
    let length = bytes.to_string();
    let head = req_host("PUT", path, "bench", &[("Content-Length", &length)], b"");
    let before_kib = rss_kib(relay).unwrap_or(0);
    let sampler = RssSampler::start(relay.pid());
    let cpu0 = cpu(relay);
    let t0 = Instant::now();
    let (said, done) = thread::scope(|s| {
        let threads: Vec<_> = receivers
            .into_iter()
            .map(|c| s.spawn(|| receive(c, &data.raw, bytes)))
            .collect();
        let said = (|| -> Res<(u16, Vec<u8>)> {
            sender.try_send(&head)?;
            for _ in 0..bytes / STREAM_UNIT as u64 {
                sender.try_send(&data.raw)?;
            }
            let mut text = Vec::new();
            let (status, _) = sender.read_status_and_body(Some(&mut text))?;
            Ok((status, text))
        })();
        let done: Vec<Res<Instant>> = threads
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                let r = t.join().unwrap_or_else(|p| Err(panic_text(p).into()));
                r.map_err(|e| format!("receiver {} of {n}: {e}", i + 1).into())
            })
            .collect();
        (said, done)
    });
    let cpu = cpu(relay) - cpu0;
    let (peak_kib, _) = sampler.finish();
    let mut last = Duration::ZERO;
    for d in done {
        last = last.max(d? - t0);
    }
    let (status, text) = said.map_err(|e| format!("sender: {e}"))?;
    if status != 200 || !text.ends_with(ALL_RECEIVED.as_bytes()) {
        let tail = String::from_utf8_lossy(&text[text.len().saturating_sub(80)..]).into_owned();
        return Err(format!("sender got {status} ending {tail:?}").into());
    }
    let per = bytes as f64 / MIB as f64 / last.as_secs_f64();
    Ok(Piped {
        figures: [
            per,
            per * n as f64,
            cpu / (bytes as f64 * n as f64 / GIB as f64),
        ],
        before_kib,
        peak_kib,
    })
}

/// The figures of one kind of transfer over the runs, or why it stopped.
#[derive(Default)]
struct Runs {
    series: Series,
    /// RSS before the first measured transfer, and the highest peak.
    before_kib: Option<u64>,
    peak_kib: u64,
    error: Option<String>,
}

impl Runs {
    /// Runs one transfer unless an earlier one failed; `keep` false for a warm-up.
    fn run(&mut self, keep: bool, go: impl FnOnce() -> Res<Piped>) {
        if self.error.is_some() {
            return;
        }
        match go() {
            Ok(p) if keep => {
                self.series.push(&p.figures);
                self.before_kib.get_or_insert(p.before_kib);
                self.peak_kib = self.peak_kib.max(p.peak_kib);
            }
            Ok(_) => {}
            Err(e) => self.error = Some(e.to_string()),
        }
    }
}

struct PipingResults {
    one: Runs,
    fan: Runs,
    copy: Series,
    big: Series,
    idle_kib: u64,
}

fn piping(
    plan: &Plan,
    relay: &RelayProcess,
    copy: &Forwarder,
    big: &Forwarder,
) -> Res<PipingResults> {
    let data = StreamData::new();
    let bytes = plan.stream_bytes;
    thread::sleep(Duration::from_millis(200));
    let idle_kib = rss_kib(relay).ok_or("no VmRSS for the relay")?;
    let mut metrics = connect(relay, 64 * 1024)?;
    let (mut one, mut fan) = (Runs::default(), Runs::default());
    let (mut copy_s, mut big_s) = (Series::default(), Series::default());
    // Round 0 warms up with short transfers.
    for round in 0..=plan.runs {
        let (keep, size) = if round == 0 {
            (false, 16 * MIB)
        } else {
            eprintln!("bench: piping run {round}/{}", plan.runs);
            (true, bytes)
        };
        one.run(keep, || {
            transfer(relay, &mut metrics, &data, size, 1, "/x?n=1")
        });
        fan.run(keep, || {
            transfer(relay, &mut metrics, &data, size, FAN, "/y?n=3")
        });
        let c = base_stream(copy, &data, size)?;
        let b = base_stream(big, &data, size)?;
        if keep {
            copy_s.push(&c);
            big_s.push(&b);
        }
    }
    Ok(PipingResults {
        one,
        fan,
        copy: copy_s,
        big: big_s,
        idle_kib,
    })
}

/// A row with the relay's figure only.
fn relay_row(figure: &str, relay: String) -> Row {
    Row {
        figure: figure.into(),
        relay,
        copy: "–".into(),
        big: "–".into(),
        ratio: "–".into(),
        target: "–".into(),
        met: "–".into(),
    }
}

/// MiB/s and relay CPU per GiB delivered to one receiver and to three, the
/// broadcast's ratios to one receiver, and the relay's RSS during it.
pub fn section(
    plan: &Plan,
    bin: &Path,
    copy: &Forwarder,
    big: &Forwarder,
    report: &mut Report,
) -> Res<()> {
    let relay = start_relay_with(bin, &["--piping"])?;
    let p = piping(plan, &relay, copy, big)?;
    let size = size_label(plan.stream_bytes);
    let n3 = format!("piping {size}, n={FAN}");
    let (one, fan) = (&p.one.series, &p.fan.series);
    match &p.one.error {
        Some(e) => report.rows.push(failed(&format!("piping {size}, n=1"), e)),
        None => report.rows.push(row3(
            &format!("piping {size}, n=1: MiB/s"),
            one.median(0),
            p.copy.median(0),
            p.big.median(0),
            0,
        )),
    }
    match &p.fan.error {
        Some(e) => report.rows.push(failed(&n3, e)),
        None => {
            report.rows.push(relay_row(
                &format!("{n3}: MiB/s per receiver"),
                num(fan.median(0), 0),
            ));
            report.rows.push(relay_row(
                &format!("{n3}: MiB/s aggregate"),
                num(fan.median(1), 0),
            ));
            report.rows.push(relay_row(
                &format!("piping n={FAN} ÷ n=1: MiB/s per receiver / aggregate"),
                format!(
                    "{}× / {}×",
                    num(ratio(fan.median(0), one.median(0)), 2),
                    num(ratio(fan.median(1), one.median(0)), 2)
                ),
            ));
        }
    }
    if p.one.error.is_none() {
        report.rows.push(row3(
            "piping n=1: CPU s per GiB delivered",
            one.median(2),
            p.copy.median(1),
            p.big.median(1),
            3,
        ));
    }
    if p.fan.error.is_none() {
        report.rows.push(relay_row(
            &format!("piping n={FAN}: CPU s per GiB delivered"),
            num(fan.median(2), 3),
        ));
        report.rows.push(relay_row(
            &format!("piping n={FAN} ÷ n=1: CPU s per GiB delivered"),
            format!("{}×", num(ratio(fan.median(2), one.median(2)), 2)),
        ));
        let before = p.fan.before_kib.unwrap_or(0);
        report.rows.push(relay_row(
            &format!("piping n={FAN}: relay RSS before / peak (KiB)"),
            format!(
                "{before} / {} (+{})",
                p.fan.peak_kib,
                p.fan.peak_kib.saturating_sub(before)
            ),
        ));
    }
    report.notes.push(format!(
        "piping: a relay of its own with --piping (RSS {} KiB when started); {FAN} receivers \
         (or 1) park, then the sender PUTs the body with Content-Length; MiB/s per receiver = \
         body ÷ time from the sender's first byte to the last receiver's last byte, aggregate = \
         {FAN} × that; CPU per GiB delivered counts every receiver's copy; every receiver's \
         length and bytes are checked against the pattern; baselines carry the same body once",
        p.idle_kib
    ));
    Ok(())
}
