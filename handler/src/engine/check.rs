//! An on-demand check: `POST /api/evaluate` and `cmk-guard evaluate --resource`.

use tokio::time::Instant;

use super::{Engine, Look, Unfinished};
use crate::intake::{CheckRequest, EVALUATE_EVENT_TYPE, Rejection};
use crate::outcome::{EventRef, Outcome};
use crate::settings::Mode;

impl Engine {
    /// Handles an on-demand check. `Err(Rejection)` is a bad request: the caller gets the
    /// reason and a 400.
    pub async fn evaluate_request(
        &self,
        body: &[u8],
        request_id: &str,
        deadline: Instant,
    ) -> Result<Result<Outcome, Unfinished>, Rejection> {
        if self.settings.intake.subscriptions.awaits_discovery() {
            // A resource under the management groups is in scope once they are listed.
            self.discover_subscriptions(deadline).await;
        }
        let request = CheckRequest::parse(body, request_id, &self.settings.intake)?;
        if request.apply && self.settings.mode != Mode::Remediate {
            return Err(Rejection::new(format!(
                "apply: cmk-guard runs in `{}` mode; apply needs CMKGUARD_MODE=remediate",
                self.settings.mode
            )));
        }
        if request.apply && self.actor().is_none() {
            return Err(Rejection::new(
                "apply: this command is read-only; use the Evaluate function",
            ));
        }
        let look = if request.apply {
            Look::Apply
        } else {
            Look::Check
        };
        let event = EventRef::from_event(
            Some(request_id.to_owned()),
            Some(EVALUATE_EVENT_TYPE.to_owned()),
            Some(request.resource),
        );
        Ok(self
            .reconcile(event, &request.trigger, deadline, look)
            .await)
    }
}
