//! 客户联系 on WeCom: `externalcontact/get`
//! (docs/protocols/wecom.md#reading-a-customer-externalcontactget) as the platform-neutral
//! [`Directory`] lookup, and `externalcontact/list` + `externalcontact/batch/get_by_user`
//! (docs/protocols/wecom.md#listing-customers-externalcontactlist-and-batchget_by_user) as the
//! [`ContactBook`] the import reads.

use serde_json::Value;

use super::api::WecomApi;
use super::token::SecretKind;
use crate::chat::Member;
use crate::chat::{Directory, ExternalContact};
use crate::customers::import::{ContactBook, ContactPage, Followed};
use crate::jobs::{BoxFuture, JobError};

const GET: &str = "/cgi-bin/externalcontact/get";
const LIST: &str = "/cgi-bin/externalcontact/list";
const BATCH: &str = "/cgi-bin/externalcontact/batch/get_by_user";
/// `batch/get_by_user` answers at most 100 customers a page.
const BATCH_LIMIT: usize = 100;
/// "不存在外部联系人的关系": what `externalcontact/list` answers for a member without customers.
const NO_CUSTOMERS: i64 = 84061;
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
        .flat_map(noted_numbers)
        .collect();
    Ok(contact_from(ec, external_user_id, phones))
}

/// The numbers a member noted for the customer (`remark_mobiles` of their follow entry).
fn noted_numbers(follow: &Value) -> Vec<String> {
    follow["remark_mobiles"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(text)
        .collect()
}

fn contact_from(ec: &Value, external_user_id: String, phones: Vec<String>) -> ExternalContact {
    ExternalContact {
        name: text(&ec["name"]).unwrap_or_else(|| external_user_id.clone()),
        external_user_id,
        corp_name: text(&ec["corp_full_name"]).or_else(|| text(&ec["corp_name"])),
        position: text(&ec["position"]),
        phones,
    }
}

/// Reads one `batch/get_by_user` page: `external_contact_list[]` of { `external_contact`,
/// `follow_info` } and `next_cursor` (empty on the last page).
pub fn parse_batch(response: &Value) -> Result<ContactPage, JobError> {
    let items = response["external_contact_list"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|item| {
            let ec = &item["external_contact"];
            let follow = &item["follow_info"];
            let external_user_id = text(&ec["external_userid"]).ok_or_else(|| {
                JobError::GiveUp("externalcontact/batch/get_by_user: no external_userid".into())
            })?;
            let member = text(&follow["userid"]).ok_or_else(|| {
                JobError::GiveUp("externalcontact/batch/get_by_user: no follow_info.userid".into())
            })?;
            Ok(Followed {
                contact: contact_from(ec, external_user_id, noted_numbers(follow)),
                member,
                added_at: follow["createtime"].as_i64(),
            })
        })
        .collect::<Result<Vec<_>, JobError>>()?;
    Ok(ContactPage {
        items,
        next_cursor: text(&response["next_cursor"]),
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

impl ContactBook for WecomApi {
    fn contacts_of<'a>(&'a self, member: &'a str) -> BoxFuture<'a, Result<Vec<String>, JobError>> {
        Box::pin(async move {
            let response = match self
                .get(SecretKind::Contact, LIST, &[("userid", member)])
                .await
            {
                Ok(r) => r,
                Err(JobError::GiveUp(m)) if m.contains(&format!("errcode {NO_CUSTOMERS}:")) => {
                    return Ok(Vec::new())
                }
                Err(e) => return Err(e),
            };
            Ok(response["external_userid"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter_map(text)
                .collect())
        })
    }

    fn page<'a>(
        &'a self,
        members: &'a [String],
        cursor: Option<&'a str>,
    ) -> BoxFuture<'a, Result<ContactPage, JobError>> {
        Box::pin(async move {
            let body = serde_json::json!({
                "userid_list": members,
                "cursor": cursor.unwrap_or_default(),
                "limit": BATCH_LIMIT,
            });
            let response = self.call_json(SecretKind::Contact, BATCH, &body).await?;
            parse_batch(&response)
        })
    }

    fn contact<'a>(
        &'a self,
        external_user_id: &'a str,
        member: &'a str,
    ) -> BoxFuture<'a, Result<ExternalContact, JobError>> {
        self.external_contact(external_user_id, member)
    }
}
