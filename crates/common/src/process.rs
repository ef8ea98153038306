//! The standard `process_*` metrics (the names Prometheus' own client libraries export,
//! which dashboards and alerts expect), read from `/proc/self` at each scrape.
//!
//! prometheus-client has no process collector, and its registry prefixes every name
//! (`clerk_sync_…`): these are rendered apart and put before the exposition's `# EOF`.
//! Off Linux, or when `/proc` can't be read, nothing is added.

use std::fmt::Write;

/// Linux's `USER_HZ`: the unit of `/proc/<pid>/stat`'s times (100 on every architecture
/// Rust targets; `sysconf(_SC_CLK_TCK)` would need libc for a constant).
const TICKS_PER_SECOND: f64 = 100.0;

/// What `/proc/self` says of this process.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProcessStats {
    /// utime + stime, in seconds.
    pub cpu_seconds: f64,
    /// Resident set size (`VmRSS`).
    pub resident_bytes: u64,
    /// Virtual memory size (`VmSize`).
    pub virtual_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft limit on open files.
    pub max_fds: Option<u64>,
    /// Threads.
    pub threads: u64,
    /// When the process started, Unix seconds.
    pub start_time_seconds: Option<f64>,
}

impl ProcessStats {
    /// Reads `/proc/self`; `None` where there is no `/proc` (or it can't be read).
    pub fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let boot = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        let mut stats = parse(&stat, &status, &limits, &boot)?;
        stats.open_fds = open_fds;
        Some(stats)
    }

    /// The OpenMetrics text of these figures.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, sample: &str, value: String| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{sample} {value}");
        };
        metric(
            "process_cpu_seconds",
            "counter",
            "Total user and system CPU time spent in seconds.",
            "process_cpu_seconds_total",
            self.cpu_seconds.to_string(),
        );
        metric(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            "process_resident_memory_bytes",
            self.resident_bytes.to_string(),
        );
        metric(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            "process_virtual_memory_bytes",
            self.virtual_bytes.to_string(),
        );
        metric(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            "process_open_fds",
            self.open_fds.to_string(),
        );
        if let Some(max) = self.max_fds {
            metric(
                "process_max_fds",
                "gauge",
                "Maximum number of open file descriptors.",
                "process_max_fds",
                max.to_string(),
            );
        }
        metric(
            "process_threads",
            "gauge",
            "Number of OS threads in the process.",
            "process_threads",
            self.threads.to_string(),
        );
        if let Some(start) = self.start_time_seconds {
            metric(
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since unix epoch in seconds.",
                "process_start_time_seconds",
                start.to_string(),
            );
        }
        out
    }
}

/// The figures of `/proc/self/{stat,status,limits}` and `/proc/stat` (open descriptors
/// are counted apart).
fn parse(stat: &str, status: &str, limits: &str, boot: &str) -> Option<ProcessStats> {
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // Fields 14, 15 (utime, stime) and 22 (starttime) of the line; here from field 3.
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let cpu_seconds = (field(14)? + field(15)?) as f64 / TICKS_PER_SECOND;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let btime = boot
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    let start_time_seconds =
        btime.and_then(|b| Some(b as f64 + field(22)? as f64 / TICKS_PER_SECOND));
    let max_fds = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<u64>().ok());
    Some(ProcessStats {
        cpu_seconds,
        resident_bytes: kib("VmRSS:").unwrap_or(0) * 1024,
        virtual_bytes: kib("VmSize:").unwrap_or(0) * 1024,
        open_fds: 0,
        max_fds,
        threads: kib("Threads:").unwrap_or(0),
        start_time_seconds,
    })
}

/// `exposition` (prometheus-client's OpenMetrics text) with this process's `process_*`
/// metrics before its `# EOF`.
pub fn with_process_metrics(mut exposition: String) -> String {
    let Some(stats) = ProcessStats::read() else {
        return exposition;
    };
    let process = stats.render();
    match exposition.rfind("# EOF") {
        Some(at) => exposition.insert_str(at, &process),
        None => exposition.push_str(&process),
    }
    exposition
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_read_as_the_standard_figures() {
        let stat = "4242 (tokio-rt (worker)) S 1 4242 4242 0 -1 4194560 2000 0 0 0 \
                    150 50 0 0 20 0 9 0 360000 900000000 20000 18446744073709551615";
        let status = "Name:\tuser-sync\nVmSize:\t  878906 kB\nVmRSS:\t   80000 kB\nThreads:\t9\n";
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        let boot = "cpu  1 2 3\nbtime 1732464000\n";
        let s = parse(stat, status, limits, boot).unwrap();
        assert_eq!(s.cpu_seconds, 2.0, "(150 + 50) ticks");
        assert_eq!(s.resident_bytes, 80_000 * 1024);
        assert_eq!(s.virtual_bytes, 878_906 * 1024);
        assert_eq!(s.threads, 9);
        assert_eq!(s.max_fds, Some(1024));
        assert_eq!(s.start_time_seconds, Some(1_732_464_000.0 + 3_600.0));
        let text = s.render();
        assert!(
            text.contains("# TYPE process_cpu_seconds counter\nprocess_cpu_seconds_total 2\n"),
            "{text}"
        );
        assert!(
            text.contains("process_resident_memory_bytes 81920000\n"),
            "{text}"
        );
    }

    #[test]
    fn they_go_before_the_end_of_the_exposition() {
        let text = with_process_metrics("# HELP a_b x\n# TYPE a_b gauge\na_b 1\n# EOF\n".into());
        assert!(text.ends_with("# EOF\n"), "{text}");
        if cfg!(target_os = "linux") {
            assert!(text.contains("\nprocess_open_fds "), "{text}");
            assert!(text.find("process_open_fds") < text.find("# EOF"));
        }
    }
}
