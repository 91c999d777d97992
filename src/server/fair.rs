//! The fair share: no client address holds more than its share of the
//! connections (`--max-conns-per-client`; beyond, `429`), and when every slot
//! is taken, a newcomer from an address holding fewer makes room by ending the
//! oldest waiting request of the address holding the most (`503`). The counts
//! are in [`super::clients::Clients`]; a connection is counted from its first
//! request other than `/health` or `/metrics` until it closes, under the
//! address other parties see (a trusted proxy's forwarded one, re-read at each
//! request).

use std::net::SocketAddr;

use super::clients::ClientKey;
use super::conn::{After, ConnId, Phase, Wait};
use super::Server;
use crate::http::Status;

/// The answer beyond an address's share.
pub(super) const TOO_MANY: &str = "429 too many connections from your address\n";
/// The answer to a waiter ended to make room for another address.
pub(super) const MADE_ROOM: &str =
    "503 relay full: your address holds the most connections, this request made room for another\n";
/// Seconds a refused client is asked to wait before trying again.
const RETRY_AFTER: &[u8] = b"5";

impl Server {
    /// Counts the connection's request under its client address. `Some`: the
    /// address holds its share already, and the request got `429`.
    pub(super) fn admit(&mut self, id: ConnId) -> Option<super::Step> {
        let conn = &mut self.conns[id.0];
        if matches!(conn.req.path.as_slice(), b"/health" | b"/metrics") {
            return None;
        }
        let key = conn.real_ip.map(|ip| ClientKey::of(ip, self.ipv6_prefix));
        if conn.admission.map(|a| a.key) == key {
            return None;
        }
        if let Some(old) = conn.admission.take() {
            self.clients.release(old);
        }
        // A Unix-socket peer without a forwarded address is not counted.
        let key = key?;
        if self.clients.conns_of(key) >= self.per_client {
            self.stats.client_refusals += 1;
            conn.req.keep_alive = false;
            let extra = Some(("Retry-After", RETRY_AFTER));
            let after = super::respond::body_after(conn);
            self.respond_body(
                id,
                Status(429),
                super::respond::PLAIN_TEXT,
                TOO_MANY.as_bytes(),
                after,
                extra,
            );
            return Some(super::Step::Again);
        }
        self.conns[id.0].admission = Some(self.clients.admit(key, id.0));
        None
    }

    /// The client address a request writes as (for its share of remembered
    /// channels): the one its connection was admitted under.
    pub(super) fn client_of(&self, id: ConnId) -> Option<u128> {
        self.conns[id.0].admission.map(|a| a.key.bits())
    }

    /// The relay is full and a client from `peer` waits for a slot: if the
    /// address holding the most holds more than one more than the newcomer's,
    /// its oldest waiting request is ended to make room. Returns whether a
    /// slot is free now. (A trusted proxy's clients are known only by their
    /// heads: such a newcomer counts as holding nothing.) The walk to the
    /// oldest waiter passes only that address's own connections, at most its
    /// share.
    pub(super) fn evict_for(&mut self, peer: Option<SocketAddr>) -> bool {
        let newcomer = peer
            .filter(|p| !self.trust_proxy.contains(&p.ip().to_canonical()))
            .map(|p| ClientKey::of(p.ip(), self.ipv6_prefix));
        let theirs = newcomer.map_or(0, |k| self.clients.conns_of(k));
        let Some((most, held)) = self.clients.most() else {
            return false;
        };
        if held <= theirs + 1 {
            return false;
        }
        let conns = &self.conns;
        let victim = self
            .clients
            .conns(most)
            .find(|&c| matches!(conns[c].phase, Phase::Parked(_)));
        let Some(victim) = victim else {
            return false;
        };
        self.stats.fair_share_evictions += 1;
        self.end_for_room(ConnId(victim));
        true
    }

    /// Ends a waiter to make room: it leaves its queue, gets `503` (unless its
    /// response began already: a live stream, a piping sender), and closes at
    /// once, so its slot is free now. Its unread input is read first, so the
    /// close does not reset the answer (a producer still sending past what
    /// the socket held may see a reset instead).
    fn end_for_room(&mut self, id: ConnId) {
        let Phase::Parked(wait) = self.conns[id.0].phase else {
            return;
        };
        if !matches!(wait, Wait::McastStream | Wait::PipingSender) {
            self.leave(id, wait);
            self.conns[id.0].req.keep_alive = false;
            let extra = Some(("Retry-After", RETRY_AFTER));
            self.respond_body(
                id,
                Status(503),
                super::respond::PLAIN_TEXT,
                MADE_ROOM.as_bytes(),
                After::Close,
                extra,
            );
            let _ = self.send_output(id);
            self.conns[id.0].readable = true;
            let _ = self.linger(id);
        }
        self.close(id);
    }
}
