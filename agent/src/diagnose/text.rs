//! A diagnosis as a person reads it in a terminal.

use std::io::{self, Write};

use super::{Diagnosis, Finding, Severity, evidence_value};
use crate::model::json_name;

pub fn write_text(out: &mut impl Write, d: &Diagnosis) -> io::Result<()> {
    let span = match (d.from, d.to) {
        (Some(from), Some(to)) => format!(
            ", {} to {}",
            humantime::format_rfc3339_millis(from),
            humantime::format_rfc3339_millis(to)
        ),
        _ => String::new(),
    };
    writeln!(
        out,
        "{} intervals{span}. Servers: {}, GPU processes: {}, GPUs: {}, finished requests: {}.",
        d.intervals, d.servers, d.gpu_processes, d.devices, d.requests
    )?;
    if let Some(store) = &d.store {
        let matching = store
            .slice
            .matchers
            .as_ref()
            .map(|m| format!(", matching {{{m}}}"))
            .unwrap_or_default();
        writeln!(
            out,
            "Read from {} ({} names) at {} steps{matching}; nodes: {}.",
            store.url,
            json_name(&store.dialect),
            humantime::format_duration(store.slice.step),
            store.nodes.join(", ")
        )?;
    }
    if d.findings.is_empty() {
        writeln!(out, "\nNo findings.")?;
    }
    for f in &d.findings {
        write_finding(out, f)?;
    }
    if !d.not_checked.is_empty() {
        writeln!(out, "\nNot checked:")?;
        for n in &d.not_checked {
            writeln!(out, "  - {n}")?;
        }
    }
    Ok(())
}

fn write_finding(out: &mut impl Write, f: &Finding) -> io::Result<()> {
    let severity = match f.severity {
        Severity::Critical => "CRITICAL",
        Severity::Warning => "WARNING",
        Severity::Info => "info",
    };
    writeln!(out, "\n{severity} {}: {}", json_name(&f.finding), f.subject)?;
    writeln!(
        out,
        "  {} to {}",
        humantime::format_rfc3339_millis(f.from),
        humantime::format_rfc3339_millis(f.to)
    )?;
    writeln!(out, "  {}", f.summary)?;
    let evidence: Vec<String> = f
        .evidence
        .iter()
        .map(|(k, v)| format!("{k} {}", evidence_value(*v)))
        .collect();
    writeln!(out, "  evidence: {}", evidence.join(", "))?;
    if !f.queries.is_empty() {
        writeln!(out, "  queries:")?;
        for q in &f.queries {
            writeln!(out, "    {q}")?;
        }
    }
    Ok(())
}
