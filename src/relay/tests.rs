//! The registry across methods: what is forgotten, what is remembered and
//! capped, when it expires, shutdown.

use super::testing::{w, C, P};
use super::*;

#[test]
fn idle_channel_and_its_secret_are_forgotten_after_expiry() {
    let mut relay = Relay::new(Settings {
        idle_expiry: 1_000,
        ..Settings::default()
    });
    relay.link_arrive(0, b"s", P, w(1), b"abc").unwrap();
    assert_eq!(relay.poll_timeout(), None, "a waiter never expires");
    relay.link_arrive(10, b"s", C, w(2), b"").unwrap();
    assert_eq!(relay.channel_count(), 1, "the claim is remembered");
    assert_eq!(relay.remembered_channels(), 1);
    assert_eq!(relay.poll_timeout(), Some(1_010), "idle since 10");
    assert_eq!(relay.handle_timeout(1_009), 0, "not idle long enough yet");
    assert_eq!(relay.channel_count(), 1);
    assert_eq!(relay.handle_timeout(1_010), 1);
    assert_eq!(relay.channel_count(), 0);
    assert_eq!(relay.remembered_channels(), 0);
    assert_eq!(relay.poll_timeout(), None, "nothing left to expire");
    // The secret went with the channel: a new writer may claim it.
    assert_eq!(
        relay.link_arrive(1_011, b"s", P, w(3), b"new"),
        Ok(LinkArrival::Parked)
    );
}

#[test]
fn a_channel_that_holds_nothing_is_forgotten_at_once() {
    let mut relay = Relay::new(Settings::default());
    relay.link_arrive(0, b"a", C, w(1), b"").unwrap();
    relay.link_arrive(0, b"a", P, w(2), b"").unwrap();
    relay.link_arrive(0, b"b", C, w(3), b"").unwrap();
    relay.link_leave(0, b"b", w(3));
    relay.sync_arrive(0, b"s", w(4));
    relay.sync_arrive(0, b"s", w(5));
    relay.sync_arrive(0, b"t", w(6));
    relay.sync_leave(0, b"t", w(6));
    relay.mcast_get(0, b"m", None, w(7));
    relay.mcast_leave(0, b"m", w(7));
    let (job, _) = relay.proxy_request(0, b"p", w(8));
    relay.proxy_client_leave(0, b"p", &job);
    relay.proxy_serve(0, b"p", w(9), b"").unwrap();
    relay.proxy_server_leave(0, b"p", w(9));
    assert_eq!(relay.channel_count(), 0);
    assert_eq!(relay.waiter_count(), 0);
    assert_eq!(relay.poll_timeout(), None);
}

#[test]
fn remembered_channels_are_capped_and_claims_are_never_given_up() {
    let mut relay = Relay::new(Settings {
        max_channels: 2,
        idle_expiry: 1_000,
        ..Settings::default()
    });
    relay.link_arrive(0, b"a", P, w(1), b"ka").unwrap();
    relay.link_arrive(0, b"b", P, w(2), b"kb").unwrap();
    assert_eq!(
        relay.link_arrive(0, b"c", P, w(3), b"kc"),
        Err(ClaimError::NoRoom),
        "a third claim"
    );
    let mut woken = Vec::new();
    assert_eq!(
        relay
            .mcast_publish(0, b"m", b"", ProducerMeta::default(), &mut woken)
            .err(),
        Some(PublishError::Claim(ClaimError::NoRoom)),
        "a first message"
    );
    assert_eq!(
        relay.proxy_serve(0, b"p", w(4), b"kp"),
        Err(ClaimError::NoRoom),
        "a SERVE claim"
    );
    assert_eq!(relay.refused_no_room(), 3);
    // What needs no memory past its waiters still works, and so do the
    // channels remembered already.
    assert_eq!(
        relay.link_arrive(0, b"c", P, w(5), b""),
        Ok(LinkArrival::Parked)
    );
    assert_eq!(
        relay.link_arrive(0, b"a", C, w(6), b""),
        Ok(LinkArrival::Paired(w(1)))
    );
    assert_eq!(
        relay.link_arrive(1, b"a", P, w(7), b"other"),
        Err(ClaimError::WrongSecret),
        "the claim holds"
    );
    // Expiry frees a place.
    relay.link_arrive(2, b"b", C, w(8), b"").unwrap();
    while let Some(due) = relay.poll_timeout() {
        relay.handle_timeout(due);
    }
    assert_eq!(relay.remembered_channels(), 0);
    assert_eq!(
        relay.link_arrive(5_000, b"d", P, w(9), b"kd"),
        Ok(LinkArrival::Parked)
    );
}

#[test]
fn a_channel_with_a_waiter_never_expires() {
    let mut relay = Relay::new(Settings {
        idle_expiry: 1_000,
        ..Settings::default()
    });
    relay.link_arrive(0, b"w", C, w(1), b"").unwrap();
    for now in (0..100_000).step_by(500) {
        relay.handle_timeout(now);
    }
    assert_eq!(relay.channel_count(), 1);
    assert_eq!(
        relay.link_arrive(100_000, b"w", P, w(2), b""),
        Ok(LinkArrival::Paired(w(1)))
    );
}

#[test]
fn activity_postpones_expiry() {
    let mut relay = Relay::new(Settings {
        idle_expiry: 1_000,
        ..Settings::default()
    });
    for step in 0..10u64 {
        let now = step * 600;
        relay.handle_timeout(now);
        relay.link_arrive(now, b"busy", P, w(1), b"k").unwrap();
        relay.link_leave(now, b"busy", w(1));
    }
    assert_eq!(relay.channel_count(), 1);
    assert_eq!(relay.handle_timeout(5_400 + 999), 0);
    assert_eq!(relay.handle_timeout(5_400 + 1_000), 1);
}

#[test]
fn drain_returns_every_parked_waiter_once() {
    let mut relay = Relay::new(Settings::default());
    relay.link_arrive(0, b"a", C, w(1), b"").unwrap();
    relay.link_arrive(0, b"a", C, w(2), b"").unwrap();
    relay.link_arrive(0, b"b", P, w(3), b"").unwrap();
    let mut out = Vec::new();
    relay.drain_waiters(&mut out);
    out.sort();
    assert_eq!(out, vec![w(1), w(2), w(3)]);
    assert_eq!(relay.waiter_count(), 0);
    assert!(!relay.link_leave(1, b"a", w(1)));
}

#[test]
fn each_client_address_gets_its_share_of_the_remembered_channels() {
    let mut relay = Relay::new(Settings {
        max_channels: 10,
        max_channels_per_client: 3,
        idle_expiry: 1_000,
        ..Settings::default()
    });
    let a = |secret: &'static [u8]| Writer {
        secret,
        client: Some(2),
    };
    let b = Writer {
        secret: b"kb",
        client: Some(3),
    };
    // A flooder's claims, each on a new channel, up to its share.
    for (i, id) in [b"a1", b"a2", b"a3"].into_iter().enumerate() {
        relay.link_arrive(0, id, P, w(i), a(b"k")).unwrap();
        relay.link_leave(0, id, w(i));
    }
    assert_eq!(
        relay.link_arrive(0, b"a4", P, w(9), a(b"k")),
        Err(ClaimError::ClientFull)
    );
    let mut woken = Vec::new();
    let meta = ProducerMeta::default;
    assert_eq!(
        relay
            .mcast_publish(0, b"am", a(b""), meta(), &mut woken)
            .err(),
        Some(PublishError::Claim(ClaimError::ClientFull)),
        "an mcast channel counts in the same share"
    );
    assert_eq!(relay.refused_client(), 2);
    assert_eq!(relay.refused_no_room(), 0);
    // A channel it remembers already takes its writes; others keep their room.
    relay.link_arrive(0, b"a1", P, w(10), a(b"k")).unwrap();
    relay.link_leave(0, b"a1", w(10));
    relay.link_arrive(0, b"b1", P, w(11), b).unwrap();
    relay.link_leave(0, b"b1", w(11));
    let message = relay
        .mcast_publish(0, b"bm", b, meta(), &mut woken)
        .expect("another address's mcast channel");
    relay.mcast_complete(0, b"bm", &message);
    // Writers without an address (a Unix socket) count in no share.
    relay.link_arrive(0, b"u1", P, w(12), b"ku").unwrap();
    relay.link_leave(0, b"u1", w(12));
    assert_eq!(relay.remembered_channels(), 6);
    // Once the flooder's claims expire, its share is free again and its
    // entry gone.
    relay.handle_timeout(5_000);
    assert_eq!(relay.remembered_channels(), 0);
    assert_eq!(
        relay.channel_owners(),
        0,
        "owners holding nothing are forgotten"
    );
    relay.link_arrive(5_000, b"a4", P, w(13), a(b"k")).unwrap();
}
