//! A candidate rule set as the command line (`closeloop rules check|import|simulate`) and
//! the admin page 管理 → 规则设置 both handle it: parsed and checked with an error that
//! names the key and the line, summarised, and put in force as the next version.

use std::fmt;

use super::store::{self, Imported};
use super::{ActionKind, RuleSet};
use crate::access::Actor;
use crate::db::Db;

/// Why a text is not a rule set that may be put in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// The key at fault (`antifraud.repeat_limit`), when known.
    pub key: Option<String>,
    /// The line of the text, for a TOML error.
    pub line: Option<usize>,
    /// What is wrong, in one line (English, from the TOML reader or `RuleSet::check`).
    pub message: String,
    /// The text is not a well-formed rule set (syntax, type, unknown key), as opposed
    /// to a well-formed one that fails the check.
    pub syntax: bool,
}

/// The one line the command line prints: `rule set: `antifraud.repeat_limt` (line 2): …`.
impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.syntax {
            return write!(f, "{}", self.message);
        }
        match (&self.key, self.line) {
            (Some(k), Some(l)) => write!(f, "rule set: `{k}` (line {l}): {}", self.message),
            (None, Some(l)) => write!(f, "rule set: line {l}: {}", self.message),
            _ => write!(f, "rule set: {}", self.message),
        }
    }
}

/// Parses `text` and checks it.
pub fn parse(text: &str) -> std::result::Result<RuleSet, RuleError> {
    // The TOML error itself spans several lines (a source excerpt); say it in one.
    if let Err(e) = toml::from_str::<RuleSet>(text) {
        return Err(toml_error(text, &e));
    }
    RuleSet::from_toml(text).map_err(|e| {
        let message = e.to_string();
        let key = message
            .split('`')
            .nth(1)
            .filter(|k| !k.is_empty())
            .map(str::to_string);
        RuleError {
            key,
            line: None,
            message,
            syntax: false,
        }
    })
}

fn toml_error(text: &str, e: &toml::de::Error) -> RuleError {
    let message = e.message().trim().replace('\n', " ");
    let Some(span) = e.span() else {
        return RuleError {
            key: None,
            line: None,
            message,
            syntax: true,
        };
    };
    let start = span.start.min(text.len());
    let line_no = text[..start].matches('\n').count() + 1;
    let lines: Vec<&str> = text.lines().collect();
    let header = |l: &str| {
        let l = l.trim();
        l.strip_prefix("[[")
            .and_then(|r| r.strip_suffix("]]"))
            .or_else(|| l.strip_prefix('[').and_then(|r| r.strip_suffix(']')))
            .map(|t| t.trim().to_string())
    };
    let table = lines
        .iter()
        .take(line_no.saturating_sub(1))
        .rev()
        .find_map(|l| header(l));
    let line = lines.get(line_no - 1).copied().unwrap_or_default();
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_string())
        .filter(|k| !k.is_empty() && !k.starts_with('#'));
    let key = match (table, key) {
        (Some(t), Some(k)) => Some(format!("{t}.{k}")),
        (None, k) => k,
        (Some(_), None) => None,
    };
    RuleError {
        key,
        line: Some(line_no),
        message,
        syntax: true,
    }
}

/// What `rules check` prints: the pipeline, its gates and the sidebar's actions.
pub fn summary(r: &RuleSet) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let names: Vec<&str> = r.stages.iter().map(|s| s.name.as_str()).collect();
    let _ = writeln!(out, "rule set is valid");
    let _ = writeln!(out, "stages ({}): {}", names.len(), names.join(" → "));
    let _ = writeln!(out, "gates:");
    for s in r.stages.iter().skip(1) {
        let q = &s.requires;
        let mut needs = Vec::new();
        if q.communications > 0 {
            needs.push(format!("{} valid communications", q.communications));
        }
        if q.proposals > 0 {
            needs.push(format!("{} proposals", q.proposals));
        }
        if q.proposals_sent > 0 {
            needs.push(format!("{} proposals sent", q.proposals_sent));
        }
        if q.proposals_opened > 0 {
            needs.push(format!(
                "{} proposals opened by the customer",
                q.proposals_opened
            ));
        }
        if q.verified_calls > 0 {
            needs.push(format!("{} verified calls", q.verified_calls));
        }
        if q.valid_contact {
            needs.push("a valid phone".to_string());
        }
        if needs.is_empty() {
            needs.push("nothing".to_string());
        }
        let _ = writeln!(out, "  → {}: {}", s.name, needs.join(", "));
    }
    let _ = writeln!(out, "lost reasons: {}", r.lost_reasons.join(", "));
    let guarded = r.actions.iter().filter(|a| a.guarded).count();
    let _ = writeln!(
        out,
        "actions ({}, {guarded} guarded by the anti-fraud rules):",
        r.actions.len()
    );
    for a in &r.actions {
        let mut what = vec![match a.kind {
            ActionKind::Tap => "tap".to_string(),
            ActionKind::Upload => format!("upload {}", a.document.as_deref().unwrap_or("?")),
            ActionKind::QuickAsk => format!("ask {}", a.role.as_deref().unwrap_or("?")),
        }];
        if let Some(c) = a.claim {
            what.push(format!("claims a {}", c.as_str()));
        }
        if a.guarded {
            what.push("guarded".into());
        }
        let _ = writeln!(out, "  {}: {}", a.name, what.join(", "));
    }
    let af = &r.antifraud;
    let _ = writeln!(
        out,
        "anti-fraud: more than {} of one action on one customer in {} is refused; {} records from one IP in {} are flagged",
        af.repeat_limit,
        humantime::format_duration(af.repeat_window),
        af.ip_burst_count,
        humantime::format_duration(af.ip_burst_window)
    );
    let _ = writeln!(
        out,
        "verification: calls of at least {}s count; credibility below {} is alerted",
        r.verification.min_call_seconds, r.credibility.threshold
    );
    out
}

/// Checks `text` and puts it in force as `org_id`'s next version, audited as `actor`
/// (unchanged when it equals the version in force).
pub async fn import(
    db: &Db,
    now_ms: i64,
    org_id: &str,
    actor: &Actor,
    text: &str,
) -> std::result::Result<Imported, ImportError> {
    parse(text).map_err(ImportError::Invalid)?;
    store::import(db, now_ms, org_id, actor, text)
        .await
        .map_err(ImportError::Store)
}

/// Why an import did not happen.
#[derive(Debug)]
pub enum ImportError {
    Invalid(RuleError),
    Store(crate::Error),
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImportError::Invalid(e) => e.fmt(f),
            ImportError::Store(e) => e.fmt(f),
        }
    }
}

/// The text a rule set is exported as: its version in a comment at the top.
pub fn export(version: i64, rules: &RuleSet) -> String {
    let origin = if version == 0 {
        " (the built-in defaults)"
    } else {
        ""
    };
    format!(
        "# closeloop rule set, version {version} in force{origin}\n\
         # Check edits with `closeloop rules check FILE`, load them with `closeloop rules import FILE`.\n\n{}",
        rules.to_toml()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_key_and_the_line() {
        let e = parse("[antifraud]\nrepeat_limt = 3\n").unwrap_err();
        assert!(e.syntax);
        assert_eq!(e.key.as_deref(), Some("antifraud.repeat_limt"));
        assert_eq!(e.line, Some(2));
        assert!(e
            .to_string()
            .starts_with("rule set: `antifraud.repeat_limt` (line 2): "));
        let e = parse("[credibility]\nthreshold = 1.5\n").unwrap_err();
        assert!(!e.syntax);
        assert_eq!(e.key.as_deref(), Some("credibility.threshold"));
        assert!(parse("[antifraud]\nrepeat_limit = 5\n").is_ok());
        assert!(summary(&RuleSet::default()).contains("初步咨询 → 需求确认"));
    }
}
