//! The benchmark's results: rows of samples with their median, min and max, the target
//! next to each, printed as a table and written as JSON.

use std::fmt::Write as _;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Secs,
    /// Bytes per second, shown in GB/s (10^9), as the targets are.
    Rate,
    /// KiB, shown in MiB.
    Kib,
    Ratio,
    PerSec,
    /// A fraction, shown as a percentage.
    Percent,
}

impl Unit {
    fn show(self, v: f64) -> String {
        match self {
            Unit::Secs => format!("{v:.2} s"),
            Unit::Rate => format!("{:.2} GB/s", v / 1e9),
            Unit::Kib => format!("{:.1} MiB", v / 1024.0),
            Unit::Ratio => format!("{v:.2}x"),
            Unit::PerSec => format!("{:.0}/s", v),
            Unit::Percent => format!("{:.1}%", v * 100.0),
        }
    }
    fn name(self) -> &'static str {
        match self {
            Unit::Secs => "s",
            Unit::Rate => "bytes/s",
            Unit::Kib => "KiB",
            Unit::Ratio => "ratio",
            Unit::PerSec => "per second",
            Unit::Percent => "fraction",
        }
    }
}

/// A target, checked against the median.
#[derive(Clone, Debug)]
pub struct Target {
    pub text: String,
    pub at_most: Option<f64>,
    pub at_least: Option<f64>,
}

impl Target {
    pub fn at_most(limit: f64, text: impl Into<String>) -> Target {
        Target {
            text: text.into(),
            at_most: Some(limit),
            at_least: None,
        }
    }
    pub fn at_least(limit: f64, text: impl Into<String>) -> Target {
        Target {
            text: text.into(),
            at_most: None,
            at_least: Some(limit),
        }
    }
    fn met(&self, v: f64) -> bool {
        self.at_most.is_none_or(|m| v <= m) && self.at_least.is_none_or(|m| v >= m)
    }
}

#[derive(Clone, Debug)]
pub struct Row {
    pub name: String,
    pub unit: Unit,
    pub samples: Vec<f64>,
    pub target: Option<Target>,
    /// Why there are no samples, or a remark.
    pub note: Option<String>,
}

impl Row {
    pub fn median(&self) -> Option<f64> {
        median(&self.samples)
    }
    fn verdict(&self) -> Option<bool> {
        Some(self.target.as_ref()?.met(self.median()?))
    }
}

pub fn median(samples: &[f64]) -> Option<f64> {
    let mut s: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).collect();
    if s.is_empty() {
        return None;
    }
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

fn min(s: &[f64]) -> Option<f64> {
    s.iter().copied().reduce(f64::min)
}

fn max(s: &[f64]) -> Option<f64> {
    s.iter().copied().reduce(f64::max)
}

/// Rows grouped under headings, in the order they were added.
#[derive(Default)]
pub struct Report {
    pub sections: Vec<(String, Vec<Row>)>,
}

impl Report {
    pub fn section(&mut self, title: &str) {
        self.sections.push((title.to_string(), Vec::new()));
    }

    pub fn row(&mut self, name: &str, unit: Unit, samples: Vec<f64>, target: Option<Target>) {
        self.push(Row {
            name: name.to_string(),
            unit,
            samples,
            target,
            note: None,
        });
    }

    /// A row without figures, e.g. a case that was skipped or failed.
    pub fn note(&mut self, name: &str, note: impl Into<String>) {
        self.push(Row {
            name: name.to_string(),
            unit: Unit::Secs,
            samples: Vec::new(),
            target: None,
            note: Some(note.into()),
        });
    }

    pub fn push(&mut self, row: Row) {
        if self.sections.is_empty() {
            self.section("results");
        }
        self.sections.last_mut().expect("one section").1.push(row);
    }

    pub fn table(&self) -> String {
        let name_w = self
            .sections
            .iter()
            .flat_map(|(_, r)| r)
            .map(|r| r.name.len())
            .max()
            .unwrap_or(10)
            .max(10);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:name_w$}  {:>12} {:>12} {:>12}  {:4}  target",
            "measure", "median", "min", "max", ""
        );
        for (title, rows) in &self.sections {
            let _ = writeln!(out, "-- {title}");
            for r in rows {
                let show = |v: Option<f64>| v.map(|v| r.unit.show(v)).unwrap_or_default();
                if r.samples.is_empty() {
                    let _ = writeln!(
                        out,
                        "{:name_w$}  {}",
                        r.name,
                        r.note.as_deref().unwrap_or("no figures")
                    );
                    continue;
                }
                let (lo, hi) = if r.samples.len() > 1 {
                    (show(min(&r.samples)), show(max(&r.samples)))
                } else {
                    (String::new(), String::new())
                };
                let verdict = match r.verdict() {
                    Some(true) => "PASS",
                    Some(false) => "MISS",
                    None => "",
                };
                let target = r.target.as_ref().map(|t| t.text.as_str()).unwrap_or("");
                let mut line = format!(
                    "{:name_w$}  {:>12} {:>12} {:>12}  {verdict:4}  {target}",
                    r.name,
                    show(r.median()),
                    lo,
                    hi
                );
                if let Some(n) = &r.note {
                    line += &format!(" ({n})");
                }
                let _ = writeln!(out, "{}", line.trim_end());
            }
        }
        out
    }

    pub fn json(&self) -> serde_json::Value {
        let sections: Vec<serde_json::Value> = self
            .sections
            .iter()
            .map(|(title, rows)| {
                let rows: Vec<serde_json::Value> = rows
                    .iter()
                    .map(|r| {
                        serde_json::json!({
                            "name": r.name,
                            "unit": r.unit.name(),
                            "samples": r.samples,
                            "median": r.median(),
                            "min": min(&r.samples),
                            "max": max(&r.samples),
                            "target": r.target.as_ref().map(|t| serde_json::json!({
                                "text": t.text,
                                "at_most": t.at_most,
                                "at_least": t.at_least,
                            })),
                            "pass": r.verdict(),
                            "note": r.note,
                        })
                    })
                    .collect();
                serde_json::json!({ "title": title, "rows": rows })
            })
            .collect();
        serde_json::Value::Array(sections)
    }
}
