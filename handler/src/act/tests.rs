use super::*;
use crate::notify::{Alert, Channel, Message, NotifySettings};
use crate::outcome::{Disposition, EventRef};
use crate::settings::Settings;
use crate::state::OutboxMessage;
use cmk_guard_blackbox::scratch::Scratch;
use cmk_guard_blackbox::sink::Sink;
use time::macros::datetime;

const NOW: OffsetDateTime = datetime!(2026-11-28 12:00 UTC);

/// An actor on a fresh SQLite file whose only channel is Teams, posting to `sink`; the
/// file lives in the scratch directory returned with it.
async fn actor(sink: &Sink) -> (Actor, Scratch) {
    let settings = Settings::from_lookup(|_: &str| None).unwrap();
    let azure = crate::azure::Azure::new(&settings.azure(), |_| None).unwrap();
    let teams = sink.url("teams");
    let notify = NotifySettings::from_lookup(|name| {
        (name == "CMKGUARD_TEAMS_WEBHOOK_URL").then(|| teams.clone())
    })
    .unwrap();
    let notifier = Notifier::new(&notify, azure.http.clone(), &settings.transport, None).unwrap();
    let scratch = Scratch::new("act");
    let store = crate::state::sqlite::SqliteStore::open(&scratch.join("state.db"))
        .await
        .unwrap();
    let actor = Actor {
        store: Arc::new(store),
        notifier,
        remediator: Remediator::new(&azure),
        instance: "test".to_owned(),
        invocations: std::sync::atomic::AtomicU64::new(0),
        identity: azure.clone(),
        arm_endpoint: settings.arm_endpoint.to_string(),
        own_object_id: tokio::sync::OnceCell::new(),
        outbox_checked: std::sync::Mutex::new(None),
        findings_log: None,
        dependents: crate::who_uses::Dependents::new(&azure, &settings.intake),
    };
    (actor, scratch)
}

fn sweep_outcome() -> Outcome {
    Outcome::new(
        EventRef {
            id: Some("sweep-1".to_owned()),
            event_type: Some("cmk-guard.Sweep".to_owned()),
            subject: None,
        },
        Disposition::Evaluated,
        None,
    )
}

#[tokio::test]
async fn observe_mode_sends_nothing_not_even_outbox_retries_or_the_digest() {
    let sink = Sink::start().await;
    let (actor, _state) = actor(&sink).await;
    let policy = Policy::default();
    let digest = merge_digest(None, &[]);
    let queued = OutboxMessage {
        id: "an alert that failed in alert mode".to_owned(),
        channel: "teams".to_owned(),
        payload: serde_json::to_value(Message::for_channel(
            Channel::Teams,
            Alert::Digest(&digest),
            "an alert that failed in alert mode",
            NOW,
        ))
        .unwrap(),
    };
    assert!(
        actor
            .store
            .enqueue_notification(&queued, NOW, NOW - Duration::minutes(1))
            .await
            .unwrap()
    );
    let situation = |mode| Situation {
        origin: Origin::Check,
        policy: &policy,
        mode,
        now: NOW,
        deadline: Instant::now() + std::time::Duration::from_secs(10),
        audit: false,
    };

    let mut observed = sweep_outcome();
    actor
        .act(&mut observed, &[], &situation(Mode::Observe))
        .await
        .unwrap();
    actor
        .send_digest(&mut observed, &digest, &policy, Mode::Observe, NOW)
        .await
        .unwrap();
    assert_eq!(observed.actions, Vec::new());
    assert_eq!(sink.received("teams").len(), 0);

    let mut alerted = sweep_outcome();
    actor
        .act(&mut alerted, &[], &situation(Mode::Alert))
        .await
        .unwrap();
    actor
        .send_digest(&mut alerted, &digest, &policy, Mode::Alert, NOW)
        .await
        .unwrap();
    assert_eq!(
        sink.received("teams").len(),
        1,
        "the queued item; no digest, with nothing open: {:?}",
        alerted.actions
    );
}

/// Stores an open medium finding last told about `hours_ago` before [`NOW`].
async fn open_finding(actor: &Actor, resource: &str, hours_ago: i64) {
    let key = FindingKey {
        workspace: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws".to_owned(),
        rule: "key.rotation-policy".to_owned(),
        resource: resource.to_owned(),
    };
    let told = NOW - Duration::hours(hours_ago);
    let record = FindingRecord {
        state: FindingState::Open,
        severity: Severity::Medium,
        first_seen: told,
        last_seen: told,
        last_notified: Some(told),
        observed: "no rotation policy".to_owned(),
    };
    let stored = actor.store.put_finding(&key, &record, None).await.unwrap();
    assert!(matches!(stored, CompareAndSet::Won(_)));
}

#[tokio::test]
async fn a_digest_goes_out_once_per_interval_and_only_with_something_not_told_lately() {
    let sink = Sink::start().await;
    let (actor, _state) = actor(&sink).await;
    let policy = Policy::default();
    let digest = merge_digest(None, &[]);
    let sweep = |now: OffsetDateTime| {
        let actor = &actor;
        let policy = &policy;
        let digest = &digest;
        async move {
            let mut outcome = sweep_outcome();
            actor
                .send_digest(&mut outcome, digest, policy, Mode::Alert, now)
                .await
                .unwrap();
            outcome.actions.len()
        }
    };

    open_finding(&actor, "/subscriptions/s/vaults/kv1/keys/told-just-now", 0).await;
    assert_eq!(sweep(NOW).await, 0, "everything open was told just now");
    assert_eq!(sink.received("teams").len(), 0);

    open_finding(
        &actor,
        "/subscriptions/s/vaults/kv1/keys/told-yesterday",
        30,
    )
    .await;
    assert_eq!(sweep(NOW).await, 1, "one finding not told for a day");
    assert_eq!(
        sweep(NOW + Duration::hours(1)).await,
        0,
        "a second sweep the same day"
    );
    assert_eq!(sink.received("teams").len(), 1);
    assert_eq!(sweep(NOW + Duration::hours(12)).await, 1, "the next day");
    assert_eq!(sink.received("teams").len(), 2);
}

#[test]
fn only_our_own_object_id_is_our_own_and_an_unknown_one_may_be() {
    assert_eq!(cause_of("OID-1", Some("oid-1")), Cause::Own);
    assert_eq!(cause_of("oid-2", Some("oid-1")), Cause::Other);
    assert_eq!(cause_of("oid-2", None), Cause::Unknown);
}

#[tokio::test]
async fn an_event_without_a_caller_may_be_our_own_and_a_check_never_is() {
    let sink = Sink::start().await;
    let (actor, _state) = actor(&sink).await;
    assert_eq!(actor.cause(Origin::Check).await, Cause::Other);
    assert_eq!(
        actor.cause(Origin::Event { caller: None }).await,
        Cause::Unknown
    );
}

#[tokio::test]
async fn every_invocation_owns_its_leases_under_this_instance() {
    let sink = Sink::start().await;
    let (actor, _state) = actor(&sink).await;
    let owners: Vec<String> = (0..3).map(|_| actor.owner()).collect();
    assert!(owners.iter().all(|o| o.starts_with("test/")));
    assert_ne!(owners[0], owners[1]);
    assert_ne!(owners[1], owners[2]);
    // Two invocations' leases exclude each other, as two instances' do.
    let store = &actor.store;
    let lease = time::Duration::seconds(60);
    assert_eq!(
        store
            .begin_event("e-1", &owners[0], NOW, lease)
            .await
            .unwrap(),
        crate::state::EventStart::Leased
    );
    assert_eq!(
        store
            .begin_event("e-1", &owners[1], NOW, lease)
            .await
            .unwrap(),
        crate::state::EventStart::Busy
    );
}
