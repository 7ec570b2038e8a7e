//! The LDAP directory source against a real OpenLDAP server: Debian's `slapd`, started here
//! on a free port with the inetOrgPerson schema and the memberof overlay, filled over LDAP
//! (so the overlay maintains `memberOf`), then synced.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};

use closeloop::access::Actor;
use closeloop::config::LdapConfig;
use closeloop::directory::ldap::{self, LdapSyncOutcome};
use ldap3::{Ldap, LdapConnAsync, Mod};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, TestApp};

const SLAPD: &str = "/usr/sbin/slapd";
const SUFFIX: &str = "dc=example,dc=com";
const ROOT_DN: &str = "cn=admin,dc=example,dc=com";
const ROOT_PW: &str = "s3cret-bind";

/// Whether `slapd` can run here. Where it is missing the tests are skipped with a note,
/// unless `CI_REQUIRE_SLAPD=1` — which `.ci/run` sets after installing it — makes that a
/// failure.
fn slapd_available() -> bool {
    if std::path::Path::new(SLAPD).exists() {
        return true;
    }
    let hint =
        "install it with `DEBIAN_FRONTEND=noninteractive apt-get install -y slapd ldap-utils`";
    if std::env::var("CI_REQUIRE_SLAPD").as_deref() == Ok("1") {
        panic!("{SLAPD} is missing: {hint}");
    }
    println!("note: {SLAPD} is missing; LDAP test skipped ({hint})");
    false
}

/// A slapd of this test's own, stopped when dropped.
struct Slapd {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Slapd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_slapd() -> Slapd {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let conf = dir.path().join("slapd.conf");
    std::fs::write(
        &conf,
        format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             modulepath /usr/lib/ldap\nmoduleload back_mdb\nmoduleload memberof\n\
             pidfile {pid}\n\
             database mdb\nsuffix \"{SUFFIX}\"\nrootdn \"{ROOT_DN}\"\nrootpw {ROOT_PW}\n\
             directory {data}\nmaxsize 10485760\n\
             overlay memberof\nmemberof-refint TRUE\n",
            pid = dir.path().join("slapd.pid").display(),
            data = data.display(),
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("ldap://127.0.0.1:{port}");
    // `-d 0`: stay in the foreground (so the test owns the process), log nothing.
    let child = Command::new(SLAPD)
        .arg("-f")
        .arg(&conf)
        .arg("-h")
        .arg(format!("{url}/"))
        .args(["-d", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start slapd");
    let slapd = Slapd {
        child,
        url,
        _dir: dir,
    };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return slapd;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("slapd did not listen on {}", slapd.url);
}

async fn admin(slapd: &Slapd) -> Ldap {
    let (conn, mut ldap) = LdapConnAsync::new(&slapd.url).await.unwrap();
    ldap3::drive!(conn);
    ldap.simple_bind(ROOT_DN, ROOT_PW)
        .await
        .unwrap()
        .success()
        .unwrap();
    ldap
}

async fn add(ldap: &mut Ldap, dn: &str, attrs: &[(&str, &[&str])]) {
    let attrs: Vec<(&str, HashSet<&str>)> = attrs
        .iter()
        .map(|(k, v)| (*k, v.iter().copied().collect()))
        .collect();
    ldap.add(dn, attrs)
        .await
        .unwrap()
        .success()
        .unwrap_or_else(|e| panic!("add {dn}: {e}"));
}

fn person_dn(uid: &str) -> String {
    format!("uid={uid},ou=people,{SUFFIX}")
}

async fn add_person(ldap: &mut Ldap, uid: &str, cn: &str, dept: &str, manager: Option<&str>) {
    let dn = person_dn(uid);
    let manager = manager.map(person_dn);
    let mut attrs: Vec<(&str, &[&str])> = vec![
        ("objectClass", &["inetOrgPerson"]),
        ("uid", std::slice::from_ref(&uid)),
        ("cn", std::slice::from_ref(&cn)),
        ("sn", std::slice::from_ref(&cn)),
        ("departmentNumber", std::slice::from_ref(&dept)),
    ];
    let m: Vec<&str> = manager.iter().map(String::as_str).collect();
    if !m.is_empty() {
        attrs.push(("manager", &m));
    }
    add(ldap, &dn, &attrs).await;
}

async fn fill(ldap: &mut Ldap) {
    add(
        ldap,
        SUFFIX,
        &[
            ("objectClass", &["dcObject", "organization"]),
            ("dc", &["example"]),
            ("o", &["Example"]),
        ],
    )
    .await;
    for ou in ["people", "groups"] {
        add(
            ldap,
            &format!("ou={ou},{SUFFIX}"),
            &[("objectClass", &["organizationalUnit"]), ("ou", &[ou])],
        )
        .await;
    }
    add_person(ldap, "wangjl", "王经理", "华南销售部", None).await;
    add_person(ldap, "liming", "李明", "华南销售部", Some("wangjl")).await;
    add_person(ldap, "zhanggong", "张工", "售前部", Some("liming")).await;
    add_person(ldap, "zhaoliu", "赵六", "华南销售部", Some("wangjl")).await;
    let (sales, managers) = (
        [person_dn("liming"), person_dn("zhaoliu")],
        [person_dn("wangjl")],
    );
    for (cn, members) in [("sales", &sales[..]), ("managers", &managers[..])] {
        let members: Vec<&str> = members.iter().map(String::as_str).collect();
        add(
            ldap,
            &format!("cn={cn},ou=groups,{SUFFIX}"),
            &[
                ("objectClass", &["groupOfNames"]),
                ("cn", &[cn]),
                ("member", &members),
            ],
        )
        .await;
    }
}

fn config(slapd: &Slapd) -> LdapConfig {
    closeloop::Config::from_toml_only(&ldap_section(slapd))
        .expect("ldap config")
        .ldap
        .unwrap()
}

fn ldap_section(slapd: &Slapd) -> String {
    format!(
        "[ldap]\nurl = \"{}\"\nbind_dn = \"{ROOT_DN}\"\nbind_password = \"{ROOT_PW}\"\n\
         base_dn = \"ou=people,{SUFFIX}\"\n\
         [ldap.group_roles]\n\"cn=sales,ou=groups,{SUFFIX}\" = [\"sales\"]\n\
         \"CN=Managers, OU=groups, DC=example, DC=com\" = [\"manager\", \"sales\"]\n",
        slapd.url
    )
}

async fn sync(app: &TestApp, config: &LdapConfig) -> LdapSyncOutcome {
    ldap::sync(
        &app.db,
        chrono::Utc::now().timestamp_millis(),
        &app.org_id,
        config,
        &Actor::cli(),
    )
    .await
    .expect("ldap sync")
}

async fn user(app: &TestApp, uid: &str) -> Value {
    let page: Value = app
        .get(&format!(
            "/api/v1/users?platform=ldap&identity_kind=uid&identity_value={uid}"
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        page["items"].as_array().map(Vec::len),
        Some(1),
        "{uid}: {page}"
    );
    page["items"][0].clone()
}

fn roles(u: &Value) -> Vec<&str> {
    let mut r: Vec<&str> = u["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    r.sort_unstable();
    r
}

#[tokio::test]
async fn ldap_people_managers_and_group_roles_sync_and_follow_the_directory() {
    if !slapd_available() {
        return;
    }
    let slapd = start_slapd().await;
    let mut dir = admin(&slapd).await;
    fill(&mut dir).await;
    let app = spawn_app().await;
    let cfg = config(&slapd);

    let first = sync(&app, &cfg).await;
    assert_eq!(
        (
            first.members.created,
            first.members.left,
            first.roles_granted
        ),
        (4, 0, 4),
        "{first:?}"
    );
    let wang = user(&app, "wangjl").await;
    let li = user(&app, "liming").await;
    let zhang = user(&app, "zhanggong").await;
    let zhao = user(&app, "zhaoliu").await;
    assert_eq!(li["name"], "李明");
    assert_eq!(li["department"], "华南销售部");
    assert_eq!(zhang["department"], "售前部");
    assert_eq!(li["superiors"], json!([wang["id"]]));
    assert_eq!(zhang["superiors"], json!([li["id"]]));
    assert_eq!(wang["superiors"], json!([]));
    // The managers group maps to two roles (its DN written in another case and spacing).
    assert_eq!(roles(&wang), ["manager", "sales"]);
    assert_eq!(roles(&li), ["sales"]);
    assert_eq!(roles(&zhang), Vec::<&str>::new());
    assert_eq!(
        (zhao["status"].as_str(), roles(&zhao)),
        (Some("active"), vec!["sales"])
    );

    // An admin gives 李明 a role of their own; 张工's superior is set by hand.
    let li_id = li["id"].as_str().unwrap();
    let res = app
        .patch(
            &format!("/api/v1/users/{li_id}"),
            &json!({"roles": ["sales", "legal"]}),
        )
        .await;
    assert!(res.status().is_success(), "{}", res.text().await.unwrap());
    let zhang_id = zhang["id"].as_str().unwrap();
    let res = app
        .patch(
            &format!("/api/v1/users/{zhang_id}"),
            &json!({"superiors": [wang["id"]]}),
        )
        .await;
    assert!(res.status().is_success(), "{}", res.text().await.unwrap());

    // A re-run without directory changes changes nothing.
    let again = sync(&app, &cfg).await;
    assert_eq!(
        (
            again.members.created,
            again.members.left,
            again.roles_granted,
            again.roles_revoked
        ),
        (0, 0, 0, 0),
        "{again:?}"
    );
    let liming = user(&app, "liming").await;
    assert_eq!(roles(&liming), ["legal", "sales"]);

    // The people page marks the role the directory grants (sales), not the admin's (legal).
    let admin = app.user("管理员", &["admin"]).await;
    let (status, page) = app
        .page_as(
            &admin,
            &format!("/admin/people/members/{}", liming["id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let line = |role: &str| {
        page.lines()
            .find(|l| l.contains(&format!("value=\"{role}\"")))
            .unwrap_or_else(|| panic!("no {role} checkbox in {page}"))
            .to_string()
    };
    assert!(line("sales").contains("目录同步"), "{}", line("sales"));
    assert!(!line("legal").contains("目录同步"), "{}", line("legal"));

    // 李明 leaves the sales group, 张工 gets 赵六 as manager, 赵六 is deleted.
    dir.modify(
        &format!("cn=sales,ou=groups,{SUFFIX}"),
        vec![Mod::Delete(
            "member",
            HashSet::from([person_dn("liming").as_str()]),
        )],
    )
    .await
    .unwrap()
    .success()
    .unwrap();
    dir.modify(
        &person_dn("zhanggong"),
        vec![Mod::Replace(
            "manager",
            HashSet::from([person_dn("wangjl").as_str()]),
        )],
    )
    .await
    .unwrap()
    .success()
    .unwrap();
    dir.delete(&person_dn("zhaoliu"))
        .await
        .unwrap()
        .success()
        .unwrap();

    let third = sync(&app, &cfg).await;
    assert_eq!(
        (third.members.left, third.roles_granted, third.roles_revoked),
        (1, 0, 2),
        "{third:?}"
    );
    // The LDAP-granted role went with the membership; the admin's stayed.
    assert_eq!(roles(&user(&app, "liming").await), ["legal"]);
    let zhao = user(&app, "zhaoliu").await;
    assert_eq!(zhao["status"], "left");
    assert_eq!(roles(&zhao), Vec::<&str>::new());
    let left_points: Vec<String> = sqlx::query_scalar(
        "SELECT actor_user_id FROM tracking_points WHERE action = 'platform.member_left' AND platform = 'ldap'",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(left_points, vec![zhao["id"].as_str().unwrap().to_string()]);
    // The superior set by hand stayed.
    let zhang = user(&app, "zhanggong").await;
    assert_eq!(zhang["superiors"], json!([wang["id"]]));
    assert_eq!(zhang["superior_source"], "manual");

    // Audited with the counts, the bind password nowhere.
    let audits: Vec<String> = sqlx::query_scalar(
        "SELECT detail FROM audit_log WHERE action = 'directory.sync' ORDER BY at",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(audits.len(), 3);
    let last: Value = serde_json::from_str(&audits[2]).unwrap();
    assert_eq!(last["left"], 1);
    assert_eq!(last["roles_revoked"], 2);
    assert!(audits.iter().all(|a| !a.contains(ROOT_PW)));

    app.stop().await;
}

#[tokio::test]
async fn a_wrong_bind_password_is_an_error_without_the_password_and_changes_nothing() {
    if !slapd_available() {
        return;
    }
    let slapd = start_slapd().await;
    let mut dir = admin(&slapd).await;
    fill(&mut dir).await;
    let app = spawn_app().await;
    let mut cfg = config(&slapd);
    cfg.bind_password = Some(closeloop::config::Secret::new("not-the-password"));
    let err = ldap::sync(
        &app.db,
        chrono::Utc::now().timestamp_millis(),
        &app.org_id,
        &cfg,
        &Actor::cli(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("rc=49"), "{err}");
    assert!(!err.contains("not-the-password"), "{err}");
    let users: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM user_identities WHERE platform = 'ldap'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(users, 0);
    app.stop().await;
}

#[tokio::test]
async fn the_cli_syncs_the_ldap_directory_and_config_check_redacts_the_bind_password() {
    if !slapd_available() {
        return;
    }
    let slapd = start_slapd().await;
    let mut dir = admin(&slapd).await;
    fill(&mut dir).await;
    let app = spawn_app().await;
    let work = tempfile::tempdir().unwrap();
    let data_key = if crate::helpers::on_postgres() {
        format!(
            "[security]\ndata_key = \"{}\"\n",
            crate::helpers::TEST_DATA_KEY
        )
    } else {
        String::new()
    };
    std::fs::write(
        work.path().join("closeloop.toml"),
        format!(
            "database_url = \"{}\"\n{data_key}\
             [ldap]\nurl = \"{}\"\nbind_dn = \"{ROOT_DN}\"\nbind_password = \"{ROOT_PW}\"\n\
             base_dn = \"ou=people,{SUFFIX}\"\n\
             [ldap.group_roles]\n\"cn=sales,ou=groups,{SUFFIX}\" = [\"sales\"]\n",
            app.database_url, slapd.url
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = crate::cli::closeloop(work.path())
            .args(args)
            .output()
            .expect("run closeloop");
        (
            out.status.success(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (ok, stdout, stderr) = run(&["directory", "sync", "--source", "ldap"]);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("created 4, updated 0, left 0") && stdout.contains("roles granted 2"),
        "{stdout}"
    );
    assert!(!format!("{stdout}{stderr}").contains(ROOT_PW));
    assert_eq!(roles(&user(&app, "zhaoliu").await), ["sales"]);
    let (ok, stdout, stderr) = run(&["directory", "sync", "--source", "ldap"]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("created 0, updated 4, left 0"), "{stdout}");
    assert!(
        stdout.contains("roles granted 0, roles revoked 0"),
        "{stdout}"
    );

    // A member named by their LDAP id gets a role from an admin, which the next sync keeps.
    let (ok, stdout, stderr) = run(&["users", "set-roles", "ldap:zhanggong", "legal"]);
    assert!(ok, "{stdout}{stderr}");
    let (ok, stdout, stderr) = run(&["directory", "sync", "--source", "ldap"]);
    assert!(ok, "{stdout}{stderr}");
    assert_eq!(roles(&user(&app, "zhanggong").await), ["legal"]);

    let (ok, stdout, stderr) = run(&["config", "check"]);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("[ldap]") && stdout.contains("[redacted]"),
        "{stdout}"
    );
    assert!(!format!("{stdout}{stderr}").contains(ROOT_PW), "{stdout}");
    app.stop().await;
}

#[tokio::test]
async fn a_server_with_an_ldap_section_syncs_at_start_as_a_job() {
    if !slapd_available() {
        return;
    }
    let slapd = start_slapd().await;
    let mut dir = admin(&slapd).await;
    fill(&mut dir).await;
    let app = spawn_app_with(&ldap_section(&slapd)).await;
    app.worker.drain().await.unwrap();
    assert_eq!(roles(&user(&app, "wangjl").await), ["manager", "sales"]);
    let actor: String =
        sqlx::query_scalar("SELECT actor_kind FROM audit_log WHERE action = 'directory.sync'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(actor, "system");
    let scheduled: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM schedules WHERE kind = 'directory.ldap_sync'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(scheduled, 1);
    app.stop().await;
}
