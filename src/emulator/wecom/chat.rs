//! The chat view: the members' chat clients as pages. `/chat` lists the members, `/chat/{userid}`
//! shows the cards `message/send` delivered to one of them (with what `update_template_card`
//! changed), and a button pressed there reaches closeloop as WeCom's own signed, encrypted
//! `template_card_event`. The member's page also places 公费电话 calls (records for
//! `dial/get_dial_record`), adds external contacts (WeCom's `change_external_contact`
//! callback), and opens the app's links and chat toolbar signed in as that member.

use super::*;

/// Escapes text for HTML element content and quoted attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A path segment or query value, percent-encoded.
fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A CDATA section holding `s`, even when `s` contains `]]>`.
fn cdata(s: &str) -> String {
    format!("<![CDATA[{}]]>", s.replace("]]>", "]]]]><![CDATA[>"))
}

/// A JSON string or number as text (WeCom sends ids either way).
fn json_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Beijing time, as the members' clients show it.
fn local_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| {
            t.with_timezone(&chrono_tz::Asia::Shanghai)
                .format("%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_default()
}

/// Whether `message` (a `message/send` body) went to `userid`.
fn received_by(message: &Value, userid: &str) -> bool {
    let to = message["touser"].as_str().unwrap_or_default();
    to == "@all" || to.split('|').any(|u| u == userid)
}

/// The value of `name` in an `application/x-www-form-urlencoded` body.
fn form_value(body: &[u8], name: &str) -> Option<String> {
    String::from_utf8_lossy(body).split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        (decode(k) == name).then(|| decode(v))
    })
}

/// An external contact a member follows, as the member's client lists it.
struct FollowedContact {
    external_userid: String,
    name: String,
    corp: Option<String>,
    /// The first number the member noted (`remark_mobiles`).
    phone: Option<String>,
}

/// A number with its middle hidden, as the chat view shows it: `138****8000`.
fn masked(phone: &str) -> String {
    let chars: Vec<char> = phone.chars().filter(|c| !c.is_whitespace()).collect();
    if chars.len() < 8 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}****{tail}")
}

/// Talk time in Chinese: `5分0秒`.
fn talk_time(seconds: i64) -> String {
    format!("{}分{}秒", seconds / 60, seconds % 60)
}

/// The most talk time a call placed in the chat view may have: four hours.
const MAX_CALL_MINUTES: i64 = 240;

impl EmulatorState {
    /// Whether `userid` is in the directory.
    fn is_member(&self, userid: &str) -> bool {
        self.users
            .iter()
            .any(|u| json_text(&u["userid"]).as_deref() == Some(userid))
    }

    /// The external contacts `userid` follows, oldest first.
    fn contacts_of(&self, userid: &str) -> Vec<FollowedContact> {
        let mut found: Vec<(i64, FollowedContact)> = self
            .external_contacts
            .iter()
            .filter_map(|(id, entry)| {
                let follow = entry["follow_user"]
                    .as_array()?
                    .iter()
                    .find(|f| f["userid"] == userid)?;
                let contact = &entry["external_contact"];
                Some((
                    follow["createtime"].as_i64().unwrap_or_default(),
                    FollowedContact {
                        external_userid: id.clone(),
                        name: json_text(&contact["name"]).unwrap_or_else(|| id.clone()),
                        corp: json_text(&contact["corp_name"]),
                        phone: follow["remark_mobiles"]
                            .as_array()
                            .and_then(|m| m.iter().find_map(json_text)),
                    },
                ))
            })
            .collect();
        found.sort_by(|a, b| (a.0, &a.1.external_userid).cmp(&(b.0, &b.1.external_userid)));
        found.into_iter().map(|(_, c)| c).collect()
    }

    /// The chat view's address that opens `url` as `userid` (see [`chat_open`]).
    fn opened_as(&self, userid: &str, url: &str) -> String {
        format!("{CHAT}/{}/open?to={}", enc(userid), enc(url))
    }

    /// The members the chat view lists: the directory's, in its order, then anyone else a
    /// message went to. Each with their name when the directory has it.
    fn chat_members(&self) -> Vec<(String, Option<String>)> {
        let mut out: Vec<(String, Option<String>)> = self
            .users
            .iter()
            .filter_map(|u| Some((json_text(&u["userid"])?, json_text(&u["name"]))))
            .collect();
        let mut others: Vec<String> = self
            .messages
            .iter()
            .flat_map(|m| {
                m["touser"]
                    .as_str()
                    .unwrap_or_default()
                    .split('|')
                    .filter(|u| !u.is_empty() && *u != "@all")
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .filter(|u| !out.iter().any(|(known, _)| known == u))
            .collect();
        others.sort();
        others.dedup();
        out.extend(others.into_iter().map(|u| (u, None)));
        out
    }

    /// The last `update_template_card` that changed card `task_id` for `userid`.
    fn last_update(&self, task_id: &str, userid: &str) -> Option<&Value> {
        self.card_updates.iter().rev().find(|u| {
            let code = u["response_code"].as_str().unwrap_or_default();
            let for_user = u["userids"]
                .as_array()
                .is_none_or(|ids| ids.is_empty() || ids.iter().any(|i| i == userid));
            self.code_tasks.get(code).is_some_and(|t| t == task_id) && for_user
        })
    }

    /// A card still waiting for `userid`'s answer: it has callback buttons, nobody has
    /// updated it, and they have not pressed one.
    fn awaits_click(&self, message: &Value, userid: &str) -> bool {
        let card = &message["template_card"];
        let Some(task_id) = card["task_id"].as_str() else {
            return false;
        };
        let has_buttons = card["button_list"]
            .as_array()
            .is_some_and(|b| b.iter().any(|b| b["type"].as_i64().unwrap_or(0) == 0));
        has_buttons
            && self.last_update(task_id, userid).is_none()
            && !self
                .chat_clicks
                .iter()
                .any(|c| c.task_id == task_id && c.userid == userid)
    }
}

const CHAT_CSS: &str = "body{font-family:-apple-system,'PingFang SC','Microsoft YaHei',sans-serif;\
background:#ededed;margin:0;padding:16px;color:#222}main{max-width:640px;margin:0 auto}\
h1{font-size:20px}a{color:#1a5fb4}.banner{background:#fff8e1;border:1px solid #f0d58c;padding:8px 12px;\
border-radius:6px;font-size:13px}.notice{padding:8px 12px;border-radius:6px;background:#e7f6ec;\
border:1px solid #9fd6b0}.notice.error{background:#fdecea;border-color:#f2a8a0}\
ul.members{list-style:none;padding:0}ul.members li{background:#fff;margin:6px 0;padding:10px 12px;\
border-radius:6px}.meta{color:#777;font-size:12px}.card{background:#fff;border-radius:8px;\
margin:12px 0;padding:12px 14px;box-shadow:0 1px 2px rgba(0,0,0,.08)}.card h2{font-size:16px;\
margin:6px 0}.card dl{display:grid;grid-template-columns:6em 1fr;gap:4px 8px;font-size:14px;margin:8px 0}\
.card dt{color:#777}.card dd{margin:0}.buttons{display:flex;flex-wrap:wrap;gap:8px;margin-top:10px}\
.buttons form{margin:0}button,.linkbutton{font-size:14px;padding:6px 14px;border-radius:4px;\
border:1px solid #ccc;background:#f7f7f7;cursor:pointer;text-decoration:none;color:#222}\
.s1{background:#1a73e8;border-color:#1a73e8;color:#fff}.s3{color:#d93025;border-color:#d93025}\
.s4{background:#d93025;border-color:#d93025;color:#fff}button[disabled]{background:#eee;color:#999;\
border-color:#ddd;cursor:default}.updated{font-size:13px;color:#8a6d00}\
.card h3{font-size:14px;margin:12px 0 6px}ul.contacts,ul.calls{padding-left:18px;font-size:14px}\
ul.contacts li{margin:6px 0}form.tool{border-top:1px solid #eee;padding-top:4px}\
form.tool label{display:inline-block;margin:4px 10px 4px 0;font-size:14px}\
form.tool input[type=number]{width:4.5em}";

/// An HTML page of the chat view.
fn chat_page(status: StatusCode, title: &str, refresh: Option<&str>, body: &str) -> Response {
    let refresh = refresh
        .map(|to| {
            format!(
                "<meta http-equiv=\"refresh\" content=\"2;url={}\">",
                esc(to)
            )
        })
        .unwrap_or_default();
    let html = format!(
        "<!doctype html>\n<html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">{refresh}\
         <title>{}</title><style>{CHAT_CSS}</style></head>\n<body><main>\n{body}</main></body></html>\n",
        esc(title)
    );
    (
        status,
        [
            (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (axum::http::header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}

fn chat_error(status: StatusCode, message: &str) -> Response {
    chat_page(
        status,
        "模拟企业微信",
        None,
        &format!(
            "<h1>模拟企业微信</h1>\n<p class=\"notice error\">{}</p>\n<p><a href=\"{CHAT}\">返回成员列表</a></p>\n",
            esc(message)
        ),
    )
}

/// `GET /chat`: the members, each with how many cards they received and how many still
/// wait for an answer.
pub(super) async fn chat_members(State(shared): State<Arc<Shared>>) -> Response {
    let state = shared.lock();
    let mut body = String::from(
        "<h1>模拟企业微信 · 成员消息</h1>\n<p class=\"banner\">这里是内置的企业微信模拟器：\
         每位成员收到的卡片都可以阅读和点击，点击会以企业微信的签名与加密方式回调 closeloop。\
         打开一位成员，还可以拨打公费电话、添加客户，并以该成员的身份打开卡片链接和聊天侧边栏。</p>\n",
    );
    let members = state.chat_members();
    if members.is_empty() {
        body.push_str("<p class=\"meta\">还没有成员。</p>\n");
    } else {
        body.push_str("<ul class=\"members\">\n");
        for (userid, name) in &members {
            let received: Vec<&Value> = state
                .messages
                .iter()
                .filter(|m| received_by(m, userid))
                .collect();
            let waiting = received
                .iter()
                .filter(|m| state.awaits_click(m, userid))
                .count();
            let waiting = if waiting > 0 {
                format!("，<strong>{waiting} 张待处理</strong>")
            } else {
                String::new()
            };
            body.push_str(&format!(
                "<li><a href=\"{CHAT}/{}\">{}</a> <span class=\"meta\">{}</span><br>\
                 <span class=\"meta\">收到 {} 条消息{waiting}</span></li>\n",
                enc(userid),
                esc(name.as_deref().unwrap_or(userid)),
                esc(userid),
                received.len(),
            ));
        }
        body.push_str("</ul>\n");
    }
    drop(state);
    chat_page(StatusCode::OK, "模拟企业微信 · 成员消息", None, &body)
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct ChatQuery {
    /// The statuses of a click's delivery attempts, after the click's redirect.
    delivered: Option<String>,
    /// The talk time (seconds) of the call just placed, after the call's redirect.
    called: Option<i64>,
    /// The statuses of the contact callback's delivery attempts, after adding a contact.
    added: Option<String>,
}

/// `GET /chat/{userid}`: what the member received, newest first.
pub(super) async fn chat_member(
    State(shared): State<Arc<Shared>>,
    Path(userid): Path<String>,
    Query(query): Query<ChatQuery>,
) -> Response {
    let state = shared.lock();
    let members = state.chat_members();
    let Some((_, name)) = members.iter().find(|(u, _)| *u == userid) else {
        return chat_error(
            StatusCode::NOT_FOUND,
            "没有这位成员，也没有发给 TA 的消息。",
        );
    };
    let display = name.as_deref().unwrap_or(&userid);
    let mut body = format!(
        "<p><a href=\"{CHAT}\">← 全部成员</a> · <a href=\"{CHAT}/{}\">刷新</a></p>\n\
         <h1>{} <span class=\"meta\">{}</span></h1>\n",
        enc(&userid),
        esc(display),
        esc(&userid)
    );
    if let Some(delivered) = &query.delivered {
        if delivered.split(',').next_back() == Some("200") {
            body.push_str(
                "<p class=\"notice\">已点击：回调已送达 closeloop（HTTP 200）。卡片更新稍后显示。</p>\n",
            );
        } else {
            body.push_str(&format!(
                "<p class=\"notice error\">回调未被接受，各次尝试的 HTTP 状态：{}（0 表示无应答）</p>\n",
                esc(delivered)
            ));
        }
    }
    if let Some(seconds) = query.called {
        body.push_str(&format!(
            "<p class=\"notice\">已拨打公费电话，通话{}。企业微信已生成通话记录（dial/get_dial_record 可查）；\
             closeloop 拉取通话记录后即核验侧边栏里的「已电话沟通」。</p>\n",
            talk_time(seconds)
        ));
    }
    if let Some(added) = &query.added {
        if added.split(',').next_back() == Some("200") {
            body.push_str(
                "<p class=\"notice\">已添加客户：企业微信已回调 closeloop（add_external_contact，HTTP 200），\
                 客户稍后出现在侧边栏的客户列表里。</p>\n",
            );
        } else {
            body.push_str(&format!(
                "<p class=\"notice error\">客户已添加，但回调未被接受，各次尝试的 HTTP 状态：{}（0 表示无应答）</p>\n",
                esc(added)
            ));
        }
    }
    if state.is_member(&userid) {
        body.push_str(&member_tools(&state, &userid));
    }
    let received: Vec<(usize, &Value)> = state
        .messages
        .iter()
        .enumerate()
        .filter(|(_, m)| received_by(m, &userid))
        .collect();
    if received.is_empty() {
        body.push_str("<p class=\"meta\">还没有收到消息。</p>\n");
    }
    for (i, message) in received.into_iter().rev() {
        let at = state.message_times.get(i).copied().unwrap_or_default();
        body.push_str(&message_html(&state, &userid, at, message));
    }
    drop(state);
    let refresh = query
        .delivered
        .as_ref()
        .map(|_| format!("{CHAT}/{}", enc(&userid)));
    chat_page(
        StatusCode::OK,
        &format!("模拟企业微信 · {display}"),
        refresh.as_deref(),
        &body,
    )
}

/// One received message as the member's client would show it.
fn message_html(state: &EmulatorState, userid: &str, at_ms: i64, message: &Value) -> String {
    let when = local_time(at_ms);
    match message["msgtype"].as_str().unwrap_or_default() {
        "template_card" => card_html(state, userid, &when, &message["template_card"]),
        "text" => format!(
            "<section class=\"card\"><p class=\"meta\">{when} · 文本消息</p><p>{}</p></section>\n",
            esc(message["text"]["content"].as_str().unwrap_or_default())
        ),
        other => format!(
            "<section class=\"card\"><p class=\"meta\">{when} · {} 消息（模拟器不显示此类消息）</p></section>\n",
            esc(other)
        ),
    }
}

/// A template card: source, title, description, fields, the card's link, and its buttons
/// as forms that press them — or, once `update_template_card` replaced them, the text
/// they were replaced with.
fn card_html(state: &EmulatorState, userid: &str, when: &str, sent: &Value) -> String {
    let task_id = sent["task_id"].as_str().unwrap_or_default();
    let update = state.last_update(task_id, userid);
    let card = update
        .and_then(|u| u.get("template_card"))
        .filter(|c| c.is_object())
        .unwrap_or(sent);
    let mut out = format!(
        "<section class=\"card\" data-task-id=\"{}\">\n<p class=\"meta\">{} · {when}</p>\n",
        esc(task_id),
        esc(card["source"]["desc"].as_str().unwrap_or("应用消息"))
    );
    out.push_str(&format!(
        "<h2>{}</h2>\n",
        esc(card["main_title"]["title"].as_str().unwrap_or_default())
    ));
    for text in [&card["main_title"]["desc"], &card["sub_title_text"]] {
        if let Some(t) = text.as_str().filter(|t| !t.is_empty()) {
            out.push_str(&format!("<p>{}</p>\n", esc(t)));
        }
    }
    if let Some(fields) = card["horizontal_content_list"]
        .as_array()
        .filter(|f| !f.is_empty())
    {
        out.push_str("<dl>\n");
        for f in fields {
            out.push_str(&format!(
                "<dt>{}</dt><dd>{}</dd>\n",
                esc(f["keyname"].as_str().unwrap_or_default()),
                esc(f["value"].as_str().unwrap_or_default())
            ));
        }
        out.push_str("</dl>\n");
    }
    if let Some(url) = card["card_action"]["url"]
        .as_str()
        .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
    {
        out.push_str(&format!(
            "<p><a href=\"{}\" target=\"_blank\" rel=\"noopener\">查看详情（点击卡片打开的页面）</a></p>\n",
            esc(&state.opened_as(userid, url))
        ));
    }
    let replaced = update.and_then(|u| u["button"]["replace_name"].as_str());
    let buttons = card["button_list"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if let Some(name) = replaced {
        out.push_str(&format!(
            "<div class=\"buttons\"><button type=\"button\" disabled>{}</button></div>\n\
             <p class=\"updated\">卡片已由 closeloop 更新（update_template_card），按钮替换为「{}」</p>\n",
            esc(name),
            esc(name)
        ));
    } else if !buttons.is_empty() {
        out.push_str("<div class=\"buttons\">\n");
        for b in buttons {
            let text = esc(b["text"].as_str().unwrap_or_default());
            let style = b["style"].as_i64().unwrap_or(2);
            match (b["type"].as_i64().unwrap_or(0), b["url"].as_str()) {
                (1, Some(url)) if url.starts_with("http://") || url.starts_with("https://") => {
                    out.push_str(&format!(
                        "<a class=\"linkbutton s{style}\" href=\"{}\" target=\"_blank\" rel=\"noopener\">{text}</a>\n",
                        esc(&state.opened_as(userid, url))
                    ))
                }
                (1, _) => {}
                _ => out.push_str(&format!(
                    "<form method=\"post\" action=\"{CHAT}/{}/click\">\
                     <input type=\"hidden\" name=\"task_id\" value=\"{}\">\
                     <input type=\"hidden\" name=\"key\" value=\"{}\">\
                     <button type=\"submit\" class=\"s{style}\">{text}</button></form>\n",
                    enc(userid),
                    esc(task_id),
                    esc(b["key"].as_str().unwrap_or_default())
                )),
            }
        }
        out.push_str("</div>\n");
    } else if update.is_some() {
        out.push_str("<p class=\"updated\">卡片已由 closeloop 更新（update_template_card）</p>\n");
    }
    for c in state
        .chat_clicks
        .iter()
        .filter(|c| c.task_id == task_id && c.userid == userid)
    {
        let label = buttons
            .iter()
            .find(|b| b["key"].as_str() == Some(c.key.as_str()))
            .and_then(|b| b["text"].as_str())
            .unwrap_or(&c.key);
        let statuses: Vec<String> = c.statuses.iter().map(u16::to_string).collect();
        out.push_str(&format!(
            "<p class=\"meta\">{} 点击了「{}」，回调 HTTP {}</p>\n",
            local_time(c.at_ms),
            esc(label),
            esc(&statuses.join("、"))
        ));
    }
    out.push_str("</section>\n");
    out
}

/// `POST /chat/{userid}/click` (form: `task_id`, `key`): the member presses a card's
/// button. WeCom then calls the app back with a `template_card_event` carrying the key, the
/// card's task id and a fresh one-shot response code for updating the card — signed and
/// encrypted, retried as WeCom retries. Back to the member's page afterwards.
pub(super) async fn chat_click(
    State(shared): State<Arc<Shared>>,
    Path(userid): Path<String>,
    body: Bytes,
) -> Response {
    let (Some(task_id), Some(key)) = (form_value(&body, "task_id"), form_value(&body, "key"))
    else {
        return chat_error(StatusCode::BAD_REQUEST, "缺少 task_id 或 key。");
    };
    let (target, agent_id, plain) = {
        let mut state = shared.lock();
        let Some(target) = state.callback.clone() else {
            return chat_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "模拟器还不知道应用的回调地址（set_callback_target），无法回调。",
            );
        };
        let Some(message) = state
            .messages
            .iter()
            .rev()
            .find(|m| m["template_card"]["task_id"] == task_id.as_str() && received_by(m, &userid))
            .cloned()
        else {
            return chat_error(StatusCode::NOT_FOUND, "该成员没有收到这张卡片。");
        };
        let card = &message["template_card"];
        let pressable = card["button_list"].as_array().is_some_and(|buttons| {
            buttons
                .iter()
                .any(|b| b["key"] == key.as_str() && b["type"].as_i64().unwrap_or(0) == 0)
        });
        if !pressable {
            return chat_error(StatusCode::BAD_REQUEST, "这张卡片上没有这个按钮。");
        }
        if state.last_update(&task_id, &userid).is_some() {
            return chat_error(StatusCode::CONFLICT, "卡片已更新，按钮不能再点击。");
        }
        let code = format!("emulated-rc-{}", uuid::Uuid::new_v4().simple());
        state.response_codes.insert(code.clone());
        state.code_tasks.insert(code.clone(), task_id.clone());
        let agent_id =
            json_text(&message["agentid"]).unwrap_or_else(|| DEFAULT_AGENT_ID.to_string());
        let plain = format!(
            "<xml><ToUserName>{}</ToUserName><FromUserName>{}</FromUserName>\
             <CreateTime>{}</CreateTime><MsgType><![CDATA[event]]></MsgType>\
             <Event><![CDATA[template_card_event]]></Event><EventKey>{}</EventKey>\
             <TaskId>{}</TaskId><CardType>{}</CardType><ResponseCode>{}</ResponseCode>\
             <AgentID>{}</AgentID></xml>",
            cdata(&shared.corp_id),
            cdata(&userid),
            chrono::Utc::now().timestamp(),
            cdata(&key),
            cdata(&task_id),
            cdata(card["card_type"].as_str().unwrap_or("button_interaction")),
            cdata(&code),
            esc(&agent_id),
        );
        (target, agent_id, plain)
    };
    let statuses = post_callback(&shared.corp_id, &agent_id, &target, &plain).await;
    let delivered: Vec<String> = statuses.iter().map(u16::to_string).collect();
    shared.lock().chat_clicks.push(ChatClick {
        at_ms: chrono::Utc::now().timestamp_millis(),
        userid: userid.clone(),
        task_id,
        key,
        statuses,
    });
    (
        StatusCode::SEE_OTHER,
        [(
            axum::http::header::LOCATION,
            format!("{CHAT}/{}?delivered={}", enc(&userid), delivered.join(",")),
        )],
    )
        .into_response()
}

/// The member's customers (each openable in the chat toolbar beside their chat), a form
/// placing a 公费电话 call, a form adding an external contact, and the member's last calls.
fn member_tools(state: &EmulatorState, userid: &str) -> String {
    let contacts = state.contacts_of(userid);
    let mut out = String::from("<section class=\"card tools\">\n<h2>客户联系</h2>\n");
    if contacts.is_empty() {
        out.push_str("<p class=\"meta\">还没有外部联系人。</p>\n");
    } else {
        out.push_str("<ul class=\"contacts\">\n");
        for c in &contacts {
            let corp = c
                .corp
                .as_deref()
                .map(|corp| format!(" · {}", esc(corp)))
                .unwrap_or_default();
            let phone = c
                .phone
                .as_deref()
                .map(|p| format!(" <span class=\"meta\">{}</span>", esc(&masked(p))))
                .unwrap_or_default();
            let toolbar = state
                .toolbar_url
                .as_deref()
                .map(|url| {
                    format!(
                        " <a class=\"linkbutton\" href=\"{}&amp;external_userid={}\" target=\"_blank\" rel=\"noopener\">在侧边栏打开</a>",
                        esc(&state.opened_as(userid, url)),
                        enc(&c.external_userid)
                    )
                })
                .unwrap_or_default();
            out.push_str(&format!(
                "<li>{}{corp}{phone}{toolbar}</li>\n",
                esc(&c.name)
            ));
        }
        out.push_str("</ul>\n");
    }
    let callable: Vec<&FollowedContact> = contacts.iter().filter(|c| c.phone.is_some()).collect();
    if !callable.is_empty() {
        out.push_str(&format!(
            "<form class=\"tool\" method=\"post\" action=\"{CHAT}/{}/call\">\n<h3>拨打公费电话</h3>\n\
             <label>客户 <select name=\"external_userid\">\n",
            enc(userid)
        ));
        for c in callable {
            out.push_str(&format!(
                "<option value=\"{}\">{} {}</option>\n",
                esc(&c.external_userid),
                esc(&c.name),
                esc(&masked(c.phone.as_deref().unwrap_or_default()))
            ));
        }
        out.push_str(&format!(
            "</select></label>\n<label>通话时长 <input type=\"number\" name=\"minutes\" min=\"0\" max=\"{MAX_CALL_MINUTES}\" value=\"5\"> 分 \
             <input type=\"number\" name=\"seconds\" min=\"0\" max=\"59\" value=\"0\"> 秒</label>\n\
             <button type=\"submit\" class=\"s1\">拨打并挂断</button>\n</form>\n"
        ));
    }
    out.push_str(&format!(
        "<form class=\"tool\" method=\"post\" action=\"{CHAT}/{}/contacts\">\n<h3>添加客户</h3>\n\
         <label>姓名 <input name=\"name\" required maxlength=\"32\"></label>\n\
         <label>企业 <input name=\"corp_name\" maxlength=\"64\"></label>\n\
         <label>职位 <input name=\"position\" maxlength=\"32\"></label>\n\
         <label>手机 <input name=\"phone\" maxlength=\"20\" inputmode=\"tel\"></label>\n\
         <label>渠道 <input name=\"state\" maxlength=\"30\" placeholder=\"如 抖音表单\"></label>\n\
         <button type=\"submit\" class=\"s1\">添加</button>\n</form>\n",
        enc(userid)
    ));
    let calls: Vec<&Value> = state
        .dial_records
        .iter()
        .filter(|r| r["caller"]["userid"] == userid)
        .collect();
    if !calls.is_empty() {
        out.push_str("<h3>最近的公费电话</h3>\n<ul class=\"calls\">\n");
        for r in calls.iter().rev().take(5) {
            let callee = &r["callee"][0];
            out.push_str(&format!(
                "<li>{} 呼叫 {}，通话{}</li>\n",
                local_time(r["call_time"].as_i64().unwrap_or_default() * 1000),
                esc(&masked(&json_text(&callee["phone"]).unwrap_or_default())),
                talk_time(callee["duration"].as_i64().unwrap_or_default())
            ));
        }
        out.push_str("</ul>\n");
    }
    out.push_str("</section>\n");
    out
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct OpenQuery {
    to: Option<String>,
    /// The customer whose chat the toolbar page opens beside.
    external_userid: Option<String>,
}

/// `GET /chat/{userid}/open?to=URL[&external_userid=…]`: the member opens a link (a card's, or
/// the chat toolbar beside a customer's chat). WeCom's OAuth page signs in whoever's client
/// opened it; here that becomes this member, and a link on the app's origin goes through
/// the app's sign-in page (see [`Emulator::set_sign_in_url`]), so the app signs the browser
/// in as this member even when it holds another member's session.
pub(super) async fn chat_open(
    State(shared): State<Arc<Shared>>,
    Path(userid): Path<String>,
    Query(query): Query<OpenQuery>,
) -> Response {
    let Some(to) = query
        .to
        .as_deref()
        .and_then(|t| reqwest::Url::parse(t).ok())
        .filter(|u| matches!(u.scheme(), "http" | "https"))
    else {
        return chat_error(StatusCode::BAD_REQUEST, "链接无效：只能打开 http(s) 地址。");
    };
    let mut state = shared.lock();
    if !state.is_member(&userid) {
        return chat_error(StatusCode::NOT_FOUND, "没有这位成员。");
    }
    if let Some(external) = &query.external_userid {
        if !state
            .contacts_of(&userid)
            .iter()
            .any(|c| &c.external_userid == external)
        {
            return chat_error(StatusCode::NOT_FOUND, "该成员没有这位客户。");
        }
        state.current_external_contact = Some(external.clone());
    }
    state.current_member = Some(userid);
    let sign_in = state
        .sign_in_url
        .as_deref()
        .and_then(|s| reqwest::Url::parse(s).ok())
        .filter(|s| s.origin() == to.origin());
    let location = match sign_in {
        Some(mut sign_in) => {
            let next = match to.query() {
                Some(q) => format!("{}?{q}", to.path()),
                None => to.path().to_string(),
            };
            sign_in.query_pairs_mut().append_pair("next", &next);
            sign_in.to_string()
        }
        None => to.to_string(),
    };
    (
        StatusCode::SEE_OTHER,
        [(axum::http::header::LOCATION, location)],
    )
        .into_response()
}

/// A trimmed, non-empty form field.
fn field(body: &[u8], name: &str) -> Option<String> {
    form_value(body, name)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// A whole number field within `0..=max`; empty counts as 0.
fn number(body: &[u8], name: &str, max: i64) -> Option<i64> {
    match field(body, name) {
        None => Some(0),
        Some(v) => v.parse::<i64>().ok().filter(|n| (0..=max).contains(n)),
    }
}

/// `POST /chat/{userid}/call` (form: `external_userid`, `minutes`, `seconds`): the member
/// calls a customer on 公费电话 and hangs up now. WeCom keeps the call as a record that
/// `dial/get_dial_record` serves — talk time per party in seconds, `total_duration` in
/// minutes as documented — and tells no app: an app finds it by polling.
pub(super) async fn chat_call(
    State(shared): State<Arc<Shared>>,
    Path(userid): Path<String>,
    body: Bytes,
) -> Response {
    let (Some(minutes), Some(seconds)) = (
        number(&body, "minutes", MAX_CALL_MINUTES),
        number(&body, "seconds", 59),
    ) else {
        return chat_error(
            StatusCode::BAD_REQUEST,
            &format!("通话时长无效：分钟为 0–{MAX_CALL_MINUTES}，秒为 0–59。"),
        );
    };
    let talk = minutes * 60 + seconds;
    let hook = {
        let mut state = shared.lock();
        if !state.is_member(&userid) {
            return chat_error(StatusCode::NOT_FOUND, "没有这位成员。");
        }
        let Some(external) = field(&body, "external_userid") else {
            return chat_error(StatusCode::BAD_REQUEST, "请选择要拨打的客户。");
        };
        let contacts = state.contacts_of(&userid);
        let Some(contact) = contacts.iter().find(|c| c.external_userid == external) else {
            return chat_error(StatusCode::NOT_FOUND, "该成员没有这位客户。");
        };
        let Some(phone) = contact.phone.clone() else {
            return chat_error(
                StatusCode::BAD_REQUEST,
                "该客户没有备注手机号，无法拨打公费电话。",
            );
        };
        let now = chrono::Utc::now().timestamp();
        state.dial_records.push(json!({
            "call_time": now - talk,
            "total_duration": (talk + 59) / 60,
            "call_type": 1,
            "caller": {"userid": userid, "duration": talk},
            "callee": [{"phone": phone, "duration": talk}],
        }));
        state.on_dial_record.clone()
    };
    if let Some(hook) = hook {
        hook();
    }
    (
        StatusCode::SEE_OTHER,
        [(
            axum::http::header::LOCATION,
            format!("{CHAT}/{}?called={talk}", enc(&userid)),
        )],
    )
        .into_response()
}

/// Whether `phone` looks like a number a member would note: digits, at most one leading
/// `+`, spaces and dashes, 5 to 15 digits.
fn plausible_phone(phone: &str) -> bool {
    let digits = phone.chars().filter(char::is_ascii_digit).count();
    let body = phone.strip_prefix('+').unwrap_or(phone);
    (5..=15).contains(&digits)
        && body
            .chars()
            .all(|c| c.is_ascii_digit() || c == ' ' || c == '-')
}

/// `POST /chat/{userid}/contacts` (form: `name`, optional `corp_name`, `position`, `phone`,
/// `state`): the member adds a WeChat user as an external contact. `externalcontact/get`
/// then knows them (the phone as the member's `remark_mobiles`, `state` as the 联系我
/// channel), and WeCom calls the app back with `change_external_contact` /
/// `add_external_contact`, signed and encrypted, retried as WeCom retries.
pub(super) async fn chat_add_contact(
    State(shared): State<Arc<Shared>>,
    Path(userid): Path<String>,
    body: Bytes,
) -> Response {
    let Some(name) = field(&body, "name") else {
        return chat_error(StatusCode::BAD_REQUEST, "请填写客户姓名。");
    };
    let corp = field(&body, "corp_name");
    let position = field(&body, "position");
    let phone = field(&body, "phone");
    let channel = field(&body, "state");
    let too_long =
        |v: &Option<String>, max: usize| v.as_ref().is_some_and(|v| v.chars().count() > max);
    if name.chars().count() > 32 || too_long(&corp, 64) || too_long(&position, 32) {
        return chat_error(
            StatusCode::BAD_REQUEST,
            "姓名和职位最多 32 个字，企业名称最多 64 个字。",
        );
    }
    // WeCom's 联系我 `state` is at most 30 characters.
    if too_long(&channel, 30) {
        return chat_error(StatusCode::BAD_REQUEST, "渠道最多 30 个字。");
    }
    if phone.as_deref().is_some_and(|p| !plausible_phone(p)) {
        return chat_error(
            StatusCode::BAD_REQUEST,
            "手机号无效：只能有数字、空格和短横线（可用 + 开头），5–15 位数字。",
        );
    }
    let (target, plain) = {
        let mut state = shared.lock();
        if !state.is_member(&userid) {
            return chat_error(StatusCode::NOT_FOUND, "没有这位成员。");
        }
        let Some(target) = state.callback.clone() else {
            return chat_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "模拟器还不知道应用的回调地址（set_callback_target），无法回调。",
            );
        };
        let now = chrono::Utc::now().timestamp();
        // WeChat users' external userids start with `wm`.
        let external_userid = format!("wm{}", &uuid::Uuid::new_v4().simple().to_string()[..30]);
        let mobiles: Vec<&String> = phone.iter().collect();
        // 1: 扫描二维码, as a 联系我 code with a `state` is added; 0: unknown.
        let add_way = i64::from(channel.is_some());
        state.external_contacts.insert(
            external_userid.clone(),
            json!({
                "external_contact": {
                    "external_userid": external_userid, "name": name, "position": position,
                    "corp_name": corp, "corp_full_name": corp, "type": 1, "gender": 0,
                },
                "follow_user": [{
                    "userid": userid, "remark": name, "description": "", "createtime": now,
                    "tags": [], "remark_corp_name": corp, "remark_mobiles": mobiles,
                    "oper_userid": userid, "add_way": add_way,
                    "state": channel.clone().unwrap_or_default(),
                }],
            }),
        );
        let state_field = channel
            .as_deref()
            .map(|s| format!("<State>{}</State>", cdata(s)))
            .unwrap_or_default();
        let plain = format!(
            "<xml><ToUserName>{}</ToUserName><FromUserName><![CDATA[sys]]></FromUserName>\
             <CreateTime>{now}</CreateTime><MsgType><![CDATA[event]]></MsgType>\
             <Event><![CDATA[change_external_contact]]></Event>\
             <ChangeType><![CDATA[add_external_contact]]></ChangeType>\
             <UserID>{}</UserID><ExternalUserID>{}</ExternalUserID>{state_field}\
             <WelcomeCode>{}</WelcomeCode></xml>",
            cdata(&shared.corp_id),
            cdata(&userid),
            cdata(&external_userid),
            cdata(&format!(
                "emulated-welcome-{}",
                uuid::Uuid::new_v4().simple()
            )),
        );
        (target, plain)
    };
    let statuses = post_callback(&shared.corp_id, DEFAULT_AGENT_ID, &target, &plain).await;
    let delivered: Vec<String> = statuses.iter().map(u16::to_string).collect();
    (
        StatusCode::SEE_OTHER,
        [(
            axum::http::header::LOCATION,
            format!("{CHAT}/{}?added={}", enc(&userid), delivered.join(",")),
        )],
    )
        .into_response()
}
