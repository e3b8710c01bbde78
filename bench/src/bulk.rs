//! Bulk reads: the Azure requests `cmk-guard scan` (the sweep's read path) makes per
//! workspace, on a tenant whose workspaces share vaults ten to a vault and on one where each
//! has its own. A subscription's lists are read once per pass (`observe::bulk`), so the count
//! falls with sharing: the bars are 0.3 and 2.5 requests per workspace, where reading each
//! workspace on its own took 7.
//!
//! Requests are counted on the simulator: every ARM, Resource Graph and Key Vault request but
//! the token requests.

use std::collections::BTreeMap;

use azure_sim::{RecordFilter, Sim, SimOptions};

use crate::phases::Setup;
use crate::report::{Section, fixed};
use crate::scenario;

const TITLE: &str = "Bulk reads: Azure requests per workspace of a scan";
/// Requests per workspace allowed when ten workspaces share a vault.
const SHARED_BAR: f64 = 0.3;
/// Requests per workspace allowed when each workspace has its own vault.
const OWN_BAR: f64 = 2.5;

/// The figures of two scans: `shared` workspaces, ten per vault, and `own` workspaces, each
/// with its own vault.
pub async fn bulk(setup: &Setup, shared: usize, own: usize) -> Section {
    let mut section = Section::new(TITLE);
    for (workspaces, per_vault, bar) in [(shared, 10, SHARED_BAR), (own, 1, OWN_BAR)] {
        match scan(setup, workspaces, per_vault).await {
            Ok(run) => run.report(&mut section, workspaces, per_vault, bar),
            Err(error) => {
                section.verdict(
                    &format!(
                        "{workspaces} workspaces, {per_vault} per vault: ≤ {bar} requests each"
                    ),
                    false,
                    error,
                );
            }
        }
    }
    section.note("Each subscription's workspace, vault, role-assignment and provider lists are read once per pass, each vault's keys once, endpoints found with one Resource Graph query; a workspace whose bulk evaluation fails `workspace.key-access` is read again one by one (group grants are invisible in bulk).");
    section
}

/// One scan's counts.
struct ScanRun {
    seconds: f64,
    scanned: usize,
    findings: usize,
    requests: BTreeMap<String, usize>,
}

impl ScanRun {
    fn total(&self) -> usize {
        self.requests.values().sum()
    }

    fn report(&self, section: &mut Section, workspaces: usize, per_vault: usize, bar: f64) {
        let label = format!("{workspaces} workspaces, {per_vault} per vault");
        let per_workspace = self.total() as f64 / workspaces.max(1) as f64;
        section.row(&format!("{label}: duration (s)"), fixed(self.seconds, 1));
        section.row(&format!("{label}: requests"), self.total());
        section.row(
            &format!("{label}: requests per workspace"),
            fixed(per_workspace, 3),
        );
        let by_operation: Vec<String> = self
            .requests
            .iter()
            .map(|(operation, n)| format!("{operation} {n}"))
            .collect();
        section.row(&format!("{label}: by operation"), by_operation.join(", "));
        section.verdict(
            &format!("{label}: ≤ {bar} requests each, all compliant"),
            per_workspace <= bar && self.scanned == workspaces && self.findings == 0,
            format!(
                "{} requests per workspace, {} of {workspaces} scanned, {} findings",
                fixed(per_workspace, 3),
                self.scanned,
                self.findings
            ),
        );
    }
}

async fn scan(setup: &Setup, workspaces: usize, per_vault: usize) -> Result<ScanRun, String> {
    let tenant = scenario::tenant_sharing(1, workspaces, per_vault)?;
    let sim = Sim::start(tenant, SimOptions::default())
        .await
        .map_err(|e| format!("azure-sim: {e}"))?;
    let (outcome, seconds, _) = scenario::scan_json(&setup.handler, &sim).await?;
    let mut requests = BTreeMap::new();
    for request in sim.requests(&RecordFilter::default()) {
        if request.operation != "Identity_GetToken" {
            *requests.entry(request.operation).or_insert(0) += 1;
        }
    }
    sim.stop().await;
    Ok(ScanRun {
        seconds,
        scanned: outcome["workspaces"].as_array().map_or(0, Vec::len),
        findings: outcome["findings"].as_array().map_or(0, Vec::len),
        requests,
    })
}
