//! The Sweep (timer) function through the real binary: it finds exactly the seeded drift among
//! 2,000 workspaces, pages Resource Graph, resumes from its cursor after its time budget runs
//! out, tells each finding once (no digest repeats what its own alerts just told), and never
//! exceeds the configured Azure read rate.
//!
//! No assertion depends on how fast the machine is: the simulator slows every page of the
//! subscriptions' workspace lists down (the sweep reads each subscription in bulk, once per
//! invocation), so that the work takes several budgets whatever the machine (a lower bound
//! that a sleep guarantees), and the sweep must make progress in every invocation.

use std::collections::BTreeSet;
use std::time::Duration;

use azure_sim::{Fault, KeySpec, RecordFilter, Tenant, VaultSpec, WorkspaceSpec};
use cmk_guard_blackbox::sink::Sink;
use cmk_guard_blackbox::{Handler, timer_envelope};
use serde_json::Value;

const SUB: &str = "3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34";
const RG: &str = "rg-sweep";

/// `count` workspaces sharing one compliant vault and key, plus one workspace in every
/// `drift_every` whose own vault lacks purge protection.
fn estate(count: usize, drift_every: usize) -> (Tenant, BTreeSet<String>) {
    estate_in(&[SUB], count, drift_every)
}

/// [`estate`] spread over `subscriptions` in consecutive blocks, each block with its own shared
/// vault.
fn estate_in(
    subscriptions: &[&str],
    count: usize,
    drift_every: usize,
) -> (Tenant, BTreeSet<String>) {
    let mut builder = Tenant::builder();
    for (s, sub) in subscriptions.iter().enumerate() {
        builder = builder.subscription(sub).vault(
            VaultSpec::new(sub, RG, &format!("kv-shared-{s}")).key(KeySpec::rsa("key", 3072)),
        );
    }
    let mut drifted = BTreeSet::new();
    for i in 0..count {
        let s = i * subscriptions.len() / count;
        let sub = subscriptions[s];
        let name = format!("ws-{i:05}");
        if i % drift_every == 0 {
            let vault = format!("kv-d{i:05}");
            builder = builder
                .vault(
                    VaultSpec::new(sub, RG, &vault)
                        .purge_protection(None)
                        .key(KeySpec::rsa("key", 3072)),
                )
                .workspace(WorkspaceSpec::new(sub, RG, &name).cmk(&vault, "key"));
            drifted.insert(name);
        } else {
            builder = builder.workspace(
                WorkspaceSpec::new(sub, RG, &name).cmk(&format!("kv-shared-{s}"), "key"),
            );
        }
    }
    (builder.build().expect("tenant"), drifted)
}

fn names(values: &Value) -> Vec<String> {
    values
        .as_array()
        .map(|v| {
            v.iter()
                .filter_map(|w| w.as_str())
                .map(|w| w.rsplit('/').next().unwrap_or(w).to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// How long the simulator takes to answer each page of a workspace list in the budget test.
const SLOW_PAGE: Duration = Duration::from_millis(1000);
/// The budget test's subscriptions.
const SUBS: [&str; 4] = [
    SUB,
    "3f7b2c1d-8e4a-4b6f-9c2d-000000000001",
    "3f7b2c1d-8e4a-4b6f-9c2d-000000000002",
    "3f7b2c1d-8e4a-4b6f-9c2d-000000000003",
];

#[tokio::test]
async fn a_sweep_of_2000_workspaces_finds_exactly_the_drift_and_resumes_after_its_budget() {
    const WORKSPACES: usize = 2000;
    let (tenant, drifted) = estate_in(&SUBS, WORKSPACES, 100);
    let sink = Sink::start().await;
    let teams = sink.url("teams");
    let handler = Handler::start_with(
        tenant,
        &[
            ("CMKGUARD_SWEEP_BUDGET_SECONDS", "8"),
            ("CMKGUARD_READ_RATE", "5000"),
            ("CMKGUARD_TEAMS_WEBHOOK_URL", &teams),
        ],
    )
    .await;
    // Each subscription's 500 workspaces are listed in bulk, 100 a page, each page taking a
    // second: the four subscriptions take at least 20 seconds, longer than an 8-second
    // budget however fast the machine is. (Before bulk reads, each workspace read was slowed.)
    handler
        .sim
        .add_fault(Fault::on_operation("Workspaces_ListBySubscription").latency(SLOW_PAGE));
    let mut seen: Vec<String> = Vec::new();
    let mut findings: BTreeSet<(String, String)> = BTreeSet::new();
    let mut invocations = 0;
    let mut stopped_early = 0;
    let mut digests = 0;
    loop {
        invocations += 1;
        // Each invocation checks at least one workspace (asserted below), so this only
        // catches a sweep that goes round in circles.
        assert!(invocations <= WORKSPACES, "the sweep never finished");
        let reply = handler.invoke("Sweep", timer_envelope("timer")).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        let outcome = reply.outcome();
        assert_eq!(outcome["disposition"], "evaluated");
        let checked = names(&outcome["workspaces"]);
        assert!(
            !checked.is_empty(),
            "invocation {invocations} made no progress: {outcome}"
        );
        seen.extend(checked);
        digests += outcome["actions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["kind"] == "notify" && a["rule"] == "digest")
            .count();
        for finding in outcome["findings"].as_array().into_iter().flatten() {
            let workspace = finding["workspace"]
                .as_str()
                .unwrap_or_default()
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_owned();
            findings.insert((
                workspace,
                finding["rule"].as_str().unwrap_or_default().to_owned(),
            ));
        }
        if outcome.get("reason").is_none() {
            break;
        }
        stopped_early += 1;
        assert!(
            outcome["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("resumes after"),
            "{outcome}"
        );
    }
    let slow_pages: u32 = handler.sim.faults().iter().map(|f| f.hits).sum();
    assert!(
        slow_pages as usize >= WORKSPACES / 100,
        "every page of every subscription's workspace list was slow: {slow_pages}"
    );
    assert!(
        stopped_early >= 1,
        "the 3-second budget must run out at least once (it took {invocations} invocations)"
    );
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), WORKSPACES, "every workspace once");
    assert_eq!(
        seen.len(),
        WORKSPACES,
        "no workspace twice across resumed invocations"
    );
    let expected: BTreeSet<(String, String)> = drifted
        .iter()
        .map(|w| (w.clone(), "vault.purge-protection".to_owned()))
        .collect();
    assert_eq!(findings, expected, "exactly the seeded drift");
    // 2,000 rows at 1,000 per page: the listing pages. (How many listings were read again
    // rather than taken from the handler's 5-second read cache depends on the clock.)
    let graph = handler.sim.requests(&RecordFilter {
        operation: Some("ResourceGraph_Resources".into()),
        ..RecordFilter::default()
    });
    assert!(
        graph.len() >= 2,
        "{} Resource Graph requests for {invocations} sweeps",
        graph.len()
    );
    // The sweep's own alerts told every finding: no digest repeats them.
    let cards = sink.received("teams");
    assert!(!cards.is_empty(), "the findings were told");
    assert_eq!(
        digests,
        0,
        "{} cards; the last: {}",
        cards.len(),
        cards.last().map(|c| c.body.to_string()).unwrap_or_default()
    );
}

#[tokio::test]
async fn a_listing_that_outlasts_the_budget_still_leaves_every_invocation_some_progress() {
    const WORKSPACES: usize = 100;
    let (tenant, _) = estate(WORKSPACES, 10);
    let handler = Handler::start_with(tenant, &[("CMKGUARD_SWEEP_BUDGET_SECONDS", "1")]).await;
    // Listing the workspaces alone takes longer than the whole budget.
    handler.sim.add_fault(
        Fault::on_operation("ResourceGraph_Resources").latency(Duration::from_millis(1500)),
    );
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for invocation in 1..=WORKSPACES {
        let reply = handler.invoke("Sweep", timer_envelope("timer")).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        let outcome = reply.outcome();
        let checked = names(&outcome["workspaces"]);
        assert!(
            !checked.is_empty(),
            "invocation {invocation} made no progress: {outcome}"
        );
        seen.extend(checked);
        if outcome.get("reason").is_none() {
            assert_eq!(seen.len(), WORKSPACES, "every workspace");
            assert!(invocation > 1, "the budget ran out in the first invocation");
            return;
        }
    }
    panic!("the sweep never finished");
}

#[tokio::test]
async fn a_sweep_never_exceeds_the_configured_read_rate_even_when_throttled() {
    // Each workspace with its own vault: the sweep lists each vault's keys, 150 reads and more.
    let (tenant, _) = estate(150, 1);
    let handler = Handler::start_with(tenant, &[("CMKGUARD_READ_RATE", "25")]).await;
    // One throttled read pauses every worker; the sweep still completes.
    handler
        .sim
        .add_fault(Fault::on_operation("Keys_List").throttle(1).times(1));
    let reply = handler.invoke("Sweep", timer_envelope("timer")).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(names(&reply.outcome()["workspaces"]).len(), 150);
    let filter = RecordFilter {
        host: Some("management.azure.com".into()),
        ..RecordFilter::default()
    };
    // An upper bound that holds on any machine: the handler holds a request's slot until a
    // second after the response arrived, and the simulator records a request before answering.
    let peak = handler.sim.peak_rate(Duration::from_secs(1), &filter);
    assert!(peak.considered > 100, "{peak:?}");
    assert!(peak.peak <= 25, "at most 25 reads in any second: {peak:?}");
}

/// Teams and email for critical and high: the sweep's findings reach both.
const TWO_WORKSPACES_POLICY: &str = r#"
[notify]
teams = ["critical", "high", "medium", "low"]
email = ["critical", "high"]
"#;

/// One sweep that finds problems in two workspaces sends each workspace its own card and its own
/// email, titled by that workspace; each email threads (`In-Reply-To`) with that workspace's
/// later alerts, here the one saying its vault's purge protection was put right.
#[tokio::test]
async fn a_sweep_finding_two_workspaces_sends_each_its_own_card_and_email() {
    use azure_sim::{Sim, SimOptions};
    use cmk_guard_blackbox::scratch::Scratch;
    use cmk_guard_blackbox::smtp::Smtp;
    use cmk_guard_blackbox::story::workspace_write_of;

    const WORKSPACES: [(&str, &str); 2] = [("mlw-alpha", "kv-alpha"), ("mlw-bravo", "kv-bravo")];
    let mut tenant = Tenant::builder().subscription(SUB);
    for (workspace, vault) in WORKSPACES {
        tenant = tenant
            .vault(
                VaultSpec::new(SUB, RG, vault)
                    .purge_protection(None)
                    .key(KeySpec::rsa("cmk", 3072)),
            )
            .workspace(WorkspaceSpec::new(SUB, RG, workspace).cmk(vault, "cmk"));
    }
    let tenant = tenant.build().expect("tenant");
    let scratch = Scratch::new("sweep-two");
    let tls_dir = scratch.join("tls");
    let options = SimOptions {
        tls_out: Some(tls_dir.clone()),
        ..SimOptions::default()
    };
    let sim = Sim::start(tenant, options).await.expect("sim");
    let smtp = Smtp::start(&tls_dir).await;
    let teams = Sink::start().await;
    let policy = scratch
        .write("policy.toml", TWO_WORKSPACES_POLICY)
        .display()
        .to_string();
    let (teams_url, smtp_url) = (teams.url("teams"), smtp.url());
    let handler = Handler::launch(
        sim,
        &[
            ("CMKGUARD_MODE", "alert"),
            ("CMKGUARD_POLICY_FILE", &policy),
            ("CMKGUARD_TEAMS_WEBHOOK_URL", &teams_url),
            ("CMKGUARD_SMTP_URL", &smtp_url),
            ("CMKGUARD_EMAIL_FROM", "cmk-guard@contoso.example"),
            ("CMKGUARD_EMAIL_TO", "ml-platform@contoso.example"),
        ],
    )
    .await;

    let reply = handler.invoke("Sweep", timer_envelope("timer")).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let cards = teams.received("teams");
    let mails = smtp.received();
    assert_eq!((cards.len(), mails.len()), (2, 2), "{}", reply.outcome());
    let header = |mail: &Value, name: &str| {
        mail["headers"][name]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let mut threads = Vec::new();
    for (workspace, _) in WORKSPACES {
        let (other, _) = WORKSPACES
            .iter()
            .find(|(w, _)| *w != workspace)
            .expect("two");
        let card: Vec<&Value> = cards
            .iter()
            .map(|c| &c.body)
            .filter(|b| b.to_string().contains(&format!("{workspace}: ")))
            .collect();
        assert_eq!(card.len(), 1, "one card titled {workspace}: {cards:?}");
        assert!(!card[0].to_string().contains(other), "{}", card[0]);
        let mail: Vec<&Value> = mails
            .iter()
            .filter(|m| header(m, "subject").starts_with(&format!("[cmk-guard] {workspace}: ")))
            .collect();
        assert_eq!(mail.len(), 1, "one email titled {workspace}: {mails:?}");
        assert!(!mail[0].to_string().contains(other), "{}", mail[0]);
        let thread = header(mail[0], "in-reply-to");
        assert!(thread.ends_with("@cmk-guard>"), "{}", mail[0]);
        threads.push(thread);
    }
    assert_ne!(threads[0], threads[1], "a thread per workspace");

    // A later alert of each workspace (its vault fixed, the finding resolved) joins its thread.
    // Each event is dated after the fix: the handler drops cached reads older than an event.
    for (_, vault) in WORKSPACES {
        handler
            .sim
            .admin()
            .patch_vault(vault, &serde_json::json!({"purgeProtection": true}))
            .expect("patch");
    }
    let fixed_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("a time");
    for ((workspace, _), thread) in WORKSPACES.into_iter().zip(&threads) {
        let before = smtp.received().len();
        let mut event = workspace_write_of(SUB, RG, workspace);
        event["eventTime"] = Value::String(fixed_at.clone());
        let replies = handler
            .deliver("OnSubscriptionEvent", "event", &[event])
            .await;
        assert_eq!(replies[0].status, 200, "{:?}", replies[0].body);
        let mails = smtp.received();
        assert_eq!(mails.len(), before + 1, "{}", replies[0].outcome());
        let later = &mails[before];
        assert!(header(later, "subject").contains(workspace), "{later}");
        assert_eq!(&header(later, "in-reply-to"), thread, "{later}");
    }
}

/// A sweep whose first subscription inventory takes longer than one invocation's read budget
/// (Azure slow, but answering) still sees every workspace: a compliant tenant yields no
/// `guard.visibility` finding, as `cmk-guard scan` over the same tenant does not either.
#[tokio::test]
async fn a_slow_inventory_leaves_the_first_chunk_no_less_visible_than_the_rest() {
    // 40 workspaces sharing one compliant vault: two chunks, one inventory.
    const WORKSPACES: usize = 40;
    let mut builder = Tenant::builder()
        .subscription(SUB)
        .vault(VaultSpec::new(SUB, RG, "kv-shared").key(KeySpec::rsa("key", 3072)));
    for i in 0..WORKSPACES {
        builder = builder
            .workspace(WorkspaceSpec::new(SUB, RG, &format!("ws-{i:05}")).cmk("kv-shared", "key"));
    }
    let handler = Handler::start_with(builder.build().expect("tenant"), &[]).await;
    // The vault's key list, read once for the inventory, answers only after 26 s: longer than
    // the 25 s an invocation's reads get (engine::EVENT_BUDGET), well within the sweep's budget.
    handler
        .sim
        .add_fault(Fault::on_operation("Keys_List").latency(Duration::from_secs(26)));
    let reply = handler.invoke("Sweep", timer_envelope("timer")).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let outcome = reply.outcome();
    assert_eq!(names(&outcome["workspaces"]).len(), WORKSPACES, "{outcome}");
    let visibility: Vec<&Value> = outcome["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["rule"] == "guard.visibility")
        .collect();
    assert!(visibility.is_empty(), "{visibility:#?}");
}
