#!/usr/bin/python3
"""Parses a message with Python's email package (an independent MIME parser)
and prints what a reader would see, as JSON: decoded headers, parser defects,
the content-type tree and every leaf part's decoded payload."""
import base64
import email
import email.policy
import json
import sys

raw = open(sys.argv[1], "rb").read()
msg = email.message_from_bytes(raw, policy=email.policy.default)


def tree(part):
    if part.is_multipart():
        return {"type": part.get_content_type(), "parts": [tree(p) for p in part.iter_parts()]}
    return {"type": part.get_content_type()}


leaves = []
for part in msg.walk():
    if part.is_multipart():
        continue
    payload = part.get_payload(decode=True) or b""
    leaves.append({
        "type": part.get_content_type(),
        "cte": part.get("Content-Transfer-Encoding", ""),
        "disposition": part.get_content_disposition() or "",
        "filename": part.get_filename() or "",
        "content_id": part.get("Content-ID", ""),
        "charset": part.get_content_charset() or "",
        "payload_b64": base64.b64encode(payload).decode(),
    })

defects = [type(d).__name__ for d in msg.defects]
for part in msg.walk():
    defects += [type(d).__name__ for d in part.defects]

longest = max(len(line) for line in raw.split(b"\r\n"))
bare_lf = raw.replace(b"\r\n", b"").count(b"\n")
print(json.dumps({
    "headers": {k.lower(): str(v) for k, v in msg.items()},
    "header_count": {k.lower(): len(msg.get_all(k)) for k in msg.keys()},
    "tree": tree(msg),
    "leaves": leaves,
    "defects": defects,
    "longest_line": longest,
    "bare_lf": bare_lf,
}))
