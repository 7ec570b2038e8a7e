//! Verify + decrypt + parse of a 1 KB WeCom callback on one core (BENCHMARKS.md).
//!
//! `cargo bench --bench callback` prints nanoseconds per callback and writes the exact
//! inputs to `target/callback-bench-input.json`, so `benches/wechatpy_callback.py` can time
//! wechatpy on the same bytes in the same run.

use std::hint::black_box;
use std::time::Instant;

use closeloop::platform::crypto::EncodingAesKey;
use closeloop::platform::wecom::crypto::{CallbackQuery, WecomCrypto};
use closeloop::platform::wecom::events;

const CORP: &str = "wwcl0000000000001";
const TOKEN: &str = "QDG6eK";
const KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";

fn main() {
    let crypto = WecomCrypto::new(TOKEN, EncodingAesKey::parse(KEY).unwrap(), CORP.to_string());
    let mut content = String::from("客户提出价格异议，希望下周安排技术交流。");
    while content.len() < 760 {
        content.push_str("需要确认预算范围与交付排期。");
    }
    let plain = format!(
        "<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><FromUserName><![CDATA[liming]]></FromUserName>\
         <CreateTime>1764206400</CreateTime><MsgType><![CDATA[text]]></MsgType>\
         <Content><![CDATA[{content}]]></Content><MsgId>7091234567890123456</MsgId><AgentID>1000002</AgentID></xml>"
    );
    let encrypted = crypto.encrypt(&plain, *b"0123456789abcdef");
    let (ts, nonce) = ("1764206400", "1372623149");
    let sig = crypto.signature(ts, nonce, &encrypted);
    let body = format!(
        "<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><AgentID><![CDATA[1000002]]></AgentID>\
         <Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"
    );
    let query = CallbackQuery {
        msg_signature: &sig,
        timestamp: ts,
        nonce,
    };
    let run = || {
        let cb = crypto
            .decrypt_callback(black_box(&query), black_box(body.as_bytes()))
            .unwrap();
        let event = events::parse(&cb.message).unwrap();
        black_box(events::dedupe_key(&event, &cb.message));
    };
    for _ in 0..20_000 {
        run();
    }
    let iterations = 200_000u32;
    let mut samples = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..iterations {
            run();
        }
        samples.push(start.elapsed().as_nanos() as f64 / f64::from(iterations));
    }
    samples.sort_by(f64::total_cmp);
    println!(
        "wecom callback ({} B plaintext, {} B body): verify + decrypt + parse + dedupe key: median {:.2} µs (runs: {})",
        plain.len(),
        body.len(),
        samples[2] / 1000.0,
        samples.iter().map(|s| format!("{:.2}", s / 1000.0)).collect::<Vec<_>>().join(", ")
    );
    let input = serde_json::json!({
        "token": TOKEN, "encoding_aes_key": KEY, "corp_id": CORP,
        "timestamp": ts, "nonce": nonce, "msg_signature": sig, "body": body,
    });
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/target/callback-bench-input.json"
    );
    std::fs::write(path, input.to_string()).expect("write bench input");
}
