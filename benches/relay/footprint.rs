//! Footprint: binary sizes, and the static build's idle RSS.

use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::plan::Plan;
use crate::relay::{rss_kib, start_relay};
use crate::report::{met, num, Report, Row};
use crate::MIB;

/// Size of a stripped copy of `bin` (`strip` if available, else as built).
fn stripped_size(bin: &Path) -> Option<(u64, &'static str)> {
    let size = std::fs::metadata(bin).ok()?.len();
    let tmp = std::env::temp_dir().join(format!("httprelay-bench-strip-{}", std::process::id()));
    let stripped = Command::new("strip")
        .arg("-o")
        .arg(&tmp)
        .arg(bin)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let out = if stripped {
        let s = std::fs::metadata(&tmp).map_or(size, |m| m.len());
        (s, "strip")
    } else {
        (size, "as built")
    };
    let _ = std::fs::remove_file(&tmp);
    Some(out)
}

struct Footprint {
    release: Option<(u64, &'static str)>,
    musl: Result<(u64, &'static str), String>,
    /// Idle RSS of the static build, KiB.
    musl_idle_kib: Option<u64>,
}

fn footprint(plan: &Plan, bin: &Path) -> Footprint {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let musl_bin = root.join("target/x86_64-unknown-linux-musl/release/httprelay");
    let musl = if plan.quick {
        match stripped_size(&musl_bin) {
            Some(s) => Ok(s),
            None => Err("not built (quick mode does not build it)".into()),
        }
    } else {
        eprintln!("bench: scripts/static-build.sh");
        let built = Command::new(root.join("scripts/static-build.sh"))
            .current_dir(root)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .and_then(|mut child| {
                // A build stuck on a lock must not hang the bench.
                let deadline = Instant::now() + Duration::from_secs(600);
                loop {
                    if let Some(status) = child.try_wait()? {
                        return Ok(status);
                    }
                    if Instant::now() > deadline {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err(io::Error::new(ErrorKind::TimedOut, "timed out after 600 s"));
                    }
                    thread::sleep(Duration::from_millis(100));
                }
            });
        match built {
            Ok(s) if s.success() => {
                stripped_size(&musl_bin).ok_or_else(|| "not built (no binary)".to_string())
            }
            Ok(s) => Err(format!("not built (static-build.sh: {s})")),
            Err(e) => Err(format!("not built (static-build.sh: {e})")),
        }
    };
    let musl_idle_kib = musl.as_ref().ok().and_then(|_| {
        let relay = start_relay(&musl_bin).ok()?;
        thread::sleep(Duration::from_millis(300));
        rss_kib(&relay)
    });
    Footprint {
        musl_idle_kib,
        // The footprint is this build's, even when another binary was benchmarked.
        release: stripped_size(&PathBuf::from(env!("CARGO_BIN_EXE_httprelay")))
            .or_else(|| stripped_size(bin)),
        musl,
    }
}

/// Stripped sizes of the release and static builds, and the static build's idle RSS.
pub fn section(plan: &Plan, bin: &Path, report: &mut Report) {
    let f = footprint(plan, bin);
    let size_row = |figure: &str,
                    s: Option<(u64, &str)>,
                    err: Option<String>,
                    target: &str,
                    limit: Option<u64>| Row {
        figure: figure.into(),
        relay: match (s, err) {
            (Some((bytes, how)), _) => {
                format!("{:.1} KiB ({bytes} B, {how})", bytes as f64 / 1024.0)
            }
            (None, Some(e)) => e,
            (None, None) => "not built".into(),
        },
        copy: "–".into(),
        big: "–".into(),
        ratio: "–".into(),
        target: target.into(),
        met: match (s, limit) {
            (Some((bytes, _)), Some(l)) => met(Some(bytes < l)),
            (None, Some(_)) => "NO (not built)".into(),
            _ => "–".into(),
        },
    };
    report.rows.push(size_row(
        "release binary, stripped",
        f.release,
        None,
        "–",
        None,
    ));
    let (s, e) = match f.musl {
        Ok(s) => (Some(s), None),
        Err(e) => (None, Some(e)),
    };
    report.rows.push(size_row(
        "static musl binary, stripped",
        s,
        e,
        "< 1 MiB",
        Some(MIB),
    ));
    if let Some(kib) = f.musl_idle_kib {
        let mib = kib as f64 / 1024.0;
        report.rows.push(Row {
            figure: "idle RSS, static musl build (MiB)".into(),
            relay: num(mib, 2),
            copy: "–".into(),
            big: "–".into(),
            ratio: "–".into(),
            target: "≤ 1.5 MiB".into(),
            met: met(Some(mib <= 1.5)),
        });
    }
}
