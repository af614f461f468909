#!/usr/bin/env python3
"""Scripted mock of the Anthropic Messages API, good enough for the real
Claude Code CLI (checked against 2.1.197) to run fully offline.

Usage:
    python3 mock_anthropic.py --port 0 --script SCRIPT.json --log REQUESTS.jsonl
        [--dump-dir DIR]   # optional: write every request body to DIR/NNNN.json

Prints exactly one line "listening on <port>" to stdout (flushed) once bound.
Binds 127.0.0.1 only. Stdlib only.

SCRIPT.json is re-read on every request: {"replies": [ ... ]}. Replies are
consumed in order by "main" requests (a counter lives in the server, so a test
may rewrite the file to append replies). Each reply is one of:
    {"text": "..."}
    {"tool": "Bash", "input": {...}}            (optionally "text": "..." first)
    {"error": 429, "type": "rate_limit_error", "message": "...",
     "headers": {"retry-after": "60", ...}}     (any status; optional "times": N
                                                 = serve it N times before it is
                                                 consumed, to defeat CLI retries;
                                                 optional "body": {...} = raw body)
    {"delay_ms": N, "text": "..."}               (slow stream: sleep N ms between
                                                 deltas; one delta per word)
When replies run out the answer is {"text": "ok"}.

Side requests. Claude Code also calls /v1/messages for things that are not the
agent's turn: session title / topic generation, quota probe (max_tokens=1),
summaries, etc. The model name is NOT usable: in 2.1.197 with an API key the
title request uses the same model as the main turn (claude-opus-4-8), with
max_tokens 64000. Rule used here (verified against 2.1.197 request dumps):
a request is a MAIN turn iff it carries a non-empty "tools" array; every main
agent turn sends the full tool list (27 tools: Bash, Read, Edit, ...), while
the side requests (session-title generation, which has
output_config.format=json_schema {"title"} and no tools) send none.
Additionally a request whose max_tokens <= 1 (quota-probe style) is always
side. Side requests get a fixed short text ("Mock title", or a JSON object
{"title": "Mock title"} when a json_schema output format is requested) and
never touch the script counter.

Every request appends one JSON line to REQUESTS.jsonl:
    {"method","path","model","stream","side","last_user_text", ...extra}
"""
import argparse
import json
import os
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SIDE_TEXT = "Mock title"


class State:
    def __init__(self, script, log, dump_dir):
        self.script = script
        self.log = log
        self.dump_dir = dump_dir
        self.lock = threading.Lock()
        self.counter = 0        # index of next scripted reply
        self.served_times = 0   # how many times the current reply was served
        self.nreq = 0

    def load_replies(self):
        try:
            with open(self.script) as f:
                return json.load(f).get("replies", [])
        except (OSError, ValueError):
            return []

    def next_reply(self):
        with self.lock:
            replies = self.load_replies()
            if self.counter >= len(replies):
                return {"text": "ok"}, None
            r = replies[self.counter]
            idx = self.counter
            times = int(r.get("times", 1)) if isinstance(r, dict) else 1
            self.served_times += 1
            if self.served_times >= times:
                self.counter += 1
                self.served_times = 0
            return r, idx

    def write_log(self, entry):
        if not self.log:
            return
        with self.lock:
            with open(self.log, "a") as f:
                f.write(json.dumps(entry) + "\n")
                f.flush()

    def dump(self, raw):
        if not self.dump_dir:
            return
        with self.lock:
            self.nreq += 1
            n = self.nreq
        with open(os.path.join(self.dump_dir, "%04d.json" % n), "wb") as f:
            f.write(raw)


def is_reminder(t):
    return t.lstrip().startswith("<system-reminder>")


def last_user_text(body):
    """Text of the last user message (system-reminder blocks and tool results
    excluded); '' if the last user message has no plain text."""
    for m in reversed(body.get("messages") or []):
        if m.get("role") != "user":
            continue
        c = m.get("content")
        if isinstance(c, str):
            return c
        parts = []
        for b in c or []:
            if isinstance(b, dict) and b.get("type") == "text" and not is_reminder(b.get("text", "")):
                parts.append(b.get("text", ""))
        return "\n".join(parts)
    return ""


def is_side(body):
    tools = body.get("tools")
    if not tools:
        return True
    mt = body.get("max_tokens")
    if isinstance(mt, int) and mt <= 1:
        return True
    return False


def side_text(body):
    """Fixed short answer for side requests. Title generation asks for
    structured output (output_config.format = json_schema {title}); answer
    with a JSON object filling every required string property."""
    fmt = (body.get("output_config") or {}).get("format") or {}
    if fmt.get("type") == "json_schema":
        schema = fmt.get("schema") or {}
        props = schema.get("properties") or {}
        obj = {}
        for k in schema.get("required") or list(props):
            t = (props.get(k) or {}).get("type")
            obj[k] = SIDE_TEXT if t in (None, "string") else ([] if t == "array" else (False if t == "boolean" else 0 if t in ("integer", "number") else {}))
        return json.dumps(obj)
    return SIDE_TEXT


def usage(inp, out):
    return {
        "input_tokens": inp,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": out,
        "service_tier": "standard",
    }


def build_blocks(reply):
    """-> (content blocks list, stop_reason)"""
    blocks = []
    if "tool" in reply:
        if reply.get("text"):
            blocks.append({"type": "text", "text": reply["text"]})
        blocks.append({
            "type": "tool_use",
            "id": "toolu_" + uuid.uuid4().hex[:24],
            "name": reply["tool"],
            "input": reply.get("input", {}),
        })
        return blocks, "tool_use"
    blocks.append({"type": "text", "text": str(reply.get("text", "ok"))})
    return blocks, "end_turn"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mock-anthropic/1"

    def log_message(self, fmt, *args):  # keep stderr quiet
        pass

    @property
    def st(self):
        return self.server.state

    def _send_json(self, status, obj, headers=None):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("request-id", "req_" + uuid.uuid4().hex[:24])
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _read_body(self):
        n = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(n) if n else b""
        return raw

    def do_HEAD(self):
        self.st.write_log({"method": "HEAD", "path": self.path, "model": None,
                           "stream": False, "side": True, "last_user_text": ""})
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", "0")
        self.end_headers()

    def do_GET(self):
        self.st.write_log({"method": "GET", "path": self.path, "model": None,
                           "stream": False, "side": True, "last_user_text": ""})
        p = self.path.split("?")[0]
        if p.startswith("/v1/models"):
            self._send_json(200, {"data": [], "has_more": False, "first_id": None, "last_id": None})
        else:
            self._send_json(200, {})

    def do_POST(self):
        raw = self._read_body()
        self.st.dump(raw)
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        p = self.path.split("?")[0]
        model = body.get("model")
        stream = bool(body.get("stream"))
        if p.endswith("/count_tokens"):
            self.st.write_log({"method": "POST", "path": self.path, "model": model,
                               "stream": False, "side": True, "last_user_text": last_user_text(body)})
            self._send_json(200, {"input_tokens": max(1, len(raw) // 4)})
            return
        if not p.endswith("/v1/messages"):
            self.st.write_log({"method": "POST", "path": self.path, "model": model,
                               "stream": stream, "side": True, "last_user_text": ""})
            self._send_json(200, {})
            return
        side = is_side(body)
        idx = None
        if side:
            reply = {"text": side_text(body)}
        else:
            reply, idx = self.st.next_reply()
        self.st.write_log({
            "method": "POST", "path": self.path, "model": model, "stream": stream,
            "side": side, "last_user_text": last_user_text(body),
            "reply_index": idx, "max_tokens": body.get("max_tokens"),
            "n_tools": len(body.get("tools") or []),
            "ts": round(time.time(), 3),
        })
        if "error" in reply:
            status = int(reply["error"])
            err_body = reply.get("body") or {
                "type": "error",
                "error": {"type": reply.get("type", "api_error"),
                          "message": reply.get("message", "mock error")},
            }
            self._send_json(status, err_body, reply.get("headers"))
            return
        inp = max(1, len(raw) // 4)
        blocks, stop = build_blocks(reply)
        msg_id = "msg_" + uuid.uuid4().hex[:24]
        if not stream:
            self._send_json(200, {
                "id": msg_id, "type": "message", "role": "assistant", "model": model,
                "content": blocks, "stop_reason": stop, "stop_sequence": None,
                "usage": usage(inp, 10),
            })
            return
        self._stream(msg_id, model, blocks, stop, inp, int(reply.get("delay_ms", 0)))

    def _stream(self, msg_id, model, blocks, stop, inp, delay_ms):
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.send_header("request-id", "req_" + uuid.uuid4().hex[:24])
        self.end_headers()
        self.close_connection = True

        def ev(name, obj):
            self.wfile.write(("event: %s\ndata: %s\n\n" % (name, json.dumps(obj))).encode())
            self.wfile.flush()

        def pause():
            if delay_ms:
                time.sleep(delay_ms / 1000.0)

        try:
            ev("message_start", {"type": "message_start", "message": {
                "id": msg_id, "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": None, "stop_sequence": None,
                "usage": usage(inp, 1)}})
            out = 0
            for i, b in enumerate(blocks):
                if b["type"] == "text":
                    ev("content_block_start", {"type": "content_block_start", "index": i,
                                               "content_block": {"type": "text", "text": ""}})
                    if i == 0:
                        ev("ping", {"type": "ping"})
                    words = b["text"].split(" ") if delay_ms else [b["text"]]
                    for j, w in enumerate(words):
                        chunk = w if j == len(words) - 1 else w + " "
                        pause()
                        ev("content_block_delta", {"type": "content_block_delta", "index": i,
                                                   "delta": {"type": "text_delta", "text": chunk}})
                        out += 1
                else:
                    ev("content_block_start", {"type": "content_block_start", "index": i,
                                               "content_block": {"type": "tool_use", "id": b["id"],
                                                                 "name": b["name"], "input": {}}})
                    if i == 0:
                        ev("ping", {"type": "ping"})
                    pause()
                    ev("content_block_delta", {"type": "content_block_delta", "index": i,
                                               "delta": {"type": "input_json_delta",
                                                         "partial_json": json.dumps(b["input"])}})
                    out += 5
                ev("content_block_stop", {"type": "content_block_stop", "index": i})
            ev("message_delta", {"type": "message_delta",
                                 "delta": {"stop_reason": stop, "stop_sequence": None},
                                 "usage": {"input_tokens": inp, "cache_creation_input_tokens": 0,
                                           "cache_read_input_tokens": 0, "output_tokens": max(1, out)}})
            ev("message_stop", {"type": "message_stop"})
        except (BrokenPipeError, ConnectionResetError):
            pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--script", required=True)
    ap.add_argument("--log", default=None)
    ap.add_argument("--dump-dir", default=None)
    a = ap.parse_args()
    if a.dump_dir:
        os.makedirs(a.dump_dir, exist_ok=True)
    srv = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    srv.daemon_threads = True
    srv.state = State(a.script, a.log, a.dump_dir)
    sys.stdout.write("listening on %d\n" % srv.server_address[1])
    sys.stdout.flush()
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
