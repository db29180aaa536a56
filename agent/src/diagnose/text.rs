//! A diagnosis as a person reads it in a terminal.

use std::io::{self, Write};

use super::{Diagnosis, Finding, Severity, Subject};
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
    writeln!(
        out,
        "\n{severity} {}: {}",
        json_name(&f.finding),
        subject(&f.subject)
    )?;
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
        .map(|(k, v)| format!("{k} {}", number(*v)))
        .collect();
    writeln!(out, "  evidence: {}", evidence.join(", "))
}

fn subject(s: &Subject) -> String {
    let mut parts = Vec::new();
    match (&s.comm, s.pid) {
        (Some(comm), Some(pid)) => parts.push(format!("{comm} (pid {pid})")),
        (None, Some(pid)) => parts.push(format!("pid {pid}")),
        _ => {}
    }
    if let Some(port) = s.port {
        parts.push(format!("port {port}"));
    }
    if let Some(model) = &s.model {
        parts.push(format!("model {model}"));
    }
    if let (Some(index), Some(uuid)) = (s.gpu, &s.gpu_uuid) {
        parts.push(format!("GPU {index} ({uuid})"));
    }
    // Names come from outside (a request's model, a process's name): no
    // terminal control sequences reach the terminal.
    let text = if parts.is_empty() {
        "the agent".to_string()
    } else {
        parts.join(", ")
    };
    text.chars().filter(|c| !c.is_control()).collect()
}

/// Integers as integers, the rest with up to four significant decimals.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.4}").trim_end_matches('0').to_string()
    }
}
