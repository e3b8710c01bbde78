//! Corporate networks: `cmk-guard scan` behind a CONNECT proxy (`HTTPS_PROXY`), hosts that
//! `NO_PROXY` sends around it, and a corporate CA trusted through the system certificate store
//! (`SSL_CERT_FILE`) rather than `CMKGUARD_CA_BUNDLE`.

use std::net::SocketAddr;

use azure_sim::{Sim, SimOptions};
use cmk_guard_blackbox::proxy::Proxy;
use cmk_guard_blackbox::scratch::Scratch;
use cmk_guard_blackbox::smtp::Smtp;
use cmk_guard_blackbox::{Handler, timer_envelope};

/// The subscription of the scan tests' tenant that has findings.
const SUB: &str = "3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34";

/// The simulator's environment without `drop`, with `add`.
fn environment(sim: &Sim, drop: &[&str], add: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = sim
        .handler_env()
        .into_iter()
        .filter(|(name, _)| !drop.contains(&name.as_str()))
        .collect();
    env.extend(add.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    env
}

async fn scan(env: &[(String, String)]) -> (Option<i32>, String, String) {
    cmk_guard_blackbox::run_cli_with(&["scan", "--subscription", SUB], env.iter().cloned()).await
}

async fn sim() -> (Sim, SocketAddr) {
    let sim = Sim::start(super::scan::tenant(), SimOptions::default())
        .await
        .expect("sim");
    let address = SocketAddr::from(([127, 0, 0, 1], sim.https_port()));
    (sim, address)
}

/// Without `CMKGUARD_CONNECT_TO`, the handler cannot reach the simulator's host names itself:
/// every Azure request goes through the proxy, which alone knows where they are. The scan
/// finds what a direct scan finds. The managed-identity endpoint (loopback) stays direct even
/// with `HTTP_PROXY` set, which the proxy would refuse.
#[tokio::test]
async fn a_scan_reaches_azure_only_through_the_proxy() {
    let (sim, address) = sim().await;
    let (direct_code, direct, err) = scan(&environment(&sim, &[], &[])).await;
    assert!(direct.contains("ws-purge"), "{direct}\n{err}");

    let proxy = Proxy::start(&["management.azure.com", "vault.azure.net"], address).await;
    let env = environment(
        &sim,
        &["CMKGUARD_CONNECT_TO"],
        &[
            ("HTTPS_PROXY", proxy.url().as_str()),
            ("http_proxy", proxy.url().as_str()),
        ],
    );
    let (code, proxied, err) = scan(&env).await;
    assert_eq!(code, direct_code, "{err}");
    assert_eq!(proxied, direct, "{err}");
    let hosts = proxy.tunnelled_hosts();
    assert!(
        hosts.contains(&"management.azure.com".to_owned()),
        "{hosts:?}"
    );
    assert!(
        hosts
            .iter()
            .all(|h| h == "management.azure.com" || h.ends_with(".vault.azure.net")),
        "{hosts:?}"
    );
    assert!(
        proxy.requests().iter().all(|r| r.starts_with("CONNECT ")),
        "nothing but tunnels: {:?}",
        proxy.requests()
    );
    sim.stop().await;
}

/// `NO_PROXY` names the Azure hosts: the scan goes around the proxy (straight to the simulator
/// through `CMKGUARD_CONNECT_TO`), and the proxy sees nothing. The same scan with the proxy
/// and without `NO_PROXY` goes through it: the proxy is in force, not ignored.
#[tokio::test]
async fn no_proxy_sends_the_named_hosts_around_the_proxy() {
    let (sim, address) = sim().await;
    let proxy = Proxy::start(&["management.azure.com", "vault.azure.net"], address).await;
    let bypassed = environment(
        &sim,
        &[],
        &[
            ("HTTPS_PROXY", proxy.url().as_str()),
            ("NO_PROXY", "management.azure.com,.vault.azure.net"),
        ],
    );
    let (code, out, err) = scan(&bypassed).await;
    assert!(out.contains("ws-purge"), "{code:?}\n{out}\n{err}");
    assert_eq!(proxy.requests(), Vec::<String>::new());

    let proxied = environment(&sim, &[], &[("https_proxy", proxy.url().as_str())]);
    let (_, out, err) = scan(&proxied).await;
    assert!(out.contains("ws-purge"), "{out}\n{err}");
    assert!(!proxy.requests().is_empty());
    sim.stop().await;
}

/// The simulator's CA given only as the system store (`SSL_CERT_FILE`), as a corporate CA
/// installed on the machine would be, is trusted; with neither it nor `CMKGUARD_CA_BUNDLE`,
/// the same scan cannot verify the simulator.
#[tokio::test]
async fn the_system_certificate_store_is_trusted() {
    let (sim, _) = sim().await;
    let ca = sim.info().ca_path.clone();
    let system = environment(
        &sim,
        &["CMKGUARD_CA_BUNDLE"],
        &[("SSL_CERT_FILE", ca.as_str())],
    );
    let (_, out, err) = scan(&system).await;
    assert!(out.contains("ws-purge"), "{out}\n{err}");

    let untrusted = environment(&sim, &["CMKGUARD_CA_BUNDLE"], &[]);
    let (_, out, err) = scan(&untrusted).await;
    assert!(!out.contains("ws-purge"), "{out}\n{err}");
    sim.stop().await;
}

/// Email over SMTP (STARTTLS) trusts the system store too: with the simulator's CA (which also
/// signs the SMTP server's certificate) only in `SSL_CERT_FILE`, a sweep's alerts are mailed.
#[tokio::test]
async fn email_trusts_the_system_certificate_store() {
    let scratch = Scratch::new("proxy-smtp");
    let tls_dir = scratch.join("tls");
    let options = SimOptions {
        tls_out: Some(tls_dir.clone()),
        ..SimOptions::default()
    };
    let sim = Sim::start(super::scan::tenant(), options)
        .await
        .expect("sim");
    let smtp = Smtp::start(&tls_dir).await;
    let policy = scratch
        .write(
            "policy.toml",
            "[notify]\nteams = []\nwebhook = []\nemail = [\"critical\", \"high\", \"medium\", \"low\"]\n",
        )
        .display()
        .to_string();
    let ca = sim.info().ca_path.clone();
    let smtp_url = smtp.url();
    let handler = Handler::launch(
        sim,
        &[
            // Empty is unset: the CA reaches cmk-guard only as the system store.
            ("CMKGUARD_CA_BUNDLE", ""),
            ("SSL_CERT_FILE", &ca),
            ("CMKGUARD_MODE", "alert"),
            ("CMKGUARD_POLICY_FILE", &policy),
            ("CMKGUARD_SMTP_URL", &smtp_url),
            ("CMKGUARD_EMAIL_FROM", "cmk-guard@contoso.example"),
            ("CMKGUARD_EMAIL_TO", "ml-platform@contoso.example"),
        ],
    )
    .await;
    let reply = handler.invoke("Sweep", timer_envelope("timer")).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert!(!smtp.received().is_empty(), "{}", reply.outcome());
}
