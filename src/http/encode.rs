//! Response body framing. [`response_framing`] chooses it once per response,
//! from what the relay knows of the body, the request's method and version,
//! the response status and the request's persistence: an [`Encoder`]
//! (Content-Length, chunked, until close, or no body), the framing field of
//! the head, and whether the connection stays open. The encoder then frames
//! body pieces into output slices and writes the end of the body.
//! Allocation-free: it writes into the slices it is given.

use super::head::Framing;
use super::response::{chunk_header, chunk_header_fixed, HeadWriter, FIXED_CHUNK_HEADER};

/// Output room a chunked piece needs besides its data: the chunk-size line (at
/// most 16 hex digits and CRLF) and the CRLF after the data.
pub const CHUNK_OVERHEAD: usize = 20;
const _: () = assert!(u64::BITS as usize / 4 + 4 <= CHUNK_OVERHEAD);

/// The last chunk and the empty trailer section that end a chunked body.
const CHUNKED_END: &[u8] = b"0\r\n\r\n";

/// What the relay knows of a response body when it writes the head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodySize {
    /// Exactly this many bytes (0: an empty body).
    Known(u64),
    /// Known only when the body ends (a chunked upload, an mcast message of
    /// undeclared length still uploading).
    Unknown,
}

impl From<Framing> for BodySize {
    /// The size of a body that is a request body passed on.
    fn from(framing: Framing) -> BodySize {
        match framing {
            Framing::Empty => BodySize::Known(0),
            Framing::Length(n) => BodySize::Known(n),
            Framing::Chunked => BodySize::Unknown,
        }
    }
}

/// How a response body is delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// `Content-Length: n`: the bytes go out as they are.
    Length(u64),
    /// `Transfer-Encoding: chunked`: each piece behind its chunk-size line, a
    /// last chunk at the end.
    Chunked,
    /// No framing field: the bytes go out as they are and the connection's
    /// close ends the body.
    UntilClose,
    /// The response has no body (HEAD, 1xx, 204, 304): body bytes are dropped.
    None,
}

/// The framing field of a response head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FramingHeader {
    ContentLength(u64),
    Chunked,
    None,
}

impl FramingHeader {
    pub fn write(self, w: &mut HeadWriter) {
        match self {
            FramingHeader::ContentLength(n) => {
                w.header_number("Content-Length", n);
            }
            FramingHeader::Chunked => {
                w.header("Transfer-Encoding", b"chunked");
            }
            FramingHeader::None => {}
        }
    }
}

/// What a response's framing is chosen from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exchange {
    pub body: BodySize,
    /// The request's method is `HEAD`.
    pub head_request: bool,
    pub status: u16,
    /// The request's HTTP minor version (0 for HTTP/1.0).
    pub minor_version: u8,
    /// The request allows the connection to carry another request.
    pub keep_alive: bool,
}

/// The framing of one response, decided before its head is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseFraming {
    pub framing: BodyFraming,
    /// The encoder for `framing`, to keep while the body is sent.
    pub encoder: Encoder,
    /// The field to write into the head.
    pub header: FramingHeader,
    /// Whether the connection may carry another request after this response:
    /// the request's wish, unless the body is delimited by the close.
    pub keep_alive: bool,
}

/// Chooses the framing of a response. A pure function of the exchange.
pub fn response_framing(x: &Exchange) -> ResponseFraming {
    use BodySize::{Known, Unknown};
    let (framing, header) = match (x.status, x.head_request, x.body) {
        // 1xx and 204 have no body and no Content-Length (RFC 9110 §8.6); a
        // 304 has no body either (§15.4.5), and its length field is left out.
        (100..=199 | 204 | 304, _, _) => (BodyFraming::None, FramingHeader::None),
        // HEAD: no body, and the length a GET would get when it is known
        // (RFC 9110 §9.3.2); a length known only from the content is omitted.
        (_, true, Known(n)) => (BodyFraming::None, FramingHeader::ContentLength(n)),
        (_, true, Unknown) => (BodyFraming::None, FramingHeader::None),
        (_, false, Known(n)) => (BodyFraming::Length(n), FramingHeader::ContentLength(n)),
        // An HTTP/1.0 client cannot take chunked coding (RFC 9112 §6.1): the
        // body ends at close.
        (_, false, Unknown) if x.minor_version == 0 => {
            (BodyFraming::UntilClose, FramingHeader::None)
        }
        (_, false, Unknown) => (BodyFraming::Chunked, FramingHeader::Chunked),
    };
    ResponseFraming {
        framing,
        encoder: Encoder::new(framing),
        header,
        keep_alive: x.keep_alive && framing != BodyFraming::UntilClose,
    }
}

/// How an [`Encoder`] codes body pieces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Coding {
    /// As they are (Content-Length, until close).
    AsIs,
    Chunked,
    /// Not at all: the response has no body.
    Dropped,
}

/// The sending side of one response body: frames pieces of it into output
/// slices and writes its end, once. It keeps how pieces are coded, not the
/// length (the body's decoder or source keeps that), so that it adds three
/// bytes to a connection's phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Encoder {
    coding: Coding,
    /// The end of the body (the last chunk, if any) is written.
    ended: bool,
    /// Where a chunk whose data goes out past the encoder (spliced) stands.
    spliced: Spliced,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Spliced {
    None,
    /// Its size line is written and its data is going out: nothing else may
    /// be framed until it is closed.
    Open,
    /// Its data is out; the CRLF after it goes in front of whatever is
    /// framed next, so that both leave in one send.
    CrlfOwed,
}

impl Encoder {
    pub fn new(framing: BodyFraming) -> Encoder {
        let coding = match framing {
            BodyFraming::Length(_) | BodyFraming::UntilClose => Coding::AsIs,
            BodyFraming::Chunked => Coding::Chunked,
            BodyFraming::None => Coding::Dropped,
        };
        Encoder {
            coding,
            ended: false,
            spliced: Spliced::None,
        }
    }

    /// Opens a chunk of `n` data bytes that will be sent past the encoder
    /// (spliced from the producer's socket): writes its size line into the
    /// start of `out` and returns its length, or 0 when it does not fit.
    /// Chunked bodies only; `n` > 0. [`Encoder::close_chunk`] ends it once
    /// all `n` bytes are out.
    pub fn open_chunk(&mut self, n: u64, out: &mut [u8]) -> usize {
        debug_assert!(self.is_chunked() && !self.chunk_open() && !self.ended && n > 0);
        if out.len() < self.overhead() {
            return 0;
        }
        let owed = self.write_owed(out);
        self.spliced = Spliced::Open;
        owed + chunk_header(n, &mut out[owed..])
    }

    /// A chunk opened by [`Encoder::open_chunk`] is not closed yet.
    pub fn chunk_open(&self) -> bool {
        self.spliced == Spliced::Open
    }

    /// Closes the open chunk once all its data is out. The CRLF after it is
    /// written in front of what is framed next.
    pub fn close_chunk(&mut self) {
        debug_assert!(self.chunk_open());
        self.spliced = Spliced::CrlfOwed;
    }

    /// The CRLF a closed spliced chunk still owes: 2 bytes, or none.
    fn owed(&self) -> usize {
        if self.spliced == Spliced::CrlfOwed {
            2
        } else {
            0
        }
    }

    /// Writes the owed CRLF, if any, at the start of `out`; returns its
    /// length.
    fn write_owed(&mut self, out: &mut [u8]) -> usize {
        let owed = self.owed();
        if owed > 0 {
            out[..2].copy_from_slice(b"\r\n");
            self.spliced = Spliced::None;
        }
        owed
    }

    /// The response has no body: body bytes are dropped, not sent.
    pub fn drops_body(&self) -> bool {
        self.coding == Coding::Dropped
    }

    /// Body bytes go out unchanged (Content-Length or until close), so they
    /// may bypass the encoder (zero-copy relay).
    pub fn sends_as_is(&self) -> bool {
        self.coding == Coding::AsIs
    }

    pub fn is_chunked(&self) -> bool {
        self.coding == Coding::Chunked
    }

    /// Output bytes a piece needs besides its data.
    pub fn overhead(&self) -> usize {
        if self.is_chunked() {
            CHUNK_OVERHEAD + self.owed()
        } else {
            0
        }
    }

    /// Most data bytes of a piece whose framing fits in `spare` output bytes;
    /// unbounded when the body is dropped.
    pub fn room(&self, spare: usize) -> usize {
        if self.drops_body() {
            usize::MAX
        } else {
            spare.saturating_sub(self.overhead())
        }
    }

    /// Frames `data` into the start of `out`; returns the bytes written.
    /// `data.len()` must be at most [`Encoder::room`]`(out.len())`. Writes
    /// nothing for a dropped body, nor for empty data (an empty chunk would end
    /// the body).
    pub fn encode(&mut self, data: &[u8], out: &mut [u8]) -> usize {
        debug_assert!(!self.ended, "body data after its end");
        debug_assert!(!self.chunk_open(), "body data inside a spliced chunk");
        if data.is_empty() {
            return 0;
        }
        match self.coding {
            Coding::Dropped => 0,
            Coding::AsIs => {
                out[..data.len()].copy_from_slice(data);
                data.len()
            }
            Coding::Chunked => {
                let owed = self.write_owed(out);
                let line = owed + chunk_header(data.len() as u64, &mut out[owed..]);
                let end = line + data.len();
                out[line..end].copy_from_slice(data);
                out[end..end + 2].copy_from_slice(b"\r\n");
                end + 2
            }
        }
    }

    /// Writes the end of the body into `out` (the last chunk when chunked,
    /// nothing otherwise); returns the bytes written. When the last chunk does
    /// not fit yet, writes nothing and the body stays unended: call again with
    /// more room. Call only once the whole body was encoded.
    pub fn end(&mut self, out: &mut [u8]) -> usize {
        debug_assert!(!self.chunk_open(), "the body ends inside a spliced chunk");
        if self.ended {
            return 0;
        }
        if !self.is_chunked() {
            self.ended = true;
            return 0;
        }
        if out.len() < self.owed() + CHUNKED_END.len() {
            return 0;
        }
        let owed = self.write_owed(out);
        out[owed..owed + CHUNKED_END.len()].copy_from_slice(CHUNKED_END);
        self.ended = true;
        owed + CHUNKED_END.len()
    }

    /// The end of the body is written: after the output drains, the response
    /// is complete.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Where data read straight into an output slice goes: after room for a
    /// fixed-width chunk-size line when chunked, at the start otherwise.
    pub fn direct_start(&self) -> usize {
        if self.is_chunked() {
            self.owed() + FIXED_CHUNK_HEADER
        } else {
            0
        }
    }

    /// Most data bytes to read straight into `spare` output bytes, leaving
    /// room for the framing written around them by [`Encoder::frame_direct`].
    pub fn direct_room(&self, spare: usize) -> usize {
        if self.is_chunked() {
            spare.saturating_sub(self.owed() + FIXED_CHUNK_HEADER + 2)
        } else {
            spare
        }
    }

    /// Frames `n` data bytes that were read into
    /// `out[direct_start()..direct_start() + n]`: writes the chunk-size line
    /// before them and the CRLF after them when chunked. Returns the bytes of
    /// `out` to commit: nothing when the body is dropped or `n` is 0 (an empty
    /// chunk would end the body).
    pub fn frame_direct(&mut self, n: usize, out: &mut [u8]) -> usize {
        debug_assert!(!self.ended, "body data after its end");
        debug_assert!(!self.chunk_open(), "body data inside a spliced chunk");
        if n == 0 {
            return 0;
        }
        match self.coding {
            Coding::Dropped => 0,
            Coding::AsIs => n,
            Coding::Chunked => {
                let owed = self.write_owed(out);
                let end = owed + FIXED_CHUNK_HEADER + n;
                chunk_header_fixed(n, &mut out[owed..owed + FIXED_CHUNK_HEADER]);
                out[end..end + 2].copy_from_slice(b"\r\n");
                end + 2
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{BodyDecoder, Status};

    #[test]
    fn a_spliced_chunk_is_its_size_line_then_its_data_then_a_crlf_sent_with_what_follows() {
        let mut enc = Encoder::new(BodyFraming::Chunked);
        let mut out = [0u8; 64];
        // What the receiver gets: every piece of output, with the spliced
        // data where it passes by.
        let mut wire = Vec::new();
        assert_eq!(enc.open_chunk(0x10_0000, &mut out[..CHUNK_OVERHEAD - 1]), 0);
        assert!(!enc.chunk_open());
        let n = enc.open_chunk(0x10_0000, &mut out);
        assert_eq!(&out[..n], b"100000\r\n");
        assert!(enc.chunk_open());
        wire.extend_from_slice(&out[..n]);
        wire.extend(std::iter::repeat_n(b's', 0x10_0000));
        enc.close_chunk();
        assert!(!enc.chunk_open());
        // The CRLF goes in front of the next piece, whichever way it is framed.
        let n = enc.encode(b"ab", &mut out);
        assert_eq!(&out[..n], b"\r\n2\r\nab\r\n");
        wire.extend_from_slice(&out[..n]);
        let n = enc.open_chunk(3, &mut out);
        assert_eq!(n, 3);
        wire.extend_from_slice(&out[..n]);
        wire.extend_from_slice(b"uvw");
        enc.close_chunk();
        assert_eq!(enc.direct_start(), 12);
        out[12..15].copy_from_slice(b"xyz");
        let n = enc.frame_direct(3, &mut out);
        assert_eq!(&out[..n], b"\r\n00000003\r\nxyz\r\n");
        wire.extend_from_slice(&out[..n]);
        let n = enc.open_chunk(3, &mut out);
        assert_eq!(n, 3);
        wire.extend_from_slice(&out[..n]);
        wire.extend_from_slice(b"end");
        enc.close_chunk();
        assert_eq!(
            enc.end(&mut out[..6]),
            0,
            "no room for the CRLF and the end"
        );
        let n = enc.end(&mut out);
        assert_eq!(&out[..n], b"\r\n0\r\n\r\n");
        wire.extend_from_slice(&out[..n]);
        // The whole of it decodes to the content, and ends the body.
        let mut dec = BodyDecoder::new(crate::http::Framing::Chunked);
        let mut content = Vec::new();
        let mut at = 0;
        while at < wire.len() {
            let got = dec.decode(&wire[at..], usize::MAX).unwrap();
            content.extend_from_slice(&wire[at..][got.data]);
            at += got.consumed;
        }
        assert!(dec.is_done());
        let mut expected = vec![b's'; 0x10_0000];
        expected.extend_from_slice(b"abuvwxyzend");
        assert!(content == expected, "the decoded content differs");
    }

    const GET: bool = false;
    const HEAD: bool = true;
    const KEEP: bool = true;
    const CLOSE: bool = false;

    #[test]
    fn framing_is_chosen_from_the_exchange() {
        use BodyFraming as F;
        use BodySize::{Known, Unknown};
        use FramingHeader::{Chunked as Te, ContentLength as Cl, None as NoField};
        // Body, method, status, minor version, keep-alive asked; then the
        // framing, the field, keep-alive after.
        let cases = [
            // Bodies of known length: Content-Length, whatever the version.
            (Known(5), GET, 200, 1, KEEP, F::Length(5), Cl(5), KEEP),
            (Known(5), GET, 200, 1, CLOSE, F::Length(5), Cl(5), CLOSE),
            (Known(5), GET, 200, 0, KEEP, F::Length(5), Cl(5), KEEP),
            (Known(5), GET, 200, 0, CLOSE, F::Length(5), Cl(5), CLOSE),
            (Known(5), GET, 404, 1, KEEP, F::Length(5), Cl(5), KEEP),
            // Empty: Content-Length: 0.
            (Known(0), GET, 200, 1, KEEP, F::Length(0), Cl(0), KEEP),
            (Known(0), GET, 200, 0, CLOSE, F::Length(0), Cl(0), CLOSE),
            // Unknown length: chunked for HTTP/1.1 ...
            (Unknown, GET, 200, 1, KEEP, F::Chunked, Te, KEEP),
            (Unknown, GET, 200, 1, CLOSE, F::Chunked, Te, CLOSE),
            (Unknown, GET, 502, 1, KEEP, F::Chunked, Te, KEEP),
            // ... until close for HTTP/1.0, which then cannot stay open.
            (Unknown, GET, 200, 0, KEEP, F::UntilClose, NoField, CLOSE),
            (Unknown, GET, 200, 0, CLOSE, F::UntilClose, NoField, CLOSE),
            // HEAD: no body; the length when known; the connection may stay.
            (Known(5), HEAD, 200, 1, KEEP, F::None, Cl(5), KEEP),
            (Known(0), HEAD, 200, 1, KEEP, F::None, Cl(0), KEEP),
            (Unknown, HEAD, 200, 1, KEEP, F::None, NoField, KEEP),
            (Unknown, HEAD, 200, 0, KEEP, F::None, NoField, KEEP),
            (Known(5), HEAD, 200, 0, CLOSE, F::None, Cl(5), CLOSE),
            // 204 and 304: no body, no length field, for any method and version.
            (Known(5), GET, 204, 1, KEEP, F::None, NoField, KEEP),
            (Unknown, GET, 204, 1, KEEP, F::None, NoField, KEEP),
            (Unknown, GET, 204, 0, KEEP, F::None, NoField, KEEP),
            (Known(5), HEAD, 204, 1, KEEP, F::None, NoField, KEEP),
            (Known(5), GET, 304, 1, KEEP, F::None, NoField, KEEP),
            (Unknown, GET, 304, 0, KEEP, F::None, NoField, KEEP),
            (Unknown, HEAD, 304, 1, CLOSE, F::None, NoField, CLOSE),
            // 1xx: no body either.
            (Known(5), GET, 100, 1, KEEP, F::None, NoField, KEEP),
            (Unknown, GET, 199, 0, KEEP, F::None, NoField, KEEP),
            // Neighbours of the bodiless statuses have bodies.
            (Known(5), GET, 205, 1, KEEP, F::Length(5), Cl(5), KEEP),
            (Unknown, GET, 303, 1, KEEP, F::Chunked, Te, KEEP),
        ];
        for (body, head_request, status, minor_version, keep_alive, framing, header, after) in cases
        {
            let x = Exchange {
                body,
                head_request,
                status,
                minor_version,
                keep_alive,
            };
            let chosen = response_framing(&x);
            assert_eq!(
                (chosen.framing, chosen.header, chosen.keep_alive),
                (framing, header, after),
                "{x:?}"
            );
            assert_eq!(chosen.encoder, Encoder::new(framing));
            assert!(!chosen.encoder.is_ended());
        }
    }

    #[test]
    fn request_framing_gives_the_body_size() {
        assert_eq!(BodySize::from(Framing::Empty), BodySize::Known(0));
        assert_eq!(BodySize::from(Framing::Length(7)), BodySize::Known(7));
        assert_eq!(BodySize::from(Framing::Chunked), BodySize::Unknown);
    }

    #[test]
    fn framing_headers_are_written() {
        for (header, text) in [
            (FramingHeader::ContentLength(42), "Content-Length: 42\r\n"),
            (FramingHeader::Chunked, "Transfer-Encoding: chunked\r\n"),
            (FramingHeader::None, ""),
        ] {
            let mut buf = [0u8; 128];
            let mut w = HeadWriter::new(&mut buf, Status(200));
            header.write(&mut w);
            let n = w.finish().unwrap();
            let expected = format!("HTTP/1.1 200 OK\r\n{text}\r\n");
            assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), expected);
        }
    }

    /// Encodes `pieces` then the end into one output; returns the wire bytes.
    fn encode_all(framing: BodyFraming, pieces: &[&[u8]]) -> Vec<u8> {
        let mut enc = Encoder::new(framing);
        let mut out = [0u8; 256];
        let mut wire = Vec::new();
        for piece in pieces {
            assert!(piece.len() <= enc.room(out.len()));
            let n = enc.encode(piece, &mut out);
            wire.extend_from_slice(&out[..n]);
        }
        let n = enc.end(&mut out);
        assert!(enc.is_ended());
        wire.extend_from_slice(&out[..n]);
        wire
    }

    #[test]
    fn pieces_are_framed() {
        let pieces: &[&[u8]] = &[b"hello", b"", &[b'x'; 26]];
        let xs = "x".repeat(26);
        for (framing, expected) in [
            (
                BodyFraming::Chunked,
                format!("5\r\nhello\r\n1a\r\n{xs}\r\n0\r\n\r\n"),
            ),
            (BodyFraming::Length(31), format!("hello{xs}")),
            (BodyFraming::UntilClose, format!("hello{xs}")),
            (BodyFraming::None, String::new()),
        ] {
            let wire = encode_all(framing, pieces);
            assert_eq!(String::from_utf8(wire).unwrap(), expected, "{framing:?}");
        }
        assert_eq!(encode_all(BodyFraming::Chunked, &[]), b"0\r\n\r\n");
        assert_eq!(encode_all(BodyFraming::Length(0), &[]), b"");
    }

    #[test]
    fn room_keeps_space_for_the_framing() {
        let chunked = Encoder::new(BodyFraming::Chunked);
        assert_eq!(chunked.overhead(), CHUNK_OVERHEAD);
        assert_eq!(chunked.room(100), 80);
        assert_eq!(chunked.room(CHUNK_OVERHEAD), 0);
        assert_eq!(chunked.room(3), 0);
        for framing in [BodyFraming::Length(9), BodyFraming::UntilClose] {
            let raw = Encoder::new(framing);
            assert_eq!((raw.overhead(), raw.room(100)), (0, 100));
            assert!(raw.sends_as_is() && !raw.is_chunked() && !raw.drops_body());
        }
        let dropped = Encoder::new(BodyFraming::None);
        assert_eq!(dropped.room(0), usize::MAX, "dropped bytes need no room");
        assert!(dropped.drops_body() && !dropped.sends_as_is());
        assert!(!chunked.sends_as_is() && !chunked.drops_body());
    }

    #[test]
    fn a_full_chunk_fits_its_room() {
        // The longest chunk-size line (16 hex digits) fits the overhead too.
        let mut out = vec![0u8; 64 * 1024];
        let mut enc = Encoder::new(BodyFraming::Chunked);
        let data = vec![b'a'; enc.room(out.len())];
        let n = enc.encode(&data, &mut out);
        assert_eq!(n, out.len() - CHUNK_OVERHEAD + "ffec\r\n\r\n".len());
        assert_eq!(&out[..6], b"ffec\r\n");
    }

    #[test]
    fn the_end_waits_for_room_and_is_written_once() {
        let mut enc = Encoder::new(BodyFraming::Chunked);
        let mut small = [0u8; 4];
        assert_eq!(enc.end(&mut small), 0);
        assert!(!enc.is_ended(), "no room for the last chunk yet");
        let mut out = [0u8; 5];
        assert_eq!(enc.end(&mut out), 5);
        assert_eq!(&out, b"0\r\n\r\n");
        assert!(enc.is_ended());
        assert_eq!(enc.end(&mut out), 0, "written once");
        for framing in [
            BodyFraming::Length(3),
            BodyFraming::UntilClose,
            BodyFraming::None,
        ] {
            let mut enc = Encoder::new(framing);
            assert_eq!(enc.end(&mut []), 0);
            assert!(enc.is_ended(), "{framing:?}: nothing to write");
        }
    }

    #[test]
    fn direct_reads_are_framed_around_the_data() {
        let mut out = [b'?'; 32];
        let mut enc = Encoder::new(BodyFraming::Chunked);
        let start = enc.direct_start();
        assert_eq!((start, enc.direct_room(32)), (10, 20));
        assert_eq!(enc.direct_room(11), 0);
        out[start..start + 3].copy_from_slice(b"abc");
        let n = enc.frame_direct(3, &mut out);
        assert_eq!(&out[..n], b"00000003\r\nabc\r\n");
        assert_eq!(
            enc.frame_direct(0, &mut out),
            0,
            "an empty chunk would end the body"
        );

        for framing in [BodyFraming::Length(3), BodyFraming::UntilClose] {
            let mut enc = Encoder::new(framing);
            assert_eq!((enc.direct_start(), enc.direct_room(32)), (0, 32));
            let mut out = *b"abc?";
            assert_eq!(enc.frame_direct(3, &mut out), 3);
            assert_eq!(&out, b"abc?");
        }
        let mut dropped = Encoder::new(BodyFraming::None);
        assert_eq!(dropped.frame_direct(3, &mut out), 0, "read in and dropped");
    }

    #[test]
    fn chunked_output_decodes_to_the_pieces() {
        let mut enc = Encoder::new(BodyFraming::Chunked);
        let mut out = [0u8; 64];
        let mut wire = Vec::new();
        let mut sent = Vec::new();
        for (i, len) in [1usize, 15, 16, 17, 44].into_iter().enumerate() {
            let data: Vec<u8> = (0..len).map(|j| (i * 31 + j) as u8).collect();
            let n = enc.encode(&data, &mut out);
            wire.extend_from_slice(&out[..n]);
            sent.extend_from_slice(&data);
            // Every other piece as a direct read.
            let start = enc.direct_start();
            out[start..start + len].copy_from_slice(&data);
            let n = enc.frame_direct(len, &mut out);
            wire.extend_from_slice(&out[..n]);
            sent.extend_from_slice(&data);
        }
        let n = enc.end(&mut out);
        wire.extend_from_slice(&out[..n]);
        let mut dec = BodyDecoder::new(Framing::Chunked);
        let mut got = Vec::new();
        let mut at = 0;
        while !dec.is_done() {
            let d = dec.decode(&wire[at..], usize::MAX).unwrap();
            got.extend_from_slice(&wire[at..][d.data]);
            at += d.consumed;
        }
        assert_eq!((got, at), (sent, wire.len()));
    }
}
