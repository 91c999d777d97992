//! One message framed as a Server-Sent Event through output slices of
//! arbitrary sizes, the way a live stream writes it, and read back the way
//! `EventSource` reads it.
//!
//! Input layout: `ctl`, `n`, then `n` room bytes, then the body. `ctl` bit 0:
//! a skipped event goes first; the other bits pick the id. Each room byte
//! (cyclically) gives the next output slice's size, from 64 bytes up.
//!
//! Invariants:
//! - every call with 64 bytes or more of room writes something until the
//!   event is done;
//! - the stream parses into the skipped event (when asked) and one event with
//!   the message's id whose data is the body: as it is when the body is UTF-8
//!   without CR (type `message`), else base64 of it (type `base64`).
#![no_main]

use httprelay::http::sse::{EventData, EventWriter, Skipped};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let [ctl, n, rest @ ..] = input else {
        return;
    };
    let n = usize::from(*n % 16).min(rest.len());
    let (rooms, body) = rest.split_at(n);
    let id = u64::from(*ctl >> 1) * 0x0101_0101_0101;
    let skipped = (ctl & 1 != 0).then_some(Skipped { first: 3, last: id });
    let mut writer = EventWriter::new(id, skipped);
    let mut stream = Vec::new();
    let mut slot = [0u8; 64 + 255];
    let mut at = 0;
    while !writer.is_done() {
        let room = 64 + usize::from(rooms.get(at % rooms.len().max(1)).copied().unwrap_or(0));
        at += 1;
        let written = writer.write(body, &mut slot[..room]);
        assert!(written > 0, "no progress with {room} bytes of room");
        stream.extend_from_slice(&slot[..written]);
    }
    let text = std::str::from_utf8(&stream).expect("events are UTF-8");
    let mut events = text.split("\n\n");
    if skipped.is_some() {
        assert_eq!(
            events.next(),
            Some(format!("event: skipped\ndata: 3 {id}").as_str())
        );
    }
    let event = events.next().expect("the message's event");
    assert_eq!(events.next(), Some(""), "one event, then the end");
    assert_eq!(events.next(), None);
    let (mut kind, mut seen_id, mut data) = ("message", None, Vec::new());
    for line in event.split('\n') {
        if let Some(v) = line.strip_prefix("id: ") {
            seen_id = Some(v.parse::<u64>().expect("a numeric id"));
        } else if let Some(v) = line.strip_prefix("event: ") {
            kind = if v == "base64" { "base64" } else { "other" };
        } else {
            data.push(line.strip_prefix("data: ").expect("a data line"));
        }
    }
    assert_eq!(seen_id, Some(id));
    let data = data.join("\n");
    match EventData::for_body(body) {
        EventData::Text => {
            assert_eq!(kind, "message");
            assert_eq!(data.as_bytes(), body);
        }
        EventData::Base64 => {
            assert_eq!(kind, "base64");
            assert_eq!(decode_base64(&data), body);
        }
    }
});

fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => u32::from(c - b'A'),
        b'a'..=b'z' => u32::from(c - b'a' + 26),
        b'0'..=b'9' => u32::from(c - b'0' + 52),
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    assert_eq!(text.len() % 4, 0, "whole groups");
    let mut out = Vec::new();
    for group in text.as_bytes().chunks(4) {
        let pads = group.iter().rev().take_while(|&&c| c == b'=').count();
        let n = group[..4 - pads]
            .iter()
            .fold(0u32, |n, &c| n << 6 | value(c))
            << (6 * pads);
        out.extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8][..3 - pads]);
    }
    out
}
