//! 客户联系 on WeCom: `externalcontact/get`
//! (docs/protocols/wecom.md#reading-a-customer-externalcontactget) as the platform-neutral
//! [`Directory`] lookup.

use serde_json::Value;

use super::api::WecomApi;
use super::token::SecretKind;
use crate::chat::Member;
use crate::chat::{Directory, ExternalContact};
use crate::jobs::{BoxFuture, JobError};

const GET: &str = "/cgi-bin/externalcontact/get";
const DEPARTMENTS: &str = "/cgi-bin/department/list";
const USERS: &str = "/cgi-bin/user/list";
const USER: &str = "/cgi-bin/user/get";

/// A member from `user/list` or `user/get`; `departments` maps department ids to names.
/// Status 1 is active; disabled (2), not activated (4) and left (5) are not.
pub fn parse_member(
    u: &Value,
    departments: &std::collections::HashMap<i64, String>,
) -> Option<Member> {
    let platform_id = text(&u["userid"])?;
    let department = u["main_department"]
        .as_i64()
        .or_else(|| {
            u["department"]
                .as_array()
                .and_then(|d| d.first())
                .and_then(Value::as_i64)
        })
        .and_then(|d| departments.get(&d).cloned());
    Some(Member {
        name: text(&u["name"]).unwrap_or_else(|| platform_id.clone()),
        platform_id,
        department,
        leaders: u["direct_leader"]
            .as_array()
            .map(|l| l.iter().filter_map(text).collect())
            .unwrap_or_default(),
        active: u["status"].as_i64().unwrap_or(1) == 1,
    })
}

fn text(v: &Value) -> Option<String> {
    v.as_str().filter(|s| !s.is_empty()).map(str::to_string)
}

/// Reads an `externalcontact/get` answer; the phones are the ones `follow_user` noted.
pub fn parse(response: &Value, follow_user: &str) -> Result<ExternalContact, JobError> {
    let ec = &response["external_contact"];
    let external_user_id = text(&ec["external_userid"])
        .ok_or_else(|| JobError::GiveUp("externalcontact/get: no external_userid".into()))?;
    let phones = response["follow_user"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|f| f["userid"].as_str() == Some(follow_user))
        .flat_map(|f| f["remark_mobiles"].as_array().cloned().unwrap_or_default())
        .filter_map(|m| text(&m))
        .collect();
    Ok(ExternalContact {
        name: text(&ec["name"]).unwrap_or_else(|| external_user_id.clone()),
        external_user_id,
        corp_name: text(&ec["corp_full_name"]).or_else(|| text(&ec["corp_name"])),
        position: text(&ec["position"]),
        phones,
    })
}

impl Directory for WecomApi {
    fn external_contact<'a>(
        &'a self,
        external_user_id: &'a str,
        follow_user: &'a str,
    ) -> BoxFuture<'a, Result<ExternalContact, JobError>> {
        Box::pin(async move {
            let response = self
                .get(
                    SecretKind::Contact,
                    GET,
                    &[("external_userid", external_user_id)],
                )
                .await?;
            parse(&response, follow_user)
        })
    }

    fn members(&self) -> BoxFuture<'_, Result<Vec<Member>, JobError>> {
        Box::pin(async move {
            let departments = self.departments().await?;
            let list = self
                .get(
                    SecretKind::App,
                    USERS,
                    &[("department_id", "1"), ("fetch_child", "1")],
                )
                .await?;
            Ok(list["userlist"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter_map(|u| parse_member(u, &departments))
                .collect())
        })
    }

    fn member<'a>(&'a self, platform_id: &'a str) -> BoxFuture<'a, Result<Member, JobError>> {
        Box::pin(async move {
            let departments = self.departments().await?;
            let u = self
                .get(SecretKind::App, USER, &[("userid", platform_id)])
                .await?;
            parse_member(&u, &departments)
                .ok_or_else(|| JobError::GiveUp("user/get: no userid".into()))
        })
    }
}

impl WecomApi {
    async fn departments(&self) -> Result<std::collections::HashMap<i64, String>, JobError> {
        let list = self.get(SecretKind::App, DEPARTMENTS, &[]).await?;
        Ok(list["department"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|d| Some((d["id"].as_i64()?, text(&d["name"])?)))
            .collect())
    }
}
