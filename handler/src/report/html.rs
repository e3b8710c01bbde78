//! A self-contained, printable HTML compliance report.

use super::Context;
use crate::outcome::Outcome;

/// The HTML report of `outcomes`.
pub fn html(outcomes: &[Outcome], context: &Context<'_>) -> String {
    let _ = (outcomes, context);
    String::new()
}
