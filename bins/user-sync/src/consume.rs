//! The consumer loop: poll a batch, dead-letter what can never apply, apply the rest, and
//! only then store the offsets (committed by librdkafka every second and on shutdown).
//! A failure that can pass is retried with exponential backoff and jitter, offsets
//! untouched, until it passes or the process is asked to stop.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::kafka::KafkaSettings;
use events::{EventMessage, HEADER_EVENT_ID};
use futures::FutureExt;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::apply::{version, Applied, Applier, DeadLetter, Incoming, Outcome, Source};
use crate::dlq::Dlq;
use crate::metrics::Metrics;
use crate::Result;

/// Most messages taken into one batch.
pub const MAX_BATCH: usize = 500;
const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// librdkafka callbacks: lag from statistics, rebalances in the log.
pub struct Context {
    metrics: Arc<Metrics>,
}

impl ClientContext for Context {
    fn stats(&self, statistics: Statistics) {
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                // -1 is librdkafka's internal "unassigned" partition; lag -1 means unknown.
                if *partition >= 0 && p.consumer_lag >= 0 {
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
    }
}

/// The group consumer of the users topic.
pub type KafkaConsumer = StreamConsumer<Context>;

/// Creates the consumer (not subscribed yet: see [`Worker::run`]).
pub fn consumer(
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
        .create_with_context(Context { metrics })?;
    Ok(Arc::new(consumer))
}

/// The loop's parts.
pub struct Worker {
    /// The consumer, shared with `/ready`.
    pub consumer: Arc<KafkaConsumer>,
    /// MongoDB writes.
    pub applier: Applier,
    /// The dead-letter producer.
    pub dlq: Dlq,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

impl Worker {
    /// Subscribes to `topic` (which must exist: a subscription to a missing topic waits for
    /// the next metadata refresh) and runs until `stop` is cancelled: then finishes the batch
    /// in hand, commits and leaves the group.
    pub async fn run(self, topic: &str, stop: CancellationToken) -> Result<()> {
        self.consumer.subscribe(&[topic])?;
        loop {
            let first = tokio::select! {
                // Stop wins over a ready message: no new batch once asked to stop.
                biased;
                () = stop.cancelled() => break,
                m = self.consumer.recv() => m,
            };
            let mut batch = match first {
                Ok(m) => vec![m.detach()],
                Err(e) => {
                    tracing::warn!(error = %e, "consumer error");
                    self.metrics.transient_failure("kafka_consume");
                    tokio::time::sleep(BACKOFF_START).await;
                    continue;
                }
            };
            // Whatever else is already fetched joins the batch, without waiting.
            while batch.len() < MAX_BATCH {
                match self.consumer.recv().now_or_never() {
                    Some(Ok(m)) => batch.push(m.detach()),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "consumer error");
                        break;
                    }
                    None => break,
                }
            }
            let span = tracing::info_span!("batch", size = batch.len());
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
    async fn process_until_done(&self, batch: &[OwnedMessage], stop: &CancellationToken) -> bool {
        let mut delay = BACKOFF_START;
        let mut attempt = 1u32;
        // Offsets already in the DLQ, so that a retried batch doesn't send them again.
        let mut dead_lettered = HashSet::new();
        loop {
            match self.process(batch, &mut dead_lettered).await {
                Ok(()) => return true,
                Err(e) => {
                    let reason = match e {
                        crate::Error::Mongo(_) => "mongodb",
                        crate::Error::Kafka(_) => "kafka",
                        _ => "other",
                    };
                    self.metrics.transient_failure(reason);
                    // Jitter: replicas failing together don't retry together.
                    let sleep = delay.mul_f64(0.5 + rand::random::<f64>() / 2.0);
                    tracing::warn!(error = %e, attempt, retry_in_ms = sleep.as_millis() as u64, "batch failed; retrying");
                    tokio::select! {
                        () = stop.cancelled() => return false,
                        () = tokio::time::sleep(sleep) => {}
                    }
                    delay = (delay * 2).min(BACKOFF_MAX);
                    attempt += 1;
                }
            }
        }
    }

    /// Sends one message to the DLQ (unless an earlier attempt did) and describes it for its
    /// audit record.
    async fn dead_letter(
        &self,
        m: &OwnedMessage,
        poison: Poison,
        sent: &mut HashSet<(i32, i64)>,
    ) -> Result<(&'static str, DeadLetter)> {
        let (code, reason, message) = poison;
        if !sent.contains(&(m.partition(), m.offset())) {
            self.dlq.send(m, code, &reason).await?;
            sent.insert((m.partition(), m.offset()));
        }
        tracing::warn!(
            code,
            reason,
            partition = m.partition(),
            offset = m.offset(),
            "dead-lettered"
        );
        let source = source_of(m);
        let letter = DeadLetter {
            id: message
                .as_ref()
                .map(|m| m.event_id.clone())
                .or_else(|| common::kafka::header(m, HEADER_EVENT_ID))
                .unwrap_or_else(|| {
                    format!(
                        "dlq:{}:{}:{}",
                        source.topic, source.partition, source.offset
                    )
                }),
            event_type: message.as_ref().map(|m| m.event_type.clone()),
            version: message.as_deref().map(version),
            subject: message.map(|m| m.subject_id),
            reason,
            source,
        };
        Ok((code, letter))
    }

    /// One attempt at a batch.
    #[tracing::instrument(skip_all, fields(size = batch.len()))]
    async fn process(&self, batch: &[OwnedMessage], sent: &mut HashSet<(i32, i64)>) -> Result<()> {
        let started = Instant::now();
        let mut incoming = Vec::with_capacity(batch.len());
        let mut raw = Vec::with_capacity(batch.len());
        let mut letters = Vec::new();
        for m in batch {
            match decode(m) {
                Ok(message) => {
                    let source = source_of(m);
                    incoming.push(Incoming { message, source });
                    raw.push(m);
                }
                Err(poison) => letters.push(self.dead_letter(m, poison, sent).await?),
            }
        }
        let applied = if incoming.is_empty() {
            Applied::default()
        } else {
            self.applier.apply_batch(&incoming).await?
        };
        for (i, reason) in &applied.rejected {
            let poison = (
                "rejected_by_database",
                reason.clone(),
                Some(Box::new(incoming[*i].message.clone())),
            );
            letters.push(self.dead_letter(raw[*i], poison, sent).await?);
        }
        if !letters.is_empty() {
            let records: Vec<DeadLetter> = letters.iter().map(|(_, l)| l.clone()).collect();
            self.applier.record_dead_letters(&records).await?;
        }

        // Counted once the whole batch is done, so a retried batch isn't counted twice.
        let outcomes = &applied.outcomes;
        for (code, letter) in &letters {
            self.metrics.dead_lettered(code);
            self.metrics.event(
                letter.event_type.as_deref().unwrap_or("unknown"),
                Outcome::DeadLettered.as_str(),
            );
        }
        for (e, outcome) in incoming.iter().zip(outcomes) {
            if *outcome == Outcome::DeadLettered {
                continue; // counted with the letters
            }
            self.metrics.event(&e.message.event_type, outcome.as_str());
            tracing::debug!(
                event_id = e.message.event_id,
                event_type = e.message.event_type,
                subject = e.message.subject_id,
                outcome = outcome.as_str(),
                "event"
            );
        }
        self.metrics.applied_batch(started.elapsed().as_secs_f64());
        let count = |o: Outcome| outcomes.iter().filter(|x| **x == o).count();
        tracing::info!(
            applied = count(Outcome::Applied),
            stale = count(Outcome::Stale),
            duplicate = count(Outcome::Duplicate),
            dead_lettered = letters.len(),
            "batch done"
        );
        Ok(())
    }

    /// Stores, per partition, the offset after the batch's last message.
    fn store_offsets(&self, batch: &[OwnedMessage]) {
        let mut next: HashMap<(&str, i32), i64> = HashMap::new();
        for m in batch {
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

fn source_of(m: &OwnedMessage) -> Source {
    Source {
        topic: m.topic().to_string(),
        partition: m.partition(),
        offset: m.offset(),
    }
}

/// A message that can never be applied: a short code, the reason, and the message itself
/// when it could be read.
type Poison = (&'static str, String, Option<Box<EventMessage>>);

/// Reads a message, or says why it can never be applied.
fn decode(m: &OwnedMessage) -> Result<EventMessage, Poison> {
    let payload = m
        .payload()
        .ok_or(("undecodable", "empty message".to_string(), None))?;
    let message = EventMessage::decode(payload).map_err(|e| (e.code(), e.to_string(), None))?;
    if !message.event_type.starts_with("user.") {
        let reason = format!("{} is not a user event", message.event_type);
        return Err(("unsupported_event_type", reason, Some(Box::new(message))));
    }
    Ok(message)
}
