//! The baselines the relay is measured against, as threads of this process:
//! forwarders that need no relay logic.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

use crate::usage::{gettid, thread_usage, Usage};
use crate::{plain_connect, Res, FAN_MESSAGE};

#[derive(Clone, Copy, PartialEq)]
pub enum FwdKind {
    Copy,
    Big,
}

/// CPU time of the forwarder's copy threads: live ones from
/// `/proc/self/task/TID/stat`, finished ones from the value they recorded on exit.
#[derive(Default)]
pub struct CpuBook {
    threads: Mutex<Vec<(i32, Option<Usage>)>>,
}

impl CpuBook {
    pub fn enter(&self) -> usize {
        let mut t = self.threads.lock().unwrap();
        t.push((gettid(), None));
        t.len() - 1
    }

    pub fn leave(&self, slot: usize) {
        let usage = thread_usage("/proc/thread-self");
        self.threads.lock().unwrap()[slot].1 = Some(usage);
    }

    pub fn usage(&self) -> Usage {
        let t = self.threads.lock().unwrap();
        t.iter()
            .map(|&(tid, done)| {
                done.unwrap_or_else(|| thread_usage(&format!("/proc/self/task/{tid}")))
            })
            .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1))
    }

    pub fn total(&self) -> f64 {
        self.usage().0
    }
}

pub struct Forwarder {
    pub addr: SocketAddr,
    pub book: Arc<CpuBook>,
}

impl Forwarder {
    pub fn start(kind: FwdKind) -> Res<Forwarder> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let book = Arc::new(CpuBook::default());
        let threads = book.clone();
        thread::spawn(move || loop {
            let Ok((a, _)) = listener.accept() else {
                return;
            };
            let Ok((b, _)) = listener.accept() else {
                return;
            };
            let _ = a.set_nodelay(true);
            let _ = b.set_nodelay(true);
            let book = threads.clone();
            thread::spawn(move || {
                let slot = book.enter();
                forward(kind, a, b);
                book.leave(slot);
            });
        });
        Ok(Forwarder { addr, book })
    }

    /// A producer and a consumer connection; the forwarder pairs them by
    /// accept order, so they are made one after the other.
    pub fn pair(&self) -> Res<(TcpStream, TcpStream)> {
        let p = plain_connect(self.addr)?;
        let c = plain_connect(self.addr)?;
        Ok((p, c))
    }
}

fn forward(kind: FwdKind, mut a: TcpStream, mut b: TcpStream) {
    match kind {
        FwdKind::Copy => {
            let _ = io::copy(&mut a, &mut b);
        }
        FwdKind::Big => {
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                match a.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if b.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
    }
    let _ = b.shutdown(Shutdown::Write);
}

/// Fan-out baseline: accepts `readers` consumers, then one producer; each
/// message of `FAN_MESSAGE` bytes is written to every consumer in turn.
pub fn start_fanout_forwarder(readers: usize) -> Res<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    thread::spawn(move || {
        let mut consumers = Vec::with_capacity(readers);
        for _ in 0..readers {
            let Ok((c, _)) = listener.accept() else {
                return;
            };
            let _ = c.set_nodelay(true);
            consumers.push(c);
        }
        let Ok((mut p, _)) = listener.accept() else {
            return;
        };
        let mut msg = [0u8; FAN_MESSAGE];
        while p.read_exact(&mut msg).is_ok() {
            for c in &mut consumers {
                let _ = c.write_all(&msg);
            }
        }
    });
    Ok(addr)
}
