//! A memo of assembled snapshots for the event path. With a warm cache, an event about a
//! workspace would rebuild the very snapshot the last one built, from the same cached reads:
//! the cache keys formatted again, each read looked up, its JSON parsed again into typed parts.
//! The memo keeps the [`Snapshot`] it built for exactly as long as the cache would answer every
//! read it used, so a hit gives what a rebuild from the cache would give:
//!
//! - it expires with the oldest of those reads (the cache's time-to-live after the fetch);
//! - [`Memo::forget_started_before`] drops it when one of those reads started before the moment
//!   (the cache drops that read), and [`Memo::clear`] drops every memo (the cache drops all);
//! - a build is kept only when a rebuild would read the same: no answer the cache would not
//!   keep (failures), no data-plane key-size read that gave no size (not cached), no failure
//!   anywhere in the snapshot, and never while the sweep's inventory answers reads
//!   ([`super::bulk`]);
//! - it answers only the same workspace spelling and the same hint (the hint's chain is the one
//!   read when ARM agrees with it, spelled as the hint spells it).
//!
//! A hit counts as the cache hits it stands for, so the cache's statistics stay what they were.

use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::time::Instant;

use super::ReadCache;
use crate::ids::ArmResourceId;
use crate::snapshot::{CmkPrincipal, Snapshot, Workspace};

/// When the map holds this many memos, expired ones are dropped; while it still does, a new
/// build is not kept.
const MEMO_LIMIT: usize = 1024;

tokio::task_local! {
    /// What the snapshot being built has read so far.
    static USED: Cell<Used>;
}

/// The cached reads one build used.
#[derive(Debug, Clone, Copy, Default)]
struct Used {
    lookups: u64,
    oldest_started: Option<OffsetDateTime>,
    oldest_fetched: Option<Instant>,
    /// An answer a rebuild might not get again.
    unrepeatable: bool,
}

/// Notes a cached read used by the snapshot being built (nothing happens outside a build):
/// when it `started`, when its fetch finished, and whether the cache keeps the answer.
pub(super) fn note_read(started: OffsetDateTime, fetched: Instant, kept: bool) {
    let _outside_a_build = USED.try_with(|used| {
        let mut noted = used.get();
        noted.lookups += 1;
        noted.oldest_started = Some(noted.oldest_started.map_or(started, |o| o.min(started)));
        noted.oldest_fetched = Some(noted.oldest_fetched.map_or(fetched, |o| o.min(fetched)));
        noted.unrepeatable |= !kept;
        used.set(noted);
    });
}

/// Notes that the snapshot being built used an answer the cache does not hold (a data-plane
/// read that gave nothing): a rebuild might read it differently.
pub(super) fn note_unrepeatable() {
    let _outside_a_build = USED.try_with(|used| {
        let mut noted = used.get();
        noted.unrepeatable = true;
        used.set(noted);
    });
}

/// What a snapshot is built from besides the cache: the workspace id as spelled, and the key
/// chain the hint names, as spelled (vault, key URL, CMK principal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Recipe {
    workspace_id: String,
    hinted_chain: Option<(Option<String>, Option<String>, Option<CmkPrincipal>)>,
}

impl Recipe {
    /// The recipe of `snapshot_hinted(workspace_id, hint)`: a hint without encryption is none.
    pub(super) fn new(workspace_id: &ArmResourceId, hint: Option<&Workspace>) -> Self {
        let hinted_chain = hint.and_then(|hint| {
            let encryption = hint.encryption.as_ref()?;
            Some((
                encryption.key_vault_arm_id.clone(),
                encryption.key_identifier.clone(),
                hint.cmk_principal(),
            ))
        });
        Self {
            workspace_id: workspace_id.as_str().to_owned(),
            hinted_chain,
        }
    }
}

impl super::Observer {
    /// [`Observer::snapshot_hinted`](super::Observer::snapshot_hinted), answered from the memo
    /// while every cached read of the last build is still fresh: the event path's read, where a
    /// warm cache would only rebuild the same snapshot.
    pub async fn snapshot_shared(
        &self,
        workspace_id: &ArmResourceId,
        hint: Option<&Workspace>,
        deadline: Instant,
    ) -> Arc<Snapshot> {
        let recipe = Recipe::new(workspace_id, hint);
        let build = || self.snapshot_hinted(workspace_id, hint, deadline);
        self.memo.get_or_build(recipe, &self.cache, build).await
    }
}

/// Assembled snapshots by workspace (lower-case id), valid while their reads are.
pub(super) struct Memo {
    ttl: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    /// How many clears and forgets there were: one during a build may have dropped a read it
    /// used after it read it.
    clears: u64,
    forgets: u64,
    /// The latest moment ever forgotten before.
    forgotten_before: Option<OffsetDateTime>,
}

struct Entry {
    recipe: Recipe,
    snapshot: Arc<Snapshot>,
    lookups: u64,
    oldest_started: OffsetDateTime,
    oldest_fetched: Instant,
}

/// The clears and forgets seen when a build started.
#[derive(Clone, Copy)]
struct Epoch {
    clears: u64,
    forgets: u64,
}

impl Memo {
    /// A memo for a cache whose reads live `ttl` after their fetch.
    pub(super) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The snapshot `recipe` names: the memo while every read it used is fresh in `cache`
    /// (counted there as those hits), else what `build` makes, kept when a rebuild from the
    /// same cache would make the same. The build is boxed and made only on a miss: a
    /// snapshot's future is large, and this one is moved around in `join_all`.
    pub(super) async fn get_or_build<V: Clone, F: Future<Output = Snapshot>>(
        &self,
        recipe: Recipe,
        cache: &ReadCache<V>,
        build: impl FnOnce() -> F,
    ) -> Arc<Snapshot> {
        if super::bulk::PREFILLED.try_with(|_| ()).is_ok() {
            return Arc::new(Box::pin(build()).await);
        }
        let key = recipe.workspace_id.to_ascii_lowercase();
        let (hit, epoch) = {
            let state = self.lock();
            let now = Instant::now();
            let hit = state
                .entries
                .get(&key)
                .filter(|entry| {
                    entry.recipe == recipe && now.duration_since(entry.oldest_fetched) < self.ttl
                })
                .map(|entry| (Arc::clone(&entry.snapshot), entry.lookups));
            let epoch = Epoch {
                clears: state.clears,
                forgets: state.forgets,
            };
            (hit, epoch)
        };
        if let Some((snapshot, lookups)) = hit {
            cache.count_hits(lookups);
            return snapshot;
        }
        let (snapshot, used) = USED
            .scope(Cell::new(Used::default()), async {
                let snapshot = Box::pin(build()).await;
                let used = USED.try_with(Cell::get).unwrap_or(Used {
                    unrepeatable: true,
                    ..Used::default()
                });
                (snapshot, used)
            })
            .await;
        let snapshot = Arc::new(snapshot);
        if let (false, Some(oldest_started), Some(oldest_fetched)) =
            (used.unrepeatable, used.oldest_started, used.oldest_fetched)
            && snapshot.read_failures().next().is_none()
        {
            let entry = Entry {
                recipe,
                snapshot: Arc::clone(&snapshot),
                lookups: used.lookups,
                oldest_started,
                oldest_fetched,
            };
            self.remember(key, entry, epoch);
        }
        snapshot
    }

    /// Keeps `entry` unless a clear, or a forget that covers one of its reads, came after the
    /// build started (the cache may have dropped a read after the build used it).
    fn remember(&self, key: String, entry: Entry, epoch: Epoch) {
        let mut state = self.lock();
        let forgotten = state.forgets != epoch.forgets
            && state
                .forgotten_before
                .is_some_and(|moment| entry.oldest_started < moment);
        if state.clears != epoch.clears || forgotten {
            return;
        }
        if state.entries.len() >= MEMO_LIMIT && !state.entries.contains_key(&key) {
            let now = Instant::now();
            let ttl = self.ttl;
            state
                .entries
                .retain(|_, entry| now.duration_since(entry.oldest_fetched) < ttl);
            if state.entries.len() >= MEMO_LIMIT {
                return;
            }
        }
        state.entries.insert(key, entry);
    }

    /// Drops the memos that used a read started before `moment`, as the cache drops the read.
    pub(super) fn forget_started_before(&self, moment: OffsetDateTime) {
        let mut state = self.lock();
        state
            .entries
            .retain(|_, entry| entry.oldest_started >= moment);
        state.forgets = state.forgets.wrapping_add(1);
        state.forgotten_before = Some(state.forgotten_before.map_or(moment, |m| m.max(moment)));
    }

    /// Drops every memo, as the cache drops every read.
    pub(super) fn clear(&self) {
        let mut state = self.lock();
        state.entries.clear();
        state.clears = state.clears.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{DeletedVault, ProviderRegistration, Read, ReadFailure};

    const TTL: Duration = Duration::from_secs(5);
    const WORKSPACE: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws";

    /// A cache and a memo over reads whose answers the test sets: `Ok(0)` is an unusable answer
    /// (a failure in the snapshot, kept by the cache), `Err(404)` not found (kept), any other
    /// `Err` a failure the cache does not keep.
    struct World {
        cache: ReadCache<Result<u32, u32>>,
        memo: Memo,
        answers: Mutex<HashMap<&'static str, Result<u32, u32>>>,
        fetches: Mutex<Vec<&'static str>>,
    }

    impl World {
        fn new() -> Self {
            Self {
                cache: ReadCache::new(TTL).keeping(|r| *r != Err(503)),
                memo: Memo::new(TTL),
                answers: Mutex::new(HashMap::new()),
                fetches: Mutex::new(Vec::new()),
            }
        }

        fn answer(&self, key: &'static str, answer: Result<u32, u32>) {
            self.answers.lock().unwrap().insert(key, answer);
        }

        fn fetched(&self) -> Vec<&'static str> {
            self.fetches.lock().unwrap().clone()
        }

        async fn read(&self, key: &'static str) -> Result<u32, u32> {
            self.cache
                .get_or_fetch(key, || async {
                    self.fetches.lock().unwrap().push(key);
                    self.answers
                        .lock()
                        .unwrap()
                        .get(key)
                        .copied()
                        .unwrap_or(Ok(1))
                })
                .await
        }

        /// Two rounds of reads, like observe: the workspace, then (concurrently) the vault and
        /// a speculative read whose answer is not used.
        async fn build(&self) -> Snapshot {
            let workspace = self.read("workspace").await;
            let (vault, _) = tokio::join!(self.read("vault"), self.read("speculative"));
            snapshot_of(workspace, vault)
        }

        async fn snapshot(&self, hint: Option<&Workspace>) -> Arc<Snapshot> {
            let id = ArmResourceId::parse(WORKSPACE).unwrap();
            self.memo
                .get_or_build(Recipe::new(&id, hint), &self.cache, || self.build())
                .await
        }

        /// What `Observer::forget_reads_before` does.
        fn forget_before(&self, moment: OffsetDateTime) {
            self.cache.forget_started_before(moment);
            self.memo.forget_started_before(moment);
        }

        /// What `Observer::forget_cached_reads` does.
        fn clear(&self) {
            self.cache.clear();
            self.memo.clear();
        }
    }

    fn snapshot_of(workspace: Result<u32, u32>, vault: Result<u32, u32>) -> Snapshot {
        let read = |answer: Result<u32, u32>| match answer {
            Ok(0) => Read::Failed(ReadFailure {
                what: "vault".into(),
                resource: "unusable".into(),
                status: None,
                code: None,
                message: "unusable".into(),
                transient: false,
            }),
            Ok(n) => Read::Found(n.to_string()),
            Err(404) => Read::NotFound,
            Err(status) => Read::Failed(ReadFailure {
                what: "vault".into(),
                resource: "read".into(),
                status: u16::try_from(status).ok(),
                code: None,
                message: "failed".into(),
                transient: true,
            }),
        };
        Snapshot {
            workspace_id: ArmResourceId::parse(WORKSPACE).unwrap(),
            workspace: Read::NotFound,
            vault: None,
            deleted_vault: Some(read(vault).map(|id| DeletedVault {
                id,
                ..DeletedVault::default()
            })),
            key: None,
            latest_key: None,
            rotation_policy: None,
            role_assignments: None,
            endpoints: None,
            providers: Some(read(workspace).map(|namespace| {
                vec![ProviderRegistration {
                    namespace,
                    registration_state: None,
                }]
            })),
            wiring: None,
        }
    }

    fn hint(vault: &str) -> Workspace {
        Workspace {
            encryption: Some(crate::snapshot::Encryption {
                status: Some("Enabled".into()),
                key_vault_arm_id: Some(vault.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_warm_build_is_the_same_snapshot_without_a_read() {
        let world = World::new();
        let first = world.snapshot(None).await;
        assert_eq!(world.fetched(), ["workspace", "vault", "speculative"]);
        assert_eq!(world.cache.stats(), (0, 3));
        tokio::time::advance(TTL - Duration::from_millis(1)).await;
        let second = world.snapshot(None).await;
        assert!(Arc::ptr_eq(&first, &second), "the memo answered");
        assert_eq!(world.fetched().len(), 3, "nothing read again");
        assert_eq!(
            world.cache.stats(),
            (3, 3),
            "the hit counts as the three cache hits it stands for"
        );
    }

    #[tokio::test]
    async fn an_event_after_a_read_started_forces_a_rebuild() {
        let world = World::new();
        let before = OffsetDateTime::now_utc() - Duration::from_secs(1);
        let first = world.snapshot(None).await;
        world.forget_before(before);
        let kept = world.snapshot(None).await;
        assert!(
            Arc::ptr_eq(&first, &kept),
            "reads started after the change are still good"
        );
        world.answer("vault", Ok(2));
        world.forget_before(OffsetDateTime::now_utc() + Duration::from_secs(1));
        let rebuilt = world.snapshot(None).await;
        assert!(!Arc::ptr_eq(&first, &rebuilt));
        assert_eq!(world.fetched().len(), 6, "every read started before it");
        assert_eq!(*rebuilt, snapshot_of(Ok(1), Ok(2)));
    }

    #[tokio::test]
    async fn a_clear_forces_a_rebuild() {
        let world = World::new();
        let first = world.snapshot(None).await;
        world.clear();
        world.answer("workspace", Ok(7));
        let rebuilt = world.snapshot(None).await;
        assert!(!Arc::ptr_eq(&first, &rebuilt));
        assert_eq!(*rebuilt, snapshot_of(Ok(7), Ok(1)));
        assert_eq!(world.fetched().len(), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn the_memo_expires_with_its_oldest_read() {
        let world = World::new();
        assert_eq!(
            world.read("workspace").await,
            Ok(1),
            "read before the build"
        );
        tokio::time::advance(Duration::from_secs(3)).await;
        let first = world.snapshot(None).await;
        assert_eq!(world.fetched(), ["workspace", "vault", "speculative"]);
        tokio::time::advance(Duration::from_secs(2)).await;
        let rebuilt = world.snapshot(None).await;
        assert!(
            !Arc::ptr_eq(&first, &rebuilt),
            "the workspace read expired, the others did not"
        );
        assert_eq!(
            world.fetched(),
            ["workspace", "vault", "speculative", "workspace"]
        );
    }

    #[tokio::test]
    async fn a_read_the_cache_does_not_keep_is_not_memoized() {
        let world = World::new();
        world.answer("speculative", Err(503));
        let first = world.snapshot(None).await;
        assert_eq!(*first, snapshot_of(Ok(1), Ok(1)));
        let second = world.snapshot(None).await;
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(
            world.fetched(),
            ["workspace", "vault", "speculative", "speculative"],
            "asked again, as the cache does"
        );
        world.answer("speculative", Ok(1));
        let third = world.snapshot(None).await;
        let fourth = world.snapshot(None).await;
        assert!(Arc::ptr_eq(&third, &fourth), "kept once the read succeeds");
    }

    #[tokio::test]
    async fn a_snapshot_with_a_failure_is_not_memoized() {
        let world = World::new();
        world.answer("vault", Ok(0));
        let first = world.snapshot(None).await;
        assert!(matches!(first.deleted_vault, Some(Read::Failed(_))));
        let second = world.snapshot(None).await;
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(*first, *second, "rebuilt from the cache");
        assert_eq!(world.fetched().len(), 3, "the cache still answered");
    }

    #[tokio::test]
    async fn not_found_is_an_answer_worth_memoizing() {
        let world = World::new();
        world.answer("workspace", Err(404));
        let first = world.snapshot(None).await;
        assert_eq!(first.providers, Some(Read::NotFound));
        assert!(Arc::ptr_eq(&first, &world.snapshot(None).await));
    }

    #[tokio::test]
    async fn sweep_builds_bypass_the_memo() {
        let world = World::new();
        let inventory = Arc::new(super::super::bulk::Inventory::empty());
        let outside = world.snapshot(None).await;
        let inside = super::super::bulk::PREFILLED
            .scope(inventory.clone(), world.snapshot(None))
            .await;
        assert!(!Arc::ptr_eq(&outside, &inside), "not answered by the memo");
        world.clear();
        let swept = super::super::bulk::PREFILLED
            .scope(inventory, world.snapshot(None))
            .await;
        let after = world.snapshot(None).await;
        assert!(!Arc::ptr_eq(&swept, &after), "nor kept in it");
        assert!(Arc::ptr_eq(&after, &world.snapshot(None).await));
    }

    #[tokio::test]
    async fn a_memo_answers_only_its_own_hint_and_spelling() {
        let world = World::new();
        let kv1 =
            hint("/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv1");
        let kv1_upper = hint(
            &kv1.encryption
                .as_ref()
                .unwrap()
                .key_vault_arm_id
                .as_ref()
                .unwrap()
                .to_uppercase(),
        );
        let hinted = world.snapshot(Some(&kv1)).await;
        assert!(Arc::ptr_eq(&hinted, &world.snapshot(Some(&kv1)).await));
        let unhinted = world.snapshot(None).await;
        assert!(!Arc::ptr_eq(&hinted, &unhinted));
        assert!(
            Arc::ptr_eq(
                &unhinted,
                &world.snapshot(Some(&Workspace::default())).await
            ),
            "a hint without encryption is no hint"
        );
        let respelled = world.snapshot(Some(&kv1_upper)).await;
        assert!(!Arc::ptr_eq(&unhinted, &respelled));
        assert!(!Arc::ptr_eq(&hinted, &respelled));
        let again = world.snapshot(None).await;
        assert!(Arc::ptr_eq(&again, &world.snapshot(None).await));
        let id = ArmResourceId::parse(&WORKSPACE.to_uppercase()).unwrap();
        let shouted = world
            .memo
            .get_or_build(Recipe::new(&id, None), &world.cache, || world.build())
            .await;
        assert!(
            !Arc::ptr_eq(&again, &shouted),
            "the id is spelled as given in the snapshot"
        );
        assert_eq!(world.fetched().len(), 3, "all from the cache");
    }

    #[tokio::test]
    async fn a_forget_during_the_build_keeps_it_out_of_the_memo() {
        let world = World::new();
        let id = ArmResourceId::parse(WORKSPACE).unwrap();
        let first = world
            .memo
            .get_or_build(Recipe::new(&id, None), &world.cache, || async {
                let snapshot = world.build().await;
                world.forget_before(OffsetDateTime::now_utc() + Duration::from_secs(1));
                snapshot
            })
            .await;
        let second = world.snapshot(None).await;
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(world.fetched().len(), 6, "read again, as the cache forgot");
        assert!(Arc::ptr_eq(&second, &world.snapshot(None).await));
    }

    #[tokio::test]
    async fn a_clear_during_the_build_keeps_it_out_of_the_memo() {
        let world = World::new();
        let id = ArmResourceId::parse(WORKSPACE).unwrap();
        let first = world
            .memo
            .get_or_build(Recipe::new(&id, None), &world.cache, || async {
                let snapshot = world.build().await;
                world.clear();
                snapshot
            })
            .await;
        assert!(!Arc::ptr_eq(&first, &world.snapshot(None).await));
        assert_eq!(world.fetched().len(), 6);
    }
}
