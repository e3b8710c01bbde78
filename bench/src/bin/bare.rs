//! The baselines of the irrelevant-event bar: a bare actix-web server with cmk-guard's routes
//! (`GET /`, `POST /{function}`) that reads the request body and answers with one fixed JSON
//! body, on the same runtime defaults as cmk-guard (one worker per core,
//! `127.0.0.1:$FUNCTIONS_CUSTOMHANDLER_PORT`). Everything cmk-guard spends beyond this is its own.
//!
//! Without arguments the body is about as large as cmk-guard's answer to an ignored event; with
//! `--minimal` it is the smallest reply the host accepts ([`MINIMAL_BODY`]), the baseline of
//! issue 18.

use actix_web::{App, HttpResponse, HttpServer, web};

/// About the size of cmk-guard's answer to an ignored event, so both send similar bytes.
const BODY: &str = r#"{"Outputs":{},"Logs":["ignored: operation Microsoft.Storage/storageAccounts/write cannot change a CMK chain"],"ReturnValue":{"event":{"id":"00000000-0000-0000-0000-000000000000","type":"Microsoft.Resources.ResourceWriteSuccess","subject":"/subscriptions/3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/st1"},"disposition":"ignored","reason":"operation Microsoft.Storage/storageAccounts/write cannot change a CMK chain","findings":[],"actions":[]}}"#;

/// The smallest reply the Functions host takes: no outputs, no logs, no return value.
const MINIMAL_BODY: &str = r#"{"Outputs":{},"Logs":[],"ReturnValue":null}"#;

async fn fixed(_body: web::Bytes) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json; charset=utf-8")
        .body(BODY)
}

async fn minimal(_body: web::Bytes) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json; charset=utf-8")
        .body(MINIMAL_BODY)
}

fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("FUNCTIONS_CUSTOMHANDLER_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| std::io::Error::other("FUNCTIONS_CUSTOMHANDLER_PORT is not a port"))?;
    let is_minimal = std::env::args().any(|arg| arg == "--minimal");
    actix_web::rt::System::new().block_on(
        HttpServer::new(move || {
            let app = App::new().app_data(web::PayloadConfig::new(2 * 1024 * 1024));
            if is_minimal {
                app.route("/", web::get().to(minimal))
                    .route("/{function}", web::post().to(minimal))
            } else {
                app.route("/", web::get().to(fixed))
                    .route("/{function}", web::post().to(fixed))
            }
        })
        .bind(("127.0.0.1", port))?
        .run(),
    )
}
