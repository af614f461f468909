#!/usr/bin/env python3
"""Offline mock of the OpenAI Responses API, good enough for codex-cli 0.171.0.

Stdlib only. Binds 127.0.0.1 only.

    python3 mock_openai.py --port 0 --script SCRIPT.json --log REQUESTS.jsonl [--dump-dir DIR]

Prints exactly one line `listening on <port>` (flushed) once bound.

Point codex at it with a private CODEX_HOME whose config.toml contains e.g.

    model_provider = "mock"
    model = "mock-model"
    [model_providers.mock]
    name = "mock"
    base_url = "http://127.0.0.1:PORT/v1"
    wire_api = "responses"
    env_key = "MOCK_API_KEY"

SCRIPT.json is re-read on every request:

    {"replies": [
        {"text": "hello"},                                 # plain assistant message
        {"delay_ms": 2000, "text": "slow"},                # wait, then the message
        {"shell": ["bash", "-lc", "sleep 30"]},           # a tool call codex executes
        {"shell": ["bash", "-lc", "rm -rf x"], "approval": true},
                                                           # same, but asks codex to
                                                           # escalate (approval prompt
                                                           # under -a on-request)
        {"error": 429, "body": {...}, "headers": {...}},   # HTTP error
        {"usage_limit": 3600}                              # shorthand: 429 usage_limit_reached
                                                           # with resets_at = now + 3600
    ]}

Replies are consumed in order by a server-side counter; when they run out the
reply is {"text": "ok"}. A request that carries a tool output
(function_call_output / custom_tool_call_output) for the tool call we emitted is
a normal "turn" request and consumes the next scripted reply.

Tool calls: codex 0.171.0 advertises the tool `exec_command` (unified exec,
arguments {"cmd": "...", "workdir":..., "yield_time_ms":...}) and/or `shell`
(arguments {"command": [...]}) depending on features; the mock looks at the
`tools` array of the request and uses whichever is offered (exec_command
preferred, then shell, then shell_command, then local_shell).

Side requests: codex may issue auxiliary model requests that are not user turns
(e.g. thread title / summary generation, compaction, memory/"auto review"
requests).  They are recognised by heuristics in is_side_request() (no tools
offered + an instructions text that is not the main agent prompt, or a
known-auxiliary marker in the input) and answered with fixed text WITHOUT
consuming a scripted reply, so scripts stay deterministic.

Every request is appended to the log as one JSON line:
    {"method","path","model","stream","side","last_user_text"}
(plus "reply" - what was answered - for debugging).
"""

import argparse
import json
import os
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
STATE = {"counter": 0, "seq": 0}
ARGS = None

SIDE_MARKERS = (
    # Heuristic markers of auxiliary (non-turn) prompts. Kept broad on purpose.
    "generate a title",
    "single-line task title",  # codex 0.171.0 thread-title request (no tools)
    "generate a concise title",
    "short title",
    "summarize the conversation",
    "create a summary",
    "context checkpoint compaction",
    "handoff summary",
)


def load_replies():
    try:
        with open(ARGS.script, "r", encoding="utf-8") as f:
            data = json.load(f)
        return list(data.get("replies", []))
    except (OSError, ValueError):
        return []


def next_reply():
    with LOCK:
        replies = load_replies()
        i = STATE["counter"]
        STATE["counter"] += 1
    if i < len(replies):
        return replies[i]
    return {"text": "ok"}


def text_of_content(content):
    if isinstance(content, str):
        return content
    out = []
    if isinstance(content, list):
        for part in content:
            if isinstance(part, dict):
                t = part.get("text")
                if isinstance(t, str):
                    out.append(t)
    return "".join(out)


def last_user_text(body):
    inp = body.get("input")
    if isinstance(inp, str):
        return inp
    last = None
    if isinstance(inp, list):
        for item in inp:
            if not isinstance(item, dict):
                continue
            if item.get("role") == "user" and item.get("type", "message") == "message":
                t = text_of_content(item.get("content"))
                # codex injects <environment_context>/<user_instructions> as
                # user messages; skip those when looking for the real text.
                s = t.lstrip()
                if s.startswith("<environment_context") or s.startswith("<user_instructions") \
                        or s.startswith("# AGENTS.md") or s.startswith("<permissions") \
                        or s.startswith("<INSTRUCTIONS>") or s.startswith("<skills_instructions") \
                        or s.startswith("<user_shell_command"):
                    continue
                last = t
    return last


def tool_names(body):
    names = []
    for t in body.get("tools") or []:
        if not isinstance(t, dict):
            continue
        n = t.get("name") or t.get("type")
        if n:
            names.append(n)
    return names


def is_side_request(body):
    """Auxiliary requests that are not user turns.

    The main agent turn always offers tools (exec_command/shell/apply_patch...).
    Title/summary/compaction helpers do not, or carry a recognisable prompt.
    """
    if not body.get("input"):
        return False
    blob = (str(body.get("instructions") or "") + " " + json.dumps(body.get("input"))[-4000:]).lower()
    if any(m in blob for m in SIDE_MARKERS):
        return True
    if not body.get("tools"):
        return True
    return False


def sse(wfile, event, data):
    with LOCK:
        STATE["seq"] += 1
        data = dict(data)
        data["sequence_number"] = STATE["seq"]
    payload = "event: %s\ndata: %s\n\n" % (event, json.dumps(data))
    wfile.write(payload.encode("utf-8"))
    wfile.flush()


def usage_obj():
    return {
        "input_tokens": 100,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 10,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 110,
    }


def response_obj(rid, model, status, output=None):
    r = {
        "id": rid,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": model,
        "output": output or [],
    }
    if status == "completed":
        r["usage"] = usage_obj()
    return r


def message_item(mid, text, status):
    return {
        "type": "message",
        "id": mid,
        "status": status,
        "role": "assistant",
        "content": ([] if status == "in_progress" else
                    [{"type": "output_text", "text": text, "annotations": []}]),
    }


def tool_call_item(body, argv, approval, yield_ms=None):
    names = tool_names(body)
    call_id = "call_" + uuid.uuid4().hex[:16]
    iid = "fc_" + uuid.uuid4().hex[:16]
    cmdline = argv if isinstance(argv, str) else None
    if cmdline is None:
        # ["bash","-lc","X"] -> "X" for string-command tools
        if len(argv) >= 3 and argv[1] in ("-lc", "-c"):
            cmdline = argv[2]
        else:
            cmdline = " ".join(argv)
    argv_list = argv if isinstance(argv, list) else ["bash", "-lc", argv]
    if "exec_command" in names:
        # yield_time_ms: how long codex waits for the command before it
        # returns "Process running with session ID N" to the model and the
        # command becomes a "background terminal". Codex clamps it (max 30 s);
        # default here 30000 so a `sleep 30` keeps the turn busy.
        args = {"cmd": cmdline, "yield_time_ms": int(yield_ms or 30000)}
        if approval:
            args["sandbox_permissions"] = "require_escalated"
            args["justification"] = "mock needs to run this outside the sandbox"
        return {"type": "function_call", "id": iid, "call_id": call_id, "status": "completed",
                "name": "exec_command", "arguments": json.dumps(args)}
    if "shell_command" in names and "shell" not in names:
        args = {"command": cmdline}
        if approval:
            args["sandbox_permissions"] = "require_escalated"
            args["justification"] = "mock needs to run this outside the sandbox"
        return {"type": "function_call", "id": iid, "call_id": call_id, "status": "completed",
                "name": "shell_command", "arguments": json.dumps(args)}
    if "shell" in names or "local_shell" not in names:
        args = {"command": argv_list}
        if approval:
            args["sandbox_permissions"] = "require_escalated"
            args["justification"] = "mock needs to run this outside the sandbox"
        return {"type": "function_call", "id": iid, "call_id": call_id, "status": "completed",
                "name": "shell", "arguments": json.dumps(args)}
    return {"type": "local_shell_call", "id": iid, "call_id": call_id, "status": "completed",
            "action": {"type": "exec", "command": argv_list}}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mock-openai/1"

    def log_message(self, fmt, *args):  # quiet
        pass

    def _read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        if raw and (self.headers.get("Content-Encoding") or "").lower() == "zstd":
            return raw, None  # cannot decode without zstd; log as undecodable
        try:
            return raw, json.loads(raw.decode("utf-8")) if raw else {}
        except ValueError:
            return raw, None

    def _log(self, rec, raw=None):
        if ARGS.log:
            with LOCK:
                with open(ARGS.log, "a", encoding="utf-8") as f:
                    f.write(json.dumps(rec) + "\n")
        if ARGS.dump_dir:
            with LOCK:
                STATE.setdefault("dumpn", 0)
                STATE["dumpn"] += 1
                n = STATE["dumpn"]
            p = os.path.join(ARGS.dump_dir, "%04d-%s-%s.txt" % (
                n, self.command, self.path.strip("/").replace("/", "_")[:40]))
            with open(p, "wb") as f:
                f.write(("%s %s\n" % (self.command, self.path)).encode())
                for k, v in self.headers.items():
                    if k.lower() == "authorization":
                        v = v[:12] + "..."
                    f.write(("%s: %s\n" % (k, v)).encode())
                f.write(b"\n")
                f.write(raw or b"")

    def _json(self, code, obj, headers=None):
        data = json.dumps(obj).encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        path = self.path.split("?")[0]
        rec = {"method": "GET", "path": self.path, "model": None, "stream": False,
               "side": True, "last_user_text": None}
        self._log(rec)
        if path.endswith("/models"):
            # codex's models manager expects {"models": [...]}; an empty list
            # makes it fall back to its built-in model presets.
            self._json(200, {"models": [], "data": [], "object": "list"})
        else:
            self._json(404, {"error": {"message": "not found", "type": "not_found"}})

    def do_POST(self):
        path = self.path.split("?")[0]
        raw, body = self._read_body()
        if body is None:
            body = {}
        model = body.get("model")
        stream = bool(body.get("stream"))
        side = False
        reply = None
        if path.endswith("/responses") and not path.endswith("/compact"):
            side = is_side_request(body)
            reply = {"text": "Mock title"} if side else next_reply()
        elif path.endswith("/responses/compact"):
            side = True
        rec = {"method": "POST", "path": self.path, "model": model, "stream": stream,
               "side": side, "last_user_text": last_user_text(body),
               "tools": tool_names(body), "reply": reply}
        self._log(rec, raw)
        if path.endswith("/responses/compact"):
            self._json(200, {"output": [message_item("msg_c", "compacted", "completed")]})
            return
        if not path.endswith("/responses"):
            self._json(404, {"error": {"message": "not found", "type": "not_found"}})
            return
        self._respond(body, reply, model or "mock-model", stream)

    def _respond(self, body, reply, model, stream):
        if reply.get("delay_ms"):
            time.sleep(reply["delay_ms"] / 1000.0)
        if "usage_limit" in reply:
            secs = int(reply["usage_limit"])
            reply = {"error": 429, "body": {"error": {
                "type": "usage_limit_reached",
                "message": "The usage limit has been reached",
                "plan_type": "plus",
                "resets_at": int(time.time()) + secs,
                "resets_in_seconds": secs}}}
        if "error" in reply:
            code = int(reply["error"])
            b = reply.get("body", {"error": {"message": "mock error", "type": "server_error"}})
            self._json(code, b, reply.get("headers"))
            return
        rid = "resp_" + uuid.uuid4().hex[:16]
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        for k, v in (reply.get("headers") or {}).items():
            self.send_header(k, str(v))
        self.end_headers()
        self.close_connection = True
        w = self.wfile
        try:
            sse(w, "response.created", {"type": "response.created",
                                        "response": response_obj(rid, model, "in_progress")})
            sse(w, "response.in_progress", {"type": "response.in_progress",
                                            "response": response_obj(rid, model, "in_progress")})
            items = []
            if "shell" in reply:
                item = tool_call_item(body, reply["shell"], reply.get("approval"),
                                      reply.get("yield_time_ms"))
                sse(w, "response.output_item.added", {"type": "response.output_item.added",
                                                      "output_index": 0, "item": item})
                sse(w, "response.output_item.done", {"type": "response.output_item.done",
                                                     "output_index": 0, "item": item})
                items.append(item)
            else:
                text = str(reply.get("text", "ok"))
                mid = "msg_" + uuid.uuid4().hex[:16]
                sse(w, "response.output_item.added", {
                    "type": "response.output_item.added", "output_index": 0,
                    "item": message_item(mid, "", "in_progress")})
                sse(w, "response.content_part.added", {
                    "type": "response.content_part.added", "item_id": mid, "output_index": 0,
                    "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}})
                # a few deltas so the TUI actually streams
                step = max(1, len(text) // 3)
                for i in range(0, len(text), step):
                    sse(w, "response.output_text.delta", {
                        "type": "response.output_text.delta", "item_id": mid, "output_index": 0,
                        "content_index": 0, "delta": text[i:i + step]})
                sse(w, "response.output_text.done", {
                    "type": "response.output_text.done", "item_id": mid, "output_index": 0,
                    "content_index": 0, "text": text})
                sse(w, "response.content_part.done", {
                    "type": "response.content_part.done", "item_id": mid, "output_index": 0,
                    "content_index": 0, "part": {"type": "output_text", "text": text, "annotations": []}})
                item = message_item(mid, text, "completed")
                sse(w, "response.output_item.done", {"type": "response.output_item.done",
                                                     "output_index": 0, "item": item})
                items.append(item)
            sse(w, "response.completed", {"type": "response.completed",
                                          "response": response_obj(rid, model, "completed", items)})
        except (BrokenPipeError, ConnectionResetError):
            pass


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--script", required=True)
    ap.add_argument("--log", default=None)
    ap.add_argument("--dump-dir", default=None,
                    help="optional: write every raw request (headers+body) here")
    ARGS = ap.parse_args()
    if ARGS.dump_dir:
        os.makedirs(ARGS.dump_dir, exist_ok=True)
    srv = ThreadingHTTPServer(("127.0.0.1", ARGS.port), Handler)
    srv.daemon_threads = True
    sys.stdout.write("listening on %d\n" % srv.server_address[1])
    sys.stdout.flush()
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
