//! The mcast record's unit tests.

use crate::relay::*;
use std::rc::Rc;

fn meta(len: Option<u64>) -> ProducerMeta {
    ProducerMeta {
        content_length: len,
        ..ProducerMeta::default()
    }
}

/// Publishes and completes a message with `body`; returns it.
fn write(relay: &mut Relay, id: &[u8], body: &[u8]) -> Rc<Message> {
    let mut woken = Vec::new();
    let m = relay
        .mcast_publish(0, id, b"", meta(Some(body.len() as u64)), &mut woken)
        .unwrap();
    relay.mcast_append(&m, body, usize::MAX).unwrap();
    relay.mcast_complete(0, id, &m);
    m
}

fn got(relay: &mut Relay, id: &[u8], requested: Option<u64>) -> Option<u64> {
    match relay.mcast_get(0, id, requested, WaiterId(99)) {
        McastGet::Message(m) => Some(m.seq),
        McastGet::Parked => {
            relay.mcast_leave(0, id, WaiterId(99));
            None
        }
    }
}

#[test]
fn sequence_numbers_start_at_zero_per_channel() {
    let mut relay = Relay::new(Settings::default());
    assert_eq!(write(&mut relay, b"a", b"x").seq, 0);
    assert_eq!(write(&mut relay, b"a", b"y").seq, 1);
    assert_eq!(write(&mut relay, b"b", b"z").seq, 0);
}

#[test]
fn get_rules() {
    let mut relay = Relay::new(Settings::default());
    assert_eq!(got(&mut relay, b"c", None), None, "no message yet: wait");
    for body in [b"0", b"1", b"2"] {
        write(&mut relay, b"c", body);
    }
    assert_eq!(got(&mut relay, b"c", None), Some(2), "no seqid: the newest");
    assert_eq!(got(&mut relay, b"c", Some(1)), Some(1), "exact");
    assert_eq!(
        got(&mut relay, b"c", Some(3)),
        None,
        "the next to be written: wait"
    );
    assert_eq!(
        got(&mut relay, b"c", Some(50)),
        None,
        "too new: wait for the next"
    );
}

#[test]
fn too_old_gets_the_oldest_retained() {
    let cost = 10 + MESSAGE_OVERHEAD;
    let mut relay = Relay::new(Settings {
        mcast_retain: 2 * cost + cost / 2,
        ..Settings::default()
    });
    for _ in 0..5 {
        write(&mut relay, b"r", &[7; 10]);
    }
    // Five messages written, two and a half retained: messages 3 and 4 remain.
    assert_eq!(relay.mcast_held_bytes(), 2 * cost);
    assert_eq!(got(&mut relay, b"r", Some(0)), Some(3));
    assert_eq!(got(&mut relay, b"r", Some(4)), Some(4));
}

#[test]
fn the_newest_message_is_kept_even_over_budget() {
    let mut relay = Relay::new(Settings {
        mcast_retain: 5,
        ..Settings::default()
    });
    write(&mut relay, b"r", &[1; 10]);
    write(&mut relay, b"r", &[1; 10]);
    assert_eq!(relay.mcast_held_bytes(), 10 + MESSAGE_OVERHEAD);
    assert_eq!(got(&mut relay, b"r", Some(0)), Some(1));
}

#[test]
fn waiting_readers_are_woken_by_the_next_message() {
    let mut relay = Relay::new(Settings::default());
    for n in 1..=3 {
        assert!(matches!(
            relay.mcast_get(0, b"w", None, WaiterId(n)),
            McastGet::Parked
        ));
    }
    relay.mcast_leave(0, b"w", WaiterId(2));
    let mut woken = Vec::new();
    let m = relay
        .mcast_publish(0, b"w", b"", meta(None), &mut woken)
        .unwrap();
    assert_eq!(woken, vec![WaiterId(1), WaiterId(3)]);
    assert_eq!(m.state(), MessageState::Uploading);
    assert_eq!(relay.waiter_count(), 0);
}

#[test]
fn an_uploading_message_is_readable_and_growing() {
    let mut relay = Relay::new(Settings::default());
    let mut woken = Vec::new();
    let m = relay
        .mcast_publish(0, b"u", b"", meta(None), &mut woken)
        .unwrap();
    relay.mcast_append(&m, b"abc", 10).unwrap();
    let McastGet::Message(seen) = relay.mcast_get(0, b"u", None, WaiterId(1)) else {
        panic!("the uploading message is the newest");
    };
    assert!(Rc::ptr_eq(&seen, &m), "one shared copy");
    seen.follow(WaiterId(1));
    seen.follow(WaiterId(1));
    relay.mcast_append(&m, b"def", 10).unwrap();
    let mut followers = Vec::new();
    m.take_followers(&mut followers);
    assert_eq!(followers, vec![WaiterId(1)]);
    assert_eq!(seen.with_bytes(2, <[u8]>::to_vec), b"cdef");
    assert_eq!(
        relay.mcast_append(&m, b"12345", 10),
        Err(AppendError::TooLarge)
    );
    assert_eq!(m.len(), 6, "a refused append adds nothing");
    assert_eq!(relay.mcast_bytes(), 6 + MESSAGE_OVERHEAD);
}

#[test]
fn a_failed_upload_disappears() {
    let mut relay = Relay::new(Settings::default());
    write(&mut relay, b"f", b"0");
    let mut woken = Vec::new();
    let broken = relay
        .mcast_publish(0, b"f", b"", meta(None), &mut woken)
        .unwrap();
    write(&mut relay, b"f", b"2");
    relay.mcast_abort(0, b"f", &broken);
    assert_eq!(broken.state(), MessageState::Aborted);
    assert_eq!(
        got(&mut relay, b"f", Some(1)),
        Some(2),
        "the next that exists"
    );
    assert_eq!(got(&mut relay, b"f", None), Some(2));
}

#[test]
fn the_total_over_all_channels_is_kept() {
    let o = MESSAGE_OVERHEAD;
    let mut relay = Relay::new(Settings {
        mcast_total: 2 * o + 10,
        mcast_retain: 10 * o,
        ..Settings::default()
    });
    write(&mut relay, b"a", b"123456");
    assert_eq!(relay.mcast_bytes(), o + 6);
    assert!(relay.mcast_has_room(Some(4)));
    assert!(!relay.mcast_has_room(Some(5)));
    let mut woken = Vec::new();
    let m = relay
        .mcast_publish(0, b"b", b"", meta(None), &mut woken)
        .unwrap();
    relay.mcast_append(&m, b"1234", 100).unwrap();
    assert_eq!(relay.mcast_append(&m, b"5", 100), Err(AppendError::Full));
    assert_eq!(
        relay
            .mcast_publish(0, b"c", b"", meta(None), &mut woken)
            .err(),
        Some(PublishError::Full),
        "even an empty message costs its overhead"
    );
    relay.mcast_abort(0, b"b", &m);
    relay.mcast_abort(0, b"b", &m);
    assert_eq!(
        relay.mcast_bytes(),
        2 * o + 10,
        "a reader still holds the aborted message: it still counts"
    );
    drop(m);
    assert_eq!(
        relay.mcast_bytes(),
        o + 6,
        "the last holder gone, its bytes are given back, once"
    );
    assert_eq!(
        relay.channel_count(),
        1,
        "the aborted upload's channel is gone"
    );
}

#[test]
fn a_dropped_message_counts_until_its_last_reader_is_done() {
    let o = MESSAGE_OVERHEAD;
    let mut relay = Relay::new(Settings {
        mcast_retain: 0,
        ..Settings::default()
    });
    let first = write(&mut relay, b"d", b"12345");
    write(&mut relay, b"d", b"6789");
    assert_eq!(
        relay.mcast_held_bytes(),
        o + 4,
        "the channel keeps the newest"
    );
    assert_eq!(
        relay.mcast_bytes(),
        2 * o + 9,
        "a reader still sends the first"
    );
    drop(first);
    assert_eq!(relay.mcast_bytes(), o + 4);
}

#[test]
fn empty_messages_are_not_free() {
    let o = MESSAGE_OVERHEAD;
    let mut relay = Relay::new(Settings {
        mcast_retain: 3 * o,
        ..Settings::default()
    });
    for _ in 0..100 {
        write(&mut relay, b"e", b"");
    }
    assert_eq!(relay.mcast_held_bytes(), 3 * o, "three retained");
    assert_eq!(relay.mcast_bytes(), 3 * o);
    assert_eq!(got(&mut relay, b"e", Some(0)), Some(97));
}

#[test]
fn retention_and_expiry_give_bytes_back() {
    let mut relay = Relay::new(Settings {
        mcast_retain: 10,
        idle_expiry: 100,
        ..Settings::default()
    });
    for _ in 0..5 {
        write(&mut relay, b"r", &[0; 8]);
    }
    assert_eq!(
        relay.mcast_bytes(),
        8 + MESSAGE_OVERHEAD,
        "only the newest is retained"
    );
    relay.handle_timeout(10_000);
    relay.handle_timeout(20_000);
    assert_eq!(relay.channel_count(), 0);
    assert_eq!(relay.mcast_bytes(), 0);
}

/// What a stream asking from `from` gets: (seq, missed), or `None` when
/// it waits (it then leaves).
fn streamed(relay: &mut Relay, id: &[u8], from: Option<u64>) -> Option<(u64, Option<Missed>)> {
    match relay.mcast_stream_next(0, id, from, WaiterId(98)) {
        StreamNext::Message { message, missed } => Some((message.seq, missed)),
        StreamNext::Parked => {
            assert!(
                relay.mcast_leave(0, id, WaiterId(98)),
                "it waits in the channel"
            );
            None
        }
    }
}

#[test]
fn a_stream_gets_each_message_from_where_it_asks_and_waits_for_new_ones() {
    let mut relay = Relay::new(Settings::default());
    assert_eq!(streamed(&mut relay, b"s", Some(0)), None, "nothing yet");
    for body in [b"0", b"1", b"2"] {
        write(&mut relay, b"s", body);
    }
    assert_eq!(
        streamed(&mut relay, b"s", None),
        None,
        "none: only new ones"
    );
    assert_eq!(streamed(&mut relay, b"s", Some(0)), Some((0, None)));
    assert_eq!(streamed(&mut relay, b"s", Some(2)), Some((2, None)));
    assert_eq!(streamed(&mut relay, b"s", Some(3)), None, "caught up");
    assert_eq!(streamed(&mut relay, b"s", Some(99)), None);
    let mut woken = Vec::new();
    assert!(matches!(
        relay.mcast_stream_next(0, b"s", Some(3), WaiterId(1)),
        StreamNext::Parked
    ));
    let m = relay
        .mcast_publish(0, b"s", b"", meta(None), &mut woken)
        .unwrap();
    assert_eq!((woken, m.seq), (vec![WaiterId(1)], 3), "woken by the next");
    assert_eq!(
        streamed(&mut relay, b"s", Some(3)).map(|(seq, _)| seq),
        Some(3),
        "an upload in progress is the stream's next (sent once complete)"
    );
}

#[test]
fn a_stream_behind_retention_learns_what_it_missed_but_not_failed_uploads() {
    let cost = 10 + MESSAGE_OVERHEAD;
    let mut relay = Relay::new(Settings {
        mcast_retain: 2 * cost,
        ..Settings::default()
    });
    for _ in 0..5 {
        write(&mut relay, b"r", &[7; 10]);
    }
    let missed = |first, last| Some(Missed { first, last });
    assert_eq!(streamed(&mut relay, b"r", Some(0)), Some((3, missed(0, 2))));
    assert_eq!(streamed(&mut relay, b"r", Some(2)), Some((3, missed(2, 2))));
    assert_eq!(streamed(&mut relay, b"r", Some(3)), Some((3, None)));
    let mut woken = Vec::new();
    let failed = relay
        .mcast_publish(0, b"r", b"", meta(None), &mut woken)
        .unwrap();
    relay.mcast_abort(0, b"r", &failed);
    write(&mut relay, b"r", &[7; 10]);
    assert_eq!(
        streamed(&mut relay, b"r", Some(5)),
        Some((6, None)),
        "a failed upload is no missed message"
    );
}

#[test]
fn mcast_secret_guards_producers_only() {
    let mut relay = Relay::new(Settings::default());
    let mut woken = Vec::new();
    relay
        .mcast_publish(0, b"s", b"k", meta(None), &mut woken)
        .unwrap();
    assert_eq!(
        relay
            .mcast_publish(0, b"s", b"other", meta(None), &mut woken)
            .unwrap_err(),
        PublishError::Claim(ClaimError::WrongSecret)
    );
    assert!(matches!(
        relay.mcast_get(0, b"s", None, WaiterId(1)),
        McastGet::Message(_)
    ));
}

#[test]
fn mcast_channels_expire_with_their_messages() {
    let mut relay = Relay::new(Settings {
        idle_expiry: 100,
        ..Settings::default()
    });
    let mut woken = Vec::new();
    let uploading = relay
        .mcast_publish(0, b"e", b"", meta(None), &mut woken)
        .unwrap();
    relay.handle_timeout(1_000);
    assert_eq!(
        relay.channel_count(),
        1,
        "an upload in progress keeps the channel"
    );
    relay.mcast_complete(1_000, b"e", &uploading);
    let mut now = 1_000;
    while relay.channel_count() > 0 && now < 5_000 {
        now += 10;
        relay.handle_timeout(now);
    }
    assert_eq!(relay.channel_count(), 0);
    assert_eq!(relay.mcast_held_bytes(), 0);
}
