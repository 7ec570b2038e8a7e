//! `closeloop demo`: one command on a fresh machine. It starts the built-in WeCom emulator,
//! serves closeloop on a fresh SQLite database wired to it (new secrets on every run), and
//! fills in a sample organisation with a week of history through closeloop's own code
//! paths: directory, customers linked to WeCom external contacts, deals moved through the
//! stage gates, claimed calls backed (or not) by 公费电话 records, an attestation and
//! collaboration requests. The emulator's chat view shows every member's cards; a click
//! there reaches closeloop as WeCom's signed, encrypted callback. There a visitor also
//! places 公费电话 calls and adds external contacts, and opens card links and the sidebar
//! signed in as the member whose chat it is; a call placed there makes closeloop poll the
//! call records at once, so a claimed call is verified in front of the visitor.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use chrono::TimeZone as _;
use rand::distributions::{Alphanumeric, DistString as _};
use serde_json::json;

use crate::access::{apikeys, Actor, ApiKeyRole, NewApiKey};
use crate::chat::event::Platform;
use crate::chat::ExternalContact;
use crate::clock::{Clock, SystemClock};
use crate::collab::requests::{self, NewRequest};
use crate::customers::{self, CustomerPatch, ExternalLink};
use crate::directory::users::{self, Identity, NewUser};
use crate::documents::{self, NewDocument, Upload};
use crate::emulator::wecom::Emulator;
use crate::gates::{self, Mover};
use crate::jobs::{self, NewJob};
use crate::page::PageParams;
use crate::pipeline::{self, NewDeal};
use crate::platform::wecom::dial;
use crate::policy::Grant;
use crate::tracking::{self, NewPoint, Source};
use crate::verification::attest::{self, NewAttestation};
use crate::verification::{calls, claims};
use crate::{App, Config};

/// `closeloop demo`'s options.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Where the demo serves.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// The demo database: recreated on every start when an earlier demo made it; any other
    /// existing file is refused, untouched.
    #[arg(long, default_value = "closeloop-demo.db")]
    pub database: std::path::PathBuf,
    /// The WeCom emulator's port on 127.0.0.1 (default: any free port).
    #[arg(long, value_name = "PORT")]
    pub emulator_port: Option<u16>,
}

const AGENT_ID: &str = "1000002";
const HOUR_MS: i64 = 3_600_000;

/// WeCom departments: (id, name, parent).
const DEPARTMENTS: [(i64, &str, i64); 7] = [
    (1, "总部", 0),
    (2, "销售管理部", 1),
    (3, "华南销售部", 2),
    (4, "华东销售部", 2),
    (5, "售前技术部", 1),
    (6, "交付中心", 1),
    (7, "财务部", 1),
];

struct Member {
    userid: &'static str,
    name: &'static str,
    roles: &'static [&'static str],
    department: i64,
    region: Option<&'static str>,
    /// WeCom userids of direct superiors (listed before their reports).
    leaders: &'static [&'static str],
}

const MEMBERS: [Member; 9] = [
    Member {
        userid: "zhouzj",
        name: "周总监",
        roles: &["manager", "admin"],
        department: 2,
        region: None,
        leaders: &[],
    },
    Member {
        userid: "wangjl",
        name: "王经理",
        roles: &["manager"],
        department: 3,
        region: Some("华南"),
        leaders: &["zhouzj"],
    },
    Member {
        userid: "liming",
        name: "李明",
        roles: &["sales"],
        department: 3,
        region: Some("华南"),
        leaders: &["wangjl"],
    },
    Member {
        userid: "liuyang",
        name: "刘洋",
        roles: &["sales"],
        department: 3,
        region: Some("华南"),
        leaders: &["wangjl"],
    },
    Member {
        userid: "sunyue",
        name: "孙悦",
        roles: &["sales"],
        department: 4,
        region: Some("华东"),
        leaders: &["zhouzj"],
    },
    Member {
        userid: "zhanggong",
        name: "张工",
        roles: &["presales"],
        department: 5,
        region: Some("华南"),
        leaders: &["wangjl"],
    },
    Member {
        userid: "wugong",
        name: "吴工",
        roles: &["presales"],
        department: 5,
        region: Some("华东"),
        leaders: &["zhouzj"],
    },
    Member {
        userid: "zhaojf",
        name: "赵交付",
        roles: &["delivery"],
        department: 6,
        region: None,
        leaders: &["zhouzj"],
    },
    Member {
        userid: "qiancw",
        name: "钱财务",
        roles: &["finance"],
        department: 7,
        region: None,
        leaders: &["zhouzj"],
    },
];

struct SampleCustomer {
    external_userid: &'static str,
    company: &'static str,
    contact: &'static str,
    position: &'static str,
    phone: &'static str,
    /// The rep's WeCom userid.
    owner: &'static str,
    channel: &'static str,
    tier: Option<&'static str>,
    presales: &'static str,
    deal: &'static str,
    amount_fen: i64,
    product_line: &'static str,
    /// When the deal passed each gate after the first stage: (days ago, local time).
    advances: &'static [(i64, &'static str)],
}

const CUSTOMERS: [SampleCustomer; 5] = [
    SampleCustomer {
        external_userid: "wmDemoHuananZhizao0001",
        company: "华南智造科技有限公司",
        contact: "张总",
        position: "生产总监",
        phone: "13800138000",
        owner: "liming",
        channel: "抖音表单",
        tier: Some("B"),
        presales: "zhanggong",
        deal: "智能质检方案",
        amount_fen: 180_000_000,
        product_line: "智能质检",
        advances: &[(4, "11:00")],
    },
    SampleCustomer {
        external_userid: "wmDemoDongfangJingmi02",
        company: "东方精密制造有限公司",
        contact: "陈工",
        position: "采购经理",
        phone: "13912345678",
        owner: "liming",
        channel: "公众号菜单",
        tier: Some("A"),
        presales: "zhanggong",
        deal: "产线数字化改造",
        amount_fen: 320_000_000,
        product_line: "数字化工厂",
        advances: &[(4, "17:30"), (3, "15:00"), (2, "11:00")],
    },
    SampleCustomer {
        external_userid: "wmDemoShenzhenYunfan03",
        company: "深圳云帆物流有限公司",
        contact: "林经理",
        position: "运营经理",
        phone: "13700137001",
        owner: "liuyang",
        channel: "抖音表单",
        tier: Some("C"),
        presales: "zhanggong",
        deal: "仓储管理系统",
        amount_fen: 65_000_000,
        product_line: "智慧仓储",
        advances: &[],
    },
    SampleCustomer {
        external_userid: "wmDemoHangzhouQinghe04",
        company: "杭州青禾食品有限公司",
        contact: "何总",
        position: "总经理",
        phone: "13600136002",
        owner: "sunyue",
        channel: "公众号菜单",
        tier: Some("B"),
        presales: "wugong",
        deal: "冷链追溯平台",
        amount_fen: 98_000_000,
        product_line: "冷链追溯",
        advances: &[(3, "14:00"), (2, "16:30")],
    },
    SampleCustomer {
        external_userid: "wmDemoSuzhouHengtong05",
        company: "苏州恒通电子有限公司",
        contact: "许经理",
        position: "IT 经理",
        phone: "13500135003",
        owner: "sunyue",
        channel: "抖音表单",
        tier: None,
        presales: "wugong",
        deal: "MES 升级",
        amount_fen: 240_000_000,
        product_line: "数字化工厂",
        advances: &[],
    },
];

const CALL: &str = "已电话沟通";
const SAMPLES: &str = "已发送样品清单";
const OBJECTION: &str = "客户提出价格异议";

/// What backs a tap.
#[derive(Clone, Copy)]
enum Backing {
    /// Nothing to check, or a claimed call no record backs.
    Nothing,
    /// A 公费电话 record of this many seconds of talk.
    Call(i64),
    /// No record; the rep asks the direct superior to confirm it, with this note.
    Proof(&'static str),
}

/// A sidebar tap of the past week: (days ago, local time, rep, customer, action, backing).
type PastTap = (
    i64,
    &'static str,
    &'static str,
    usize,
    &'static str,
    Backing,
);

const WEEK: [PastTap; 21] = [
    (6, "09:45", "sunyue", 3, CALL, Backing::Call(360)),
    (6, "10:05", "liming", 0, CALL, Backing::Call(420)),
    (6, "10:40", "liming", 0, SAMPLES, Backing::Nothing),
    (6, "14:00", "liming", 1, CALL, Backing::Call(900)),
    (5, "10:15", "liming", 1, SAMPLES, Backing::Nothing),
    (
        5,
        "11:00",
        "liuyang",
        2,
        CALL,
        Backing::Proof("客户用座机回拨，未走公费电话，通话约 10 分钟"),
    ),
    (5, "14:30", "sunyue", 3, SAMPLES, Backing::Nothing),
    (5, "15:20", "liming", 0, OBJECTION, Backing::Nothing),
    (4, "09:30", "liming", 0, CALL, Backing::Call(610)),
    (4, "13:40", "sunyue", 4, SAMPLES, Backing::Nothing),
    (4, "16:45", "liming", 1, CALL, Backing::Call(480)),
    (3, "10:10", "sunyue", 3, CALL, Backing::Call(540)),
    (3, "11:20", "liming", 1, OBJECTION, Backing::Nothing),
    // Too short to count as a valid communication.
    (3, "16:30", "liuyang", 2, CALL, Backing::Call(75)),
    (3, "16:40", "liuyang", 2, SAMPLES, Backing::Nothing),
    (2, "09:20", "sunyue", 4, CALL, Backing::Nothing),
    (2, "10:00", "liming", 1, CALL, Backing::Call(300)),
    (2, "14:10", "liming", 0, OBJECTION, Backing::Nothing),
    (2, "15:50", "sunyue", 3, OBJECTION, Backing::Nothing),
    (1, "10:30", "liuyang", 2, SAMPLES, Backing::Nothing),
    (1, "15:10", "liming", 1, OBJECTION, Backing::Nothing),
];

/// Taps of the last hours: (minutes ago, rep, customer, action, backing). Their records
/// are only in the emulator: closeloop's call-record poll finds them after start.
const TODAY: [(i64, &str, usize, &str, Backing); 6] = [
    (300, "liming", 0, CALL, Backing::Call(330)),
    (200, "sunyue", 4, CALL, Backing::Call(420)),
    (120, "liuyang", 2, CALL, Backing::Call(200)),
    (90, "liming", 1, SAMPLES, Backing::Nothing),
    // Its window has closed with no record: unverified.
    (60, "liuyang", 2, CALL, Backing::Nothing),
    // Its window is still open: pending.
    (12, "sunyue", 3, CALL, Backing::Nothing),
];

/// An office address per rep (the anti-fraud rules count records per rep and address).
fn office_ip(rep: &str) -> &'static str {
    match rep {
        "sunyue" => "10.30.2.15",
        "liuyang" => "10.20.1.12",
        _ => "10.20.1.11",
    }
}

/// Secrets the emulator and closeloop share, fresh on every run and never printed.
struct Secrets {
    corp_id: String,
    app: String,
    contact: String,
    dial: String,
    token: String,
    encoding_aes_key: String,
}

impl Secrets {
    fn generate() -> Secrets {
        let mut rng = rand::thread_rng();
        let mut alnum = |n: usize| Alphanumeric.sample_string(&mut rng, n);
        Secrets {
            corp_id: format!("ww{}", alnum(16).to_lowercase()),
            app: alnum(43),
            contact: alnum(43),
            dial: alnum(43),
            token: alnum(32),
            // 43 letters and digits, as the WeCom console generates them.
            encoding_aes_key: alnum(43),
        }
    }
}

/// A TOML string literal.
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// Marks a SQLite file as made by the demo: `PRAGMA application_id`, kept in the file's
/// header ("CLDM"). The demo deletes and recreates only a database that carries it, so
/// `--database` pointed at anything else (a real closeloop database) touches nothing.
const DEMO_APPLICATION_ID: u32 = 0x434C_444D;

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    // The ports first: a start that cannot serve must not have removed anything.
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (use --listen)", args.listen))?;
    let emulator_addr = format!("127.0.0.1:{}", args.emulator_port.unwrap_or(0));
    let emulator_listener = tokio::net::TcpListener::bind(&emulator_addr)
        .await
        .with_context(|| {
            format!("cannot listen on {emulator_addr} for the WeCom emulator (use --emulator-port)")
        })?;
    let db_path = args.database.display().to_string();
    let blobs = format!("{db_path}-files");
    clear_previous(&db_path)?;
    create_marked(&args.database).await?;
    let addr = listener.local_addr()?;
    let base = format!("http://{addr}");

    // The emulator comes first: closeloop is configured with its address.
    let secrets = Secrets::generate();
    let emulator = Emulator::start_on(
        emulator_listener,
        secrets.corp_id.clone(),
        vec![
            (secrets.app.clone(), "app"),
            (secrets.contact.clone(), "contact"),
            (secrets.dial.clone(), "dial"),
        ],
    );
    emulator.set_directory(
        DEPARTMENTS
            .iter()
            .map(|(id, name, parent)| json!({"id": id, "name": name, "parentid": parent}))
            .collect(),
        MEMBERS
            .iter()
            .map(|m| {
                json!({"userid": m.userid, "name": m.name, "department": [m.department],
                       "main_department": m.department, "direct_leader": m.leaders, "status": 1})
            })
            .collect(),
    );
    emulator.set_callback_target(
        format!("{base}/callback/wecom"),
        secrets.token.clone(),
        secrets.encoding_aes_key.clone(),
    );
    // Links in a member's chat go through closeloop's WeCom sign-in, as that member; the
    // chat toolbar (聊天工具栏) is the sidebar.
    emulator.set_sign_in_url(format!("{base}/auth/wecom/login"));
    emulator.set_chat_toolbar_url(format!("{base}/sidebar"));
    let config = Config::from_toml_only(&format!(
        "listen = {listen}\npublic_url = {base_q}\ndatabase_url = {db}\n\
         [storage]\npath = {blobs}\n\
         [wecom]\ncorp_id = {corp}\nagent_id = {AGENT_ID}\nsecret = {app}\ncontact_secret = {contact}\n\
         dial_secret = {dial}\ntoken = {token}\nencoding_aes_key = {aes}\napi_base = {api}\n\
         oauth_base = {api}\njssdk_url = {jssdk}\n",
        listen = toml_str(&addr.to_string()),
        base_q = toml_str(&base),
        db = toml_str(&format!("sqlite://{db_path}")),
        blobs = toml_str(&blobs),
        corp = toml_str(&secrets.corp_id),
        app = toml_str(&secrets.app),
        contact = toml_str(&secrets.contact),
        dial = toml_str(&secrets.dial),
        token = toml_str(&secrets.token),
        aes = toml_str(&secrets.encoding_aes_key),
        api = toml_str(&emulator.base_url()),
        jssdk = toml_str(&emulator.jssdk_url()),
    ))?;
    let mut app = App::build(config, Arc::new(SystemClock)).await?;
    // Anyone may act as any sample user; the emulated WeCom sign-in is there too.
    app.state.dev_sign_in = true;
    let key = seed(&app, &emulator).await.context("demo data")?;
    poll_calls_when_placed(&app, &emulator);

    println!("closeloop 演示已启动 (demo running) — 按 Ctrl-C 结束 (Ctrl-C stops it)");
    println!();
    println!("  侧边栏 sidebar:           {base}/sidebar");
    println!("      经模拟企业微信以「李明」登录，打开与华南智造的聊天 (signed in as 李明 through the emulated WeCom)");
    println!(
        "  演示登录 dev sign-in:     {base}/auth/dev  (任选一位示例成员 act as any sample member)"
    );
    println!("  协作请求 collaboration:   {base}/collab");
    println!("  协作健康周报 health report: {base}/collab/health  (以主管登录 sign in as a manager, e.g. 王经理)");
    println!("  人员与角色 people and roles: {base}/admin/people  (以管理员登录 sign in as the admin, 周总监)");
    println!("  规则设置 rules:          {base}/admin/rules  (以管理员登录 sign in as the admin, 周总监)");
    println!("  模拟聊天 emulated chat:   {}", emulator.chat_url());
    println!("      每位成员收到的卡片，可点击；点击即企业微信签名加密回调 (every member's cards; a click is a signed, encrypted WeCom callback)");
    println!("      卡片链接经模拟企业微信登录为该成员 (a card's link signs you in as that member, through the emulated WeCom)");
    println!("  API 文档 OpenAPI:         {base}/api/v1/openapi.json");
    println!(
        "  跟踪点 ledger:            curl -H 'Authorization: Bearer {key}' {base}/api/v1/events"
    );
    println!("  平台回调 platform events: curl -H 'Authorization: Bearer {key}' '{base}/api/v1/platform-events?type=template_card_event'");
    println!("  指标 metrics:             {base}/metrics");
    println!("  健康检查 health:          {base}/healthz");
    println!();
    println!("  试一试完整闭环 try the whole loop:");
    println!(
        "    1. 打开 {chat}/liming ，在「张总 · 华南智造科技有限公司」旁点「在侧边栏打开」(the sidebar opens signed in as 李明)",
        chat = emulator.chat_url()
    );
    println!("    2. 在侧边栏点「已电话沟通」：这次记录待核验 (tap it: pending)");
    println!(
        "    3. 回到李明的聊天，「拨打公费电话」给张总，时长 5 分钟 (place the call in the chat)"
    );
    println!("       企业微信生成通话记录；演示让 closeloop 立即拉取，平时每 10 分钟一次 (the demo polls the call records at once)");
    println!("    4. 刷新侧边栏：这次记录已核验 (reload the sidebar: verified)");
    println!("    添加客户 add a customer: 在成员的聊天里「添加客户」，企业微信回调 add_external_contact，客户出现在该成员的侧边栏");
    println!(
        "  周一卡片 Monday cards now: curl -X POST -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' -d '{{\"kind\":\"collab.health_weekly\"}}' {base}/api/v1/jobs/run-now"
    );
    println!(
        "      或 or: CLOSELOOP_DATABASE_URL=sqlite://{db_path} closeloop jobs run-now credibility.weekly ；卡片在王经理、周总监的聊天里 (the cards reach the managers' chats)"
    );
    println!();
    println!("  管理员 API key (admin):   {key}");
    let served = app
        .serve(listener, None, crate::app::shutdown_signal())
        .await;
    // The emulator serves until closeloop has stopped.
    drop(emulator);
    served
}

/// A call placed in the emulated chat adds a 公费电话 record, which closeloop would find at
/// its next poll (every 10 minutes); the demo runs the scheduled poll at once instead, as
/// `closeloop jobs run-now wecom.dial_poll` does, so the visitor sees the claim settle.
fn poll_calls_when_placed(app: &App, emulator: &Emulator) {
    let db = app.state.db.clone();
    let org = app.state.default_org.id.clone();
    let runtime = tokio::runtime::Handle::current();
    emulator.on_dial_record(move || {
        let (db, org) = (db.clone(), org.clone());
        runtime.spawn(async move {
            let queued = jobs::schedule::run_now(
                &db,
                SystemClock.now_ms(),
                Some(&org),
                dial::KIND,
                &Actor::system(),
            )
            .await;
            if let Err(e) = queued {
                tracing::warn!(error = %e, "demo: cannot queue the call-record poll");
            }
        });
    });
}

/// The files a previous demo run left at `db_path`, removed — only when the database is
/// one the demo made. A foreign database, or its key or blob folder without it, is refused.
fn clear_previous(db_path: &str) -> anyhow::Result<()> {
    let companions = ["-wal", "-shm", ".key", "-files"].map(|s| format!("{db_path}{s}"));
    match made_by_demo(Path::new(db_path)) {
        Ok(true) => {}
        Ok(false) => anyhow::bail!(
            "{db_path} was not created by closeloop demo; refusing to replace it (choose another --database)"
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(stray) = companions.iter().find(|p| Path::new(p).exists()) {
                anyhow::bail!(
                    "{stray} exists without a demo database beside it; refusing to remove it (choose another --database)"
                );
            }
            return Ok(());
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {db_path}")),
    }
    for p in std::iter::once(db_path.to_string()).chain(companions) {
        let removed = if p.ends_with("-files") {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        match removed {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove old demo file {p}")),
        }
    }
    Ok(())
}

/// Whether `path` is a SQLite database whose header carries the demo's mark.
fn made_by_demo(path: &Path) -> std::io::Result<bool> {
    use std::io::Read as _;
    let mut header = [0u8; 72];
    let mut file = std::fs::File::open(path)?;
    if file.read_exact(&mut header).is_err() {
        // Shorter than a SQLite header: whatever it is, the demo did not write it.
        return Ok(false);
    }
    let id = u32::from_be_bytes([header[68], header[69], header[70], header[71]]);
    Ok(header.starts_with(b"SQLite format 3\0") && id == DEMO_APPLICATION_ID)
}

/// Creates the demo database with its mark, in rollback-journal mode so the header reaches
/// the file at once (closeloop switches it to WAL when it opens it).
async fn create_marked(path: &Path) -> anyhow::Result<()> {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
    use sqlx::{ConnectOptions as _, Connection as _};
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Delete)
        .connect()
        .await
        .with_context(|| format!("cannot create {}", path.display()))?;
    sqlx::query(&format!("PRAGMA application_id = {DEMO_APPLICATION_ID}"))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(())
}

/// Epoch ms of `hh:mm` local time, `days_ago` days before today, in `tz`.
fn local_ms(tz: chrono_tz::Tz, now_ms: i64, days_ago: i64, hh_mm: &str) -> i64 {
    let today = crate::clock::from_ms(now_ms)
        .with_timezone(&tz)
        .date_naive();
    let time = chrono::NaiveTime::parse_from_str(hh_mm, "%H:%M").expect("sample times are HH:MM");
    let day = today - chrono::Duration::days(days_ago);
    tz.from_local_datetime(&day.and_time(time))
        .earliest()
        .map_or(now_ms - days_ago * 24 * HOUR_MS, |t| t.timestamp_millis())
}

/// Fills the demo database; returns the admin API key it made for the user.
async fn seed(app: &App, emulator: &Emulator) -> anyhow::Result<String> {
    let s = &app.state;
    let org = s.default_org.id.as_str();
    let tz = s.default_org.timezone;
    let now = SystemClock.now_ms();
    let rules = s.rules.current(org).await?;
    let at = |days_ago: i64, hh_mm: &str| local_ms(tz, now, days_ago, hh_mm);
    let week_start = at(7, "09:00");
    let sys = Actor::system();

    // The directory, as the emulator lists it (the start-up sync then changes nothing),
    // with the closeloop roles WeCom knows nothing about.
    let mut user_ids: HashMap<&str, String> = HashMap::new();
    for m in &MEMBERS {
        let department = DEPARTMENTS
            .iter()
            .find(|(id, _, _)| *id == m.department)
            .map(|(_, name, _)| name.to_string());
        let user = users::create(
            &s.db,
            week_start,
            org,
            &sys,
            Grant::Allowed,
            NewUser {
                name: m.name.into(),
                department,
                region: m.region.map(str::to_string),
                roles: m.roles.iter().map(|r| r.to_string()).collect(),
                superiors: m.leaders.iter().map(|l| user_ids[l].clone()).collect(),
                identities: vec![Identity {
                    platform: "wecom".into(),
                    kind: "userid".into(),
                    value: m.userid.into(),
                }],
            },
        )
        .await
        .with_context(|| format!("user {}", m.name))?;
        user_ids.insert(m.userid, user.id);
    }
    let user = |userid: &str| user_ids[userid].clone();

    // Customers arrive as WeCom external contacts added by their rep.
    let mut customer_ids = Vec::new();
    let mut deal_ids = Vec::new();
    for (i, c) in CUSTOMERS.iter().enumerate() {
        let added = week_start + i as i64 * 40 * 60_000;
        emulator.add_external_contact(
            json!({"external_userid": c.external_userid, "name": c.contact, "position": c.position,
                   "corp_name": c.company, "corp_full_name": c.company, "type": 1, "gender": 1}),
            json!([{"userid": c.owner, "remark": c.contact, "remark_mobiles": [c.phone],
                    "createtime": added / 1000, "add_way": 1, "state": ""}]),
        );
        let owner = user(c.owner);
        let mut tx = s.db.begin().await?;
        let (customer, _) = customers::link_external(
            &mut tx,
            &s.cipher,
            added,
            org,
            ExternalLink {
                platform: Platform::Wecom,
                contact: &ExternalContact {
                    external_user_id: c.external_userid.into(),
                    name: c.contact.into(),
                    corp_name: Some(c.company.into()),
                    position: Some(c.position.into()),
                    phones: vec![c.phone.into()],
                },
                owner: Some(&owner),
                source_channel: c.channel,
            },
        )
        .await?;
        tx.commit().await?;
        if let Some(tier) = c.tier {
            customers::update(
                &s.db,
                &s.cipher,
                added,
                org,
                &sys,
                Grant::Allowed,
                &customer,
                CustomerPatch {
                    tier: Some(tier.into()),
                    ..CustomerPatch::default()
                },
            )
            .await?;
        }
        crate::collab::assignments::assign(
            &s.db,
            added,
            org,
            &sys,
            &customer,
            "presales",
            &user(c.presales),
        )
        .await?;
        let lead = pipeline::list_leads(
            &s.db,
            org,
            Some(&customer),
            &PageParams {
                limit: Some(1),
                cursor: None,
            }
            .validate()?,
        )
        .await?
        .items
        .into_iter()
        .next()
        .map(|l| l.id);
        let owner_region = MEMBERS
            .iter()
            .find(|m| m.userid == c.owner)
            .and_then(|m| m.region);
        let deal = pipeline::create_deal(
            &s.db,
            &s.cipher,
            added + HOUR_MS,
            org,
            &sys,
            NewDeal {
                customer: customer.clone(),
                title: c.deal.into(),
                lead,
                amount_fen: c.amount_fen,
                currency: None,
                region: owner_region.map(str::to_string),
                product_line: Some(c.product_line.into()),
                owner: Some(owner),
            },
        )
        .await?;
        customer_ids.push(customer);
        deal_ids.push(deal.id);
    }

    // 公费电话 records behind some claimed calls. WeCom keeps them all; the ones older
    // than a day were fetched by earlier polls, which is what storing them now stands for.
    let mut taps: Vec<(i64, &str, usize, &str, Backing)> = WEEK
        .iter()
        .map(|&(days, time, rep, c, action, b)| (at(days, time), rep, c, action, b))
        .chain(
            TODAY
                .iter()
                .map(|&(minutes, rep, c, action, b)| (now - minutes * 60_000, rep, c, action, b)),
        )
        .collect();
    taps.sort_by_key(|t| t.0);
    let mut records = Vec::new();
    for &(tapped, rep, c, _, backing) in &taps {
        if let Backing::Call(talk) = backing {
            // The rep taps once the call has ended.
            let call_time = (tapped - (talk + 60) * 1000) / 1000;
            records.push(
                json!({"call_time": call_time, "total_duration": (talk + 59) / 60,
                "call_type": 1, "caller": {"userid": rep, "duration": talk},
                "callee": [{"phone": CUSTOMERS[c].phone, "duration": talk}]}),
            );
        }
    }
    emulator.add_dial_records(records.clone());
    for r in records {
        let call_ms = r["call_time"].as_i64().unwrap_or_default() * 1000;
        if call_ms < now - 23 * HOUR_MS {
            let page = dial::parse_page(&json!({ "record": [r] }));
            calls::store(&s.db, &s.cipher, &rules, call_ms + HOUR_MS / 6, org, &page).await?;
        }
    }

    // The week's taps, each at its own time; a claimed call opens its verification.
    let mut proofs = Vec::new();
    for &(tapped, rep, c, action, backing) in &taps {
        let point = NewPoint {
            deal: Some(deal_ids[c].clone()),
            platform: Some("wecom".into()),
            client_ip: Some(office_ip(rep).into()),
            user_agent: Some("closeloop-demo".into()),
            ..NewPoint::new(
                org,
                &user(rep),
                &customer_ids[c],
                action,
                Source::Sidebar,
                json!({"demo": true}),
            )
        };
        let mut tx = s.db.begin().await?;
        let written = tracking::write_in(&mut tx, tapped, &point, tz).await?;
        if let Some(claim) = rules.action(action).and_then(|a| a.claim) {
            claims::open(&mut tx, &rules, &written, claim, tapped).await?;
        }
        tx.commit().await?;
        if let Backing::Proof(note) = backing {
            proofs.push((tapped, rep, written.id, note));
        }
    }

    // Proposals, then the deals through their gates (a gate counts evidence, so each move
    // happens only because the calls and the proposal are there).
    for (i, c) in CUSTOMERS.iter().enumerate() {
        if c.advances.is_empty() {
            continue;
        }
        let upload = Upload::check(
            &s.rules,
            NewDocument {
                org_id: org.into(),
                actor: user(c.owner),
                customer: customer_ids[i].clone(),
                deal: Some(deal_ids[i].clone()),
                kind: "proposal".into(),
                filename: format!("方案-{}-{}-v1.txt", c.company, c.deal),
                content_type: Some("text/plain; charset=utf-8".into()),
                source: Source::Sidebar,
                client_ip: None,
                user_agent: Some("closeloop-demo".into()),
                api_key_id: None,
                platform: None,
            },
        )
        .await?;
        let text = format!(
            "{}：{}（演示文件）\n\n一、需求概述\n二、方案设计\n三、实施计划\n四、报价\n",
            c.company, c.deal
        );
        let proposal = documents::upload(
            &s.ledger,
            &s.cipher,
            &s.blobs,
            upload,
            text.into_bytes().into(),
            tz,
        )
        .await?;
        let owner = user(c.owner);
        let mut sent_link: Option<String> = None;
        let by = Mover {
            actor: Actor {
                kind: "user",
                id: Some(owner.clone()),
            },
            user: Some(owner),
            platform: Some("wecom".into()),
            key: None,
        };
        for (k, &(days, time)) in c.advances.iter().enumerate() {
            // 方案报价 needs the proposal sent, 商务谈判 the customer to have opened it:
            // the hour before those moves, the rep sends it and the customer opens it.
            let before = at(days, time) - HOUR_MS;
            if k == 1 {
                let link = documents::create_link(
                    &s.db,
                    before,
                    &s.config.public_url,
                    tz,
                    documents::NewLink {
                        org_id: org.into(),
                        document: proposal.id.clone(),
                        actor: user(c.owner),
                        expires_in_days: None,
                        source: Source::Sidebar,
                        client_ip: None,
                        user_agent: Some("closeloop-demo".into()),
                        api_key_id: None,
                        platform: Some("wecom".into()),
                    },
                )
                .await?;
                sent_link = link.url.rsplit('/').next().map(str::to_string);
            }
            if let (2, Some(token)) = (k, &sent_link) {
                let opener = documents::Opener {
                    counts: true,
                    ip: None,
                };
                documents::open(&s.db, &s.cipher, &s.blobs, before, token, &opener).await?;
            }
            gates::advance(
                &s.db,
                &s.cipher,
                &rules,
                at(days, time),
                org,
                tz,
                &deal_ids[i],
                None,
                &by,
            )
            .await
            .with_context(|| format!("advancing {}", c.deal))?;
        }
    }

    // A claimed call without a record: the rep asks the manager to confirm it.
    for (tapped, rep, point, note) in proofs {
        attest::request(
            &s.db,
            &s.cipher,
            tapped + 3 * HOUR_MS,
            org,
            &Actor {
                kind: "user",
                id: Some(user(rep)),
            },
            &point,
            NewAttestation {
                actor: user(rep),
                document: None,
                note: Some(note.into()),
            },
        )
        .await?;
    }

    // Two open requests: a fresh quick-ask to the customer's presales engineer, and a
    // delivery question long past its deadline (overdue once the SLA clock runs).
    let ask = |type_key: &str, c: usize, initiator: &str, prompt: &str, text: &str| NewRequest {
        type_key: type_key.into(),
        customer: customer_ids[c].clone(),
        deal: Some(deal_ids[c].clone()),
        initiator: user(initiator),
        content: BTreeMap::from([(prompt.to_string(), text.to_string())]),
        artefacts: BTreeMap::new(),
        source: Some(crate::tracking::Source::Sidebar),
    };
    let delivery = rules
        .collab("delivery_schedule")
        .context("the rule set has no `delivery_schedule` collaboration type")?;
    let overdue_at = (2..=14)
        .map(|days| at(days, "10:00"))
        .find(|&opened| requests::deadline(delivery, &s.calendar, opened) < now - HOUR_MS)
        .unwrap_or_else(|| at(14, "10:00"));
    requests::open(
        &s.db,
        &s.cipher,
        &rules,
        &s.calendar,
        overdue_at,
        org,
        tz,
        ask(
            "delivery_schedule",
            3,
            "sunyue",
            "需要交付的内容",
            "冷链追溯平台一期上线，含 20 个冷库的数据接入",
        ),
    )
    .await?;
    requests::open(
        &s.db,
        &s.cipher,
        &rules,
        &s.calendar,
        now - 25 * 60_000,
        org,
        tz,
        ask(
            "presales_question",
            0,
            "liming",
            "问题",
            "客户要求私有化部署并对接现有 MES，是否支持？",
        ),
    )
    .await?;

    // The call-record poll runs every 10 minutes; the first one now, so today's records
    // are found straight away.
    jobs::enqueue_now(
        &s.db,
        now,
        NewJob::new(dial::KIND, json!({}))
            .org(org)
            .dedupe(format!("{}:demo-start", dial::KIND)),
    )
    .await?;

    // The emulated sidebar: 李明 signed in, chatting with his first customer.
    emulator.set_current_member(Some(CUSTOMERS[0].owner));
    emulator.set_current_external_contact(Some(CUSTOMERS[0].external_userid));

    let (_, key) = apikeys::create(
        &s.db,
        now,
        NewApiKey {
            org_id: org.into(),
            name: "demo".into(),
            role: ApiKeyRole::Admin,
            expires_at_ms: None,
        },
    )
    .await?;
    Ok(key)
}
