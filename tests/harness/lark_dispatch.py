"""Feeds callback requests to lark-oapi's public event dispatcher and prints what it made of
each, for the differential test in tests/it/hardening_platforms.rs.

stdin: {"encrypt_key", "verification_token", "p2_types", "p1_types",
        "cases": [{"headers": {name: value}, "body": "<raw body>"}]}
stdout: one outcome per case, in order: "challenge:<value>", "event:<type>" or "refused".
"""

import json
import sys

import lark_oapi as lark
from lark_oapi.core.model import RawRequest


def main() -> None:
    spec = json.load(sys.stdin)
    seen = []
    builder = lark.EventDispatcherHandler.builder(
        spec["encrypt_key"], spec["verification_token"], lark.LogLevel.CRITICAL
    )
    for event_type in spec["p2_types"]:
        builder.register_p2_customized_event(
            event_type, lambda _event, t=event_type: seen.append(t)
        )
    for event_type in spec["p1_types"]:
        builder.register_p1_customized_event(
            event_type, lambda _event, t=event_type: seen.append(t)
        )
    handler = builder.build()
    outcomes = []
    for case in spec["cases"]:
        request = RawRequest()
        request.uri = "/callback/feishu"
        request.headers = case["headers"]
        request.body = case["body"].encode("utf-8")
        seen.clear()
        response = handler.do(request)
        if response.status_code != 200:
            outcomes.append("refused")
            continue
        answer = json.loads(response.content)
        if "challenge" in answer:
            outcomes.append("challenge:" + str(answer["challenge"]))
        elif seen:
            outcomes.append("event:" + seen[0])
        else:
            outcomes.append("refused")
    json.dump(outcomes, sys.stdout)


if __name__ == "__main__":
    main()
