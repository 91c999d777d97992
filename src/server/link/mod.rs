//! link: one producer (`POST`/`PUT`) hands its body to one consumer (`GET`).

use super::respond::Guarded;
use super::{Server, Step};
use crate::http::{HeadWriter, QueryFilter, Status};
use crate::relay::Writer;
use crate::relay::{LinkArrival, Method, Role, WaiterId};
use crate::server::conn::{After, Conn, ConnId, Phase, Receivers, Transfer, Wait};
use crate::server::reply::{self, Expose};

impl Server {
    pub(super) fn handle_link(&mut self, id: ConnId) -> Step {
        let role = match self.conns[id.0].req.method.as_slice() {
            b"GET" => Role::Consumer,
            b"POST" | b"PUT" => Role::Producer,
            _ => {
                return self.refuse_method(
                    id,
                    "405 method not allowed: link takes GET, POST and PUT\n",
                    b"GET, POST, PUT, OPTIONS",
                )
            }
        };
        self.load_secret(id);
        let client = self.client_of(id);
        let now = self.now_millis();
        let conn = &self.conns[id.0];
        match self.relay.link_arrive(
            now,
            &conn.channel,
            role,
            WaiterId(id.0),
            Writer {
                secret: &self.secret,
                client,
            },
        ) {
            Err(e) => self.refuse_claim(id, e, Guarded::Channel),
            Ok(LinkArrival::Parked) => {
                self.continue_body(id);
                self.park(id, Wait::Link(role))
            }
            Ok(LinkArrival::Paired(WaiterId(other))) => {
                self.continue_body(id);
                let other = ConnId(other);
                match role {
                    Role::Producer => {
                        self.start_transfer(id, Receivers::One(other), Transfer::Link)
                    }
                    Role::Consumer => {
                        self.start_transfer(other, Receivers::One(id), Transfer::Link)
                    }
                }
                Step::Again
            }
        }
    }

    /// The producer's whole body reached the consumer: the producer's
    /// response (the consumer's metadata, no body) goes out.
    pub(super) fn link_transfer_done(&mut self, p: ConnId, c: ConnId) {
        self.stats.transferred(Method::Link);
        let Some((producer, consumer)) = self.conns.get2_mut(p.0, c.0) else {
            return;
        };
        let arrived = producer.arrived_unix_ms;
        let date = self.date.as_bytes();
        let (mut w, req) =
            producer.begin_response(&mut self.output_pool, Status(200), date, Expose::Metadata);
        self.query_filter
            .filter(&consumer.req.query, &mut self.text);
        let meta = consumer.meta(&self.text);
        reply::metadata(&mut w, &meta, arrived);
        w.header_number("Content-Length", 0);
        reply::persistence(&mut w, req.keep_alive, req.minor_version);
        let after = After::keeping(req.keep_alive);
        if w.finish() {
            producer.phase = Phase::Responding(after);
        } else {
            self.refuse_oversized_head(p);
        }
    }
}

/// What a consumer's head carries before its framing: the relay's common
/// fields, the producer's metadata and content type.
pub(super) fn consumer_fields(
    w: &mut HeadWriter,
    producer: &Conn,
    consumer: &Conn,
    date: &[u8],
    (filter, text): (&mut QueryFilter, &mut Vec<u8>),
) {
    reply::common(w, date, &consumer.req.origin, Expose::Metadata);
    filter.filter(&producer.req.query, text);
    reply::metadata(w, &producer.meta(text), consumer.arrived_unix_ms);
    if !producer.req.content_type.is_empty() {
        w.header("Content-Type", &producer.req.content_type);
    }
}

#[cfg(test)]
mod tests {
    use crate::relay::Method;
    use crate::server::testing::{body_of, get, post, status_of, Shell};

    #[test]
    fn a_link_pairs_a_producer_with_a_consumer_and_both_connections_stay_for_more() {
        let mut shell = Shell::new(&[]);
        let mut consumer = shell.connect();
        let mut producer = shell.connect();
        for round in ["hello", "again"] {
            consumer.send(&mut shell, &get("/link/a"));
            assert_eq!(consumer.take(), b"", "the consumer waits for a producer");
            producer.send(&mut shell, &post("/link/a", round.as_bytes()));
            let got = consumer.text();
            assert_eq!(status_of(&got), 200);
            assert!(got.contains("\r\nHttpRelay-Method: POST\r\n"), "{got}");
            assert_eq!(body_of(&got), round);
            let sent = producer.text();
            assert_eq!(status_of(&sent), 200);
            assert!(sent.contains("\r\nHttpRelay-Method: GET\r\n"), "{sent}");
        }
        assert!(!consumer.closed() && !producer.closed());
        assert_eq!(shell.server.relay.channel_count(), 0, "nothing remembered");
    }

    #[test]
    fn a_waiter_that_leaves_is_gone_from_its_channel_at_once() {
        let mut shell = Shell::new(&[]);
        let mut consumer = shell.connect();
        consumer.send(&mut shell, &get("/link/gone"));
        assert_eq!(shell.server.relay.waiters_by_method().get(Method::Link), 1);
        consumer.close(&mut shell);
        assert_eq!(shell.server.relay.waiter_count(), 0);
        assert_eq!(shell.server.relay.channel_count(), 0);
        assert_eq!(shell.open_conns(), 0);
        // A producer now finds nobody and waits in turn.
        let mut producer = shell.connect();
        producer.send(&mut shell, &post("/link/gone", b"for nobody"));
        assert_eq!(producer.take(), b"");
        assert_eq!(shell.server.relay.waiters_by_method().get(Method::Link), 1);
    }

    #[test]
    fn a_producer_that_waits_keeps_only_the_body_bytes_it_sent_and_delivers_them_later() {
        let mut shell = Shell::new(&[]);
        let mut producer = shell.connect();
        producer.send(
            &mut shell,
            b"POST /link/p HTTP/1.1\r\nHost: r\r\nContent-Length: 11\r\n\r\nhello",
        );
        let parked = shell.server.conns.iter().next().unwrap().1;
        assert!(matches!(
            parked.phase,
            crate::server::conn::Phase::Parked(_)
        ));
        assert!(parked.input.is_none(), "no input buffer while waiting");
        assert_eq!(&parked.stashed[..], b"hello");
        let mut consumer = shell.connect();
        consumer.send(&mut shell, &get("/link/p"));
        producer.send(&mut shell, b" world");
        let got = consumer.text();
        assert_eq!((status_of(&got), body_of(&got)), (200, "hello world"));
        assert_eq!(status_of(&producer.text()), 200);
    }
}
