//! Shutting down on SIGINT or SIGTERM: stop accepting, answer every waiter
//! `503`, let transfers under way finish within a grace.

use std::io::Read;

use super::{Listener, Server, SHUTDOWN_GRACE};
use crate::relay::WaiterId;
use crate::server::conn::{ConnId, Phase};

impl Server {
    pub(super) fn on_signal(&mut self) {
        let (mut stop, mut reload) = (false, false);
        if let Some(signals) = &mut self.signals {
            let mut drained = [0u8; 64];
            while let Ok(n @ 1..) = signals.read(&mut drained) {
                stop |= drained[..n].contains(&crate::sys::signal::STOP);
                reload |= drained[..n].contains(&crate::sys::signal::RELOAD);
            }
        } else {
            stop = true;
        }
        if reload {
            self.reload();
        }
        if stop && self.shutdown_deadline.is_none() {
            self.begin_shutdown();
        }
    }

    /// SIGHUP: the certificate pair is read again for new handshakes; a bad
    /// file keeps the pair in use.
    fn reload(&mut self) {
        #[cfg(feature = "tls")]
        if let Some(https) = &mut self.https {
            match https.identity.reload() {
                Ok(()) => {
                    self.stats.tls_reloads += 1;
                    eprintln!("httprelay: SIGHUP: certificate and key reloaded");
                }
                Err(e) => {
                    self.stats.tls_reload_failures += 1;
                    eprintln!("httprelay: SIGHUP: {e}; the certificate in use stays");
                }
            }
        }
    }

    /// Stops accepting, answers every waiter `503`, and lets transfers finish
    /// within [`SHUTDOWN_GRACE`].
    pub(super) fn begin_shutdown(&mut self) {
        eprintln!("httprelay: shutting down");
        self.shutdown_deadline = Some(self.now + SHUTDOWN_GRACE);
        match self.listener.take() {
            Some(Listener::Tcp(mut l)) => {
                let _ = self.poll.registry().deregister(&mut l);
            }
            Some(Listener::Unix(mut l, path)) => {
                let _ = self.poll.registry().deregister(&mut l);
                let _ = std::fs::remove_file(path);
            }
            None => {}
        }
        #[cfg(feature = "tls")]
        if let Some(mut https) = self.https.take() {
            let _ = self.poll.registry().deregister(&mut https.listener);
        }
        self.held_back = None;
        let mut waiters = std::mem::take(&mut self.waiters);
        waiters.clear();
        self.relay.drain_waiters(&mut waiters);
        for &WaiterId(key) in &waiters {
            let id = ConnId(key);
            match self.conns.get(key).map(|c| &c.phase) {
                Some(&Phase::Parked(wait)) => self.shut(id, wait),
                Some(_) => self.answer_and_close(id, true, super::SHUTTING_DOWN),
                None => {}
            }
        }
        self.waiters = waiters;
        // Idle keep-alive connections close; busy ones close after their response.
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.ready.push(ConnId(key));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::server::testing::{body_of, get, status_of, Shell};

    #[test]
    fn shutdown_answers_waiters_503_closes_idle_connections_and_finishes() {
        let mut shell = Shell::new(&[]);
        let mut idle = shell.connect();
        let mut waiter = shell.connect();
        waiter.send(&mut shell, &get("/link/s"));
        let (mut streaming, mut producer) = shell.link_pair("t", "Content-Length: 10", b"abc");
        assert_eq!(status_of(&streaming.text()), 200);
        shell.server.begin_shutdown();
        shell.settle();
        let answer = waiter.text();
        assert_eq!(status_of(&answer), 503);
        assert_eq!(body_of(&answer), "503 server shutting down\n");
        assert!(idle.closed() && waiter.closed());
        assert!(!shell.finished, "a transfer is still under way");
        producer.send(&mut shell, b"defghij");
        assert_eq!(streaming.take(), b"defghij", "the transfer finishes");
        assert!(shell.finished, "no connection is left");
    }
}
