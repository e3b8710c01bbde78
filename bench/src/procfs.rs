//! What the kernel knows about a process: CPU time (clock ticks from `/proc/<pid>/stat`, and
//! nanoseconds summed over the threads' `schedstat`) and memory (`VmRSS`, `VmHWM`).

use std::path::PathBuf;

/// CPU time of `pid` in seconds: `utime + stime` from `/proc/<pid>/stat` (10 ms resolution
/// with the usual `CLK_TCK` of 100), including threads that have exited.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    cpu_split_seconds(pid).map(|(user, system)| user + system)
}

/// CPU time of `pid` in seconds as (user, system): `utime` and `stime` of `/proc/<pid>/stat`.
pub fn cpu_split_seconds(pid: u32) -> Option<(f64, f64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last `)`.
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After `)`: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let ticks = clock_ticks_per_second();
    Some((utime / ticks, stime / ticks))
}

/// CPU time of this process's children that have been waited for, in seconds (`cutime +
/// cstime` of `/proc/self/stat`): the cost of a command run to completion.
pub fn children_cpu_seconds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let cutime: f64 = fields.get(13)?.parse().ok()?;
    let cstime: f64 = fields.get(14)?.parse().ok()?;
    Some((cutime + cstime) / clock_ticks_per_second())
}

/// CPU time of `pid`'s live threads in nanoseconds, from `/proc/<pid>/task/*/schedstat`:
/// precise enough for the CPU cost of one event.
pub fn thread_cpu_ns(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0u64;
    for task in tasks.flatten() {
        let path: PathBuf = task.path().join("schedstat");
        if let Ok(text) = std::fs::read_to_string(path)
            && let Some(ns) = text
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
        {
            total += ns;
        }
    }
    Some(total)
}

/// The machine's CPU time so far in clock ticks, as (all, stolen): the `cpu` line of
/// `/proc/stat`. Steal is time the hypervisor gave this VM's CPUs to others while a thread was
/// meant to run; a thread's own CPU figures include it, so a run with much of it is noisy.
pub fn machine_ticks() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let all = fields.iter().take(8).sum();
    Some((all, *fields.get(7)?))
}

/// `VmRSS` and `VmHWM` (peak RSS) of `pid` in KiB.
pub fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The machine, for the report: core count, CPU model, memory.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown".to_owned(), |m| m.trim().to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_gib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cores} cores (nproc), {model}, {memory_gib:.1} GiB RAM, Linux {}",
        kernel.trim()
    )
}
