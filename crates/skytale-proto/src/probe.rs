//! Latency probes: where a message's time goes between processes (a diagnostic for the
//! benchmarks, off by default).
//!
//! With `SKYTALE_PROBE_DIR` set when a process starts, every [`mark`] records `(stage, wall
//! clock µs)` in memory, and a background thread appends them every 200 ms to
//! `$SKYTALE_PROBE_DIR/probe-<pid>.tsv` (one `stage\tmicros` line each). The wall clock
//! (`CLOCK_REALTIME`) is the same in every process of a machine, so the stages of the sender,
//! the relay and the receiver line up; with one sender and one receiver the n-th mark of each
//! stage belongs to the n-th message (`tests/bench/relay/probe.mjs` reads the files).
//!
//! Without the variable a mark costs one atomic load. Marks carry stage names only: nothing of
//! a message, a key or an identity.

use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The recorder: marks not yet written.
struct Probe {
    marks: Mutex<Vec<(&'static str, u64)>>,
}

static PROBE: OnceLock<Option<&'static Probe>> = OnceLock::new();

fn probe() -> Option<&'static Probe> {
    *PROBE.get_or_init(start)
}

fn start() -> Option<&'static Probe> {
    let dir = std::env::var_os("SKYTALE_PROBE_DIR")?;
    let path = std::path::PathBuf::from(dir).join(format!("probe-{}.tsv", std::process::id()));
    let probe: &'static Probe = Box::leak(Box::new(Probe { marks: Mutex::new(Vec::with_capacity(1 << 16)) }));
    let spawned = std::thread::Builder::new().name("skytale-probe".into()).spawn(move || loop {
        std::thread::sleep(Duration::from_millis(200));
        let marks = std::mem::take(&mut *probe.marks.lock().unwrap_or_else(|p| p.into_inner()));
        if marks.is_empty() {
            continue;
        }
        let mut out = String::with_capacity(marks.len() * 24);
        for (stage, us) in marks {
            out.push_str(stage);
            out.push('\t');
            out.push_str(&us.to_string());
            out.push('\n');
        }
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(out.as_bytes()));
        if written.is_err() {
            return;
        }
    });
    spawned.ok().map(|_| probe)
}

/// Records that a message reached `stage` now (`count` times: once per item of a batch).
#[inline]
pub fn mark_n(stage: &'static str, count: usize) {
    if let Some(p) = probe() {
        let us = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0);
        let mut marks = p.marks.lock().unwrap_or_else(|p| p.into_inner());
        for _ in 0..count {
            marks.push((stage, us));
        }
    }
}

/// Records that a message reached `stage` now.
#[inline]
pub fn mark(stage: &'static str) {
    mark_n(stage, 1);
}
