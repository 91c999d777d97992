//! Link latency: one exchange at a time.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use httprelay_testkit::Conn;

use crate::relay::{connect, get_request, post_request};
use crate::report::{met, ratio, row3, Report};
use crate::stats::{percentile, Series, Trio};
use crate::{Res, Setup, SMALL};

/// Consumer's GET parked first, then the producer's POST; nanoseconds from the
/// POST until the consumer has the whole body.
fn relay_latency(c: &mut Conn, p: &mut Conn, get: &[u8], post: &[u8], n: usize) -> Res<Vec<u64>> {
    let mut lat = Vec::with_capacity(n);
    c.try_send(get)?;
    thread::sleep(Duration::from_millis(5));
    for i in 0..n {
        let t0 = Instant::now();
        p.try_send(post)?;
        c.expect_ok(SMALL as u64)?;
        lat.push(t0.elapsed().as_nanos() as u64);
        if i + 1 < n {
            // The next GET goes out now, to be parked while the producer's
            // answer is read.
            c.try_send(get)?;
        }
        p.expect_ok(0)?;
    }
    Ok(lat)
}

fn base_latency(p: &mut TcpStream, c: &mut TcpStream, n: usize) -> Res<Vec<u64>> {
    let body = [b'x'; SMALL];
    let mut got = [0u8; SMALL];
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        p.write_all(&body)?;
        c.read_exact(&mut got)?;
        lat.push(t0.elapsed().as_nanos() as u64);
    }
    Ok(lat)
}

fn latency_figures(mut lat: Vec<u64>) -> [f64; 3] {
    lat.sort_unstable();
    [
        percentile(&lat, 0.50) / 1e3,
        percentile(&lat, 0.99) / 1e3,
        percentile(&lat, 0.999) / 1e3,
    ]
}

fn latency(setup: &Setup) -> Res<Trio> {
    let mut rc = connect(setup.relay, 64 * 1024)?;
    let mut rp = connect(setup.relay, 64 * 1024)?;
    let get = get_request("/link/latency");
    let post = post_request("/link/latency", &[b'x'; SMALL]);
    let (mut cp, mut cc) = setup.copy.pair()?;
    let (mut bp, mut bc) = setup.big.pair()?;
    let warm = setup.plan.latency_exchanges / 10;
    relay_latency(&mut rc, &mut rp, &get, &post, warm)?;
    base_latency(&mut cp, &mut cc, warm)?;
    base_latency(&mut bp, &mut bc, warm)?;
    let mut out = Trio {
        relay: Series::default(),
        copy: Series::default(),
        big: Series::default(),
    };
    let n = setup.plan.latency_exchanges;
    for run in 0..setup.plan.runs {
        eprintln!("bench: latency run {}/{}", run + 1, setup.plan.runs);
        out.relay.push(&latency_figures(relay_latency(
            &mut rc, &mut rp, &get, &post, n,
        )?));
        out.copy
            .push(&latency_figures(base_latency(&mut cp, &mut cc, n)?));
        out.big
            .push(&latency_figures(base_latency(&mut bp, &mut bc, n)?));
    }
    Ok(out)
}

/// p50, p99 and p99.9 of the link latency, each against its target.
pub fn section(setup: &Setup, report: &mut Report) -> Res<()> {
    let t = latency(setup)?;
    let names = [
        "link latency p50 (µs)",
        "link latency p99 (µs)",
        "link latency p99.9 (µs)",
    ];
    let limits = [1.2, 1.5, 2.0];
    for i in 0..3 {
        let (r, c, b) = (t.relay.median(i), t.copy.median(i), t.big.median(i));
        let mut row = row3(names[i], r, c, b, 1);
        row.target = format!("≤ {}× io::copy", limits[i]);
        row.met = met((!ratio(r, c).is_nan()).then(|| ratio(r, c) <= limits[i]));
        report.rows.push(row);
    }
    Ok(())
}
