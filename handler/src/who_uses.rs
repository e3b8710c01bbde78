//! A key's blast radius: every CMK workspace and every other resource in scope encrypted with a
//! key or with a key of a vault, with the key version each one uses (`cmk-guard who-uses`,
//! `POST /api/who-uses`, the dependency counts of alerts on keys and vaults).

#![allow(dead_code)] // TEMPORARY: removed once wired (issue 20 work in progress)

use actix_web::http::StatusCode;
use serde_json::{Value, json};

use crate::engine::Engine;

/// `POST /api/who-uses`: the status and JSON body for a request `{"target": "<key URL | vault id>"}`.
pub async fn http(engine: &Engine, body: &[u8]) -> (StatusCode, Value) {
    let _ = (engine, body);
    (
        StatusCode::NOT_IMPLEMENTED,
        json!({ "error": "who-uses is not built yet" }),
    )
}
