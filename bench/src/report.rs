//! What a run reports: one section per measurement with its figures and, where a quality bar
//! applies, the verdict; printed as Markdown and saved as JSON.

use serde_json::{Value, json};

/// A quality bar and whether this run met it.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub bar: String,
    pub met: bool,
    pub detail: String,
}

/// The figures of one measurement.
#[derive(Debug, Clone, Default)]
pub struct Section {
    pub title: String,
    pub rows: Vec<(String, String)>,
    pub verdicts: Vec<Verdict>,
    pub notes: Vec<String>,
}

impl Section {
    pub fn new(title: &str) -> Self {
        Self {
            title: title.to_owned(),
            ..Self::default()
        }
    }

    pub fn row(&mut self, name: &str, value: impl std::fmt::Display) {
        self.rows.push((name.to_owned(), value.to_string()));
    }

    pub fn verdict(&mut self, bar: &str, met: bool, detail: impl Into<String>) {
        self.verdicts.push(Verdict {
            bar: bar.to_owned(),
            met,
            detail: detail.into(),
        });
    }

    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    /// A section saying the measurement could not be made, and why.
    pub fn failed(title: &str, error: &str) -> Self {
        let mut section = Self::new(title);
        section.note(format!("not measured: {error}"));
        section
    }

    pub fn markdown(&self) -> String {
        let mut out = format!("### {}\n\n| figure | value |\n|---|---|\n", self.title);
        for (name, value) in &self.rows {
            out.push_str(&format!("| {name} | {value} |\n"));
        }
        for verdict in &self.verdicts {
            out.push_str(&format!(
                "\n**{}**: {} — {}\n",
                verdict.bar,
                if verdict.met { "met" } else { "NOT met" },
                verdict.detail
            ));
        }
        for note in &self.notes {
            out.push_str(&format!("\n_{note}_\n"));
        }
        out
    }

    pub fn json(&self) -> Value {
        json!({
            "title": self.title,
            "figures": self.rows.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
            "verdicts": self.verdicts.iter().map(|v| json!({"bar": v.bar, "met": v.met, "detail": v.detail})).collect::<Vec<_>>(),
            "notes": self.notes,
        })
    }
}

/// `1234.5` → `"1234.5"`, rounded to `digits`.
pub fn fixed(value: f64, digits: usize) -> String {
    format!("{value:.digits$}")
}

/// KiB → `"12.3 MiB"`.
pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}
