"""Times wechatpy (the common Python SDK) on the exact callback `cargo bench --bench callback`
wrote to target/callback-bench-input.json: verify + decrypt + parse, one core."""
import json
import pathlib
import statistics
import timeit

from wechatpy.enterprise import parse_message
from wechatpy.enterprise.crypto import WeChatCrypto

ROOT = pathlib.Path(__file__).resolve().parent.parent
cfg = json.loads((ROOT / "target" / "callback-bench-input.json").read_text())
crypto = WeChatCrypto(cfg["token"], cfg["encoding_aes_key"], cfg["corp_id"])


def run():
    xml = crypto.decrypt_message(cfg["body"], cfg["msg_signature"], cfg["timestamp"], cfg["nonce"])
    parse_message(xml)


run()
n = 20_000
samples = sorted(t / n * 1e6 for t in timeit.repeat(run, number=n, repeat=5))
print(
    f"wechatpy: verify + decrypt + parse: median {statistics.median(samples):.2f} µs "
    f"(runs: {', '.join(f'{s:.2f}' for s in samples)})"
)
