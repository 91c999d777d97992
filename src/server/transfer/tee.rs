//! The zero-copy way to several receivers (Linux): the sender's socket → a stage
//! pipe → `tee(2)` into every receiver's pipe but the last, moved into the
//! last one's → each receiver's socket, at the pace of the slowest receiver.

use std::io;

use super::Group;
use crate::server::conn::{Conn, ConnId, Phase};
use crate::server::Server;

/// A zero-copy round could not go on: the sender's body is cut.
pub(super) struct Cut;

impl Server {
    /// A zero-copy round: the sender's socket → a stage pipe → `tee(2)` into
    /// every receiver's pipe but the last, moved into the last one's → each
    /// receiver's socket. The stage is handed on only when every receiver's
    /// pipe is empty (the pace of the slowest), and then always fits whole:
    /// the pipes are alike. `None` when the round cannot go this way (bytes
    /// in user space, framing to add, a form, no pipes).
    pub(super) fn splice_round(
        &mut self,
        s: ConnId,
        group: &mut Group,
    ) -> Option<Result<bool, Cut>> {
        let busy = pipe_filled(self.conns.get(s.0)) > 0
            || group
                .receivers()
                .iter()
                .any(|r| pipe_filled(self.conns.get(r.0)) > 0);
        if !busy && !self.splice_ready(s, group) {
            return None;
        }
        // a. Each receiver's pipe into its socket.
        let mut progress = self.drain_receiver_pipes(group);
        // b. The stage to every receiver once all have taken the last one.
        let staged = pipe_filled(self.conns.get(s.0));
        let drained = group
            .receivers()
            .iter()
            .all(|r| pipe_filled(self.conns.get(r.0)) == 0);
        if staged > 0 && drained {
            let Some((last, others)) = group.receivers().split_last() else {
                return Some(Err(Cut));
            };
            for &r in others {
                let Some((sender, receiver)) = self.conns.get2_mut(s.0, r.0) else {
                    return Some(Err(Cut));
                };
                let (Some(stage), Some(pipe)) = (sender.pipe.as_ref(), receiver.pipe.as_mut())
                else {
                    return Some(Err(Cut));
                };
                if !matches!(stage.tee_into(pipe, staged), Ok(n) if n == staged) {
                    return Some(Err(Cut));
                }
            }
            let Some((sender, receiver)) = self.conns.get2_mut(s.0, last.0) else {
                return Some(Err(Cut));
            };
            let (Some(stage), Some(pipe)) = (sender.pipe.as_mut(), receiver.pipe.as_mut()) else {
                return Some(Err(Cut));
            };
            if !matches!(stage.move_into(pipe, staged), Ok(n) if n == staged) {
                return Some(Err(Cut));
            }
            progress = true;
        }
        // c. More of the body into the stage.
        let remaining = group.body.remaining_in_length().unwrap_or(0);
        let sender = &mut self.conns[s.0];
        let fd = sender.stream.raw_fd();
        if let Some(stage) = sender.pipe.as_mut() {
            if remaining > 0 && sender.readable && stage.filled < stage.capacity {
                let want = usize::try_from(remaining).unwrap_or(usize::MAX);
                match stage.fill_from(fd, want) {
                    Ok(0) => return Some(Err(Cut)),
                    Ok(n) => {
                        sender.stream.moved(n, false);
                        group.body.advance_length(n as u64);
                        progress = true;
                    }
                    // A full stage would block too: only an empty one says
                    // the socket has nothing.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if stage.filled == 0 {
                            sender.readable = false;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => progress = true,
                    Err(_) => return Some(Err(Cut)),
                }
            }
        }
        Some(Ok(progress))
    }

    /// Sends what each receiver's pipe holds into its socket; returns
    /// whether bytes moved.
    fn drain_receiver_pipes(&mut self, group: &Group) -> bool {
        let mut progress = false;
        for &r in group.receivers() {
            let Some(receiver) = self.conns.get_mut(r.0) else {
                continue;
            };
            let fd = receiver.stream.raw_fd();
            let Some(pipe) = receiver.pipe.as_mut().filter(|p| p.filled > 0) else {
                continue;
            };
            if !receiver.writable {
                continue;
            }
            match pipe.drain_into(fd) {
                Ok(n) => {
                    receiver.stream.moved(n, true);
                    self.stats.relayed_bytes += n as u64;
                    self.stats.spliced_bytes += n as u64;
                    progress |= n > 0;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => receiver.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => progress = true,
                Err(_) => {
                    // Closed when driven, outside this loop over the group.
                    receiver.peer_closed = true;
                    self.ready.push(r);
                }
            }
        }
        progress
    }

    /// Whether the body can go the zero-copy way from here, taking the pipes
    /// it needs: a `Content-Length` body with nothing buffered in user space,
    /// receivers that take it as it is, a stage pipe and one pipe per receiver
    /// at least as large.
    fn splice_ready(&mut self, s: ConnId, group: &Group) -> bool {
        let takes_as_is = |r: &ConnId| {
            self.conns.get(r.0).is_some_and(|c| {
                matches!(&c.phase, Phase::Consuming { encoder, .. } if encoder.sends_as_is())
                    && c.output.as_ref().is_none_or(|o| o.is_empty())
                    && c.stream.is_plain()
            })
        };
        let sender = &self.conns[s.0];
        let eligible = group.form.is_none()
            && sender.stream.is_plain()
            && sender.input.as_ref().is_none_or(|i| i.is_empty())
            && group.body.remaining_in_length().is_some_and(|r| r > 0)
            && group.receivers().iter().all(takes_as_is);
        if !eligible {
            return false;
        }
        if self.conns[s.0].pipe.is_none() {
            self.conns[s.0].pipe = self.pipes.take();
        }
        let Some(stage) = self.conns[s.0].pipe.as_ref().map(|p| p.capacity) else {
            return false;
        };
        for &r in group.receivers() {
            let receiver = &mut self.conns[r.0];
            if receiver.pipe.is_none() {
                receiver.pipe = self.pipes.take();
            }
            if receiver.pipe.as_ref().is_none_or(|p| p.capacity < stage) {
                return false;
            }
        }
        true
    }
}

/// Bytes in a connection's transfer pipe.
pub(super) fn pipe_filled(conn: Option<&Conn>) -> usize {
    conn.and_then(|c| c.pipe.as_ref()).map_or(0, |p| p.filled)
}
