//! A real OpenTelemetry Collector as a test's OTLP receiver: `scripts/otelcol.sh` (the
//! OTLP receiver and the file exporter, built from the Go module proxy and cached) listens
//! on a free port and writes each batch of spans it receives as a line of OTLP JSON, which
//! [`Collector::spans`] reads back.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running collector; stopped, and its files removed, when dropped.
pub struct Collector {
    child: Child,
    dir: PathBuf,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` for the services: `http://127.0.0.1:<port>`.
    pub endpoint: String,
}

/// One span as the collector received it.
#[derive(Debug, Clone)]
pub struct Span {
    /// The `service.name` of its resource.
    pub service: String,
    /// Its name.
    pub name: String,
    /// OTLP's kind: 1 internal, 2 server, 3 client, 4 producer, 5 consumer.
    pub kind: i64,
    /// Hex, as OTLP JSON writes it.
    pub trace_id: String,
    /// Hex.
    pub span_id: String,
    /// Hex; empty for a root.
    pub parent_span_id: String,
    /// Its attributes, each value as text.
    pub attributes: BTreeMap<String, String>,
    /// Its links.
    pub links: Vec<Link>,
    /// OTLP's status code: 0 unset, 1 ok, 2 error.
    pub status: i64,
}

/// A span's link to another trace's span.
#[derive(Debug, Clone)]
pub struct Link {
    /// Hex.
    pub trace_id: String,
    /// Hex.
    pub span_id: String,
    /// Its attributes, each value as text.
    pub attributes: BTreeMap<String, String>,
}

impl Collector {
    /// Builds the collector if needed (minutes, once per machine), starts it and waits
    /// until it listens.
    pub fn start() -> Collector {
        let root = crate::workspace_root();
        let output = Command::new(root.join("scripts/otelcol.sh"))
            .arg("path")
            .stderr(Stdio::inherit())
            .output()
            .expect("scripts/otelcol.sh");
        assert!(
            output.status.success(),
            "scripts/otelcol.sh could not build the collector"
        );
        let bin = String::from_utf8(output.stdout).expect("a path");
        let dir = std::env::temp_dir().join(format!("otelcol-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("the collector's directory");
        let port = crate::free_port();
        // Only what the tests need: no internal metrics server (its default port would
        // clash between tests), spans flushed to the file every 100 ms.
        let config = format!(
            r#"receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{port}
exporters:
  file:
    path: {spans}
    flush_interval: 100ms
service:
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [file]
"#,
            spans = dir.join("spans.jsonl").display()
        );
        std::fs::write(dir.join("config.yaml"), config).expect("the collector's config");
        let log = std::fs::File::create(dir.join("collector.log")).expect("the collector's log");
        let child = Command::new(bin.trim())
            .arg("--config")
            .arg(dir.join("config.yaml"))
            .stdout(log.try_clone().expect("the log"))
            .stderr(log)
            .spawn()
            .expect("the collector starts");
        let mut collector = Collector {
            child,
            dir,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = collector.child.try_wait() {
                panic!("the collector exited ({status}):\n{}", collector.log());
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the collector doesn't listen on {port}:\n{}",
                collector.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        collector
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        let text = std::fs::read_to_string(self.dir.join("spans.jsonl")).unwrap_or_default();
        let mut spans = Vec::new();
        // The last line may be half-written: only whole lines are read.
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let Ok(batch) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            for resource in array(&batch["resourceSpans"]) {
                let service = attributes(&resource["resource"]["attributes"])
                    .remove("service.name")
                    .unwrap_or_default();
                for scope in array(&resource["scopeSpans"]) {
                    for s in array(&scope["spans"]) {
                        spans.push(Span {
                            service: service.clone(),
                            name: text_of(&s["name"]),
                            kind: s["kind"].as_i64().unwrap_or(0),
                            trace_id: text_of(&s["traceId"]),
                            span_id: text_of(&s["spanId"]),
                            parent_span_id: text_of(&s["parentSpanId"]),
                            attributes: attributes(&s["attributes"]),
                            links: array(&s["links"])
                                .iter()
                                .map(|l| Link {
                                    trace_id: text_of(&l["traceId"]),
                                    span_id: text_of(&l["spanId"]),
                                    attributes: attributes(&l["attributes"]),
                                })
                                .collect(),
                            status: s["status"]["code"].as_i64().unwrap_or(0),
                        });
                    }
                }
            }
        }
        spans
    }

    /// The collector's own log, for a failure message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("collector.log")).unwrap_or_default()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn array(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

fn text_of(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

/// OTLP JSON's `[{key, value: {stringValue | intValue | boolValue | doubleValue}}]`, each
/// value as text (an `intValue` is a JSON string already).
fn attributes(v: &Value) -> BTreeMap<String, String> {
    array(v)
        .iter()
        .filter_map(|a| {
            let key = a["key"].as_str()?.to_string();
            let value = a["value"].as_object()?.values().next()?;
            let value = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Some((key, value))
        })
        .collect()
}
