//! What a run measures and how much, from the environment.

use crate::{GIB, MIB};

pub struct Plan {
    pub quick: bool,
    pub runs: usize,
    pub latency_exchanges: usize,
    pub pairs: usize,
    pub pair_secs: f64,
    pub stream_bytes: u64,
    pub fan_readers: usize,
    pub waiter_targets: [usize; 2],
    /// Client threads driving the pairs (event-driven).
    pub client_threads: usize,
    pub only: Option<Vec<String>>,
}

impl Plan {
    pub fn from_env() -> Plan {
        let quick = std::env::var("HTTPRELAY_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let runs = std::env::var("HTTPRELAY_BENCH_RUNS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&n: &usize| n > 0)
            .unwrap_or(if quick { 3 } else { 5 });
        let client_threads = std::env::var("HTTPRELAY_BENCH_CLIENTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let only = std::env::var("HTTPRELAY_BENCH_ONLY")
            .ok()
            .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
        if quick {
            Plan {
                quick,
                runs,
                latency_exchanges: 2_000,
                pairs: 64,
                pair_secs: 1.0,
                stream_bytes: 256 * MIB,
                fan_readers: 1_000,
                waiter_targets: [2_000, 5_000],
                client_threads,
                only,
            }
        } else {
            Plan {
                quick,
                runs,
                latency_exchanges: 20_000,
                pairs: 64,
                pair_secs: 10.0,
                stream_bytes: 2 * GIB,
                fan_readers: 1_000,
                waiter_targets: [10_000, 50_000],
                client_threads,
                only,
            }
        }
    }

    pub fn wants(&self, section: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|list| list.iter().any(|s| s == section))
    }
}
