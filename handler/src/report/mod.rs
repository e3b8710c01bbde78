//! Renderings of outcomes for the command line (`evaluate`, `scan`): a table for people at a
//! terminal, the Outcome JSON for tools, SARIF 2.1.0 for code scanning, CSV for spreadsheets and
//! a self-contained HTML report for auditors.

pub mod csv;
pub mod html;
pub mod sarif;
mod table;

pub use table::table;
pub(crate) use table::{columns, short_name};

use crate::outcome::Outcome;

/// How the CLI prints outcomes (`--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The Outcome JSON of docs/architecture.md (an array for several events).
    Json,
    /// A readable table of findings, worst first.
    Table,
    /// SARIF 2.1.0, for GitHub code scanning and other SARIF viewers.
    Sarif,
    /// One row per finding, for spreadsheets.
    Csv,
    /// A self-contained, printable compliance report.
    Html,
}

/// What a report may say beyond the outcomes themselves.
pub struct Context<'a> {
    /// When the report was made.
    pub generated: time::OffsetDateTime,
    /// The audit trail of the findings, when a state store is configured and readable.
    pub history: Option<&'a crate::history::History>,
}

/// `outcomes` in `format`.
pub fn render(
    format: Format,
    outcomes: &[Outcome],
    context: &Context<'_>,
) -> Result<String, serde_json::Error> {
    Ok(match format {
        Format::Table => table(outcomes),
        Format::Json if outcomes.len() == 1 => serde_json::to_string_pretty(&outcomes[0])?,
        Format::Json => serde_json::to_string_pretty(outcomes)?,
        Format::Sarif => sarif::sarif(outcomes, context)?,
        Format::Csv => csv::csv(outcomes, context),
        Format::Html => html::html(outcomes, context),
    })
}
