//! What the benchmark examples share: settings from the environment and CPU time from /proc
//! (test-support's, which user-sync's examples use too).

/// The variable `name` parsed, or `default` when unset.
pub fn var<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}: `{v}` is malformed")),
        Err(_) => Ok(default),
    }
}

pub use test_support::bench::cpu_ticks;
