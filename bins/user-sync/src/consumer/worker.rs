//! The consumer loop: poll a batch, dead-letter what can never apply, apply the rest, and
//! only then store the offsets (committed by librdkafka every second and on shutdown).
//! A failure that can pass is retried with exponential backoff and jitter, offsets
//! untouched, until it passes or the process is asked to stop.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::backoff::Backoff;
use common::kafka::KafkaSettings;
use common::traces::KeyValue;
use events::{EventMessage, Origin, HEADER_EVENT_ID, HEADER_EVENT_TYPE};
use futures::FutureExt;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::apply::{Applied, Applier, Incoming};
use super::metrics::Metrics;
use crate::broker::dlq::Dlq;
use crate::config::LinkConfig;
use crate::domain::payload;
use crate::domain::Outcome;
use crate::store::audit::{self, Record, Source};
use crate::store::link_users;
use crate::Result;

/// Waits between attempts at a batch (jittered).
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
/// How long the batch in hand may still take once the process is asked to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// librdkafka callbacks: lag from statistics, rebalances in the log.
pub(crate) struct Context {
    metrics: Arc<Metrics>,
    /// The partitions this consumer owns. Statistics also describe partitions it lost
    /// (librdkafka keeps their state, and a report can be in flight across a rebalance):
    /// only owned ones set a lag gauge, or replicas would report a partition twice.
    owned: std::sync::Mutex<HashSet<(String, i32)>>,
}

impl Context {
    fn owned(&self) -> std::sync::MutexGuard<'_, HashSet<(String, i32)>> {
        self.owned.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ClientContext for Context {
    fn stats(&self, statistics: Statistics) {
        let owned = self.owned();
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                // -1 is librdkafka's internal "unassigned" partition; lag -1 means unknown.
                if *partition >= 0
                    && p.consumer_lag >= 0
                    && owned.contains(&(topic.clone(), *partition))
                {
                    self.metrics.lag(topic, *partition, p.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for Context {
    fn post_rebalance(
        &self,
        _: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        tracing::info!(?rebalance, "rebalance");
        let mut owned = self.owned();
        match rebalance {
            rdkafka::consumer::Rebalance::Assign(partitions) => {
                for p in partitions.elements() {
                    owned.insert((p.topic().to_string(), p.partition()));
                }
            }
            rdkafka::consumer::Rebalance::Revoke(partitions) => {
                for p in partitions.elements() {
                    owned.remove(&(p.topic().to_string(), p.partition()));
                    self.metrics.forget_lag(p.topic(), p.partition());
                }
            }
            rdkafka::consumer::Rebalance::Error(_) => {}
        }
    }
}

/// The group consumer of the topics.
pub(crate) type KafkaConsumer = StreamConsumer<Context>;

/// Creates the consumer (not subscribed yet: see [`Worker::run`]).
pub(crate) fn consumer(
    kafka: &KafkaSettings,
    group_id: &str,
    metrics: Arc<Metrics>,
) -> Result<Arc<KafkaConsumer>> {
    let consumer: KafkaConsumer = kafka
        .client_config()
        .set("client.id", "user-sync")
        .set("group.id", group_id)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        // Offsets are stored by us, after the MongoDB writes of their batch.
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "3000")
        // A long MongoDB outage keeps one batch in retry; stay in the group meanwhile.
        .set("max.poll.interval.ms", "900000")
        .set("statistics.interval.ms", "5000")
        // Notice new partitions (scaling) within 30 s.
        .set("topic.metadata.refresh.interval.ms", "30000")
        .create_with_context(Context {
            metrics,
            owned: std::sync::Mutex::new(HashSet::new()),
        })?;
    Ok(Arc::new(consumer))
}

pub(crate) struct Worker {
    /// The consumer, shared with `/ready`.
    pub(crate) consumer: Arc<KafkaConsumer>,
    pub(crate) applier: Applier,
    pub(crate) dlq: Dlq,
    pub(crate) metrics: Arc<Metrics>,
    /// Most messages in one batch.
    pub(crate) batch_size: usize,
    /// Linking pre-registered records, when configured.
    pub(crate) link: Option<LinkConfig>,
}

/// Names each consumption of a message (see [`crate::store::audit`]).
struct Deliveries {
    run: String,
    next: u64,
}

impl Deliveries {
    fn new() -> Self {
        Deliveries {
            run: format!("{:016x}", rand::random::<u64>()),
            next: 0,
        }
    }

    fn next(&mut self) -> String {
        self.next += 1;
        format!("{}-{}", self.run, self.next)
    }
}

/// A polled message and the name of this consumption of it.
struct Polled {
    message: OwnedMessage,
    delivery: String,
}

impl Worker {
    /// Subscribes to `topics` (which must exist: a subscription to a missing topic waits
    /// for the next metadata refresh) and runs until `stop` is cancelled: then finishes the
    /// batch in hand, commits and leaves the group.
    pub(crate) async fn run(self, topics: &[&str], stop: CancellationToken) -> Result<()> {
        self.consumer.subscribe(topics)?;
        let mut deliveries = Deliveries::new();
        loop {
            let first = tokio::select! {
                // Stop wins over a ready message: no new batch once asked to stop.
                biased;
                () = stop.cancelled() => break,
                m = self.consumer.recv() => m,
            };
            let mut batch = match first {
                Ok(m) => vec![Polled {
                    message: m.detach(),
                    delivery: deliveries.next(),
                }],
                Err(e) => {
                    tracing::warn!(error = %e, "consumer error");
                    self.metrics.transient_failure("kafka_consume");
                    tokio::time::sleep(BACKOFF.first).await;
                    continue;
                }
            };
            // Whatever else is already fetched joins the batch, without waiting.
            while batch.len() < self.batch_size {
                match self.consumer.recv().now_or_never() {
                    Some(Ok(m)) => batch.push(Polled {
                        message: m.detach(),
                        delivery: deliveries.next(),
                    }),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "consumer error");
                        break;
                    }
                    None => break,
                }
            }
            let span = batch_span(&batch);
            if !self
                .process_until_done(&batch, &stop)
                .instrument(span)
                .await
            {
                break;
            }
            self.store_offsets(&batch);
        }
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            // Nothing stored since the last commit, or the broker is away: what wasn't
            // committed is consumed again by the next owner, harmlessly.
            tracing::info!(error = %e, "final commit");
        }
        self.consumer.unsubscribe();
        tracing::info!("consumer stopped");
        Ok(())
    }

    /// Retries `process` until it succeeds (true) or `stop` is cancelled (false: offsets of
    /// this batch stay unstored, so it is consumed again).
    async fn process_until_done(&self, batch: &[Polled], stop: &CancellationToken) -> bool {
        let mut attempt = 1u32;
        // What earlier attempts at this batch did: DLQ sends (not sent twice) and changes
        // made (not taken for duplicates by a retry).
        let mut memory = Attempts::default();
        loop {
            // Asked to stop mid-attempt: the batch in hand gets SHUTDOWN_GRACE to finish;
            // past that (a store that doesn't answer) it is left uncommitted, for the next
            // owner, and the process exits anyway.
            let attempt_result = {
                let work = self.process(batch, &mut memory);
                tokio::pin!(work);
                tokio::select! {
                    r = &mut work => r,
                    () = stop.cancelled() => {
                        match tokio::time::timeout(SHUTDOWN_GRACE, &mut work).await {
                            Ok(r) => r,
                            Err(_) => {
                                tracing::warn!(grace_s = SHUTDOWN_GRACE.as_secs(), "batch not done at shutdown; left uncommitted");
                                return false;
                            }
                        }
                    }
                }
            };
            match attempt_result {
                Ok(()) => return true,
                Err(e) => {
                    self.metrics.transient_failure(e.server());
                    // Jitter: replicas failing together don't retry together.
                    let sleep = BACKOFF.jittered(attempt, rand::random::<f64>());
                    tracing::warn!(error = %e, attempt, retry_in_ms = sleep.as_millis() as u64, "batch failed; retrying");
                    tokio::select! {
                        () = stop.cancelled() => return false,
                        () = tokio::time::sleep(sleep) => {}
                    }
                    attempt += 1;
                }
            }
        }
    }

    /// One attempt at a batch: decode, apply, dead-letter, link, record, in that order, so
    /// that a record never claims what isn't durable. Its span is a child of the batch's,
    /// one per attempt: a trace shows the retries.
    #[tracing::instrument(name = "attempt", skip_all, fields(size = batch.len()))]
    async fn process(&self, batch: &[Polled], memory: &mut Attempts) -> Result<()> {
        let started = Instant::now();
        let Decoded {
            incoming,
            positions,
            mut records,
            mut letters,
        } = decode_batch(batch);
        let applied = if incoming.is_empty() {
            Applied::default()
        } else {
            self.applier.apply(&incoming, &mut memory.applied).await?
        };
        let mut rejected: HashMap<usize, String> = HashMap::new();
        for (i, code, reason) in &applied.rejected {
            letters.push((positions[*i], code, reason.clone()));
            rejected.insert(*i, reason.clone());
        }
        self.dead_letter(&letters, &mut memory.sent).await?;
        if let Some(link) = &self.link {
            // After the writes, from the users' current documents; before the records, so
            // a failure here retries the batch (linking is idempotent).
            self.link(link, &incoming, &rejected).await?;
        }
        records.extend(records_of(incoming, &applied, rejected));
        audit::record(
            self.applier.store(),
            &records,
            started.elapsed().as_millis() as i64,
        )
        .await?;
        // Counted once the whole batch is done, so a retried batch isn't counted twice.
        self.report(&records, &letters, started);
        Ok(())
    }

    /// Sends each letter to its DLQ, unless an earlier attempt at the batch did (`sent`).
    async fn dead_letter(
        &self,
        letters: &[Letter<'_>],
        sent: &mut HashSet<(String, i32, i64)>,
    ) -> Result<()> {
        for (m, code, reason) in letters {
            if sent.insert((m.topic().to_string(), m.partition(), m.offset())) {
                self.dlq.send(m, code, reason).await?;
                tracing::warn!(
                    code,
                    reason,
                    topic = m.topic(),
                    partition = m.partition(),
                    offset = m.offset(),
                    "dead-lettered"
                );
            }
        }
        Ok(())
    }

    /// Links pre-registered records to the users the batch wrote (not those rejected).
    async fn link(
        &self,
        link: &LinkConfig,
        incoming: &[Incoming],
        rejected: &HashMap<usize, String>,
    ) -> Result<()> {
        let mut users: Vec<&str> = incoming
            .iter()
            .enumerate()
            .filter(|(i, e)| e.message.event_type.starts_with("user.") && !rejected.contains_key(i))
            .map(|(_, e)| e.message.subject_id.as_str())
            .collect();
        users.sort_unstable();
        users.dedup();
        let links = link_users(self.applier.store(), link, &users).await?;
        for l in &links {
            tracing::info!(clerk_id = l.clerk_id, record = %l.record, "linked a pre-registered record");
        }
        Ok(())
    }

    /// Metrics and logs of a batch done.
    fn report(&self, records: &[Record], letters: &[Letter<'_>], started: Instant) {
        for (_, code, _) in letters {
            self.metrics.dead_lettered(code);
        }
        for r in records {
            self.metrics.event(
                r.event_type.as_deref().unwrap_or("unknown"),
                shown(r).as_str(),
            );
            tracing::debug!(
                event_id = r.id,
                event_type = r.event_type,
                subject = r.subject,
                outcome = shown(r).as_str(),
                "event"
            );
        }
        self.metrics.applied_batch(started.elapsed().as_secs_f64());
        let count = |o: Outcome| records.iter().filter(|r| shown(r) == o).count();
        // The batch's trace (with traces on): its links name each event's webhook.
        let trace_id = common::traces::trace_id(&tracing::Span::current());
        tracing::info!(
            trace_id,
            applied = count(Outcome::Applied),
            stale = count(Outcome::Stale),
            duplicate = count(Outcome::Duplicate),
            ignored = count(Outcome::Ignored),
            dead_lettered = count(Outcome::DeadLettered),
            "batch done"
        );
    }

    /// Stores, per partition, the offset after the batch's last message.
    fn store_offsets(&self, batch: &[Polled]) {
        let mut next: HashMap<(&str, i32), i64> = HashMap::new();
        for p in batch {
            let m = &p.message;
            let e = next.entry((m.topic(), m.partition())).or_insert(0);
            *e = (*e).max(m.offset() + 1);
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in next {
            if let Err(e) = tpl.add_partition_offset(topic, partition, Offset::Offset(offset)) {
                tracing::error!(error = %e, "offset list");
            }
        }
        if let Err(e) = self.consumer.store_offsets(&tpl) {
            // The partition was revoked meanwhile: its new owner re-applies the batch,
            // which changes nothing.
            tracing::warn!(error = %e, "could not store offsets");
        }
    }
}

/// The span of a batch: a consumer span linked to the trace of each message that carries
/// one (the webhook that published it). A batch holds many traces, so they are links, not
/// parents; a message consumed again (a retry after a crash, a DLQ replay) is linked again
/// from the batch that applies it then, with its new offset.
fn batch_span(batch: &[Polled]) -> tracing::Span {
    let span = tracing::info_span!(
        "batch",
        size = batch.len(),
        otel.name = "process",
        otel.kind = "consumer"
    );
    if !common::traces::enabled() {
        return span;
    }
    common::traces::set_attributes(
        &span,
        [
            KeyValue::new("messaging.system", "kafka"),
            KeyValue::new("messaging.operation.type", "process"),
            KeyValue::new("messaging.batch.message_count", batch.len() as i64),
        ],
    );
    for Polled { message: m, .. } in batch {
        let mut attributes = vec![
            KeyValue::new("messaging.destination.name", m.topic().to_string()),
            KeyValue::new(
                "messaging.destination.partition.id",
                m.partition().to_string(),
            ),
            KeyValue::new("messaging.kafka.offset", m.offset()),
        ];
        if let Some(id) = common::kafka::header_str(m, HEADER_EVENT_ID) {
            attributes.push(KeyValue::new("messaging.message.id", id.to_string()));
        }
        common::traces::link_message(&span, m, attributes);
    }
    span
}

/// What earlier attempts at one batch did.
#[derive(Default)]
struct Attempts {
    /// Messages already in the DLQ (topic, partition, offset).
    sent: HashSet<(String, i32, i64)>,
    /// Events whose change was made.
    applied: HashSet<String>,
}

/// A message for the DLQ: the message, a short code and the reason.
type Letter<'a> = (&'a OwnedMessage, &'static str, String);

/// A batch read: the events, the messages they came from, and what couldn't be read (its
/// records and letters).
struct Decoded<'a> {
    incoming: Vec<Incoming>,
    positions: Vec<&'a OwnedMessage>,
    records: Vec<Record>,
    letters: Vec<Letter<'a>>,
}

fn decode_batch(batch: &[Polled]) -> Decoded<'_> {
    let mut decoded = Decoded {
        incoming: Vec::with_capacity(batch.len()),
        positions: Vec::with_capacity(batch.len()),
        records: Vec::with_capacity(batch.len()),
        letters: Vec::new(),
    };
    for p in batch {
        let m = &p.message;
        match decode(m) {
            Ok(message) => {
                decoded.incoming.push(Incoming {
                    payload: payload::Stored::of(&message.data),
                    message,
                    source: source_of(m),
                    delivery: p.delivery.clone(),
                });
                decoded.positions.push(m);
            }
            Err((code, reason)) => {
                decoded
                    .records
                    .push(undecodable_record(m, &p.delivery, &reason));
                decoded.letters.push((m, code, reason));
            }
        }
    }
    decoded
}

/// The records of the events applied (or rejected: `rejected` has their reasons).
fn records_of(
    incoming: Vec<Incoming>,
    applied: &Applied,
    mut rejected: HashMap<usize, String>,
) -> impl Iterator<Item = Record> + '_ {
    incoming.into_iter().enumerate().map(move |(i, e)| {
        let m = e.message;
        Record {
            id: m.event_id,
            event_type: Some(m.event_type),
            subject: Some(m.subject_id),
            event_time: Some(m.event_time),
            origin: Some(m.origin.as_str()),
            // Small (an IP and a user agent): parsed only here, for the record.
            attributes: m
                .event_attributes
                .as_deref()
                .and_then(|a| serde_json::from_str(a.get()).ok())
                .map(|a| crate::domain::payload::storable_value(&a)),
            payload: e.payload,
            raw: Some(m.data.get().to_string()),
            outcome: applied.outcomes[i],
            error: rejected.remove(&i),
            source: e.source,
            delivery: e.delivery,
            repeat: applied.repeats[i],
        }
    })
}

/// The outcome a record counts as: a repeat within the batch counts as the duplicate it
/// is (its record keeps its first copy's outcome).
fn shown(r: &Record) -> Outcome {
    if r.repeat {
        Outcome::Duplicate
    } else {
        r.outcome
    }
}

fn source_of(m: &OwnedMessage) -> Source {
    Source {
        topic: m.topic().to_string(),
        partition: m.partition(),
        offset: m.offset(),
    }
}

/// The record of a message that couldn't be read: what its headers and key say.
fn undecodable_record(m: &OwnedMessage, delivery: &str, reason: &str) -> Record {
    let source = source_of(m);
    Record {
        id: common::kafka::header(m, HEADER_EVENT_ID).unwrap_or_else(|| {
            format!(
                "dlq:{}:{}:{}",
                source.topic, source.partition, source.offset
            )
        }),
        event_type: common::kafka::header(m, HEADER_EVENT_TYPE),
        subject: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
        event_time: None,
        origin: common::kafka::header(m, events::HEADER_EVENT_ORIGIN)
            .and_then(|o| Origin::from_name(&o))
            .map(Origin::as_str),
        attributes: None,
        payload: payload::Stored::none(),
        raw: None,
        outcome: Outcome::DeadLettered,
        error: Some(reason.to_string()),
        source,
        delivery: delivery.to_string(),
        repeat: false,
    }
}

/// Reads a message, or says why it never can be (a short code and the reason).
fn decode(m: &OwnedMessage) -> Result<EventMessage, (&'static str, String)> {
    let payload = m
        .payload()
        .ok_or(("undecodable", "empty message".to_string()))?;
    EventMessage::decode(payload).map_err(|e| (e.code(), e.to_string()))
}
