//! Footprint: binary sizes, and the x86_64 static build's idle RSS.

use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::plan::Plan;
use crate::relay::{rss_kib, start_relay};
use crate::report::{met, num, Report, Row};

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

/// The static targets `scripts/static-build.sh all` builds, with their names here.
const STATIC_TARGETS: [(&str, &str); 2] = [
    ("x86_64", "x86_64-unknown-linux-musl"),
    ("arm64", "aarch64-unknown-linux-musl"),
];

/// A stripped size in bytes and how it was stripped.
type Size = (u64, &'static str);

struct Footprint {
    release: Option<Size>,
    /// Per static target: its name and its stripped size, or why there is none.
    statics: Vec<(&'static str, Result<Size, String>)>,
    /// Idle RSS of the x86_64 static build, KiB.
    musl_idle_kib: Option<u64>,
}

/// Runs `scripts/static-build.sh all` into `target_dir`; an error says why not.
fn static_build(root: &Path, target_dir: &Path) -> Result<(), String> {
    eprintln!("bench: scripts/static-build.sh all");
    let built = Command::new(root.join("scripts/static-build.sh"))
        .arg("all")
        .env("CARGO_TARGET_DIR", target_dir)
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
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("not built (static-build.sh: {s})")),
        Err(e) => Err(format!("not built (static-build.sh: {e})")),
    }
}

fn footprint(plan: &Plan, bin: &Path) -> Footprint {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let this = PathBuf::from(env!("CARGO_BIN_EXE_httprelay"));
    // CARGO_BIN_EXE_httprelay is <target dir>/release/httprelay.
    let target_dir = this
        .parent()
        .and_then(Path::parent)
        .map_or_else(|| root.join("target"), Path::to_path_buf);
    let built = if plan.quick {
        Err("not built (quick mode does not build it)".to_string())
    } else {
        static_build(root, &target_dir)
    };
    let statics: Vec<_> = STATIC_TARGETS
        .iter()
        .map(|&(name, triple)| {
            let path = target_dir.join(triple).join("release/httprelay");
            let size = match (&built, stripped_size(&path)) {
                (Err(e), _) if !plan.quick => Err(e.clone()),
                (_, Some(s)) => Ok(s),
                (Err(e), None) => Err(e.clone()),
                (Ok(()), None) => Err("not built (no binary)".to_string()),
            };
            (name, size)
        })
        .collect();
    let musl_bin = target_dir
        .join(STATIC_TARGETS[0].1)
        .join("release/httprelay");
    let musl_idle_kib = statics[0].1.as_ref().ok().and_then(|_| {
        let relay = start_relay(&musl_bin).ok()?;
        thread::sleep(Duration::from_millis(300));
        rss_kib(&relay)
    });
    Footprint {
        musl_idle_kib,
        // The footprint is this build's, even when another binary was benchmarked.
        release: stripped_size(&this).or_else(|| stripped_size(bin)),
        statics,
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
    for (name, size) in f.statics {
        let (s, e) = match size {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(e)),
        };
        report.rows.push(size_row(
            &format!("static musl binary, {name}, stripped"),
            s,
            e,
            "< 512 KiB",
            Some(512 * 1024),
        ));
    }
    if let Some(kib) = f.musl_idle_kib {
        let mib = kib as f64 / 1024.0;
        report.rows.push(Row {
            figure: "idle RSS, static musl build, x86_64 (MiB)".into(),
            relay: num(mib, 2),
            copy: "–".into(),
            big: "–".into(),
            ratio: "–".into(),
            target: "≤ 1.5 MiB".into(),
            met: met(Some(mib <= 1.5)),
        });
    }
}
