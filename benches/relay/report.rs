//! The table of figures and the notes under it.

use std::fmt::Write as _;
use std::path::Path;
use std::thread;
use std::time::Instant;

use crate::plan::Plan;
use crate::{Res, GIB, MIB, SMALL};

/// What the sections found: table rows, and notes on how to read them.
#[derive(Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
}

impl Report {
    /// Runs a section that adds its own rows; if it fails, one row says why.
    pub fn section(&mut self, name: &str, run: impl FnOnce(&mut Report) -> Res<()>) {
        if let Err(e) = run(self) {
            self.rows.push(failed(name, &e));
        }
    }

    pub fn print(&self, plan: &Plan, bin: &Path, load_before: &str, started: Instant) {
        println!();
        println!(
            "httprelay relay bench ({} mode, {} runs per figure, medians; {} CPUs; relay {})",
            if plan.quick { "QUICK" } else { "full" },
            plan.runs,
            thread::available_parallelism().map_or(0, |n| n.get()),
            bin.display()
        );
        println!(
            "latency: {} exchanges of {SMALL} B per run; pairs: {} pairs × {} s per run; stream and \
             piping: {} MiB per run",
            plan.latency_exchanges,
            plan.pairs,
            plan.pair_secs,
            plan.stream_bytes / MIB
        );
        println!();
        print_table(&self.rows);
        println!();
        println!("notes:");
        println!(
            "- baselines: io::copy = blocking forwarder thread per pair with std::io::copy; \
             256 KiB = the same with a 256 KiB buffer; both carry the raw body only (no HTTP)"
        );
        println!("- ratios are relay ÷ baseline (for latency and CPU lower is better, for rates higher is better)");
        println!(
            "- CPU: relay = utime+stime of the relay process; baselines = the forwarder's copy threads"
        );
        for n in &self.notes {
            println!("- {n}");
        }
        let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let three = |l: &str| l.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
        println!(
            "- load average (1/5/15 min) before: {}; after: {} (other work on this machine adds noise)",
            three(load_before),
            three(&load_after)
        );
        println!(
            "- total bench time: {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
}

pub struct Row {
    pub figure: String,
    pub relay: String,
    pub copy: String,
    pub big: String,
    pub ratio: String,
    pub target: String,
    pub met: String,
}

pub fn num(v: f64, decimals: usize) -> String {
    if v.is_nan() {
        "–".into()
    } else {
        format!("{v:.decimals$}")
    }
}

/// A body size as the row names say it: `2 GiB`, `256 MiB`.
pub fn size_label(bytes: u64) -> String {
    if bytes >= GIB {
        format!("{} GiB", bytes / GIB)
    } else {
        format!("{} MiB", bytes / MIB)
    }
}

pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        f64::NAN
    }
}

pub fn met(ok: Option<bool>) -> String {
    match ok {
        Some(true) => "yes".into(),
        Some(false) => "NO".into(),
        None => "–".into(),
    }
}

/// A row comparing relay with both baselines.
pub fn row3(figure: &str, r: f64, c: f64, b: f64, decimals: usize) -> Row {
    Row {
        figure: figure.into(),
        relay: num(r, decimals),
        copy: num(c, decimals),
        big: num(b, decimals),
        ratio: format!("{}× / {}×", num(ratio(r, c), 2), num(ratio(r, b), 2)),
        target: "–".into(),
        met: "–".into(),
    }
}

/// A row saying why a figure is missing.
pub fn failed(figure: &str, e: &dyn std::fmt::Display) -> Row {
    Row {
        figure: figure.into(),
        relay: format!("failed: {e}"),
        copy: String::new(),
        big: String::new(),
        ratio: String::new(),
        target: String::new(),
        met: String::new(),
    }
}

fn print_table(rows: &[Row]) {
    let head = Row {
        figure: "figure".into(),
        relay: "relay".into(),
        copy: "io::copy".into(),
        big: "256 KiB".into(),
        ratio: "ratio: ÷ io::copy / ÷ 256 KiB".into(),
        target: "target".into(),
        met: "met".into(),
    };
    let cells = |r: &Row| {
        [
            r.figure.clone(),
            r.relay.clone(),
            r.copy.clone(),
            r.big.clone(),
            r.ratio.clone(),
            r.target.clone(),
            r.met.clone(),
        ]
    };
    let all: Vec<[String; 7]> = std::iter::once(&head).chain(rows).map(cells).collect();
    let mut width = [0usize; 7];
    for r in &all {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for (i, r) in all.iter().enumerate() {
        out.push('|');
        for (c, w) in r.iter().zip(width) {
            let pad = w - c.chars().count();
            let _ = write!(out, " {c}{} |", " ".repeat(pad));
        }
        out.push('\n');
        if i == 0 {
            out.push('|');
            for w in width {
                let _ = write!(out, "{}|", "-".repeat(w + 2));
            }
            out.push('\n');
        }
    }
    print!("{out}");
}
