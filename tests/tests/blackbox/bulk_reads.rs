//! The bulk sweep (`observe::bulk`): `cmk-guard scan` and the sweep read a subscription's
//! lists once per pass instead of seven reads per workspace — at most 0.3 reads per workspace
//! when ten workspaces share a vault, 2.5 when each has its own — and find exactly what the
//! targeted per-workspace reads find. Counts, not timings.

use std::collections::BTreeMap;

use azure_sim::{
    Fault, Grant, KeySpec, RecordFilter, Sim, SimOptions, Tenant, VaultSpec, WorkspaceSpec,
};
use cmk_guard_blackbox::binary;
use serde_json::Value;

const SUB: &str = "3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34";

/// `n` compliant CMK workspaces, every `per_vault` consecutive ones sharing a vault and key.
fn sharing(n: usize, per_vault: usize) -> azure_sim::TenantBuilder {
    let mut builder = Tenant::builder().subscription(SUB);
    for v in 0..n.div_ceil(per_vault) {
        let vault = format!("kv-bulk-{v:04}");
        let rg = format!("rg-bulk-{:02}", v % 7);
        builder = builder.vault(VaultSpec::new(SUB, &rg, &vault).key(KeySpec::rsa("cmk", 3072)));
        for i in (v * per_vault)..((v + 1) * per_vault).min(n) {
            builder = builder.workspace(
                WorkspaceSpec::new(SUB, &rg, &format!("ws-bulk-{i:04}")).cmk(&vault, "cmk"),
            );
        }
    }
    builder
}

/// Runs `cmk-guard scan --format json` over [`SUB`]: the outcome and the requests it made
/// (token requests aside), by operation.
async fn scan(sim: &Sim) -> (Value, BTreeMap<String, usize>) {
    let before = sim.requests(&RecordFilter::default()).len();
    let output = tokio::process::Command::new(binary())
        .args(["scan", "--subscription", SUB, "--format", "json"])
        .env_clear()
        .envs(sim.handler_env())
        .output()
        .await
        .expect("run cmk-guard scan");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let outcome: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "scan JSON: {e}\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let mut reads = BTreeMap::new();
    for request in sim
        .requests(&RecordFilter::default())
        .into_iter()
        .skip(before)
        .filter(|r| r.operation != "Identity_GetToken")
    {
        *reads.entry(request.operation).or_insert(0) += 1;
    }
    (outcome, reads)
}

fn total(reads: &BTreeMap<String, usize>) -> usize {
    reads.values().sum()
}

/// The findings of an outcome, without what differs between two runs (times).
fn findings(outcome: &Value) -> Vec<Value> {
    let mut all: Vec<Value> = outcome["findings"].as_array().cloned().unwrap_or_default();
    for finding in &mut all {
        if let Some(object) = finding.as_object_mut() {
            object.remove("firstSeen");
            object.remove("lastSeen");
            // "expires at …, in N days" counts from the moment of the read.
            if let Some(Value::String(observed)) = object.get_mut("observed")
                && let Some(at) = observed.find(", in ")
            {
                observed.truncate(at);
            }
        }
    }
    all.sort_by_key(|f| f.to_string());
    all
}

#[tokio::test]
async fn a_scan_of_100_workspaces_sharing_10_vaults_reads_at_most_0_3_per_workspace() {
    let sim = Sim::start(
        sharing(100, 10).build().expect("tenant"),
        SimOptions::default(),
    )
    .await
    .expect("sim");
    let (outcome, reads) = scan(&sim).await;
    eprintln!("100 sharing 10 vaults: {} reads {reads:?}", total(&reads));
    assert_eq!(outcome["workspaces"].as_array().map(Vec::len), Some(100));
    assert_eq!(findings(&outcome), Vec::<Value>::new(), "all compliant");
    let per_workspace = total(&reads) as f64 / 100.0;
    assert!(
        per_workspace <= 0.3,
        "{per_workspace} reads per workspace: {reads:?}"
    );
    assert_eq!(reads.get("Workspaces_Get"), None, "{reads:?}");
    assert_eq!(
        reads.get("Keys_List"),
        Some(&10),
        "one per vault: {reads:?}"
    );
}

#[tokio::test]
async fn a_scan_of_100_workspaces_with_their_own_vaults_reads_at_most_2_5_per_workspace() {
    let sim = Sim::start(
        sharing(100, 1).build().expect("tenant"),
        SimOptions::default(),
    )
    .await
    .expect("sim");
    let (outcome, reads) = scan(&sim).await;
    eprintln!("100 with own vaults: {} reads {reads:?}", total(&reads));
    assert_eq!(findings(&outcome), Vec::<Value>::new(), "all compliant");
    let per_workspace = total(&reads) as f64 / 100.0;
    assert!(
        per_workspace <= 2.5,
        "{per_workspace} reads per workspace: {reads:?}"
    );
}

/// The same tenant scanned twice: in bulk, and with the workspace list failing (every
/// workspace then read one by one). Each drift is found by both, and identically.
#[tokio::test]
async fn bulk_and_targeted_reads_find_exactly_the_same() {
    let mut builder = sharing(24, 4)
        .with_vault("kv-bulk-0001", |v| *v = v.clone().purge_protection(None))
        .with_key("kv-bulk-0002", "cmk", |k| *k = k.clone().expires_in_days(5))
        .with_workspace("ws-bulk-0013", |w| *w = w.clone().online_endpoint("score"))
        .with_workspace("ws-bulk-0014", |w| {
            *w = w.clone().with_cmk(|c| c.grant = Grant::None)
        })
        .with_workspace("ws-bulk-0017", |w| {
            *w = w.clone().with_cmk(|c| c.grant = Grant::ViaGroup)
        });
    builder = builder.with_workspace("ws-bulk-0021", |w| {
        *w = w.clone().with_cmk(|c| c.grant = Grant::SubscriptionScope);
    });
    let sim = Sim::start(builder.build().expect("tenant"), SimOptions::default())
        .await
        .expect("sim");
    let (bulk, bulk_reads) = scan(&sim).await;
    assert!(!findings(&bulk).is_empty(), "the drift is found");
    let fault = sim.add_fault(Fault::on_operation("Workspaces_ListBySubscription").status(500));
    let (targeted, targeted_reads) = scan(&sim).await;
    assert!(
        targeted_reads.get("Workspaces_Get").copied().unwrap_or(0) >= 24,
        "the failed list left every workspace to its own read: {targeted_reads:?}"
    );
    let (bulk, targeted) = (findings(&bulk), findings(&targeted));
    let only_bulk: Vec<&Value> = bulk.iter().filter(|f| !targeted.contains(f)).collect();
    let only_targeted: Vec<&Value> = targeted.iter().filter(|f| !bulk.contains(f)).collect();
    assert_eq!(only_bulk, only_targeted, "findings differ");
    assert_eq!(bulk.len(), targeted.len());
    assert!(total(&bulk_reads) < total(&targeted_reads));
    sim.remove_fault(fault);
}

/// Access granted only through a group is invisible in the bulk role-assignment list: the
/// workspace is read again with its own `assignedTo()` list, and is compliant.
#[tokio::test]
async fn access_through_a_group_is_resolved_by_a_targeted_read() {
    let builder = sharing(10, 10).with_workspace("ws-bulk-0003", |w| {
        *w = w.clone().with_cmk(|c| c.grant = Grant::ViaGroup)
    });
    let sim = Sim::start(builder.build().expect("tenant"), SimOptions::default())
        .await
        .expect("sim");
    let (outcome, reads) = scan(&sim).await;
    assert_eq!(findings(&outcome), Vec::<Value>::new(), "{outcome}");
    assert_eq!(
        reads.get("Workspaces_Get"),
        Some(&1),
        "only the group-granted workspace is read alone: {reads:?}"
    );
}

/// A bulk list that fails is never taken as compliant: the workspaces are read one by one,
/// and what those reads cannot see is reported.
#[tokio::test]
async fn a_failing_bulk_list_falls_back_and_is_reported() {
    let sim = Sim::start(
        sharing(10, 5).build().expect("tenant"),
        SimOptions::default(),
    )
    .await
    .expect("sim");
    sim.add_fault(Fault::on_operation("Vaults_ListBySubscription").status(500));
    sim.add_fault(Fault::on_operation("Vaults_Get").status(403));
    let (outcome, reads) = scan(&sim).await;
    assert!(
        reads.get("Vaults_Get").copied().unwrap_or(0) >= 2,
        "each vault read on its own: {reads:?}"
    );
    let unseen: std::collections::BTreeSet<&str> = outcome["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["rule"] == "guard.visibility")
        .filter_map(|f| f["workspace"].as_str())
        .collect();
    assert_eq!(unseen.len(), 10, "every workspace reported: {outcome}");
}
