//! The handler's parts against real counterparts, in process: the infra templates, the alert
//! channels, the remediations against azure-sim and the state store backends. One binary, so
//! the workspace links one integration-test executable for this crate.

mod infra;
mod notify;
mod remediate;
mod state;
