//! Request bodies: conflicting or unknown framing, broken chunks, and uploads cut
//! short, which truncate what the consumer receives.

use super::{
    assert_error, assert_healthy, link_transfer, pattern, raw_exchange,
    refused_before_reaching_a_consumer,
};
use crate::support::{chunked, req, send_waiting, Background, Body, Relay};
use crate::{get, park, post};

#[test]
fn content_length_with_transfer_encoding_is_400() {
    let relay = Relay::start();
    let bg = Background::start(&relay, "cl-te");
    let chunks = b"5\r\nhello\r\n0\r\n\r\n";
    let path = "/link/smuggle";
    let (cl, te) = (("Content-Length", "15"), ("Transfer-Encoding", "chunked"));
    // A smuggled second request inside a CL+TE body is not executed either.
    let mut smuggled = req("POST", path, &[("Content-Length", "4"), te], b"0\r\n\r\n");
    smuggled.extend_from_slice(&post(path, b"smuggled"));
    let bad = [
        (req("POST", path, &[cl, te], chunks), "CL then TE".into()),
        (req("POST", path, &[te, cl], chunks), "TE then CL".into()),
        (smuggled, "CL+TE with a request behind it".into()),
    ];
    refused_before_reaching_a_consumer(&relay, path, &bad);
    bg.finish();
}

#[test]
fn two_different_content_lengths_are_400() {
    let relay = Relay::start();
    let bg = Background::start(&relay, "two-cl");
    let path = "/link/two-cl";
    let bad = [
        (
            req(
                "POST",
                path,
                &[("Content-Length", "5"), ("Content-Length", "6")],
                b"hello!",
            ),
            "Content-Length 5 and 6 on two lines".into(),
        ),
        (
            req("POST", path, &[("Content-Length", "5, 6")], b"hello!"),
            "Content-Length: 5, 6".into(),
        ),
    ];
    refused_before_reaching_a_consumer(&relay, path, &bad);
    bg.finish();
}

#[test]
fn transfer_encoding_other_than_chunked_is_501() {
    let relay = Relay::start();
    let bg = Background::start(&relay, "te-501");
    for te in ["gzip", "gzip, chunked", "deflate", "identity"] {
        let (_, r) = raw_exchange(
            &relay,
            &req(
                "POST",
                "/link/te",
                &[("Transfer-Encoding", te)],
                b"5\r\nhello\r\n0\r\n\r\n",
            ),
        );
        assert_error(&r, 501, &format!("Transfer-Encoding: {te}"));
    }
    assert_healthy(&relay, "after 501s");
    bg.finish();
}

#[test]
fn bad_chunk_framing_is_400_and_truncates_the_consumer() {
    let relay = Relay::start();
    let bg = Background::start(&relay, "chunk");
    let cases: [(&str, &[u8]); 6] = [
        (
            "a chunk size that overflows 64 bits",
            b"10000000000000000\r\n",
        ),
        (
            "a chunk size of twenty f's",
            b"ffffffffffffffffffff\r\nxx\r\n",
        ),
        ("a chunk size that is not hex", b"zz\r\nxx\r\n"),
        ("a chunk size with a non-hex digit", b"1g\r\nxx\r\n"),
        ("a chunk size written 0x10", b"0x10\r\n0123456789abcdef\r\n"),
        ("chunk data without its CRLF", b"5\r\nhelloXY0\r\n\r\n"),
    ];
    for (i, (what, bad)) in cases.iter().enumerate() {
        let path = format!("/link/chunk-{i}");
        let mut consumer = relay.connect();
        send_waiting(&mut consumer, &get(&path), "a link consumer");
        let mut body = b"3\r\nabc\r\n".to_vec();
        body.extend_from_slice(bad);
        let mut producer = relay.connect();
        producer.send(&req(
            "POST",
            &path,
            &[("Transfer-Encoding", "chunked")],
            &body,
        ));

        let done = producer.read_response();
        assert_error(&done, 400, what);
        assert!(
            producer.is_closed_by_peer(),
            "{what}: the producer's connection must close after 400"
        );
        let head = consumer.read_head();
        assert_eq!(head.status, 200, "{what}: consumer head");
        let got = consumer.read_body(&head, false);
        assert!(
            matches!(&got, Body::Truncated(b) if b"abchello".starts_with(b)),
            "{what}: the consumer's body must end truncated, got {got:?}"
        );
    }
    bg.finish();
}

#[test]
fn reset_mid_body_truncates_the_consumer() {
    let relay = Relay::start();
    let bg = Background::start(&relay, "rst");
    let body = pattern(5000, 1);
    let mut consumer = relay.connect();
    send_waiting(&mut consumer, &get("/link/rst"), "a link consumer");
    let mut producer = relay.connect();
    producer.send(&req(
        "POST",
        "/link/rst",
        &[("Content-Length", "100000")],
        &body,
    ));
    park();
    producer.reset();
    let head = consumer.read_head();
    assert_eq!(head.status, 200);
    let got = consumer.read_body(&head, false);
    assert!(
        matches!(&got, Body::Truncated(b) if body.starts_with(b)),
        "the consumer must see a truncated prefix of the body, got {} bytes, complete: {}",
        got.bytes().len(),
        got.is_complete()
    );

    // Chunked upload reset mid-chunk.
    let mut consumer = relay.connect();
    send_waiting(&mut consumer, &get("/link/rst"), "a link consumer");
    let mut producer = relay.connect();
    let mut partial = chunked(&[&body], false);
    partial.extend_from_slice(b"1000\r\nabc");
    producer.send(&req(
        "POST",
        "/link/rst",
        &[("Transfer-Encoding", "chunked")],
        &partial,
    ));
    park();
    producer.reset();
    let head = consumer.read_head();
    assert_eq!(head.status, 200);
    let got = consumer.read_body(&head, false);
    assert!(
        !got.is_complete(),
        "chunked upload reset mid-chunk: the consumer's body must be truncated"
    );

    link_transfer(&relay, "/link/rst", b"after the reset");
    bg.finish();
}
