//! The outcome of one consumed event, as its `webhook_events` record names it.

/// What happened to one consumed event (the `outcome` of its `webhook_events` record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// It changed a document.
    Applied,
    /// Newer events (or a deletion) had already decided everything it carries.
    Stale,
    /// Its change was already in the document, or it is a redelivery.
    Duplicate,
    /// It can never be applied and went to the DLQ.
    DeadLettered,
    /// A type user-sync doesn't keep (`organizationInvitation.*`, say).
    Ignored,
}

impl Outcome {
    /// The contract's name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Stale => "stale",
            Outcome::Duplicate => "duplicate",
            Outcome::DeadLettered => "dead_lettered",
            Outcome::Ignored => "ignored",
        }
    }

    /// Whether the event changed no document: what a redelivery usually comes to, so its
    /// record is likely there already.
    pub(crate) fn changed_nothing(self) -> bool {
        matches!(self, Outcome::Stale | Outcome::Duplicate)
    }
}
