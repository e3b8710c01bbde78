//! The App Service / Functions managed-identity endpoint (`IDENTITY_ENDPOINT`,
//! api-version 2019-08-01): `GET /msi/token?resource=…&api-version=2019-08-01` with the
//! `X-IDENTITY-HEADER` secret, optionally selecting a user-assigned identity with one of
//! `client_id`, `principal_id`/`object_id` or `mi_res_id`/`msi_res_id` (azure-notes Trap T18).

use crate::http::{Ctx, Reply, Route};
use crate::ids::eq_ci;
use crate::token::Subject;
use serde_json::json;

fn identity_error(status: u16, message: &str) -> Reply {
    Reply::json(
        status,
        json!({"statusCode": status, "message": message, "correlationId": crate::ids::random_uuid()}),
    )
}

/// Maps a request to the token operation.
pub fn route(ctx: &Ctx) -> Result<Route, Reply> {
    let is_token = ctx.method == "GET"
        && ctx.segs.len() == 2
        && ctx.seg_is(0, "msi")
        && ctx.seg_is(1, "token");
    if !is_token {
        return Err(identity_error(
            404,
            "Not found. The token endpoint is GET /msi/token.",
        ));
    }
    Ok(Route {
        operation: "Identity_GetToken",
        resource: Some(format!("msi:{}", ctx.q("resource").unwrap_or_default())),
        handler: token,
        action: None,
    })
}

/// Checks the `X-IDENTITY-HEADER` secret (the SSRF guard).
pub fn authenticate(ctx: &mut Ctx) -> Result<(), Reply> {
    match ctx.header("x-identity-header") {
        Some(v) if v == ctx.shared.identity_header => Ok(()),
        Some(_) => Err(identity_error(
            401,
            "Unauthorized: the X-IDENTITY-HEADER value is not valid.",
        )),
        None => Err(identity_error(
            400,
            "Bad request: the X-IDENTITY-HEADER header is required.",
        )),
    }
}

fn token(ctx: &mut Ctx) -> Reply {
    match ctx.q("api-version") {
        Some("2019-08-01") => {}
        Some(other) => {
            return identity_error(
                400,
                &format!("Unsupported api-version '{other}'. Use 2019-08-01."),
            );
        }
        None => return identity_error(400, "The api-version query parameter is required."),
    }
    // The cloud's audience (`https://management.chinacloudapi.cn`) as the public one the
    // simulator checks inside.
    let Some(resource) = ctx
        .q("resource")
        .filter(|r| !r.is_empty())
        .map(|r| ctx.shared.cloud.inbound(r))
    else {
        return identity_error(400, "The resource query parameter is required.");
    };
    let selectors: Vec<(&str, String)> = [
        ("client_id", "client_id"),
        ("principal_id", "principal_id"),
        ("object_id", "principal_id"),
        ("mi_res_id", "mi_res_id"),
        ("msi_res_id", "mi_res_id"),
    ]
    .iter()
    .filter_map(|(param, kind)| ctx.q(param).map(|v| (*kind, v.to_owned())))
    .collect();
    if selectors.len() > 1 {
        return identity_error(
            400,
            "Only one of client_id, principal_id or mi_res_id may be given.",
        );
    }
    let tenant = ctx.tenant();
    let subject = match selectors.first() {
        None => match &tenant.app.principal_id {
            Some(p) => Subject {
                object_id: p.clone(),
                client_id: tenant.app.client_id.clone(),
                mi_resource_id: Some(tenant.app.resource_id.clone()),
            },
            None => {
                return identity_error(
                    400,
                    "Unable to load the proper Managed Identity: no system-assigned identity is enabled.",
                );
            }
        },
        Some((kind, value)) => {
            let found = tenant.app.user_assigned.iter().find(|u| match *kind {
                "client_id" => eq_ci(&u.client_id, value),
                "principal_id" => eq_ci(&u.principal_id, value),
                _ => eq_ci(&u.resource_id, value),
            });
            match found {
                Some(u) => Subject {
                    object_id: u.principal_id.clone(),
                    client_id: u.client_id.clone(),
                    mi_resource_id: Some(u.resource_id.clone()),
                },
                None => return identity_error(400, "Unable to load the proper Managed Identity."),
            }
        }
    };
    drop(tenant);
    let (access_token, expires_on) = ctx.shared.issuer.issue(&subject, &resource, ctx.now);
    Reply::ok(json!({
        "access_token": access_token,
        "expires_on": expires_on.to_string(),
        "resource": resource,
        "token_type": "Bearer",
        "client_id": subject.client_id,
    }))
}
