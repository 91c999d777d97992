//! What the relay's integration tests and benchmarks share, so that both drive
//! the relay the same way: the process launcher ([`process`]), a blocking
//! HTTP/1.1 client over `std::net` / `std::os::unix::net` that reports
//! truncated bodies distinctly ([`client`], [`request`], [`response`]),
//! `/proc` sampling ([`sample`]), HAProxy in front of relays ([`haproxy`]) and
//! test bodies ([`body`]).
//!
//! A dev-dependency only: nothing here is in the relay binary. The binary to
//! launch is the caller's to name (`env!("CARGO_BIN_EXE_httprelay")` exists
//! only in the relay crate's own tests and benches).

pub mod body;
pub mod client;
pub mod haproxy;
pub mod process;
pub mod request;
pub mod response;
pub mod sample;

pub use body::body_for;
pub use client::{connect_tcp, connect_tcp_from, Conn, Handle, Writer, READ_TIMEOUT};
pub use haproxy::{free_port, haproxy_binary, Haproxy};
pub use process::{Addr, Launch, RelayProcess};
pub use request::{chunked, req, req_host};
pub use response::{complete_length, Body, End, Head, Response};
pub use sample::{cpu_time_in, cpu_time_of, rss_kib_of, run_queue_wait_in, RssSampler};
