//! Every Azure cloud: with only `CMKGUARD_CLOUD` set (and the test's name resolution and trust:
//! `CMKGUARD_CONNECT_TO` maps that cloud's host names to the simulator, `CMKGUARD_CA_BUNDLE`
//! trusts its CA), a sweep reads Resource Manager and Key Vault on that cloud's hosts only,
//! asks the managed identity for that cloud's audiences only, and its alerts link to that
//! cloud's portal. The simulator stands in for the cloud: it serves its names, answers with
//! them (vault URIs, key ids, Key Vault's challenge) and refuses the public cloud's.

use azure_sim::cloud::SimCloud;
use azure_sim::{RecordFilter, Sim, SimOptions};
use cmk_guard_blackbox::scratch::Scratch;
use cmk_guard_blackbox::sink::Sink;
use cmk_guard_blackbox::{Handler, timer_envelope};
use serde_json::Value;

const POLICY: &str = r#"
[notify]
teams = ["critical", "high", "medium", "low"]
email = []
webhook = ["critical", "high", "medium", "low"]
"#;

/// What one cloud must look like from the outside.
struct Expected {
    setting: &'static str,
    sim: SimCloud,
    arm: &'static str,
    vault_suffix: &'static str,
    portal: &'static str,
}

/// Sweeps the scan tests' tenant in `cloud` and checks every host the handler used.
async fn sweep_in(cloud: Expected) {
    let scratch = Scratch::new("clouds");
    let policy = scratch.write("policy.toml", POLICY).display().to_string();
    let sink = Sink::start().await;
    let (teams, webhook) = (sink.url("teams"), sink.url("hook"));
    let options = SimOptions {
        cloud: cloud.sim,
        ..SimOptions::default()
    };
    let sim = Sim::start(super::scan::tenant(), options)
        .await
        .expect("sim");
    let handler = Handler::launch(
        sim,
        &[
            ("CMKGUARD_CLOUD", cloud.setting),
            ("CMKGUARD_MODE", "alert"),
            ("CMKGUARD_POLICY_FILE", &policy),
            ("CMKGUARD_TEAMS_WEBHOOK_URL", &teams),
            ("CMKGUARD_WEBHOOK_URL", &webhook),
        ],
    )
    .await;
    let reply = handler.invoke("Sweep", timer_envelope("timer")).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);

    let requests = handler.sim.requests(&RecordFilter::default());
    let arm_host = cloud.arm.trim_start_matches("https://");
    assert!(
        requests
            .iter()
            .any(|r| r.host == arm_host && r.status == 200),
        "no ARM read on {arm_host}: {:?}",
        requests.iter().map(|r| &r.host).collect::<Vec<_>>()
    );
    let vault_tail = format!(".{}", cloud.vault_suffix);
    for request in &requests {
        let host = request.host.as_str();
        match host {
            "127.0.0.1" => {
                let audience = request
                    .resource
                    .as_deref()
                    .and_then(|r| r.strip_prefix("msi:"))
                    .unwrap_or_default()
                    .trim_end_matches('/');
                assert!(
                    audience == cloud.arm || audience == format!("https://{}", cloud.vault_suffix),
                    "token for {audience} in {}",
                    cloud.setting
                );
            }
            _ => assert!(
                host == arm_host || host.ends_with(&vault_tail),
                "{} {host}{} in {}",
                request.method,
                request.path,
                cloud.setting
            ),
        }
    }

    let cards = sink.received("teams");
    let events = sink.received("hook");
    assert!(
        !cards.is_empty() && !events.is_empty(),
        "{cards:?} {events:?}"
    );
    let links: Vec<String> = cards
        .iter()
        .chain(&events)
        .flat_map(|r| urls(&r.body))
        .filter(|url| url.contains("portal"))
        .collect();
    assert!(!links.is_empty(), "no portal link in {cards:?}");
    for link in &links {
        assert!(
            link.starts_with(&format!("{}/#", cloud.portal)),
            "{link} in {}",
            cloud.setting
        );
    }
    for received in cards.iter().chain(&events) {
        let body = received.body.to_string();
        for public in [
            "portal.azure.com",
            "management.azure.com",
            "vault.azure.net",
        ] {
            assert!(!body.contains(public), "{public} in {body}");
        }
    }
}

/// Every string in `value` that is a URL.
fn urls(value: &Value) -> Vec<String> {
    match value {
        Value::String(text) if text.starts_with("https://") => vec![text.clone()],
        Value::Array(items) => items.iter().flat_map(urls).collect(),
        Value::Object(map) => map.values().flat_map(urls).collect(),
        _ => Vec::new(),
    }
}

#[tokio::test]
async fn a_us_government_sweep_uses_only_us_government_hosts() {
    sweep_in(Expected {
        setting: "usgovernment",
        sim: SimCloud::UsGovernment,
        arm: "https://management.usgovcloudapi.net",
        vault_suffix: "vault.usgovcloudapi.net",
        portal: "https://portal.azure.us",
    })
    .await;
}

#[tokio::test]
async fn a_china_sweep_uses_only_china_hosts() {
    sweep_in(Expected {
        setting: "AzureChinaCloud",
        sim: SimCloud::China,
        arm: "https://management.chinacloudapi.cn",
        vault_suffix: "vault.azure.cn",
        portal: "https://portal.azure.cn",
    })
    .await;
}

/// An unknown cloud stops the handler with a message that lists the valid names.
#[test]
fn an_unknown_cloud_is_a_configuration_error() {
    let output = std::process::Command::new(cmk_guard_blackbox::binary())
        .args(["scan"])
        .env_clear()
        .env("CMKGUARD_CLOUD", "AzureGermanCloud")
        .output()
        .expect("run cmk-guard");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    for name in ["CMKGUARD_CLOUD", "public", "usgovernment", "china"] {
        assert!(stderr.contains(name), "{stderr}");
    }
}
