//! Memory: idle RSS and RSS per parked waiter, on a relay of its own.

use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::path::Path;
use std::thread;
use std::time::Duration;

use crate::limits::{open_fds, raise_nofile};
use crate::plan::Plan;
use crate::relay::{connect, get_request, metric, rss_kib, start_relay, wait_metric};
use crate::report::{met, num, Report, Row};
use crate::Res;

struct MemPoint {
    target: usize,
    reached: usize,
    rss_kib: u64,
}

struct Memory {
    idle_kib: u64,
    points: Vec<MemPoint>,
    limit_note: Option<String>,
}

/// A TCP connection from a chosen loopback source address (one source address
/// offers only the ephemeral port range's worth of connections to one port).
#[cfg(target_os = "linux")]
fn connect_from(src: Ipv4Addr, dst: SocketAddrV4) -> io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    pub fn sockaddr(ip: Ipv4Addr, port: u16) -> libc::sockaddr_in {
        // SAFETY: all-zero is a valid sockaddr_in.
        let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_port = port.to_be();
        sa.sin_addr = libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        };
        sa
    }
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor owned by `stream` from
    // creation on; the addresses passed live across the calls.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        // Pick the port at connect time (by the whole 4-tuple), not at bind:
        // a bind to port 0 searches all bound ports, quadratic over many sockets.
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let local = sockaddr(src, 0);
        if libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(io::Error::last_os_error());
        }
        let remote = sockaddr(*dst.ip(), dst.port());
        if libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stream)
    }
}

// The whole 127/8 answers on Linux only (macOS has 127.0.0.1 alone), and
// IP_BIND_ADDRESS_NO_PORT is Linux's: elsewhere, the default source.
#[cfg(not(target_os = "linux"))]
fn connect_from(_src: Ipv4Addr, dst: SocketAddrV4) -> io::Result<TcpStream> {
    TcpStream::connect(dst)
}

fn memory(plan: &Plan, bin: &Path) -> Res<Memory> {
    let wanted = plan.waiter_targets.iter().copied().max().unwrap_or(0) as u64 + 1_000;
    let (soft, hard) = raise_nofile(wanted);
    let relay = start_relay(bin)?;
    thread::sleep(Duration::from_millis(300));
    let idle_kib = rss_kib(&relay).ok_or("no VmRSS for the relay")?;
    let mut metrics = connect(&relay, 64 * 1024)?;
    // The relay keeps 32 descriptors in reserve (plus its listener, poll and
    // signal pipe); this process needs its own descriptors too.
    let relay_cap = soft.saturating_sub(48);
    let own_cap = soft.saturating_sub(open_fds() + 64);
    let cap = relay_cap.min(own_cap) as usize;
    let limit_note = (cap < wanted as usize).then(|| {
        format!(
            "RLIMIT_NOFILE is {soft} (hard {hard}, not raisable here), so at most {cap} parked \
             waiters per process"
        )
    });
    let SocketAddr::V4(dst) = relay.tcp_addr() else {
        return Err("relay not on IPv4".into());
    };
    let waiters = "httprelay_waiters{method=\"link\"}";
    let mut conns: Vec<TcpStream> = Vec::new();
    let mut points = Vec::new();
    for &target in &plan.waiter_targets {
        let want = target.min(cap);
        eprintln!("bench: parking {want} link consumers (target {target})");
        while conns.len() < want {
            let batch_end = (conns.len() + 500).min(want);
            while conns.len() < batch_end {
                let i = conns.len();
                // 127.0.0.1, .2, ...: 25,000 connections per source address.
                let src = Ipv4Addr::new(127, 0, 0, 1 + (i / 25_000) as u8);
                let s = if i < 25_000 {
                    TcpStream::connect(dst)
                } else {
                    connect_from(src, dst)
                };
                let mut s = s.map_err(|e| format!("waiter {i}: {e}"))?;
                s.write_all(&get_request(&format!("/link/waiter{i}")))
                    .map_err(|e| format!("waiter {i}: {e}"))?;
                conns.push(s);
            }
            let parked = wait_metric(
                &mut metrics,
                waiters,
                conns.len() as f64,
                Duration::from_secs(20),
            )?;
            if (parked as usize) < conns.len() {
                eprintln!(
                    "bench: only {parked} of {} waiters parked; stopping there",
                    conns.len()
                );
                break;
            }
        }
        thread::sleep(Duration::from_millis(300));
        let reached = metric(&mut metrics, waiters)? as usize;
        let rss_kib = rss_kib(&relay).ok_or("no VmRSS for the relay")?;
        points.push(MemPoint {
            target,
            reached,
            rss_kib,
        });
    }
    Ok(Memory {
        idle_kib,
        points,
        limit_note,
    })
}

/// Idle RSS, and RSS per parked waiter at each target count.
pub fn section(plan: &Plan, bin: &Path, report: &mut Report) -> Res<()> {
    let m = memory(plan, bin)?;
    let idle_mib = m.idle_kib as f64 / 1024.0;
    report.rows.push(Row {
        figure: "idle RSS, release build (MiB)".into(),
        relay: num(idle_mib, 2),
        copy: "–".into(),
        big: "–".into(),
        ratio: "–".into(),
        target: "≤ 1.5 MiB".into(),
        met: met(Some(idle_mib <= 1.5)),
    });
    let last = m.points.len().saturating_sub(1);
    for (i, p) in m.points.iter().enumerate() {
        let per_kib = if p.reached > 0 {
            (p.rss_kib.saturating_sub(m.idle_kib)) as f64 / p.reached as f64
        } else {
            f64::NAN
        };
        let short = p.reached < p.target;
        let figure = if short {
            format!(
                "RSS per parked waiter, target {} (KiB) — MEASURED AT {}",
                p.target, p.reached
            )
        } else {
            format!("RSS per parked waiter at {} (KiB)", p.reached)
        };
        let is_target_row = i == last;
        report.rows.push(Row {
            figure,
            relay: format!("{} (RSS {} KiB)", num(per_kib, 2), p.rss_kib),
            copy: "–".into(),
            big: "–".into(),
            ratio: "–".into(),
            target: if is_target_row {
                format!("≤ 2 KiB at {}", p.target)
            } else {
                "–".into()
            },
            met: if is_target_row {
                let m = met((!per_kib.is_nan()).then_some(per_kib <= 2.0));
                if short {
                    format!("{m} (at {})", p.reached)
                } else {
                    m
                }
            } else {
                "–".into()
            },
        });
    }
    if let Some(n) = m.limit_note {
        report.notes.push(n);
    }
    report.notes.push(
        "RSS per waiter = (RSS with N parked consumers − idle RSS) / N, on a fresh \
         relay; kernel socket memory is not in RSS"
            .into(),
    );
    Ok(())
}
