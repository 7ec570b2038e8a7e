//! The Feishu address book (contact v3) as the platform-neutral [`Directory`]: members by
//! `user_id`, with their first department and their direct superior (`leader_user_id`).
//!
//! Endpoints: `GET /open-apis/contact/v3/departments/:id/children` (with `fetch_child`) for
//! the department tree, `GET /open-apis/contact/v3/users/find_by_department` per department
//! (paged by `page_token`), `GET /open-apis/contact/v3/users/:user_id` for one member.

use std::collections::HashMap;

use serde_json::Value;

use super::token::FeishuApi;
use crate::chat::Member;
use crate::chat::{Directory, ExternalContact};
use crate::jobs::{BoxFuture, JobError};

pub const DEPARTMENT_CHILDREN: &str = "/open-apis/contact/v3/departments/0/children";
pub const USERS_BY_DEPARTMENT: &str = "/open-apis/contact/v3/users/find_by_department";
pub const USER: &str = "/open-apis/contact/v3/users";
/// The root department.
const ROOT: &str = "0";
/// Guards against a misbehaving `has_more` that never ends.
const MAX_PAGES: usize = 1000;

/// A member from contact v3; `departments` maps department ids to names. A resigned or
/// frozen member is not active.
pub fn parse_member(u: &Value, departments: &HashMap<String, String>) -> Option<Member> {
    let platform_id = text(&u["user_id"])?;
    let department = u["department_ids"]
        .as_array()
        .and_then(|d| d.iter().filter_map(text).find(|d| d != ROOT))
        .and_then(|d| departments.get(&d).cloned());
    let status = &u["status"];
    let active = !(status["is_resigned"] == true
        || status["is_frozen"] == true
        || status["is_exited"] == true);
    Some(Member {
        name: text(&u["name"]).unwrap_or_else(|| platform_id.clone()),
        platform_id,
        department,
        leaders: text(&u["leader_user_id"]).into_iter().collect(),
        active,
    })
}

fn text(v: &Value) -> Option<String> {
    v.as_str().filter(|s| !s.is_empty()).map(str::to_string)
}

/// The Feishu address book of one app.
pub struct FeishuDirectory {
    pub api: FeishuApi,
}

impl FeishuDirectory {
    /// Every page of a paged list: `data.items`, following `data.page_token` while
    /// `data.has_more`.
    async fn paged(&self, path: &str, query: &[(&str, &str)]) -> Result<Vec<Value>, JobError> {
        let mut items = Vec::new();
        let mut token = String::new();
        for _ in 0..MAX_PAGES {
            let mut q: Vec<(&str, &str)> = query.to_vec();
            q.push(("page_size", "50"));
            if !token.is_empty() {
                q.push(("page_token", &token));
            }
            let answer = self
                .api
                .call_json(reqwest::Method::GET, path, &q, None)
                .await?;
            let data = &answer["data"];
            items.extend(data["items"].as_array().cloned().unwrap_or_default());
            match (data["has_more"] == true, text(&data["page_token"])) {
                (true, Some(next)) => token = next,
                _ => return Ok(items),
            }
        }
        Err(JobError::Retry(format!("{path}: too many pages")))
    }

    async fn departments(&self) -> Result<HashMap<String, String>, JobError> {
        let items = self
            .paged(
                DEPARTMENT_CHILDREN,
                &[
                    ("fetch_child", "true"),
                    ("department_id_type", "department_id"),
                ],
            )
            .await?;
        Ok(items
            .iter()
            .filter_map(|d| Some((text(&d["department_id"])?, text(&d["name"])?)))
            .collect())
    }

    async fn all_members(&self) -> Result<Vec<Member>, JobError> {
        let departments = self.departments().await?;
        let mut ids: Vec<&str> = vec![ROOT];
        ids.extend(departments.keys().map(String::as_str));
        let mut seen = std::collections::HashSet::new();
        let mut members = Vec::new();
        for id in ids {
            let users = self
                .paged(
                    USERS_BY_DEPARTMENT,
                    &[
                        ("department_id", id),
                        ("user_id_type", "user_id"),
                        ("department_id_type", "department_id"),
                    ],
                )
                .await?;
            for u in &users {
                if let Some(m) = parse_member(u, &departments) {
                    if seen.insert(m.platform_id.clone()) {
                        members.push(m);
                    }
                }
            }
        }
        Ok(members)
    }

    async fn one_member(&self, user_id: &str) -> Result<Member, JobError> {
        let departments = self.departments().await?;
        let answer = self
            .api
            .call_json(
                reqwest::Method::GET,
                &format!("{USER}/{user_id}"),
                &[
                    ("user_id_type", "user_id"),
                    ("department_id_type", "department_id"),
                ],
                None,
            )
            .await?;
        parse_member(&answer["data"]["user"], &departments)
            .ok_or_else(|| JobError::GiveUp("contact v3: the member has no user_id".into()))
    }
}

impl Directory for FeishuDirectory {
    /// closeloop reads no external contacts on Feishu: customers come in through the API or
    /// another platform (docs/protocols/feishu.md#call-and-meeting-records).
    fn external_contact<'a>(
        &'a self,
        _external_user_id: &'a str,
        _follow_user: &'a str,
    ) -> BoxFuture<'a, Result<ExternalContact, JobError>> {
        Box::pin(async {
            Err(JobError::GiveUp(
                "Feishu has no external contacts to look up".into(),
            ))
        })
    }

    fn members(&self) -> BoxFuture<'_, Result<Vec<Member>, JobError>> {
        Box::pin(self.all_members())
    }

    fn member<'a>(&'a self, platform_id: &'a str) -> BoxFuture<'a, Result<Member, JobError>> {
        Box::pin(self.one_member(platform_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn members_carry_department_and_leader() {
        let deps: HashMap<String, String> = [("D1".to_string(), "华南销售部".to_string())].into();
        let m = parse_member(
            &json!({"user_id": "liming", "name": "李明", "department_ids": ["D1"],
                    "leader_user_id": "wangzong", "status": {"is_resigned": false}}),
            &deps,
        )
        .unwrap();
        assert_eq!(m.department.as_deref(), Some("华南销售部"));
        assert_eq!(m.leaders, vec!["wangzong".to_string()]);
        assert!(m.active);
        let left = parse_member(
            &json!({"user_id": "x", "status": {"is_resigned": true}}),
            &deps,
        )
        .unwrap();
        assert!(!left.active && left.leaders.is_empty() && left.name == "x");
        assert!(parse_member(&json!({"open_id": "ou_1"}), &deps).is_none());
    }
}
