//! `closeloop demo`: a fresh SQLite database with a small sample organisation, served
//! locally. Later capabilities add the platform emulators and a week of history.

use std::sync::Arc;

use anyhow::Context as _;
use serde_json::json;

use crate::access::{apikeys, Actor, ApiKeyRole, NewApiKey};
use crate::cli::DemoArgs;
use crate::clock::{Clock, SystemClock};
use crate::customers::{self, NewContact, NewCustomer};
use crate::directory::users::{self, Identity, NewUser};
use crate::pipeline::{self, NewDeal, NewLead};
use crate::tracking::{NewPoint, Source};
use crate::{App, Config};

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let db_path = args.database.display().to_string();
    for suffix in ["", "-wal", "-shm", ".key"] {
        let p = format!("{db_path}{suffix}");
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove old demo file {p}")),
        }
    }
    let config = Config::from_toml_only(&format!(
        "listen = \"{listen}\"\npublic_url = \"http://{listen}\"\ndatabase_url = \"sqlite://{db_path}\"\n",
        listen = args.listen
    ))?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (use --listen)", config.listen))?;
    let app = App::build(config, Arc::new(SystemClock)).await?;
    let key = seed(&app)
        .await
        .map_err(|e| anyhow::anyhow!("demo data: {e}"))?;
    let base = format!("http://{}", listener.local_addr()?);
    println!("closeloop 演示已启动 (demo running) — 按 Ctrl-C 结束");
    println!();
    println!("  健康检查 health:   {base}/healthz");
    println!("  API 文档 OpenAPI:  {base}/api/v1/openapi.json");
    println!("  跟踪点 ledger:     curl -H 'Authorization: Bearer {key}' {base}/api/v1/events");
    println!("  客户 customers:    curl -H 'Authorization: Bearer {key}' {base}/api/v1/customers");
    println!("  指标 metrics:      {base}/metrics");
    println!();
    println!("  管理员 API key (admin): {key}");
    app.serve(listener, None, crate::app::shutdown_signal())
        .await
}

async fn seed(app: &App) -> crate::Result<String> {
    let s = &app.state;
    let org = &s.default_org.id;
    let now = SystemClock.now_ms();
    let sys = Actor::system();
    let user = |name: &str, roles: &[&str], region: &str, sups: Vec<String>, wecom: &str| NewUser {
        name: name.into(),
        department: Some("华南销售部".into()),
        region: Some(region.into()),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        superiors: sups,
        identities: vec![Identity {
            platform: "wecom".into(),
            kind: "userid".into(),
            value: wecom.into(),
        }],
    };
    let manager = users::create(
        &s.db,
        now,
        org,
        &sys,
        user("王经理", &["manager"], "华南", vec![], "wangjl"),
    )
    .await?;
    let rep = users::create(
        &s.db,
        now,
        org,
        &sys,
        user(
            "李明",
            &["sales"],
            "华南",
            vec![manager.id.clone()],
            "liming",
        ),
    )
    .await?;
    let presales = users::create(
        &s.db,
        now,
        org,
        &sys,
        user(
            "张工",
            &["presales"],
            "华南",
            vec![manager.id.clone()],
            "zhanggong",
        ),
    )
    .await?;
    users::create(
        &s.db,
        now,
        org,
        &sys,
        user(
            "赵交付",
            &["delivery"],
            "华南",
            vec![manager.id.clone()],
            "zhaojf",
        ),
    )
    .await?;
    users::create(
        &s.db,
        now,
        org,
        &sys,
        user("钱财务", &["finance"], "华南", vec![], "qiancw"),
    )
    .await?;
    let customer = customers::create(
        &s.db,
        &s.cipher,
        now,
        org,
        &sys,
        NewCustomer {
            name: "华南智造科技有限公司".into(),
            tier: Some("B".into()),
            owner: Some(rep.id.clone()),
            contacts: vec![NewContact {
                name: "张总".into(),
                title: Some("生产总监".into()),
                email: Some("zhang@example.com".into()),
                phones: vec!["138 0013 8000".into()],
            }],
        },
    )
    .await?;
    customers::create(
        &s.db,
        &s.cipher,
        now,
        org,
        &sys,
        NewCustomer {
            name: "东方精密制造".into(),
            tier: Some("A".into()),
            owner: Some(rep.id.clone()),
            contacts: vec![],
        },
    )
    .await?;
    let lead = pipeline::create_lead(
        &s.db,
        now,
        org,
        &sys,
        NewLead {
            customer: customer.id.clone(),
            source_channel: "抖音表单".into(),
            owner: Some(rep.id.clone()),
        },
    )
    .await?;
    let deal = pipeline::create_deal(
        &s.db,
        now,
        org,
        &sys,
        NewDeal {
            customer: customer.id.clone(),
            title: "智能质检方案".into(),
            lead: Some(lead.id),
            amount_fen: 180_000_000,
            currency: None,
            region: Some("华南".into()),
            product_line: Some("智能质检".into()),
            owner: Some(rep.id.clone()),
        },
    )
    .await?;
    for (actor, action) in [
        (&rep, "已电话沟通"),
        (&rep, "已发送样品清单"),
        (&presales, "上传方案"),
    ] {
        s.ledger
            .record(
                NewPoint {
                    org_id: org.clone(),
                    actor: actor.id.clone(),
                    customer: customer.id.clone(),
                    deal: Some(deal.id.clone()),
                    action: action.into(),
                    payload: json!({"demo": true}),
                    source: Source::Sidebar,
                    platform: Some("wecom".into()),
                    client_ip: Some("127.0.0.1".into()),
                    user_agent: Some("closeloop-demo".into()),
                    idempotency_key: None,
                    api_key_id: None,
                },
                s.default_org.timezone,
            )
            .await?;
    }
    let (_, key) = apikeys::create(
        &s.db,
        now,
        NewApiKey {
            org_id: org.clone(),
            name: "demo".into(),
            role: ApiKeyRole::Admin,
            expires_at_ms: None,
        },
    )
    .await?;
    Ok(key)
}
