//! httprelay: an HTTP relay server. Clients that cannot accept connections talk
//! to each other through it (the httprelay 2.0.0 wire protocol).
//!
//! The relay core ([`relay`]) and the HTTP codec ([`http`]) are sans-IO and
//! usable on their own (tests, fuzzing); [`server`] is the mio event loop.

pub mod bound;
pub mod budget;
pub mod buf;
pub mod config;
pub mod http;
pub mod journal;
pub mod relay;
pub mod server;
mod sys;
