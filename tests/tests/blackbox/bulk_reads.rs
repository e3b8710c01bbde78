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
    scan_in(sim, &["--subscription", SUB]).await
}

/// [`scan`] with other scope arguments (none: every readable subscription).
async fn scan_in(sim: &Sim, scope: &[&str]) -> (Value, BTreeMap<String, usize>) {
    let before = sim.requests(&RecordFilter::default()).len();
    let output = tokio::process::Command::new(binary())
        .arg("scan")
        .args(scope)
        .args(["--format", "json"])
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

/// 250 workspaces, ten to a vault: the lists page (100 a page in azure-sim), and every
/// workspace, vault and key is answered from them.
#[tokio::test]
async fn a_scan_of_250_workspaces_sharing_25_vaults_reads_at_most_0_3_per_workspace() {
    let sim = Sim::start(
        sharing(250, 10).build().expect("tenant"),
        SimOptions::default(),
    )
    .await
    .expect("sim");
    let (outcome, reads) = scan(&sim).await;
    eprintln!("250 sharing 25 vaults: {} reads {reads:?}", total(&reads));
    assert_eq!(outcome["workspaces"].as_array().map(Vec::len), Some(250));
    assert_eq!(findings(&outcome), Vec::<Value>::new(), "all compliant");
    let per_workspace = total(&reads) as f64 / 250.0;
    assert!(
        per_workspace <= 0.3,
        "{per_workspace} reads per workspace: {reads:?}"
    );
    for one_by_one in [
        "Workspaces_Get",
        "Vaults_Get",
        "Keys_Get",
        "Keys_GetVersion",
    ] {
        assert_eq!(reads.get(one_by_one), None, "{reads:?}");
    }
    assert_eq!(
        reads.get("Workspaces_ListBySubscription"),
        Some(&3),
        "three pages: {reads:?}"
    );
    assert_eq!(
        reads.get("Keys_List"),
        Some(&25),
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

/// Scans `tenant` twice: in bulk, and with the workspace lists failing (every workspace then
/// read one by one, as before bulk reads); both find exactly the same, and bulk reads less.
/// (A field bulk dropped would show as a failed check in bulk and a targeted re-read: the
/// read-count tests, which expect no `Workspaces_Get` on a compliant tenant, catch that.)
async fn assert_bulk_is_exact(tenant: Tenant) {
    let sim = Sim::start(tenant, SimOptions::default())
        .await
        .expect("sim");
    let (bulk, bulk_reads) = scan_in(&sim, &[]).await;
    assert!(!findings(&bulk).is_empty(), "the drift is found");
    let workspaces = bulk["workspaces"].as_array().map_or(0, Vec::len);
    let fault = sim.add_fault(Fault::on_operation("Workspaces_ListBySubscription").status(500));
    let (targeted, targeted_reads) = scan_in(&sim, &[]).await;
    sim.remove_fault(fault);
    assert!(
        targeted_reads.get("Workspaces_Get").copied().unwrap_or(0) >= workspaces,
        "the failed list left every workspace to its own read: {targeted_reads:?}"
    );
    let (bulk, targeted) = (findings(&bulk), findings(&targeted));
    let only_bulk: Vec<&Value> = bulk.iter().filter(|f| !targeted.contains(f)).collect();
    let only_targeted: Vec<&Value> = targeted.iter().filter(|f| !bulk.contains(f)).collect();
    assert_eq!(only_bulk, only_targeted, "findings differ");
    assert_eq!(bulk.len(), targeted.len());
    assert!(
        total(&bulk_reads) < total(&targeted_reads),
        "{bulk_reads:?} vs {targeted_reads:?}"
    );
}

#[tokio::test]
async fn bulk_reads_find_exactly_what_targeted_reads_find_in_the_scenario_tenants() {
    assert_bulk_is_exact(super::scenarios::tenant()).await;
    assert_bulk_is_exact(super::scan::tenant()).await;
}

#[tokio::test]
async fn bulk_reads_find_exactly_what_targeted_reads_find_in_random_tenants() {
    for seed in [7_u64, 1_234, 99_991] {
        assert_bulk_is_exact(random_tenant(seed)).await;
    }
}

/// 30 workspaces sharing vaults by threes, each vault, key or workspace drifted one way or
/// not at all, chosen by a fixed-seed generator.
fn random_tenant(seed: u64) -> Tenant {
    let mut state = seed;
    let mut next = move |n: u64| {
        // xorshift64: deterministic, good enough to pick drifts.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let mut builder = sharing(30, 3);
    for v in 0..10 {
        let vault = format!("kv-bulk-{v:04}");
        builder = match next(6) {
            0 => builder.with_vault(&vault, |v| *v = v.clone().purge_protection(None)),
            1 => builder.with_vault(&vault, |v| *v = v.clone().soft_delete(Some(false))),
            2 => builder.with_key(&vault, "cmk", |k| *k = k.clone().expires_in_days(9)),
            3 => builder.with_key(&vault, "cmk", |k| *k = k.clone().no_rotation_policy()),
            4 => builder.with_key(&vault, "cmk", |k| *k = KeySpec::rsa("cmk", 2048)),
            _ => builder,
        };
    }
    for i in 0..30 {
        let name = format!("ws-bulk-{i:04}");
        let grant = match next(8) {
            0 => Some(Grant::None),
            1 => Some(Grant::ViaGroup),
            2 => Some(Grant::KeyScope),
            3 => Some(Grant::ResourceGroupScope),
            4 => Some(Grant::SubscriptionScope),
            _ => None,
        };
        if let Some(grant) = grant {
            builder =
                builder.with_workspace(&name, |w| *w = w.clone().with_cmk(|c| c.grant = grant));
        }
        if next(5) == 0 {
            builder = builder.with_workspace(&name, |w| *w = w.clone().batch_endpoint("nightly"));
        }
    }
    builder.build().expect("random tenant")
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

/// In `remediate` mode a sweep in bulk writes only after reading again what it fixes: a
/// workspace of the drifted vault and the vault itself are read one by one before the vault's
/// PATCH (the remediation's own fresh reads; the vault's other workspaces, remediated after it,
/// read it fixed and skip), the compliant workspaces are not read one by one at all.
#[tokio::test]
async fn in_remediate_mode_the_fix_rests_on_fresh_reads_of_its_workspaces() {
    let scratch = cmk_guard_blackbox::scratch::Scratch::new("bulk-remediate");
    let policy = scratch.write(
        "policy.toml",
        "[remediation.\"vault.purge-protection\"]\nenabled = true\nirreversible_ok = true\n",
    );
    let policy = policy.display().to_string();
    let tenant = sharing(10, 5)
        .with_vault("kv-bulk-0001", |v| *v = v.clone().purge_protection(None))
        .build()
        .expect("tenant");
    let handler = cmk_guard_blackbox::Handler::start_with(
        tenant,
        &[
            ("CMKGUARD_MODE", "remediate"),
            ("CMKGUARD_POLICY_FILE", &policy),
        ],
    )
    .await;
    let reply = handler
        .invoke("Sweep", cmk_guard_blackbox::timer_envelope("timer"))
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let outcome = reply.outcome();
    let applied = outcome["actions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["kind"] == "remediate" && a["result"] == "applied")
        .count();
    assert!(applied >= 1, "{outcome}");
    let fixed_at = handler
        .sim
        .requests(&RecordFilter {
            operation: Some("Vaults_Update".into()),
            ..RecordFilter::default()
        })
        .first()
        .map(|r| r.seq)
        .expect("the vault was fixed");
    let requests = handler.sim.requests(&RecordFilter::default());
    let writes: Vec<_> = requests
        .iter()
        .filter(|r| r.operation == "Vaults_Update")
        .collect();
    assert_eq!(writes.len(), 1, "one fix for the one drifted vault");
    // Read one by one: only workspaces of the drifted vault (the remediations' fresh reads),
    // never a compliant one.
    let vault_workspaces: std::collections::BTreeSet<String> =
        (5..10).map(|i| format!("ws-bulk-{i:04}")).collect();
    let name = |r: &azure_sim::RequestRecord| {
        r.resource
            .as_deref()
            .and_then(|r| r.rsplit('/').next())
            .map(str::to_owned)
            .unwrap_or_default()
    };
    let read_one_by_one: Vec<String> = requests
        .iter()
        .filter(|r| r.operation == "Workspaces_Get")
        .map(name)
        .collect();
    assert!(
        read_one_by_one.iter().all(|n| vault_workspaces.contains(n)),
        "{read_one_by_one:?}"
    );
    // The fix itself rests on fresh reads: a workspace of that vault and the vault, both
    // read one by one after the bulk lists and before the write.
    // (Before the write: the alert's dependency counts query Resource Graph after it.)
    let bulk_done = requests
        .iter()
        .filter(|r| r.seq < fixed_at)
        .filter(|r| r.operation.contains("List") || r.operation.starts_with("ResourceGraph"))
        .map(|r| r.seq)
        .max()
        .expect("bulk lists");
    let fresh = |operation: &str| {
        requests
            .iter()
            .filter(|r| r.operation == operation && r.seq > bulk_done && r.seq < fixed_at)
            .map(name)
            .collect::<Vec<_>>()
    };
    let workspaces_before = fresh("Workspaces_Get");
    assert!(
        !workspaces_before.is_empty()
            && workspaces_before
                .iter()
                .all(|n| vault_workspaces.contains(n)),
        "{workspaces_before:?}"
    );
    assert_eq!(fresh("Vaults_Get"), vec!["kv-bulk-0001".to_owned()]);
}

/// The Sweep function reads the same way: 100 workspaces sharing ten vaults, at most 0.3
/// requests each, none read one by one.
#[tokio::test]
async fn a_sweep_of_100_workspaces_sharing_10_vaults_reads_at_most_0_3_per_workspace() {
    let handler =
        cmk_guard_blackbox::Handler::start_with(sharing(100, 10).build().expect("tenant"), &[])
            .await;
    let reply = handler
        .invoke("Sweep", cmk_guard_blackbox::timer_envelope("timer"))
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let outcome = reply.outcome();
    assert_eq!(outcome["workspaces"].as_array().map(Vec::len), Some(100));
    assert_eq!(findings(outcome), Vec::<Value>::new(), "all compliant");
    let mut reads: BTreeMap<String, usize> = BTreeMap::new();
    for request in handler.sim.requests(&RecordFilter::default()) {
        if request.operation != "Identity_GetToken" {
            *reads.entry(request.operation).or_insert(0) += 1;
        }
    }
    let per_workspace = total(&reads) as f64 / 100.0;
    assert!(
        per_workspace <= 0.3,
        "{per_workspace} requests per workspace: {reads:?}"
    );
    assert_eq!(reads.get("Workspaces_Get"), None, "{reads:?}");
}
