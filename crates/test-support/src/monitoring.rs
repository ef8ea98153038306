//! The metric names `deploy/monitoring/` uses, and whether a service's `/metrics` exports
//! them: the alert rules and the dashboard must not name a metric no service has (a
//! typo there is an alert that never fires).

use std::collections::BTreeSet;
use std::path::PathBuf;

fn file(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/monitoring")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every PromQL expression in the alert rules (`expr:` lines, block scalars included) and
/// the dashboard (`targets[].expr`).
pub fn expressions() -> Vec<String> {
    let mut out = Vec::new();
    // The rules file: an `expr:` value, or the indented block after `expr: |`.
    let rules = file("alerts.yaml");
    let mut lines = rules.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(value) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let value = value.trim();
        if value == "|" || value == ">" {
            let indent = line.len() - line.trim_start().len();
            let mut block = String::new();
            while let Some(next) = lines.peek() {
                if !next.trim().is_empty() && next.len() - next.trim_start().len() <= indent {
                    break;
                }
                block.push_str(next.trim());
                block.push(' ');
                lines.next();
            }
            out.push(block);
        } else {
            out.push(value.to_string());
        }
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&file("grafana-dashboard.json")).expect("dashboard JSON");
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            out.push(target["expr"].as_str().expect("expr").to_string());
        }
    }
    out
}

/// The metric names starting with `prefix` (`clerk_sync_`) that the expressions use.
pub fn names(prefix: &str) -> BTreeSet<String> {
    expressions()
        .iter()
        .flat_map(|e| {
            e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .filter(|t| t.starts_with(prefix))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Whether the exposition `text` has `name`: as a sample, or as the family a sample name
/// belongs to (a counter or histogram with no sample yet shows only its `# TYPE` line).
pub fn exported(text: &str, name: &str) -> bool {
    let sample = text.lines().any(|l| {
        l.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
    });
    let family = ["_total", "_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name);
    sample || text.contains(&format!("# TYPE {family} "))
}

/// Checks a service's `/metrics` `text` against deploy/monitoring: every metric starting
/// with `prefix` that the files name is exported (and they name at least `at_least`), as
/// is every `process_*` metric they name (both services export those), and the service
/// reports `<prefix>ready 1` and `<prefix>build_info{version="…"} 1`.
pub fn assert_exports_what_monitoring_names(
    text: &str,
    prefix: &str,
    at_least: usize,
    version: &str,
) {
    let names = names(prefix);
    assert!(names.len() >= at_least, "{names:?}");
    let process = self::names("process_");
    assert!(process.len() >= 4, "{process:?}");
    for name in names.iter().chain(&process) {
        assert!(
            exported(text, name),
            "{name} is in deploy/monitoring but not in the service's /metrics:\n{text}"
        );
    }
    assert!(text.contains(&format!("{prefix}ready 1")), "{text}");
    assert!(
        text.contains(&format!("{prefix}build_info{{version=\"{version}\"}} 1")),
        "{text}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_exported_as_a_sample_or_a_family() {
        let text = "# TYPE a_requests counter\n# TYPE a_ready gauge\na_ready 1\n\
                    # TYPE a_lat histogram\na_lat_bucket{le=\"1\"} 0\n";
        assert!(exported(text, "a_requests_total"));
        assert!(exported(text, "a_ready"));
        assert!(exported(text, "a_lat_bucket"));
        assert!(!exported(text, "a_read"));
        assert!(!exported(text, "a_missing_total"));
    }

    #[test]
    fn the_monitoring_files_name_both_services() {
        assert!(names("clerk_sync_").contains("clerk_sync_ready"));
        assert!(names("user_sync_").contains("user_sync_consumer_lag"));
        assert!(expressions().len() >= 18);
    }
}
