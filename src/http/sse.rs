//! Server-Sent Events framing (the `text/event-stream` format browsers read
//! with `EventSource`), written incrementally into output slices so that a
//! large message streams through a fixed buffer.
//!
//! A message whose body is UTF-8 without CR goes as it is: one `data:` line
//! per line of the body, so `event.data` is the body exactly. Any other body
//! (binary, or with CR, which the format would turn into LF) goes as an
//! `event: base64` whose data is the body in standard base64, so nothing is
//! lost; a page decodes it with `atob`.

/// A comment line that keeps proxies from closing an idle stream.
pub const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// How a message's body goes into its event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventData {
    /// UTF-8 without CR: `data:` lines as they are.
    Text,
    /// Anything else: base64 on one `data:` line, under `event: base64`.
    Base64,
}

impl EventData {
    /// The form `body` needs.
    pub fn for_body(body: &[u8]) -> EventData {
        if !body.contains(&b'\r') && std::str::from_utf8(body).is_ok() {
            EventData::Text
        } else {
            EventData::Base64
        }
    }
}

/// Writes the head of an event (its id, its type, the first `data:` prefix)
/// into `out`; returns the length, or `None` when it does not fit.
pub fn event_start(id: u64, data: EventData, out: &mut [u8]) -> Option<usize> {
    let mut w = Writer { out, len: 0 };
    w.put(b"id: ")?;
    let mut digits = [0u8; 20];
    w.put(super::format_decimal(id, &mut digits))?;
    w.put(b"\n")?;
    if data == EventData::Base64 {
        w.put(b"event: base64\n")?;
    }
    w.put(b"data: ")?;
    Some(w.len)
}

/// Ends an event: the data's last line and the blank line.
pub const EVENT_END: &[u8] = b"\n\n";

/// An event that tells a reader it missed messages `first..=last` (they left
/// the retained history before it could read them).
pub fn skipped_event(first: u64, last: u64, out: &mut [u8]) -> Option<usize> {
    let mut w = Writer { out, len: 0 };
    let mut digits = [0u8; 20];
    w.put(b"event: skipped\ndata: ")?;
    w.put(super::format_decimal(first, &mut digits))?;
    w.put(b" ")?;
    w.put(super::format_decimal(last, &mut digits))?;
    w.put(b"\n\n")?;
    Some(w.len)
}

/// Frames a body piece by piece as the data of one event.
#[derive(Clone, Copy, Debug)]
pub struct DataEncoder {
    data: EventData,
    /// Base64: up to two bytes waiting for a third.
    pending: [u8; 2],
    pending_len: u8,
}

impl DataEncoder {
    pub fn new(data: EventData) -> DataEncoder {
        DataEncoder {
            data,
            pending: [0; 2],
            pending_len: 0,
        }
    }

    /// Frames as much of `piece` as fits in `out`: returns (bytes of `piece`
    /// used, bytes written). A line break becomes a new `data:` line.
    pub fn encode(&mut self, piece: &[u8], out: &mut [u8]) -> (usize, usize) {
        match self.data {
            EventData::Text => {
                let (mut used, mut written) = (0, 0);
                for &b in piece {
                    let frame: &[u8] = if b == b'\n' {
                        b"\ndata: "
                    } else {
                        std::slice::from_ref(&b)
                    };
                    if written + frame.len() > out.len() {
                        break;
                    }
                    out[written..written + frame.len()].copy_from_slice(frame);
                    written += frame.len();
                    used += 1;
                }
                (used, written)
            }
            EventData::Base64 => {
                let (mut used, mut written) = (0, 0);
                while used < piece.len() {
                    if self.pending_len < 2 {
                        self.pending[usize::from(self.pending_len)] = piece[used];
                        self.pending_len += 1;
                        used += 1;
                        continue;
                    }
                    if written + 4 > out.len() {
                        break;
                    }
                    let group = [self.pending[0], self.pending[1], piece[used]];
                    base64_group(&group, &mut out[written..written + 4]);
                    written += 4;
                    used += 1;
                    self.pending_len = 0;
                }
                (used, written)
            }
        }
    }

    /// Room the end of the data needs: the last base64 group and [`EVENT_END`].
    pub const END_ROOM: usize = 4 + EVENT_END.len();

    /// Ends the data (the last base64 group, padded) and the event; `out`
    /// must hold [`DataEncoder::END_ROOM`] bytes. Returns the bytes written.
    pub fn finish(&mut self, out: &mut [u8]) -> usize {
        let mut written = 0;
        if self.data == EventData::Base64 && self.pending_len > 0 {
            let n = usize::from(self.pending_len);
            let mut group = [0u8; 3];
            group[..n].copy_from_slice(&self.pending[..n]);
            base64_group(&group, &mut out[..4]);
            for pad in &mut out[n + 1..4] {
                *pad = b'=';
            }
            written = 4;
            self.pending_len = 0;
        }
        out[written..written + EVENT_END.len()].copy_from_slice(EVENT_END);
        written + EVENT_END.len()
    }
}

/// A reader missed messages `first..=last`: they left the retained history
/// before it could read them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub first: u64,
    pub last: u64,
}

/// Writes one message as one event, piece by piece, into output slices of
/// any size: the skipped-messages event first when there is one, then the
/// event head, the body's data, the end. The body is complete (its form,
/// text or base64, depends on all of it) and is passed to each call, so that
/// the writer keeps an offset, never the bytes.
#[derive(Clone, Copy, Debug)]
pub struct EventWriter {
    id: u64,
    stage: Stage,
}

#[derive(Clone, Copy, Debug)]
enum Stage {
    /// The skipped-messages event goes first.
    Skipped(Skipped),
    /// The event head (id, type, first `data:` prefix) is next.
    Head,
    /// The body from `offset` on.
    Data {
        offset: usize,
        encoder: DataEncoder,
    },
    /// The end of the data and the event.
    End(DataEncoder),
    Done,
}

/// Most bytes a head or a skipped event takes (with 20-digit numbers).
const HEAD_ROOM: usize = 64;

impl EventWriter {
    /// The event for message `id`, after telling the reader of `skipped` ones.
    pub fn new(id: u64, skipped: Option<Skipped>) -> EventWriter {
        let stage = match skipped {
            Some(s) => Stage::Skipped(s),
            None => Stage::Head,
        };
        EventWriter { id, stage }
    }

    /// The message this event carries.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The messages the reader is still to be told it missed.
    pub fn skipped(&self) -> Option<Skipped> {
        match self.stage {
            Stage::Skipped(s) => Some(s),
            _ => None,
        }
    }

    /// Nothing of the event is written yet (so it can still be given up for
    /// another without leaving a half-written event).
    pub fn is_unstarted(&self) -> bool {
        matches!(self.stage, Stage::Skipped(_) | Stage::Head)
    }

    pub fn is_done(&self) -> bool {
        matches!(self.stage, Stage::Done)
    }

    /// Writes as much of the event as fits in `out`, reading the message's
    /// whole `body`; returns the bytes written (0 only when `out` is too
    /// small for the next part: at most 64 bytes are needed to go on).
    pub fn write(&mut self, body: &[u8], out: &mut [u8]) -> usize {
        let mut written = 0;
        loop {
            let rest = &mut out[written..];
            match &mut self.stage {
                Stage::Skipped(s) => match skipped_event(s.first, s.last, rest) {
                    Some(n) => {
                        written += n;
                        self.stage = Stage::Head;
                    }
                    None => return written,
                },
                Stage::Head => {
                    let data = EventData::for_body(body);
                    match event_start(self.id, data, rest) {
                        Some(n) => {
                            written += n;
                            self.stage = Stage::Data {
                                offset: 0,
                                encoder: DataEncoder::new(data),
                            };
                        }
                        None => return written,
                    }
                }
                Stage::Data { offset, encoder } => {
                    let piece = body.get(*offset..).unwrap_or_default();
                    let (used, n) = encoder.encode(piece, rest);
                    *offset += used;
                    written += n;
                    if *offset < body.len() {
                        return written;
                    }
                    self.stage = Stage::End(*encoder);
                }
                Stage::End(encoder) => {
                    if rest.len() < DataEncoder::END_ROOM {
                        return written;
                    }
                    written += encoder.finish(rest);
                    self.stage = Stage::Done;
                }
                Stage::Done => return written,
            }
        }
    }
}

const _: () = assert!(HEAD_ROOM >= "event: base64\n".len() + "id: \ndata: ".len() + 20);

/// Three bytes as four characters of standard base64.
pub(crate) fn base64_group(group: &[u8; 3], out: &mut [u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let n = u32::from(group[0]) << 16 | u32::from(group[1]) << 8 | u32::from(group[2]);
    for (i, slot) in out.iter_mut().enumerate().take(4) {
        *slot = ALPHABET[(n >> (18 - 6 * i) & 63) as usize];
    }
}

struct Writer<'a> {
    out: &'a mut [u8],
    len: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) -> Option<()> {
        let end = self
            .len
            .checked_add(bytes.len())
            .filter(|&e| e <= self.out.len())?;
        self.out[self.len..end].copy_from_slice(bytes);
        self.len = end;
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole event for `body` with id `id`, framed through an output of
    /// `room` bytes at a time.
    fn event(id: u64, body: &[u8], room: usize, data: EventData) -> String {
        let mut out = vec![0u8; 64];
        let n = event_start(id, data, &mut out).unwrap();
        let mut text = out[..n].to_vec();
        let mut encoder = DataEncoder::new(data);
        let mut rest = body;
        let mut slot = vec![0u8; room];
        while !rest.is_empty() {
            let (used, written) = encoder.encode(rest, &mut slot);
            assert!(
                used > 0 || written > 0,
                "progress with {room} bytes of room"
            );
            text.extend_from_slice(&slot[..written]);
            rest = &rest[used..];
        }
        let mut end = [0u8; DataEncoder::END_ROOM];
        let n = encoder.finish(&mut end);
        text.extend_from_slice(&end[..n]);
        String::from_utf8(text).unwrap()
    }

    /// What a browser's `EventSource` makes of one event: (type, id, data).
    fn parse(stream: &str) -> (String, String, String) {
        let (mut kind, mut id, mut data) = ("message".to_owned(), String::new(), Vec::new());
        for line in stream.split('\n') {
            if let Some(v) = line.strip_prefix("data: ") {
                data.push(v);
            } else if let Some(v) = line.strip_prefix("id: ") {
                id = v.to_owned();
            } else if let Some(v) = line.strip_prefix("event: ") {
                kind = v.to_owned();
            }
        }
        (kind, id, data.join("\n"))
    }

    #[test]
    fn text_bodies_come_back_as_event_data_exactly_however_small_the_room() {
        for body in [
            "hello",
            "two\nlines",
            "\nstarts and ends\n",
            "",
            "ünïcödé\n\n",
        ] {
            for room in [7, 8, 9, 64] {
                let data = EventData::for_body(body.as_bytes());
                assert_eq!(data, EventData::Text);
                let stream = event(42, body.as_bytes(), room, data);
                assert!(stream.ends_with("\n\n"));
                assert_eq!(
                    parse(&stream),
                    ("message".into(), "42".into(), body.into()),
                    "{room}"
                );
            }
        }
    }

    #[test]
    fn other_bodies_go_as_base64_and_decode_to_the_same_bytes() {
        assert_eq!(EventData::for_body(b"crlf\r\nline"), EventData::Base64);
        assert_eq!(EventData::for_body(b"\xff\xfe binary"), EventData::Base64);
        let bodies: [&[u8]; 7] = [
            b"crlf\r\nline",
            b"\xff\xfe binary \x00",
            b"a",
            b"ab",
            b"abc",
            b"abcd",
            b"",
        ];
        for body in bodies {
            for room in [4, 5, 64] {
                let (kind, id, data) = parse(&event(7, body, room, EventData::Base64));
                assert_eq!((kind.as_str(), id.as_str()), ("base64", "7"));
                assert_eq!(decode_base64(&data), body, "{room}");
            }
        }
    }

    #[test]
    fn a_skipped_event_names_the_missed_range_and_heads_refuse_a_small_room() {
        let mut out = [0u8; 64];
        let n = skipped_event(3, 9, &mut out).unwrap();
        assert_eq!(&out[..n], b"event: skipped\ndata: 3 9\n\n");
        assert_eq!(event_start(1, EventData::Text, &mut out[..5]), None);
    }

    /// The whole stream an [`EventWriter`] writes, `room` bytes at a time.
    fn written(mut writer: EventWriter, body: &[u8], room: usize) -> String {
        let mut text = Vec::new();
        let mut slot = vec![0u8; room];
        while !writer.is_done() {
            let n = writer.write(body, &mut slot);
            assert!(n > 0, "progress with {room} bytes of room");
            text.extend_from_slice(&slot[..n]);
        }
        String::from_utf8(text).unwrap()
    }

    #[test]
    fn an_event_writer_frames_the_whole_event_through_any_room_from_64_bytes() {
        for room in [64, 65, 100, 4096] {
            let text = written(EventWriter::new(5, None), b"one\ntwo", room);
            assert_eq!(text, "id: 5\ndata: one\ndata: two\n\n", "{room}");
            let binary = written(EventWriter::new(6, None), b"\xff\x00", room);
            assert_eq!(binary, "id: 6\nevent: base64\ndata: /wA=\n\n");
            let skipped = Some(Skipped { first: 1, last: 4 });
            let text = written(EventWriter::new(u64::MAX, skipped), b"", room);
            assert_eq!(
                text,
                format!("event: skipped\ndata: 1 4\n\nid: {}\ndata: \n\n", u64::MAX)
            );
        }
    }

    #[test]
    fn an_event_writer_waits_for_room_and_says_what_it_has_started() {
        let mut writer = EventWriter::new(9, Some(Skipped { first: 2, last: 3 }));
        assert!(writer.is_unstarted());
        assert_eq!(writer.skipped(), Some(Skipped { first: 2, last: 3 }));
        assert_eq!(
            writer.write(b"x", &mut [0u8; 4]),
            0,
            "too small for anything"
        );
        let mut out = [0u8; 30];
        let n = writer.write(b"x", &mut out);
        assert_eq!(
            &out[..n],
            b"event: skipped\ndata: 2 3\n\n",
            "the head does not fit"
        );
        assert!(writer.is_unstarted() && writer.skipped().is_none());
        let rest = written(writer, b"x", 64);
        assert_eq!(rest, "id: 9\ndata: x\n\n");
        assert_eq!(writer.id(), 9);
    }

    fn decode_base64(text: &str) -> Vec<u8> {
        let value = |c: u8| match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            _ => 63,
        };
        let mut out = Vec::new();
        for chunk in text.as_bytes().chunks(4) {
            let n = chunk
                .iter()
                .take_while(|&&c| c != b'=')
                .fold(0u32, |n, &c| n << 6 | u32::from(value(c)));
            let pads = chunk.iter().filter(|&&c| c == b'=').count();
            let n = n << (6 * pads);
            let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            out.extend_from_slice(&bytes[..3 - pads]);
        }
        out
    }
}
