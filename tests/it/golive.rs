//! Going live: WeCom's domain-verification file served at the domain root from
//! `[wecom] domain_verify_file`, and a configuration naming anything else refused at load.

use std::path::Path;

use closeloop::Config;

use reqwest::Method;

use crate::helpers::{spawn_app_with, TestApp};

const NAME: &str = "WW_verify_7rG3kjVbXHngiald.txt";

fn wecom_toml(extra: &str) -> String {
    format!(
        "[wecom]\ncorp_id = \"wwcl0000000000001\"\nagent_id = 1000002\nsecret = \"app-secret\"\n\
         token = \"QDG6eK\"\nencoding_aes_key = \"jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C\"\n\
         # No WeCom API in these tests: the discard port refuses at once.\n\
         api_base = \"http://127.0.0.1:9\"\n{extra}"
    )
}

async fn request(app: &TestApp, method: Method, path: &str) -> reqwest::Response {
    app.client
        .request(method, app.url(path))
        .send()
        .await
        .unwrap()
}

fn verify_key(path: &Path) -> String {
    format!("domain_verify_file = '{}'\n", path.display())
}

#[tokio::test]
async fn the_verification_file_is_served_at_the_root_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(NAME);
    // Not just the code: a line ending and a byte that is not text must come back as they are.
    let content: &[u8] = b"7rG3kjVbXHngiald\r\n\xff";
    std::fs::write(&path, content).unwrap();
    let app = spawn_app_with(&wecom_toml(&verify_key(&path))).await;

    let res = request(&app, Method::GET, &format!("/{NAME}")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/plain");
    assert_eq!(res.bytes().await.unwrap().as_ref(), content);

    let head = request(&app, Method::HEAD, &format!("/{NAME}")).await;
    assert_eq!(head.status(), 200);

    // Only that name: another code, another case, another place or extension is not found.
    for other in [
        "/WW_verify_0000000000000000.txt",
        "/ww_verify_7rG3kjVbXHngiald.txt",
        "/WW_verify_7rG3kjVbXHngiald.TXT",
        "/WW_verify_7rG3kjVbXHngiald",
        "/static/WW_verify_7rG3kjVbXHngiald.txt",
    ] {
        let res = request(&app, Method::GET, other).await;
        assert_eq!(res.status(), 404, "{other}");
    }
    app.stop().await;
}

#[tokio::test]
async fn without_the_key_the_path_is_not_found() {
    let app = spawn_app_with(&wecom_toml("")).await;
    let res = request(&app, Method::GET, &format!("/{NAME}")).await;
    assert_eq!(res.status(), 404);
    app.stop().await;
}

#[test]
fn a_file_that_is_not_wecoms_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let refused = |path: &Path| {
        let e = Config::from_toml_only(&wecom_toml(&verify_key(path)))
            .err()
            .unwrap_or_else(|| panic!("{} was accepted", path.display()));
        assert_eq!(e.key, "wecom.domain_verify_file", "{e}");
        e.to_string()
    };

    // Names of another shape, though the file exists: only WeCom's pattern is served.
    for name in [
        "MP_verify_7rG3kjVbXHngiald.txt",
        "WW_verify_.txt",
        "WW_verify_7rG3-kjVbXHngiald.txt",
        "WW_verify_7rG3kjVbXHngiald.html",
        "WW_verify_7rG3kjVbXHngiald.txt.bak",
        "ww_verify_7rG3kjVbXHngiald.txt",
        "index.html",
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, "code").unwrap();
        let message = refused(&path);
        assert!(message.contains("WW_verify_"), "{message}");
    }
    // A path whose last part leaves the folder names no file at all.
    let message = refused(&dir.path().join(NAME).join(".."));
    assert!(message.contains("WW_verify_"), "{message}");

    // The right name, but no file, a folder, or far more than a code.
    let message = refused(&dir.path().join(NAME));
    assert!(message.contains("cannot read"), "{message}");
    let folder = dir
        .path()
        .join("sub")
        .join("WW_verify_AAAAAAAAAAAAAAAA.txt");
    std::fs::create_dir_all(&folder).unwrap();
    assert!(refused(&folder).contains("is not a file"));
    let big = dir.path().join("WW_verify_BBBBBBBBBBBBBBBB.txt");
    std::fs::write(&big, vec![b'a'; 4097]).unwrap();
    assert!(refused(&big).contains("4097 bytes"));

    // The file WeCom gives is accepted, and shown by `config check`.
    let good = dir.path().join(NAME);
    std::fs::write(&good, "7rG3kjVbXHngiald").unwrap();
    let config = Config::from_toml_only(&wecom_toml(&verify_key(&good))).unwrap();
    assert_eq!(
        config.wecom.as_ref().unwrap().domain_verify_name(),
        Some(NAME)
    );
    assert!(config.redacted_toml().contains(NAME));
}
