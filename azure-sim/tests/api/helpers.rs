//! `spawn()` starts a simulator and returns a client that trusts only its CA and resolves the
//! Azure host names to it, like cmk-guard with `CMKGUARD_CA_BUNDLE` and `CMKGUARD_CONNECT_TO`.

use azure_sim::{Sim, SimOptions, Tenant};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::net::SocketAddr;

pub const ARM: &str = "https://management.azure.com";
pub const VAULT_AUDIENCE: &str = "https://vault.azure.net";

pub struct TestSim {
    pub sim: Sim,
    pub client: reqwest::Client,
    pub plain: reqwest::Client,
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

pub async fn spawn(tenant: Tenant) -> TestSim {
    spawn_with_hosts(tenant, &[]).await
}

pub async fn spawn_with_hosts(tenant: Tenant, extra_vaults: &[&str]) -> TestSim {
    let mut hosts: Vec<String> = tenant
        .vaults
        .iter()
        .map(|v| v.name.clone())
        .chain(tenant.deleted_vaults.iter().map(|d| d.vault.name.clone()))
        .chain(extra_vaults.iter().map(|s| (*s).to_owned()))
        .map(|v| format!("{}.vault.azure.net", v.to_ascii_lowercase()))
        .collect();
    hosts.push("management.azure.com".into());
    hosts.push("localhost".into());
    let sim = Sim::start(tenant, SimOptions::default())
        .await
        .expect("sim starts");
    let addr: SocketAddr = ([127, 0, 0, 1], sim.https_port()).into();
    let ca = reqwest::Certificate::from_pem(sim.ca_pem().as_bytes()).expect("CA parses");
    let mut builder = client_builder().tls_certs_only([ca]);
    for host in &hosts {
        builder = builder.resolve(host, addr);
    }
    TestSim {
        sim,
        client: builder.build().expect("client builds"),
        plain: client_builder().build().expect("client builds"),
    }
}

/// A client builder on rustls with ring: reqwest is built without a crypto provider of its own
/// (it would bring aws-lc), so the process default is set to ring first.
pub fn client_builder() -> reqwest::ClientBuilder {
    // Fails only when a provider is already installed, which is all this needs.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

impl TestSim {
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut req = self.client.request(method, url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request reaches the sim");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).expect("JSON body")
        };
        Resp {
            status,
            headers,
            body,
        }
    }

    /// ARM request as the app identity.
    pub async fn arm(&self, method: Method, path_and_query: &str, body: Option<Value>) -> Resp {
        let token = self.sim.app_token(ARM);
        self.send(method, &self.arm_url(path_and_query), Some(&token), body)
            .await
    }

    pub async fn arm_get(&self, path_and_query: &str) -> Resp {
        self.arm(Method::GET, path_and_query, None).await
    }

    /// Key Vault data-plane request as the app identity.
    pub async fn kv(
        &self,
        method: Method,
        vault: &str,
        path_and_query: &str,
        body: Option<Value>,
    ) -> Resp {
        let token = self.sim.app_token(VAULT_AUDIENCE);
        self.send(
            method,
            &self.kv_url(vault, path_and_query),
            Some(&token),
            body,
        )
        .await
    }

    /// Admin API over HTTPS on `localhost`.
    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        let url = format!("https://localhost:{}/_sim{path}", self.sim.https_port());
        self.send(method, &url, None, body).await
    }

    /// reqwest ignores the port of a `resolve` override, so URLs carry the simulator's port.
    pub fn arm_url(&self, path_and_query: &str) -> String {
        format!(
            "https://management.azure.com:{}{path_and_query}",
            self.sim.https_port()
        )
    }

    pub fn kv_url(&self, vault: &str, path_and_query: &str) -> String {
        format!(
            "https://{vault}.vault.azure.net:{}{path_and_query}",
            self.sim.https_port()
        )
    }

    pub async fn stop(self) {
        self.sim.stop().await;
    }
}
