//! The `dlq` commands' decisions, without a broker: what a dead-lettered message says,
//! which ones a replay chooses, the headers it goes back with, and the summaries shown.

use std::collections::BTreeMap;

use rdkafka::message::{Message, OwnedMessage};
use serde::Serialize;

use crate::broker::dlq;

/// Header on a replayed message: the DLQ position it was replayed from
/// (`<dlq topic>:<partition>:<offset>`).
const HEADER_REPLAYED_FROM: &str = "dlq-replayed-from";

/// One dead-lettered message, as the commands see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Letter {
    /// The DLQ topic it is in.
    pub(crate) dlq: String,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    /// `dlq-error-code` (empty when missing).
    pub(crate) code: String,
    /// `dlq-error`.
    pub(crate) error: String,
    /// `dlq-source-topic`, when present.
    pub(crate) source_topic: Option<String>,
    /// When it was dead-lettered (the DLQ message's timestamp, Unix ms), when known.
    pub(crate) time: Option<i64>,
}

impl Letter {
    /// Reads the headers of `message`, a message of a DLQ topic.
    pub(crate) fn of(message: &OwnedMessage) -> Letter {
        let header = |name: &str| common::kafka::header(message, name);
        Letter {
            dlq: message.topic().to_string(),
            partition: message.partition(),
            offset: message.offset(),
            code: header(dlq::HEADER_ERROR_CODE).unwrap_or_default(),
            error: header(dlq::HEADER_ERROR).unwrap_or_default(),
            source_topic: header(dlq::HEADER_SOURCE_TOPIC),
            time: message.timestamp().to_millis(),
        }
    }

    /// `<dlq>:<partition>:<offset>`.
    pub(crate) fn position(&self) -> String {
        format!("{}:{}:{}", self.dlq, self.partition, self.offset)
    }
}

/// Which messages a replay sends back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Only this `dlq-error-code`.
    pub code: Option<String>,
    /// Only messages dead-lettered at or after this time (Unix ms).
    pub since: Option<i64>,
}

impl Selection {
    /// Whether `letter` is chosen. A message with no time is chosen only without `since`.
    pub(crate) fn matches(&self, letter: &Letter) -> bool {
        self.code.as_ref().is_none_or(|c| *c == letter.code)
            && self
                .since
                .is_none_or(|since| letter.time.is_some_and(|t| t >= since))
    }
}

/// The consumer group that remembers how far replays of `code` (or of every code) got:
/// `<KAFKA_GROUP_ID>-dlq-replay[-<code>]`. One per code, so replaying one code after a fix
/// and another after a later fix each finds its own messages; `--since` narrows a run
/// without a group of its own (older messages are passed over for good in that group).
pub(crate) fn replay_group(group_id: &str, code: Option<&str>) -> String {
    match code {
        Some(code) => format!("{group_id}-dlq-replay-{code}"),
        None => format!("{group_id}-dlq-replay"),
    }
}

/// `--since`: an RFC 3339 time (`2026-11-24T14:00:00Z`) or an age (`90m`, `2h`, `7d`,
/// `30s`) before `now_ms`.
pub fn parse_since(text: &str, now_ms: i64) -> Result<i64, String> {
    let text = text.trim();
    let unit = |c: char| match c {
        's' => Some(1_000),
        'm' => Some(60_000),
        'h' => Some(3_600_000),
        'd' => Some(86_400_000),
        _ => None,
    };
    if let Some((at, last)) = text.char_indices().last() {
        if let (Some(ms), Ok(n)) = (unit(last), text[..at].parse::<i64>()) {
            if n >= 0 {
                return Ok(now_ms - n.saturating_mul(ms));
            }
        }
    }
    bson::DateTime::parse_rfc3339_str(text)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            format!(
                "`{text}`: expected a time like 2026-11-24T14:00:00Z or an age like 90m, 2h, 7d"
            )
        })
}

/// The headers a replayed message goes back with: the original ones (the event's), without
/// the failure's (`dlq-*`, `__connect.errors.*`), plus [`HEADER_REPLAYED_FROM`].
pub(crate) fn replay_headers<'a>(
    original: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
    from: &str,
) -> Vec<(String, Option<Vec<u8>>)> {
    let mut headers: Vec<(String, Option<Vec<u8>>)> = original
        .into_iter()
        .filter(|(key, _)| !dlq::is_failure_header(key))
        .map(|(key, value)| (key.to_string(), value.map(<[u8]>::to_vec)))
        .collect();
    headers.push((
        HEADER_REPLAYED_FROM.to_string(),
        Some(from.as_bytes().to_vec()),
    ));
    headers
}

/// One code's messages in one DLQ topic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct CodeSummary {
    /// `dlq-error-code`.
    pub(crate) code: String,
    pub(crate) count: u64,
    /// The oldest dead-lettering time (Unix ms).
    pub(crate) oldest: Option<i64>,
    pub(crate) newest: Option<i64>,
    /// Up to three different reasons (`dlq-error`).
    pub(crate) samples: Vec<String>,
}

/// One DLQ topic's content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TopicSummary {
    pub(crate) topic: String,
    /// The topic its messages came from.
    pub(crate) source: String,
    /// Messages in it (what retention kept).
    pub(crate) messages: u64,
    /// Messages after the point the all-codes replay group reached (not replayed yet by
    /// `dlq replay` without `--code`).
    pub(crate) not_replayed: u64,
    /// Per code, by code.
    pub(crate) codes: Vec<CodeSummary>,
}

impl TopicSummary {
    pub(crate) fn add(&mut self, letter: &Letter) {
        self.messages += 1;
        let at = match self
            .codes
            .binary_search_by(|c| c.code.as_str().cmp(&letter.code))
        {
            Ok(at) => at,
            Err(at) => {
                self.codes.insert(
                    at,
                    CodeSummary {
                        code: letter.code.clone(),
                        ..CodeSummary::default()
                    },
                );
                at
            }
        };
        let code = &mut self.codes[at];
        code.count += 1;
        if let Some(t) = letter.time {
            code.oldest = Some(code.oldest.map_or(t, |o| o.min(t)));
            code.newest = Some(code.newest.map_or(t, |n| n.max(t)));
        }
        if code.samples.len() < 3 && !code.samples.contains(&letter.error) {
            code.samples.push(letter.error.clone());
        }
    }
}

/// What `dlq replay` did (or, with `--dry-run`, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplayReport {
    /// The consumer group holding the progress.
    pub(crate) group: String,
    /// Nothing was sent or committed.
    pub(crate) dry_run: bool,
    /// Messages read from the DLQs (after the group's progress).
    pub(crate) read: u64,
    /// Sent back (or, dry run, would be): per target topic.
    pub(crate) replayed: BTreeMap<String, u64>,
    /// Read and not chosen (another code, older than `--since`).
    pub(crate) passed_over: u64,
}

impl ReplayReport {
    /// Messages sent back in all.
    pub(crate) fn total(&self) -> u64 {
        self.replayed.values().sum()
    }
}

impl std::fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = if self.dry_run {
            "would replay"
        } else {
            "replayed"
        };
        writeln!(
            f,
            "dlq replay (group {}){}: read {}, {verb} {}, passed over {}",
            self.group,
            if self.dry_run { ", dry run" } else { "" },
            self.read,
            self.total(),
            self.passed_over
        )?;
        for (topic, n) in &self.replayed {
            writeln!(f, "  {verb} {n:>6} to {topic}")?;
        }
        Ok(())
    }
}

/// Text for a terminal: a block per DLQ topic.
pub fn render_list(topics: &[TopicSummary]) -> String {
    let mut out = String::new();
    for t in topics {
        out.push_str(&format!(
            "{} (from {}): {} message{}, {} not replayed yet\n",
            t.topic,
            t.source,
            t.messages,
            if t.messages == 1 { "" } else { "s" },
            t.not_replayed
        ));
        if t.codes.is_empty() {
            continue;
        }
        out.push_str(&format!(
            "  {:<28} {:>7}  {:<24} {:<24}\n",
            "code", "count", "oldest", "newest"
        ));
        for c in &t.codes {
            out.push_str(&format!(
                "  {:<28} {:>7}  {:<24} {:<24}\n",
                if c.code.is_empty() { "(none)" } else { &c.code },
                c.count,
                time_text(c.oldest),
                time_text(c.newest)
            ));
            for s in &c.samples {
                out.push_str(&format!("      e.g. {}\n", one_line(s, 100)));
            }
        }
    }
    out
}

/// A Unix-ms time as RFC 3339 with milliseconds (`2026-11-24T14:00:00.040Z`), or `-`.
pub(crate) fn time_text(ms: Option<i64>) -> String {
    let Some(ms) = ms else {
        return "-".into();
    };
    let seconds = bson::DateTime::from_millis(ms - ms.rem_euclid(1000));
    match seconds.try_to_rfc3339_string() {
        Ok(text) => match text.strip_suffix('Z') {
            Some(base) => format!("{base}.{:03}Z", ms.rem_euclid(1000)),
            None => text,
        },
        Err(_) => ms.to_string(),
    }
}

fn one_line(text: &str, most: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match flat.char_indices().nth(most) {
        Some((at, _)) => format!("{}…", &flat[..at]),
        None => flat,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(code: &str, time: Option<i64>, error: &str) -> Letter {
        Letter {
            dlq: "users.dlq".into(),
            partition: 2,
            offset: 7,
            code: code.into(),
            error: error.into(),
            source_topic: Some("users".into()),
            time,
        }
    }

    #[test]
    fn a_selection_chooses_by_code_and_time() {
        let all = Selection::default();
        let code = Selection {
            code: Some("undecodable".into()),
            since: None,
        };
        let since = Selection {
            code: None,
            since: Some(1_000),
        };
        let old = letter("undecodable", Some(999), "x");
        let new = letter("rejected_by_database", Some(1_000), "x");
        let timeless = letter("undecodable", None, "x");
        assert!(all.matches(&old) && all.matches(&new) && all.matches(&timeless));
        assert!(code.matches(&old) && !code.matches(&new) && code.matches(&timeless));
        assert!(!since.matches(&old) && since.matches(&new) && !since.matches(&timeless));
    }

    #[test]
    fn each_code_keeps_its_own_progress() {
        assert_eq!(replay_group("user-sync", None), "user-sync-dlq-replay");
        assert_eq!(
            replay_group("user-sync", Some("rejected_by_database")),
            "user-sync-dlq-replay-rejected_by_database"
        );
    }

    #[test]
    fn since_takes_a_time_or_an_age() {
        let now = 1_800_000_000_000;
        assert_eq!(parse_since("90m", now), Ok(now - 90 * 60_000));
        assert_eq!(parse_since(" 2h ", now), Ok(now - 7_200_000));
        assert_eq!(parse_since("7d", now), Ok(now - 7 * 86_400_000));
        assert_eq!(
            parse_since("2026-11-24T14:00:00Z", now),
            Ok(1_795_528_800_000)
        );
        for bad in ["", "yesterday", "-5m", "5w", "2026-13-01", "5µ", "µ"] {
            assert!(parse_since(bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_replay_carries_the_event_not_the_failure() {
        let original: Vec<(&str, Option<&[u8]>)> = vec![
            ("event-id", Some(b"evt_1")),
            ("event-type", Some(b"user.created")),
            ("dlq-error-code", Some(b"rejected_by_database")),
            ("dlq-error", Some(b"E11000")),
            ("__connect.errors.topic", Some(b"users")),
            ("dlq-replayed-from", Some(b"users.dlq:0:1")),
            ("empty", None),
        ];
        let headers = replay_headers(original, "users.dlq:2:7");
        let keys: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["event-id", "event-type", "empty", "dlq-replayed-from"]
        );
        assert_eq!(headers[0].1.as_deref(), Some(&b"evt_1"[..]));
        assert_eq!(headers[2].1, None);
        assert_eq!(headers[3].1.as_deref(), Some(&b"users.dlq:2:7"[..]));
    }

    #[test]
    fn a_summary_counts_per_code_with_times_and_a_few_reasons() {
        let mut s = TopicSummary::default();
        for (code, time, error) in [
            ("undecodable", Some(30), "a"),
            ("rejected_by_database", Some(10), "E11000 email"),
            ("undecodable", Some(20), "b"),
            ("undecodable", None, "a"),
            ("undecodable", Some(40), "c"),
            ("undecodable", Some(25), "d"),
        ] {
            s.add(&letter(code, time, error));
        }
        assert_eq!(s.messages, 6);
        let codes: Vec<(&str, u64, Option<i64>, Option<i64>)> = s
            .codes
            .iter()
            .map(|c| (c.code.as_str(), c.count, c.oldest, c.newest))
            .collect();
        assert_eq!(
            codes,
            [
                ("rejected_by_database", 1, Some(10), Some(10)),
                ("undecodable", 5, Some(20), Some(40)),
            ]
        );
        assert_eq!(s.codes[1].samples, ["a", "b", "c"]);
        let text = render_list(&[s]);
        assert!(text.contains("undecodable"), "{text}");
        assert!(text.contains("1970-01-01T00:00:00.040Z"), "{text}");
    }
}
