//! What user-sync asks of MongoDB, counted where it asks: commands, and the documents they
//! carry (statements of a write, documents a read returned), by command and collection.
//! Divided by `user_sync_events_total`, it is the store's work per event: what an
//! operator sizing a MongoDB for user-sync needs, and what a benchmark compares.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Labels of the store's counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    /// `find`, `update` or `insert`.
    command: String,
    /// The collection.
    collection: String,
}

/// The store's counters (clones share them).
#[derive(Clone, Debug, Default)]
pub struct Traffic {
    commands: Family<Labels, Counter>,
    documents: Family<Labels, Counter>,
}

impl Traffic {
    /// Counts one command of `documents` statements or returned documents.
    pub(crate) fn count(&self, command: &str, collection: &str, documents: usize) {
        let labels = Labels {
            command: command.to_string(),
            collection: collection.to_string(),
        };
        self.commands.get_or_create(&labels).inc();
        self.documents
            .get_or_create(&labels)
            .inc_by(documents as u64);
    }

    /// Adds the counters to `registry` (`user_sync_store_commands_total`,
    /// `user_sync_store_documents_total`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "store_commands",
            "Commands sent to MongoDB by the consumer, by command and collection",
            self.commands.clone(),
        );
        registry.register(
            "store_documents",
            "Documents those commands carried: statements of a write, documents a read returned",
            self.documents.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_their_documents_are_counted_per_command_and_collection() {
        let t = Traffic::default();
        t.count("update", "users", 500);
        t.count("update", "users", 3);
        t.count("find", "webhook_events", 0);
        let mut registry = Registry::with_prefix("user_sync");
        t.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            r#"user_sync_store_commands_total{command="update",collection="users"} 2"#,
            r#"user_sync_store_documents_total{command="update",collection="users"} 503"#,
            r#"user_sync_store_commands_total{command="find",collection="webhook_events"} 1"#,
            r#"user_sync_store_documents_total{command="find",collection="webhook_events"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }
}
