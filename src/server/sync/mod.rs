//! sync: two requests swap bodies. Each body is read whole (up to a limit)
//! before its request waits, so two clients that both upload before reading
//! can never block each other.

use super::{Server, Step};
use crate::buf::BufPool;
use crate::http::{BodyDecoder, Framing, QueryFilter, Status};
use crate::relay::{Method, SyncArrival, WaiterId};
use crate::server::conn::{Conn, ConnId, Hold, Phase, Wait};
use crate::server::reply::{self, Expose};

/// sync's limits and the bytes its bodies hold.
pub(super) struct SyncRoom {
    /// `--sync-max-body`.
    pub max_body: usize,
    /// `--sync-total`.
    pub total: usize,
    /// Bytes held by sync bodies in all connections (`Conn::held`).
    pub held: usize,
}

impl SyncRoom {
    pub fn new(config: &crate::config::Config) -> SyncRoom {
        SyncRoom {
            max_body: config.sync_max_body,
            total: config.sync_total,
            held: 0,
        }
    }
}

impl Server {
    pub(super) fn handle_sync(&mut self, id: ConnId) -> Step {
        let framing = self.conns[id.0].req.framing();
        let limit = self.rooms.sync.max_body;
        if matches!(framing, Framing::Length(n) if n > limit as u64) {
            self.refused_by(id, crate::budget::Limit::SyncMaxBody);
            return self.refuse(
                id,
                Status(413),
                &format!("413 body larger than {limit} bytes\n"),
            );
        }
        self.continue_body(id);
        let conn = &mut self.conns[id.0];
        conn.held.clear();
        if let Framing::Length(n) = framing {
            conn.held.reserve_exact(n as usize);
        }
        conn.phase = Phase::Holding {
            body: BodyDecoder::new(framing),
            hold: Hold::Sync,
        };
        Step::Again
    }

    pub(super) fn sync_arrive(&mut self, id: ConnId) -> Step {
        let now = self.now_millis();
        let conn = &self.conns[id.0];
        match self.relay.sync_arrive(now, &conn.channel, WaiterId(id.0)) {
            SyncArrival::Parked => self.park(id, Wait::Sync),
            SyncArrival::Paired(WaiterId(peer)) => {
                self.sync_swap(id, ConnId(peer));
                Step::Again
            }
        }
    }

    /// Each side gets the other's metadata, content headers and body.
    fn sync_swap(&mut self, a: ConnId, b: ConnId) {
        let Some((first, second)) = self.conns.get2_mut(a.0, b.0) else {
            self.broken(a, "paired with a connection that is gone");
            self.broken(b, "paired with a connection that is gone");
            return;
        };
        let date = self.date.as_bytes();
        // Heads are written into each output's spare room and committed only
        // when both fit, so a refusal never follows half an answer.
        let heads = (
            sync_head(
                first,
                second,
                date,
                &mut self.output_pool,
                &mut self.query_filter,
                &mut self.text,
            ),
            sync_head(
                second,
                first,
                date,
                &mut self.output_pool,
                &mut self.query_filter,
                &mut self.text,
            ),
        );
        if let (Some(n1), Some(n2)) = heads {
            first
                .output
                .as_mut()
                .expect("sync_head took a buffer")
                .commit(n1);
            second
                .output
                .as_mut()
                .expect("sync_head took a buffer")
                .commit(n2);
        } else {
            for conn in [first, second] {
                self.rooms.sync.held -= conn.held.len();
                conn.held = Vec::new();
            }
            self.refuse_oversized_head(a);
            self.refuse_oversized_head(b);
            return;
        }
        std::mem::swap(&mut first.held, &mut second.held);
        self.stats.transferred(Method::Sync);
        for conn in [first, second] {
            // HEAD gets the head only.
            let offset = if conn.req.method_is("HEAD") {
                conn.held.len()
            } else {
                0
            };
            conn.phase = Phase::SendingHeld { offset };
        }
        self.ready.extend([a, b]);
    }
}

/// Writes `me`'s response head (`other`'s metadata and content headers) into
/// the spare room of its output, uncommitted; returns its length if it fit.
fn sync_head(
    me: &mut Conn,
    other: &Conn,
    date: &[u8],
    pool: &mut BufPool,
    filter: &mut QueryFilter,
    scratch: &mut Vec<u8>,
) -> Option<usize> {
    me.status = 200;
    let output = me.output.get_or_insert_with(|| pool.take());
    let mut w = reply::head(
        output.spare(),
        Status(200),
        date,
        &me.req.origin,
        Expose::Metadata,
    );
    filter.filter(&other.req.query, scratch);
    reply::metadata(&mut w, &other.meta(scratch), me.arrived_unix_ms);
    if !other.req.content_type.is_empty() {
        w.header("Content-Type", &other.req.content_type);
    }
    w.header_number("Content-Length", other.held.len() as u64);
    reply::persistence(&mut w, me.req.keep_alive, me.req.minor_version);
    w.finish()
}

#[cfg(test)]
mod tests {
    use crate::server::testing::{body_of, post, status_of, Shell};

    #[test]
    fn two_requests_swap_their_bodies_and_a_third_starts_a_new_pair() {
        let mut shell = Shell::new(&[]);
        let (mut a, mut b, mut c) = (shell.connect(), shell.connect(), shell.connect());
        a.send(&mut shell, &post("/sync/s", b"from a"));
        assert_eq!(a.take(), b"", "waits for its peer");
        assert_eq!(shell.server.rooms.sync.held, 6, "its body is held");
        b.send(&mut shell, &post("/sync/s", b"from b"));
        let (to_a, to_b) = (a.text(), b.text());
        assert_eq!((status_of(&to_a), body_of(&to_a)), (200, "from b"));
        assert_eq!((status_of(&to_b), body_of(&to_b)), (200, "from a"));
        assert_eq!(
            shell.server.rooms.sync.held, 0,
            "nothing held once both are sent"
        );
        c.send(&mut shell, &post("/sync/s", b"from c"));
        assert_eq!(c.take(), b"", "a new pair");
    }

    #[test]
    fn a_waiting_peer_that_leaves_gives_its_held_body_back() {
        let mut shell = Shell::new(&[]);
        let a = shell.connect();
        let mut a = a;
        a.send(&mut shell, &post("/sync/s", b"held"));
        assert_eq!(shell.server.rooms.sync.held, 4);
        a.close(&mut shell);
        assert_eq!(shell.server.rooms.sync.held, 0);
        assert_eq!(shell.server.relay.waiter_count(), 0);
    }
}
