//! Link transfers the suites run beside what they test: one checked exchange,
//! or a transfer that keeps streaming while a test does something hostile.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use httprelay_testkit::{chunked, req, Addr, Conn, End, Head, RelayProcess, Response};

/// One link transfer on fresh connections (consumer's request sent first, then
/// the producer's, on the given paths); panics unless the bytes arrive intact and
/// both sides get `200`. Returns both responses and the producer's and
/// consumer's local ports.
pub fn link_exchange(
    addr: &Addr,
    producer_path: &str,
    consumer_path: &str,
    body: &[u8],
    timeout: Duration,
    what: &str,
) -> (Response, Response, u16, u16) {
    let connect = || {
        let mut conn = Conn::open(addr);
        conn.set_read_timeout(timeout);
        conn
    };
    let mut consumer = connect();
    consumer.send(&req("GET", consumer_path, &[], b""));
    let mut producer = connect();
    producer.send(&req("POST", producer_path, &[], body));
    let got = consumer.read_response();
    assert_eq!(got.status(), 200, "{what}: consumer {:?}", got.head);
    assert!(
        got.body() == body,
        "{what}: {} bytes arrived, {} sent, or the bytes differ",
        got.body().len(),
        body.len()
    );
    let done = producer.read_response();
    assert_eq!(done.status(), 200, "{what}: producer {:?}", done.head);
    (got, done, producer.local_port(), consumer.local_port())
}

/// Byte `offset` of the background transfers' pattern.
fn background_byte(offset: u64) -> u8 {
    (offset.wrapping_mul(7).wrapping_add(offset >> 8) % 253) as u8
}

/// A link transfer running on its own two connections while a test does something
/// hostile on others: the producer streams a chunked body in small pieces (a piece
/// every 20 ms, so it never looks stalled), the consumer checks every byte.
pub struct Background {
    id: String,
    stop: Arc<AtomicBool>,
    producer: JoinHandle<(u64, Response)>,
    consumer: JoinHandle<(Head, End, u64, Option<u64>)>,
}

impl Background {
    /// Starts the transfer and returns once the consumer has received body bytes.
    pub fn start(relay: &RelayProcess, what: &str) -> Background {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = format!("bg-{what}-{n}");
        let path = format!("/link/{id}");
        let stop = Arc::new(AtomicBool::new(false));
        let (started_tx, started_rx) = mpsc::channel::<()>();

        let mut consumer = relay.connect();
        consumer.send(&req("GET", &path, &[], b""));
        let consumer = thread::spawn(move || {
            let head = consumer.read_head();
            let mut offset = 0u64;
            let mut mismatch = None;
            let (end, received) = consumer.stream_body(&head, false, 16 * 1024, |piece| {
                for &b in piece {
                    if mismatch.is_none() && b != background_byte(offset) {
                        mismatch = Some(offset);
                    }
                    offset += 1;
                }
                let _ = started_tx.send(());
            });
            (head, end, received, mismatch)
        });

        let mut producer = relay.connect();
        let flag = stop.clone();
        let producer = thread::spawn(move || {
            producer.send(&req(
                "POST",
                &path,
                &[
                    ("Content-Type", "application/x-background"),
                    ("Transfer-Encoding", "chunked"),
                ],
                b"",
            ));
            let mut sent = 0u64;
            let mut piece = 1usize;
            while !flag.load(Ordering::Relaxed) {
                let data: Vec<u8> = (sent..sent + piece as u64).map(background_byte).collect();
                producer.send(&chunked(&[&data], false));
                sent += piece as u64;
                piece = piece % 3000 + 97;
                thread::sleep(Duration::from_millis(20));
            }
            producer.send(b"0\r\n\r\n");
            (sent, producer.read_response())
        });

        if started_rx.recv_timeout(Duration::from_secs(10)).is_err() {
            stop.store(true, Ordering::Relaxed);
            panic!("background transfer {id}: no body bytes reached the consumer within 10 s");
        }
        Background {
            id,
            stop,
            producer,
            consumer,
        }
    }

    /// Ends the upload and checks every byte arrived intact and both sides got `200`.
    pub fn finish(self) {
        let id = &self.id;
        self.stop.store(true, Ordering::Relaxed);
        let (sent, done) = self
            .producer
            .join()
            .unwrap_or_else(|_| panic!("background transfer {id}: producer failed"));
        let (head, end, received, mismatch) = self
            .consumer
            .join()
            .unwrap_or_else(|_| panic!("background transfer {id}: consumer failed"));
        assert_eq!(head.status, 200, "background transfer {id}: {head:?}");
        assert_eq!(end, End::Complete, "background transfer {id}: body ended");
        assert_eq!(received, sent, "background transfer {id}: byte count");
        assert_eq!(
            mismatch, None,
            "background transfer {id}: first corrupted byte"
        );
        assert_eq!(
            done.status(),
            200,
            "background transfer {id}: producer's response {:?}",
            done.head
        );
    }
}
