//! cmk-guard keeps Azure Machine Learning workspaces that use customer-managed keys (CMK)
//! compliant. It runs as an Azure Functions custom handler: the Functions host turns Event Grid
//! deliveries and timer ticks into HTTP invocations, and cmk-guard answers each with an
//! [`outcome::Outcome`].
//!
//! # Layout
//! - [`cli`]: the command line (`serve`, `evaluate`); `main.rs` only calls it.
//! - [`server`]: the actix-web server the host talks to: readiness, invocations, forwarded HTTP.
//! - [`functions`]: the function definitions and how each invocation becomes a reply.
//! - [`intake`]: host envelope, Event Grid and CloudEvents parsing and classification into a
//!   [`intake::Trigger`], without I/O.
//! - [`resolve`]: which workspaces a trigger affects (Resource Graph for vault, key and role events).
//! - [`observe`]: reads a workspace's CMK chain into a [`snapshot::Snapshot`] (single-flight, cached).
//! - [`engine`]: runs a trigger or an on-demand check through the pipeline to an Outcome.
//! - [`report`]: readable tables of outcomes for the command line.
//! - [`plan`]: findings + policy + mode + stored state → alerts and remediations to carry out (pure).
//! - [`remediate`]: the remediations, one file each: re-read, skip what complies, the narrowest
//!   write, verify; consent from the policy; dry-run descriptions for `alert` mode.
//! - [`outcome`]: the Outcome contract (findings, actions, dispositions).
//! - [`rules`]: the CMK rules, one file per rule: pure checks of a snapshot, and `evaluate`.
//! - [`policy`]: the TOML policy file: thresholds, severities, remediation consent, routing,
//!   exemptions and scope.
//! - [`act`]: carries a plan out: remediation, finding state (compare-and-set), alerts via the outbox, audit.
//! - [`azure`]: the Azure clients (ARM reads, Key Vault data plane), transport and credential.
//! - [`ids`]: ARM resource ids, key URLs and subscription ids, parsed once at the edge.
//! - [`notify`]: alerts: Teams cards, email (ACS or SMTP) and the webhook; rendering, routing
//!   by severity, delivery with retries, secrets redacted.
//! - [`text`]: text from outside made safe to show: controls escaped, length bounded (logs,
//!   reasons, cards, emails).
//! - [`telemetry`]: logging, and OpenTelemetry traces, metrics and logs over OTLP when configured.
//! - [`settings`]: configuration from environment variables.
//! - [`snapshot`]: what observe read about one workspace's CMK chain; the input of the rules.
//! - [`state`]: the state all instances share (event claims, finding state, remediation
//!   attempts, audit, outbox, sweep cursor): one trait, SQLite and Azure Blob backends.
//!
//! Data flows one way: intake → resolve → observe → evaluate → plan → act → Outcome
//! (docs/architecture.md). The stages after intake arrive with later versions.

pub mod act;
pub mod azure;
pub mod catalogue;
pub mod cli;
pub mod config;
pub mod engine;
pub mod functions;
pub mod ids;
pub mod intake;
pub mod notify;
pub mod observe;
pub mod outcome;
pub mod plan;
pub mod policy;
pub mod remediate;
pub mod report;
pub mod resolve;
pub mod rules;
pub mod server;
pub mod settings;
pub mod snapshot;
pub mod state;
pub mod telemetry;
pub mod text;
