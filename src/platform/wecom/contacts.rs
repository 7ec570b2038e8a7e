//! 客户联系 on WeCom: `externalcontact/get` (PROTOCOLS.md §1.5) as the platform-neutral
//! [`Directory`] lookup.

use serde_json::Value;

use super::api::WecomApi;
use super::token::SecretKind;
use crate::jobs::{BoxFuture, JobError};
use crate::platform::{Directory, ExternalContact};

const GET: &str = "/cgi-bin/externalcontact/get";

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
}
