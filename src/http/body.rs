//! Request body framing, decoded incrementally: bytes arrive in arbitrary pieces
//! and the decoder keeps its place between them, so nothing is ever buffered here.

use super::head::{hex_value, Framing};

/// Longest chunk extension or trailer section accepted, so that a body cannot
/// make the relay scan framing bytes forever without moving data.
const MAX_FRAMING_RUN: u32 = 16 * 1024;
/// Most characters in a chunk-size (leading zeros included) and most blanks
/// after it: enough for any real client, and a bound on framing without data.
const MAX_SIZE_DIGITS: u8 = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyError {
    /// A chunk-size line that is not hex digits (optionally followed by an extension).
    BadChunkSize,
    /// A chunk size that does not fit in 64 bits.
    ChunkSizeOverflow,
    /// A line that should end in CRLF does not.
    MissingCrlf,
    /// Chunk extensions or trailers longer than the limit.
    FramingTooLong,
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BodyError::BadChunkSize => "malformed chunk size",
            BodyError::ChunkSizeOverflow => "chunk size too large",
            BodyError::MissingCrlf => "missing CRLF in chunked body",
            BodyError::FramingTooLong => "chunk extension or trailer too long",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// `remaining` bytes of a Content-Length body are still to come.
    Length {
        remaining: u64,
    },
    /// Reading the hex digits of a chunk size (`digits` seen so far).
    Size {
        size: u64,
        digits: u8,
    },
    /// Whitespace after the size, before `;` or CR.
    SizeSpace {
        size: u64,
        blanks: u8,
    },
    /// Inside a chunk extension, skipped up to CR.
    Extension {
        size: u64,
        seen: u32,
    },
    /// Saw CR after the size line; LF must follow.
    SizeLf {
        size: u64,
    },
    /// Inside chunk data.
    Data {
        remaining: u64,
    },
    /// After chunk data: CR, then LF.
    DataCr,
    DataLf,
    /// At the start of a trailer line (an empty line ends the body).
    TrailerStart {
        seen: u32,
    },
    /// Inside a trailer field line.
    Trailer {
        seen: u32,
    },
    TrailerLf {
        seen: u32,
    },
    /// Saw the CR of the final empty line.
    FinalLf,
    Done,
}

/// One step of decoding: `consumed` input bytes were used, and `data` (a range of
/// the input) is body content to pass on. `data` lies within the consumed bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    pub consumed: usize,
    pub data: std::ops::Range<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyDecoder {
    state: State,
    /// The sizes of the last chunks begun, the latest at `recent % 4`
    /// (0 before any).
    recent_sizes: [u64; 4],
    recent: u8,
}

impl BodyDecoder {
    pub fn new(framing: Framing) -> BodyDecoder {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length { remaining: n },
            Framing::Chunked => State::Size { size: 0, digits: 0 },
        };
        BodyDecoder {
            state,
            recent_sizes: [0; 4],
            recent: 0,
        }
    }

    /// The largest of the last four chunks begun: a sender of large chunks
    /// is likely to send more of them (curl, for one, sends 64 KiB chunks
    /// with a 12-byte one between some of them).
    pub fn recent_chunk(&self) -> u64 {
        self.recent_sizes.iter().copied().max().unwrap_or(0)
    }

    /// Framing comes next (chunk-size lines, CRLFs, trailers), not content.
    pub fn in_framing(&self) -> bool {
        !self.is_done() && self.remaining_plain().is_none()
    }

    /// The whole body, including any trailer, has been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Bytes of content still expected, when the framing says so.
    pub fn remaining_in_length(&self) -> Option<u64> {
        match self.state {
            State::Length { remaining } => Some(remaining),
            _ => None,
        }
    }

    /// Content bytes that can be taken as they are, without decoding: the rest
    /// of a `Content-Length` body, or the rest of the current chunk's data.
    pub fn remaining_plain(&self) -> Option<u64> {
        match self.state {
            State::Length { remaining } | State::Data { remaining } => Some(remaining),
            _ => None,
        }
    }

    /// Accounts for `n` content bytes read past the decoder (at most
    /// [`BodyDecoder::remaining_plain`]).
    pub fn advance_plain(&mut self, n: u64) {
        match self.state {
            State::Length { .. } => self.advance_length(n),
            State::Data { remaining } => {
                debug_assert!(n <= remaining);
                let left = remaining.saturating_sub(n);
                self.state = if left == 0 {
                    State::DataCr
                } else {
                    State::Data { remaining: left }
                };
            }
            _ => debug_assert!(n == 0, "no plain content in this state"),
        }
    }

    /// Accounts for `n` bytes of a `Content-Length` body that were moved
    /// without passing through [`BodyDecoder::decode`] (zero-copy relay).
    pub fn advance_length(&mut self, n: u64) {
        if let State::Length { remaining } = self.state {
            debug_assert!(n <= remaining);
            let left = remaining.saturating_sub(n);
            self.state = if left == 0 {
                State::Done
            } else {
                State::Length { remaining: left }
            };
        }
    }

    /// Decodes from `input`, yielding at most `max_data` bytes of content. Stops
    /// after the first run of content, at the end of the body, or when the input
    /// is used up. Call again with the unconsumed rest.
    pub fn decode(&mut self, input: &[u8], max_data: usize) -> Result<Decoded, BodyError> {
        let mut at = 0;
        while at < input.len() {
            let byte = input[at];
            self.state = match self.state {
                State::Done => break,
                State::Length { remaining } | State::Data { remaining } => {
                    let take = self.take_content(remaining, input.len() - at, max_data);
                    if take == 0 {
                        break;
                    }
                    return Ok(Decoded {
                        consumed: at + take,
                        data: at..at + take,
                    });
                }
                State::Size { size, digits } => size_digit(size, digits, byte)?,
                State::SizeSpace { size, blanks } => size_blank(size, blanks, byte)?,
                State::Extension { size, seen } => extension(size, seen, byte)?,
                State::SizeLf { size } => {
                    self.recent = self.recent.wrapping_add(1);
                    self.recent_sizes[usize::from(self.recent % 4)] = size;
                    size_line_end(size, byte)?
                }
                State::DataCr => line_end(byte, b'\r', State::DataLf)?,
                State::DataLf => line_end(byte, b'\n', State::Size { size: 0, digits: 0 })?,
                State::TrailerStart { seen } => trailer_start(seen, byte)?,
                State::Trailer { seen } => trailer(seen, byte)?,
                State::TrailerLf { seen } => line_end(byte, b'\n', State::TrailerStart { seen })?,
                State::FinalLf => {
                    self.state = line_end(byte, b'\n', State::Done)?;
                    return Ok(Decoded {
                        consumed: at + 1,
                        data: 0..0,
                    });
                }
            };
            at += 1;
        }
        Ok(Decoded {
            consumed: at,
            data: 0..0,
        })
    }

    /// Moves past the content at hand: as much of the `remaining` bytes of the
    /// body or chunk as the `available` input holds, at most `max_data`.
    /// Returns how many; 0 leaves the state as it was.
    fn take_content(&mut self, remaining: u64, available: usize, max_data: usize) -> usize {
        let take = available.min(max_data);
        let take = usize::try_from(remaining).map_or(take, |r| take.min(r));
        if take == 0 {
            return 0;
        }
        let left = remaining - take as u64;
        self.state = match self.state {
            State::Length { .. } if left == 0 => State::Done,
            State::Length { .. } => State::Length { remaining: left },
            _ if left == 0 => State::DataCr,
            _ => State::Data { remaining: left },
        };
        take
    }
}

// One function per framing state of a chunked body: the state that follows
// one byte of input in it.

/// A byte of a chunk size: another hex digit, or what follows the digits.
#[inline]
fn size_digit(size: u64, digits: u8, byte: u8) -> Result<State, BodyError> {
    match hex_value(byte) {
        // Leading zeros never overflow: bound the digits instead.
        Some(_) if digits >= MAX_SIZE_DIGITS => Err(BodyError::FramingTooLong),
        Some(v) => {
            let size = size
                .checked_mul(16)
                .and_then(|s| s.checked_add(u64::from(v)))
                .ok_or(BodyError::ChunkSizeOverflow)?;
            Ok(State::Size {
                size,
                digits: digits.saturating_add(1),
            })
        }
        None if digits == 0 => Err(BodyError::BadChunkSize),
        None => after_size(size, byte),
    }
}

/// A byte in the whitespace after a chunk size (`blanks` of it so far).
#[inline]
fn size_blank(size: u64, blanks: u8, byte: u8) -> Result<State, BodyError> {
    match byte {
        b' ' | b'\t' if blanks >= MAX_SIZE_DIGITS => Err(BodyError::FramingTooLong),
        b' ' | b'\t' => Ok(State::SizeSpace {
            size,
            blanks: blanks + 1,
        }),
        _ => after_size(size, byte),
    }
}

/// The byte after a chunk size's digits (or after whitespace following them).
fn after_size(size: u64, byte: u8) -> Result<State, BodyError> {
    match byte {
        b'\r' => Ok(State::SizeLf { size }),
        b';' => Ok(State::Extension { size, seen: 0 }),
        b' ' | b'\t' => Ok(State::SizeSpace { size, blanks: 1 }),
        b'\n' => Err(BodyError::MissingCrlf),
        _ => Err(BodyError::BadChunkSize),
    }
}

/// A byte of a chunk extension (`seen` bytes of it so far), skipped up to the
/// CR that ends the size line.
#[inline]
fn extension(size: u64, seen: u32, byte: u8) -> Result<State, BodyError> {
    match byte {
        b'\r' => Ok(State::SizeLf { size }),
        b'\n' => Err(BodyError::MissingCrlf),
        _ if seen >= MAX_FRAMING_RUN => Err(BodyError::FramingTooLong),
        _ => Ok(State::Extension {
            size,
            seen: seen + 1,
        }),
    }
}

/// The LF that ends a size line: the chunk's data follows, or the trailer
/// after the last chunk (size 0).
#[inline]
fn size_line_end(size: u64, byte: u8) -> Result<State, BodyError> {
    match byte {
        b'\n' if size == 0 => Ok(State::TrailerStart { seen: 0 }),
        b'\n' => Ok(State::Data { remaining: size }),
        _ => Err(BodyError::MissingCrlf),
    }
}

/// The CR or the LF (`expected`) of a line ending, which leads to `next`.
#[inline]
fn line_end(byte: u8, expected: u8, next: State) -> Result<State, BodyError> {
    if byte == expected {
        Ok(next)
    } else {
        Err(BodyError::MissingCrlf)
    }
}

/// The first byte of a trailer line: the CR of the empty line that ends the
/// body, or the start of a field (`seen`: bytes of the trailer so far).
#[inline]
fn trailer_start(seen: u32, byte: u8) -> Result<State, BodyError> {
    match byte {
        b'\r' => Ok(State::FinalLf),
        b'\n' => Err(BodyError::MissingCrlf),
        // Counted here too: a trailer of one-character lines never reaches
        // the check in `trailer`.
        _ if seen >= MAX_FRAMING_RUN => Err(BodyError::FramingTooLong),
        _ => Ok(State::Trailer { seen: seen + 1 }),
    }
}

/// A byte of a trailer field line, skipped up to its CR.
#[inline]
fn trailer(seen: u32, byte: u8) -> Result<State, BodyError> {
    match byte {
        b'\r' => Ok(State::TrailerLf { seen }),
        b'\n' => Err(BodyError::MissingCrlf),
        _ if seen >= MAX_FRAMING_RUN => Err(BodyError::FramingTooLong),
        _ => Ok(State::Trailer { seen: seen + 1 }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `step` bytes; returns the content and
    /// whether the body completed.
    fn decode_all(
        framing: Framing,
        input: &[u8],
        step: usize,
        max: usize,
    ) -> Result<(Vec<u8>, bool, usize), BodyError> {
        let mut dec = BodyDecoder::new(framing);
        let mut out = Vec::new();
        let mut fed = 0;
        let mut pending: Vec<u8> = Vec::new();
        while fed < input.len() || !pending.is_empty() {
            if pending.is_empty() || fed < input.len() {
                let end = (fed + step).min(input.len());
                pending.extend_from_slice(&input[fed..end]);
                fed = end;
            }
            let d = dec.decode(&pending, max)?;
            out.extend_from_slice(&pending[d.data.clone()]);
            pending.drain(..d.consumed);
            if dec.is_done() {
                return Ok((out, true, input.len() - fed + pending.len()));
            }
            if d.consumed == 0 && fed == input.len() {
                break;
            }
        }
        Ok((out, dec.is_done(), pending.len()))
    }

    #[test]
    fn content_length_body_stops_at_its_length() {
        for step in [1, 3, 100] {
            let (out, done, left) =
                decode_all(Framing::Length(5), b"hello GET /", step, 2).unwrap();
            assert_eq!(
                (out.as_slice(), done, left),
                (&b"hello"[..], true, 6),
                "step {step}"
            );
        }
    }

    #[test]
    fn empty_bodies_are_done_at_once() {
        assert!(BodyDecoder::new(Framing::Empty).is_done());
        assert!(BodyDecoder::new(Framing::Length(0)).is_done());
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers() {
        let body = b"5;name=value\r\nhello\r\n1A \r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: 1\r\nY: 2\r\n\r\nNEXT";
        for step in [1, 2, 7, 1000] {
            for max in [1, 4, 64] {
                let (out, done, left) = decode_all(Framing::Chunked, body, step, max).unwrap();
                assert_eq!(
                    out, b"helloabcdefghijklmnopqrstuvwxyz",
                    "step {step} max {max}"
                );
                assert!(done);
                assert_eq!(left, 4, "the next request stays unconsumed");
            }
        }
    }

    #[test]
    fn the_largest_of_the_last_four_chunks_is_remembered() {
        let mut dec = BodyDecoder::new(Framing::Chunked);
        assert_eq!(dec.recent_chunk(), 0);
        let mut body = Vec::new();
        for size in [0x10000usize, 0xc, 0x20, 0x3, 0x4, 0x5] {
            body.extend_from_slice(format!("{size:x}\r\n").as_bytes());
            body.extend(std::iter::repeat_n(b'x', size));
            body.extend_from_slice(b"\r\n");
        }
        let mut seen = Vec::new();
        let mut at = 0;
        while at < body.len() {
            let got = dec.decode(&body[at..], usize::MAX).unwrap();
            at += got.consumed;
            seen.push(dec.recent_chunk());
        }
        // 64 KiB is remembered through three small chunks, then forgotten.
        assert!(seen.contains(&0x10000));
        assert_eq!(dec.recent_chunk(), 0x20, "{seen:?}");
    }

    #[test]
    fn chunked_errors() {
        let cases: [(&[u8], BodyError); 7] = [
            (b"x\r\n", BodyError::BadChunkSize),
            (b"\r\n", BodyError::BadChunkSize),
            (b"5\nhello\r\n0\r\n\r\n", BodyError::MissingCrlf),
            (b"5\r\nhelloX\r\n", BodyError::MissingCrlf),
            (b"5\r\nhello\r\n0\r\n\n", BodyError::MissingCrlf),
            (b"5 x\r\n", BodyError::BadChunkSize),
            (b"1ffffffffffffffff\r\n", BodyError::ChunkSizeOverflow),
        ];
        for (input, expected) in cases {
            assert_eq!(
                decode_all(Framing::Chunked, input, 1, 16).unwrap_err(),
                expected,
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn endless_extension_is_refused() {
        let mut input = b"1;".to_vec();
        input.extend(std::iter::repeat_n(b'a', MAX_FRAMING_RUN as usize + 1));
        assert_eq!(
            decode_all(Framing::Chunked, &input, 4096, 16).unwrap_err(),
            BodyError::FramingTooLong
        );
    }

    #[test]
    fn a_trailer_of_endless_one_character_lines_is_refused() {
        let mut input = b"0\r\n".to_vec();
        for _ in 0..MAX_FRAMING_RUN + 1 {
            input.extend_from_slice(b"x\r\n");
        }
        input.extend_from_slice(b"\r\n");
        assert_eq!(
            decode_all(Framing::Chunked, &input, 4096, 16).unwrap_err(),
            BodyError::FramingTooLong
        );
        let mut short = b"0\r\n".to_vec();
        for _ in 0..100 {
            short.extend_from_slice(b"x\r\n");
        }
        short.extend_from_slice(b"\r\n");
        let (content, done, left) = decode_all(Framing::Chunked, &short, 4096, 16).unwrap();
        assert!(
            content.is_empty() && done && left == 0,
            "a short trailer is fine"
        );
    }

    #[test]
    fn endless_size_digits_or_blanks_are_refused() {
        let zeros = vec![b'0'; 40_000];
        assert_eq!(
            decode_all(Framing::Chunked, &zeros, 4096, 16).unwrap_err(),
            BodyError::FramingTooLong
        );
        let mut blanks = b"1".to_vec();
        blanks.extend(std::iter::repeat_n(b' ', 40_000));
        assert_eq!(
            decode_all(Framing::Chunked, &blanks, 4096, 16).unwrap_err(),
            BodyError::FramingTooLong
        );
        let (out, done, _) =
            decode_all(Framing::Chunked, b"1 \t ;x\r\na\r\n0\r\n\r\n", 3, 8).unwrap();
        assert_eq!(
            (out.as_slice(), done),
            (&b"a"[..], true),
            "a few blanks are fine"
        );
    }

    #[test]
    fn plain_content_can_be_taken_past_the_decoder() {
        let mut dec = BodyDecoder::new(Framing::Chunked);
        assert_eq!(dec.remaining_plain(), None, "inside framing");
        let d = dec.decode(b"a\r\n", 100).unwrap();
        assert_eq!(d.consumed, 3);
        assert_eq!(dec.remaining_plain(), Some(10));
        dec.advance_plain(4);
        assert_eq!(dec.remaining_plain(), Some(6));
        dec.advance_plain(6);
        assert_eq!(
            dec.remaining_plain(),
            None,
            "the CRLF after the data follows"
        );
        dec.decode(b"\r\n0\r\n\r\n", 100).unwrap();
        assert!(dec.is_done());
        let mut dec = BodyDecoder::new(Framing::Length(5));
        dec.advance_plain(5);
        assert!(dec.is_done());
    }

    #[test]
    fn leading_zeros_in_size_are_fine() {
        let (out, done, _) =
            decode_all(Framing::Chunked, b"0003\r\nabc\r\n000\r\n\r\n", 5, 8).unwrap();
        assert_eq!((out.as_slice(), done), (&b"abc"[..], true));
    }

    #[test]
    fn truncated_body_is_not_done() {
        let (out, done, _) = decode_all(Framing::Chunked, b"5\r\nhel", 2, 8).unwrap();
        assert_eq!((out.as_slice(), done), (&b"hel"[..], false));
        let (_, done, _) = decode_all(Framing::Length(10), b"abc", 1, 8).unwrap();
        assert!(!done);
    }
}
