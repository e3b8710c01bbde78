//! ARM's throttling as the simulator enforces it (token buckets per subscription, principal and
//! operation type, 429 with `Retry-After`): `cmk-guard scan` paces itself from the remaining
//! counts ARM reports, so a scan finishes complete (no `guard.visibility`) with at most a few
//! 429s even when another tool signed in as the same identity has spent most of the budget, and
//! two instances scanning the same subscription at once share the budget instead of each
//! taking ARM's full rate. Every assertion counts answers; none times them.

use azure_sim::{KeySpec, RecordFilter, Sim, SimOptions, Tenant, VaultSpec, WorkspaceSpec};
use cmk_guard_blackbox::story::workspace_write_of;
use cmk_guard_blackbox::{Handler, binary};

const SUB: &str = "3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34";
const OTHER_SUB: &str = "5b8e2d4f-1a3c-4e6b-9d7f-0c2a4e6b8d1f";
const RG: &str = "rg-throttled";

/// `workspaces` compliant workspaces in each subscription, ten to a vault.
fn estate(subscriptions: &[&str], workspaces: usize) -> Tenant {
    let mut builder = Tenant::builder();
    for (n, sub) in subscriptions.iter().enumerate() {
        builder = builder.subscription(sub);
        for i in 0..workspaces {
            // Vault names are global.
            let vault = format!("kv-{n}-{:04}", i / 10);
            if i % 10 == 0 {
                builder =
                    builder.vault(VaultSpec::new(sub, RG, &vault).key(KeySpec::rsa("key", 3072)));
            }
            builder = builder
                .workspace(WorkspaceSpec::new(sub, RG, &format!("ws-{i:04}")).cmk(&vault, "key"));
        }
    }
    builder.build().expect("tenant")
}

/// A simulator that throttles as ARM does, with all but `left` of the app identity's reads in
/// each subscription already spent by another tool.
async fn throttled_sim(tenant: Tenant, subscriptions: &[&str], left: usize) -> Sim {
    let options = SimOptions {
        arm_throttling: true,
        ..SimOptions::default()
    };
    let sim = Sim::start(tenant, options).await.expect("sim");
    let app = sim.app_principal_id();
    for sub in subscriptions {
        assert_eq!(sim.spend_arm_reads(sub, &app, 250 - left), 250 - left);
    }
    sim
}

async fn scan(sim: &Sim, subscriptions: &[&str]) -> (Option<i32>, String, String) {
    let mut command = tokio::process::Command::new(binary());
    command.arg("scan").arg("--format").arg("json");
    for sub in subscriptions {
        command.arg("--subscription").arg(sub);
    }
    let output = command
        .env_clear()
        .envs(sim.handler_env())
        .output()
        .await
        .expect("run cmk-guard scan");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn arm() -> RecordFilter {
    RecordFilter {
        host: Some("management.azure.com".into()),
        ..RecordFilter::default()
    }
}

fn throttled(sim: &Sim) -> usize {
    sim.requests(&arm())
        .iter()
        .filter(|r| r.status == 429)
        .count()
}

#[tokio::test]
async fn a_scan_with_the_budget_nearly_spent_paces_itself_and_finishes_complete() {
    let sim = throttled_sim(estate(&[SUB], 300), &[SUB], 10).await;
    let (code, json, err) = scan(&sim, &[SUB]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(!json.contains("guard.visibility"), "{json}");
    let reads = sim.requests(&arm()).len();
    assert!(
        reads > 10,
        "the scan had to wait for ARM's refill: {reads} requests"
    );
    let refused = throttled(&sim);
    assert!(
        refused <= 2,
        "{refused} of {reads} ARM requests were throttled"
    );
}

#[tokio::test]
async fn two_instances_of_one_identity_scanning_one_subscription_share_the_budget() {
    let sim = throttled_sim(estate(&[SUB], 300), &[SUB], 10).await;
    let (first, second) = tokio::join!(scan(&sim, &[SUB]), scan(&sim, &[SUB]));
    for (code, json, err) in [first, second] {
        assert_eq!(code, Some(0), "{err}");
        assert!(!json.contains("guard.visibility"), "{json}");
    }
    let requests = sim.requests(&arm());
    let refused = throttled(&sim);
    // Each instance alone would read at ARM's refill rate; together they would take twice
    // that and run into 429s unless each slows down for what the other spends.
    assert!(
        refused <= 8,
        "{refused} of {} ARM requests were throttled",
        requests.len()
    );
    // ARM saw no more of the subscription's reads in any second than the 10 left and the 25
    // refilled, with the few refused ones.
    let mut at: Vec<f64> = requests
        .iter()
        .filter(|r| r.method == "GET" && r.path.to_ascii_lowercase().contains(SUB))
        .map(|r| r.at_ms)
        .collect();
    at.sort_by(f64::total_cmp);
    let peak = (0..at.len())
        .map(|i| at[i..].iter().take_while(|t| **t < at[i] + 1000.0).count())
        .max()
        .unwrap_or(0);
    assert!(at.len() > 40, "{} reads in the subscription", at.len());
    // The sim refuses what the bucket lacks; this bounds what was sent, refused or not.
    assert!(peak <= 250 + 25, "{peak} reads in one second");
    eprintln!(
        "two instances: {} ARM requests, {refused} throttled, peak {peak} reads of the subscription in one second",
        requests.len()
    );
}

#[tokio::test]
async fn a_subscription_told_to_wait_does_not_hold_back_another() {
    // SUB's first workspace read is answered 429 with two minutes to wait (the pause is bounded
    // to one, past an event's 25-second budget): an event in SUB fails at once to be delivered
    // again, and an event in OTHER_SUB right after it is read and answered.
    let sim = throttled_sim(estate(&[SUB, OTHER_SUB], 1), &[], 0).await;
    sim.add_fault(
        azure_sim::Fault::on_path("GET", &format!("/subscriptions/{SUB}/**"))
            .throttle(120)
            .times(1),
    );
    let handler = Handler::launch(sim, &[]).await;
    let in_sub = handler
        .deliver(
            "OnSubscriptionEvent",
            "event",
            &[workspace_write_of(SUB, RG, "ws-0000")],
        )
        .await
        .remove(0);
    assert_eq!(in_sub.status, 503, "{:?}", in_sub.body);
    let in_other = handler
        .deliver(
            "OnSubscriptionEvent",
            "event",
            &[workspace_write_of(OTHER_SUB, RG, "ws-0000")],
        )
        .await
        .remove(0);
    assert_eq!(in_other.status, 200, "{:?}", in_other.body);
    let other: Vec<_> = handler
        .sim
        .requests(&arm())
        .into_iter()
        .filter(|r| r.path.to_ascii_lowercase().contains(OTHER_SUB))
        .collect();
    assert!(!other.is_empty(), "OTHER_SUB was read");
    assert!(other.iter().all(|r| r.status == 200), "{other:?}");
    // The 429 was the injected one; nothing in SUB was sent again within the pause.
    let in_sub: Vec<_> = handler
        .sim
        .requests(&arm())
        .into_iter()
        .filter(|r| r.path.to_ascii_lowercase().contains(SUB))
        .collect();
    assert_eq!(
        in_sub.iter().filter(|r| r.status == 429).count(),
        1,
        "{in_sub:?}"
    );
}
