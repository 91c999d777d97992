//! The transfer engine in a whole server: backpressure, chunked uploads,
//! broken framing, a consumer that leaves.

use crate::server::testing::{body_of, status_of, Shell};

#[test]
fn a_large_body_moves_at_the_consumers_pace_through_fixed_buffers() {
    const LEN: usize = 8 << 20;
    let body: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
    let mut shell = Shell::new(&[]);
    let length = format!("Content-Length: {LEN}");
    let (mut consumer, mut producer) = shell.link_pair("big", &length, b"");
    // The consumer reads nothing: the producer soon cannot write more.
    let mut sent = 0;
    loop {
        let n = producer.try_send(&mut shell, &body[sent..]);
        if n == 0 {
            break;
        }
        sent += n;
    }
    assert!(
        sent < LEN / 2,
        "{sent} bytes taken from the producer while its consumer reads nothing"
    );
    // Then both move, and every byte arrives in order.
    let mut received = consumer.take();
    while sent < LEN {
        sent += producer.try_send(&mut shell, &body[sent..]);
        received.extend(consumer.take());
    }
    for _ in 0..100 {
        shell.settle();
        received.extend(consumer.take());
    }
    let split = received.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(
        status_of(std::str::from_utf8(&received[..split]).unwrap()),
        200
    );
    assert!(
        received[split..] == body[..],
        "the body arrives whole and in order"
    );
    assert_eq!(status_of(&producer.text()), 200);
}

#[test]
fn a_chunked_upload_reaches_the_consumer_as_it_comes() {
    let mut shell = Shell::new(&[]);
    let (mut consumer, mut producer) =
        shell.link_pair("c", "Transfer-Encoding: chunked", b"5\r\nhello\r\n");
    let first = consumer.text();
    assert_eq!(status_of(&first), 200);
    assert!(
        first.contains("\r\nTransfer-Encoding: chunked\r\n"),
        "{first}"
    );
    assert_eq!(body_of(&first), "5\r\nhello\r\n");
    producer.send(&mut shell, b"6\r\n world\r\n0\r\n\r\n");
    assert_eq!(consumer.text(), "6\r\n world\r\n0\r\n\r\n");
    assert_eq!(status_of(&producer.text()), 200);
}

#[test]
fn broken_chunk_framing_is_400_for_the_producer_and_a_short_body_for_the_consumer() {
    let mut shell = Shell::new(&[]);
    let (mut consumer, mut producer) =
        shell.link_pair("c", "Transfer-Encoding: chunked", b"5\r\nhello\r\nzz\r\n");
    let got = consumer.text();
    assert!(got.ends_with("5\r\nhello\r\n"), "no final chunk: {got}");
    assert!(consumer.closed());
    let answer = producer.text();
    assert_eq!(status_of(&answer), 400);
    assert!(body_of(&answer).starts_with("400 "));
}

#[test]
fn a_consumer_that_leaves_mid_body_gets_its_producer_a_502() {
    let mut shell = Shell::new(&[]);
    let (mut consumer, mut producer) = shell.link_pair("l", "Content-Length: 10", b"abc");
    assert_eq!(status_of(&consumer.text()), 200);
    consumer.close(&mut shell);
    // Learnt when the next bytes cannot be delivered (a consumer that only
    // shut its sending side may still be reading).
    producer.send(&mut shell, b"defg");
    let answer = producer.text();
    assert_eq!(status_of(&answer), 502);
    assert_eq!(body_of(&answer), "502 consumer disconnected\n");
}
