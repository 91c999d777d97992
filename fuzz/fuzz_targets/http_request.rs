//! Request heads and bodies fed as a connection receives them: in pieces.
//!
//! Input layout: `ctl`, `n`, then `n` cut bytes, then the bytes "on the wire".
//! `ctl & 3` picks the head size limit; the cut bytes (cyclically) give the size
//! of each piece (1..=256) and the `max_data` of each body decode step.
//!
//! Invariants:
//! - parsing the pieces as they accumulate ends like parsing everything at once
//!   (same head length and fields, or the same error; a split feed may stop at
//!   `TooLarge` where the whole buffer shows a later syntax error);
//! - a reused `Request` parses the next (pipelined) request exactly like a fresh one;
//! - head length <= buffer length;
//! - the body decoder makes progress on non-empty input, never scans more than
//!   `MAX_FRAMING_BETWEEN_DATA` framing bytes between two runs of content, its `data` lies within
//!   `consumed` and is at most `max_data` long, `consumed <= input.len()`;
//! - decoding the body in one piece or in small pieces yields the same content,
//!   the same end (done, error) and the same number of body bytes consumed;
//! - `QueryFilter::filter` never shows `wsecret`/`seqid`, emits only form-encoded
//!   text and is idempotent; `find_param` agrees with a plain search.
#![no_main]

use httprelay::http::{
    find_param, parse_request, BodyDecoder, BodyError, Framing, HeadError, QueryFilter, Request,
};
use libfuzzer_sys::fuzz_target;

const MAX_HEADS: [usize; 4] = [16 * 1024, 64, 200, 1024];

/// Most framing bytes a chunked body may carry between two runs of content: the
/// decoder caps chunk extensions and the trailer section at 16 KiB each "so that a
/// body cannot make the relay scan framing bytes forever without moving data";
/// the rest (CRLFs, a size, a few blanks) is small.
const MAX_FRAMING_BETWEEN_DATA: usize = 2 * 16 * 1024 + 256;

/// Counts framing bytes consumed since the last content.
#[derive(Default)]
struct FramingRun(usize);

impl FramingRun {
    fn step(&mut self, consumed: usize, data: &std::ops::Range<usize>) {
        let before = if data.is_empty() {
            consumed
        } else {
            data.start
        };
        self.0 += before;
        assert!(
            self.0 <= MAX_FRAMING_BETWEEN_DATA,
            "{} framing bytes without content or error",
            self.0
        );
        if !data.is_empty() {
            self.0 = consumed - data.end;
        }
    }
}

/// Cyclic source of piece sizes and `max_data` values.
struct Cuts<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cuts<'_> {
    fn next(&mut self) -> usize {
        if self.bytes.is_empty() {
            return 256;
        }
        let b = self.bytes[self.at % self.bytes.len()];
        self.at += 1;
        usize::from(b) + 1
    }
}

fuzz_target!(|input: &[u8]| {
    let [ctl, n, rest @ ..] = input else {
        return;
    };
    let n = usize::from(n % 16).min(rest.len());
    let (cut_bytes, wire) = rest.split_at(n);
    let max_head = MAX_HEADS[usize::from(ctl & 3)];
    let mut cuts = Cuts {
        bytes: cut_bytes,
        at: 0,
    };

    check_query(wire);

    // One request after another, as on a keep-alive connection; the `Request`
    // is reused like the connection's.
    let mut reused = Request::default();
    let mut at = 0;
    for _ in 0..4 {
        let wire = &wire[at..];
        let Some(head_len) = check_head(wire, max_head, &mut reused, &mut cuts) else {
            return;
        };
        check_query(&reused.query);
        let Some(body_len) = check_body(reused.framing(), &wire[head_len..], &mut cuts) else {
            return;
        };
        at += head_len + body_len;
    }
});

/// Parses the head at the start of `wire` in pieces into `reused` and at once into
/// a fresh `Request`; checks they agree. Returns the head length if complete.
fn check_head(
    wire: &[u8],
    max_head: usize,
    reused: &mut Request,
    cuts: &mut Cuts,
) -> Option<usize> {
    let mut buf = Vec::new();
    let mut split = Ok(None);
    let mut fed = 0;
    while fed < wire.len() {
        let end = (fed + cuts.next()).min(wire.len());
        buf.extend_from_slice(&wire[fed..end]);
        fed = end;
        split = parse_request(&buf, max_head, reused);
        if split != Ok(None) {
            break;
        }
    }
    let mut fresh = Request::default();
    let whole = parse_request(wire, max_head, &mut fresh);
    match (split, whole) {
        (Ok(Some(n)), Ok(Some(m))) => {
            assert_eq!(n, m, "head length differs between split and whole feed");
            assert!(n <= buf.len() && n <= wire.len());
            assert!(n <= max_head, "head over the limit accepted");
            assert_eq!(
                format!("{reused:?}"),
                format!("{fresh:?}"),
                "a reused Request parses differently from a fresh one"
            );
            assert!(reused.framing.is_some() && reused.target.is_some());
            Some(n)
        }
        (Ok(None), Ok(None)) => None,
        (Err(a), Err(b)) if a == b => None,
        // The split feed gave up on size before the bad byte arrived.
        (Err(HeadError::TooLarge), Err(HeadError::Syntax(_) | HeadError::TooManyFields)) => None,
        (split, whole) => panic!("split feed {split:?} but whole buffer {whole:?}"),
    }
}

/// The result of decoding a body: content, whether it completed, the error if
/// any, and the body bytes consumed.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    content: Vec<u8>,
    done: bool,
    error: Option<BodyError>,
    consumed: usize,
}

/// One decode step with the invariants every step must keep.
fn step<'a>(
    dec: &mut BodyDecoder,
    run: &mut FramingRun,
    input: &'a [u8],
    max_data: usize,
) -> Result<(usize, &'a [u8]), BodyError> {
    let was_done = dec.is_done();
    let d = dec.decode(input, max_data)?;
    assert!(d.consumed <= input.len(), "consumed past the input");
    assert!(
        d.data.start <= d.data.end && d.data.end <= d.consumed,
        "data {:?} outside consumed {}",
        d.data,
        d.consumed
    );
    assert!(d.data.len() <= max_data, "more data than max_data");
    run.step(d.consumed, &d.data);
    if was_done {
        assert_eq!(d.consumed, 0, "consumed after the end of the body");
    } else if !input.is_empty() {
        // The shell loops while input remains and the body is not done.
        assert!(d.consumed > 0, "no progress on non-empty input");
    }
    Ok((d.consumed, &input[d.data]))
}

fn decode_whole(framing: Framing, body: &[u8]) -> Outcome {
    let mut dec = BodyDecoder::new(framing);
    let mut run = FramingRun::default();
    let mut out = Outcome {
        content: Vec::new(),
        done: dec.is_done(),
        error: None,
        consumed: 0,
    };
    while !dec.is_done() && out.consumed < body.len() {
        match step(&mut dec, &mut run, &body[out.consumed..], usize::MAX) {
            Ok((consumed, data)) => {
                out.content.extend_from_slice(data);
                out.consumed += consumed;
            }
            Err(e) => {
                out.error = Some(e);
                break;
            }
        }
    }
    out.done = dec.is_done();
    out
}

/// Fed like a connection: pieces arrive into a pending buffer, which is decoded
/// with small `max_data` until used up.
fn decode_pieces(framing: Framing, body: &[u8], cuts: &mut Cuts) -> Outcome {
    let mut dec = BodyDecoder::new(framing);
    let mut run = FramingRun::default();
    let mut out = Outcome {
        content: Vec::new(),
        done: false,
        error: None,
        consumed: 0,
    };
    let mut pending: Vec<u8> = Vec::new();
    let mut fed = 0;
    'feed: while !dec.is_done() && fed < body.len() {
        let end = (fed + cuts.next()).min(body.len());
        pending.extend_from_slice(&body[fed..end]);
        fed = end;
        while !pending.is_empty() && !dec.is_done() {
            let max_data = cuts.next() % 17 + 1;
            match step(&mut dec, &mut run, &pending, max_data) {
                Ok((consumed, data)) => {
                    out.content.extend_from_slice(data);
                    out.consumed += consumed;
                    pending.drain(..consumed);
                }
                Err(e) => {
                    out.error = Some(e);
                    break 'feed;
                }
            }
        }
    }
    out.done = dec.is_done();
    out
}

/// Returns the body length when the body completed.
fn check_body(framing: Framing, body: &[u8], cuts: &mut Cuts) -> Option<usize> {
    let whole = decode_whole(framing, body);
    let pieces = decode_pieces(framing, body, cuts);
    // Errors are found at the same byte, but the consumed count before an error
    // is not part of the contract.
    if whole.error.is_some() || pieces.error.is_some() {
        assert_eq!(
            whole.error, pieces.error,
            "whole {whole:?} pieces {pieces:?}"
        );
        assert!(!whole.done && !pieces.done);
        assert_eq!(
            whole.content, pieces.content,
            "content before the error differs"
        );
        return None;
    }
    assert_eq!(whole, pieces, "one piece vs pieces");
    match framing {
        Framing::Empty => assert!(whole.done && whole.content.is_empty() && whole.consumed == 0),
        Framing::Length(n) => {
            let expected = usize::try_from(n).unwrap_or(usize::MAX).min(body.len());
            assert_eq!(
                whole.content,
                body[..expected],
                "Content-Length body is the bytes"
            );
            assert_eq!(whole.done, expected as u64 == n);
        }
        Framing::Chunked => assert!(whole.content.len() <= whole.consumed),
    }
    if !whole.done {
        assert_eq!(
            whole.consumed,
            body.len(),
            "stopped early without finishing"
        );
    }
    whole.done.then_some(whole.consumed)
}

const HIDDEN: [&[u8]; 2] = [b"wsecret", b"seqid"];

fn check_query(raw: &[u8]) {
    let raw = &raw[..raw.len().min(4096)];
    let mut filter = QueryFilter::default();
    let mut out = Vec::new();
    filter.filter(raw, &mut out);
    let mut i = 0;
    while i < out.len() {
        match out[i] {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'+' => {}
            b'&' | b'=' => {}
            b'%' => {
                assert!(
                    out.len() > i + 2
                        && out[i + 1..i + 3]
                            .iter()
                            .all(|b| b"0123456789ABCDEF".contains(b)),
                    "bad escape in {:?}",
                    String::from_utf8_lossy(&out)
                );
                i += 2;
            }
            b => panic!(
                "byte {b:#x} in filtered query {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
        i += 1;
    }
    if !out.is_empty() {
        for pair in out.split(|&b| b == b'&') {
            let eq = pair.iter().position(|&b| b == b'=');
            let eq = eq.unwrap_or_else(|| {
                panic!("pair without '=' in {:?}", String::from_utf8_lossy(&out))
            });
            let key = percent_decode(&pair[..eq]);
            assert!(
                !HIDDEN.iter().any(|h| key.eq_ignore_ascii_case(h)),
                "hidden parameter shown: {:?}",
                String::from_utf8_lossy(&out)
            );
            assert!(!pair[eq + 1..].contains(&b'='), "unescaped '=' in a value");
        }
    }
    // Filtering the canonical form changes nothing.
    let mut again = Vec::new();
    filter.filter(&out, &mut again);
    assert_eq!(
        again,
        out,
        "filter is not idempotent on {:?}",
        String::from_utf8_lossy(raw)
    );

    for name in HIDDEN {
        let mut value = b"junk".to_vec();
        let found = find_param(raw, name, &mut value);
        if !found {
            assert!(value.is_empty(), "find_param left a value behind");
        }
        let mentions = raw
            .windows(name.len())
            .any(|w| w.eq_ignore_ascii_case(name));
        assert!(!found || mentions, "found {name:?} that is not there");
        // A plain `name=...` with a clean value at the start is always found.
        if raw.len() > name.len()
            && raw[..name.len()].eq_ignore_ascii_case(name)
            && raw[name.len()] == b'='
        {
            let v = raw[name.len() + 1..]
                .split(|&b| b == b'&')
                .next()
                .unwrap_or_default();
            if v.iter().all(|b| b.is_ascii_alphanumeric()) {
                assert!(found, "first parameter {name:?} not found");
                assert_eq!(value, v);
            }
        }
    }
}

/// Form-decoding of an already validated, re-encoded key.
fn percent_decode(s: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).expect("validated escape") as u8;
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'%' => {
                out.push(hex(s[i + 1]) << 4 | hex(s[i + 2]));
                i += 2;
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    out
}
