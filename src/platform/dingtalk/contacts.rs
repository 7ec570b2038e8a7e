//! The organisation's external-contact book on DingTalk (外部联系人, permission
//! `qyapi_ext_read`) as the [`ContactBook`] the import reads: `POST topapi/extcontact/list`
//! `{offset, size}` pages through the whole book (at most 100 a page, no cursor: a short
//! page is the last), and `topapi/extcontact/get` `{user_id}` reads one contact
//! (docs/protocols/dingtalk.md#call-meeting-and-contact-records).
//!
//! Unlike WeCom, the book is shared by the organisation: each contact names one
//! `follower_user_id` (负责人), who becomes the customer's owner. There is no listing per
//! member, so a page keeps the contacts whose follower is one of the members asked about.

use serde_json::{json, Value};

use super::api::DingtalkApi;
use crate::chat::ExternalContact;
use crate::customers::import::{ContactBook, ContactPage, Followed};
use crate::jobs::{BoxFuture, JobError};

pub const LIST: &str = "/topapi/extcontact/list";
pub const GET: &str = "/topapi/extcontact/get";
/// The largest page `extcontact/list` answers.
pub const PAGE_SIZE: u64 = 100;
/// China's calling code: numbers with it (or with none) are kept as the platform gives them.
const CHINA: &str = "86";

fn text(v: &Value) -> Option<String> {
    v.as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// A contact of the book, or None without its `userid`. A number with a calling code other
/// than China's is written `+code number`, so it is normalised as the foreign number it is.
pub fn parse_contact(c: &Value) -> Option<ExternalContact> {
    let external_user_id = text(&c["userid"])?;
    let phones = text(&c["mobile"])
        .map(|m| match text(&c["state_code"]) {
            Some(code) if code != CHINA && !m.starts_with('+') => format!("+{code}{m}"),
            _ => m,
        })
        .into_iter()
        .collect();
    Some(ExternalContact {
        name: text(&c["name"]).unwrap_or_else(|| external_user_id.clone()),
        external_user_id,
        corp_name: text(&c["company_name"]),
        position: text(&c["title"]),
        phones,
    })
}

impl ContactBook for DingtalkApi {
    /// The book is not listed per member: every contact comes from the pages.
    fn contacts_of<'a>(&'a self, _member: &'a str) -> BoxFuture<'a, Result<Vec<String>, JobError>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    fn page<'a>(
        &'a self,
        members: &'a [String],
        cursor: Option<&'a str>,
    ) -> BoxFuture<'a, Result<ContactPage, JobError>> {
        Box::pin(async move {
            let offset: u64 = match cursor {
                Some(c) => c
                    .parse()
                    .map_err(|_| JobError::GiveUp(format!("bad page offset `{c}`")))?,
                None => 0,
            };
            let answer = self
                .call_oapi(LIST, &json!({"offset": offset, "size": PAGE_SIZE}))
                .await?;
            let results = answer["results"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            let items = results
                .iter()
                .filter_map(|c| {
                    let member = text(&c["follower_user_id"])?;
                    if !members.contains(&member) {
                        return None;
                    }
                    Some(Followed {
                        contact: parse_contact(c)?,
                        member,
                        added_at: None,
                    })
                })
                .collect();
            let full = results.len() as u64 >= PAGE_SIZE;
            Ok(ContactPage {
                items,
                next_cursor: full.then(|| (offset + PAGE_SIZE).to_string()),
            })
        })
    }

    fn contact<'a>(
        &'a self,
        external_user_id: &'a str,
        _member: &'a str,
    ) -> BoxFuture<'a, Result<ExternalContact, JobError>> {
        Box::pin(async move {
            let answer = self
                .call_oapi(GET, &json!({"user_id": external_user_id}))
                .await?;
            parse_contact(&answer["result"]).ok_or_else(|| {
                JobError::GiveUp(format!("extcontact/get: no contact `{external_user_id}`"))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_foreign_number_keeps_its_calling_code() {
        let c = parse_contact(
            &json!({"userid": "e1", "name": "李工", "mobile": "91234567",
            "state_code": "852", "company_name": "港岛贸易", "title": "采购"}),
        )
        .unwrap();
        assert_eq!(c.phones, vec!["+85291234567"]);
        assert_eq!(c.corp_name.as_deref(), Some("港岛贸易"));
        let c =
            parse_contact(&json!({"userid": "e2", "mobile": "13800138000", "state_code": "86"}))
                .unwrap();
        assert_eq!(c.phones, vec!["13800138000"]);
        assert_eq!(c.name, "e2");
        assert!(parse_contact(&json!({"name": "无编号"})).is_none());
    }
}
