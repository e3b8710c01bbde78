//! The sweep under ARM's throttling: `cmk-guard scan` of 5,000 workspaces over 500 vaults in
//! one subscription, against a simulator that enforces ARM's token buckets (reads 250 refilled
//! at 25/s per principal and subscription) and Resource Graph's per-user quota. The bar is
//! under 60 s; the figures beside it are the 429s ARM answered and the most ARM reads in any
//! one second, which pacing from the remaining counts keeps near the refill rate once the
//! bucket's first 200 are spent.

use std::time::Duration;

use azure_sim::{RecordFilter, Sim, SimOptions};

use crate::phases::Setup;
use crate::report::{Section, fixed};
use crate::scenario;

const TITLE: &str = "Sweep under ARM throttling";
/// The bar, in seconds.
const BAR_SECONDS: f64 = 60.0;

/// Scans `workspaces` workspaces, ten to a vault, in one subscription under the ARM model.
pub async fn throttled(setup: &Setup, workspaces: usize) -> Section {
    let mut section = Section::new(TITLE);
    match scan(setup, workspaces).await {
        Ok(run) => run.report(&mut section, workspaces),
        Err(error) => section.verdict(
            &format!("{workspaces} workspaces in one subscription: under {BAR_SECONDS} s"),
            false,
            error,
        ),
    }
    section.note("ARM as azure-sim models it (`SimOptions::arm_throttling`): token buckets per subscription, principal and operation type, a global bucket at 15×, 429 with `Retry-After`; cmk-guard paces each bucket from `x-ms-ratelimit-remaining-*` (full speed above a 20% reserve, the refill rate below it), with no `CMKGUARD_READ_RATE`.");
    section
}

struct Run {
    seconds: f64,
    code: Option<i32>,
    scanned: usize,
    findings: usize,
    arm_requests: usize,
    throttled: usize,
    peak_reads: usize,
}

impl Run {
    fn report(&self, section: &mut Section, workspaces: usize) {
        section.row("duration (s)", fixed(self.seconds, 1));
        section.row("ARM and Resource Graph requests", self.arm_requests);
        section.row("answered 429", self.throttled);
        section.row("most ARM reads in one second", self.peak_reads);
        section.row(
            "scanned / findings / exit code",
            format!("{} / {} / {:?}", self.scanned, self.findings, self.code),
        );
        section.verdict(
            &format!(
                "{workspaces} workspaces in one subscription: under {BAR_SECONDS} s, complete"
            ),
            self.seconds < BAR_SECONDS && self.scanned == workspaces && self.code == Some(0),
            format!(
                "{} s, {} of {workspaces} scanned, {} answered 429",
                fixed(self.seconds, 1),
                self.scanned,
                self.throttled
            ),
        );
    }
}

async fn scan(setup: &Setup, workspaces: usize) -> Result<Run, String> {
    let tenant = scenario::tenant_sharing(1, workspaces, 10)?;
    let options = SimOptions {
        arm_throttling: true,
        ..SimOptions::default()
    };
    let sim = Sim::start(tenant, options)
        .await
        .map_err(|e| format!("azure-sim: {e}"))?;
    let (outcome, seconds, code) = scenario::scan_json(&setup.handler, &sim).await?;
    let arm = RecordFilter {
        host: Some("management.azure.com".into()),
        ..RecordFilter::default()
    };
    let requests = sim.requests(&arm);
    let peak = sim.peak_rate(
        Duration::from_secs(1),
        &RecordFilter {
            reads_only: true,
            ..arm.clone()
        },
    );
    sim.stop().await;
    Ok(Run {
        seconds,
        code,
        scanned: outcome["workspaces"].as_array().map_or(0, Vec::len),
        findings: outcome["findings"].as_array().map_or(0, Vec::len),
        arm_requests: requests.len(),
        throttled: requests.iter().filter(|r| r.status == 429).count(),
        peak_reads: peak.peak,
    })
}
