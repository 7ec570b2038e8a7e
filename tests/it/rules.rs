//! The rule set as data: `closeloop rules export|import|check|simulate` with the real
//! binary, an import taking effect in a running server, and simulations that report what
//! a candidate would have decided differently while writing nothing.

use std::path::Path;
use std::process::Command;

use closeloop::rules::{RuleSet, Rules};
use closeloop::simulate;
use serde_json::{json, Value};

use crate::helpers::{error_code, on_postgres, spawn_app, TestApp, TEST_DATA_KEY};

/// The binary in `dir`, with none of the test's own `CLOSELOOP_*` variables.
fn closeloop(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_closeloop"));
    cmd.current_dir(dir).env_remove("RUST_LOG");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CLOSELOOP_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// The binary pointed at a running test app's database.
fn closeloop_for(app: &TestApp, dir: &Path) -> Command {
    let mut cmd = closeloop(dir);
    cmd.env("CLOSELOOP_DATABASE_URL", &app.database_url);
    if on_postgres() {
        cmd.env("CLOSELOOP_SECURITY__DATA_KEY", TEST_DATA_KEY);
    }
    cmd
}

struct Output {
    success: bool,
    stdout: String,
    stderr: String,
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run closeloop");
    Output {
        success: out.status.success(),
        stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
    }
}

fn ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.success,
        "{cmd:?} failed\nstdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    out
}

/// Runs a command expected to fail; returns its one line on stderr.
fn fails_with_one_line(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(!out.success, "{cmd:?} succeeded: {}", out.stdout);
    assert!(out.stdout.is_empty(), "nothing on stdout: {}", out.stdout);
    let lines: Vec<&str> = out.stderr.trim().lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {}", out.stderr);
    lines[0].to_string()
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

async fn audit_rows(app: &TestApp, action: &str) -> Vec<(String, Option<String>, String)> {
    sqlx::query_as(
        "SELECT actor_kind, target_id, detail FROM audit_log WHERE action = $1 ORDER BY at, id",
    )
    .bind(action)
    .fetch_all(&app.db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn export_import_round_trips_and_a_change_is_a_new_audited_version() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| {
        let mut cmd = closeloop_for(&app, dir.path());
        cmd.arg("rules").args(args);
        cmd
    };

    // The defaults, version 0, round-trip unchanged.
    let exported = ok(&mut cli(&["export"])).stdout;
    assert!(
        exported.starts_with("# closeloop rule set, version 0 in force"),
        "{exported}"
    );
    assert!(exported.contains("repeat_limit = 2"), "{exported}");
    assert!(exported.contains("需求确认"), "{exported}");
    let file = dir.path().join("rules.toml");
    ok(cli(&["export"]).arg(&file));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), exported);
    let out = ok(cli(&["import"]).arg(&file));
    assert_eq!(out.stdout.trim(), "unchanged (version 0)");
    assert_eq!(app.count("rule_sets").await, 0);
    assert!(audit_rows(&app, "rules.import").await.is_empty());

    // A changed set is version 1, audited as the CLI's doing.
    let changed = exported.replace("repeat_limit = 2", "repeat_limit = 5");
    let file = write(dir.path(), "changed.toml", &changed);
    let out = ok(cli(&["import"]).arg(&file));
    assert_eq!(out.stdout.trim(), "imported version 1");
    assert_eq!(app.count("rule_sets").await, 1);
    let audits = audit_rows(&app, "rules.import").await;
    assert_eq!(audits.len(), 1);
    assert_eq!(audits[0].0, "cli");
    assert_eq!(audits[0].1.as_deref(), Some("1"));
    let detail: Value = serde_json::from_str(&audits[0].2).unwrap();
    assert_eq!(detail["version"], 1);
    assert_eq!(detail["previous"], 0);
    let rules = Rules::new(app.db.clone())
        .current(&app.org_id)
        .await
        .unwrap();
    assert_eq!(rules.antifraud.repeat_limit, 5);

    // The same content again changes nothing; the export shows version 1.
    let out = ok(cli(&["import"]).arg(&file));
    assert_eq!(out.stdout.trim(), "unchanged (version 1)");
    let exported = ok(&mut cli(&["export"])).stdout;
    assert!(
        exported.starts_with("# closeloop rule set, version 1 in force\n"),
        "{exported}"
    );
    assert!(exported.contains("repeat_limit = 5"), "{exported}");

    // Bad files: one line naming the key, a failing exit code, nothing stored.
    let bad = write(dir.path(), "bad.toml", "[antifraud]\nrepeat_limt = 3\n");
    let line = fails_with_one_line(cli(&["import"]).arg(&bad));
    assert!(line.contains("antifraud.repeat_limt"), "{line}");
    assert!(line.contains("line 2"), "{line}");
    let bad = write(
        dir.path(),
        "bad-type.toml",
        "[verification]\nmin_call_seconds = \"three minutes\"\n",
    );
    let line = fails_with_one_line(cli(&["import"]).arg(&bad));
    assert!(line.contains("verification.min_call_seconds"), "{line}");
    let bad = write(
        dir.path(),
        "bad-check.toml",
        "[credibility]\nthreshold = 1.5\n",
    );
    let line = fails_with_one_line(cli(&["import"]).arg(&bad));
    assert!(line.contains("credibility.threshold"), "{line}");
    let line = fails_with_one_line(cli(&["import"]).arg(dir.path().join("missing.toml")));
    assert!(line.contains("missing.toml"), "{line}");
    assert_eq!(app.count("rule_sets").await, 1);
    assert_eq!(audit_rows(&app, "rules.import").await.len(), 1);

    // The library refuses the same way.
    let err = closeloop::rules::store::import(
        &app.db,
        chrono::Utc::now().timestamp_millis(),
        &app.org_id,
        &closeloop::access::Actor::cli(),
        "[evidence.slack]\naccepts = [\"chat\"]\n",
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("evidence.slack"), "{err}");
    assert_eq!(app.count("rule_sets").await, 1);
}

#[test]
fn check_needs_no_database() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.toml", "[antifraud]\nrepeat_limit = 5\n");
    // A database that does not exist: `check` must not try it.
    let check = |file: &Path| {
        let mut cmd = closeloop(dir.path());
        cmd.args(["rules", "check"]).arg(file).env(
            "CLOSELOOP_DATABASE_URL",
            "postgres://nobody@127.0.0.1:1/none",
        );
        cmd
    };
    let out = ok(&mut check(&good));
    for word in [
        "valid",
        "初步咨询 → 需求确认",
        "已电话沟通",
        "more than 5",
        "→ 方案报价: 1 proposals sent, a valid phone",
        "→ 商务谈判: 1 proposals opened by the customer",
        "→ 赢单: 1 verified calls",
        "lost reasons: 价格, 竞品, 预算取消, 需求变化, 失去联系, 其他",
    ] {
        assert!(
            out.stdout.contains(word),
            "`{word}` missing:\n{}",
            out.stdout
        );
    }
    let bad = write(
        dir.path(),
        "bad.toml",
        "[[stages]]\nname = \"初步咨询\"\n[stages.requires]\nproposals = 1\n[[stages]]\nname = \"赢单\"\n",
    );
    let line = fails_with_one_line(&mut check(&bad));
    assert!(line.contains("first stage"), "{line}");
    let bad = write(
        dir.path(),
        "bad-policy.toml",
        "[evidence.wecom]\naccepts = [\"call\", \"fax\"]\n",
    );
    let line = fails_with_one_line(&mut check(&bad));
    assert!(line.contains("evidence.wecom.accepts"), "{line}");
    assert!(line.contains("fax"), "{line}");
    let entries: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(
        entries.iter().all(|e| e.ends_with(".toml")),
        "check created files: {entries:?}"
    );
}

async fn tap(app: &TestApp, rep: &str, customer: &str, action: &str) -> reqwest::Response {
    app.post(
        "/api/v1/events",
        &json!({"actor": rep, "customer": customer, "action": action}),
    )
    .await
}

#[tokio::test]
async fn an_import_takes_effect_in_a_running_server_without_a_restart() {
    let app = spawn_app().await;
    let rep = app.user("李明", &["sales"]).await;
    let first = app.customer("华南智造", Some(&rep)).await;
    for _ in 0..2 {
        assert_eq!(tap(&app, &rep, &first, "已电话沟通").await.status(), 201);
    }
    let (status, code, _) = error_code(tap(&app, &rep, &first, "已电话沟通").await).await;
    assert_eq!((status, code.as_str()), (409, "repeat_limit"));

    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "five.toml", "[antifraud]\nrepeat_limit = 5\n");
    let out = ok(closeloop_for(&app, dir.path())
        .args(["rules", "import"])
        .arg(&file));
    assert_eq!(out.stdout.trim(), "imported version 1");

    // The same server, no restart: five on a fresh customer, the sixth refused.
    let second = app.customer("华东精密", Some(&rep)).await;
    for i in 0..5 {
        let res = tap(&app, &rep, &second, "已电话沟通").await;
        assert_eq!(res.status(), 201, "tap {} after the import", i + 1);
    }
    let (status, code, message) = error_code(tap(&app, &rep, &second, "已电话沟通").await).await;
    assert_eq!((status, code.as_str()), (409, "repeat_limit"));
    assert!(message.contains("上限5次"), "{message}");
}

const TOUCHED: [&str; 16] = [
    "tracking_points",
    "point_verifications",
    "action_freezes",
    "audit_log",
    "rule_sets",
    "jobs",
    "cards",
    "deals",
    "deal_stage_history",
    "documents",
    "blobs",
    "chat_message_days",
    "contact_phones",
    "credibility_weekly",
    "tasks",
    "organisations",
];

/// Row counts of every table a simulation reads, and the verification statuses.
async fn counts(app: &TestApp) -> Vec<String> {
    let mut out = Vec::new();
    for t in TOUCHED {
        out.push(format!("{t}: {}", app.count(t).await));
    }
    let statuses: Vec<(String, String)> =
        sqlx::query_as("SELECT point_id, status FROM point_verifications ORDER BY point_id")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    out.extend(statuses.into_iter().map(|(p, s)| format!("{p}: {s}")));
    out
}

#[tokio::test]
async fn a_simulation_lists_exactly_what_a_higher_repeat_limit_would_allow_and_writes_nothing() {
    let app = spawn_app().await;
    let rep = app.user("李明", &["sales"]).await;
    let busy = app.customer("华南智造", Some(&rep)).await;
    let quiet = app.customer("华东精密", Some(&rep)).await;
    let mut statuses = Vec::new();
    for action in [
        "已电话沟通",
        "已电话沟通",
        "已电话沟通",
        "已电话沟通",
        "已发送样品清单",
    ] {
        statuses.push(tap(&app, &rep, &busy, action).await.status().as_u16());
    }
    statuses.push(
        tap(&app, &rep, &quiet, "已电话沟通")
            .await
            .status()
            .as_u16(),
    );
    assert_eq!(statuses, [201, 201, 409, 409, 409, 201]);
    let refused: Vec<(String,)> = sqlx::query_as(
        "SELECT id FROM tracking_points WHERE action IN ('rule.repeat_limit', 'rule.frozen') ORDER BY occurred_at, id",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(refused.len(), 3);

    let dir = tempfile::tempdir().unwrap();
    let candidate = write(dir.path(), "five.toml", "[antifraud]\nrepeat_limit = 5\n");
    let before = counts(&app).await;
    let out = ok(closeloop_for(&app, dir.path())
        .args(["rules", "simulate", "--since", "1h", "--json"])
        .arg(&candidate));
    let report: Value = serde_json::from_str(&out.stdout).expect("--json prints JSON");
    assert_eq!(report["in_force_version"], 0);
    assert_eq!(report["replayed"]["attempts"], 6);
    assert_eq!(report["summary"]["would_be_allowed"], 3, "{report:#}");
    assert_eq!(report["summary"]["would_be_refused"], 0);
    assert_eq!(report["summary"]["would_be_flagged"], 0);
    assert_eq!(report["summary"]["would_not_be_flagged"], 0);
    let listed: Vec<&str> = report["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["point"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = refused.iter().map(|(id,)| id.as_str()).collect();
    assert_eq!(listed, expected);
    let attempts = report["attempts"].as_array().unwrap();
    for a in attempts {
        assert_eq!(a["change"], "would_be_allowed");
        assert_eq!(a["candidate"], "allowed");
        assert_eq!(a["rep"], rep.as_str());
        assert_eq!(a["rep_name"], "李明");
        assert_eq!(a["customer"], busy.as_str());
    }
    assert_eq!(attempts[0]["in_force"], "refused_repeat_limit");
    assert_eq!(attempts[1]["in_force"], "refused_frozen");
    assert_eq!(attempts[2]["in_force"], "refused_frozen");
    assert_eq!(attempts[2]["action"], "已发送样品清单");

    // The human report says the same.
    let human = ok(closeloop_for(&app, dir.path())
        .args(["rules", "simulate"])
        .arg(&candidate))
    .stdout;
    assert!(human.contains("将被放行 would be allowed: 3"), "{human}");
    assert!(human.contains("华南智造"), "{human}");
    assert!(
        human.contains("contact validity is taken as of now"),
        "{human}"
    );

    // The rules in force against themselves: no difference.
    let current = dir.path().join("current.toml");
    ok(closeloop_for(&app, dir.path())
        .args(["rules", "export"])
        .arg(&current));
    let same = ok(closeloop_for(&app, dir.path())
        .args(["rules", "simulate", "--json"])
        .arg(&current));
    let same: Value = serde_json::from_str(&same.stdout).unwrap();
    assert_eq!(same["attempts"], json!([]));
    assert_eq!(same["bursts"], json!([]));

    // A window that starts after the taps replays none of them.
    let later = ok(closeloop_for(&app, dir.path())
        .args(["rules", "simulate", "--json", "--since", "0s"])
        .arg(&candidate));
    let later: Value = serde_json::from_str(&later.stdout).unwrap();
    assert_eq!(later["replayed"]["attempts"], 0);

    let line = fails_with_one_line(
        closeloop_for(&app, dir.path())
            .args(["rules", "simulate", "--since", "a while"])
            .arg(&candidate),
    );
    assert!(line.contains("--since"), "{line}");
    assert_eq!(counts(&app).await, before, "the simulation wrote nothing");
}

/// Verification and gates: talk times against a new minimum, and a stage move against
/// stricter requirements, on the evidence that existed at the time.
#[tokio::test]
async fn a_simulation_judges_claims_and_stage_moves_again() {
    let app = spawn_app().await;
    let rep = app.user("李明", &["sales"]).await;
    let customer = app.customer("华南智造", Some(&rep)).await;
    for _ in 0..2 {
        assert_eq!(tap(&app, &rep, &customer, "已电话沟通").await.status(), 201);
    }
    let now = chrono::Utc::now().timestamp_millis();
    let points: Vec<(String,)> =
        sqlx::query_as("SELECT point_id FROM point_verifications ORDER BY occurred_at, point_id")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    for (i, (id,)) in points.iter().enumerate() {
        sqlx::query(
            "UPDATE point_verifications SET status = 'verified', evidence_source = 'call_record', evidence_ref = $1, \
             duration_s = $2, decided_at = $3, updated_at = $3 WHERE point_id = $4",
        )
        .bind(format!("rec-{i}"))
        .bind(200 + i as i64 * 100)
        .bind(now - 5_000)
        .bind(id)
        .execute(&app.db.pool)
        .await
        .unwrap();
    }
    let blob = closeloop::db::new_id();
    sqlx::query(
        "INSERT INTO blobs (id, org_id, sha256, size_bytes, content_type, filename_enc, storage_key, uploaded_by, created_at) \
         VALUES ($1, $2, 'abc', 3, 'application/pdf', $5, 'k', $3, $4)",
    )
    .bind(&blob)
    .bind(&app.org_id)
    .bind(&rep)
    .bind(now - 5_000)
    .bind(app.cipher.encrypt("blobs.filename", "p.pdf"))
    .execute(&app.db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO documents (id, org_id, customer_id, kind, blob_id, uploaded_by, created_at) \
         VALUES ($1, $2, $3, 'proposal', $4, $5, $6)",
    )
    .bind(closeloop::db::new_id())
    .bind(&app.org_id)
    .bind(&customer)
    .bind(&blob)
    .bind(&rep)
    .bind(now - 5_000)
    .execute(&app.db.pool)
    .await
    .unwrap();
    let deal = app
        .create(
            "/api/v1/deals",
            json!({"customer": customer, "title": "产线改造"}),
        )
        .await;
    let deal = deal["id"].as_str().unwrap();
    let res = app
        .post(
            &format!("/api/v1/deals/{deal}/advance"),
            &json!({"actor": rep}),
        )
        .await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());

    let mut candidate = RuleSet::default();
    candidate.verification.min_call_seconds = 240;
    candidate.stages[1].requires.communications = 3;
    let in_force = Rules::new(app.db.clone())
        .current_version(&app.org_id)
        .await
        .unwrap();
    let before = counts(&app).await;
    let report = simulate::simulate(
        &app.db,
        &app.org_id,
        chrono_tz::Asia::Shanghai,
        &in_force,
        &candidate,
        now - 3_600_000,
        chrono::Utc::now().timestamp_millis(),
    )
    .await
    .unwrap();
    assert_eq!(counts(&app).await, before, "the simulation wrote nothing");
    assert_eq!(report.replayed.call_claims, 2);
    assert_eq!(report.summary.verified_to_too_short, 1, "{report}");
    assert_eq!(report.verifications[0].duration_s, 200);
    assert_eq!(report.verifications[0].candidate, "too_short");
    assert_eq!(report.replayed.stage_moves, 1);
    assert_eq!(report.summary.moves_would_be_refused, 1, "{report}");
    let g = &report.stage_moves[0];
    assert_eq!((g.deal.as_str(), g.to.as_str()), (deal, "需求确认"));
    assert_eq!(g.in_force, simulate::GateOutcome::Passed);
    assert_eq!(
        g.candidate,
        simulate::GateOutcome::Refused(vec!["communications".into()])
    );
    assert_eq!(
        report.summary.would_be_allowed + report.summary.would_be_refused,
        0
    );
    let text = report.to_string();
    assert!(
        text.contains("推进将被拒绝 stage moves would be refused: 1"),
        "{text}"
    );
}
