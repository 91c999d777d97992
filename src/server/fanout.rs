//! One sender's body to several receivers (Piping Server `?n=`): decoded once,
//! copied into every receiver's output as far as the fullest one has room, so
//! the transfer goes at the pace of the slowest receiver with one fixed output
//! buffer per receiver.

use super::piping::line;
use super::{Server, Step};
use crate::conn::{fill, send, After, ConnId, Fill, Phase, Sent, Transfer};
use crate::http::{BodyDecoder, CHUNK_OVERHEAD};
use crate::relay::Method;

impl Server {
    /// Turns the transfers just started from `sender` to each of `receivers`
    /// into one broadcast.
    pub(super) fn start_broadcast(&mut self, sender: ConnId, receivers: Vec<ConnId>) {
        let Some(conn) = self.conns.get_mut(sender.0) else {
            return;
        };
        if let Phase::Producing { body, .. } = conn.phase {
            conn.phase = Phase::Broadcasting { body, receivers };
        }
    }

    /// Moves the sender's body to its receivers until nothing moves.
    pub(super) fn broadcast(&mut self, s: ConnId) -> Step {
        loop {
            if !self.conns.contains(s.0) {
                return Step::Closed;
            }
            // Progress lines to the sender go out as they come.
            if self.send_output(s) == super::Flushed::Closed {
                return Step::Again;
            }
            let mut progress = false;
            let sender = &mut self.conns[s.0];
            let Phase::Broadcasting { body, receivers } = &mut sender.phase else {
                return Step::Again;
            };
            let (mut body, receivers) = (*body, std::mem::take(receivers));

            // 1. Room: what the fullest receiver's output can take.
            let mut room = usize::MAX;
            for &r in &receivers {
                if let Some(receiver) = self.conns.get_mut(r.0) {
                    let (Phase::Consuming { encoder, .. }, Some(output)) =
                        (&receiver.phase, receiver.output.as_mut())
                    else {
                        continue;
                    };
                    room = room.min(encoder.room(output.spare_len()));
                }
            }

            // 2. Decode buffered sender bytes into every receiver's output.
            let mut failed = false;
            while room > 0 && !body.is_done() {
                let Some(input) = self.conns[s.0].input.as_ref().filter(|i| !i.is_empty()) else {
                    break;
                };
                let decoded = match body.decode(input.pending(), room) {
                    Ok(d) => d,
                    Err(_) => {
                        failed = true;
                        break;
                    }
                };
                for &r in &receivers {
                    let Some((sender, receiver)) = self.conns.get2_mut(s.0, r.0) else {
                        continue;
                    };
                    let (Phase::Consuming { encoder, .. }, Some(output), Some(input)) = (
                        &receiver.phase,
                        receiver.output.as_mut(),
                        sender.input.as_ref(),
                    ) else {
                        continue;
                    };
                    let framed =
                        encoder.encode(&input.pending()[decoded.data.clone()], output.spare());
                    output.commit(framed);
                }
                let len = decoded.data.len();
                self.stats.relayed_bytes += (len * receivers.len()) as u64;
                room -= len;
                if let Some(input) = self.conns[s.0].input.as_mut() {
                    input.consume(decoded.consumed);
                }
                progress |= decoded.consumed > 0;
                if decoded.consumed == 0 {
                    break;
                }
            }
            if failed {
                // Broken chunk framing: the sender is closed, the receivers
                // end short.
                self.restore_receivers(s, body, receivers);
                self.close(s);
                return Step::Again;
            }

            // 3. Each receiver sends what it holds; the body's end is framed.
            let mut all_sent = true;
            for &r in &receivers {
                let Some(receiver) = self.conns.get_mut(r.0) else {
                    continue;
                };
                let (Phase::Consuming { encoder, .. }, Some(output)) =
                    (&mut receiver.phase, receiver.output.as_mut())
                else {
                    continue;
                };
                if body.is_done() && !encoder.is_ended() {
                    let n = encoder.end(output.spare());
                    output.commit(n);
                }
                if !output.is_empty() && receiver.writable {
                    match send(
                        &mut receiver.stream,
                        &mut receiver.writable,
                        output.pending(),
                    ) {
                        Sent::Bytes(n) => {
                            output.consume(n);
                            progress |= n > 0;
                        }
                        Sent::Blocked => {}
                        Sent::Gone => {
                            // Closed below, outside this loop over the group.
                            receiver.peer_closed = true;
                            self.ready.push(r);
                        }
                    }
                }
                all_sent &= output.is_empty() && encoder.is_ended();
            }

            // 4. Read more of the body when every receiver has room for it.
            let sender = &mut self.conns[s.0];
            let input_empty = sender.input.as_ref().is_none_or(|i| i.is_empty());
            if !body.is_done() && input_empty && sender.readable && room > CHUNK_OVERHEAD {
                match fill(
                    &mut sender.stream,
                    &mut sender.input,
                    &mut sender.readable,
                    sender.peer_closed,
                    &mut self.input_pool,
                ) {
                    Fill::Read => progress = true,
                    Fill::Blocked => {}
                    Fill::Gone => {
                        self.restore_receivers(s, body, receivers);
                        self.close(s);
                        return Step::Again;
                    }
                }
            }

            if body.is_done() && all_sent {
                self.finish_broadcast(s, receivers);
                return Step::Again;
            }
            self.restore_receivers(s, body, receivers);
            if !progress {
                return Step::Blocked;
            }
        }
    }

    /// Puts the group back into the sender's phase after a round.
    fn restore_receivers(&mut self, s: ConnId, body: BodyDecoder, receivers: Vec<ConnId>) {
        if let Some(sender) = self.conns.get_mut(s.0) {
            if let Phase::Broadcasting {
                body: kept,
                receivers: slot,
            } = &mut sender.phase
            {
                *kept = body;
                *slot = receivers;
            }
        }
    }

    /// Every receiver has the whole body: all move on.
    fn finish_broadcast(&mut self, s: ConnId, receivers: Vec<ConnId>) {
        for r in receivers {
            if let Some(receiver) = self.conns.get_mut(r.0) {
                receiver.phase = Phase::Responding(if receiver.req.keep_alive {
                    After::NextRequest
                } else {
                    After::Close
                });
                self.ready.push(r);
            }
        }
        self.stats.transferred(Method::Piping);
        let now = self.now_millis();
        if let Some(sender) = self.conns.get(s.0) {
            self.relay.piping_finish(now, &sender.channel);
        }
        self.piping_end_sender(s, &[line::SENT, line::ALL_RECEIVED], true);
    }

    /// A receiver of a broadcast left: the sender is told; the others go on,
    /// and when none is left the sender's response ends.
    pub(super) fn broadcast_receiver_left(&mut self, s: ConnId, r: ConnId) {
        let Some(sender) = self.conns.get_mut(s.0) else {
            return;
        };
        let Phase::Broadcasting { receivers, .. } = &mut sender.phase else {
            return;
        };
        receivers.retain(|&other| other != r);
        let none_left = receivers.is_empty();
        if none_left {
            let now = self.now_millis();
            self.relay.piping_finish(now, &self.conns[s.0].channel);
            self.piping_end_sender(s, &[line::ABORTED, line::ALL_ABORTED], false);
        } else {
            self.piping_progress(s, line::ABORTED);
            self.ready.push(s);
        }
    }

    /// The sender of a broadcast is gone: every receiver's response ends short.
    pub(super) fn broadcast_sender_left(&mut self, receivers: &[ConnId]) {
        for &r in receivers {
            if let Some(Phase::Consuming {
                kind: Transfer::Piping,
                ..
            }) = self.conns.get(r.0).map(|c| &c.phase)
            {
                self.truncate_consumer(r);
            }
        }
    }
}
