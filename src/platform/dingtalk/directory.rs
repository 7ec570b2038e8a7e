//! The DingTalk address book as a [`Directory`]: departments (`topapi/v2/department/listsub`
//! from the root department 1), members per department (`topapi/v2/user/list`, paged), one
//! member (`topapi/v2/user/get`), and each member's manager (`manager_userid`).

use std::collections::{HashMap, HashSet};

use serde_json::{json, Value};

use super::api::DingtalkApi;
use crate::chat::Member;
use crate::chat::{Directory, ExternalContact};
use crate::jobs::{BoxFuture, JobError};

pub const DEPARTMENTS: &str = "/topapi/v2/department/listsub";
pub const USERS: &str = "/topapi/v2/user/list";
pub const USER: &str = "/topapi/v2/user/get";
const ROOT_DEPARTMENT: i64 = 1;
const PAGE_SIZE: i64 = 100;

/// A member from a `user/get` or `user/list` entry; `departments` names department ids.
pub fn parse_member(u: &Value, departments: &HashMap<i64, String>) -> Option<Member> {
    let platform_id = text(&u["userid"])?;
    let department = u["dept_id_list"]
        .as_array()
        .and_then(|d| d.first())
        .and_then(Value::as_i64)
        .and_then(|d| departments.get(&d).cloned());
    Some(Member {
        name: text(&u["name"]).unwrap_or_else(|| platform_id.clone()),
        platform_id,
        department,
        leaders: text(&u["manager_userid"]).into_iter().collect(),
        active: u["active"].as_bool().unwrap_or(true),
    })
}

fn text(v: &Value) -> Option<String> {
    v.as_str().filter(|s| !s.is_empty()).map(str::to_string)
}

impl DingtalkApi {
    /// Every department id with its name, walking down from the root.
    async fn departments(&self) -> Result<HashMap<i64, String>, JobError> {
        let mut names = HashMap::new();
        let mut queue = vec![ROOT_DEPARTMENT];
        let mut seen = HashSet::from([ROOT_DEPARTMENT]);
        while let Some(parent) = queue.pop() {
            let answer = self
                .call_oapi(DEPARTMENTS, &json!({ "dept_id": parent }))
                .await?;
            for d in answer["result"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let Some(id) = d["dept_id"].as_i64() else {
                    continue;
                };
                if let Some(name) = text(&d["name"]) {
                    names.insert(id, name);
                }
                if seen.insert(id) {
                    queue.push(id);
                }
            }
        }
        Ok(names)
    }
}

impl Directory for DingtalkApi {
    fn external_contact<'a>(
        &'a self,
        _external_user_id: &'a str,
        _follow_user: &'a str,
    ) -> BoxFuture<'a, Result<ExternalContact, JobError>> {
        // External-contact events and APIs are for ISV apps
        // (docs/protocols/dingtalk.md#call-meeting-and-contact-records); an internal app has
        // none to look up.
        Box::pin(async {
            Err(JobError::GiveUp(
                "DingTalk external contacts are not available to an internal app".into(),
            ))
        })
    }

    fn members(&self) -> BoxFuture<'_, Result<Vec<Member>, JobError>> {
        Box::pin(async move {
            let departments = self.departments().await?;
            let mut ids: Vec<i64> = departments.keys().copied().collect();
            ids.push(ROOT_DEPARTMENT);
            ids.sort_unstable();
            let mut seen = HashSet::new();
            let mut members = Vec::new();
            for dept in ids {
                let mut cursor = 0;
                loop {
                    let answer = self
                        .call_oapi(
                            USERS,
                            &json!({"dept_id": dept, "cursor": cursor, "size": PAGE_SIZE}),
                        )
                        .await?;
                    let result = &answer["result"];
                    for u in result["list"]
                        .as_array()
                        .map(Vec::as_slice)
                        .unwrap_or_default()
                    {
                        if let Some(m) = parse_member(u, &departments) {
                            if seen.insert(m.platform_id.clone()) {
                                members.push(m);
                            }
                        }
                    }
                    match result["next_cursor"].as_i64() {
                        Some(next) if result["has_more"].as_bool() == Some(true) => cursor = next,
                        _ => break,
                    }
                }
            }
            Ok(members)
        })
    }

    fn member<'a>(&'a self, platform_id: &'a str) -> BoxFuture<'a, Result<Member, JobError>> {
        Box::pin(async move {
            let departments = self.departments().await?;
            let answer = self
                .call_oapi(USER, &json!({ "userid": platform_id }))
                .await?;
            parse_member(&answer["result"], &departments)
                .ok_or_else(|| JobError::GiveUp("user/get: no userid".into()))
        })
    }
}
