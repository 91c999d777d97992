//! `multipart/form-data` bodies fed to the decoder in arbitrary pieces.
//!
//! Input layout: `n`, then `n` step bytes, then the body; the boundary is
//! `XyZ` (short, so that the fuzzer meets delimiters and near-delimiters).
//! The step bytes (cyclically) give each piece's size (1..=64).
//!
//! Invariants:
//! - whatever the pieces, the decoder finds the same parts (heads and
//!   content) and the same error as when given the whole body at once;
//! - every call on a non-empty piece makes progress, and hands on at most the
//!   bytes it used plus `MAX_DELIMITER`;
//! - a part's content never contains the delimiter `CRLF--XyZ`;
//! - nothing panics.
#![no_main]

use httprelay::http::{MultipartDecoder, MultipartError, MultipartEvent, MAX_DELIMITER};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq, Eq)]
struct Part {
    content_type: Option<Vec<u8>>,
    disposition: Option<Vec<u8>>,
    content: Vec<u8>,
}

/// The parts found in `body` cut into pieces by `sizes`, and how it ended.
fn decode(
    body: &[u8],
    mut sizes: impl FnMut() -> usize,
) -> (Vec<Part>, Result<(), MultipartError>) {
    let mut decoder = MultipartDecoder::new(b"XyZ").expect("a valid boundary");
    let mut parts: Vec<Part> = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let piece = &rest[..sizes().min(rest.len())];
        let mut at = 0;
        while at < piece.len() {
            let (used, event) = match decoder.decode(&piece[at..]) {
                Ok(step) => step,
                Err(e) => return (parts, Err(e)),
            };
            assert!(used <= piece.len() - at);
            let handed = match &event {
                MultipartEvent::Data(range) => range.len(),
                MultipartEvent::Held(n) => *n,
                _ => 0,
            };
            assert!(
                used > 0 || matches!(event, MultipartEvent::Held(_)),
                "no progress"
            );
            assert!(handed <= used + MAX_DELIMITER);
            match event {
                MultipartEvent::PartStart => parts.push(Part {
                    content_type: decoder.field("content-type").map(<[u8]>::to_vec),
                    disposition: decoder.field("content-disposition").map(<[u8]>::to_vec),
                    content: Vec::new(),
                }),
                MultipartEvent::Data(range) => {
                    let data = &piece[at..][range];
                    parts
                        .last_mut()
                        .expect("data inside a part")
                        .content
                        .extend_from_slice(data);
                }
                MultipartEvent::Held(n) => {
                    let held = decoder.held(n).to_vec();
                    parts
                        .last_mut()
                        .expect("held data inside a part")
                        .content
                        .extend_from_slice(&held);
                }
                MultipartEvent::Nothing | MultipartEvent::PartEnd | MultipartEvent::End => {}
            }
            at += used;
        }
        rest = &rest[piece.len()..];
    }
    let end = decoder.finish();
    (parts, end)
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n).min(rest.len());
    let (steps, body) = rest.split_at(n);
    let mut at = 0;
    let sizes = || {
        let size = steps
            .get(at % steps.len().max(1))
            .map_or(64, |&s| usize::from(s % 64) + 1);
        at += 1;
        size
    };
    let (cut, cut_end) = decode(body, sizes);
    let (whole, whole_end) = decode(body, || usize::MAX);
    assert_eq!(cut, whole, "parts depend on how the body was cut");
    assert_eq!(cut_end, whole_end);
    for part in &whole {
        assert!(
            !part.content.windows(7).any(|w| w == b"\r\n--XyZ"),
            "a delimiter inside content"
        );
    }
});
