//! `MAX_IN_FLIGHT`: how many `/webhook` requests are handled at once, which bounds the
//! memory their bodies take.
//!
//! A full house answers a newcomer `503 OVERLOADED` at once (Svix retries, so nothing is
//! lost). One exception keeps a few stalled uploads from locking Clerk out until they time
//! out: when every place is taken, the newcomer takes the place of the request that has been
//! *reading its body* the longest, if that has lasted more than [`SLOW_BODY`]; that request
//! is answered `503 OVERLOADED` instead. Svix sends a whole body in milliseconds, so only
//! an upload far slower than any real delivery loses its place; requests past their body
//! read (verifying, publishing) are never displaced.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// How long a body read may last before a newcomer may displace it when all places are taken.
pub(crate) const SLOW_BODY: Duration = Duration::from_secs(1);

/// The places, shared by every request.
#[derive(Debug)]
pub(crate) struct InFlight {
    capacity: usize,
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    next_id: u64,
    /// Requests reading their body, oldest first.
    reading: Vec<Reader>,
    /// Requests past their body read.
    processing: usize,
}

#[derive(Debug)]
struct Reader {
    id: u64,
    since: Instant,
    displace: oneshot::Sender<()>,
}

/// No place is free, and none may be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Overloaded;

/// One request's place: given back when dropped.
#[derive(Debug)]
pub(crate) struct Place {
    owner: Arc<InFlight>,
    id: u64,
    reading: bool,
    displaced: oneshot::Receiver<()>,
}

impl InFlight {
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(InFlight {
            capacity,
            table: Mutex::new(Table::default()),
        })
    }

    /// A place for a request about to read its body, or [`Overloaded`].
    pub fn admit(self: &Arc<Self>) -> Result<Place, Overloaded> {
        let now = Instant::now();
        let mut table = self.lock();
        if table.reading.len() + table.processing >= self.capacity {
            let starts: Vec<Instant> = table.reading.iter().map(|r| r.since).collect();
            let victim = displaceable(&starts, now, SLOW_BODY).ok_or(Overloaded)?;
            let reader = table.reading.remove(victim);
            // The displaced request may have finished meanwhile; then nothing listens.
            let _ = reader.displace.send(());
        }
        table.next_id += 1;
        let id = table.next_id;
        let (displace, displaced) = oneshot::channel();
        table.reading.push(Reader {
            id,
            since: now,
            displace,
        });
        Ok(Place {
            owner: self.clone(),
            id,
            reading: true,
            displaced,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // The table is consistent after every statement: a panic elsewhere can't break it.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Place {
    /// Resolves if a newcomer takes this place while the body is still being read.
    pub async fn displaced(&mut self) {
        if (&mut self.displaced).await.is_err() {
            // Never displaced: the sender lives until the place is given back.
            std::future::pending::<()>().await;
        }
    }

    /// The body is in: from now on this place can't be taken.
    pub fn body_read(&mut self) {
        let mut table = self.owner.lock();
        if let Some(i) = table.reading.iter().position(|r| r.id == self.id) {
            table.reading.remove(i);
            table.processing += 1;
            self.reading = false;
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut table = self.owner.lock();
        if self.reading {
            table.reading.retain(|r| r.id != self.id);
        } else {
            table.processing -= 1;
        }
    }
}

/// Which body read (by index into `starts`, when they began, oldest first) a newcomer may
/// displace: the oldest, if it has lasted at least `slow`.
fn displaceable(starts: &[Instant], now: Instant, slow: Duration) -> Option<usize> {
    let (i, oldest) = starts.iter().enumerate().min_by_key(|(_, s)| **s)?;
    (now.saturating_duration_since(*oldest) >= slow).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_oldest_read_past_the_threshold_is_displaceable() {
        let now = Instant::now();
        let ago = |ms: u64| now - Duration::from_millis(ms);
        let slow = Duration::from_secs(1);
        assert_eq!(displaceable(&[], now, slow), None);
        assert_eq!(displaceable(&[ago(10), ago(999)], now, slow), None);
        assert_eq!(
            displaceable(&[ago(10), ago(5000), ago(1000)], now, slow),
            Some(1)
        );
    }

    #[test]
    fn a_full_house_refuses_then_frees_places_given_back() {
        let in_flight = InFlight::new(2);
        let a = in_flight.admit().unwrap();
        let mut b = in_flight.admit().unwrap();
        b.body_read();
        assert_eq!(in_flight.admit().unwrap_err(), Overloaded);
        drop(a);
        let c = in_flight.admit().unwrap();
        assert_eq!(in_flight.admit().unwrap_err(), Overloaded);
        drop(b);
        drop(c);
        let table = in_flight.lock();
        assert_eq!((table.reading.len(), table.processing), (0, 0));
    }

    #[tokio::test]
    async fn a_slow_body_read_gives_its_place_to_a_newcomer() {
        let in_flight = InFlight::new(1);
        let mut slow = in_flight.admit().unwrap();
        // Pretend it began long ago.
        in_flight.lock().reading[0].since = Instant::now() - Duration::from_secs(2);
        let newcomer = in_flight.admit().unwrap();
        tokio::time::timeout(Duration::from_secs(1), slow.displaced())
            .await
            .expect("the slow read is told");
        assert_eq!(in_flight.admit().unwrap_err(), Overloaded);
        drop(slow);
        drop(newcomer);
        assert!(in_flight.admit().is_ok());
    }

    #[tokio::test]
    async fn a_request_past_its_body_is_never_displaced() {
        let in_flight = InFlight::new(1);
        let mut done = in_flight.admit().unwrap();
        in_flight.lock().reading[0].since = Instant::now() - Duration::from_secs(2);
        done.body_read();
        assert_eq!(in_flight.admit().unwrap_err(), Overloaded);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), done.displaced())
                .await
                .is_err()
        );
    }
}
