//! Remediations against the real azure-sim, in process, through the real clients built exactly
//! as production builds them (`Settings::from_lookup` + `Azure::new` over the simulator's
//! `handler_env()`): each story starts from a tenant in the broken state, takes the finding the
//! real observe + rules produce, applies the remediation, and checks the simulator's state, the
//! exact write it recorded, and the event Azure would emit with cmk-guard's identity as caller.
//! Applying again must write nothing.
//!
//! `azure_identity`'s managed identity credential reads `IDENTITY_ENDPOINT` and
//! `IDENTITY_HEADER` from the process environment itself (the lookup only selects it), so each
//! story points those two variables at its own simulator, and the stories run one at a time.

use std::time::Duration;

use azure_sim::scenario::{
    DEFAULT_KEY, DEFAULT_SUBSCRIPTION, DEFAULT_VAULT, DEFAULT_WORKSPACE, OTHER_SUBSCRIPTION,
};
use azure_sim::{
    Fault, Grant, KeyVersionSpec, RecordFilter, RequestRecord, RoleAssignmentSpec, Sim, SimOptions,
    Tenant, UserAssignedSpec, VersionPin,
};
use cmk_guard::azure::Azure;
use cmk_guard::ids::ArmResourceId;
use cmk_guard::observe::Observer;
use cmk_guard::outcome::{ActionKind, ActionResult, Finding, FindingState, Severity};
use cmk_guard::policy::Policy;
use cmk_guard::remediate::{Attempt, Consent, Remediator, describe};
use cmk_guard::rules::{self, Context};
use cmk_guard::settings::Settings;
use cmk_guard::snapshot::Snapshot;
use serde_json::Value;
use time::OffsetDateTime;
use tokio::time::Instant;

/// Consent to every remediation, purge protection's irreversible one and key enabling included.
const CONSENT_TO_ALL: &str = r#"
[remediation."vault.purge-protection"]
enabled = true
irreversible_ok = true
[remediation."workspace.key-access"]
enabled = true
[remediation."key.rotation-policy"]
enabled = true
[remediation."key.expiry"]
enabled = true
[remediation."subscription.providers"]
enabled = true
[remediation."key.enabled"]
enabled = true
"#;

const ROLE_GUID: &str = "e147488a-f6f5-4113-8e2d-b22465e65bf6";

/// Serialises the stories: each one owns the process's managed-identity variables while it runs.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Harness {
    _serial: tokio::sync::MutexGuard<'static, ()>,
    sim: Sim,
    azure: Azure,
    remediator: Remediator,
    policy: Policy,
    /// cmk-guard's own object id (the app's managed identity).
    app: String,
}

async fn harness(tenant: Tenant) -> Harness {
    harness_with_policy(tenant, CONSENT_TO_ALL).await
}

async fn harness_with_policy(tenant: Tenant, policy: &str) -> Harness {
    let serial = SERIAL.lock().await;
    let identity_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let identity_header = format!("remediate-tests-{identity_port}");
    // SAFETY: the stories of this module run one at a time (SERIAL), no other test in this binary
    // reads or writes these variables (the state suite's credential lookup answers None), and they
    // are set before this story starts its simulator's threads.
    unsafe {
        std::env::set_var(
            "IDENTITY_ENDPOINT",
            format!("http://127.0.0.1:{identity_port}/msi/token"),
        );
        std::env::set_var("IDENTITY_HEADER", &identity_header);
    }
    let options = SimOptions {
        identity_port,
        identity_header: Some(identity_header),
        ..SimOptions::default()
    };
    let sim = Sim::start(tenant, options)
        .await
        .expect("the simulator starts");
    let env = sim.handler_env();
    let lookup = move |name: &str| {
        env.iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    let settings = Settings::from_lookup(&lookup).expect("settings");
    let azure = Azure::new(&settings.azure(), &lookup).expect("Azure clients");
    let remediator = Remediator::new(&azure);
    let app = sim.tenant(|t| t.app.principal_id.clone().expect("the app has an identity"));
    Harness {
        _serial: serial,
        sim,
        azure,
        remediator,
        policy: Policy::from_toml_str(policy, "test-policy.toml").expect("policy"),
        app,
    }
}

fn workspace_id() -> String {
    format!(
        "/subscriptions/{DEFAULT_SUBSCRIPTION}/resourceGroups/rg-mlw-prod/providers/Microsoft.MachineLearningServices/workspaces/{DEFAULT_WORKSPACE}"
    )
}

fn vault_id() -> String {
    format!(
        "/subscriptions/{DEFAULT_SUBSCRIPTION}/resourceGroups/rg-mlw-prod/providers/Microsoft.KeyVault/vaults/{DEFAULT_VAULT}"
    )
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(20)
}

impl Harness {
    /// What observe reads and the rules conclude right now (fresh reads, no cache).
    async fn evaluate(&self) -> (Snapshot, Vec<Finding>) {
        let observer = Observer::new(
            self.azure.arm.clone(),
            self.azure.keys.clone(),
            Duration::ZERO,
        );
        let id = ArmResourceId::parse(&workspace_id()).expect("workspace id");
        let snapshot = observer.snapshot(&id, deadline()).await;
        let evaluation = rules::evaluate(&Context {
            snapshot: &snapshot,
            now: OffsetDateTime::now_utc(),
            policy: &self.policy,
            trigger: None,
        });
        (snapshot, evaluation.findings)
    }

    /// The open finding of `rule`, as production would plan it; the request log starts empty
    /// afterwards.
    async fn finding(&self, rule: &str) -> (Finding, Snapshot) {
        let (snapshot, findings) = self.evaluate().await;
        let finding = findings
            .iter()
            .find(|f| f.rule == rule)
            .cloned()
            .unwrap_or_else(|| panic!("no {rule} finding in the broken tenant: {findings:#?}"));
        self.reset();
        (finding, snapshot)
    }

    fn reset(&self) {
        self.sim.reset_counters();
        self.sim.clear_events();
    }

    async fn apply(&self, finding: &Finding) -> Attempt {
        self.apply_with(finding, &self.policy).await
    }

    async fn apply_with(&self, finding: &Finding, policy: &Policy) -> Attempt {
        let consent = Consent::from_policy(policy, finding.rule);
        self.remediator
            .apply(finding, &consent, OffsetDateTime::now_utc(), deadline())
            .await
    }

    /// Every request that tried to change something (the Key Vault challenge round trip, a
    /// 401 without a token, is not an attempt).
    fn writes(&self) -> Vec<RequestRecord> {
        self.sim
            .requests(&RecordFilter::default())
            .into_iter()
            .filter(|r| !r.method.eq_ignore_ascii_case("GET") && r.status != 401)
            .collect()
    }

    fn write_operations(&self) -> Vec<(String, String, u16)> {
        self.writes()
            .into_iter()
            .map(|r| (r.operation, r.method, r.status))
            .collect()
    }

    /// ARM resource events (`Microsoft.Resources.*`) the writes caused.
    fn resource_events(&self) -> Vec<Value> {
        self.sim
            .events()
            .into_iter()
            .filter(|e| {
                e["eventType"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("Microsoft.Resources."))
            })
            .collect()
    }

    /// Asserts exactly one ARM event of `event_type` for `operation`, caused by cmk-guard.
    fn assert_one_event_by_app(&self, event_type: &str, operation: &str, subject: &str) {
        let events = self.resource_events();
        assert_eq!(events.len(), 1, "{events:#?}");
        let event = &events[0];
        assert_eq!(event["eventType"], event_type);
        assert_eq!(event["data"]["operationName"], operation);
        assert!(
            event["subject"]
                .as_str()
                .is_some_and(|s| s.eq_ignore_ascii_case(subject)),
            "{}",
            event["subject"]
        );
        assert_eq!(
            event["data"]["claims"]["http://schemas.microsoft.com/identity/claims/objectidentifier"],
            self.app.as_str(),
            "the event names cmk-guard's identity as the caller"
        );
    }

    fn assert_written_by_app(&self) {
        for record in self.writes() {
            assert_eq!(
                record.caller.as_deref(),
                Some(self.app.as_str()),
                "{record:?}"
            );
        }
    }

    /// Applies again and expects `skipped` with no write at all.
    async fn assert_second_run_skips(&self, finding: &Finding) {
        self.reset();
        let again = self.apply(finding).await;
        assert_eq!(again.action.result, ActionResult::Skipped, "{again:?}");
        assert!(
            again.action.detail.starts_with("already compliant"),
            "{}",
            again.action.detail
        );
        assert_eq!(self.write_operations(), [], "a second run writes nothing");
    }

    async fn stop(self) {
        self.sim.stop().await;
    }
}

fn applied(attempt: &Attempt) {
    assert_eq!(attempt.action.kind, ActionKind::Remediate);
    assert_eq!(attempt.action.result, ActionResult::Applied, "{attempt:#?}");
    assert!(!attempt.transient);
    assert!(
        attempt.action.detail.contains("verified"),
        "{}",
        attempt.action.detail
    );
}

fn failed(attempt: &Attempt) -> &str {
    assert_eq!(attempt.action.result, ActionResult::Failed, "{attempt:#?}");
    &attempt.action.detail
}

fn manual_finding(rule: &str, resource: &str) -> Finding {
    Finding {
        rule: cmk_guard::catalogue::RuleId::parse(rule).unwrap(),
        resource: resource.to_owned(),
        workspace: workspace_id(),
        severity: Severity::High,
        state: FindingState::Open,
        observed: String::new(),
        expected: String::new(),
    }
}

fn vault_state<R>(sim: &Sim, f: impl FnOnce(&azure_sim::model::Vault) -> R) -> R {
    sim.tenant(|t| f(t.vault(DEFAULT_VAULT).expect("the vault")))
}

fn workspace_key_identifier(sim: &Sim) -> String {
    sim.tenant(|t| {
        t.workspace(DEFAULT_WORKSPACE)
            .and_then(|w| w.encryption.as_ref())
            .map(|e| e.key_identifier.clone())
            .expect("a CMK workspace")
    })
}

// --- vault.purge-protection ---------------------------------------------------------------

fn vault_without_purge_protection() -> Tenant {
    Tenant::compliant_builder()
        .with_vault(DEFAULT_VAULT, |v| {
            v.purge_protection = None;
            v.tags.insert("owner".into(), "ml-platform".into());
        })
        .build()
        .expect("tenant")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_protection_is_patched_once_and_nothing_else_changes() {
    let h = harness(vault_without_purge_protection()).await;
    let before = vault_state(&h.sim, Clone::clone);
    let (finding, snapshot) = h.finding("vault.purge-protection").await;
    assert_eq!(
        describe(&finding, &snapshot, &h.policy).as_deref(),
        Some(format!("would PATCH enablePurgeProtection=true on {} (irreversible: purge protection cannot be turned off again)", vault_id()).as_str())
    );

    let attempt = h.apply(&finding).await;
    applied(&attempt);
    assert_eq!(attempt.action.target, vault_id());
    assert!(
        attempt.action.detail.starts_with(&format!(
            "PATCHed {} with enablePurgeProtection=true",
            vault_id()
        )),
        "{}",
        attempt.action.detail
    );
    let after = vault_state(&h.sim, Clone::clone);
    assert_eq!(after.enable_purge_protection, Some(true));
    assert_eq!(after.access_policies.len(), before.access_policies.len());
    assert_eq!(
        after.tags, before.tags,
        "a PATCH of one flag keeps the rest (never a PUT)"
    );
    assert_eq!(after.enable_soft_delete, before.enable_soft_delete);
    assert_eq!(
        after.enable_rbac_authorization,
        before.enable_rbac_authorization
    );
    assert_eq!(
        h.write_operations(),
        [("Vaults_Update".to_owned(), "PATCH".to_owned(), 200)]
    );
    assert!(h.writes()[0].path.eq_ignore_ascii_case(&vault_id()));
    h.assert_written_by_app();
    h.assert_one_event_by_app(
        "Microsoft.Resources.ResourceWriteSuccess",
        "Microsoft.KeyVault/vaults/write",
        &vault_id(),
    );
    assert!(
        h.evaluate()
            .await
            .1
            .iter()
            .all(|f| f.rule != "vault.purge-protection"),
        "the rule passes on a fresh evaluation"
    );

    h.assert_second_run_skips(&finding).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_protection_without_consent_is_refused_before_any_request() {
    let h = harness(vault_without_purge_protection()).await;
    let (finding, _) = h.finding("vault.purge-protection").await;
    let policies = [
        Policy::default(),
        Policy::from_toml_str(
            "[remediation.\"workspace.key-access\"]\nenabled = true\n",
            "other-consent.toml",
        )
        .expect("policy"),
    ];
    for policy in &policies {
        let attempt = h.apply_with(&finding, policy).await;
        let detail = failed(&attempt);
        assert!(
            detail.starts_with("refused: the policy does not consent to remediating vault.purge-protection (it cannot be undone: set enabled = true and irreversible_ok = true"),
            "{detail}"
        );
        assert!(!attempt.transient);
    }
    assert_eq!(h.sim.counters().total, 0, "no request at all");
    assert_eq!(vault_state(&h.sim, |v| v.enable_purge_protection), None);

    let other_rule = Consent::from_policy(
        &h.policy,
        cmk_guard::catalogue::RuleId::parse("key.expiry").unwrap(),
    );
    let attempt = h
        .remediator
        .apply(&finding, &other_rule, OffsetDateTime::now_utc(), deadline())
        .await;
    assert!(failed(&attempt).starts_with("refused: the consent given is for key.expiry"));
    assert_eq!(h.sim.counters().total, 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_protection_needs_soft_delete() {
    let tenant = Tenant::compliant_builder()
        .with_vault(DEFAULT_VAULT, |v| {
            v.purge_protection = None;
            v.soft_delete = Some(false);
        })
        .build()
        .expect("tenant");
    let h = harness(tenant).await;
    let (finding, snapshot) = h.finding("vault.purge-protection").await;
    assert!(
        describe(&finding, &snapshot, &h.policy).is_some_and(|d| d.starts_with("would not PATCH"))
    );
    let attempt = h.apply(&finding).await;
    assert!(
        failed(&attempt).contains("soft delete is off"),
        "{}",
        attempt.action.detail
    );
    assert_eq!(h.write_operations(), []);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_403_on_the_write_fails_with_the_arm_error_code() {
    let h = harness(vault_without_purge_protection()).await;
    let (finding, _) = h.finding("vault.purge-protection").await;
    h.sim
        .add_fault(Fault::on_operation("Vaults_Update").status(403));
    let attempt = h.apply(&finding).await;
    let detail = failed(&attempt);
    assert!(!attempt.transient, "403 is permanent");
    assert!(detail.contains("HTTP 403 AuthorizationFailed"), "{detail}");
    assert_eq!(
        h.write_operations(),
        [("Vaults_Update".to_owned(), "PATCH".to_owned(), 403)],
        "403 is not retried"
    );
    assert_eq!(vault_state(&h.sim, |v| v.enable_purge_protection), None);
    assert_eq!(h.resource_events(), Vec::<Value>::new());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_keeps_failing_transiently_is_reported_as_transient() {
    let h = harness(vault_without_purge_protection()).await;
    let (finding, _) = h.finding("vault.purge-protection").await;
    h.sim
        .add_fault(Fault::on_operation("Vaults_Update").status(503));
    let consent = Consent::from_policy(&h.policy, finding.rule);
    let attempt = h
        .remediator
        .apply(
            &finding,
            &consent,
            OffsetDateTime::now_utc(),
            Instant::now() + Duration::from_secs(3),
        )
        .await;
    let detail = failed(&attempt).to_owned();
    assert!(attempt.transient, "the next invocation may retry: {detail}");
    assert!(detail.contains("503"), "{detail}");
    assert_eq!(vault_state(&h.sim, |v| v.enable_purge_protection), None);
    h.stop().await;
}

// --- workspace.key-access -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_policy_vault_gets_exactly_get_wrap_and_unwrap() {
    let tenant = Tenant::compliant_builder()
        .with_vault(DEFAULT_VAULT, |v| v.rbac = Some(false))
        .with_workspace(DEFAULT_WORKSPACE, |w| {
            if let Some(cmk) = w.cmk.as_mut() {
                cmk.grant = Grant::None;
            }
        })
        .build()
        .expect("tenant");
    let h = harness(tenant).await;
    let principal = h.sim.tenant(|t| {
        t.workspace(DEFAULT_WORKSPACE)
            .and_then(|w| w.system_principal_id.clone())
            .expect("system identity")
    });
    let before = vault_state(&h.sim, |v| v.access_policies.clone());
    let (finding, snapshot) = h.finding("workspace.key-access").await;
    let description = describe(&finding, &snapshot, &h.policy).expect("described");
    assert!(
        description.starts_with(&format!("would PUT accessPolicies/add on {} granting keys get, wrapKey, unwrapKey to the system identity (principal {principal})", vault_id())),
        "{description}"
    );

    let attempt = h.apply(&finding).await;
    applied(&attempt);
    let after = vault_state(&h.sim, |v| v.access_policies.clone());
    assert_eq!(after.len(), before.len() + 1, "the other entries stay");
    for entry in &before {
        assert!(
            after
                .iter()
                .any(|p| p.object_id == entry.object_id && p.keys == entry.keys)
        );
    }
    let granted = after
        .iter()
        .find(|p| p.object_id.eq_ignore_ascii_case(&principal))
        .expect("the workspace identity has an access policy");
    assert_eq!(granted.keys, ["get", "wrapKey", "unwrapKey"]);
    assert!(granted.secrets.is_empty() && granted.certificates.is_empty());
    assert_eq!(granted.tenant_id, h.sim.tenant(|t| t.tenant_id.clone()));
    assert_eq!(
        h.write_operations(),
        [(
            "Vaults_UpdateAccessPolicy".to_owned(),
            "PUT".to_owned(),
            200
        )]
    );
    assert!(
        h.writes()[0]
            .path
            .to_ascii_lowercase()
            .ends_with("/accesspolicies/add")
    );
    h.assert_written_by_app();
    h.assert_one_event_by_app(
        "Microsoft.Resources.ResourceWriteSuccess",
        "Microsoft.KeyVault/vaults/accessPolicies/write",
        &format!("{}/accessPolicies/add", vault_id()),
    );

    h.assert_second_run_skips(&finding).await;
    h.stop().await;
}

fn rbac_tenant_with_encryption_identity() -> (Tenant, String) {
    let uai = UserAssignedSpec::new(DEFAULT_SUBSCRIPTION, "rg-mlw-prod", "uai-mlw-cmk");
    let principal = uai.principal_id();
    let tenant = Tenant::compliant_builder()
        .with_workspace(DEFAULT_WORKSPACE, |w| {
            *w = w
                .clone()
                .user_assigned_encryption_identity(uai)
                .with_cmk(|cmk| cmk.grant = Grant::None);
        })
        .build()
        .expect("tenant");
    (tenant, principal)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rbac_vault_gets_a_deterministic_role_assignment_for_the_encryption_identity() {
    let (tenant, principal) = rbac_tenant_with_encryption_identity();
    let h = harness(tenant).await;
    let (finding, snapshot) = h.finding("workspace.key-access").await;
    let description = describe(&finding, &snapshot, &h.policy).expect("described");

    let attempt = h.apply(&finding).await;
    applied(&attempt);
    let assignment = h.sim.tenant(|t| {
        t.role_assignments
            .iter()
            .find(|a| a.principal_id.eq_ignore_ascii_case(&principal))
            .cloned()
            .expect("an assignment for the encryption identity")
    });
    assert!(assignment.scope.eq_ignore_ascii_case(&vault_id()));
    assert_eq!(assignment.role_definition_guid, ROLE_GUID);
    assert_eq!(assignment.principal_type, "ServicePrincipal");
    assert_eq!(assignment.condition, None);
    let name = uuid::Uuid::parse_str(&assignment.name).expect("a GUID name");
    assert_eq!(name.get_version_num(), 5, "a deterministic (v5) name");
    assert!(
        description.contains(&format!("roleAssignments/{}", assignment.name)),
        "the dry run names the same assignment: {description}"
    );
    assert_eq!(
        h.write_operations(),
        [("RoleAssignments_Create".to_owned(), "PUT".to_owned(), 201)]
    );
    assert!(
        h.writes()[0]
            .path
            .ends_with(&format!("/roleAssignments/{}", assignment.name))
    );
    h.assert_written_by_app();
    h.assert_one_event_by_app(
        "Microsoft.Resources.ResourceWriteSuccess",
        "Microsoft.Authorization/roleAssignments/write",
        &format!(
            "{}/providers/Microsoft.Authorization/roleAssignments/{}",
            vault_id(),
            assignment.name
        ),
    );
    h.assert_second_run_skips(&finding).await;

    // Someone removes it: the retry assigns the very same name again.
    h.sim
        .admin()
        .remove_role_assignment(&assignment.name)
        .expect("removed");
    h.reset();
    applied(&h.apply(&finding).await);
    let names: Vec<String> = h.sim.tenant(|t| {
        t.role_assignments
            .iter()
            .filter(|a| a.principal_id.eq_ignore_ascii_case(&principal))
            .map(|a| a.name.clone())
            .collect()
    });
    assert_eq!(names, std::slice::from_ref(&assignment.name));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_grant_under_another_name_answers_409_and_the_rule_decides() {
    let (tenant, principal) = rbac_tenant_with_encryption_identity();
    let h = harness(tenant).await;
    // The same role for the same principal at the vault, but narrowed by an ABAC condition the
    // rule cannot evaluate: the finding stays (medium), and the PUT meets 409.
    h.sim
        .admin()
        .add_role_assignment(&RoleAssignmentSpec {
            condition: Some(
                "@Resource[Microsoft.KeyVault/vaults/keys:name] StringEquals 'other'".into(),
            ),
            ..RoleAssignmentSpec::new(&vault_id(), ROLE_GUID, &principal)
        })
        .expect("added");
    let (finding, _) = h.finding("workspace.key-access").await;
    let attempt = h.apply(&finding).await;
    let detail = failed(&attempt);
    assert!(detail.contains("still does not pass"), "{detail}");
    assert_eq!(
        h.write_operations(),
        [("RoleAssignments_Create".to_owned(), "PUT".to_owned(), 409)]
    );
    assert_eq!(h.resource_events(), Vec::<Value>::new());
    h.stop().await;
}

// --- key.rotation-policy --------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_policy_from_the_policy_file_is_put_on_the_data_plane() {
    let tenant = Tenant::compliant_builder()
        .with_key(DEFAULT_VAULT, DEFAULT_KEY, |k| k.rotation_policy = None)
        .build()
        .expect("tenant");
    let policy = CONSENT_TO_ALL.replace(
        "[remediation.\"key.rotation-policy\"]\nenabled = true\n",
        "[remediation.\"key.rotation-policy\"]\nenabled = true\nexpiry_time = \"P2Y\"\nrotate_before_expiry = \"P60D\"\n",
    );
    assert_ne!(policy, CONSENT_TO_ALL);
    let h = harness_with_policy(tenant, &policy).await;
    let (finding, snapshot) = h.finding("key.rotation-policy").await;
    assert_eq!(
        describe(&finding, &snapshot, &h.policy).as_deref(),
        Some(
            "would PUT a rotation policy on https://kv-mlw-cmk-prod.vault.azure.net/keys/mlw-cmk-key: Rotate P60D before expiry, Notify P30D before expiry, expiryTime P2Y"
        )
    );

    let attempt = h.apply(&finding).await;
    applied(&attempt);
    let written = h.sim.tenant(|t| {
        t.vault(DEFAULT_VAULT)
            .and_then(|v| v.key(DEFAULT_KEY))
            .and_then(|k| k.rotation_policy.clone())
            .expect("a rotation policy")
    });
    assert_eq!(written.expiry_time.as_deref(), Some("P2Y"));
    let actions: Vec<(String, Option<String>, Option<String>)> = written
        .lifetime_actions
        .iter()
        .map(|a| {
            (
                a.action.clone(),
                a.time_after_create.clone(),
                a.time_before_expiry.clone(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("Rotate".to_owned(), None, Some("P60D".to_owned())),
            ("Notify".to_owned(), None, Some("P30D".to_owned())),
        ]
    );
    assert_eq!(
        h.write_operations(),
        [("UpdateKeyRotationPolicy".to_owned(), "PUT".to_owned(), 200)]
    );
    assert_eq!(h.writes()[0].host, "kv-mlw-cmk-prod.vault.azure.net");
    h.assert_written_by_app();
    assert_eq!(h.resource_events(), Vec::<Value>::new(), "no ARM write");

    h.assert_second_run_skips(&finding).await;
    h.stop().await;
}

// --- key.expiry -----------------------------------------------------------------------------

fn expiring_key(pin: VersionPin) -> Tenant {
    Tenant::compliant_builder()
        .with_key(DEFAULT_VAULT, DEFAULT_KEY, |k| {
            *k = k.clone().expires_in_days(5);
        })
        .with_workspace(DEFAULT_WORKSPACE, |w| {
            if let Some(cmk) = w.cmk.as_mut() {
                cmk.version = pin;
            }
        })
        .build()
        .expect("tenant")
}

fn key_versions(sim: &Sim) -> Vec<String> {
    sim.tenant(|t| {
        t.vault(DEFAULT_VAULT)
            .and_then(|v| v.key(DEFAULT_KEY))
            .map(|k| k.versions.iter().map(|v| v.version.clone()).collect())
            .expect("the key")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_pinned_key_is_rotated_and_the_workspace_repointed() {
    let h = harness(expiring_key(VersionPin::default())).await;
    let versions_before = key_versions(&h.sim);
    let (finding, snapshot) = h.finding("key.expiry").await;
    assert!(
        describe(&finding, &snapshot, &h.policy).is_some_and(|d| d.starts_with(
            "would rotate https://kv-mlw-cmk-prod.vault.azure.net/keys/mlw-cmk-key (POST /keys/mlw-cmk-key/rotate"
        ))
    );

    let attempt = h.apply(&finding).await;
    applied(&attempt);
    let versions = key_versions(&h.sim);
    assert_eq!(versions.len(), versions_before.len() + 1, "one new version");
    let new_version = versions.last().cloned().expect("a version");
    let expected =
        format!("https://kv-mlw-cmk-prod.vault.azure.net/keys/{DEFAULT_KEY}/{new_version}");
    assert_eq!(workspace_key_identifier(&h.sim), expected);
    assert!(
        attempt.action.detail.contains(&expected),
        "{}",
        attempt.action.detail
    );
    assert_eq!(
        h.write_operations(),
        [
            ("RotateKey".to_owned(), "POST".to_owned(), 200),
            ("Workspaces_Update".to_owned(), "PATCH".to_owned(), 200),
        ]
    );
    h.assert_written_by_app();
    h.assert_one_event_by_app(
        "Microsoft.Resources.ResourceWriteSuccess",
        "Microsoft.MachineLearningServices/workspaces/write",
        &workspace_id(),
    );
    assert!(
        h.sim
            .events()
            .iter()
            .any(|e| e["eventType"] == "Microsoft.KeyVault.KeyNewVersionCreated"),
        "Key Vault announces the new version"
    );
    assert!(
        h.evaluate().await.1.iter().all(|f| f.rule != "key.expiry"),
        "the version in use no longer expires soon"
    );

    h.assert_second_run_skips(&finding).await;
    assert_eq!(
        key_versions(&h.sim).len(),
        versions.len(),
        "no second rotation"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_pinned_to_an_old_version_moves_to_a_good_latest_without_rotating() {
    let tenant = Tenant::compliant_builder()
        .with_key(DEFAULT_VAULT, DEFAULT_KEY, |k| {
            *k = k.clone().older_version(KeyVersionSpec::expiring_in_days(3));
        })
        .with_workspace(DEFAULT_WORKSPACE, |w| {
            if let Some(cmk) = w.cmk.as_mut() {
                cmk.version = VersionPin::Named("oldest".into());
            }
        })
        .build()
        .expect("tenant");
    let h = harness(tenant).await;
    let versions = key_versions(&h.sim);
    let (finding, _) = h.finding("key.expiry").await;
    let attempt = h.apply(&finding).await;
    applied(&attempt);
    assert!(
        attempt
            .action
            .detail
            .starts_with("the latest version does not expire soon")
    );
    assert_eq!(key_versions(&h.sim), versions, "nothing rotated");
    let latest = versions.last().cloned().expect("a version");
    assert!(workspace_key_identifier(&h.sim).ends_with(&format!("/{latest}")));
    assert_eq!(
        h.write_operations(),
        [("Workspaces_Update".to_owned(), "PATCH".to_owned(), 200)]
    );
    h.assert_one_event_by_app(
        "Microsoft.Resources.ResourceWriteSuccess",
        "Microsoft.MachineLearningServices/workspaces/write",
        &workspace_id(),
    );
    h.assert_second_run_skips(&finding).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_versionless_workspace_only_needs_the_rotation() {
    let h = harness(expiring_key(VersionPin::Named("versionless".into()))).await;
    let identifier = workspace_key_identifier(&h.sim);
    let (finding, _) = h.finding("key.expiry").await;
    let attempt = h.apply(&finding).await;
    applied(&attempt);
    assert_eq!(
        workspace_key_identifier(&h.sim),
        identifier,
        "not repointed"
    );
    assert_eq!(
        h.write_operations(),
        [("RotateKey".to_owned(), "POST".to_owned(), 200)]
    );
    assert_eq!(h.resource_events(), Vec::<Value>::new());
    h.assert_second_run_skips(&finding).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_identifier_in_another_vault_is_refused() {
    let h = harness(expiring_key(VersionPin::default())).await;
    let (finding, _) = h.finding("key.expiry").await;
    let version = key_versions(&h.sim).last().cloned().expect("a version");
    h.sim.tenant_mut(|t| {
        if let Some(encryption) = t
            .workspaces
            .iter_mut()
            .find(|w| w.name == DEFAULT_WORKSPACE)
            .and_then(|w| w.encryption.as_mut())
        {
            encryption.key_identifier =
                format!("https://kv-elsewhere.vault.azure.net/keys/{DEFAULT_KEY}/{version}");
        }
    });
    let attempt = h.apply(&finding).await;
    let detail = failed(&attempt);
    assert!(
        detail.starts_with("refused: the workspace's keyIdentifier https://kv-elsewhere.vault.azure.net/keys/mlw-cmk-key/"),
        "{detail}"
    );
    assert!(!attempt.transient);
    assert_eq!(h.write_operations(), []);
    let operations: Vec<String> = h
        .sim
        .requests(&RecordFilter::default())
        .into_iter()
        .map(|r| r.operation)
        .collect();
    assert_eq!(
        operations,
        ["Workspaces_Get"],
        "only the workspace was read"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_url_outside_the_key_vault_dns_suffix_is_refused_before_any_request_to_it() {
    let h = harness(expiring_key(VersionPin::default())).await;
    let (finding, _) = h.finding("key.expiry").await;
    let version = key_versions(&h.sim).last().cloned().expect("a version");
    h.sim.tenant_mut(|t| {
        if let Some(encryption) = t
            .workspaces
            .iter_mut()
            .find(|w| w.name == DEFAULT_WORKSPACE)
            .and_then(|w| w.encryption.as_mut())
        {
            encryption.key_identifier = format!(
                "https://kv-mlw-cmk-prod.vault.attacker.example/keys/{DEFAULT_KEY}/{version}"
            );
        }
    });
    for rule in ["key.expiry", "key.rotation-policy", "key.enabled"] {
        h.reset();
        let attempt = h
            .apply(&Finding {
                rule: cmk_guard::catalogue::RuleId::parse(rule).unwrap(),
                ..finding.clone()
            })
            .await;
        let detail = failed(&attempt);
        assert!(
            detail.contains("is not under the Key Vault DNS suffix vault.azure.net"),
            "{rule}: {detail}"
        );
        let operations: Vec<String> = h
            .sim
            .requests(&RecordFilter::default())
            .into_iter()
            .map(|r| r.operation)
            .collect();
        assert_eq!(operations, ["Workspaces_Get"], "{rule}");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_403_on_the_rotation_fails_with_the_key_vault_code() {
    let h = harness(expiring_key(VersionPin::default())).await;
    let (finding, _) = h.finding("key.expiry").await;
    let versions = key_versions(&h.sim);
    h.sim
        .add_fault(Fault::on_operation("RotateKey").status(403));
    let attempt = h.apply(&finding).await;
    let detail = failed(&attempt);
    assert!(!attempt.transient);
    assert!(detail.contains("HTTP 403 Forbidden"), "{detail}");
    assert_eq!(key_versions(&h.sim), versions);
    assert!(
        h.write_operations()
            .iter()
            .all(|(operation, _, _)| operation == "RotateKey"),
        "the workspace is not touched"
    );
    h.stop().await;
}

// --- subscription.providers -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_provider_is_registered() {
    let tenant = Tenant::compliant_builder()
        .unregistered_provider(DEFAULT_SUBSCRIPTION, "Microsoft.Search")
        .build()
        .expect("tenant");
    let h = harness(tenant).await;
    let provider = format!("/subscriptions/{DEFAULT_SUBSCRIPTION}/providers/Microsoft.Search");
    let (finding, snapshot) = h.finding("subscription.providers").await;
    assert_eq!(finding.resource, provider);
    assert_eq!(
        describe(&finding, &snapshot, &h.policy),
        Some(format!("would POST {provider}/register"))
    );

    let attempt = h.apply(&finding).await;
    applied(&attempt);
    assert!(
        attempt
            .action
            .detail
            .contains("Microsoft.Search was NotRegistered"),
        "{}",
        attempt.action.detail
    );
    let state = h.sim.tenant(|t| {
        t.subscription(DEFAULT_SUBSCRIPTION)
            .and_then(|s| {
                s.providers
                    .iter()
                    .find(|p| p.namespace == "Microsoft.Search")
            })
            .map(|p| p.registration_state.clone())
            .expect("the provider")
    });
    assert_eq!(state, "Registered");
    assert_eq!(
        h.write_operations(),
        [("Providers_Register".to_owned(), "POST".to_owned(), 200)]
    );
    h.assert_written_by_app();
    h.assert_one_event_by_app(
        "Microsoft.Resources.ResourceActionSuccess",
        "Microsoft.Search/register/action",
        &provider,
    );
    h.assert_second_run_skips(&finding).await;

    let elsewhere = manual_finding(
        "subscription.providers",
        &format!("/subscriptions/{OTHER_SUBSCRIPTION}/providers/Microsoft.Search"),
    );
    h.reset();
    assert!(failed(&h.apply(&elsewhere).await).contains("not in the workspace's subscription"));
    assert_eq!(h.sim.counters().total, 0);
    h.stop().await;
}

// --- key.enabled ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_key_is_enabled_only_with_explicit_consent() {
    let tenant = Tenant::compliant_builder()
        .with_key(DEFAULT_VAULT, DEFAULT_KEY, |k| *k = k.clone().disabled())
        .build()
        .expect("tenant");
    let h = harness(tenant).await;
    let (finding, _) = h.finding("key.enabled").await;

    let default = h.apply_with(&finding, &Policy::default()).await;
    assert!(failed(&default).starts_with(
        "refused: the policy does not consent to remediating key.enabled (set enabled = true"
    ));
    assert_eq!(h.sim.counters().total, 0);

    let attempt = h.apply(&finding).await;
    applied(&attempt);
    let enabled = h.sim.tenant(|t| {
        t.vault(DEFAULT_VAULT)
            .and_then(|v| v.key(DEFAULT_KEY))
            .and_then(|k| k.latest())
            .map(|v| v.enabled)
            .expect("the key")
    });
    assert!(enabled);
    assert_eq!(
        h.write_operations(),
        [("UpdateKey".to_owned(), "PATCH".to_owned(), 200)]
    );
    h.assert_written_by_app();
    h.assert_second_run_skips(&finding).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finding_on_a_rule_without_remediation_is_refused() {
    let h = harness(vault_without_purge_protection()).await;
    let finding = manual_finding("vault.soft-delete", &vault_id());
    let attempt = h.apply(&finding).await;
    assert_eq!(
        failed(&attempt),
        "refused: rule vault.soft-delete has no remediation"
    );
    assert_eq!(h.sim.counters().total, 0);
    h.stop().await;
}

#[tokio::test]
async fn a_write_outside_the_subscription_allowlist_is_skipped_with_the_reason() {
    // The workspace is in the allowed subscription; its CMK vault lives in another one, broken
    // in every way a remediation could fix.
    let tenant = Tenant::compliant_builder()
        .subscription(OTHER_SUBSCRIPTION)
        .with_vault(DEFAULT_VAULT, |vault| {
            vault.subscription = OTHER_SUBSCRIPTION.into();
            vault.purge_protection = None;
        })
        .with_key(DEFAULT_VAULT, DEFAULT_KEY, |key| key.rotation_policy = None)
        .with_workspace(DEFAULT_WORKSPACE, |ws| {
            *ws = ws.clone().with_cmk(|cmk| cmk.grant = Grant::None);
        })
        .build()
        .expect("tenant");
    let h = harness(tenant).await;
    let (_, findings) = h.evaluate().await;
    // The same clients as production builds them with CMKGUARD_SUBSCRIPTIONS set.
    let env = h.sim.handler_env();
    let lookup = move |name: &str| {
        if name == "CMKGUARD_SUBSCRIPTIONS" {
            return Some(DEFAULT_SUBSCRIPTION.to_owned());
        }
        env.iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    let settings = Settings::from_lookup(&lookup).expect("settings");
    let scoped = Remediator::new(&Azure::new(&settings.azure(), &lookup).expect("Azure clients"));
    let rules = [
        "vault.purge-protection",
        "workspace.key-access",
        "key.rotation-policy",
    ];
    for rule in rules {
        let finding = findings
            .iter()
            .find(|f| f.rule == rule)
            .unwrap_or_else(|| panic!("no {rule} finding: {findings:#?}"));
        h.reset();
        let consent = Consent::from_policy(
            &h.policy,
            cmk_guard::catalogue::RuleId::parse(rule).unwrap(),
        );
        let attempt = scoped
            .apply(finding, &consent, OffsetDateTime::now_utc(), deadline())
            .await;
        assert_eq!(
            attempt.action.result,
            ActionResult::Skipped,
            "{rule}: {attempt:?}"
        );
        assert!(
            attempt
                .action
                .detail
                .contains("outside CMKGUARD_SUBSCRIPTIONS")
                && attempt.action.detail.contains(OTHER_SUBSCRIPTION),
            "{rule}: {}",
            attempt.action.detail
        );
        let outside: Vec<String> = h
            .sim
            .requests(&RecordFilter::default())
            .into_iter()
            .filter(|r| {
                let other = OTHER_SUBSCRIPTION.to_ascii_lowercase();
                r.path.to_ascii_lowercase().contains(&other)
                    || r.host.to_ascii_lowercase().ends_with(".vault.azure.net")
            })
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        assert!(outside.is_empty(), "{rule}: {outside:?}");
    }
    h.stop().await;
}

#[tokio::test]
async fn a_data_plane_retry_after_past_the_deadline_is_not_waited_out() {
    let tenant = Tenant::compliant_builder()
        .with_key(DEFAULT_VAULT, DEFAULT_KEY, |k| k.rotation_policy = None)
        .build()
        .expect("tenant");
    let h = harness(tenant).await;
    let (finding, _) = h.finding("key.rotation-policy").await;
    h.sim.add_fault(
        Fault::on_operation("UpdateKeyRotationPolicy")
            .throttle(u64::MAX)
            .times(1),
    );
    let attempt = h.apply(&finding).await;
    assert_eq!(attempt.action.result, ActionResult::Failed, "{attempt:?}");
    assert!(attempt.transient, "{attempt:?}");
    // Given up on Key Vault's own answer, not by running into the caller's deadline.
    assert!(
        attempt.action.detail.contains("429") && !attempt.action.detail.contains("deadline"),
        "{}",
        attempt.action.detail
    );
    let puts = h.sim.requests(&RecordFilter {
        operation: Some("UpdateKeyRotationPolicy".into()),
        ..RecordFilter::default()
    });
    assert_eq!(
        puts.iter().filter(|r| r.status == 429).count(),
        1,
        "not retried"
    );
    h.stop().await;
}
