//! Card templates as files. Each card closeloop sends is composed from a template —
//! title, description, fields and button labels with `{placeholders}` — filled with the
//! values code supplies. The templates live under `cards/<platform>/`, are embedded in the
//! binary, and an admin may override any of them from a folder (`[cards] override_dir`).
//! What a button *does* comes from code: a template names the actions its buttons show a
//! label for, and must name exactly the actions code defines, so an edited template can
//! change wording and layout but never break a flow. Every template is checked at start-up.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, OnceLock, RwLock};

use serde::Deserialize;

use super::{Button, ButtonStyle, Card, Tone, MAX_BUTTONS, MAX_FIELDS};
use crate::chat::event::Platform;

/// What code supplies to a template, and the actions its buttons trigger.
pub struct Spec {
    pub name: &'static str,
    pub vars: &'static [&'static str],
    pub actions: &'static [(&'static str, ButtonStyle)],
}

/// Every card closeloop sends.
pub const SPECS: &[Spec] = &[
    Spec {
        name: "antifraud.ip_burst",
        vars: &["rep", "customer", "action", "ip", "time", "count"],
        actions: &[],
    },
    Spec {
        name: "antifraud.freeze",
        vars: &["rep", "customer", "action", "rule", "time"],
        actions: &[("lift", ButtonStyle::Primary)],
    },
    Spec {
        name: "attestation",
        vars: &["rep", "customer", "action", "time", "note"],
        actions: &[
            ("confirm", ButtonStyle::Primary),
            ("reject", ButtonStyle::Danger),
        ],
    },
    Spec {
        name: "collab.request",
        vars: &["title", "hint", "initiator", "customer", "content", "due"],
        actions: &[("accept", ButtonStyle::Primary)],
    },
    Spec {
        name: "collab.reminder",
        vars: &["title", "customer", "text"],
        actions: &[("accept", ButtonStyle::Primary)],
    },
    Spec {
        name: "collab.nudge",
        vars: &["title", "customer", "text"],
        actions: &[],
    },
    Spec {
        name: "collab.escalation",
        vars: &["title", "assignees", "initiator", "customer"],
        actions: &[],
    },
    Spec {
        name: "collab.reply",
        vars: &[
            "title", "verb", "handler", "time", "answer", "reason", "date", "synced",
        ],
        actions: &[],
    },
    Spec {
        name: "collab.undelivered",
        vars: &["title", "recipient", "reason", "customer"],
        actions: &[],
    },
    Spec {
        name: "credibility.alert",
        vars: &["name", "week", "calls", "opens", "threshold", "due", "task"],
        actions: &[],
    },
    Spec {
        name: "credibility.review",
        vars: &["week", "calls", "opens", "threshold", "due", "task"],
        actions: &[],
    },
    Spec {
        name: "audit.anchor",
        vars: &["time", "seq", "hash"],
        actions: &[],
    },
    Spec {
        name: "access.request",
        vars: &["requester", "what", "reason", "why", "time"],
        actions: &[
            ("approve", ButtonStyle::Primary),
            ("refuse", ButtonStyle::Danger),
        ],
    },
    Spec {
        name: "access.decision",
        vars: &["what", "outcome", "approver", "expires"],
        actions: &[],
    },
    Spec {
        name: "access.pause",
        vars: &["person", "rule", "time"],
        actions: &[("lift", ButtonStyle::Primary)],
    },
    Spec {
        name: "collab.health",
        vars: &[
            "week", "requests", "mean", "overdue", "returns", "worst", "link",
        ],
        actions: &[],
    },
];

/// The platforms with a template folder of their own. The first is the base: every card is
/// composed from it, and from each other platform's folder where that words it differently.
pub const PLATFORMS: [Platform; 3] = [Platform::Wecom, Platform::Dingtalk, Platform::Feishu];

macro_rules! embedded {
    ($($name:literal),* $(,)?) => {
        /// The embedded templates of each platform (`cards/<platform>/<name>.toml`).
        const EMBEDDED: &[(&str, &str, &str)] = &[
            $(
                ("wecom", $name, include_str!(concat!("../../cards/wecom/", $name, ".toml"))),
                ("dingtalk", $name, include_str!(concat!("../../cards/dingtalk/", $name, ".toml"))),
                ("feishu", $name, include_str!(concat!("../../cards/feishu/", $name, ".toml"))),
            )*
        ];
    };
}

embedded!(
    "antifraud.ip_burst",
    "antifraud.freeze",
    "attestation",
    "collab.request",
    "collab.reminder",
    "collab.nudge",
    "collab.escalation",
    "collab.reply",
    "collab.undelivered",
    "collab.health",
    "credibility.alert",
    "credibility.review",
    "audit.anchor",
    "access.request",
    "access.decision",
    "access.pause",
);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Field {
    label: String,
    value: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Template {
    title: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    fields: Vec<Field>,
    /// action → label
    #[serde(default)]
    buttons: BTreeMap<String, String>,
    /// `info` (default), `warning` or `danger`: the header colour where a platform has one.
    #[serde(default)]
    tone: Tone,
}

/// A checked set of templates, per platform.
#[derive(Debug, Clone)]
pub struct Templates {
    by_name: HashMap<(Platform, &'static str), Template>,
}

fn placeholders(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        match after.find('}') {
            Some(end) => {
                out.push(&after[..end]);
                rest = &after[end + 1..];
            }
            None => {
                out.push(after);
                break;
            }
        }
    }
    out
}

fn check(spec: &Spec, t: &Template, source: &str) -> Result<(), String> {
    let bad = |m: String| Err(format!("card template {source}: {m}"));
    if t.title.trim().is_empty() {
        return bad("`title` is empty".into());
    }
    if t.fields.len() > MAX_FIELDS {
        return bad(format!("at most {MAX_FIELDS} fields"));
    }
    let vars: BTreeSet<&str> = spec.vars.iter().copied().collect();
    let texts = std::iter::once(t.title.as_str())
        .chain(t.description.as_deref())
        .chain(
            t.fields
                .iter()
                .flat_map(|f| [f.label.as_str(), f.value.as_str()]),
        )
        .chain(t.buttons.values().map(String::as_str));
    for text in texts {
        for p in placeholders(text) {
            if !vars.contains(p) {
                return bad(format!(
                    "`{{{p}}}` is not one of its values ({})",
                    spec.vars.join(", ")
                ));
            }
        }
    }
    let want: BTreeSet<&str> = spec.actions.iter().map(|(a, _)| *a).collect();
    let have: BTreeSet<&str> = t.buttons.keys().map(String::as_str).collect();
    if want != have {
        return bad(format!(
            "`[buttons]` must label exactly the actions {:?} (found {:?}); actions come from code",
            want, have
        ));
    }
    if t.buttons.len() > MAX_BUTTONS || t.buttons.values().any(|l| l.trim().is_empty()) {
        return bad("every button needs a label".into());
    }
    Ok(())
}

impl Templates {
    /// The embedded templates, with any file in `override_dir` replacing its embedded twin:
    /// `<name>.toml` for every platform, `<platform>/<name>.toml` for one (which wins). Every
    /// one is checked. Unknown files and folders are refused (a typo in a file name would
    /// otherwise silently change nothing).
    pub fn load(override_dir: Option<&Path>) -> Result<Templates, String> {
        let mut texts: HashMap<(Platform, &'static str), (String, String)> = EMBEDDED
            .iter()
            .map(|(platform, n, t)| {
                let p = platform_named(platform).expect("embedded platform");
                (
                    (p, *n),
                    (
                        t.to_string(),
                        format!("cards/{platform}/{n}.toml (embedded)"),
                    ),
                )
            })
            .collect();
        if let Some(dir) = override_dir {
            let mut per_platform = Vec::new();
            for (path, name) in toml_files(dir)? {
                if let Some(p) = name.strip_prefix('/').and_then(platform_named) {
                    per_platform.push((p, path));
                    continue;
                }
                let spec = spec_of(&path, &name)?;
                let text = read(&path)?;
                for p in PLATFORMS {
                    texts.insert((p, spec.name), (text.clone(), path.display().to_string()));
                }
            }
            for (p, sub) in per_platform {
                for (path, name) in toml_files(&sub)? {
                    if name.starts_with('/') {
                        return Err(format!(
                            "card templates {}: no folders inside a platform's folder",
                            path.display()
                        ));
                    }
                    let spec = spec_of(&path, &name)?;
                    texts.insert((p, spec.name), (read(&path)?, path.display().to_string()));
                }
            }
        }
        let mut by_name = HashMap::new();
        for p in PLATFORMS {
            for spec in SPECS {
                let (text, source) = texts.get(&(p, spec.name)).ok_or_else(|| {
                    format!(
                        "card template `{}` for {} is missing",
                        spec.name,
                        p.as_str()
                    )
                })?;
                let t: Template =
                    toml::from_str(text).map_err(|e| format!("card template {source}: {e}"))?;
                check(spec, &t, source)?;
                by_name.insert((p, spec.name), t);
            }
        }
        Ok(Templates { by_name })
    }

    /// Composes the card `name` from `vars`, as the base platform's templates word it, with
    /// each other platform's wording attached where it differs. A field whose value comes
    /// out empty is left out (optional values). Unknown names are a bug in code, caught by
    /// tests.
    pub fn card(&self, name: &str, vars: &[(&str, String)]) -> Card {
        let mut base = self.card_for(PLATFORMS[0], name, vars);
        for p in &PLATFORMS[1..] {
            let variant = self.card_for(*p, name, vars);
            if variant != base {
                base.variants.insert(p.as_str().to_string(), variant);
            }
        }
        base
    }

    /// Card `name` as `platform`'s templates word it.
    pub fn card_for(&self, platform: Platform, name: &str, vars: &[(&str, String)]) -> Card {
        let spec = SPECS
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no card spec `{name}`"));
        let t = &self.by_name[&(platform, spec.name)];
        let fill = |text: &str| {
            let mut out = text.to_string();
            for (k, v) in vars {
                out = out.replace(&format!("{{{k}}}"), v);
            }
            out
        };
        Card {
            title: fill(&t.title),
            description: t
                .description
                .as_deref()
                .map(fill)
                .filter(|d| !d.trim().is_empty()),
            fields: t
                .fields
                .iter()
                .map(|f| (fill(&f.label), fill(&f.value)))
                .filter(|(_, v)| !v.trim().is_empty())
                .collect(),
            buttons: spec
                .actions
                .iter()
                .map(|(action, style)| Button {
                    action: action.to_string(),
                    label: fill(&t.buttons[*action]),
                    style: *style,
                })
                .collect(),
            tone: t.tone,
            template: Some(spec.name.to_string()),
            variants: BTreeMap::new(),
        }
    }
}

fn platform_named(name: &str) -> Option<Platform> {
    PLATFORMS.into_iter().find(|p| p.as_str() == name)
}

/// The `.toml` files in `dir` as (path, card name), and its sub-folders as (path, "/name").
fn toml_files(dir: &Path) -> Result<Vec<(std::path::PathBuf, String)>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cards.override_dir {}: {e}", dir.display()))?;
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        let file = path
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or_default()
            .to_string();
        if path.is_dir() {
            if platform_named(&file).is_none() {
                return Err(format!(
                    "card templates {}: a folder must be named after a platform ({})",
                    path.display(),
                    PLATFORMS.map(|p| p.as_str()).join(", ")
                ));
            }
            out.push((path, format!("/{file}")));
        } else if let Some(name) = file.strip_suffix(".toml") {
            out.push((path.clone(), name.to_string()));
        }
    }
    Ok(out)
}

fn spec_of(path: &Path, name: &str) -> Result<&'static Spec, String> {
    SPECS.iter().find(|s| s.name == name).ok_or_else(|| {
        format!(
            "card template {}: no card is called `{name}` (known: {})",
            path.display(),
            SPECS.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
        )
    })
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("card template {}: {e}", path.display()))
}

fn installed() -> &'static RwLock<Option<Arc<Templates>>> {
    static CELL: OnceLock<RwLock<Option<Arc<Templates>>>> = OnceLock::new();
    CELL.get_or_init(|| RwLock::new(None))
}

/// Makes `t` the templates every card is composed from (done at start-up).
pub fn install(t: Templates) {
    *installed().write().expect("templates lock") = Some(Arc::new(t));
}

/// The templates in force: the installed ones, else the embedded ones.
pub fn current() -> Arc<Templates> {
    if let Some(t) = installed().read().expect("templates lock").as_ref() {
        return t.clone();
    }
    let t = Arc::new(Templates::load(None).expect("embedded card templates are valid"));
    *installed().write().expect("templates lock") = Some(t.clone());
    t
}

/// Composes card `name` with the templates in force.
pub fn compose(name: &str, vars: &[(&str, String)]) -> Card {
    current().card(name, vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_template_is_valid_and_fills() {
        let t = Templates::load(None).unwrap();
        for (platform, spec) in PLATFORMS
            .iter()
            .flat_map(|p| SPECS.iter().map(move |s| (*p, s)))
        {
            let vars: Vec<(&str, String)> =
                spec.vars.iter().map(|v| (*v, format!("<{v}>"))).collect();
            let card = t.card_for(platform, spec.name, &vars);
            assert!(!card.title.contains('{'), "{}: {}", spec.name, card.title);
            for (k, v) in &card.fields {
                assert!(
                    !k.contains('{') && !v.contains('{'),
                    "{}: {k} {v}",
                    spec.name
                );
            }
            card.check().unwrap();
            let actions: Vec<&str> = card.buttons.iter().map(|b| b.action.as_str()).collect();
            let want: Vec<&str> = spec.actions.iter().map(|(a, _)| *a).collect();
            assert_eq!(actions, want);
        }
    }

    #[test]
    fn an_override_changes_wording_but_cannot_break_actions() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("attestation.toml"),
            "title = \"请核实：{rep} 的跟进\"\n[buttons]\nconfirm = \"属实\"\nreject = \"不属实\"\n",
        )
        .unwrap();
        let t = Templates::load(Some(dir.path())).unwrap();
        let card = t.card("attestation", &[("rep", "李明".into())]);
        assert_eq!(card.title, "请核实：李明 的跟进");
        assert!(card.fields.is_empty());
        assert_eq!(card.buttons[0].action, "confirm");
        assert_eq!(card.buttons[0].label, "属实");

        std::fs::write(
            dir.path().join("attestation.toml"),
            "title = \"x\"\n[buttons]\nconfirm = \"属实\"\napprove = \"批准\"\n",
        )
        .unwrap();
        let e = Templates::load(Some(dir.path())).unwrap_err();
        assert!(e.contains("actions come from code"), "{e}");
        std::fs::write(
            dir.path().join("attestation.toml"),
            "title = \"{secret}\"\n[buttons]\nconfirm = \"a\"\nreject = \"b\"\n",
        )
        .unwrap();
        let e = Templates::load(Some(dir.path())).unwrap_err();
        assert!(e.contains("{secret}"), "{e}");
        std::fs::remove_file(dir.path().join("attestation.toml")).unwrap();
        std::fs::write(dir.path().join("atestation.toml"), "title = \"x\"\n").unwrap();
        let e = Templates::load(Some(dir.path())).unwrap_err();
        assert!(e.contains("no card is called `atestation`"), "{e}");
    }

    #[test]
    fn each_platform_has_its_own_wording_and_overrides_can_target_one() {
        let vars = [
            ("title", "售前快速提问".to_string()),
            ("assignees", "张工".into()),
            ("initiator", "李明".into()),
            ("customer", "华南智造".into()),
        ];
        let t = Templates::load(None).unwrap();
        let card = t.card("collab.escalation", &vars);
        // WeCom cards have no header colour: the title carries the urgency.
        assert_eq!(card.title, "【超时升级】售前快速提问");
        let feishu = card.clone().into_platform(Platform::Feishu);
        assert_eq!(feishu.title, "超时升级：售前快速提问");
        assert_eq!(feishu.tone, Tone::Danger);
        assert!(feishu.variants.is_empty());
        assert_eq!(
            card.clone().into_platform(Platform::Wecom).title,
            card.title
        );
        // Stored and read back, each platform still gets its own.
        let cipher = crate::security::Cipher::new(crate::security::DataKey::generate(), vec![]);
        let sealed = crate::cards::seal(&cipher, &card).unwrap();
        let back = crate::cards::stored(&cipher, &sealed, Platform::Dingtalk).unwrap();
        assert_eq!(back.title, "超时升级：售前快速提问");

        let dir = tempfile::tempdir().unwrap();
        let all = "title = \"全员：{title}\"\n";
        std::fs::write(dir.path().join("collab.escalation.toml"), all).unwrap();
        std::fs::create_dir(dir.path().join("feishu")).unwrap();
        std::fs::write(
            dir.path().join("feishu/collab.escalation.toml"),
            "title = \"飞书：{title}\"\ntone = \"warning\"\n",
        )
        .unwrap();
        let t = Templates::load(Some(dir.path())).unwrap();
        let card = t.card("collab.escalation", &vars);
        assert_eq!(card.title, "全员：售前快速提问");
        assert_eq!(
            card.clone().into_platform(Platform::Dingtalk).title,
            "全员：售前快速提问"
        );
        let feishu = card.into_platform(Platform::Feishu);
        assert_eq!(feishu.title, "飞书：售前快速提问");
        assert_eq!(feishu.tone, Tone::Warning);

        std::fs::create_dir(dir.path().join("slack")).unwrap();
        let e = Templates::load(Some(dir.path())).unwrap_err();
        assert!(e.contains("named after a platform"), "{e}");
        std::fs::remove_dir(dir.path().join("slack")).unwrap();
        std::fs::write(
            dir.path().join("feishu/attestation.toml"),
            "title = \"x\"\n[buttons]\nconfirm = \"是\"\n",
        )
        .unwrap();
        let e = Templates::load(Some(dir.path())).unwrap_err();
        assert!(e.contains("feishu/attestation.toml"), "{e}");
    }

    #[test]
    fn empty_optional_fields_are_left_out() {
        let t = Templates::load(None).unwrap();
        let card = t.card(
            "collab.reply",
            &[
                ("title", "售前快速提问".into()),
                ("verb", "已答复".into()),
                ("handler", "张工".into()),
                ("time", "11-30 10:15".into()),
                ("answer", "支持".into()),
                ("reason", String::new()),
                ("date", String::new()),
                ("synced", String::new()),
            ],
        );
        let labels: Vec<&str> = card.fields.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(labels, ["处理人", "时间", "答复"]);
    }
}
