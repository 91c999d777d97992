//! Response framing chosen from arbitrary exchanges, and body pieces framed
//! into a small output buffer the way the server does it.
//!
//! Input layout: `ctl`, `cap`, `n`, then `n` step bytes, then the body.
//! `ctl` bit 0: the body's length is unknown (else known: the body's length);
//! bit 1: the request is `HEAD`; bit 2: HTTP/1.0 (else 1.1); bit 3: keep-alive
//! asked; bits 4-7 pick the status. The output buffer (a crate `Buf`) holds
//! `24 + cap` bytes. The step bytes (cyclically) give each piece's size
//! (1..=64), whether it is encoded from a slice or read in directly behind a
//! fixed-width chunk-size line, and how much of the output "the socket" takes
//! before each step.
//!
//! Invariants:
//! - the framing follows the rules: no body for `HEAD`, 1xx, 204 and 304 (and
//!   no length field for 1xx, 204, 304); otherwise `Content-Length` for a known
//!   length, chunked for an unknown one over HTTP/1.1, until close (and the
//!   connection closes) over HTTP/1.0; keep-alive is kept otherwise;
//! - a framed piece fits the room the encoder asked for;
//! - the output decodes back (`BodyDecoder`, chunked or `Content-Length`) to
//!   exactly the body, ending exactly at the end of the output; until close, the
//!   output is the body itself;
//! - a response without a body sends no body bytes, whatever it is given;
//! - the end is written once, and only when it fits.
#![no_main]

use httprelay::buf::{Buf, BufPool};
use httprelay::http::{
    response_framing, BodyDecoder, BodyFraming, BodySize, Exchange, Framing, FramingHeader,
};
use libfuzzer_sys::fuzz_target;

const STATUSES: [u16; 16] = [
    200, 204, 304, 100, 101, 199, 201, 205, 206, 303, 404, 502, 999, 200, 200, 200,
];

/// Cyclic source of step bytes.
struct Steps<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Steps<'_> {
    fn next(&mut self) -> u8 {
        if self.bytes.is_empty() {
            return 0x3f;
        }
        let b = self.bytes[self.at % self.bytes.len()];
        self.at += 1;
        b
    }
}

/// "The socket" takes up to `k` bytes of the output.
fn drain(out: &mut Buf, wire: &mut Vec<u8>, k: usize) {
    let k = k.min(out.len());
    wire.extend_from_slice(&out.pending()[..k]);
    out.consume(k);
}

fuzz_target!(|input: &[u8]| {
    let [ctl, cap, n, rest @ ..] = input else {
        return;
    };
    let n = usize::from(n % 32).min(rest.len());
    let (step_bytes, body) = rest.split_at(n);
    let mut steps = Steps {
        bytes: step_bytes,
        at: 0,
    };
    let unknown = ctl & 1 != 0;
    let head_request = ctl & 2 != 0;
    let minor_version = if ctl & 4 != 0 { 0 } else { 1 };
    let keep_alive = ctl & 8 != 0;
    let status = STATUSES[usize::from(ctl >> 4)];
    let len = body.len() as u64;
    let x = Exchange {
        body: if unknown {
            BodySize::Unknown
        } else {
            BodySize::Known(len)
        },
        head_request,
        status,
        minor_version,
        keep_alive,
    };
    let chosen = response_framing(&x);

    // The rules, stated independently.
    let bodiless_status = matches!(status, 100..=199 | 204 | 304);
    let expected = if bodiless_status || head_request {
        BodyFraming::None
    } else if !unknown {
        BodyFraming::Length(len)
    } else if minor_version == 0 {
        BodyFraming::UntilClose
    } else {
        BodyFraming::Chunked
    };
    assert_eq!(chosen.framing, expected, "{x:?}");
    let header = match expected {
        BodyFraming::Length(n) => FramingHeader::ContentLength(n),
        BodyFraming::Chunked => FramingHeader::Chunked,
        BodyFraming::UntilClose => FramingHeader::None,
        BodyFraming::None if head_request && !bodiless_status && !unknown => {
            FramingHeader::ContentLength(len)
        }
        BodyFraming::None => FramingHeader::None,
    };
    assert_eq!(chosen.header, header, "{x:?}");
    assert_eq!(
        chosen.keep_alive,
        keep_alive && expected != BodyFraming::UntilClose,
        "{x:?}"
    );

    // Encode the body in pieces into a small output that drains at random.
    let mut enc = chosen.encoder;
    let mut out = BufPool::new(24 + usize::from(*cap), 1).take();
    let mut wire = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let step = steps.next();
        let piece_end = (at + usize::from(step & 0x3f) + 1).min(body.len());
        let direct = step & 0x80 != 0;
        while at < piece_end {
            let taken = usize::from(steps.next());
            drain(&mut out, &mut wire, taken);
            let left = piece_end - at;
            let spare = out.spare();
            let spare_len = spare.len();
            let framed = if direct {
                let start = enc.direct_start();
                let take = enc.direct_room(spare_len).min(left);
                if take == 0 {
                    let all = out.len();
                    drain(&mut out, &mut wire, all);
                    continue;
                }
                spare[start..start + take].copy_from_slice(&body[at..at + take]);
                at += take;
                enc.frame_direct(take, spare)
            } else {
                let take = enc.room(spare_len).min(left);
                if take == 0 {
                    let all = out.len();
                    drain(&mut out, &mut wire, all);
                    continue;
                }
                let framed = enc.encode(&body[at..at + take], spare);
                at += take;
                framed
            };
            assert!(
                framed <= spare_len,
                "framed {framed} into {spare_len} bytes"
            );
            out.commit(framed);
        }
    }
    // The end, once it fits.
    loop {
        let spare = out.spare();
        let spare_len = spare.len();
        let written = enc.end(spare);
        assert!(written <= spare_len);
        out.commit(written);
        if enc.is_ended() {
            break;
        }
        assert_eq!(written, 0, "wrote part of the end");
        let all = out.len();
        drain(&mut out, &mut wire, all);
    }
    assert_eq!(enc.end(out.spare()), 0, "the end is written once");
    let all = out.len();
    drain(&mut out, &mut wire, all);

    // What went out decodes back to the body.
    match expected {
        BodyFraming::None => assert!(wire.is_empty(), "{} body bytes sent", wire.len()),
        BodyFraming::UntilClose => assert_eq!(wire, body),
        BodyFraming::Length(n) => {
            assert_eq!(wire, body);
            assert_eq!(decode(Framing::Length(n), &wire), body);
        }
        BodyFraming::Chunked => assert_eq!(decode(Framing::Chunked, &wire), body),
    }
});

/// Decodes a whole body that must end exactly at the end of `wire`.
fn decode(framing: Framing, wire: &[u8]) -> Vec<u8> {
    let mut dec = BodyDecoder::new(framing);
    let mut content = Vec::new();
    let mut at = 0;
    while !dec.is_done() {
        let d = dec
            .decode(&wire[at..], usize::MAX)
            .unwrap_or_else(|e| panic!("output does not decode: {e}"));
        assert!(d.consumed > 0, "output ends before the body does");
        content.extend_from_slice(&wire[at..][d.data]);
        at += d.consumed;
    }
    assert_eq!(at, wire.len(), "bytes after the end of the body");
    content
}
