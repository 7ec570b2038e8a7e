//! The one enforcement point. Every route of the public router is declared in [`rule`]
//! with what it needs; [`enforce`] runs before any handler, finds who asks (an API key,
//! acting for the organisation or for a named member, or a signed-in member), loads
//! their policy (`crate::policy`) and asks it about the object the route touches. What
//! the asker may not see is 404, what they may see but not do is 403 with the reason —
//! before the handler reads anything. A route missing from [`rule`] stops the server
//! when the router is built ([`unguarded`]): no route runs unguarded.
//!
//! Card clicks arrive on the platform callbacks (signed by the platform) and ask the same
//! policy in the domain for the member who clicked (`crate::policy::authority`).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sqlx::Row;

use super::AppState;
use crate::access::{Acting, Principal};
use crate::error::{Error, Result};
use crate::http::pages::session::Session;
use crate::policy::{Decision, Policy, Subject};
use crate::rules::access::{Ability, Action};

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Nobody in particular: health, sign-in, assets. The reason is documentation.
    Public(&'static str),
    /// A platform's callback: its signature is the credential; card clicks in it ask the
    /// policy for the member who clicked.
    Signed,
    /// A secret token in the address is the credential (calendar feeds, document links).
    Token,
    /// Any member or key of the organisation; the handler shows only the asker's own
    /// things, or nothing personal.
    Member,
    /// An ability some package gives.
    Can(Ability),
    /// The action on every customer of the organisation (scope `all`): organisation-wide
    /// lists and directory writes.
    Org(Action),
    /// The action on some customers: creating one (for oneself).
    Any(Action),
    /// The action on the object the path's `{id}` names (through its customer).
    On(Object, Action),
    /// The action on the customer a body field names (JSON or form).
    OnBody(&'static str, Action),
    /// Managing someone's work on the object (rolling back, reassigning, reopening or
    /// closing a deal, lifting a freeze, deciding an attestation): the object must be
    /// visible, and the domain then asks the same policy about the person whose work it
    /// is (`policy::authority`) — for the member a key names in `actor`, if any.
    Managed(Object),
    /// A list the handler restricts to what the asker may see.
    List,
}

/// Objects a path can name, each belonging to one customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Object {
    Customer,
    Deal,
    Event,
    Attestation,
    Request,
    Document,
    Phone,
    /// A freeze: the rep's work (its customer, owned for this purpose by the rep).
    Freeze,
    Lead,
}

impl Object {
    fn what(self) -> &'static str {
        match self {
            Object::Customer => "customer",
            Object::Deal => "deal",
            Object::Event => "event",
            Object::Attestation => "attestation",
            Object::Request => "collaboration request",
            Object::Document => "document",
            Object::Phone => "phone",
            Object::Freeze => "freeze",
            Object::Lead => "lead",
        }
    }

    /// The customer (and, for a freeze, the rep standing as owner) of the object `id`.
    fn sql(self) -> &'static str {
        match self {
            Object::Customer => {
                "SELECT id AS customer_id, owner_user_id, region FROM customers WHERE id = $1 AND org_id = $2"
            }
            Object::Deal => {
                "SELECT c.id AS customer_id, c.owner_user_id, c.region FROM deals d \
                 JOIN customers c ON c.id = d.customer_id WHERE d.id = $1 AND d.org_id = $2"
            }
            Object::Event => {
                "SELECT c.id AS customer_id, c.owner_user_id, c.region FROM tracking_points p \
                 JOIN customers c ON c.id = p.customer_id WHERE p.id = $1 AND c.org_id = $2"
            }
            Object::Attestation => {
                "SELECT c.id AS customer_id, c.owner_user_id, c.region FROM attestations a \
                 JOIN tracking_points p ON p.id = a.point_id JOIN customers c ON c.id = p.customer_id \
                 WHERE a.id = $1 AND c.org_id = $2"
            }
            Object::Request => {
                "SELECT c.id AS customer_id, c.owner_user_id, c.region FROM collab_requests r \
                 JOIN customers c ON c.id = r.customer_id WHERE r.id = $1 AND r.org_id = $2"
            }
            Object::Document => {
                "SELECT c.id AS customer_id, c.owner_user_id, c.region FROM documents d \
                 JOIN customers c ON c.id = d.customer_id WHERE d.id = $1 AND c.org_id = $2"
            }
            Object::Phone => {
                "SELECT c.id AS customer_id, c.owner_user_id, c.region FROM contact_phones p \
                 JOIN contacts k ON k.id = p.contact_id JOIN customers c ON c.id = k.customer_id \
                 WHERE p.id = $1 AND c.org_id = $2"
            }
            Object::Freeze => {
                "SELECT f.customer_id, f.user_id AS owner_user_id, u.region FROM action_freezes f \
                 JOIN users u ON u.id = f.user_id WHERE f.id = $1 AND f.org_id = $2"
            }
            Object::Lead => {
                "SELECT c.id AS customer_id, c.owner_user_id, c.region FROM leads l \
                 JOIN customers c ON c.id = l.customer_id WHERE l.id = $1 AND l.org_id = $2"
            }
        }
    }
}

/// The rule of every route of the public router, by method and matched path. `None`:
/// the route was added without one (a defect the router walk test catches).
pub fn rule(method: &Method, path: &str) -> Option<Rule> {
    use Action::*;
    use Object as O;
    use Rule::*;
    let m = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    let api = path.strip_prefix("/api/v1");
    if let Some(p) = api {
        return Some(match (m, p) {
            ("GET", "/openapi.json") => Public("the API's description"),
            ("GET", "/users") | ("GET", "/users/{id}") => Member,
            ("POST", "/users") | ("PATCH", "/users/{id}") => Org(Edit),
            ("POST", "/users/{id}/calendar-feed") => Can(Ability::ManagePeople),
            ("GET", "/customers") => List,
            ("POST", "/customers") => Any(Edit),
            ("GET", "/customers/{id}")
            | ("GET", "/customers/{id}/owners")
            | ("GET", "/customers/{id}/timeline") => On(O::Customer, View),
            ("PATCH", "/customers/{id}")
            | ("POST", "/customers/{id}/contacts")
            | ("POST", "/customers/{id}/external-ids")
            | ("POST", "/customers/{id}/documents") => On(O::Customer, Edit),
            ("PUT", "/customers/{id}/assignments/{role}")
            | ("DELETE", "/customers/{id}/assignments/{role}") => On(O::Customer, Assign),
            ("GET", "/leads") | ("GET", "/deals") | ("GET", "/events") => Org(View),
            ("POST", "/leads") | ("POST", "/deals") => OnBody("customer", Edit),
            ("POST", "/events") | ("PUT", "/chat-counts") => OnBody("customer", Note),
            ("GET", "/deals/{id}") | ("GET", "/deals/{id}/gate") => On(O::Deal, View),
            ("PATCH", "/deals/{id}") | ("POST", "/deals/{id}/advance") => On(O::Deal, Edit),
            // Managing someone's deal is decided in the domain (`policy::authority`), for
            // the member the key names: the same policy, asked about the owner.
            ("POST", "/deals/{id}/rollback")
            | ("POST", "/deals/{id}/reassign")
            | ("POST", "/deals/{id}/reopen")
            | ("POST", "/deals/{id}/lose") => Managed(O::Deal),
            ("GET", "/events/{id}") | ("GET", "/events/{id}/verification") => On(O::Event, View),
            ("POST", "/events/{id}/attestations") => On(O::Event, Note),
            ("POST", "/attestations/{id}/decision") => Managed(O::Attestation),
            ("GET", "/freezes") => Org(View),
            ("POST", "/freezes/{id}/lift") => Managed(O::Freeze),
            ("PUT", "/phones/{id}/validity") => On(O::Phone, Note),
            ("GET", "/collab/requests") => Org(View),
            ("POST", "/collab/requests") | ("POST", "/collab/adhoc") => OnBody("customer", Note),
            ("GET", "/collab/requests/{id}") => On(O::Request, View),
            ("POST", "/collab/requests/{id}/{step}") => On(O::Request, Note),
            ("GET", "/collab/health") | ("GET", "/credibility") | ("GET", "/tasks") => {
                Can(Ability::TeamReports)
            }
            ("GET", "/documents") => Org(View),
            ("GET", "/documents/{id}") | ("GET", "/documents/{id}/content") => {
                On(O::Document, View)
            }
            ("POST", "/documents/{id}/links") => On(O::Document, Note),
            ("GET", "/platform-events")
            | ("GET", "/jobs")
            | ("POST", "/jobs/{id}/retry")
            | ("POST", "/jobs/run-now")
            | ("GET", "/webhooks")
            | ("POST", "/webhooks")
            | ("DELETE", "/webhooks/{id}") => Can(Ability::Operate),
            ("GET", "/audit") | ("GET", "/access-log") => Can(Ability::ReadAudit),
            ("GET", "/rules") => Member,
            ("POST", "/rules/check") => Can(Ability::ManageRules),
            // Permission requests: the requester's own, decided by the approver the
            // chain names (`approvals`), and checked there against the same identities.
            ("GET", "/access-requests")
            | ("POST", "/access-requests")
            | ("POST", "/access-requests/{id}/decision")
            | ("POST", "/access-requests/{id}/withdraw")
            | ("GET", "/access-grants")
            // Lifting a pause: a security officer, or the one a key names in `actor`.
            | ("POST", "/request-pauses/{user}/lift") => Member,
            _ => return None,
        });
    }
    Some(match (m, path) {
        ("GET", "/healthz") | ("GET", "/readyz") | ("GET", "/metrics") => {
            Public("operations probes")
        }
        ("GET", p) if p.starts_with("/WW_verify_") && p.ends_with(".txt") => {
            Public("WeCom's domain verification file")
        }
        ("GET", "/assets/{version}/{file}") => Public("scripts and styles"),
        ("GET", "/auth/wecom/login")
        | ("GET", "/auth/wecom/callback")
        | ("GET", "/auth/dingtalk/login")
        | ("POST", "/auth/dingtalk/code")
        | ("GET", "/auth/feishu/login")
        | ("GET", "/auth/feishu/callback")
        | ("POST", "/auth/logout")
        | ("GET", "/auth/dev")
        | ("POST", "/auth/dev") => Public("signing in and out"),
        ("GET", "/callback/wecom")
        | ("POST", "/callback/wecom")
        | ("POST", "/callback/dingtalk")
        | ("POST", "/callback/dingtalk/card")
        | ("POST", "/callback/feishu") => Signed,
        ("GET", "/calendar/{file}") | ("GET", "/d/{token}") => Token,
        ("GET", "/web/session")
        | ("GET", "/web/wecom/js-config")
        | ("GET", "/web/dingtalk/js-config")
        | ("GET", "/web/feishu/js-config")
        | ("GET", "/web/wecom/customer")
        | ("GET", "/sidebar")
        | ("GET", "/collab") => Member,
        ("GET", "/sidebar/customers/{id}") => On(Object::Customer, View),
        ("POST", "/web/customers/{id}/actions") => On(Object::Customer, Note),
        ("POST", "/web/customers/{id}/documents") => On(Object::Customer, Edit),
        ("POST", "/web/deals/{id}/advance") => On(Object::Deal, Edit),
        ("POST", "/web/deals/{id}/rollback")
        | ("POST", "/web/deals/{id}/reassign")
        | ("POST", "/web/deals/{id}/reopen")
        | ("POST", "/web/deals/{id}/lose") => Managed(Object::Deal),
        ("POST", "/web/events/{id}/attestations") => On(Object::Event, Note),
        ("GET", "/web/attestations/{id}/proof") => Managed(Object::Attestation),
        ("POST", "/web/freezes/{id}/lift") => Managed(Object::Freeze),
        ("PUT", "/web/phones/{id}/validity") => On(Object::Phone, Note),
        ("GET", "/web/documents/{id}/content") => On(Object::Document, View),
        ("POST", "/web/documents/{id}/links") => On(Object::Document, Note),
        ("POST", "/web/collab/requests") | ("POST", "/web/collab/adhoc") => {
            OnBody("customer", Note)
        }
        ("POST", "/web/collab/requests/{id}/{step}") => On(Object::Request, Note),
        ("GET", "/collab/requests/{id}") => On(Object::Request, View),
        ("GET", "/collab/health") => Can(Ability::TeamReports),
        ("GET", "/admin/people")
        | ("GET", "/admin/people/{kind}/{id}")
        | ("POST", "/admin/people/members/{id}/{what}")
        | ("POST", "/admin/people/customers/{id}/assignments/{role}") => Can(Ability::ManagePeople),
        ("GET", "/web/access-requests")
        | ("POST", "/web/access-requests")
        | ("GET", "/web/access-requests/{id}")
        | ("POST", "/web/access-requests/{id}/decision")
        | ("POST", "/web/access-requests/{id}/withdraw") => Member,
        ("GET", "/admin/rules") | ("POST", "/admin/rules") => Can(Ability::ManageRules),
        ("GET", "/admin/audit") => Can(Ability::ReadAudit),
        _ => return None,
    })
}

/// Who asks, with their policy: handlers read it from the request's extensions to
/// restrict lists.
#[derive(Clone)]
pub struct Access {
    pub policy: Arc<Policy>,
}

/// Set on every answer the policy gave instead of the handler.
pub const DENIED_HEADER: &str = "x-closeloop-denied";

/// The header an API key names the member it acts for with (a body's `actor` does too).
pub const ACTOR_HEADER: &str = "x-closeloop-actor";

/// The middleware: runs [`rule`] for the matched route before its handler.
pub async fn enforce(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let Some(path) = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
    else {
        return next.run(req).await;
    };
    // Every route the router serves has a rule (checked when the router is built), so
    // a method without one is a method the route does not serve: axum answers 405.
    let Some(rule) = rule(req.method(), &path) else {
        return next.run(req).await;
    };
    if matches!(rule, Rule::Public(_) | Rule::Signed | Rule::Token) {
        return next.run(req).await;
    }
    match check(&s, req, rule, &path).await {
        Ok(req) => next.run(req).await,
        Err(resp) => resp,
    }
}

async fn check(
    s: &AppState,
    req: Request,
    rule: Rule,
    path: &str,
) -> std::result::Result<Request, Response> {
    let api = path.starts_with("/api/");
    let (mut parts, body) = req.into_parts();
    // Bodies that can name an actor or a customer are read here, within the size limit.
    // Only JSON and form bodies can: uploads stream through untouched.
    let content_type = parts
        .headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let textual = content_type.starts_with("application/json")
        || content_type.starts_with("application/x-www-form-urlencoded");
    let needs_body =
        textual && (matches!(rule, Rule::OnBody(..)) || (api && parts.method != Method::GET));
    let (body, fields) = if needs_body {
        let bytes = axum::body::to_bytes(body, s.config.max_body_bytes)
            .await
            .map_err(|_| {
                Error::PayloadTooLarge(
                    "request body is larger than the configured max_body_bytes".into(),
                )
                .into_response()
            })?;
        let fields = BodyFields::read(&parts.headers, &bytes);
        (Body::from(bytes), fields)
    } else {
        (body, BodyFields::default())
    };
    let (org_id, subject) = if api {
        let key = match parts.extensions.get::<Principal>() {
            Some(p) => p.clone(),
            None => Principal::from_request_parts(&mut parts, s)
                .await
                .map_err(IntoResponse::into_response)?,
        };
        let header_actor = parts
            .headers
            .get(ACTOR_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if let (Some(h), Some(b)) = (&header_actor, &fields.actor) {
            if h != b {
                return Err(Error::invalid(format!(
                    "{ACTOR_HEADER} and the body's `actor` name different members"
                ))
                .into_response());
            }
        }
        let actor = header_actor.or(fields.actor.clone());
        let subject = match (key.acting, actor) {
            (Acting::Actor, Some(a)) => Subject::Person(a),
            (Acting::Actor, None) => {
                return Err(Error::Forbidden(format!(
                "this API key acts for a member: name one in {ACTOR_HEADER} or the body's `actor`"
            ))
                .into_response())
            }
            (Acting::Organisation, _) => Subject::Key(key.role),
        };
        let org = key.org_id.clone();
        parts.extensions.insert(key);
        (org, subject)
    } else {
        let session = match parts.extensions.get::<Session>() {
            Some(session) => session.clone(),
            None => match Session::from_request_parts(&mut parts, s).await {
                Ok(session) => session,
                // A member's own things: the handler answers a stranger itself (a sign-in
                // page, or 401 to a script), and has nothing of anyone else's to show.
                Err(_) if rule == Rule::Member => {
                    return Ok(Request::from_parts(parts, body));
                }
                Err(e) if parts.method == Method::GET => {
                    let next = parts
                        .uri
                        .path_and_query()
                        .map_or(path.to_string(), |p| p.as_str().to_string());
                    return Err(crate::http::pages::sidebar::not_signed_in(
                        s,
                        &parts.headers,
                        e,
                        &next,
                    ));
                }
                Err(e) => return Err(e.into_response()),
            },
        };
        let org = session.org_id.clone();
        let subject = Subject::Person(session.user_id.clone());
        parts.extensions.insert(session);
        (org, subject)
    };
    // A page answers a person with a page; scripts and the API get the JSON error.
    let page = !api && parts.method == Method::GET;
    let refuse = |e: Error| {
        let mut response = if page {
            crate::http::pages::sidebar::PageError(e).into_response()
        } else {
            e.into_response()
        };
        // Which layer answered: the policy, not the handler (the same for an object that
        // is hidden and one that does not exist).
        response.headers_mut().insert(
            DENIED_HEADER,
            axum::http::HeaderValue::from_static("policy"),
        );
        response
    };
    let policy = load_policy(s, &org_id, subject).await.map_err(refuse)?;
    decide(s, &parts, &policy, rule, &fields)
        .await
        .map_err(refuse)?;
    parts.extensions.insert(Access {
        policy: Arc::new(policy),
    });
    Ok(Request::from_parts(parts, body))
}

async fn load_policy(s: &AppState, org_id: &str, subject: Subject) -> Result<Policy> {
    match subject {
        // A key's policy comes from its role alone: no rule set to read, no query.
        Subject::Key(_) | Subject::System => Ok(Policy::of_key(org_id, subject)),
        Subject::Person(_) => {
            let rules = s.rules.current(org_id).await?;
            let mut conn = s.db.pool.acquire().await?;
            Policy::load(&mut conn, &rules, org_id, subject).await
        }
    }
}

async fn decide(
    s: &AppState,
    parts: &axum::http::request::Parts,
    policy: &Policy,
    rule: Rule,
    fields: &BodyFields,
) -> Result<()> {
    let now = s.clock.now_ms();
    match rule {
        Rule::Public(_) | Rule::Signed | Rule::Token | Rule::List => Ok(()),
        Rule::Member => {
            if policy.me.is_none() && policy.person().is_some() {
                return Err(Error::Forbidden(
                    "the member this request acts for is not an active member of the organisation"
                        .into(),
                ));
            }
            Ok(())
        }
        Rule::Can(a) => policy.require(a),
        Rule::Org(action) => {
            let everyone = std::collections::BTreeSet::from([crate::rules::access::Scope::All]);
            match policy.decide(&everyone, action) {
                Decision::Allowed(_) => Ok(()),
                Decision::Refused(reason) if policy.person().is_none() => {
                    Err(Error::Forbidden(reason))
                }
                _ => Err(Error::Forbidden(format!(
                    "「{}」全组织的数据需要对全部客户的{}权限；请改用只返回您可见数据的页面或接口",
                    parts.uri.path(),
                    action.label()
                ))),
            }
        }
        Rule::Any(action) => anywhere(policy, action),
        Rule::Managed(object) => {
            // Closing one's own deal is an edit; the rest is managing. Neither anywhere:
            // refused before the object is looked up.
            if anywhere(policy, Action::Manage).is_err() {
                anywhere(policy, Action::Edit)?;
            }
            visible(s, parts, policy, object, Action::View, now).await
        }
        Rule::On(object, action) => {
            // Refused before anything is looked up when no package grants the action at
            // all: the answer does not depend on the object, so it tells nothing about it.
            anywhere(policy, action)?;
            visible(s, parts, policy, object, action, now).await
        }
        Rule::OnBody(field, action) => {
            anywhere(policy, action)?;
            let Some(customer) = fields.customer.as_deref() else {
                // Nothing named: the handler refuses the body as it stands.
                let _ = field;
                return Ok(());
            };
            // Allowed on every customer (a key acting for the organisation, an admin): no
            // need to look the customer up — an unknown one is the handler's to name.
            let everyone = std::collections::BTreeSet::from([crate::rules::access::Scope::All]);
            if policy.decide(&everyone, action).allowed() {
                return Ok(());
            }
            let mut conn = s.db.pool.acquire().await?;
            match policy.customer(&mut conn, customer, action, now).await? {
                // An unknown customer is the handler's to name (422 unknown reference).
                Decision::Hidden
                    if crate::policy::customer_facts(&mut conn, &policy.org_id, customer)
                        .await?
                        .is_none() =>
                {
                    Ok(())
                }
                d => d.into_result("customer"),
            }
        }
    }
}

/// Decides `action` on the object the path's `{id}` names: 404 when the asker may not
/// see it (or it does not exist), 403 with the reason when they may see but not do.
async fn visible(
    s: &AppState,
    parts: &axum::http::request::Parts,
    policy: &Policy,
    object: Object,
    action: Action,
    now: i64,
) -> Result<()> {
    let id = path_id(parts).ok_or(Error::NotFound {
        what: object.what(),
    })?;
    let mut conn = s.db.pool.acquire().await?;
    let row = sqlx::query(object.sql())
        .bind(&id)
        .bind(&policy.org_id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(Error::NotFound {
            what: object.what(),
        })?;
    let facts = crate::policy::CustomerFacts {
        id: row.get("customer_id"),
        owner: row.get("owner_user_id"),
        region: row.get("region"),
    };
    let relations = policy.relations(&mut conn, &facts, now).await?;
    policy.decide(&relations, action).into_result(object.what())
}

/// Refuses (403) unless some package grants `action` on some customers.
fn anywhere(policy: &Policy, action: Action) -> Result<()> {
    if policy.held.iter().any(|h| {
        h.grants
            .iter()
            .any(|g| action == Action::View || g.actions.contains(&action))
    }) {
        return Ok(());
    }
    Err(Error::Forbidden(match &policy.subject {
        Subject::Key(role) => format!(
            "an API key with role `{}` may not {}; name a member in `actor` to act with \
             that member's permissions",
            role.as_str(),
            action.as_str()
        ),
        _ => format!("您的权限包都不含「{}」权限", action.label()),
    }))
}

/// The path's `{id}` (the first parameter of every object route).
fn path_id(parts: &axum::http::request::Parts) -> Option<String> {
    let uri = parts.uri.path();
    let template = parts.extensions.get::<MatchedPath>()?.as_str().to_owned();
    let segments: Vec<&str> = uri.split('/').collect();
    template
        .split('/')
        .position(|t| t == "{id}")
        .and_then(|i| segments.get(i))
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
}

/// The `actor` and `customer` fields of a JSON or form body, when present as strings.
#[derive(Debug, Default)]
struct BodyFields {
    actor: Option<String>,
    customer: Option<String>,
}

impl BodyFields {
    fn read(headers: &axum::http::HeaderMap, bytes: &[u8]) -> BodyFields {
        let content_type = headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if content_type.starts_with("application/x-www-form-urlencoded") {
            let mut out = BodyFields::default();
            for (k, v) in form_urlencoded_pairs(bytes) {
                match k.as_str() {
                    "actor" => out.actor = Some(v),
                    "customer" => out.customer = Some(v),
                    _ => {}
                }
            }
            return out;
        }
        let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(bytes) else {
            return BodyFields::default();
        };
        let text = |k: &str| map.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        BodyFields {
            actor: text("actor"),
            customer: text("customer"),
        }
    }
}

fn form_urlencoded_pairs(bytes: &[u8]) -> Vec<(String, String)> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    String::from_utf8_lossy(bytes)
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

/// `StatusCode` of a decision, for tests and callers that render their own page.
pub fn status_of(decision: &Decision) -> StatusCode {
    match decision {
        Decision::Allowed(_) => StatusCode::OK,
        Decision::Refused(_) => StatusCode::FORBIDDEN,
        Decision::Hidden => StatusCode::NOT_FOUND,
    }
}

/// Every `(method, path)` the router serves, read from its debug description (axum
/// offers no other way to list routes). Used at start-up, so that a server with an
/// unguarded route does not start, and by the router walk test.
pub fn routes_of<S>(router: &axum::Router<S>) -> Vec<(Method, String)> {
    let text = format!("{router:?}");
    // The routes proper, not the fallback router's.
    let text = text.split("fallback_router:").next().unwrap_or_default();
    // `RouteId(3): MethodRouter(MethodRouter { get: BoxedHandler, head: None, … })` in
    // the routes, `RouteId(3): "/healthz"` in the node's paths.
    let mut paths: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    let mut methods: Vec<(&str, Method)> = Vec::new();
    for chunk in text.split("RouteId(").skip(1) {
        let Some((id, rest)) = chunk.split_once("): ") else {
            continue;
        };
        if let Some(path) = rest.strip_prefix('"') {
            paths.insert(id, path.split('"').next().unwrap_or_default());
        } else if let Some(fields) = rest.strip_prefix("MethodRouter(MethodRouter { ") {
            let fields = fields.split(", fallback:").next().unwrap_or_default();
            for field in fields.split(", ") {
                let Some((name, value)) = field.split_once(": ") else {
                    continue;
                };
                if value == "None" {
                    continue;
                }
                if let Ok(m) = Method::from_bytes(name.to_ascii_uppercase().as_bytes()) {
                    methods.push((id, m));
                }
            }
        }
    }
    let mut out: Vec<(Method, String)> = methods
        .into_iter()
        .filter_map(|(id, m)| paths.get(id).map(|p| (m, p.to_string())))
        .collect();
    out.sort_by(|a, b| (&a.1, a.0.as_str()).cmp(&(&b.1, b.0.as_str())));
    out.dedup();
    out
}

/// The routes of `router` that [`rule`] does not cover.
pub fn unguarded<S>(router: &axum::Router<S>) -> Vec<String> {
    routes_of(router)
        .into_iter()
        .filter(|(m, p)| rule(m, p).is_none())
        .map(|(m, p)| format!("{m} {p}"))
        .collect()
}
