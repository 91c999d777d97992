//! Streaming side by side with a hyper server: Piping Server's Rust
//! implementation (piping-server-rust, hyper 1 on tokio), when
//! `HTTPRELAY_BENCH_PIPING_RUST` names its binary (built by whoever runs the
//! bench; the repository does not build it). The same client sends the same
//! bytes through each, Content-Length and chunked, the rounds interleaved; the
//! rows give throughput, each server's CPU per GiB, and the total with both
//! clients' CPU.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use httprelay_testkit::Addr;

use crate::report::{num, Report, Row};
use crate::stats::Series;
use crate::streaming::{stream_through, SenderAnswer, Server, StreamData};
use crate::{Res, Setup};

/// The reference server, stopped when dropped.
struct Reference {
    child: Child,
    addr: Addr,
}

impl Drop for Reference {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(bin: &str) -> Res<Reference> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = Command::new(bin)
        .args(["--host", "127.0.0.1", "--http-port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let at: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(at).is_err() {
        if Instant::now() > deadline {
            return Err(format!("{bin} did not listen on {at}").into());
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(Reference {
        child,
        addr: Addr::Tcp(at),
    })
}

pub fn section(setup: &Setup, report: &mut Report) -> Res<()> {
    let Ok(bin) = std::env::var("HTTPRELAY_BENCH_PIPING_RUST") else {
        report.notes.push(
            "streaming against piping-server-rust: skipped (set HTTPRELAY_BENCH_PIPING_RUST to its binary)"
                .into(),
        );
        return Ok(());
    };
    let reference = start(&bin)?;
    let ours = Server {
        addr: setup.relay.addr(),
        pid: setup.relay.pid(),
        path: "/link/versus",
        sender_answer: SenderAnswer::Empty,
    };
    let theirs = Server {
        addr: &reference.addr,
        pid: reference.child.id(),
        path: "/versus",
        sender_answer: SenderAnswer::Any,
    };
    let data = StreamData::new();
    let bytes = setup.plan.stream_bytes;
    for server in [&ours, &theirs] {
        for chunked in [false, true] {
            stream_through(server, &data, 16 << 20, chunked)?;
        }
    }
    // [ours CL, theirs CL, ours chunked, theirs chunked], interleaved.
    let mut series: [Series; 4] = Default::default();
    for run in 0..setup.plan.runs {
        eprintln!(
            "bench: against piping-server-rust, run {}/{}",
            run + 1,
            setup.plan.runs
        );
        for (i, (server, chunked)) in [
            (&ours, false),
            (&theirs, false),
            (&ours, true),
            (&theirs, true),
        ]
        .into_iter()
        .enumerate()
        {
            series[i].push(&stream_through(server, &data, bytes, chunked)?);
        }
    }
    for (name, at) in [("Content-Length", 0), ("chunked", 2)] {
        let (ours, theirs) = (&series[at], &series[at + 1]);
        let figures = [("MiB/s", 0, 0, true), ("server CPU s per GiB", 1, 3, false)];
        for (what, i, decimals, higher_is_better) in figures {
            let (r, t) = (ours.median(i), theirs.median(i));
            report.rows.push(versus(
                &format!("vs hyper, stream {name}: {what}"),
                r,
                t,
                decimals,
                higher_is_better,
            ));
        }
        let total = |s: &Series| s.median(1) + s.median(2);
        report.rows.push(versus(
            &format!("vs hyper, stream {name}: server + clients CPU s per GiB"),
            total(ours),
            total(theirs),
            3,
            false,
        ));
    }
    let ratio = series[2].median(1) / series[0].median(1);
    report.notes.push(format!(
        "against piping-server-rust ({bin}): the same client for both, rounds interleaved; this relay's chunked CPU per GiB is {ratio:.2}× its Content-Length CPU per GiB"
    ));
    Ok(())
}

/// A row of this relay's figure against the reference's (in the ratio column).
fn versus(figure: &str, ours: f64, theirs: f64, decimals: usize, higher_is_better: bool) -> Row {
    let ratio = ours / theirs;
    let ok = if higher_is_better {
        ratio >= 1.0
    } else {
        ratio <= 1.0
    };
    Row {
        figure: figure.into(),
        relay: num(ours, decimals),
        copy: "–".into(),
        big: "–".into(),
        ratio: format!("{ratio:.2}× piping-server-rust ({})", num(theirs, decimals)),
        target: if higher_is_better {
            "≥ 1×"
        } else {
            "≤ 1×"
        }
        .into(),
        met: crate::report::met((!ratio.is_nan()).then_some(ok)),
    }
}
