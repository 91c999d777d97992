//! Mcast fan-out: one message to many parked readers.

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use httprelay_testkit::{complete_length, RelayProcess};

use crate::baselines::start_fanout_forwarder;
use crate::plan::Plan;
use crate::relay::{connect, get_request, post_request, wait_metric};
use crate::report::{num, ratio, Report, Row};
use crate::stats::Series;
use crate::{plain_connect, Res, FAN_MESSAGE, IO_TIMEOUT};

struct Readers {
    poll: mio::Poll,
    socks: Vec<mio::net::TcpStream>,
    bufs: Vec<Vec<u8>>,
    lens: Vec<usize>,
}

impl Readers {
    fn connect(addr: SocketAddr, n: usize) -> Res<Readers> {
        let poll = mio::Poll::new()?;
        let mut socks = Vec::with_capacity(n);
        for i in 0..n {
            let s = plain_connect(addr)?;
            s.set_nonblocking(true)?;
            let mut s = mio::net::TcpStream::from_std(s);
            poll.registry()
                .register(&mut s, mio::Token(i), mio::Interest::READABLE)?;
            socks.push(s);
        }
        Ok(Readers {
            poll,
            socks,
            bufs: vec![vec![0; 4096]; n],
            lens: vec![0; n],
        })
    }

    fn send_all(&mut self, bytes: &[u8]) -> Res<()> {
        for s in &mut self.socks {
            let mut off = 0;
            while off < bytes.len() {
                match s.write(&bytes[off..]) {
                    Ok(n) => off += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(1))
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(format!("reader write: {e}").into()),
                }
            }
        }
        Ok(())
    }

    /// Reads until every reader has a complete message (`complete` says when);
    /// returns the time the last one completed, from `t0`.
    fn collect(&mut self, t0: Instant, complete: fn(&[u8]) -> bool) -> Res<Duration> {
        let n = self.socks.len();
        self.lens.iter_mut().for_each(|l| *l = 0);
        let mut done = vec![false; n];
        let mut left = n;
        let mut events = mio::Events::with_capacity(1024);
        let deadline = t0 + IO_TIMEOUT;
        while left > 0 {
            if Instant::now() > deadline {
                return Err(format!("fan-out: {left} of {n} readers never got the message").into());
            }
            self.poll
                .poll(&mut events, Some(Duration::from_millis(100)))?;
            for ev in events.iter() {
                let i = ev.token().0;
                loop {
                    let (buf, len) = (&mut self.bufs[i], &mut self.lens[i]);
                    if *len == buf.len() {
                        return Err("fan-out response larger than 4 KiB".into());
                    }
                    match self.socks[i].read(&mut buf[*len..]) {
                        Ok(0) => return Err("fan-out reader closed".into()),
                        Ok(k) => *len += k,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => return Err(format!("fan-out read: {e}").into()),
                    }
                }
                if !done[i] && complete(&self.bufs[i][..self.lens[i]]) {
                    done[i] = true;
                    left -= 1;
                }
            }
        }
        Ok(t0.elapsed())
    }
}

fn http_complete(b: &[u8]) -> bool {
    complete_length(b).is_some()
}

fn raw_complete(b: &[u8]) -> bool {
    b.len() >= FAN_MESSAGE
}

/// Milliseconds until the last of `plan.fan_readers` has the message: relay
/// and the write-loop baseline, interleaved.
fn fanout(plan: &Plan, relay: &RelayProcess) -> Res<(Series, Series)> {
    let n = plan.fan_readers;
    let mut readers = Readers::connect(relay.tcp_addr(), n)?;
    let mut producer = connect(relay, 16 * 1024)?;
    let mut metrics = connect(relay, 64 * 1024)?;
    let post = post_request("/mcast/fanout", &[b'm'; FAN_MESSAGE]);
    let base_addr = start_fanout_forwarder(n)?;
    let mut base = Readers::connect(base_addr, n)?;
    let mut base_producer = plain_connect(base_addr)?;
    let mut relay_ms = Series::default();
    let mut base_ms = Series::default();
    let waiters = "httprelay_waiters{method=\"mcast\"}";
    // Round 0 warms up.
    for round in 0..=plan.runs {
        if round > 0 {
            eprintln!("bench: fan-out run {round}/{}", plan.runs);
        }
        readers.send_all(&get_request(&format!("/mcast/fanout?seqid={round}")))?;
        let parked = wait_metric(&mut metrics, waiters, n as f64, Duration::from_secs(20))?;
        if parked < n as f64 {
            return Err(format!("only {parked} of {n} mcast readers parked").into());
        }
        let t0 = Instant::now();
        producer.try_send(&post)?;
        let last = readers.collect(t0, http_complete)?;
        producer.expect_ok(0)?;
        let t0 = Instant::now();
        base_producer.write_all(&[b'm'; FAN_MESSAGE])?;
        let base_last = base.collect(t0, raw_complete)?;
        if round > 0 {
            relay_ms.push(&[last.as_secs_f64() * 1e3]);
            base_ms.push(&[base_last.as_secs_f64() * 1e3]);
        }
    }
    Ok((relay_ms, base_ms))
}

/// Milliseconds until the last parked reader has the message.
pub fn section(plan: &Plan, relay: &RelayProcess, report: &mut Report) -> Res<()> {
    let (r, b) = fanout(plan, relay)?;
    let (r, c) = (r.median(0), b.median(0));
    report.rows.push(Row {
        figure: format!(
            "mcast 1 KiB to {} parked readers: last has it (ms)",
            plan.fan_readers
        ),
        relay: num(r, 2),
        copy: num(c, 2),
        big: "–".into(),
        ratio: format!("{}× / –", num(ratio(r, c), 2)),
        target: "–".into(),
        met: "–".into(),
    });
    report.notes.push(
        "fan-out baseline (io::copy column): one thread writing the 1 KiB message \
         to each of the readers' sockets in turn"
            .into(),
    );
    Ok(())
}
