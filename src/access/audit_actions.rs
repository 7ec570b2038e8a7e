//! The audit log's action keys with their Chinese labels: the audit page shows the label,
//! never the key. Every key a writer passes to [`crate::access::Actor::audit`] or
//! [`crate::access::audit::record`] is here; a unit test reads the sources and fails on a
//! written key without a label.

/// Every action key closeloop writes to the audit log, with its label.
pub const ACTIONS: &[(&str, &str)] = &[
    ("api_key.create", "新建接口密钥"),
    ("api_key.revoke", "吊销接口密钥"),
    ("access.request", "申请更多权限"),
    ("access.approve", "同意权限申请"),
    ("access.refuse", "拒绝权限申请"),
    ("access.withdraw", "撤回权限申请"),
    ("access.pause", "权限申请过于频繁，已暂停"),
    ("access.lift", "解除权限申请暂停"),
    ("antifraud.freeze", "冻结销售对客户的操作"),
    ("antifraud.lift", "解除操作冻结"),
    ("antifraud.ip_burst", "同一 IP 短时间内记录过多"),
    ("attestation.request", "请求上级证明跟进"),
    ("attestation.confirmed", "上级确认跟进证明"),
    ("attestation.rejected", "上级驳回跟进证明"),
    ("audit.anchor", "锚定审计日志"),
    ("collab.open", "发起协作请求"),
    ("collab.adhoc", "发起临时协作请求"),
    ("collab.accept", "接受协作请求"),
    ("collab.answer", "答复协作请求"),
    ("collab.return", "退回协作请求"),
    ("contact.create", "新增联系人"),
    ("customer.create", "新建客户"),
    ("customer.update", "修改客户资料"),
    ("customer.assign", "指定客户负责人"),
    ("customer.unassign", "取消客户负责人"),
    ("customer.import", "从平台导入客户"),
    ("customer.external_id", "关联平台客户"),
    ("deal.create", "新建商机"),
    ("deal.update", "修改商机"),
    ("deal.advance", "推进商机阶段"),
    ("deal.rollback", "回退商机阶段"),
    ("deal.lost", "商机输单"),
    ("deal.reopen", "重新打开商机"),
    ("deal.advance_refused", "推进商机阶段被拒（条件未满足）"),
    ("deal.reassign", "转交商机"),
    ("directory.sync", "同步通讯录"),
    ("document.link", "生成文档外发链接"),
    ("job.retry", "重试后台任务"),
    ("job.run_now", "立即运行后台任务"),
    ("lead.create", "新建线索"),
    ("phone.mark_valid", "标记号码有效"),
    ("phone.mark_invalid", "标记号码无效"),
    ("point.record", "记录跟进动作"),
    ("rules.import", "启用新版规则"),
    ("user.create", "新增成员"),
    ("user.update", "修改成员角色或上级"),
    ("user.calendar_feed", "生成日历订阅链接"),
    ("webhook.create", "新建事件推送订阅"),
    ("webhook.deactivate", "停用事件推送订阅"),
];

/// The label of an action key, if closeloop writes it.
pub fn label(action: &str) -> Option<&'static str> {
    ACTIONS.iter().find(|(k, _)| *k == action).map(|(_, l)| *l)
}

/// What the page shows for an action: its label, or — for a key written before this
/// table knew it — a neutral word, never the key.
pub fn shown(action: &str) -> &'static str {
    label(action).unwrap_or("其他操作")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    /// Keys built with `format!` at a call site: the prefix and the values the code
    /// puts after it. A new `format!` prefix fails the test until it is listed here.
    const BUILT: &[(&str, &[&str])] = &[
        ("deal.", &["advance", "rollback", "lost", "reopen"]),
        ("attestation.", &["confirmed", "rejected"]),
        ("collab.", &["accept", "answer", "return"]),
    ];

    fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// Every `const NAME: &str = "…";` of the crate: keys passed by name.
    fn str_consts(texts: &[(PathBuf, String)]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (_, text) in texts {
            for line in text.lines() {
                let l = line.trim_start().trim_start_matches("pub ");
                let Some(rest) = l.strip_prefix("const ") else {
                    continue;
                };
                let Some((name, value)) = rest.split_once(": &str = \"") else {
                    continue;
                };
                if let Some(v) = value.strip_suffix("\";") {
                    out.push((name.trim().to_string(), v.to_string()));
                }
            }
        }
        out
    }

    fn is_key(s: &str) -> bool {
        let mut parts = s.split('.');
        let ok = |p: Option<&str>| {
            p.is_some_and(|p| {
                !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            })
        };
        ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
    }

    /// The keys one call writes: the string literals that look like keys, the consts it
    /// names, and `format!("prefix.{…}")` expanded by [`BUILT`]. A call with none of them
    /// is reported.
    fn keys_of_call(call: &str, consts: &[(String, String)]) -> Result<Vec<String>, String> {
        let mut keys = Vec::new();
        for (i, _) in call.match_indices("format!(\"") {
            let rest = &call[i + 9..];
            let prefix = &rest[..rest.find('{').unwrap_or(0)];
            if prefix.is_empty() || !prefix.ends_with('.') {
                continue;
            }
            let (_, values) = BUILT
                .iter()
                .find(|(p, _)| *p == prefix)
                .ok_or_else(|| format!("format!(\"{prefix}{{…}}\") is not listed in BUILT"))?;
            keys.extend(values.iter().map(|v| format!("{prefix}{v}")));
        }
        for lit in call.split('"').skip(1).step_by(2) {
            if is_key(lit) {
                keys.push(lit.to_string());
            }
        }
        for (name, value) in consts {
            let named = call.match_indices(name.as_str()).any(|(i, _)| {
                let before = call[..i].chars().last();
                let after = call[i + name.len()..].chars().next();
                !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            });
            if named && is_key(value) {
                keys.push(value.clone());
            }
        }
        if keys.is_empty() {
            return Err("no action key found in the call".into());
        }
        Ok(keys)
    }

    #[test]
    fn every_action_key_written_has_a_chinese_label() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&root, &mut files);
        let texts: Vec<(PathBuf, String)> = files
            .into_iter()
            .map(|p| {
                let t = std::fs::read_to_string(&p).unwrap();
                (p, t)
            })
            .collect();
        let consts = str_consts(&texts);
        let mut problems = Vec::new();
        let mut calls = 0;
        for (path, text) in &texts {
            if path.ends_with("access/mod.rs") || path.ends_with("access/audit_actions.rs") {
                continue; // the definitions of `Actor::audit` and this table
            }
            let code: String = text
                .lines()
                .map(|l| l.find("//").map_or(l, |i| &l[..i]))
                .collect::<Vec<_>>()
                .join("\n");
            for marker in [".audit(", "audit::record("] {
                for (i, _) in code.match_indices(marker) {
                    let rest = &code[i..];
                    let call = &rest[..rest.find(".await").unwrap_or(rest.len())];
                    calls += 1;
                    match keys_of_call(call, &consts) {
                        Ok(keys) => {
                            for k in keys {
                                if label(&k).is_none() {
                                    problems
                                        .push(format!("{}: `{k}` has no label", path.display()));
                                }
                            }
                        }
                        Err(e) => problems.push(format!("{}: {e}", path.display())),
                    }
                }
            }
        }
        assert!(calls > 30, "the scan found only {calls} audit calls");
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn labels_are_chinese_and_keys_unique() {
        let mut seen = std::collections::HashSet::new();
        for (k, l) in ACTIONS {
            assert!(seen.insert(*k), "{k} twice");
            assert!(crate::text::has_chinese(l), "{k}: {l}");
        }
        assert_eq!(shown("deal.advance"), "推进商机阶段");
        assert_eq!(shown("no.such"), "其他操作");
    }
}
