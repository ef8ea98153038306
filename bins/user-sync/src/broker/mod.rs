//! Kafka beyond the consumer's own group: the dead-letter topics' contract (the headers
//! saying why and where from) and the producer that writes them.

pub(crate) mod dlq;

pub(crate) use dlq::Dlq;
