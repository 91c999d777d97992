//! Loopback integration tests for the relay binary, written from `PROTOCOL.md`.
//!
//! Every test starts its own relay (`-a 127.0.0.1 -p 0`) and talks raw HTTP/1.1 to it
//! with the blocking client in `support`. "The waiter is parked" is approximated by a
//! short pause after sending its request; no assertion depends on timing.

mod support;

mod shorthand;

mod browser;
mod cors;
mod deploy;
mod fair;
mod hostile;
mod http;
mod inbox_compare;
mod journal;
mod lifecycle;
mod link;
mod mcast;
mod memory;
mod ops;
mod piping;
mod proxy;
mod readme;
mod sharding;
mod sse;
mod streaming;
mod stress;
mod sync;
mod tls;
mod trust;

// The shorthands, for every suite as `super::{get, post, ...}`.
use shorthand::{get, park, post, send_parked, EXPOSE, VERSION};
