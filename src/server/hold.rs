//! Requests whose body is read whole before they go on: a sync body and an
//! inbox message are kept (within their limits and totals), a proxy `SERVE`
//! without a job drops its body as it arrives; mcast stores its message the
//! same way. When the body is complete, the method takes over (`body_held`).
//! Bodies held in memory are sent from where they are (`drive_sending_memory`).

use super::{Server, Step};
use crate::budget::Limit;
use crate::http::Status;
use crate::server::conn::{After, ConnId, Hold, Phase};
use crate::server::respond::Flushed;
use crate::server::stream::{send_rest, take_body, Drained, Fill, TakeError};

impl Server {
    /// Writes the response head, then a body held in memory straight from
    /// where it is: a sync peer's body (`Conn::held`, given back once sent),
    /// or a stored inbox message (shared with its inbox).
    pub(super) fn drive_sending_memory(&mut self, id: ConnId) -> Step {
        match self.send_output(id) {
            Flushed::Done => {}
            Flushed::Pending => return Step::Blocked,
            Flushed::Closed => return Step::Closed,
        }
        let conn = &mut self.conns[id.0];
        let (body, offset): (&[u8], &mut usize) = match &mut conn.phase {
            Phase::SendingHeld { offset } => (&conn.held, offset),
            Phase::SendingMessage { message, offset } => (&message.body, offset),
            _ => return Step::Again,
        };
        let counted = &mut self.stats.relayed_bytes;
        match send_rest(&mut conn.stream, &mut conn.writable, body, offset, counted) {
            Drained::Done => {}
            Drained::Blocked => return Step::Blocked,
            Drained::Gone => {
                self.close(id);
                return Step::Closed;
            }
        }
        if matches!(conn.phase, Phase::SendingHeld { .. }) {
            // Bodies can be large: give the memory back rather than keep it
            // per connection.
            self.rooms.sync.held -= conn.held.len();
            conn.held = Vec::new();
        }
        conn.phase = Phase::Responding(After::keeping(conn.req.keep_alive));
        Step::Again
    }

    /// Drives a request whose body is taken whole before it goes on: sends
    /// what is queued (a `100 Continue`), lets `take` use the buffered body
    /// bytes, reads more, until the body is done or nothing moves. A client
    /// gone mid-body is closed (which settles what depended on it).
    pub(super) fn collect_body(
        &mut self,
        id: ConnId,
        take: impl Fn(&mut Server, ConnId) -> Collected,
    ) -> Step {
        loop {
            if self.send_output(id) == Flushed::Closed {
                return Step::Closed;
            }
            let mut progress = match take(self, id) {
                Collected::Taken(progress) => progress,
                Collected::Finished(step) => return step,
            };
            let conn = &mut self.conns[id.0];
            if conn.readable {
                match conn.fill_input(&mut self.input_pool) {
                    Fill::Read => progress = true,
                    Fill::Blocked => {}
                    Fill::Gone => {
                        self.close(id);
                        return Step::Closed;
                    }
                }
            }
            if !progress {
                return Step::Blocked;
            }
        }
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
        let inbox_room = self.rooms.inbox.total.saturating_sub(self.inbox_held());
        let conn = &mut self.conns[id.0];
        let Phase::Holding { body, hold } = &mut conn.phase else {
            return Collected::Finished(Step::Again);
        };
        let hold = *hold;
        // The limits of what is held, and the count it adds to.
        let (max_body, room, counted) = match hold {
            Hold::Inbox => (
                self.rooms.inbox.max_message,
                inbox_room,
                &mut self.rooms.inbox.uploading,
            ),
            _ => (
                self.rooms.sync.max_body,
                self.rooms.sync.total - self.rooms.sync.held,
                &mut self.rooms.sync.held,
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
                let limit = match (hold, status) {
                    (Hold::Inbox, Status(413)) => Some(Limit::InboxMaxMessage),
                    (Hold::Inbox, Status(503)) => Some(Limit::InboxTotal),
                    (_, Status(413)) => Some(Limit::SyncMaxBody),
                    (_, Status(503)) => Some(Limit::SyncTotal),
                    _ => None,
                };
                if let Some(limit) = limit {
                    self.stats.refused_by(limit);
                    conn.refused_by = Some(limit);
                }
                conn.req.keep_alive = false;
                *counted -= conn.held.len();
                conn.held = Vec::new();
                self.respond_text(id, status, &text, After::Linger);
                return Collected::Finished(Step::Again);
            }
        };
        if body.is_done() {
            return Collected::Finished(self.body_held(id, hold));
        }
        Collected::Taken(progress)
    }
}

/// What one round of taking a whole body brought (see `Server::collect_body`).
pub(super) enum Collected {
    /// Buffered bytes were taken (true) or none were there (false); the body
    /// goes on.
    Taken(bool),
    /// The body ended or was refused: the request went on with this step.
    Finished(Step),
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
