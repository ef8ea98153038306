//! What the benchmark examples share: settings from the environment and CPU time from /proc.

use anyhow::Context;

/// The variable `name` parsed, or `default` when unset.
pub fn var<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}: `{v}` is malformed")),
        Err(_) => Ok(default),
    }
}

/// utime + stime of `pid`, in clock ticks (fields 14 and 15 of /proc/<pid>/stat). Linux
/// reports them in USER_HZ, 100 a second on every architecture we ship.
pub fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces; the fields after it start at the last ')'.
    let after = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}
