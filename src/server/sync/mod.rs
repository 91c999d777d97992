//! sync: two requests swap bodies. Each body is read whole (up to a limit)
//! before its request waits, so two clients that both upload before reading
//! can never block each other.

use super::respond::Collected;
use super::{Server, Step};
use crate::buf::BufPool;
use crate::http::{BodyDecoder, Framing, QueryFilter, Status};
use crate::relay::{Method, SyncArrival, WaiterId};
use crate::server::conn::{take_body, After, Conn, ConnId, Hold, Phase, TakeError, Wait};
use crate::server::reply::{self, Expose};

impl Server {
    pub(super) fn handle_sync(&mut self, id: ConnId) -> Step {
        let framing = self.conns[id.0].req.framing();
        let limit = self.sync_max_body;
        if matches!(framing, Framing::Length(n) if n > limit as u64) {
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

    /// Reads the whole body into `held`, then waits for (or meets) the peer.
    /// With [`Hold::Discard`] the body is dropped as it arrives instead (only
    /// the input buffer holds it), and a proxy `SERVE` waits for a job.
    pub(super) fn drive_holding(&mut self, id: ConnId) -> Step {
        self.collect_body(id, Server::hold_buffered)
    }

    /// Takes the buffered body bytes into `held` (or drops them), within the
    /// limits; at the body's end the request goes on.
    fn hold_buffered(&mut self, id: ConnId) -> Collected {
        let inbox_room = self.inbox_total.saturating_sub(self.inbox_held());
        let conn = &mut self.conns[id.0];
        let Phase::Holding { body, hold } = &mut conn.phase else {
            return Collected::Finished(Step::Again);
        };
        let hold = *hold;
        // The limits of what is held, and the count it adds to.
        let (max_body, room, counted) = match hold {
            Hold::Inbox => (
                self.inbox_max_message,
                inbox_room,
                &mut self.inbox_uploading,
            ),
            _ => (
                self.sync_max_body,
                self.sync_total - self.sync_held,
                &mut self.sync_held,
            ),
        };
        let held = &mut conn.held;
        let mut added = 0;
        let taken = take_body(&mut conn.input, body, |data| {
            if hold == Hold::Discard {
                return Ok(());
            }
            if held.len() + data.len() > max_body {
                return Err((Status(413), too_large(hold, max_body)));
            }
            if added + data.len() > room {
                return Err((Status(503), full(hold).to_string()));
            }
            added += data.len();
            crate::buf::reserve_body(held, data.len(), max_body);
            held.extend_from_slice(data);
            Ok(())
        });
        *counted += added;
        let progress = match taken {
            Ok(progress) => progress,
            Err(e) => {
                let (status, text) = match e {
                    TakeError::Bad(e) => (Status(400), format!("400 {e}\n")),
                    TakeError::Refused(refusal) => refusal,
                };
                conn.phase = Phase::ReadingHead;
                conn.req.keep_alive = false;
                *counted -= conn.held.len();
                conn.held = Vec::new();
                self.respond_text(id, status, &text, After::Linger);
                return Collected::Finished(Step::Again);
            }
        };
        if body.is_done() {
            return Collected::Finished(match hold {
                Hold::Sync => self.sync_arrive(id),
                Hold::Discard => self.proxy_body_dropped(id),
                Hold::Inbox => self.inbox_store(id),
            });
        }
        Collected::Taken(progress)
    }

    fn sync_arrive(&mut self, id: ConnId) -> Step {
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
            debug_assert!(false, "paired with a connection that is gone");
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
                self.sync_held -= conn.held.len();
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

/// The answer to a body over its limit.
pub(super) fn too_large(hold: Hold, max_body: usize) -> String {
    match hold {
        Hold::Inbox => format!("413 message larger than {max_body} bytes\n"),
        _ => format!("413 body larger than {max_body} bytes\n"),
    }
}

/// The answer to a body that would pass the total.
pub(super) fn full(hold: Hold) -> &'static str {
    match hold {
        Hold::Inbox => "503 relay storage for inbox messages is full\n",
        _ => "503 relay storage for sync bodies is full\n",
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
        assert_eq!(shell.server.sync_held, 6, "its body is held");
        b.send(&mut shell, &post("/sync/s", b"from b"));
        let (to_a, to_b) = (a.text(), b.text());
        assert_eq!((status_of(&to_a), body_of(&to_a)), (200, "from b"));
        assert_eq!((status_of(&to_b), body_of(&to_b)), (200, "from a"));
        assert_eq!(shell.server.sync_held, 0, "nothing held once both are sent");
        c.send(&mut shell, &post("/sync/s", b"from c"));
        assert_eq!(c.take(), b"", "a new pair");
    }

    #[test]
    fn a_waiting_peer_that_leaves_gives_its_held_body_back() {
        let mut shell = Shell::new(&[]);
        let a = shell.connect();
        let mut a = a;
        a.send(&mut shell, &post("/sync/s", b"held"));
        assert_eq!(shell.server.sync_held, 4);
        a.close(&mut shell);
        assert_eq!(shell.server.sync_held, 0);
        assert_eq!(shell.server.relay.waiter_count(), 0);
    }
}
