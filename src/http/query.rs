//! Query strings: finding a parameter (`wsecret`, `seqid`) and producing the
//! `HttpRelay-Query` value: parameters decoded, `wsecret` and `seqid` removed,
//! keys sorted, re-encoded form-style (as Go's `url.Values.Encode` does, which is
//! what existing httprelay clients see).

use super::head::hex_value;

/// Reusable scratch space for [`QueryFilter::filter`], so that a warm server
/// filters queries without allocating.
#[derive(Default)]
pub struct QueryFilter {
    decoded: Vec<u8>,
    /// (key start, key end, value end) in `decoded`; the value starts at key end.
    pairs: Vec<(usize, usize, usize)>,
}

/// Parameters removed from `HttpRelay-Query` (compared case-insensitively).
const HIDDEN_PARAMS: [&[u8]; 2] = [b"wsecret", b"seqid"];

impl QueryFilter {
    /// Writes the filtered, sorted, re-encoded form of `raw` to `out` (cleared first).
    pub fn filter(&mut self, raw: &[u8], out: &mut Vec<u8>) {
        out.clear();
        self.decoded.clear();
        self.pairs.clear();
        for part in raw.split(|&b| b == b'&') {
            // Go's parser skips empty parts, parts with ';', and bad escapes.
            if part.is_empty() || part.contains(&b';') {
                continue;
            }
            let (key, value) = match part.iter().position(|&b| b == b'=') {
                Some(at) => (&part[..at], &part[at + 1..]),
                None => (part, &b""[..]),
            };
            let start = self.decoded.len();
            let ok = form_decode(key, &mut self.decoded).is_some() && {
                let key_end = self.decoded.len();
                let ok = form_decode(value, &mut self.decoded).is_some();
                let hidden = HIDDEN_PARAMS
                    .iter()
                    .any(|h| self.decoded[start..key_end].eq_ignore_ascii_case(h));
                if ok && !hidden {
                    self.pairs.push((start, key_end, self.decoded.len()));
                }
                ok && !hidden
            };
            if !ok {
                self.decoded.truncate(start);
            }
        }
        let decoded = &self.decoded;
        // Stable: values of one key keep their order, as in url.Values.
        self.pairs
            .sort_by(|a, b| decoded[a.0..a.1].cmp(&decoded[b.0..b.1]));
        for (i, &(start, key_end, end)) in self.pairs.iter().enumerate() {
            if i > 0 {
                out.push(b'&');
            }
            form_encode(&decoded[start..key_end], out);
            out.push(b'=');
            form_encode(&decoded[key_end..end], out);
        }
    }
}

/// The raw value of the first parameter named `name` (any case) in `raw`,
/// percent-decoded into `out`. Returns whether it was present.
pub fn find_param(raw: &[u8], name: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    for part in raw.split(|&b| b == b'&') {
        let (key, value) = match part.iter().position(|&b| b == b'=') {
            Some(at) => (&part[..at], &part[at + 1..]),
            None => (part, &b""[..]),
        };
        if key.eq_ignore_ascii_case(name) {
            if form_decode(value, out).is_some() {
                return true;
            }
            out.clear();
        }
    }
    false
}

fn form_decode(s: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = hex_value(*s.get(i + 1)?)?;
                let lo = hex_value(*s.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Some(())
}

fn form_encode(s: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b),
            b' ' => out.push(b'+'),
            _ => out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filtered(raw: &str) -> String {
        let mut out = Vec::new();
        QueryFilter::default().filter(raw.as_bytes(), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn sorts_keys_and_drops_relay_parameters() {
        assert_eq!(filtered("b=2&a=1&wsecret=zz&SeqId=4"), "a=1&b=2");
        assert_eq!(filtered("WSECRET=x&seqid=1"), "");
        assert_eq!(filtered(""), "");
    }

    #[test]
    fn values_of_one_key_keep_their_order() {
        assert_eq!(filtered("k=2&a=0&k=1"), "a=0&k=2&k=1");
    }

    #[test]
    fn reencodes_like_go() {
        assert_eq!(filtered("name=J%C3%B6rg+M&flag"), "flag=&name=J%C3%B6rg+M");
        assert_eq!(filtered("x=a%2Fb%20c*"), "x=a%2Fb+c%2A");
        assert_eq!(filtered("q=~-._"), "q=~-._");
    }

    #[test]
    fn skips_what_go_skips() {
        assert_eq!(filtered("a=1;b=2&c=3"), "c=3");
        assert_eq!(filtered("bad=%zz&ok=1&&"), "ok=1");
        assert_eq!(filtered("%zz=1&ok=2"), "ok=2");
    }

    #[test]
    fn finds_parameters_case_insensitively() {
        let mut out = Vec::new();
        assert!(find_param(
            b"a=1&WSecret=s%21&wsecret=other",
            b"wsecret",
            &mut out
        ));
        assert_eq!(out, b"s!");
        assert!(!find_param(b"a=1", b"wsecret", &mut out));
        assert!(find_param(b"wsecret", b"wsecret", &mut out));
        assert!(out.is_empty());
    }
}
