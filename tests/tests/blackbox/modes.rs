//! Modes mean what they say, through the real binary, for every function: `observe` reports
//! findings and sends nothing — no Teams card, no email, no digest — and writes nothing to
//! Azure; `alert` sends (once: the sweep adds no digest repeating its own alert) and writes
//! nothing; `remediate` sends and applies what the policy allows. `Evaluate` acts only with `apply`, and only in `remediate`.
//!
//! The story's tenant (`cmk_guard_blackbox::story`: one CMK workspace whose vault lacks purge
//! protection) with its finding routed to Teams and email, and the policy's consent to
//! remediate it; Teams is a local sink, email a real aiosmtpd.

use azure_sim::{Sim, SimOptions};
use cmk_guard_blackbox::scratch::Scratch;
use cmk_guard_blackbox::sink::Sink;
use cmk_guard_blackbox::smtp::Smtp;
use cmk_guard_blackbox::story::{
    self, FINDING, key_near_expiry, tenant, workspace_id, workspace_write,
};
use cmk_guard_blackbox::{Handler, Reply, timer_envelope};
use serde_json::{Value, json};

/// `story::POLICY` with critical and high also sent by email: every mode is checked on both
/// channels.
const POLICY: &str = r#"
[remediation."vault.purge-protection"]
enabled = true
irreversible_ok = true
[notify]
teams = ["critical", "high", "medium", "low"]
email = ["critical", "high"]
"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Observe,
    Alert,
    Remediate,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Observe => "observe",
            Mode::Alert => "alert",
            Mode::Remediate => "remediate",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Function {
    OnSubscriptionEvent,
    OnKeyVaultEvent,
    Sweep,
    /// With `apply` where the mode allows it (`remediate`), without it elsewhere.
    Evaluate,
}

/// The handler in `mode`, with Teams and email configured and routed.
struct Running {
    handler: Handler,
    teams: Sink,
    smtp: Smtp,
    mode: Mode,
    /// The certificate aiosmtpd presents and the policy: removed after both processes stop.
    _scratch: Scratch,
}

impl Running {
    async fn start(mode: Mode) -> Running {
        let scratch = Scratch::new("modes");
        let tls_dir = scratch.join("tls");
        let options = SimOptions {
            tls_out: Some(tls_dir.clone()),
            ..SimOptions::default()
        };
        let sim = Sim::start(tenant(), options).await.expect("sim");
        let smtp = Smtp::start(&tls_dir).await;
        let teams = Sink::start().await;
        let policy = scratch.write("policy.toml", POLICY).display().to_string();
        let teams_url = teams.url("teams");
        let smtp_url = smtp.url();
        let handler = Handler::launch(
            sim,
            &[
                ("CMKGUARD_MODE", mode.as_str()),
                ("CMKGUARD_POLICY_FILE", &policy),
                ("CMKGUARD_TEAMS_WEBHOOK_URL", &teams_url),
                ("CMKGUARD_SMTP_URL", &smtp_url),
                ("CMKGUARD_EMAIL_FROM", "cmk-guard@contoso.example"),
                ("CMKGUARD_EMAIL_TO", "ml-platform@contoso.example"),
            ],
        )
        .await;
        Running {
            handler,
            teams,
            smtp,
            mode,
            _scratch: scratch,
        }
    }

    /// Invokes `function` as the host does; answers the Outcome.
    async fn invoke(&self, function: Function) -> Value {
        let reply = match function {
            Function::OnSubscriptionEvent => {
                self.deliver("OnSubscriptionEvent", workspace_write()).await
            }
            Function::OnKeyVaultEvent => self.deliver("OnKeyVaultEvent", key_near_expiry()).await,
            Function::Sweep => self.handler.invoke("Sweep", timer_envelope("timer")).await,
            Function::Evaluate => return self.evaluate().await,
        };
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        reply.outcome().clone()
    }

    async fn deliver(&self, function: &str, event: Value) -> Reply {
        self.handler
            .deliver(function, "event", &[event])
            .await
            .remove(0)
    }

    /// `POST /api/evaluate`: with `apply` in `remediate` mode; elsewhere `apply` is refused
    /// first, and the read-only check is the Outcome.
    async fn evaluate(&self) -> Value {
        let body = |apply: bool| {
            json!({"resource": workspace_id(), "apply": apply})
                .to_string()
                .into_bytes()
        };
        if self.mode != Mode::Remediate {
            let refused = self.handler.post_chunked("/api/evaluate", body(true)).await;
            assert_eq!(refused.status, 400, "{:?}", refused.body);
            assert!(
                refused.body["error"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("CMKGUARD_MODE=remediate"),
                "{:?}",
                refused.body
            );
        }
        let reply = self
            .handler
            .post_chunked("/api/evaluate", body(self.mode == Mode::Remediate))
            .await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        reply.body
    }

    /// Writes (anything but reads, Resource Graph queries and tokens) sent to Azure.
    fn writes(&self) -> Vec<String> {
        story::writes(&self.handler.sim)
    }
}

fn actions(outcome: &Value, kind: &str) -> Vec<Value> {
    outcome["actions"]
        .as_array()
        .map(|a| a.iter().filter(|a| a["kind"] == kind).cloned().collect())
        .unwrap_or_default()
}

fn reports_the_finding(outcome: &Value) -> bool {
    outcome["findings"]
        .as_array()
        .is_some_and(|f| f.iter().any(|f| f["rule"] == FINDING))
}

/// `observe`: the finding is reported, and nothing leaves: no card, no email, no write, no
/// action of any kind.
async fn observe(function: Function) {
    let running = Running::start(Mode::Observe).await;
    let outcome = running.invoke(function).await;
    assert!(reports_the_finding(&outcome), "{outcome}");
    assert_eq!(outcome["actions"], json!([]), "{function:?}: {outcome}");
    // Invoked again: still nothing (no reminder, no retry).
    let again = running.invoke(function).await;
    assert_eq!(again["actions"], json!([]), "{function:?}: {again}");
    assert_eq!(running.teams.received("teams").len(), 0, "{function:?}");
    assert_eq!(running.smtp.received().len(), 0, "{function:?}");
    assert_eq!(running.writes(), Vec::<String>::new(), "{function:?}");
}

/// `alert`: a card and an email (the sweep's too: no digest repeats what it just told), the
/// remediation described but not applied, nothing written. `Evaluate` cannot apply here, so it only reads.
async fn alert(function: Function) {
    let running = Running::start(Mode::Alert).await;
    let outcome = running.invoke(function).await;
    assert!(reports_the_finding(&outcome), "{outcome}");
    let cards = running.teams.received("teams");
    let mails = running.smtp.received();
    if function == Function::Evaluate {
        assert_eq!(outcome["actions"], json!([]), "read-only: {outcome}");
        assert_eq!((cards.len(), mails.len()), (0, 0));
    } else {
        assert!(
            actions(&outcome, "remediate")
                .iter()
                .any(|a| a["rule"] == FINDING && a["result"] == "planned"),
            "{outcome}"
        );
        let sent = |target: &str| {
            actions(&outcome, "notify")
                .iter()
                .filter(|a| a["target"] == target && a["result"] == "sent")
                .count()
        };
        assert_eq!((sent("teams"), sent("email")), (1, 1), "{outcome}");
        assert_eq!((cards.len(), mails.len()), (1, 1));
        assert!(cards[0].body.to_string().contains(FINDING));
    }
    assert_eq!(running.writes(), Vec::<String>::new(), "{function:?}");
}

/// `remediate`: the remediation applied (one vault PATCH) and told on Teams and by email.
async fn remediate(function: Function) {
    let running = Running::start(Mode::Remediate).await;
    let outcome = running.invoke(function).await;
    assert!(
        actions(&outcome, "remediate")
            .iter()
            .any(|a| a["rule"] == FINDING && a["result"] == "applied"),
        "{outcome}"
    );
    let writes = running.writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert!(writes[0].contains("PATCH"), "{writes:?}");
    let cards = running.teams.received("teams");
    let mails = running.smtp.received();
    assert_eq!((cards.len(), mails.len()), (1, 1), "{outcome}");
    assert!(cards[0].body.to_string().contains(FINDING));
    assert!(mails[0].to_string().contains(FINDING));
}

#[tokio::test]
async fn observe_on_subscription_event_sends_nothing() {
    observe(Function::OnSubscriptionEvent).await;
}

#[tokio::test]
async fn observe_on_key_vault_event_sends_nothing() {
    observe(Function::OnKeyVaultEvent).await;
}

#[tokio::test]
async fn observe_sweep_sends_no_alert_and_no_digest() {
    observe(Function::Sweep).await;
}

#[tokio::test]
async fn observe_evaluate_refuses_apply_and_sends_nothing() {
    observe(Function::Evaluate).await;
}

#[tokio::test]
async fn alert_on_subscription_event_sends_and_writes_nothing() {
    alert(Function::OnSubscriptionEvent).await;
}

#[tokio::test]
async fn alert_on_key_vault_event_sends_and_writes_nothing() {
    alert(Function::OnKeyVaultEvent).await;
}

#[tokio::test]
async fn alert_sweep_sends_the_alert_once_and_writes_nothing() {
    alert(Function::Sweep).await;
}

#[tokio::test]
async fn alert_evaluate_refuses_apply_and_only_reads() {
    alert(Function::Evaluate).await;
}

#[tokio::test]
async fn remediate_on_subscription_event_applies_and_sends() {
    remediate(Function::OnSubscriptionEvent).await;
}

#[tokio::test]
async fn remediate_on_key_vault_event_applies_and_sends() {
    remediate(Function::OnKeyVaultEvent).await;
}

#[tokio::test]
async fn remediate_sweep_applies_and_sends_the_alert_once() {
    remediate(Function::Sweep).await;
}

#[tokio::test]
async fn remediate_evaluate_with_apply_applies_and_sends() {
    remediate(Function::Evaluate).await;
}
