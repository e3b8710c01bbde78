//! azure-sim: a stand-in for the Azure APIs cmk-guard calls — Azure Resource Manager, the Key
//! Vault data plane, Resource Graph and the App Service managed-identity endpoint — so tests,
//! benchmarks and the demo run the real handler binary without Azure. Responses follow the
//! official examples in `tests/fixtures`; the traps in `docs/azure-notes.md` §8
//! are reproduced on purpose (case-insensitive ids, absent-vs-false flags, unix-seconds key
//! times, string `expires_on`, string `resultTruncated`, 401 challenge then 403).
//!
//! # Layout
//! - [`server`]: [`Sim`] — start/stop, ports, CA, and the Rust API tests use (counters, faults,
//!   events, tokens, state access). `main.rs` only parses the CLI and calls it.
//! - [`scenario`]: the tenant description — JSON scenario files and the Rust builder are the same
//!   types ([`Scenario`], [`VaultSpec`], [`KeySpec`], [`WorkspaceSpec`], …).
//! - [`model`]: the live tenant state every surface reads and writes ([`Tenant`]).
//! - `http`: one actix handler; routing by listener and `Host`, auth per surface, faults,
//!   request recording, service headers.
//! - `arm`: Resource Manager operations (vaults, keys, workspaces, endpoints, role assignments
//!   and definitions, providers, verbatim resources).
//! - `keyvault`: Key Vault data plane (keys, rotation, rotation policy; challenge, 403).
//! - `graph`: Resource Graph with a documented KQL subset.
//! - `identity`: the managed-identity token endpoint.
//! - [`admin`]: the `/_sim` admin API and its Rust twin [`admin::Admin`].
//! - [`audit`]: Key Vault `AuditEvent` records of data-plane calls, vault writes, the operator's
//!   changes and services' key uses, read as Event Hub messages (`Sim::audit_messages`).
//! - [`faults`], [`telemetry`], [`events`]: fault rules, counters and request log, Event Grid
//!   events for writes.
//! - [`throttle`]: ARM's token buckets (per subscription, principal and operation type, and
//!   global) and Resource Graph's per-user quota, with the headers that report them.
//! - [`encrypted`]: storage, Cosmos DB, disk encryption sets, SQL servers and Search with a
//!   customer-managed key, and a CMK workspace's managed resources (`Admin::put_resource`).
//! - [`roles`]: built-in role definitions and wildcard action matching.
//! - [`token`], [`tls`], [`material`]: JWT-shaped tokens, the generated PKI, RSA/EC public key
//!   material.
//! - [`ids`], [`clock`]: case-insensitive ids, deterministic ids, time formats.

pub mod admin;
mod arm;
mod entra;
pub mod audit;
pub mod clock;
pub mod cloud;
pub mod encrypted;
pub mod events;
pub mod faults;
mod graph;
mod http;
mod identity;
pub mod ids;
mod keyvault;
pub mod material;
pub mod model;
pub mod roles;
pub mod scenario;
pub mod server;
pub mod telemetry;
pub mod throttle;
pub mod tls;
pub mod token;

pub use faults::Fault;
pub use model::{ManagementGroup, Tenant};
pub use scenario::{
    CmkSpec, Grant, KeySpec, KeyVersionSpec, RoleAssignmentSpec, RotationPolicySpec, Scenario,
    ScenarioError, TenantBuilder, UserAssignedSpec, VaultSpec, VersionPin, WiringSpec,
    WorkspaceSpec,
};
pub use server::{Sim, SimError, SimInfo, SimOptions};
pub use telemetry::{Counters, PeakRate, RecordFilter, RequestRecord};
