//! The text and time guard (issue 14): every page and every card template, rendered with
//! sample data, shows times in the organisation's zone in a Chinese format, no raw action
//! key and no English word outside a small allow-list — in its visible text: text nodes and
//! the `title`, `placeholder` and `aria-label` attributes. Signed-in pages show who is
//! signed in; elements a page marks `overdue` are red.
//!
//! Nothing here lists the pages: the test reads every `GET` route the HTTP layer registers
//! (outside the JSON API) from the source, fetches each as several people and as nobody,
//! follows the links the pages show to reach the routes with ids, and checks every HTML
//! answer. A page added later is checked as soon as it is routed (and, if its path has an
//! id, linked from a page). Cards: every template in `cards::templates::SPECS` on every
//! platform, and every card the sample scenario really queued.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;

use closeloop::cards::templates::{Templates, PLATFORMS, SPECS};
use closeloop::cards::Card;
use serde_json::{json, Value};
use sqlx::Row;

use crate::sidebar::{no_redirects, spawn_sidebar, SidebarApp};

/// ASCII words a page or card may show: the product's name, and the abbreviations Chinese
/// business software uses as they are (an IP address, an ID, SHA-256 for a content hash).
const ALLOWED_WORDS: &[&str] = &["closeloop", "IP", "ID", "SHA"];

/// Routes with an id in their path that no page links to, and why they are not pages.
const NOT_PAGES: &[(&str, &str)] = &[
    ("/calendar/{file}", "an ICS feed for calendar apps"),
    ("/web/documents/{id}/content", "a file download"),
    (
        "/web/attestations/{id}/proof",
        "a file: the proof the attestation card links to",
    ),
];

const SHANGHAI: chrono_tz::Tz = chrono_tz::Asia::Shanghai;
const AES_KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";

// ----------------------------------------------------------------------------------------
// Finding the pages

/// The paths of the `GET` routes registered under `src/http/`, except the JSON API
/// (`src/http/api/`, `/api/v1/…`).
fn get_routes() -> BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
    let mut files = Vec::new();
    crate::architecture::sources(&root, &mut files);
    let mut routes = BTreeSet::new();
    for file in files.iter().filter(|f| !f.starts_with(root.join("api"))) {
        let text = std::fs::read_to_string(file).unwrap();
        // A file's unit tests build routers of their own.
        let text = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (i, _) in text.match_indices(".route(") {
            let rest = text[i + ".route(".len()..].trim_start();
            let Some(rest) = rest.strip_prefix('"') else {
                continue;
            };
            let Some(end) = rest.find('"') else { continue };
            let path = &rest[..end];
            let after = &rest[end..];
            let stop = [".route(", ".merge(", ".nest(", ".fallback(", ";"]
                .iter()
                .filter_map(|m| after.find(m))
                .min()
                .unwrap_or(after.len());
            let handlers = &after[..stop];
            let gets = handlers.match_indices("get(").any(|(j, _)| {
                j == 0 || !handlers[..j].ends_with(|c: char| c.is_alphanumeric() || c == '_')
            });
            if gets && !path.starts_with("/api/") {
                routes.insert(path.to_string());
            }
        }
    }
    routes
}

/// Whether `path` (no query) is an instance of the route `pattern` (`{x}` is one segment).
fn matches(pattern: &str, path: &str) -> bool {
    let (p, q): (Vec<&str>, Vec<&str>) = (pattern.split('/').collect(), path.split('/').collect());
    p.len() == q.len()
        && p.iter()
            .zip(&q)
            .all(|(a, b)| (a.starts_with('{') && a.ends_with('}') && !b.is_empty()) || a == b)
}

// ----------------------------------------------------------------------------------------
// What a person sees

fn decode(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// `html` without `<script>`, `<style>`, comments and elements marked `translate="no"`
/// (data such as file names and hashes, which are not language).
fn without_non_text(html: &str) -> String {
    let mut s = html.to_string();
    for (open, close) in [
        ("<script", "</script>"),
        ("<style", "</style>"),
        ("<!--", "-->"),
    ] {
        while let Some(start) = s.find(open) {
            let end = s[start..]
                .find(close)
                .map_or(s.len(), |e| start + e + close.len());
            s.replace_range(start..end, "");
        }
    }
    while let Some(at) = s.find("translate=\"no\"") {
        let start = s[..at].rfind('<').unwrap();
        let tag: String = s[start + 1..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        let close = format!("</{tag}>");
        let end = s[at..]
            .find(&close)
            .map_or(s.len(), |e| at + e + close.len());
        s.replace_range(start..end, "");
    }
    s
}

fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let marker = format!(" {name}=\"");
    let start = tag.find(&marker)? + marker.len();
    let end = tag[start..].find('"')?;
    Some(&tag[start..start + end])
}

/// The visible text of a page: its text nodes and the `title`, `placeholder` and
/// `aria-label` attributes.
fn visible(html: &str) -> Vec<String> {
    let s = without_non_text(html);
    let mut out = Vec::new();
    let mut rest = s.as_str();
    while !rest.is_empty() {
        match rest.find('<') {
            Some(lt) => {
                let text = rest[..lt].trim();
                if !text.is_empty() {
                    out.push(decode(text));
                }
                let gt = rest[lt..].find('>').map_or(rest.len(), |g| lt + g + 1);
                let tag = &rest[lt..gt];
                for name in ["title", "placeholder", "aria-label"] {
                    if let Some(v) = attr(tag, name) {
                        out.push(decode(v));
                    }
                }
                rest = &rest[gt..];
            }
            None => {
                if !rest.trim().is_empty() {
                    out.push(decode(rest.trim()));
                }
                break;
            }
        }
    }
    out
}

/// What is wrong with one piece of visible text: an ISO date or timestamp, a raw action
/// key, an English word outside [`ALLOWED_WORDS`] (web addresses are links, not words).
fn problems(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    // Web addresses first: they are links, and what they carry is not text.
    let mut words = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("http") {
        words.push_str(&rest[..at]);
        let url = &rest[at..];
        if url.starts_with("http://") || url.starts_with("https://") {
            let end = url
                .find(|c: char| c.is_whitespace() || !c.is_ascii())
                .unwrap_or(url.len());
            rest = &url[end..];
        } else {
            words.push_str("http");
            rest = &url[4..];
        }
    }
    words.push_str(rest);
    let b = words.as_bytes();
    let digit = |i: usize| b[i].is_ascii_digit();
    let iso = (0..b.len().saturating_sub(9)).any(|i| {
        (0..4).all(|k| digit(i + k))
            && b[i + 4] == b'-'
            && digit(i + 5)
            && digit(i + 6)
            && b[i + 7] == b'-'
            && digit(i + 8)
            && digit(i + 9)
    });
    if iso {
        found.push(format!("ISO date or timestamp in `{text}`"));
    }
    for (key, _) in closeloop::text::SYSTEM_ACTIONS {
        if words.contains(key) {
            found.push(format!("raw action key `{key}` in `{text}`"));
        }
    }
    for word in words
        .split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| w.len() >= 2)
    {
        if !ALLOWED_WORDS.contains(&word) {
            found.push(format!("English word `{word}` in `{text}`"));
        }
    }
    found
}

fn check_texts(what: &str, texts: &[String], failures: &mut Vec<String>) {
    for t in texts {
        for p in problems(t) {
            failures.push(format!("{what}: {p}"));
        }
    }
}

#[test]
fn the_guard_sees_what_it_must() {
    assert!(problems("创建于 2026-12-07T01:43:58.023Z")[0].contains("ISO"));
    assert!(problems("2026-12-07 09:43")
        .iter()
        .any(|p| p.contains("ISO")));
    assert!(problems("最近跟进：document.sent")
        .iter()
        .any(|p| p.contains("raw action key")));
    assert!(problems("24小时内已记录2次 (refused)")
        .iter()
        .any(|p| p.contains("`refused`")));
    assert!(problems("同类动作在1day内超过2次")
        .iter()
        .any(|p| p.contains("`day`")));
    assert!(problems("2026年12月7日 09:43 · 来源 IP 10.0.0.1 · closeloop").is_empty());
    assert!(problems("完整报告：https://cl.example.com/collab/health?week=x").is_empty());
    let html = "<html><head><title>标题</title><style>.a{}</style></head><body>\
        <p title=\"提示 tip\">正文</p><script>var english = 1;</script>\
        <input placeholder=\"请输入\" aria-label=\"搜索\"><code translate=\"no\">3fa9e0</code>\
        <!-- note --><span>a &amp; b</span></body></html>";
    assert_eq!(
        visible(html),
        ["标题", "提示 tip", "正文", "请输入", "搜索", "a & b"]
    );
    assert!(matches("/collab/requests/{id}", "/collab/requests/r-1"));
    assert!(!matches("/collab/requests/{id}", "/collab/requests"));
    assert!(!matches("/collab/requests/{id}", "/collab/requests/r-1/x"));
}

// ----------------------------------------------------------------------------------------
// Sample data

struct Person {
    name: &'static str,
    cookie: String,
}

/// A team with a week's worth of what pages and cards show: taps up to a freeze and an IP
/// burst, a proposal sent and opened, a quick-ask answered, one overdue, an attestation.
/// Returns the people to browse as and the URLs no page links to (a tracked link).
async fn sample(app: &SidebarApp) -> (Vec<Person>, Vec<String>) {
    let user = |body: Value| async move {
        app.create("/api/v1/users", body).await["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let manager = user(json!({"name": "王经理", "roles": ["manager"]})).await;
    let rep = user(json!({"name": "李明", "roles": ["sales"], "superiors": [manager]})).await;
    let presales =
        user(json!({"name": "张工", "roles": ["presales"], "superiors": [manager]})).await;
    let admin = user(json!({"name": "赵敏", "roles": ["admin"]})).await;
    let customer = app.customer("华南智造", &rep).await;
    app.create(
        "/api/v1/deals",
        json!({"customer": customer, "title": "质检方案", "owner": rep}),
    )
    .await;

    // A permission request, which the rep's and the manager's lists link to.
    app.create(
        "/api/v1/access-requests",
        json!({"actor": rep, "kind": "customer", "target": customer, "reason": "协助跟进"}),
    )
    .await;

    let (rep_cookie, rep_csrf) = app.session(&rep, "dev").await;
    let web = |path: String, cookie: String, csrf: String, body: Value| async move {
        let res = no_redirects()
            .post(app.url(&path))
            .header("cookie", cookie)
            .header("x-csrf-token", csrf)
            .header("user-agent", "Mozilla/5.0 (closeloop test)")
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json::<Value>().await.unwrap_or(Value::Null))
    };

    // A proposal, sent as a tracked link and opened by the customer.
    let doc = crate::sidebar_tools::upload_proposal(app, &customer, &rep, "报价方案.pdf").await;
    let (status, link) = web(
        format!("/web/documents/{doc}/links"),
        rep_cookie.clone(),
        rep_csrf.clone(),
        json!({}),
    )
    .await;
    assert_eq!(status, 201, "{link}");
    let tracked = link["url"].as_str().unwrap().to_string();
    let opened = reqwest::get(&tracked).await.unwrap();
    assert_eq!(opened.status(), 200);

    // Three taps in a minute: the third is over the repeat limit (a freeze) and the burst
    // sends the manager an alert card. The refusal reads as the page shows it.
    let actions = format!("/web/customers/{customer}/actions");
    let tap = json!({"action": "已电话沟通"});
    let (status, first) = web(
        actions.clone(),
        rep_cookie.clone(),
        rep_csrf.clone(),
        tap.clone(),
    )
    .await;
    assert_eq!(status, 201, "{first}");
    web(
        actions.clone(),
        rep_cookie.clone(),
        rep_csrf.clone(),
        tap.clone(),
    )
    .await;
    let (status, refused) = web(actions, rep_cookie.clone(), rep_csrf.clone(), tap).await;
    assert_eq!(status, 409, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("24小时内"), "{message}");
    assert!(problems(message).is_empty(), "{message}");

    // Two quick-asks to presales: one answered, one left to go overdue.
    let ask = json!({"type": "presales_question", "customer": customer,
                     "content": {"问题": "是否支持私有化部署？"}});
    let mut asked = Vec::new();
    for _ in 0..2 {
        let (status, r) = web(
            "/web/collab/requests".into(),
            rep_cookie.clone(),
            rep_csrf.clone(),
            ask.clone(),
        )
        .await;
        assert_eq!(status, 201, "{r}");
        asked.push(r["id"].as_str().unwrap().to_string());
    }
    let (presales_cookie, presales_csrf) = app.session(&presales, "dev").await;
    for (step, body) in [
        ("accept", json!({})),
        ("answer", json!({"text": "支持，需单独报价"})),
    ] {
        let (status, r) = web(
            format!("/web/collab/requests/{}/{step}", asked[0]),
            presales_cookie.clone(),
            presales_csrf.clone(),
            body,
        )
        .await;
        assert_eq!(status, 200, "{step}: {r}");
    }
    let now = chrono::Utc::now().timestamp_millis();
    sqlx::query("UPDATE collab_requests SET due_at = $1, overdue_at = $2 WHERE id = $3")
        .bind(now - 3_600_000)
        .bind(now - 60_000)
        .bind(&asked[1])
        .execute(&app.db.pool)
        .await
        .unwrap();

    // The first call found no record: the rep attests it, the manager gets a card.
    let point = first["id"].as_str().unwrap();
    sqlx::query("UPDATE point_verifications SET status = 'unverified', window_closes_at = 1 WHERE point_id = $1")
        .bind(point)
        .execute(&app.db.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE tracking_points SET verification = 'unverified' WHERE id = $1")
        .bind(point)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let (status, a) = web(
        format!("/web/events/{point}/attestations"),
        rep_cookie.clone(),
        rep_csrf.clone(),
        json!({"note": "客户用座机回电，通话约 10 分钟"}),
    )
    .await;
    assert_eq!(status, 201, "{a}");

    // A rule set the admin imported: the rules page names who and when.
    let rules = closeloop::rules::RuleSet::default()
        .to_toml()
        .replace("抖音表单\" = 1.0", "抖音表单\" = 0.9");
    let imported = closeloop::rules::candidate::import(
        &app.db,
        chrono::Utc::now().timestamp_millis(),
        &app.org_id,
        &closeloop::access::Actor::user(&admin),
        &rules,
    )
    .await
    .unwrap();
    assert_eq!(imported, closeloop::rules::store::Imported::New(1));

    let mut people = vec![Person {
        name: "李明",
        cookie: rep_cookie,
    }];
    for (id, name, platform) in [
        (&rep, "李明", "wecom"),
        (&manager, "王经理", "dev"),
        (&presales, "张工", "dev"),
        (&admin, "赵敏", "dev"),
    ] {
        people.push(Person {
            name,
            cookie: app.session(id, platform).await.0,
        });
    }
    let bad_link = "/d/no-such-link".to_string();
    (
        people,
        vec![tracked, format!("/sidebar/customers/{customer}"), bad_link],
    )
}

// ----------------------------------------------------------------------------------------
// Pages

/// The first column of every row `sql` selects.
async fn column(app: &SidebarApp, sql: &str) -> Vec<String> {
    sqlx::query(sql)
        .fetch_all(&app.db.pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Every page reached, as every sample person and as nobody: visible text, who is signed
/// in, and red overdue marks.
#[tokio::test]
async fn every_page_speaks_chinese_in_local_time() {
    let app = spawn_sidebar(
        &format!(
            "timezone = \"Asia/Shanghai\"\n\
             [wecom]\ncorp_id = \"wwcl0000000000001\"\nagent_id = 1000002\nsecret = \"app-secret\"\n\
             token = \"QDG6eK\"\nencoding_aes_key = \"{AES_KEY}\"\napi_base = \"http://127.0.0.1:9\"\n\
             oauth_base = \"http://127.0.0.1:9\"\n\
             [dingtalk]\napp_key = \"dingkey\"\napp_secret = \"dingsecret\"\ncorp_id = \"dingcorp\"\n\
             token = \"dingtoken\"\naes_key = \"{AES_KEY}\"\napi_base = \"http://127.0.0.1:9\"\n\
             oapi_base = \"http://127.0.0.1:9\"\n\
             [feishu]\napp_id = \"cli_test\"\napp_secret = \"feishusecret\"\nverification_token = \"vt\"\n\
             api_base = \"http://127.0.0.1:9\"\naccounts_base = \"http://127.0.0.1:9\"\n"
        ),
        true,
    )
    .await;
    let (people, unlinked) = sample(&app).await;
    let routes = get_routes();
    assert!(
        routes.contains("/sidebar/customers/{id}") && routes.contains("/collab"),
        "the routes were not found: {routes:?}"
    );

    let mut failures = Vec::new();
    let mut reached: BTreeSet<String> = BTreeSet::new();
    let mut html_pages = 0;
    let mut overdue_marks: BTreeSet<(String, String)> = BTreeSet::new();
    let mut stylesheet = None;
    let browsers: Vec<(Option<&Person>, &str)> = std::iter::once((None, "nobody"))
        .chain(people.iter().map(|p| (Some(p), p.name)))
        .collect();
    for (person, who) in browsers {
        let mut queue: VecDeque<String> = routes
            .iter()
            .filter(|r| !r.contains('{'))
            .cloned()
            .chain(
                unlinked
                    .iter()
                    .map(|u| u.trim_start_matches(&app.base).to_string()),
            )
            .collect();
        let mut seen: BTreeSet<String> = queue.iter().cloned().collect();
        // Pages link on without end (last week, the week before…): a few of each will do.
        let mut visits: BTreeMap<String, usize> = BTreeMap::new();
        while let Some(url) = queue.pop_front() {
            let path = url.split('?').next().unwrap_or_default();
            let Some(route) = routes.iter().find(|r| matches(r, path)) else {
                continue;
            };
            let n = visits.entry(route.clone()).or_default();
            *n += 1;
            if *n > 4 {
                continue;
            }
            reached.insert(route.clone());
            let mut req = no_redirects().get(app.url(&url));
            if let Some(p) = person {
                req = req.header("cookie", &p.cookie);
            }
            let res = req.send().await.unwrap();
            let status = res.status().as_u16();
            let mut next: Vec<String> = res
                .headers()
                .get("location")
                .and_then(|l| l.to_str().ok())
                .filter(|l| l.starts_with('/'))
                .map(str::to_string)
                .into_iter()
                .collect();
            let html = res
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|t| t.starts_with("text/html"));
            let body = res.text().await.unwrap_or_default();
            if html {
                html_pages += 1;
                let what = format!("{url} as {who} ({status})");
                check_texts(&what, &visible(&body), &mut failures);
                if let Some(p) = person {
                    let signed_in = body.find("class=\"signed-in\"").is_some_and(|at| {
                        body[at..].split("</p>").next().unwrap().contains(p.name)
                    });
                    if status == 200 && !path.starts_with("/auth/") && !signed_in {
                        failures.push(format!("{what}: does not show who is signed in"));
                    }
                }
                for (i, _) in body.match_indices("class=\"") {
                    let classes = &body[i + 7..i + 7 + body[i + 7..].find('"').unwrap()];
                    if classes.split(' ').any(|c| c == "overdue") {
                        let tag_start = body[..i].rfind('<').unwrap() + 1;
                        let tag: String = body[tag_start..]
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric())
                            .collect();
                        overdue_marks.insert((tag, classes.to_string()));
                    }
                }
                for (i, _) in body.match_indices("href=\"") {
                    let href = decode(&body[i + 6..i + 6 + body[i + 6..].find('"').unwrap()]);
                    if href.ends_with(".css") && stylesheet.is_none() {
                        stylesheet = Some(href.clone());
                    }
                    if href.starts_with('/') {
                        next.push(href);
                    }
                }
            }
            for n in next {
                if seen.insert(n.clone()) {
                    queue.push_back(n);
                }
            }
        }
    }

    for route in &routes {
        let excused = NOT_PAGES.iter().any(|(r, _)| *r == route.as_str());
        if !reached.contains(route) && !excused {
            failures.push(format!(
                "{route}: no page links to it; link it from a page, or say in NOT_PAGES why it is not one"
            ));
        }
    }
    for must in [
        "/sidebar/customers/{id}",
        "/collab/requests/{id}",
        "/collab/health",
        "/d/{token}",
    ] {
        assert!(
            reached.contains(must),
            "{must} was not reached: {reached:?}"
        );
    }
    assert!(html_pages >= 20, "only {html_pages} pages checked");

    // Overdue marks are red.
    let css = app.page(&stylesheet.expect("a stylesheet"), "").await.1;
    let red_selectors: Vec<&str> = css
        .split('}')
        .filter_map(|rule| rule.split_once('{'))
        .filter(|(_, decls)| decls.contains("#d83931"))
        .flat_map(|(selectors, _)| selectors.split(','))
        .map(str::trim)
        .collect();
    assert!(
        overdue_marks.iter().any(|(tag, _)| tag == "tr")
            && overdue_marks.iter().any(|(tag, _)| tag == "li"),
        "the overdue request and the health page's overdue row are marked: {overdue_marks:?}"
    );
    for (tag, classes) in &overdue_marks {
        let red = red_selectors.iter().any(|s| {
            s.starts_with(&format!("{tag}.overdue"))
                || classes
                    .split(' ')
                    .filter(|c| *c != "overdue")
                    .any(|c| s.starts_with(&format!(".{c}.overdue")))
        });
        if !red {
            failures.push(format!(
                "<{tag} class=\"{classes}\"> is marked overdue but not red"
            ));
        }
    }

    // Every action key in the ledger has a Chinese label (rule-set actions are Chinese).
    let actions = column(&app, "SELECT DISTINCT action FROM tracking_points").await;
    assert!(actions.iter().any(|a| a == "document.sent"), "{actions:?}");
    for a in &actions {
        if closeloop::text::action_label(a).is_none() && !closeloop::text::has_chinese(a) {
            failures.push(format!("action `{a}` has no Chinese label"));
        }
    }

    // Every card the scenario queued, as each platform words it.
    let sealed = column(
        &app,
        "SELECT content_enc FROM cards ORDER BY created_at, id",
    )
    .await;
    assert!(
        sealed.len() >= 4,
        "the scenario queued {} cards",
        sealed.len()
    );
    for s in &sealed {
        for platform in PLATFORMS {
            let card = closeloop::cards::stored(&app.cipher, s, platform).unwrap();
            let wecom = platform == closeloop::chat::event::Platform::Wecom;
            check_card(
                &format!("queued {}", platform.as_str()),
                &card,
                wecom,
                &mut failures,
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ----------------------------------------------------------------------------------------
// Cards

fn card_texts(card: &Card) -> Vec<String> {
    std::iter::once(card.title.clone())
        .chain(card.description.clone())
        .chain(card.fields.iter().flat_map(|(k, v)| [k.clone(), v.clone()]))
        .chain(card.buttons.iter().map(|b| b.label.clone()))
        .collect()
}

/// A card's visible text, and for WeCom, whose limits cut texts, what WeCom receives:
/// within the limits, and a description that still ends with its closing clause.
fn check_card(what: &str, card: &Card, wecom: bool, failures: &mut Vec<String>) {
    let what = format!("{what} card 「{}」", card.title);
    check_texts(&what, &card_texts(card), failures);
    if !wecom {
        return;
    }
    let sent = closeloop::platform::wecom::cards::render(
        card,
        "card-1",
        "liming",
        1000002,
        None,
        "https://cl.example.com/collab",
    );
    let t = &sent["template_card"];
    let limits = closeloop::text::WECOM_CARD;
    let mut shown = vec![(
        t["main_title"]["title"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        limits.title,
    )];
    if let Some(d) = t["main_title"]["desc"].as_str() {
        shown.push((d.to_string(), limits.description));
        let full = card.description.clone().unwrap_or_default();
        let closing = full
            .trim_end_matches(['。', '！'])
            .rfind(['，', '；', '。', '：'])
            .map(|at| &full[at..]);
        if let Some(closing) = closing {
            if !d.ends_with(closing) {
                failures.push(format!(
                    "{what}: WeCom shows `{d}`, without its closing `{closing}`"
                ));
            }
        }
    }
    for f in t["horizontal_content_list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        shown.push((
            f["keyname"].as_str().unwrap_or_default().into(),
            limits.label,
        ));
        shown.push((f["value"].as_str().unwrap_or_default().into(), limits.value));
    }
    for b in t["button_list"].as_array().into_iter().flatten() {
        shown.push((b["text"].as_str().unwrap_or_default().into(), limits.button));
    }
    for (text, max) in shown {
        if max.is_some_and(|m| text.chars().count() > m) {
            failures.push(format!(
                "{what}: `{text}` is longer than WeCom shows ({max:?})"
            ));
        }
    }
}

/// What code fills a template's placeholders with, as it formats them; an unknown
/// placeholder gets a Chinese sample.
fn sample_value(var: &str) -> String {
    // Monday 2026-11-30 10:00 in Shanghai.
    let at = 1_796_004_000_000;
    let monday = chrono::NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
    match var {
        "rep" | "name" | "handler" | "initiator" => "李明".into(),
        "assignees" => "张工、王芳".into(),
        "customer" => "华南智造科技有限公司".into(),
        "action" => "已电话沟通".into(),
        "ip" => "10.1.2.3".into(),
        "time" | "due" => closeloop::text::time_short(at, SHANGHAI),
        "count" | "requests" => "3".into(),
        "note" => "客户用座机回电，通话约 10 分钟".into(),
        "title" => "销售→售前交接：方案初稿".into(),
        "hint" => "交接资料已齐，请确认收到并在时限内出初稿".into(),
        "content" => "客户需求概述：产线质检数据采集与报表，预算待确认".into(),
        "text" => "已超过约定时限，请立即处理".into(),
        "verb" => "已答复".into(),
        "synced" => "已同步客户".into(),
        "recipient" => "张工".into(),
        "answer" => "支持，需单独报价".into(),
        "reason" => "资料不全，请补充竞品对比表".into(),
        "date" => closeloop::text::date_text("2026-12-10"),
        "week" => closeloop::text::week(monday),
        "calls" => "0.25（1/4）".into(),
        "opens" => "0.33（1/3）".into(),
        "threshold" => "0.70".into(),
        "task" => "《合规跟进指引》学习与行为复盘".into(),
        "mean" => closeloop::text::minutes(Some(45.0)),
        "overdue" => "33%".into(),
        "returns" => "0%".into(),
        "worst" => "售前（超时 33%）".into(),
        "link" => "https://cl.example.com/collab/health?week=2026-11-23".into(),
        _ => "示例内容".into(),
    }
}

/// Every card template on every platform, filled as code fills it.
#[test]
fn every_card_template_speaks_chinese_and_fits_its_platform() {
    let templates = Templates::load(None).unwrap();
    let mut failures = Vec::new();
    let mut checked = BTreeMap::new();
    for platform in PLATFORMS {
        for spec in SPECS {
            let vars: Vec<(&str, String)> =
                spec.vars.iter().map(|v| (*v, sample_value(v))).collect();
            let card = templates.card_for(platform, spec.name, &vars);
            let wecom = platform == closeloop::chat::event::Platform::Wecom;
            check_card(
                &format!("{} {}", platform.as_str(), spec.name),
                &card,
                wecom,
                &mut failures,
            );
            *checked.entry(platform.as_str()).or_insert(0) += 1;
        }
    }
    assert_eq!(checked.len(), 3);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
