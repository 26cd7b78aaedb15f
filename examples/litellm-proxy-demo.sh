#!/usr/bin/env bash
# End-to-end check: the official `openai` client -> LiteLLM proxy -> `ttc serve` (issue #17).
# Self-contained: builds the proxy venv if missing (never touches the project venv), starts
# ttc serve and two LiteLLM proxies on free loopback ports, checks answers, usage, the `ttc`
# field and the trace store, and kills exactly the processes it started on exit.
# Usage: bash examples/litellm-proxy-demo.sh        (exit 0: every hard check passed)
set -euo pipefail

MAIN=${TTC_MAIN:-$(cd "$(dirname "$0")/.." && pwd)}
PVENV=${PROXY_VENV:-/tmp/proxyvenv}
LITELLM_VERSION=1.106.12   # newest whose [proxy] extra resolves on this index (1.108+ pin missing litellm-proxy-extras)
DEMO=${PROXY_DEMO_DIR:-/tmp/proxydemo}
DB="sqlite:///$DEMO/ttc.db"

if [ ! -x "$PVENV/bin/litellm" ]; then
  python3 -m venv "$PVENV"
  "$PVENV/bin/pip" install -q "litellm[proxy]==$LITELLM_VERSION"   # pulls no torch
fi
mkdir -p "$DEMO"
rm -f "$DEMO/ttc.db"

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_up() {  # URL LOGFILE
  for _ in $(seq 120); do curl -sf "$1" > /dev/null && return 0; sleep 1; done
  echo "FAIL: $1 never came up; log tail:"; tail -20 "$2"; exit 1
}

TTC_PORT=$(free_port); PROXY_PORT=$(free_port); CLI_PORT=$(free_port)
# LiteLLM refuses to start without a master key; this one lives only for the demo.
export LITELLM_MASTER_KEY="sk-$(openssl rand -hex 32)"
export LITELLM_LOCAL_MODEL_COST_MAP=True   # no network: skip fetching the remote model-price map

(cd "$MAIN" && exec .venv/bin/ttc serve --port "$TTC_PORT" --db "$DB") > "$DEMO/ttc.log" 2>&1 &
PIDS+=($!)

# Proxy A (config): a wildcard route, so the requested model name (with a strategy prefix) reaches ttc as sent.
cat > "$DEMO/litellm.yaml" <<EOF
model_list:
  - model_name: "*"
    litellm_params:
      model: "openai/*"
      api_base: "http://127.0.0.1:$TTC_PORT/v1"
      api_key: "-"
EOF
"$PVENV/bin/litellm" --config "$DEMO/litellm.yaml" --host 127.0.0.1 --port "$PROXY_PORT" --telemetry False \
  > "$DEMO/litellm.log" 2>&1 &
PIDS+=($!)
# Proxy B (the one-line CLI form): every request's model is rewritten to the --model given.
OPENAI_API_KEY=- "$PVENV/bin/litellm" --model openai/countdown-direct --api_base "http://127.0.0.1:$TTC_PORT/v1" \
  --host 127.0.0.1 --port "$CLI_PORT" --telemetry False > "$DEMO/litellm-cli.log" 2>&1 &
PIDS+=($!)

wait_up "http://127.0.0.1:$TTC_PORT/health" "$DEMO/ttc.log"
wait_up "http://127.0.0.1:$PROXY_PORT/health/liveliness" "$DEMO/litellm.log"
wait_up "http://127.0.0.1:$CLI_PORT/health/liveliness" "$DEMO/litellm-cli.log"
echo "litellm $("$PVENV/bin/pip" show litellm 2>/dev/null | sed -n 's/^Version: //p'); ttc :$TTC_PORT, proxy :$PROXY_PORT, cli-proxy :$CLI_PORT"

cd "$MAIN"
.venv/bin/python - "$PROXY_PORT" "$CLI_PORT" "$DB" <<'PY'
import json, subprocess, sys
from openai import OpenAI

proxy_port, cli_port, db = sys.argv[1], sys.argv[2], sys.argv[3]
key = __import__("os").environ["LITELLM_MASTER_KEY"]
client = OpenAI(base_url=f"http://127.0.0.1:{proxy_port}/v1", api_key=key)
cli_client = OpenAI(base_url=f"http://127.0.0.1:{cli_port}/v1", api_key=key)
PLAIN = [{"role": "user", "content": "48 27 5 81>30:"}]
PROBLEM = [{"role": "user", "content": '{"numbers": [48, 27, 5, 81], "target": 30}'}]
TTC = {"ttc": {"task": "countdown", "budget": {"tokens": 512}}}
failures, seen = [], {}

def check(name, ok, detail=""):
    print(("PASS " if ok else "FAIL ") + name + (f": {detail}" if detail else ""))
    if not ok:
        failures.append(name)

def note(name, detail):
    print(f"NOTE {name}: {detail}")

def usage_ok(name, u, cap):
    check(f"{name} usage", u is not None and u.total_tokens == u.prompt_tokens + u.completion_tokens
          and 0 < u.total_tokens <= cap, str(u and (u.prompt_tokens, u.completion_tokens, u.total_tokens)))

# 1. plain chat completion
r = client.chat.completions.create(model="countdown-direct", max_tokens=32, messages=PLAIN)
check("plain answer", bool(r.choices[0].message.content) and r.choices[0].finish_reason in ("stop", "length"),
      repr(r.choices[0].message.content))
check("plain completion_tokens<=32", r.usage.completion_tokens <= 32)
usage_ok("plain", r.usage, 10_000)
extra = (r.model_extra or {}).get("ttc")
note("plain ttc field", "passed through" if extra else "DROPPED")
seen["plain"] = (r.id.removeprefix("chatcmpl-"), r.usage.total_tokens)

# 2. strategy by model name + ttc extra body
r = client.chat.completions.create(model="best_of_n/countdown-direct", messages=PROBLEM, extra_body=TTC)
ext = (r.model_extra or {}).get("ttc") or {}
check("best_of_n answer", bool(r.choices[0].message.content), repr(r.choices[0].message.content))
usage_ok("best_of_n", r.usage, 512)
note("best_of_n ttc field", "passed through" if ext else "DROPPED")
check("best_of_n ttc body reached ttc", ext.get("strategy") == "best_of_n" and ext.get("task") == "countdown"
      and ext.get("budget") == {"tokens": 512}, json.dumps({k: ext.get(k) for k in ("strategy", "task", "budget")}))
note("best_of_n verdict", f"correct={ext.get('correct')} samples={ext.get('samples')} ttc.tokens={ext.get('tokens')}")
note("best_of_n model echoed", r.model)
seen["best_of_n"] = (r.id.removeprefix("chatcmpl-"), r.usage.total_tokens)

# 3. streamed requests: a plain one, then a strategy one (budget and verifier apply to the stream too)
chunks = list(client.chat.completions.create(model="countdown-direct", max_tokens=32, messages=PLAIN,
                                             stream=True, stream_options={"include_usage": True}))
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
check("plain stream answer", bool(text), f"{len(chunks)} chunks, {text!r}")
usage_ok("plain stream", chunks[-1].usage, 10_000)
seen["plain stream"] = (chunks[-1].id.removeprefix("chatcmpl-"), chunks[-1].usage.total_tokens)
chunks = list(client.chat.completions.create(model="best_of_n/countdown-direct", messages=PROBLEM, extra_body=TTC,
                                             stream=True, stream_options={"include_usage": True}))
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
check("stream answer", bool(text), f"{len(chunks)} chunks, {text!r}")
usage_ok("stream", chunks[-1].usage, 512)
check("stream one id", len({c.id for c in chunks}) == 1, chunks[-1].id)
note("stream ttc field", "passed through" if any((c.model_extra or {}).get("ttc") for c in chunks) else "DROPPED")
seen["stream"] = (chunks[-1].id.removeprefix("chatcmpl-"), chunks[-1].usage.total_tokens)

# 4. the store: each request is a `serve` run whose id is the response id, tokens equal usage
out = subprocess.run([".venv/bin/ttc", "traces", "list", "--db", db, "--json", "--limit", "50"],
                     check=True, capture_output=True, text=True).stdout
runs = {run["id"]: run for run in json.loads(out)["runs"]}
for name, (trace_id, total) in seen.items():
    run = runs.get(trace_id)
    check(f"{name} in store", run is not None and run["kind"] == "serve" and run["status"] == "ok"
          and run["input_tokens"] + run["output_tokens"] == total,
          run and f"{trace_id} {run['name']} {run['input_tokens']}+{run['output_tokens']}")

# 5. one-line CLI proxy (`litellm --model openai/countdown-direct`): the model-name prefix is lost
r = cli_client.chat.completions.create(model="best_of_n/countdown-direct", messages=PROBLEM, extra_body=TTC)
ran = ((r.model_extra or {}).get("ttc") or {}).get("strategy")
note("cli-proxy model-name strategy", f"client asked best_of_n, response says model={r.model!r}, ttc ran {ran!r}")
r = cli_client.chat.completions.create(model="countdown-direct", messages=PROBLEM,
                                       extra_body={"ttc": {**TTC["ttc"], "strategy": "best_of_n"}})
ran = ((r.model_extra or {}).get("ttc") or {}).get("strategy")
check("cli-proxy ttc.strategy in body", ran == "best_of_n", f"ttc ran {ran!r}")

print(f"{len(failures)} failed" + (f": {failures}" if failures else ""))
sys.exit(1 if failures else 0)
PY
