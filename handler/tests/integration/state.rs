//! The state store suite: one set of scenarios, run against both backends through
//! `cmk_guard::state::open`, with the parts users run: a SQLite file shared by two store
//! instances, and a real Azurite (installed by `scripts/test-tools`) started per test on a free
//! loopback port and reached with a container SAS signed here with the emulator's well-known
//! account key. Azurite cannot hand out Entra tokens over plain HTTP, and the Blob SDK has no
//! Shared Key support, so a SAS is the way in; creating each test's container needs account
//! rights, which a hand-signed Shared Key request provides.
//!
//! Concurrency scenarios use two store instances on the same storage (two SQLite connections,
//! two Blob clients), as two Function instances would.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use cmk_guard::azure::{TransportSettings, http_client};
use cmk_guard::outcome::{ActionResult, FindingState, Severity};
use cmk_guard::state::{
    self, CompareAndSet, EventStart, FindingKey, FindingRecord, OutboxMessage, RemediationAttempt,
    StateErrorKind, StateStore,
};
use cmk_guard_blackbox::azurite::Azurite;
use cmk_guard_blackbox::scratch::Scratch;
use serde_json::json;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use tokio::process::Command;

/// A fixed instant; the store never reads the clock, so the tests pick their own times.
const T0: OffsetDateTime = datetime!(2026-11-28 12:00 UTC);

// ---------------------------------------------------------------------------------------------
// Backends

/// Storage that several store instances can be opened on.
enum Backend {
    Sqlite {
        path: PathBuf,
        /// Holds the file with its `-wal`, `-shm` and the workers' start markers; removed on drop.
        _scratch: Scratch,
    },
    Blob {
        sas_url: String,
        _azurite: Box<Azurite>,
    },
}

impl Backend {
    fn sqlite() -> Self {
        let scratch = Scratch::new("state-test");
        Backend::Sqlite {
            path: scratch.join("state.db"),
            _scratch: scratch,
        }
    }

    async fn blob() -> Self {
        let azurite = Azurite::start().await;
        let container = format!("state-{}", uuid::Uuid::new_v4().simple());
        azurite.create_container(&container).await;
        let sas_url = azurite.container_sas_url(&container);
        Backend::Blob {
            sas_url,
            _azurite: Box::new(azurite),
        }
    }

    /// The `CMKGUARD_STATE` value for this storage.
    fn spec(&self) -> String {
        match self {
            Backend::Sqlite { path, .. } => format!("sqlite:{}", path.display()),
            Backend::Blob { sas_url, .. } => sas_url.clone(),
        }
    }

    /// A new store instance on the same storage, as another Function instance would open it.
    async fn open(&self) -> Arc<dyn StateStore> {
        open(&self.spec())
            .await
            .unwrap_or_else(|e| panic!("opening {}: {e}", self.spec()))
    }
}

/// Opens a store the way the handler does: on the shared transport, with the credential from
/// the environment (unused here: every Blob URL in these tests carries a SAS).
async fn open(spec: &str) -> state::Result<Arc<dyn StateStore>> {
    let settings = cmk_guard::settings::Settings::from_lookup(|_: &str| None).unwrap();
    let azure = cmk_guard::azure::Azure::new(&settings.azure(), |_| None).unwrap();
    state::open(
        &state::StateSpec::parse(spec)?,
        &azure.transport,
        &azure.credential,
    )
    .await
}

/// Runs each scenario against SQLite and against Azure Blob on Azurite.
macro_rules! suite {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(&super::Backend::sqlite()).await;
                }
            )*
        }
        mod azure_blob {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(&super::Backend::blob().await).await;
                }
            )*
        }
    };
}

suite!(
    an_event_is_claimed_exactly_once,
    an_event_is_begun_by_one_invocation_and_ended_once,
    concurrent_beginnings_of_one_event_lease_it_once,
    concurrent_claims_of_one_event_have_one_winner,
    finding_state_is_written_with_compare_and_set,
    concurrent_transitions_of_one_finding_have_one_winner,
    open_findings_are_listed_across_workspaces,
    remediation_attempts_are_counted_per_resource,
    remediation_attempts_are_counted_per_rule,
    a_remediation_in_progress_blocks_others_until_its_lease_ends,
    concurrent_remediation_claims_have_one_winner,
    audit_records_are_appended_and_listed_in_order,
    the_outbox_hands_out_each_item_until_it_is_sent,
    the_outbox_survives_reopening,
    concurrent_outbox_claims_hand_each_item_to_one_sender,
    the_sweep_cursor_is_saved_and_cleared,
    managed_resource_group_names_are_a_growing_shared_set,
    pruning_removes_only_what_outlived_its_retention,
);

// ---------------------------------------------------------------------------------------------
// Scenarios

async fn an_event_is_claimed_exactly_once(backend: &Backend) {
    let store = backend.open().await;
    assert!(!store.event_claimed("evt-1").await.unwrap());
    assert!(store.claim_event("evt-1", T0).await.unwrap());
    assert!(store.event_claimed("evt-1").await.unwrap());
    assert!(!store.claim_event("evt-1", T0).await.unwrap());
    assert!(
        !store
            .claim_event("evt-1", T0 + Duration::hours(1))
            .await
            .unwrap()
    );
    assert!(store.claim_event("evt-2", T0).await.unwrap());
    let long_id = format!("/subscriptions/x/{}", "é/".repeat(600));
    assert!(store.claim_event(&long_id, T0).await.unwrap());
    assert!(
        !backend
            .open()
            .await
            .claim_event(&long_id, T0)
            .await
            .unwrap()
    );
}

/// Runs `attempt(store, i)` for every `i` below `n` at once, alternating between two store
/// instances; the results in the order of `i`.
async fn race<T, Fut>(
    stores: &[Arc<dyn StateStore>; 2],
    n: usize,
    attempt: impl Fn(Arc<dyn StateStore>, usize) -> Fut,
) -> Vec<T>
where
    T: Send + 'static,
    Fut: std::future::Future<Output = state::Result<T>> + Send + 'static,
{
    let tasks: Vec<_> = (0..n)
        .map(|i| tokio::spawn(attempt(stores[i % 2].clone(), i)))
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap().unwrap());
    }
    results
}

async fn concurrent_claims_of_one_event_have_one_winner(backend: &Backend) {
    let stores = [backend.open().await, backend.open().await];
    let claimed = race(&stores, 20, |store, _| async move {
        store.claim_event("evt-burst", T0).await
    })
    .await;
    assert_eq!(
        claimed.iter().filter(|won| **won).count(),
        1,
        "20 concurrent claims from two instances"
    );
}

async fn an_event_is_begun_by_one_invocation_and_ended_once(backend: &Backend) {
    let store = backend.open().await;
    let begin = |event: &'static str, owner: &'static str, seconds: i64| {
        let store = store.clone();
        async move {
            store
                .begin_event(
                    event,
                    owner,
                    T0 + Duration::seconds(seconds),
                    Duration::seconds(60),
                )
                .await
                .unwrap()
        }
    };
    assert_eq!(begin("evt-b", "a", 0).await, EventStart::Leased);
    assert_eq!(
        begin("evt-b", "b", 0).await,
        EventStart::Busy,
        "another invocation holds the lease"
    );
    // A failed attempt releases the lease without claiming the event.
    store
        .end_event("evt-b", "a", false, T0, None)
        .await
        .unwrap();
    assert!(!store.event_claimed("evt-b").await.unwrap());
    assert_eq!(
        begin("evt-b", "b", 0).await,
        EventStart::Leased,
        "free again"
    );
    let record = serde_json::json!({"event": {"id": "evt-b"}, "disposition": "evaluated"});
    store
        .end_event("evt-b", "b", true, T0, Some(&record.to_string()))
        .await
        .unwrap();
    assert!(store.event_claimed("evt-b").await.unwrap());
    let audit = store.audit_since(T0).await.unwrap();
    assert_eq!(audit.len(), 1, "the audit record is written with the claim");
    assert_eq!(audit[0].record, record);
    assert_eq!(begin("evt-b", "c", 0).await, EventStart::Handled);
    // A lease left by a crashed invocation ends with its time.
    assert_eq!(begin("evt-c", "dead", 0).await, EventStart::Leased);
    assert_eq!(begin("evt-c", "next", 59).await, EventStart::Busy);
    assert_eq!(begin("evt-c", "next", 61).await, EventStart::Leased);
    // Ending with another owner's name leaves the lease alone.
    store
        .end_event("evt-c", "dead", false, T0, None)
        .await
        .unwrap();
    assert_eq!(begin("evt-c", "third", 62).await, EventStart::Busy);
}

async fn concurrent_beginnings_of_one_event_lease_it_once(backend: &Backend) {
    let stores = [backend.open().await, backend.open().await];
    let started = race(&stores, 20, |store, i| async move {
        store
            .begin_event("evt-race", &format!("owner-{i}"), T0, Duration::seconds(60))
            .await
    })
    .await;
    assert!(
        !started.contains(&EventStart::Handled),
        "nobody claimed the event"
    );
    assert_eq!(
        started.iter().filter(|s| **s == EventStart::Leased).count(),
        1,
        "20 concurrent beginnings from two instances"
    );
}

fn key(workspace: &str, rule: &str) -> FindingKey {
    FindingKey {
        workspace: format!(
            "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/{workspace}"
        ),
        rule: rule.to_owned(),
        resource: "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv1"
            .to_owned(),
    }
}

fn open_finding(at: OffsetDateTime) -> FindingRecord {
    FindingRecord {
        state: FindingState::Open,
        severity: Severity::High,
        first_seen: at,
        last_seen: at,
        last_notified: None,
        observed: "enablePurgeProtection is not set".into(),
    }
}

async fn finding_state_is_written_with_compare_and_set(backend: &Backend) {
    let store = backend.open().await;
    let purge = key("ws1", "vault.purge-protection");
    assert_eq!(store.finding(&purge).await.unwrap(), None);

    let first = open_finding(T0);
    let CompareAndSet::Won(v1) = store.put_finding(&purge, &first, None).await.unwrap() else {
        panic!("creating a new finding must win");
    };
    assert_eq!(
        store.put_finding(&purge, &first, None).await.unwrap(),
        CompareAndSet::Lost,
        "a second create loses"
    );
    let read = store.finding(&purge).await.unwrap().unwrap();
    assert_eq!(read.value, first);
    assert_eq!(read.version, v1);

    let notified = FindingRecord {
        severity: Severity::Critical,
        last_seen: T0 + Duration::minutes(5),
        last_notified: Some(T0 + Duration::minutes(5)),
        observed: "key expired".into(),
        ..first.clone()
    };
    let CompareAndSet::Won(v2) = store
        .put_finding(&purge, &notified, Some(&v1))
        .await
        .unwrap()
    else {
        panic!("a write at the current version must win");
    };
    assert_ne!(v1, v2);
    assert_eq!(
        store.put_finding(&purge, &first, Some(&v1)).await.unwrap(),
        CompareAndSet::Lost,
        "a write at a stale version loses"
    );
    let other_instance = backend.open().await;
    let read = other_instance.finding(&purge).await.unwrap().unwrap();
    assert_eq!(read.value, notified);
    assert_eq!(read.version, v2);

    let resolved = FindingRecord {
        state: FindingState::Resolved,
        ..notified.clone()
    };
    assert!(matches!(
        other_instance
            .put_finding(&purge, &resolved, Some(&v2))
            .await
            .unwrap(),
        CompareAndSet::Won(_)
    ));

    let expiry = key("ws1", "key.expiry");
    store
        .put_finding(&expiry, &open_finding(T0), None)
        .await
        .unwrap();
    store
        .put_finding(&key("ws2", "key.expiry"), &open_finding(T0), None)
        .await
        .unwrap();
    let listed = store.workspace_findings(&purge.workspace).await.unwrap();
    let keys: Vec<_> = listed.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(keys, vec![expiry, purge.clone()]);
    assert_eq!(listed[1].1.value, resolved);
    assert!(
        store
            .workspace_findings("/subscriptions/none")
            .await
            .unwrap()
            .is_empty()
    );
}

async fn open_findings_are_listed_across_workspaces(backend: &Backend) {
    let store = backend.open().await;
    assert!(store.open_findings().await.unwrap().is_empty());
    let resolved = |at| FindingRecord {
        state: FindingState::Resolved,
        ..open_finding(at)
    };
    let written = [
        (key("ws2", "key.expiry"), open_finding(T0)),
        (key("ws1", "vault.purge-protection"), open_finding(T0)),
        (key("ws1", "key.expiry"), resolved(T0)),
        (key("ws3", "vault.soft-delete"), resolved(T0)),
        (
            FindingKey {
                resource: "https://kv1.vault.azure.net/keys/k/é".to_owned(),
                ..key("ws1", "key.expiry")
            },
            open_finding(T0),
        ),
    ];
    for (key, record) in &written {
        store.put_finding(key, record, None).await.unwrap();
    }
    let listed = store.open_findings().await.unwrap();
    let keys: Vec<_> = listed.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(
        keys,
        vec![
            written[4].0.clone(),
            written[1].0.clone(),
            written[0].0.clone()
        ],
        "open ones only, by workspace, rule and resource"
    );
    assert!(listed.iter().all(|(_, r)| r.value == open_finding(T0)));

    // The listed version is the one to pass back: closing a finding takes it off the list,
    // and reopening one puts it back, for every instance.
    let (purge, at) = &listed[1];
    assert!(matches!(
        store
            .put_finding(purge, &resolved(T0), Some(&at.version))
            .await
            .unwrap(),
        CompareAndSet::Won(_)
    ));
    let soft_delete = &written[3].0;
    let stored = store.finding(soft_delete).await.unwrap().unwrap();
    store
        .put_finding(soft_delete, &open_finding(T0), Some(&stored.version))
        .await
        .unwrap();
    let other_instance = backend.open().await;
    let keys: Vec<_> = other_instance
        .open_findings()
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        keys,
        vec![
            written[4].0.clone(),
            written[0].0.clone(),
            soft_delete.clone()
        ]
    );
}

async fn concurrent_transitions_of_one_finding_have_one_winner(backend: &Backend) {
    let stores = [backend.open().await, backend.open().await];
    let purge = key("ws1", "vault.purge-protection");
    // Creation race: every instance sees no record and creates one.
    let creates = race(&stores, 20, |store, _| {
        let purge = purge.clone();
        async move { store.put_finding(&purge, &open_finding(T0), None).await }
    })
    .await;
    assert_eq!(
        creates
            .iter()
            .filter(|c| matches!(c, CompareAndSet::Won(_)))
            .count(),
        1,
        "one of 20 concurrent creates wins"
    );

    // Transition race: every instance read the same version and resolves the finding.
    let version = stores[0].finding(&purge).await.unwrap().unwrap().version;
    let transitions = race(&stores, 20, |store, i| {
        let purge = purge.clone();
        let version = version.clone();
        async move {
            let resolved = FindingRecord {
                state: FindingState::Resolved,
                last_notified: Some(T0 + Duration::minutes(1)),
                observed: format!("writer {i}"),
                ..open_finding(T0)
            };
            store.put_finding(&purge, &resolved, Some(&version)).await
        }
    })
    .await;
    let winners: Vec<_> = transitions
        .into_iter()
        .enumerate()
        .filter_map(|(i, result)| match result {
            CompareAndSet::Won(version) => Some((i, version)),
            CompareAndSet::Lost => None,
        })
        .collect();
    assert_eq!(winners.len(), 1, "one of 20 concurrent transitions wins");
    let stored = stores[1].finding(&purge).await.unwrap().unwrap();
    assert_eq!(stored.value.observed, format!("writer {}", winners[0].0));
    assert_eq!(stored.version, winners[0].1);
}

async fn remediation_attempts_are_counted_per_resource(backend: &Backend) {
    let store = backend.open().await;
    let vault = "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv1";
    for (minutes, result) in [
        (0, ActionResult::Failed),
        (20, ActionResult::Applied),
        (50, ActionResult::Failed),
    ] {
        store
            .record_attempt(&RemediationAttempt {
                resource: vault.into(),
                rule: "vault.purge-protection".into(),
                at: T0 + Duration::minutes(minutes),
                result,
            })
            .await
            .unwrap();
    }
    store
        .record_attempt(&RemediationAttempt {
            resource: "/subscriptions/s1/other".into(),
            rule: "vault.purge-protection".into(),
            at: T0,
            result: ActionResult::Applied,
        })
        .await
        .unwrap();
    assert_eq!(store.count_attempts(vault, T0).await.unwrap(), 3);
    let an_hour_before_t0_plus_70 = T0 + Duration::minutes(10);
    assert_eq!(
        backend
            .open()
            .await
            .count_attempts(vault, an_hour_before_t0_plus_70)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .count_attempts(vault, T0 + Duration::hours(2))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .count_attempts("/subscriptions/none", T0)
            .await
            .unwrap(),
        0
    );
}

async fn remediation_attempts_are_counted_per_rule(backend: &Backend) {
    let store = backend.open().await;
    let vault = "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv1";
    for (minutes, rule) in [
        (0, "vault.purge-protection"),
        (20, "workspace.key-access"),
        (50, "vault.purge-protection"),
    ] {
        store
            .record_attempt(&RemediationAttempt {
                resource: vault.into(),
                rule: rule.into(),
                at: T0 + Duration::minutes(minutes),
                result: ActionResult::Applied,
            })
            .await
            .unwrap();
    }
    store
        .record_attempt(&RemediationAttempt {
            resource: "/subscriptions/s1/other".into(),
            rule: "vault.purge-protection".into(),
            at: T0,
            result: ActionResult::Applied,
        })
        .await
        .unwrap();
    let other = backend.open().await;
    for (rule, since, expected) in [
        ("vault.purge-protection", T0, 2),
        ("vault.purge-protection", T0 + Duration::minutes(10), 1),
        ("workspace.key-access", T0, 1),
        ("workspace.key-access", T0 + Duration::minutes(21), 0),
        ("key.rotation-policy", T0, 0),
    ] {
        assert_eq!(
            other.count_rule_attempts(vault, rule, since).await.unwrap(),
            expected,
            "{rule} since {since}"
        );
    }
    assert_eq!(
        store
            .count_rule_attempts("/subscriptions/none", "vault.purge-protection", T0)
            .await
            .unwrap(),
        0
    );
}

async fn a_remediation_in_progress_blocks_others_until_its_lease_ends(backend: &Backend) {
    let store = backend.open().await;
    let (vault, rule) = ("/subscriptions/s1/vaults/kv1", "vault.purge-protection");
    let lease = Duration::minutes(5);
    assert!(
        store
            .claim_remediation(vault, rule, "first", T0, lease)
            .await
            .unwrap()
    );
    // A restarted process (another owner) must not act while the lease runs.
    let restarted = backend.open().await;
    assert!(
        !restarted
            .claim_remediation(vault, rule, "restarted", T0 + Duration::minutes(1), lease)
            .await
            .unwrap()
    );
    // Other rules and resources are independent.
    assert!(
        restarted
            .claim_remediation(vault, "key.rotation-policy", "restarted", T0, lease)
            .await
            .unwrap()
    );
    // The holder may extend its own claim.
    assert!(
        store
            .claim_remediation(vault, rule, "first", T0 + Duration::minutes(4), lease)
            .await
            .unwrap()
    );
    assert!(
        !restarted
            .claim_remediation(vault, rule, "restarted", T0 + Duration::minutes(6), lease)
            .await
            .unwrap(),
        "the extended lease still runs"
    );
    // Once the lease has run out, another owner may take over.
    assert!(
        restarted
            .claim_remediation(vault, rule, "restarted", T0 + Duration::minutes(9), lease)
            .await
            .unwrap()
    );
    // Releasing a claim one no longer holds changes nothing.
    store
        .release_remediation(vault, rule, "first")
        .await
        .unwrap();
    assert!(
        !store
            .claim_remediation(vault, rule, "third", T0 + Duration::minutes(10), lease)
            .await
            .unwrap()
    );
    restarted
        .release_remediation(vault, rule, "restarted")
        .await
        .unwrap();
    assert!(
        store
            .claim_remediation(vault, rule, "third", T0 + Duration::minutes(10), lease)
            .await
            .unwrap(),
        "a released claim is free at once"
    );
}

async fn concurrent_remediation_claims_have_one_winner(backend: &Backend) {
    let stores = [backend.open().await, backend.open().await];
    let claimed = race(&stores, 20, |store, i| async move {
        store
            .claim_remediation(
                "/subscriptions/s1/vaults/kv1",
                "vault.purge-protection",
                &format!("owner-{i}"),
                T0,
                Duration::minutes(5),
            )
            .await
    })
    .await;
    assert_eq!(
        claimed.iter().filter(|won| **won).count(),
        1,
        "20 concurrent claims from two instances"
    );

    // Takeover race after the lease ran out: still one winner.
    let later = T0 + Duration::minutes(6);
    let claimed = race(&stores, 20, |store, i| async move {
        store
            .claim_remediation(
                "/subscriptions/s1/vaults/kv1",
                "vault.purge-protection",
                &format!("late-{i}"),
                later,
                Duration::minutes(5),
            )
            .await
    })
    .await;
    assert_eq!(
        claimed.iter().filter(|won| **won).count(),
        1,
        "20 concurrent takeovers of an expired claim"
    );
}

async fn audit_records_are_appended_and_listed_in_order(backend: &Backend) {
    let store = backend.open().await;
    for (minutes, decision) in [(2, "notify"), (0, "evaluate"), (1, "remediate")] {
        store
            .append_audit(
                T0 + Duration::minutes(minutes),
                &json!({"decision": decision, "workspace": "ws1"}).to_string(),
            )
            .await
            .unwrap();
    }
    let all = backend.open().await.audit_since(T0).await.unwrap();
    let decisions: Vec<_> = all.iter().map(|e| e.record["decision"].clone()).collect();
    assert_eq!(decisions, vec!["evaluate", "remediate", "notify"]);
    assert_eq!(all[1].at, T0 + Duration::minutes(1));
    let recent = store.audit_since(T0 + Duration::minutes(1)).await.unwrap();
    assert_eq!(recent.len(), 2);
    assert!(
        store
            .audit_since(T0 + Duration::hours(1))
            .await
            .unwrap()
            .is_empty()
    );
}

fn teams(id: &str) -> OutboxMessage {
    OutboxMessage {
        id: id.to_owned(),
        channel: "teams".into(),
        payload: json!({"type": "message", "attachments": [{"finding": id}]}),
    }
}

async fn the_outbox_hands_out_each_item_until_it_is_sent(backend: &Backend) {
    let store = backend.open().await;
    let lease = Duration::minutes(2);
    let due_at = T0 + Duration::minutes(1);
    assert!(
        store
            .enqueue_notification(&teams("n1"), T0, due_at)
            .await
            .unwrap()
    );
    assert!(
        !store
            .enqueue_notification(&teams("n1"), T0, T0)
            .await
            .unwrap(),
        "the same id is queued once"
    );
    assert!(
        store
            .claim_due_notifications(T0, lease, 10)
            .await
            .unwrap()
            .is_empty(),
        "not due yet"
    );

    let handed = store
        .claim_due_notifications(due_at, lease, 10)
        .await
        .unwrap();
    assert_eq!(handed.len(), 1);
    assert_eq!(handed[0].notification, teams("n1"));
    assert_eq!(handed[0].attempts, 1);
    assert_eq!(handed[0].enqueued_at, T0);
    assert_eq!(handed[0].next_attempt_at, due_at + lease);
    assert!(
        store
            .claim_due_notifications(due_at + Duration::minutes(1), lease, 10)
            .await
            .unwrap()
            .is_empty(),
        "an item is not handed out again while its sender holds it"
    );

    // The send failed: try again in ten minutes.
    let retry_at = due_at + Duration::minutes(10);
    store
        .reschedule_notification("n1", retry_at, "HTTP 503 from the webhook")
        .await
        .unwrap();
    assert!(
        store
            .claim_due_notifications(due_at + lease, lease, 10)
            .await
            .unwrap()
            .is_empty(),
        "rescheduled to later"
    );
    let again = store
        .claim_due_notifications(retry_at, lease, 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 2);
    assert_eq!(
        again[0].last_error.as_deref(),
        Some("HTTP 503 from the webhook")
    );

    store
        .mark_notification_sent("n1", retry_at + Duration::seconds(1))
        .await
        .unwrap();
    assert!(
        store
            .claim_due_notifications(retry_at + Duration::hours(1), lease, 10)
            .await
            .unwrap()
            .is_empty(),
        "a sent item is never handed out again"
    );
    store
        .reschedule_notification("n1", retry_at, "late failure report")
        .await
        .unwrap();
    assert!(
        store
            .claim_due_notifications(retry_at + Duration::hours(1), lease, 10)
            .await
            .unwrap()
            .is_empty(),
        "rescheduling a sent item changes nothing"
    );
    assert!(
        !store
            .enqueue_notification(&teams("n1"), retry_at, retry_at)
            .await
            .unwrap(),
        "a sent id is not queued again"
    );
    store.mark_notification_sent("unknown", T0).await.unwrap();

    // Limit and order: the oldest items first.
    for (minutes, id) in [(3, "c"), (1, "a"), (2, "b")] {
        store
            .enqueue_notification(&teams(id), T0 + Duration::minutes(minutes), T0)
            .await
            .unwrap();
    }
    let first_two = store
        .claim_due_notifications(T0 + Duration::hours(3), lease, 2)
        .await
        .unwrap();
    let ids: Vec<_> = first_two
        .iter()
        .map(|item| item.notification.id.as_str())
        .collect();
    assert_eq!(ids, vec!["a", "b"]);
}

async fn the_outbox_survives_reopening(backend: &Backend) {
    {
        let store = backend.open().await;
        store
            .enqueue_notification(&teams("kept"), T0, T0)
            .await
            .unwrap();
        let handed = store
            .claim_due_notifications(T0, Duration::minutes(1), 10)
            .await
            .unwrap();
        assert_eq!(handed.len(), 1);
        // The sender dies here: neither sent nor rescheduled.
    }
    let reopened = backend.open().await;
    assert!(
        reopened
            .claim_due_notifications(T0 + Duration::seconds(30), Duration::minutes(1), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let after_lease = reopened
        .claim_due_notifications(T0 + Duration::minutes(1), Duration::minutes(1), 10)
        .await
        .unwrap();
    assert_eq!(
        after_lease.len(),
        1,
        "the item comes back when the lease ends"
    );
    assert_eq!(after_lease[0].notification, teams("kept"));
    assert_eq!(after_lease[0].attempts, 2);
}

async fn concurrent_outbox_claims_hand_each_item_to_one_sender(backend: &Backend) {
    let stores = [backend.open().await, backend.open().await];
    for i in 0..6 {
        stores[0]
            .enqueue_notification(&teams(&format!("n{i}")), T0, T0)
            .await
            .unwrap();
    }
    let claims = race(&stores, 8, |store, _| async move {
        store
            .claim_due_notifications(T0, Duration::minutes(5), 10)
            .await
    })
    .await;
    let mut handed: Vec<String> = claims
        .into_iter()
        .flatten()
        .map(|item| item.notification.id)
        .collect();
    handed.sort();
    assert_eq!(handed, vec!["n0", "n1", "n2", "n3", "n4", "n5"]);
}

async fn the_sweep_cursor_is_saved_and_cleared(backend: &Backend) {
    let store = backend.open().await;
    assert_eq!(store.sweep_cursor().await.unwrap(), None);
    store.set_sweep_cursor(Some("page-2 token")).await.unwrap();
    store.set_sweep_cursor(Some("page-3 token")).await.unwrap();
    assert_eq!(
        backend
            .open()
            .await
            .sweep_cursor()
            .await
            .unwrap()
            .as_deref(),
        Some("page-3 token")
    );
    store.set_sweep_cursor(None).await.unwrap();
    assert_eq!(store.sweep_cursor().await.unwrap(), None);
    store.set_sweep_cursor(None).await.unwrap();
}

async fn managed_resource_group_names_are_a_growing_shared_set(backend: &Backend) {
    let store = backend.open().await;
    assert!(store.managed_resource_groups().await.unwrap().is_empty());
    let names = |list: &[&str]| list.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
    store
        .add_managed_resource_groups(&names(&["Contoso-ML-Managed", "rg-b"]))
        .await
        .unwrap();
    // Another instance adds its own, with one already known in another case.
    let other = backend.open().await;
    other
        .add_managed_resource_groups(&names(&["RG-B", "rg-a"]))
        .await
        .unwrap();
    let expected = ["contoso-ml-managed", "rg-a", "rg-b"];
    assert_eq!(store.managed_resource_groups().await.unwrap(), expected);
    assert_eq!(
        backend
            .open()
            .await
            .managed_resource_groups()
            .await
            .unwrap(),
        expected
    );
    // Concurrent additions all land.
    let adds: Vec<_> = (0..4)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .add_managed_resource_groups(&[format!("rg-concurrent-{i}")])
                    .await
            })
        })
        .collect();
    for add in adds {
        add.await.unwrap().unwrap();
    }
    assert_eq!(store.managed_resource_groups().await.unwrap().len(), 7);
}

async fn pruning_removes_only_what_outlived_its_retention(backend: &Backend) {
    let store = backend.open().await;
    let now = T0 + Duration::days(8);
    store.claim_event("old", T0).await.unwrap();
    store
        .claim_event("recent", now - Duration::hours(23))
        .await
        .unwrap();
    for at in [T0, now - Duration::hours(1)] {
        store
            .record_attempt(&RemediationAttempt {
                resource: "/subscriptions/s1/vaults/kv1".into(),
                rule: "vault.purge-protection".into(),
                at,
                result: ActionResult::Applied,
            })
            .await
            .unwrap();
    }
    store
        .enqueue_notification(&teams("sent-long-ago"), T0, T0)
        .await
        .unwrap();
    store
        .mark_notification_sent("sent-long-ago", T0)
        .await
        .unwrap();
    store
        .enqueue_notification(&teams("still-queued"), T0, T0)
        .await
        .unwrap();
    store
        .claim_remediation("/r", "rule", "gone", T0, Duration::minutes(5))
        .await
        .unwrap();
    store
        .claim_remediation("/r", "live", "holder", now, Duration::minutes(5))
        .await
        .unwrap();
    store
        .put_finding(&key("ws1", "key.expiry"), &open_finding(T0), None)
        .await
        .unwrap();
    store
        .append_audit(T0, &json!({"kept": true}).to_string())
        .await
        .unwrap();

    assert_eq!(store.prune(now).await.unwrap(), 4);
    assert_eq!(store.prune(now).await.unwrap(), 0, "pruning is idempotent");

    assert!(store.claim_event("old", now).await.unwrap(), "forgotten");
    assert!(!store.claim_event("recent", now).await.unwrap(), "kept");
    assert_eq!(
        store
            .count_attempts("/subscriptions/s1/vaults/kv1", T0)
            .await
            .unwrap(),
        1
    );
    assert!(
        store
            .enqueue_notification(&teams("sent-long-ago"), now, now)
            .await
            .unwrap(),
        "a pruned sent id may be queued again"
    );
    let queued: Vec<_> = store
        .claim_due_notifications(now, Duration::minutes(1), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|item| item.notification.id)
        .collect();
    assert_eq!(queued, vec!["still-queued", "sent-long-ago"]);
    assert!(
        !store
            .claim_remediation("/r", "live", "other", now, Duration::minutes(5))
            .await
            .unwrap()
    );
    assert!(
        store
            .finding(&key("ws1", "key.expiry"))
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(store.audit_since(T0).await.unwrap().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Backend-specific behaviour

#[tokio::test]
async fn an_unknown_state_spec_is_a_configuration_error() {
    let error = open("redis://cache/0").await.unwrap_err();
    assert_eq!(error.kind, StateErrorKind::Config);
    assert!(
        error.message.contains("CMKGUARD_STATE"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn sqlite_creates_the_file_and_reopens_its_data() {
    let backend = Backend::sqlite();
    let Backend::Sqlite { path, .. } = &backend else {
        unreachable!()
    };
    backend.open().await.claim_event("evt", T0).await.unwrap();
    assert!(path.is_file());
    assert!(!backend.open().await.claim_event("evt", T0).await.unwrap());
}

/// Set in the child processes of [`two_processes_share_one_sqlite_file`].
const WORKER_DB: &str = "CMKGUARD_STATE_TEST_WORKER_DB";
/// How many events and findings each process races for.
const RACED: usize = 200;
/// Set in the child processes: which of the two workers this is.
const WORKER_INDEX: &str = "CMKGUARD_STATE_TEST_WORKER_INDEX";

/// Two real processes (this test binary, started again in worker mode) race for the same event
/// ids and finding creations on one SQLite file: each is won exactly once overall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_one_sqlite_file() {
    if let Some(db) = std::env::var_os(WORKER_DB) {
        let index = std::env::var(WORKER_INDEX).unwrap();
        race_as_worker(PathBuf::from(db), &index).await;
        return;
    }
    let backend = Backend::sqlite();
    let Backend::Sqlite { path, .. } = &backend else {
        unreachable!()
    };
    // Create the file first so that both workers start racing at once.
    backend.open().await;
    let workers: Vec<_> = (0..2)
        .map(|index| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "state::two_processes_share_one_sqlite_file",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(WORKER_DB, path)
                .env(WORKER_INDEX, index.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .unwrap()
        })
        .collect();
    let mut won: Vec<String> = Vec::new();
    let mut winners_per_process = Vec::new();
    for worker in workers {
        let output = worker.wait_with_output().await.unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "worker failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let lines: Vec<String> = stdout
            .lines()
            // libtest may print its own text before ours on the same line.
            .filter_map(|line| line.split_once("WON ").map(|(_, won)| won.to_owned()))
            .collect();
        winners_per_process.push(lines.len());
        won.extend(lines);
    }
    won.sort();
    let mut expected: Vec<String> = (0..RACED)
        .flat_map(|i| [format!("event evt-{i}"), format!("finding ws{i}")])
        .collect();
    expected.sort();
    assert_eq!(
        won, expected,
        "every event and finding is won exactly once across both processes \
         (wins per process: {winners_per_process:?})"
    );
}

/// The worker side: waits for the other worker, then claims every event and creates every
/// finding, from 8 tasks at once, and prints what it won.
async fn race_as_worker(db: PathBuf, index: &str) {
    let store = open(&format!("sqlite:{}", db.display())).await.unwrap();
    // A start line made of two marker files, so that both processes race from the first id.
    let marker = |index: &str| PathBuf::from(format!("{}.ready-{index}", db.display()));
    std::fs::write(marker(index), b"").unwrap();
    let started = std::time::Instant::now();
    while !(marker("0").exists() && marker("1").exists()) {
        assert!(
            started.elapsed() < StdDuration::from_secs(30),
            "the other worker never started"
        );
        tokio::time::sleep(StdDuration::from_millis(2)).await;
    }
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut won = Vec::new();
                for i in (task..RACED).step_by(8) {
                    if store.claim_event(&format!("evt-{i}"), T0).await.unwrap() {
                        won.push(format!("event evt-{i}"));
                    }
                    let created = store
                        .put_finding(
                            &key(&format!("ws{i}"), "key.expiry"),
                            &open_finding(T0),
                            None,
                        )
                        .await
                        .unwrap();
                    if matches!(created, CompareAndSet::Won(_)) {
                        won.push(format!("finding ws{i}"));
                    }
                }
                won
            })
        })
        .collect();
    for task in tasks {
        for line in task.await.unwrap() {
            println!("WON {line}");
        }
    }
}

#[tokio::test]
async fn an_unreachable_blob_store_is_transient_and_never_shows_the_sas() {
    // A port that was free a moment ago: connections are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!(
        "http://127.0.0.1:{port}/devstoreaccount1/state?sv=2021-08-06&se=2030-01-01T00%3A00%3A00Z&sr=c&sp=racwdl&sig=TOPSECRETSIGNATURE%3D"
    );
    let store = open(&url).await.unwrap();
    let error = store.claim_event("evt", T0).await.unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert!(!error.message.contains("TOPSECRET"), "{error}");
    assert!(!error.message.contains("sig="), "{error}");
    assert!(error.message.contains("127.0.0.1"), "{error}");
}

#[tokio::test]
async fn a_rejected_sas_is_a_permanent_error_that_names_the_fix() {
    let azurite = Azurite::start().await;
    azurite.create_container("state").await;
    let forged = format!(
        "{}/state?sv=2021-08-06&se=2030-01-01T00%3A00%3A00Z&sr=c&sp=racwdl&sig=Zm9yZ2VkLXNpZ25hdHVyZQ%3D%3D",
        azurite.account_url()
    );
    let store = open(&forged).await.unwrap();
    let error = store.claim_event("evt", T0).await.unwrap_err();
    assert_eq!(error.kind, StateErrorKind::Permanent, "{error}");
    assert!(error.message.contains("HTTP 403"), "{error}");
    assert!(
        error.message.contains("Storage Blob Data Contributor"),
        "{error}"
    );
    assert!(!error.message.contains("Zm9yZ2Vk"), "{error}");
}

#[tokio::test]
async fn a_missing_container_is_a_permanent_error_that_names_the_fix() {
    let azurite = Azurite::start().await;
    let store = open(&azurite.container_sas_url("never-created"))
        .await
        .unwrap();
    let error = store.claim_event("evt", T0).await.unwrap_err();
    assert_eq!(error.kind, StateErrorKind::Permanent, "{error}");
    assert!(error.message.contains("ContainerNotFound"), "{error}");
    assert!(!error.message.contains("sig="), "{error}");
}

#[tokio::test]
async fn blob_attempts_recorded_before_the_rule_label_are_still_counted_per_rule() {
    use sha2::Digest;
    let backend = Backend::blob().await;
    let vault = "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv1";
    // An attempt as an earlier version wrote it: the blob holds the rule, its metadata does not.
    let hashed: String = sha2::Sha256::digest(vault.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let nanos = T0.unix_timestamp_nanos();
    let name = format!("attempts/{hashed}/{nanos:020}-{}", uuid::Uuid::new_v4());
    let (container, sas) = backend.spec().split_once('?').map_or_else(
        || panic!("the blob backend's URL carries a SAS"),
        |(c, q)| (c.to_owned(), q.to_owned()),
    );
    let body = json!({"writer": "an earlier version", "value": {
        "resource": vault, "rule": "vault.purge-protection",
        "at": "2026-11-28T12:00:00Z", "result": "applied"}});
    let response = http_client(&TransportSettings::default())
        .unwrap()
        .put(format!("{container}/{name}?{sas}"))
        .header("x-ms-blob-type", "BlockBlob")
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let store = backend.open().await;
    assert_eq!(store.count_attempts(vault, T0).await.unwrap(), 1);
    for (rule, expected) in [("vault.purge-protection", 1), ("workspace.key-access", 0)] {
        assert_eq!(
            store.count_rule_attempts(vault, rule, T0).await.unwrap(),
            expected,
            "{rule}"
        );
    }
}

#[tokio::test]
async fn blob_findings_written_before_the_state_label_are_still_listed_when_open() {
    use sha2::Digest;
    let backend = Backend::blob().await;
    let hex = |text: &str| -> String {
        sha2::Sha256::digest(text.as_bytes())
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    };
    let (container, sas) = backend.spec().split_once('?').map_or_else(
        || panic!("the blob backend's URL carries a SAS"),
        |(c, q)| (c.to_owned(), q.to_owned()),
    );
    let http = http_client(&TransportSettings::default()).unwrap();
    // Findings as an earlier version wrote them: the blob holds the state, its metadata does not.
    for (workspace, state) in [("ws-open", "open"), ("ws-resolved", "resolved")] {
        let key = key(workspace, "vault.purge-protection");
        let name = format!(
            "findings/{}/{}",
            hex(&key.workspace),
            hex(&format!("{}\n{}", key.rule, key.resource))
        );
        let body = json!({"writer": "an earlier version", "value": {
            "key": key,
            "record": {"state": state, "severity": "high",
                       "first_seen": "2026-11-28T12:00:00Z", "last_seen": "2026-11-28T12:00:00Z",
                       "last_notified": null, "observed": "enablePurgeProtection is not set"}}});
        let response = http
            .put(format!("{container}/{name}?{sas}"))
            .header("x-ms-blob-type", "BlockBlob")
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201);
    }
    let store = backend.open().await;
    let open = store.open_findings().await.unwrap();
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0].0, key("ws-open", "vault.purge-protection"));
    assert_eq!(open[0].1.value, open_finding(T0));
    assert_eq!(
        store.finding(&open[0].0).await.unwrap().map(|f| f.version),
        Some(open[0].1.version.clone()),
        "the blob is the one the store reads by key"
    );
}

// ---------------------------------------------------------------------------------------------
// Azurite
