//! Server cost from `/proc`: CPU seconds (`utime + stime` of `/proc/<pid>/stat`) and resident
//! memory (`VmRSS` of `/proc/<pid>/status`), summed over the given processes and all their
//! descendants (Socket.IO's node processes + redis-server count as one server).

use std::collections::{HashMap, HashSet};

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`, 100 on Linux).
const USER_HZ: f64 = 100.0;

/// One reading.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Sample {
    /// User + system CPU seconds consumed so far.
    pub cpu_secs: f64,
    /// Resident set size in KiB.
    pub rss_kib: u64,
    /// Processes found.
    pub processes: usize,
}

/// The processes `roots` and every descendant that is still alive.
pub(crate) fn tree(roots: &[u32]) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(stat) = stat_fields(pid)
                && let Some(ppid) = stat.get(1).and_then(|s| s.parse::<u32>().ok())
            {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut seen = HashSet::new();
    let mut stack: Vec<u32> = roots.to_vec();
    while let Some(pid) = stack.pop() {
        if seen.insert(pid) {
            stack.extend(children.get(&pid).into_iter().flatten());
        }
    }
    let mut all: Vec<u32> = seen.into_iter().collect();
    all.sort_unstable();
    all
}

/// The fields of `/proc/<pid>/stat` after the command name: index 0 is `state`, 1 `ppid`,
/// 11 `utime`, 12 `stime`.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &text[text.rfind(')')? + 1..];
    Some(after.split_whitespace().map(str::to_owned).collect())
}

/// Reads CPU time and RSS of `roots` and their descendants.
pub(crate) fn sample(roots: &[u32]) -> Sample {
    let mut s = Sample::default();
    for pid in tree(roots) {
        let Some(f) = stat_fields(pid) else { continue };
        let ticks: f64 = [11, 12]
            .iter()
            .filter_map(|i| f.get(*i)?.parse::<f64>().ok())
            .sum();
        s.cpu_secs += ticks / USER_HZ;
        s.rss_kib += std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find(|l| l.starts_with("VmRSS:"))?
                    .split_whitespace()
                    .nth(1)?
                    .parse()
                    .ok()
            })
            .unwrap_or(0);
        s.processes += 1;
    }
    s
}

/// The machine's load averages (1, 5, 15 min) from `/proc/loadavg`, as text: the machine is
/// shared, so every run records how busy it was.
pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert_ne!(x, 1);
        let s = sample(&[std::process::id()]);
        assert_eq!(s.processes, 1);
        assert!(s.rss_kib > 0);
    }
}
