//! Black-box tests of the real `cmk-guard` binary, driven like the Azure Functions host drives it.

mod actions;
mod alert_content;
mod architecture;
mod azure_reads;
mod bad_input;
mod card_rendering;
mod cli;
mod docs;
mod fixtures;
mod function_definitions;
mod host_protocol;
mod loop_guard;
mod modes;
mod packaging;
mod reliability;
mod said_once;
mod scan;
mod scenarios;
mod security_input;
mod security_key_host;
mod security_scope;
mod settings;
mod sweep;
mod telemetry;
mod webhook;
mod workspace_deleted;
