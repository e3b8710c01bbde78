//! Single-flight with a short time-to-live: concurrent and near-simultaneous reads of the same
//! Azure resource share one request. A burst of 1,000 events over 10 workspaces costs one read
//! per distinct resource, not one per event.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio::time::Instant;

/// When the map grows past this, expired entries are dropped.
const PRUNE_ABOVE: usize = 4096;

struct Slot<V> {
    cell: OnceCell<(Instant, V)>,
    /// When the read behind this slot started (wall clock, comparable with event times).
    started: time::OffsetDateTime,
}

/// A keyed single-flight cache of cloneable values.
pub struct ReadCache<V> {
    ttl: Duration,
    slots: Mutex<HashMap<String, Arc<Slot<V>>>>,
    hits: AtomicU64,
    misses: AtomicU64,
    /// Whether a fetched value may be reused; one that may not is still shared by the callers
    /// waiting for it, then forgotten.
    keep: fn(&V) -> bool,
}

impl<V: Clone> ReadCache<V> {
    /// A cache whose entries live for `ttl` after their read finished.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            slots: Mutex::new(HashMap::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            keep: |_| true,
        }
    }

    /// The same cache, reusing only the values `keep` accepts (a failed read must not answer
    /// the next event: Azure may have recovered, and the event would fail again unasked).
    pub fn keeping(self, keep: fn(&V) -> bool) -> Self {
        Self { keep, ..self }
    }

    /// The cached value for `key`, or the value `fetch` produces; concurrent callers with the
    /// same key wait for the one fetch in flight.
    pub async fn get_or_fetch<F, Fut>(&self, key: &str, fetch: F) -> V
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        let key = key.to_ascii_lowercase();
        let slot = self.slot(&key);
        let (fetched, value) = slot
            .cell
            .get_or_init(|| async {
                let value = fetch().await;
                (Instant::now(), value)
            })
            .await;
        let kept = (self.keep)(value);
        super::memo::note_read(slot.started, *fetched, kept);
        if !kept {
            self.forget_slot(&key, &slot);
        }
        value.clone()
    }

    /// Counts `lookups` hits that a remembered snapshot answered for (observe's memo): each
    /// would have been a hit of this cache.
    pub fn count_hits(&self, lookups: u64) {
        self.hits.fetch_add(lookups, Ordering::Relaxed);
        crate::telemetry::record_cache_lookups(true, lookups);
    }

    /// Drops `key`'s entry if it is still `slot` (a newer read may have replaced it).
    fn forget_slot(&self, key: &str, slot: &Arc<Slot<V>>) {
        let mut slots = match self.slots.lock() {
            Ok(slots) => slots,
            Err(poisoned) => poisoned.into_inner(),
        };
        if slots
            .get(key)
            .is_some_and(|current| Arc::ptr_eq(current, slot))
        {
            slots.remove(key);
        }
    }

    fn slot(&self, key: &str) -> Arc<Slot<V>> {
        let now = Instant::now();
        let mut slots = match self.slots.lock() {
            Ok(slots) => slots,
            Err(poisoned) => poisoned.into_inner(),
        };
        if slots.len() > PRUNE_ABOVE {
            let ttl = self.ttl;
            slots.retain(|_, slot| {
                slot.cell
                    .get()
                    .is_none_or(|(at, _)| now.duration_since(*at) < ttl)
            });
        }
        let fresh = slots.get(key).filter(|slot| {
            slot.cell
                .get()
                .is_none_or(|(at, _)| now.duration_since(*at) < self.ttl)
        });
        if let Some(slot) = fresh {
            self.hits.fetch_add(1, Ordering::Relaxed);
            crate::telemetry::record_cache_lookups(true, 1);
            return slot.clone();
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        crate::telemetry::record_cache_lookups(false, 1);
        let slot = Arc::new(Slot {
            cell: OnceCell::new(),
            started: time::OffsetDateTime::now_utc(),
        });
        slots.insert(key.to_owned(), slot.clone());
        slot
    }

    /// Drops the entries whose read started before `moment`: an event says something changed
    /// then, so an older read may not describe it. Reads started later are kept, so a burst of
    /// events about one change still shares one read.
    pub fn forget_started_before(&self, moment: time::OffsetDateTime) {
        let mut slots = match self.slots.lock() {
            Ok(slots) => slots,
            Err(poisoned) => poisoned.into_inner(),
        };
        slots.retain(|_, slot| slot.started >= moment);
    }

    /// Drops every entry: after cmk-guard itself changed Azure, nothing cached may be trusted.
    pub fn clear(&self) {
        let mut slots = match self.slots.lock() {
            Ok(slots) => slots,
            Err(poisoned) => poisoned.into_inner(),
        };
        slots.clear();
    }

    /// (hits, misses) so far.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn concurrent_reads_share_one_fetch() {
        let cache = Arc::new(ReadCache::<u32>::new(Duration::from_secs(5)));
        let fetches = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let cache = cache.clone();
                let fetches = fetches.clone();
                tokio::spawn(async move {
                    cache
                        .get_or_fetch("GET /Vaults/KV1", || async {
                            fetches.fetch_add(1, Ordering::SeqCst);
                            tokio::task::yield_now().await;
                            7
                        })
                        .await
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap(), 7);
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        assert_eq!(cache.stats(), (99, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_after_the_ttl() {
        let cache = ReadCache::<u32>::new(Duration::from_secs(5));
        assert_eq!(cache.get_or_fetch("k", || async { 1 }).await, 1);
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(
            cache.get_or_fetch("K", || async { 2 }).await,
            1,
            "keys are case-insensitive, still fresh"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(cache.get_or_fetch("k", || async { 3 }).await, 3);
    }

    #[tokio::test]
    async fn values_it_may_not_keep_are_shared_by_waiters_then_read_again() {
        let cache = Arc::new(
            ReadCache::<Result<u32, u32>>::new(Duration::from_secs(60)).keeping(Result::is_ok),
        );
        let fetches = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let cache = cache.clone();
                let fetches = fetches.clone();
                tokio::spawn(async move {
                    cache
                        .get_or_fetch("k", || async {
                            fetches.fetch_add(1, Ordering::SeqCst);
                            tokio::task::yield_now().await;
                            Err(503)
                        })
                        .await
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap(), Err(503));
        }
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            1,
            "the waiters shared the failure"
        );
        assert_eq!(
            cache.get_or_fetch("k", || async { Ok(1) }).await,
            Ok(1),
            "asked again"
        );
        assert_eq!(
            cache.get_or_fetch("k", || async { Ok(2) }).await,
            Ok(1),
            "success is kept"
        );
    }

    #[tokio::test]
    async fn an_event_forgets_only_the_reads_that_started_before_it() {
        let cache = ReadCache::<u32>::new(Duration::from_secs(60));
        assert_eq!(cache.get_or_fetch("before", || async { 1 }).await, 1);
        let change = time::OffsetDateTime::now_utc();
        assert_eq!(cache.get_or_fetch("after", || async { 2 }).await, 2);
        cache.forget_started_before(change);
        assert_eq!(
            cache.get_or_fetch("before", || async { 3 }).await,
            3,
            "read again"
        );
        assert_eq!(
            cache.get_or_fetch("after", || async { 4 }).await,
            2,
            "still shared"
        );
    }
}
