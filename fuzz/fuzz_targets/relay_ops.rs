//! The sans-IO relay core driven by a sequence of operations, checked against a
//! model of who is parked where and of what each channel holds.
//!
//! The input is read as a byte stream: four bytes of settings (idle expiry,
//! mcast retention, start time; two bytes of hashing seed, whose two lowest
//! bits also pick the inbox TTL; mcast total, cap on remembered channels
//! `max_channels` (0, 1, 2, ... up to large), mcast message limit), then
//! operations (one byte picks the operation, the following bytes its
//! parameters). Single operations use three channel ids per method; a bulk
//! operation claims or publishes on hundreds of further ids at once (to fill the
//! cap and to have more channels due at once than one `handle_timeout` call
//! handles). Operation bytes below 240 pick the link, mcast, sync, proxy, bulk
//! and clock operations (the byte modulo 20); 240 and above the inbox ones (the
//! inbox came later: inputs written before it mean what they meant, apart from
//! their operation bytes of 240 and above).
//!
//! The harness only makes calls the server could make: waiter ids are never
//! reused; an mcast upload is published only when `mcast_has_room` agreed and
//! its declared length is within the message limit (a fixed setting), takes no
//! bytes past its declared length, is aborted at once when an append fails, is
//! completed only with its whole declared body, and ends once; `proxy_delivered`
//! is reported once, for a dispatched job; an inbox message a reader got is
//! held (as while the server sends it) until an operation lets it go; after
//! `drain_waiters` (shutdown) nothing arrives any more. Leaves may name a waiter that is no longer parked,
//! or a channel it never waited on: the core reports whether it was waiting.
//!
//! The rules checked after every step:
//! - a channel exists exactly while it holds something: a waiter (link queue,
//!   mcast reader, sync waiter, proxy `SERVE` or job in any state), an upload in
//!   progress, a write-secret claim or mcast messages: `channel_count()` and
//!   `channels_by_method()` equal the model's; so do `waiter_count()` and
//!   `waiters_by_method()`;
//! - channels holding a claim or messages are remembered:
//!   `remembered_channels()` equals the model's and never exceeds
//!   `max_channels`; a request that would remember one more channel (a producer
//!   or `SERVE` claiming with a secret, a first mcast message) at the cap is
//!   refused with `NoRoom`, and `refused_no_room()` counts exactly those;
//! - every returned counterpart is exactly the one the model expects (first
//!   come first served), so a waiter that left or was already paired is never
//!   returned; leaving returns whether the waiter was still parked; write
//!   secrets (hashed by the core, compared in clear here) are honoured until the
//!   channel expired, and a claim is never dropped early;
//! - mcast accounting: a message costs its body, its metadata (method, query,
//!   content type) and `MESSAGE_OVERHEAD`; `mcast_bytes()` (every message) and
//!   `mcast_held_bytes()` (complete retained ones) equal the model's sums;
//!   `Full`, `TooLarge`, retention and `mcast_has_room` follow from those;
//! - inbox: an entry lives for the TTL from its last `POST` (an acknowledgement
//!   does not extend it) and is a remembered channel while it is in memory;
//!   a `POST` on an id without an entry at the cap is refused with `NoRoom`
//!   (the cap counted before the call, an entry whose TTL is over but that is
//!   still in memory included), one presenting a secret claims the id until
//!   the entry goes, one with another or no secret then is `WrongSecret`, and
//!   `inbox_check` answers the same without claiming; a `POST` replaces the
//!   message and the acknowledgement, gives the message to every waiting
//!   reader and drops every awaiter (both in arrival order); `GET` gives the
//!   stored message (the very same record, not consumed) or waits, `DELETE`
//!   drops the message and wakes the awaiters, `/ack` and `/await` answer from
//!   the entry; at most `MAX_INBOX_WAITERS` readers and as many awaiters wait
//!   per id (`Busy` beyond); `inbox_bytes()` is the cost of the messages the
//!   model says are alive (stored, or held by a reader), and each message's
//!   record is gone exactly when its last holder let go;
//! - expiry: while a remembered channel is idle (no waiter, no upload),
//!   `poll_timeout()` is due no later than its deadline (last activity plus the
//!   idle expiry; an inbox entry's write plus the TTL), and it is `None` when
//!   nothing is remembered, or at worst not after `now` (an inbox entry
//!   forgotten by the operation that found its TTL over may leave its expiry
//!   entry behind: the next `handle_timeout` drops it). On a clock step
//!   the harness calls `handle_timeout(now)` once, then again while
//!   `poll_timeout()` is not after `now`: no more calls than it takes to look at
//!   each remembered channel once at 256 a call, each forgetting at most 256 and
//!   returning how many it forgot. Afterwards every remembered idle channel past
//!   its deadline is gone, every other channel is still there, and
//!   `poll_timeout()` is after `now`. Where the rules leave open whether an
//!   operation counts as activity (a refused or failed one, a drain), the clock
//!   skips the ambiguous window.
//!
//! At the end everyone leaves, every upload ends, readers finish sending, time
//! passes beyond the idle expiry and the inbox TTL, and nothing may remain.
//!
//! Here: the input's decoding and the run. In `relay_ops/`: the model
//! (`model.rs`), the operations (`ops.rs`, the inbox ones in `inbox.rs`),
//! clock steps and the wind-down (`clock.rs`), the rules (`check.rs`).
#![no_main]

#[path = "relay_ops/check.rs"]
mod check;
#[path = "relay_ops/clock.rs"]
mod clock;
#[path = "relay_ops/inbox.rs"]
mod inbox;
#[path = "relay_ops/model.rs"]
mod model;
#[path = "relay_ops/ops.rs"]
mod ops;

use std::borrow::Cow;

use httprelay::relay::{
    Millis, Relay, Role, Settings, INBOX_MESSAGE_OVERHEAD, MAX_INBOX_WAITERS, MESSAGE_OVERHEAD,
};
use libfuzzer_sys::fuzz_target;
use model::{Channels, InboxWait, Model};

const IDS: [&[u8]; 3] = [b"a", b"b", b""];
const SECRETS: [&[u8]; 3] = [b"", b"s1", b"s2"];
const EXPIRIES: [Millis; 4] = [100, 1_000, 60_000, 20 * 60 * 1000];
const RETAINS: [usize; 4] = [0, 300, 700, 11_000_000];
const TOTALS: [usize; 8] = [0, 256, 300, 600, 1_000, 2_000, 5_000, 64 * 1024 * 1024];
const MAX_CHANNELS: [usize; 8] = [0, 1, 2, 3, 8, 257, 400, 32 * 1024];
const MAX_LENS: [usize; 4] = [0, 10, 40, usize::MAX];
const STEPS: [Millis; 8] = [0, 1, 7, 60, 999, 5_000, 61_000, 25 * 60 * 1000];
const BULK_COUNTS: [usize; 4] = [3, 40, 300, 520];
const INBOX_TTLS: [Millis; 4] = [100, 1_000, 60_000, 5 * 60 * 1000];
/// The first operation byte of the inbox operations.
const INBOX_OPS: u8 = 240;

const METHODS: [&[u8]; 2] = [b"POST", b"PUT"];
const LONG_QUERY: &[u8] = b"q=0123456789012345678901234567890123456789012345678901234567";
const QUERIES: [&[u8]; 3] = [b"", b"n=1", LONG_QUERY];
const CONTENT_TYPES: [&[u8]; 2] = [b"", b"text/plain"];

/// What every mcast message costs beyond its body and metadata.
const OVERHEAD: usize = 256;
const _: () = assert!(MESSAGE_OVERHEAD == OVERHEAD);
/// What every inbox message costs beyond its body and type.
const INBOX_OVERHEAD: usize = 128;
const _: () = assert!(INBOX_MESSAGE_OVERHEAD == INBOX_OVERHEAD);
/// Most channels one `handle_timeout` call forgets.
const EXPIRE_BATCH: usize = 256;

/// The id of channel `ch`: the first three are `IDS`, bulk ones are generated.
fn id(ch: usize) -> Cow<'static, [u8]> {
    match IDS.get(ch) {
        Some(id) => Cow::Borrowed(id),
        None => Cow::Owned(format!("bulk{ch}").into_bytes()),
    }
}

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn pick<T: Copy>(&mut self, from: &[T]) -> Option<T> {
        Some(from[usize::from(self.byte()?) % from.len()])
    }
}

fn setup(input: &mut Input) -> Option<Model> {
    let settings_byte = input.byte()?;
    let seed = u64::from(input.byte()?) << 8 | u64::from(input.byte()?);
    let limits = input.byte()?;
    let expiry = EXPIRIES[usize::from(settings_byte & 3)];
    let retain = RETAINS[usize::from(settings_byte >> 2 & 3)];
    let total = TOTALS[usize::from(limits & 7)];
    let max_channels = MAX_CHANNELS[usize::from(limits >> 3 & 7)];
    let max_len = MAX_LENS[usize::from(limits >> 6)];
    let inbox_ttl = INBOX_TTLS[(seed & 3) as usize];
    Some(Model {
        relay: Relay::new(Settings {
            idle_expiry: expiry,
            mcast_retain: retain,
            mcast_total: total,
            max_channels,
            // The operations here write without a client address, so no
            // share applies (the shares have their unit test in the core).
            max_channels_per_client: usize::MAX,
            inbox_ttl,
            seed: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        }),
        expiry,
        retain,
        total,
        max_channels,
        max_len,
        now: u64::from(settings_byte >> 4) * 1_000,
        next_waiter: 0,
        links: Channels::default(),
        mcasts: Channels::default(),
        syncs: Channels::default(),
        proxies: Channels::default(),
        inboxes: Channels::default(),
        inbox_ttl,
        inbox_waiters: Vec::new(),
        inbox_held: Vec::new(),
        inbox_messages: Vec::new(),
        inbox_serial: 0,
        remembered: 0,
        mcast_bytes: 0,
        refused_no_room: 0,
        shut_down: false,
        waiters: Vec::new(),
        jobs: Vec::new(),
        uploading: Vec::new(),
    })
}

/// Runs operations until the input runs out (`None` mid-operation).
fn run(m: &mut Model, input: &mut Input) -> Option<()> {
    for _ in 0..2_000 {
        let op = input.byte()?;
        // After a shutdown nothing arrives any more; what is under way ends.
        let arrivals = !m.shut_down;
        if op >= INBOX_OPS {
            run_inbox(m, op - INBOX_OPS, input)?;
            m.settle();
            m.check();
            continue;
        }
        match op % 20 {
            0 | 1 => {
                let ch = input.pick(&[0, 1, 2])?;
                let role = input.pick(&[Role::Producer, Role::Consumer])?;
                let secret = input.pick(&SECRETS)?;
                if arrivals {
                    m.link_arrive(ch, role, secret);
                }
            }
            2 | 3 => {
                let pick = usize::from(input.byte()?);
                m.leave(pick, op >= 128);
            }
            4 => {
                let ch = input.pick(&[0, 1, 2])?;
                let secret = input.pick(&SECRETS)?;
                let length = input.byte()?;
                let meta = input.byte()?;
                let declared = (length < 128).then_some(u64::from(length % 48));
                if arrivals {
                    m.mcast_publish(ch, secret, declared, meta);
                }
            }
            5 => {
                let pick = usize::from(input.byte()?);
                let len = usize::from(input.byte()? % 16);
                let bytes: Vec<u8> = (0..len).map(|i| i as u8 ^ op).collect();
                if !m.uploading.is_empty() {
                    m.mcast_append(pick % m.uploading.len(), &bytes);
                }
            }
            6 => {
                let pick = usize::from(input.byte()?);
                if !m.uploading.is_empty() {
                    m.mcast_finish(pick % m.uploading.len(), op < 128);
                }
            }
            7 => {
                let ch = input.pick(&[0, 1, 2])?;
                let r = input.byte()?;
                let requested = (r < 200).then_some(u64::from(r % 8));
                if arrivals {
                    m.mcast_get(ch, requested);
                }
            }
            8 | 9 => {
                let ch = input.pick(&[0, 1, 2])?;
                if arrivals {
                    m.sync_arrive(ch);
                }
            }
            10 => {
                let ch = input.pick(&[0, 1, 2])?;
                if arrivals {
                    m.proxy_request(ch);
                }
            }
            11 => {
                let ch = input.pick(&[0, 1, 2])?;
                let secret = input.pick(&SECRETS)?;
                if arrivals {
                    m.proxy_serve(ch, secret);
                }
            }
            12 => {
                let pick = usize::from(input.byte()?);
                m.proxy_delivered(pick);
            }
            13 => {
                let pick = usize::from(input.byte()?);
                let secret = input.pick(&SECRETS)?;
                if arrivals {
                    m.proxy_result(pick, secret, op >= 128);
                }
            }
            14 => {
                let pick = usize::from(input.byte()?);
                m.proxy_client_leave(pick);
            }
            15 | 16 => {
                let step = input.pick(&STEPS)?;
                let jitter = Millis::from(input.byte()?);
                m.advance(step + jitter);
            }
            17 if op >= 128 => {
                if arrivals {
                    m.drain();
                }
            }
            17 => {
                let what = input.byte()?;
                let secret = input.pick(&SECRETS)?;
                let count = BULK_COUNTS[usize::from(what >> 2 & 3)];
                // Four overlapping ranges of ids past the first three.
                let first = 3 + usize::from(what >> 4 & 3) * 256;
                if arrivals {
                    m.bulk(what & 3, first, count, secret);
                }
            }
            _ => {
                // As the server does: sleep until poll_timeout (or `step`), then
                // handle the timeout.
                let step = input.pick(&STEPS)?;
                let target = m.now + step;
                match m.relay.poll_timeout() {
                    Some(due) if due <= target => m.advance(due.saturating_sub(m.now)),
                    _ => m.advance(step),
                }
            }
        }
        m.settle();
        m.check();
    }
    Some(())
}

/// One inbox operation, `code` 0 to 15.
fn run_inbox(m: &mut Model, code: u8, input: &mut Input) -> Option<()> {
    let arrivals = !m.shut_down;
    match code {
        0..=2 | 15 => {
            let ch = input.pick(&[0, 1, 2])?;
            let secret = input.pick(&SECRETS)?;
            let shape = input.byte()?;
            let (len, typed, checked) = (usize::from(shape % 24), shape & 32 != 0, shape >= 128);
            if arrivals {
                m.inbox_post(ch, secret, len, typed, checked);
            }
        }
        3 | 4 => {
            let b = input.byte()?;
            if arrivals {
                m.inbox_get(usize::from(b % 3), b >= 128);
            }
        }
        5 => {
            let ch = input.pick(&[0, 1, 2])?;
            if arrivals {
                m.inbox_ack(ch);
            }
        }
        6 => {
            let ch = input.pick(&[0, 1, 2])?;
            if arrivals {
                m.inbox_acked(ch);
            }
        }
        7 | 8 => {
            let ch = input.pick(&[0, 1, 2])?;
            if arrivals {
                m.inbox_await(ch);
            }
        }
        9 => {
            let pick = input.byte()?;
            m.inbox_leave(usize::from(pick & 127), pick >= 128);
        }
        10 => {
            let pick = usize::from(input.byte()?);
            m.inbox_sent(pick);
        }
        11 => {
            let ch = input.pick(&[0, 1, 2])?;
            let secret = input.pick(&SECRETS)?;
            if arrivals {
                let _ = m.inbox_check(ch, secret);
            }
        }
        12 | 13 => {
            // To just before, at or after the end of an entry's TTL (or a TTL
            // from now without an entry), or half a TTL on (to write or
            // acknowledge halfway through).
            let ch = input.pick(&[0, 1, 2])?;
            let d = input.byte()?;
            let end = m.inbox_written(ch).unwrap_or(m.now) + m.inbox_ttl;
            let target = match d & 7 {
                0 => end - 1,
                1 => end,
                2 => end + 1,
                3 | 4 => m.now + m.inbox_ttl / 2,
                _ => end + Millis::from(d),
            };
            m.advance(target.saturating_sub(m.now));
        }
        _ => {
            let ch = input.pick(&[0, 1, 2])?;
            let n = input.byte()?;
            let count = 1 + usize::from(n & 15) % (MAX_INBOX_WAITERS + 2);
            let wait = if n >= 128 {
                InboxWait::Awaiter
            } else {
                InboxWait::Reader
            };
            if arrivals {
                m.inbox_crowd(ch, count, wait);
            }
        }
    }
    Some(())
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let Some(mut model) = setup(&mut input) else {
        return;
    };
    // Running out of input mid-operation just ends the run.
    let _ = run(&mut model, &mut input);
    model.settle();
    model.check();
    model.wind_down();
});
