//! Reading a request head and routing it: `/health`, `/metrics`, preflight,
//! and the relay methods by path prefix.

use std::net::IpAddr;

use super::routes::{channel_of, keeps_head, route};
use super::{unix_millis, Server, Step};
use crate::http::{find_param, parse_request, Status, Target};
use crate::server::conn::{After, Conn, ConnId, Timer};
use crate::server::reply;
use crate::server::stream::Fill;

impl Server {
    pub(super) fn read_head(&mut self, id: ConnId) -> Step {
        let shutting_down = self.shutdown_deadline.is_some();
        let conn = &mut self.conns[id.0];
        if let Some(input) = conn.input.as_mut().filter(|i| !i.is_empty()) {
            match parse_request(input.pending(), self.max_head, &mut conn.req) {
                Ok(Some(head_len)) => {
                    conn.head_copy.clear();
                    let method = match route(&conn.req.path) {
                        Some((method, _)) => Some(method),
                        None if is_own(&conn.req.path) => None,
                        None => self.rooms.fallback(),
                    };
                    let keeps_head = method.is_some_and(keeps_head);
                    if keeps_head {
                        // Proxy forwards the request's fields, piping reads
                        // some that only it needs; keep the head.
                        conn.head_copy
                            .extend_from_slice(&input.pending()[..head_len]);
                    }
                    input.consume(head_len);
                    return self.handle_request(id);
                }
                Ok(None) => {}
                Err(e) => {
                    if e == crate::http::HeadError::TooLarge {
                        self.refused_by(id, crate::budget::Limit::MaxHead);
                    }
                    let conn = &mut self.conns[id.0];
                    let status = Status(e.status());
                    let text = format!("{} {e}\n", status.0);
                    conn.req.keep_alive = false;
                    self.respond_text(id, status, &text, After::Linger);
                    return Step::Again;
                }
            }
        } else if shutting_down {
            self.close(id);
            return Step::Closed;
        }
        if !conn.readable {
            self.input_pool.give_if_empty(&mut conn.input);
            return Step::Blocked;
        }
        let fill = conn.fill_input(&mut self.input_pool);
        if conn.stream.take_handshake_done() {
            self.stats.tls_handshakes += 1;
        }
        match fill {
            Fill::Read => Step::Again,
            Fill::Blocked => {
                self.input_pool.give_if_empty(&mut conn.input);
                Step::Blocked
            }
            Fill::Gone => {
                // The client closed between requests (or mid-head: nothing to answer).
                self.close(id);
                Step::Closed
            }
        }
    }

    pub(super) fn handle_request(&mut self, id: ConnId) -> Step {
        self.head_done(id);
        let conn = &mut self.conns[id.0];
        conn.arrived_unix_ms = unix_millis();
        // The next head (maybe already buffered) gets its own deadline.
        conn.timer.kind = Timer::None;
        conn.status = 0;
        conn.stream.written = 0;
        let trusted = conn
            .peer
            .is_some_and(|p| self.trust_proxy.contains(&p.ip().to_canonical()));
        see_through_proxy(conn, trusted);
        if self.shutdown_deadline.is_some() {
            conn.req.keep_alive = false;
            return self.refuse(id, Status(503), "503 server shutting down\n");
        }
        if let Some(step) = self.admit(id) {
            return step;
        }
        let conn = &mut self.conns[id.0];
        let req = &conn.req;
        if req.target == Some(Target::Asterisk) {
            if req.method_is("OPTIONS") {
                return self.refuse(id, Status(200), "");
            }
            conn.req.keep_alive = false;
            return self.refuse(id, Status(400), "400 the * target is only for OPTIONS\n");
        }
        let path = req.path.as_slice();
        if path == b"/health" {
            return self.refuse(id, Status(200), reply::VERSION);
        }
        if path == b"/metrics" {
            return self.respond_metrics(id);
        }
        let Some((method, rest)) = route(path) else {
            if let Some(method) = self.rooms.fallback() {
                return self.enter(id, method);
            }
            return self.refuse(id, Status(404), "404 page not found\n");
        };
        conn.channel.clear();
        conn.channel.extend_from_slice(channel_of(method, rest));
        if conn.req.method_is("OPTIONS") {
            self.respond_preflight(id, method);
            return Step::Again;
        }
        self.enter(id, method)
    }

    /// The write secret the request presents: query `wsecret`, else the header.
    pub(super) fn load_secret(&mut self, id: ConnId) {
        let req = &self.conns[id.0].req;
        if !find_param(&req.query, b"wsecret", &mut self.secret) {
            self.secret.clear();
            self.secret.extend_from_slice(&req.wsecret_header);
        }
    }

    /// The request was accepted: a client that waits for `100 Continue` gets it.
    pub(super) fn continue_body(&mut self, id: ConnId) {
        let conn = &mut self.conns[id.0];
        if conn.req.expect_continue {
            conn.req.expect_continue = false;
            let output = conn.output.get_or_insert_with(|| self.output_pool.take());
            output.push(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
    }
}

/// The relay's own paths besides the method prefixes.
fn is_own(path: &[u8]) -> bool {
    path == b"/health" || path == b"/metrics"
}

/// Sets the address and scheme other parties see: the socket's, or those a
/// trusted reverse proxy forwarded.
pub(super) fn see_through_proxy(conn: &mut Conn, trusted: bool) {
    let req = &conn.req;
    let forwarded_ip = trusted
        .then(|| {
            std::str::from_utf8(&req.x_real_ip)
                .ok()?
                .trim()
                .parse::<IpAddr>()
                .ok()
        })
        .flatten();
    match forwarded_ip {
        Some(ip) => {
            conn.real_ip = Some(ip);
            conn.real_port = std::str::from_utf8(&req.x_real_port)
                .ok()
                .and_then(|p| p.trim().parse().ok());
        }
        None => {
            conn.real_ip = conn.peer.map(|p| p.ip());
            conn.real_port = conn.peer.map(|p| p.port());
        }
    }
    conn.trusted = trusted;
    conn.https = trusted && req.forwarded_proto.eq_ignore_ascii_case(b"https");
}
