//! `multipart/form-data` bodies (RFC 7578, RFC 2046 §5.1), decoded
//! incrementally with fixed memory: content arrives in arbitrary pieces, part
//! data is handed on as ranges of those pieces, and only a part's head (capped)
//! is ever copied.
//!
//! A delimiter is `CRLF--boundary`. Boundary characters never include CR, so a
//! partial delimiter at the end of a piece is always a prefix that restarts
//! only at a CR: the decoder remembers how much of it matched and, when the
//! next piece shows it was data after all, hands those bytes on from its own
//! copy of the delimiter ([`Event::Held`]).

use std::ops::Range;

use super::head::trim;

/// Longest boundary RFC 2046 allows.
pub const MAX_BOUNDARY: usize = 70;
/// Longest delimiter: CRLF, two dashes, the boundary.
pub const MAX_DELIMITER: usize = 4 + MAX_BOUNDARY;
/// Longest part head (its fields and the empty line) kept.
pub const MAX_PART_HEAD: usize = 8 * 1024;
/// Most blanks accepted after a delimiter, before its CRLF.
const MAX_PADDING: u8 = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MultipartError {
    /// The `Content-Type` names no usable boundary.
    NoBoundary,
    /// A delimiter is followed by neither `--` nor CRLF.
    BadDelimiter,
    /// A part head longer than the limit ([`MAX_PART_HEAD`] at most).
    PartHeadTooLarge,
    /// A part head that is not header fields.
    BadPartHead,
    /// The body ended before the closing delimiter.
    Unterminated,
}

impl std::fmt::Display for MultipartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MultipartError::NoBoundary => "multipart body without a valid boundary",
            MultipartError::BadDelimiter => "malformed multipart delimiter",
            MultipartError::PartHeadTooLarge => "multipart part head too large",
            MultipartError::BadPartHead => "malformed multipart part head",
            MultipartError::Unterminated => "multipart body ended before its last boundary",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Before the first delimiter (the preamble is skipped); `matched` bytes
    /// of the delimiter seen.
    Preamble { matched: u8 },
    /// Just after a delimiter: `--` closes the body; blanks then CRLF open a part.
    AfterDelimiter { dash: bool, blanks: u8, cr: bool },
    /// Collecting a part head into `head`.
    PartHead,
    /// In a part's content; `matched` bytes of a delimiter seen (not yet handed on).
    Content { matched: u8 },
    /// After the closing delimiter: the rest is ignored.
    Epilogue,
}

/// What one call to [`MultipartDecoder::decode`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Nothing to hand on (preamble, delimiter, head bytes, epilogue).
    Nothing,
    /// A part's head is complete: see [`MultipartDecoder::field`].
    PartStart,
    /// Part content: this range of the piece.
    Data(Range<usize>),
    /// Part content: the first `n` bytes of the delimiter, which turned out
    /// to be data ([`MultipartDecoder::held`]).
    Held(usize),
    /// The current part's content is over.
    PartEnd,
    /// The closing delimiter: the body's parts are over.
    End,
}

/// A `multipart/form-data` decoder for one body.
#[derive(Clone, Debug)]
pub struct MultipartDecoder {
    delimiter: [u8; MAX_DELIMITER],
    delimiter_len: u8,
    state: State,
    /// The current part's head (while collecting it, then until the next part).
    head: Vec<u8>,
    /// Longest part head kept ([`MAX_PART_HEAD`] unless lowered).
    head_limit: usize,
}

impl MultipartDecoder {
    /// A decoder for a body whose `Content-Type` is `content_type`; `None` when
    /// it is not `multipart/form-data`.
    pub fn for_content_type(
        content_type: &[u8],
    ) -> Option<Result<MultipartDecoder, MultipartError>> {
        let mut params = content_type.split(|&b| b == b';');
        let media_type = trim(params.next().unwrap_or_default());
        if !media_type.eq_ignore_ascii_case(b"multipart/form-data") {
            return None;
        }
        let boundary = params.find_map(|param| {
            let (name, value) = split_once(param, b'=')?;
            trim(name)
                .eq_ignore_ascii_case(b"boundary")
                .then(|| unquote(trim(value)))
        });
        Some(
            boundary
                .ok_or(MultipartError::NoBoundary)
                .and_then(MultipartDecoder::new),
        )
    }

    /// A decoder for parts separated by `boundary` (1 to 70 characters that
    /// RFC 2046 allows).
    pub fn new(boundary: &[u8]) -> Result<MultipartDecoder, MultipartError> {
        let allowed = |b: u8| b.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&b);
        if boundary.is_empty()
            || boundary.len() > MAX_BOUNDARY
            || !boundary.iter().all(|&b| allowed(b))
            || boundary.ends_with(b" ")
        {
            return Err(MultipartError::NoBoundary);
        }
        let mut delimiter = [0u8; MAX_DELIMITER];
        delimiter[..4].copy_from_slice(b"\r\n--");
        delimiter[4..4 + boundary.len()].copy_from_slice(boundary);
        Ok(MultipartDecoder {
            delimiter,
            delimiter_len: (4 + boundary.len()) as u8,
            // The body may open with the delimiter without a CRLF before it:
            // count that CRLF as seen.
            state: State::Preamble { matched: 2 },
            head: Vec::new(),
            head_limit: MAX_PART_HEAD,
        })
    }

    /// Keeps part heads to `limit` bytes (at most [`MAX_PART_HEAD`]).
    pub fn limit_head(mut self, limit: usize) -> MultipartDecoder {
        self.head_limit = limit.min(MAX_PART_HEAD);
        self
    }

    fn delimiter(&self) -> &[u8] {
        &self.delimiter[..usize::from(self.delimiter_len)]
    }

    /// The first `n` bytes of the delimiter (for [`Event::Held`]).
    pub fn held(&self, n: usize) -> &[u8] {
        &self.delimiter[..n]
    }

    /// The closing delimiter has been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Epilogue
    }

    /// The value of field `name` in the current part's head, trimmed.
    pub fn field(&self, name: &str) -> Option<&[u8]> {
        let mut fields = [httparse::EMPTY_HEADER; 16];
        let Ok(httparse::Status::Complete((_, fields))) =
            httparse::parse_headers(&self.head, &mut fields)
        else {
            return None;
        };
        let value = fields.iter().find(|f| f.name.eq_ignore_ascii_case(name))?;
        // Point into `head` rather than into the parse's scratch.
        let start = value.value.as_ptr() as usize - self.head.as_ptr() as usize;
        Some(trim(&self.head[start..start + value.value.len()]))
    }

    /// Decodes from the start of `piece`: returns how many bytes were used and
    /// what they were. Call again with the rest until it is used up; every
    /// call on a non-empty piece uses a byte or hands on held bytes. Data
    /// handed on is at most the bytes used plus [`MAX_DELIMITER`].
    pub fn decode(&mut self, piece: &[u8]) -> Result<(usize, Event), MultipartError> {
        if piece.is_empty() {
            return Ok((0, Event::Nothing));
        }
        match self.state {
            State::Preamble { matched } => {
                let (used, found) = self.find_delimiter(piece, matched);
                self.state = match found {
                    Match::Whole => State::AfterDelimiter {
                        dash: false,
                        blanks: 0,
                        cr: false,
                    },
                    Match::Partial(m) => State::Preamble { matched: m },
                    Match::None => State::Preamble { matched: 0 },
                };
                Ok((used, Event::Nothing))
            }
            State::AfterDelimiter { dash, blanks, cr } => {
                let b = piece[0];
                self.state = match (dash, cr, b) {
                    (false, false, b'-') if blanks == 0 => State::AfterDelimiter {
                        dash: true,
                        blanks,
                        cr,
                    },
                    (true, _, b'-') => {
                        self.head.clear();
                        self.state = State::Epilogue;
                        return Ok((1, Event::End));
                    }
                    (false, false, b' ' | b'\t') if blanks < MAX_PADDING => State::AfterDelimiter {
                        dash,
                        blanks: blanks + 1,
                        cr,
                    },
                    (false, false, b'\r') => State::AfterDelimiter {
                        dash,
                        blanks,
                        cr: true,
                    },
                    (false, true, b'\n') => {
                        self.head.clear();
                        State::PartHead
                    }
                    _ => return Err(MultipartError::BadDelimiter),
                };
                Ok((1, Event::Nothing))
            }
            State::PartHead => self.collect_head(piece),
            State::Content { matched } => self.content(piece, matched),
            State::Epilogue => Ok((piece.len(), Event::Nothing)),
        }
    }

    /// The body's content has ended: fine only after the closing delimiter.
    pub fn finish(&self) -> Result<(), MultipartError> {
        match self.state {
            State::Epilogue => Ok(()),
            _ => Err(MultipartError::Unterminated),
        }
    }

    fn collect_head(&mut self, piece: &[u8]) -> Result<(usize, Event), MultipartError> {
        // The head ends at its empty line; an empty head is just that line.
        let before = self.head.len();
        let room = self.head_limit.saturating_sub(before);
        let take = piece.len().min(room);
        self.head.extend_from_slice(&piece[..take]);
        let search_from = before.saturating_sub(3);
        let end = if self.head.starts_with(b"\r\n") {
            Some(2)
        } else {
            find(&self.head[search_from..], b"\r\n\r\n").map(|at| search_from + at + 4)
        };
        let Some(end) = end else {
            if take == room {
                return Err(MultipartError::PartHeadTooLarge);
            }
            return Ok((take, Event::Nothing));
        };
        self.head.truncate(end);
        let mut fields = [httparse::EMPTY_HEADER; 16];
        match httparse::parse_headers(&self.head, &mut fields) {
            Ok(httparse::Status::Complete(_)) => {}
            _ => return Err(MultipartError::BadPartHead),
        }
        self.state = State::Content { matched: 0 };
        Ok((end - before, Event::PartStart))
    }

    fn content(&mut self, piece: &[u8], matched: u8) -> Result<(usize, Event), MultipartError> {
        if matched > 0 {
            // Continue a delimiter begun at the end of the last piece.
            let delimiter_len = usize::from(self.delimiter_len);
            let wanted = &self.delimiter()[usize::from(matched)..];
            let same = piece.iter().zip(wanted).take_while(|(a, b)| a == b).count();
            let total = usize::from(matched) + same;
            if total == delimiter_len {
                self.state = State::AfterDelimiter {
                    dash: false,
                    blanks: 0,
                    cr: false,
                };
                return Ok((same, Event::PartEnd));
            }
            if same == piece.len() {
                self.state = State::Content {
                    matched: total as u8,
                };
                return Ok((same, Event::Nothing));
            }
            // Not a delimiter: what matched so far was data.
            self.state = State::Content { matched: 0 };
            return Ok((same, Event::Held(total)));
        }
        let (used, found) = self.find_delimiter(piece, 0);
        match found {
            Match::Whole => {
                let start = used - usize::from(self.delimiter_len);
                if start > 0 {
                    // Hand on the data first; the delimiter is found again next.
                    return Ok((start, Event::Data(0..start)));
                }
                self.state = State::AfterDelimiter {
                    dash: false,
                    blanks: 0,
                    cr: false,
                };
                Ok((used, Event::PartEnd))
            }
            Match::Partial(m) => {
                self.state = State::Content { matched: m };
                Ok((used, Event::Data(0..used - usize::from(m))))
            }
            Match::None => Ok((used, Event::Data(0..used))),
        }
    }

    /// Looks for the delimiter in `piece`, `matched` bytes of it already
    /// seen: returns the bytes used (up to the delimiter's end, or all) and
    /// what was found.
    fn find_delimiter(&self, piece: &[u8], mut matched: u8) -> (usize, Match) {
        let delimiter = self.delimiter();
        for (i, &b) in piece.iter().enumerate() {
            if b == delimiter[usize::from(matched)] {
                matched += 1;
                if usize::from(matched) == delimiter.len() {
                    return (i + 1, Match::Whole);
                }
            } else {
                // CR opens the delimiter and appears nowhere else in it.
                matched = u8::from(b == b'\r');
            }
        }
        let found = if matched > 0 {
            Match::Partial(matched)
        } else {
            Match::None
        };
        (piece.len(), found)
    }
}

enum Match {
    Whole,
    /// The piece ends with this many bytes of the delimiter.
    Partial(u8),
    None,
}

fn split_once(s: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let at = s.iter().position(|&b| b == sep)?;
    Some((&s[..at], &s[at + 1..]))
}

fn unquote(value: &[u8]) -> &[u8] {
    match value {
        [b'"', inner @ .., b'"'] => inner,
        _ => value,
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `body` fed in pieces of `step` bytes: the parts' content, each
    /// with its Content-Type and Content-Disposition.
    fn parts(
        decoder: &mut MultipartDecoder,
        body: &[u8],
        step: usize,
    ) -> Vec<(String, String, Vec<u8>)> {
        let mut out: Vec<(String, String, Vec<u8>)> = Vec::new();
        for piece in body.chunks(step) {
            let mut at = 0;
            while at < piece.len() {
                let (used, event) = decoder.decode(&piece[at..]).expect("a valid body");
                assert!(
                    used > 0 || matches!(event, Event::Held(_)),
                    "progress on a non-empty piece"
                );
                match event {
                    Event::PartStart => {
                        let text = |name| {
                            String::from_utf8(decoder.field(name).unwrap_or_default().to_vec())
                                .unwrap()
                        };
                        out.push((
                            text("content-type"),
                            text("content-disposition"),
                            Vec::new(),
                        ));
                    }
                    Event::Data(range) => out
                        .last_mut()
                        .unwrap()
                        .2
                        .extend_from_slice(&piece[at..][range]),
                    Event::Held(n) => {
                        let held = decoder.held(n).to_vec();
                        out.last_mut().unwrap().2.extend_from_slice(&held);
                    }
                    Event::Nothing | Event::PartEnd | Event::End => {}
                }
                at += used;
            }
        }
        decoder.finish().expect("terminated");
        out
    }

    const FORM: &[u8] = b"preamble\r\n--XyZ\r\n\
Content-Disposition: form-data; name=\"input_file\"; filename=\"a.txt\"\r\n\
Content-Type: text/plain\r\n\r\n\
line one\r\n-\r\n--Xy\r\n--X\r\r\n--XyZ  \r\n\
Content-Disposition: form-data; name=\"other\"\r\n\r\n\
second\r\n--XyZ--\r\nepilogue";

    #[test]
    fn parts_come_out_whole_however_the_body_is_cut() {
        for step in [1, 2, 3, 5, 7, 16, 4096] {
            let mut decoder = MultipartDecoder::new(b"XyZ").unwrap();
            let got = parts(&mut decoder, FORM, step);
            assert_eq!(got.len(), 2, "step {step}");
            assert_eq!(got[0].0, "text/plain");
            assert_eq!(
                got[0].1,
                "form-data; name=\"input_file\"; filename=\"a.txt\""
            );
            assert_eq!(
                got[0].2, b"line one\r\n-\r\n--Xy\r\n--X\r",
                "partial delimiters are data: step {step}"
            );
            assert_eq!(got[1].0, "");
            assert_eq!(got[1].2, b"second");
        }
    }

    #[test]
    fn the_boundary_comes_from_the_content_type() {
        // None: not multipart at all.
        type Decoder = Option<Result<(), MultipartError>>;
        let cases: [(&[u8], Decoder); 6] = [
            (b"multipart/form-data; boundary=abc", Some(Ok(()))),
            (
                b"Multipart/Form-Data ; charset=x; BOUNDARY=\"a b'c\"",
                Some(Ok(())),
            ),
            (
                b"multipart/form-data",
                Some(Err(MultipartError::NoBoundary)),
            ),
            (
                b"multipart/form-data; boundary=",
                Some(Err(MultipartError::NoBoundary)),
            ),
            (
                b"multipart/form-data; boundary=a\rb",
                Some(Err(MultipartError::NoBoundary)),
            ),
            (b"text/plain; boundary=abc", None),
        ];
        for (content_type, expected) in cases {
            let got = MultipartDecoder::for_content_type(content_type).map(|r| r.map(|_| ()));
            assert_eq!(got, expected, "{:?}", String::from_utf8_lossy(content_type));
        }
        let long = [b'a'; 71];
        assert_eq!(
            MultipartDecoder::new(&long).err(),
            Some(MultipartError::NoBoundary)
        );
    }

    #[test]
    fn a_body_opening_with_its_delimiter_and_an_empty_head() {
        let mut decoder = MultipartDecoder::new(b"b").unwrap();
        let got = parts(&mut decoder, b"--b\r\n\r\nraw\r\n--b--", 1);
        assert_eq!(got, [(String::new(), String::new(), b"raw".to_vec())]);
    }

    #[test]
    fn malformed_bodies_are_errors() {
        let run = |body: &[u8]| -> Result<(), MultipartError> {
            let mut decoder = MultipartDecoder::new(b"b")?;
            let mut at = 0;
            while at < body.len() {
                at += decoder.decode(&body[at..])?.0;
            }
            decoder.finish()
        };
        assert_eq!(run(b"--b\r\n\r\nno end"), Err(MultipartError::Unterminated));
        assert_eq!(run(b"only preamble"), Err(MultipartError::Unterminated));
        assert_eq!(run(b"--bX\r\n"), Err(MultipartError::BadDelimiter));
        assert_eq!(
            run(b"--b\r\nnot a field\r\n\r\n"),
            Err(MultipartError::BadPartHead)
        );
        let mut big = b"--b\r\nX-Long: ".to_vec();
        big.resize(MAX_PART_HEAD + 100, b'x');
        assert_eq!(run(&big), Err(MultipartError::PartHeadTooLarge));
    }
}
