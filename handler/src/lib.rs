//! cmk-guard keeps Azure Machine Learning workspaces that use customer-managed keys (CMK)
//! compliant. It runs as an Azure Functions custom handler: the Functions host turns Event Grid
//! deliveries and timer ticks into HTTP invocations, and cmk-guard answers each with an
//! [`outcome::Outcome`].
//!
//! # Layout
//!
//! Modules are declared bottom-up, in layers: each depends only on modules declared above it,
//! never on one below or beside it in a cycle (the black-box test `architecture` checks this,
//! and that no source file outgrows 700 lines). Data flows one way through the middle:
//! intake → resolve → observe → evaluate (rules) → plan → act → Outcome (docs/architecture.md).
//!
//! 1. **Foundations**, depending on nothing in the crate: `text` (outside text made safe to
//!    show), `telemetry` (logs, traces, metrics), [`catalogue`] (every rule id and what its
//!    remediation may do), `config` (the error of a configuration value).
//! 2. **Vocabulary**: [`ids`] (ARM ids, key URLs, subscriptions, parsed once at the edge),
//!    [`outcome`] (the Outcome contract), [`snapshot`] (what was read of one workspace's CMK
//!    chain), [`policy`] (the policy file), [`intake`] (host envelope, Event Grid and
//!    CloudEvents, on-demand check requests → a `Trigger`, without I/O).
//! 3. **Rules**: [`rules`], pure checks of a snapshot, one file per rule.
//! 4. **Edges** to the outside world: [`azure`] (ARM and Key Vault clients, the request
//!    pipeline and its guards), [`state`] (what all instances share: one contract, SQLite and
//!    Blob backends), [`queue`] (the sweep fan-out's Storage queue), [`notify`] (Teams, email,
//!    webhook), [`monitor`] (finding changes to Azure Monitor's Logs Ingestion API),
//!    [`settings`] (every variable, parsed once at start).
//! 5. **Pipeline**: [`observe`] (reads a workspace's chain: single-flight, cached), `resolve`
//!    (which workspaces a trigger affects), `plan` (pure: findings + policy + mode + stored
//!    state → steps), [`remediate`] (one file per remediation: re-read, narrowest write,
//!    verify), `history` (the audit trail replayed per finding), `who_uses` (a key's or
//!    vault's dependents, from Resource Graph), `act` (carries the steps out: remediation,
//!    state by compare-and-set, alerts through the outbox, audit).
//! 6. **Orchestration**: `engine`, one entry point per kind of work (event, check, sweep,
//!    scan) and the one error policy (`engine::error`): every failure is classified there,
//!    as redeliver (503) or acknowledge with a `guard.visibility` finding.
//! 7. **Surfaces**: `report` (table, JSON, SARIF, CSV and HTML for the command line),
//!    [`functions`] (the function definitions and their replies), `server` (the actix-web
//!    server the host talks to), [`cli`] (the command line; `main.rs` only calls it).
//!
//! Modules without a link are private: only what other crates (tests, fuzz targets, the
//! benchmark) use is public, so that unused code is reported.

// 1. Foundations
mod text;
mod telemetry;
pub mod catalogue;
mod config;
pub mod cloud;
// 2. Vocabulary
pub mod ids;
pub mod outcome;
pub mod snapshot;
pub mod policy;
pub mod intake;
// 3. Rules
pub mod rules;
// 4. Edges
pub mod azure;
pub mod state;
pub mod queue;
pub mod notify;
pub mod monitor;
pub mod settings;
// 5. Pipeline
pub mod observe;
mod resolve;
mod plan;
pub mod remediate;
mod history;
mod who_uses;
mod act;
// 6. Orchestration
mod engine;
// 7. Surfaces
mod report;
pub mod functions;
mod server;
pub mod cli;
