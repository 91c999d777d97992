//! The routing table: which method a path belongs to, and what the generic
//! shell asks of a method without calling it: a path's channel id and CORS
//! fields, whether the request head is kept, the timer a waiter needs, when
//! a receiver that closes its side has left. Pure functions of the method,
//! the wait or the phase; the hooks that call into a method are in `rooms`.

use std::time::Duration;

use super::conn::{Phase, Timer, Transfer, Wait};
use super::reply::Expose;
use crate::relay::{MessageState, Method};

/// The method and the rest of the path after its prefix.
pub(super) fn route(path: &[u8]) -> Option<(Method, &[u8])> {
    [
        (&b"/link/"[..], Method::Link),
        (b"/mcast/", Method::Mcast),
        (b"/sync/", Method::Sync),
        (b"/proxy/", Method::Proxy),
        (b"/inbox/", Method::Inbox),
    ]
    .into_iter()
    .find_map(|(prefix, method)| path.strip_prefix(prefix).map(|rest| (method, rest)))
}

/// The channel id in the rest of a routed path: link, mcast, sync: the last
/// segment; proxy: the segment after `/proxy/`; inbox: its own parsing
/// (`handle_inbox`).
pub(super) fn channel_of(method: Method, rest: &[u8]) -> &[u8] {
    match method {
        Method::Proxy => rest.split(|&b| b == b'/').next().unwrap_or_default(),
        _ => rest.rsplit(|&b| b == b'/').next().unwrap_or_default(),
    }
}

/// Whether a method needs the request head as received (`Conn::head_copy`):
/// proxy forwards the request's fields, piping reads some only it needs.
pub(super) fn keeps_head(method: Method) -> bool {
    matches!(method, Method::Proxy | Method::Piping)
}

/// A preflight's `Access-Control-Allow-Headers`: proxy forwards any field.
pub(super) fn preflight_allows(method: Method) -> &'static [u8] {
    match method {
        Method::Proxy => b"*",
        _ => super::reply::ALLOW_HEADERS,
    }
}

/// The response fields a browser may read on a path's answers (CORS).
pub(super) fn expose_of(method: Method) -> Expose {
    match method {
        Method::Mcast => Expose::Mcast,
        Method::Proxy => Expose::All,
        _ => Expose::Metadata,
    }
}

/// The response fields a browser may read on the answers on `path`.
pub(super) fn expose_for(path: &[u8]) -> Expose {
    route(path).map_or(Expose::Metadata, |(method, _)| expose_of(method))
}

/// Whether a receiver of a transfer of `kind` that closes its sending side
/// has left: a piping receiver has, as the reference server counts it; a
/// link consumer may still be reading.
pub(super) fn gone_at_fin(kind: Transfer) -> bool {
    kind == Transfer::Piping
}

/// How often a silent live stream gets a comment, so that proxies do not
/// close it.
pub(super) const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(15);

/// A live stream's timer while it has a message: the keep-alive while it
/// follows an upload with nothing to send, else progress.
pub(super) fn stream_timer(phase: &Phase, sending: bool) -> Timer {
    match phase {
        Phase::Streaming { message, .. }
            if !sending && message.state() == MessageState::Uploading =>
        {
            Timer::KeepAlive
        }
        _ => Timer::Progress,
    }
}

impl Wait {
    /// The timer a parked waiter needs: the inbox timeout for inbox waits. A
    /// live stream waits for messages as long as its reader stays (the wait
    /// timeout is for requests awaiting a counterpart): the keep-alive while
    /// it has nothing to send; but a reader that does not take what the
    /// relay has for it is stalled, as any response. Others: the wait
    /// timeout, when there is one.
    pub(super) fn timer(self, sending: bool, wait_timeout: bool) -> Timer {
        match self {
            Wait::InboxReader | Wait::InboxAwaiter => Timer::Inbox,
            Wait::McastStream if !sending => Timer::KeepAlive,
            Wait::McastStream => Timer::Progress,
            _ if wait_timeout => Timer::Wait,
            _ => Timer::None,
        }
    }

    /// The method whose queue the waiter is in.
    pub(super) fn method(self) -> Method {
        match self {
            Wait::Link(_) => Method::Link,
            Wait::McastReader | Wait::McastStream => Method::Mcast,
            Wait::Sync => Method::Sync,
            Wait::ProxyClient(_) | Wait::ProxyServer => Method::Proxy,
            Wait::PipingSender | Wait::PipingReceiver => Method::Piping,
            Wait::InboxReader | Wait::InboxAwaiter => Method::Inbox,
        }
    }
}
