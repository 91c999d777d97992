//! The rules checked after every step (listed in `relay_ops.rs`).

use httprelay::relay::MessageState;

use crate::model::Model;
use crate::OVERHEAD;

impl Model {
    pub fn check(&self) {
        let waiters = [
            self.links.waiting(),
            self.mcasts.waiting(),
            self.syncs.waiting(),
            self.proxies.waiting(),
            // Piping and the inbox have their own unit tests; no operation
            // here touches them.
            0,
            0,
        ];
        assert_eq!(
            self.relay.waiters_by_method().0,
            waiters,
            "waiters_by_method"
        );
        assert_eq!(
            self.relay.waiter_count(),
            self.parked().len(),
            "waiter_count"
        );
        let channels = [
            self.links.0.len(),
            self.mcasts.0.len(),
            self.syncs.0.len(),
            self.proxies.0.len(),
            0,
            0,
        ];
        assert_eq!(
            self.relay.channels_by_method().0,
            channels,
            "channels_by_method"
        );
        assert_eq!(
            self.relay.channel_count(),
            channels.iter().sum(),
            "channel_count"
        );
        let remembered = self.count_remembered();
        assert_eq!(
            self.remembered, remembered,
            "the model's running count of remembered channels"
        );
        assert_eq!(
            self.relay.remembered_channels(),
            remembered,
            "remembered_channels"
        );
        assert!(
            remembered <= self.max_channels,
            "more remembered channels than the cap"
        );
        assert_eq!(
            self.relay.refused_no_room(),
            self.refused_no_room,
            "refused_no_room"
        );

        let held: usize = self.mcasts.0.values().map(|c| c.state.held()).sum();
        assert_eq!(self.relay.mcast_held_bytes(), held, "mcast_held_bytes");
        let bytes = self.count_mcast_bytes();
        assert_eq!(
            self.mcast_bytes, bytes,
            "the model's running count of mcast bytes"
        );
        assert_eq!(self.relay.mcast_bytes(), bytes, "mcast_bytes");
        for len in [None, Some(0), Some(1), Some(7), Some(u64::MAX)] {
            let wanted = len.unwrap_or(0).saturating_add(OVERHEAD as u64);
            let room = (bytes as u64).saturating_add(wanted) <= self.total as u64;
            assert_eq!(
                self.relay.mcast_has_room(len),
                room,
                "mcast_has_room({len:?})"
            );
        }
        for u in &self.uploading {
            assert_eq!(u.message.state(), MessageState::Uploading);
            assert!(u.declared.is_none_or(|n| u.message.len() as u64 <= n));
        }

        match (self.deadline(), self.relay.poll_timeout()) {
            (Some(deadline), None) => {
                panic!("a remembered channel is idle until {deadline} but no timeout is due")
            }
            (Some(deadline), Some(due)) => {
                assert!(
                    due <= deadline,
                    "timeout due {due} after the deadline {deadline}"
                )
            }
            (None, Some(due)) if remembered == 0 => {
                panic!("timeout due {due} but nothing is remembered")
            }
            _ => {}
        }
    }
}
