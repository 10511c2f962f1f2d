# Shared by scripts/bench and scripts/bench-amqp: wrk load with a ~1.5 KB GitHub-style JSON body
# and a fresh delivery id per request, and the per-run measurements. Source it after setting
# `work` (a scratch directory), `threads`, `conns`, `warmup` and `duration`; `start` and `run`
# keep the server's pid in `pid`.

ensure_wrk() {
  command -v wrk >/dev/null && return 0
  echo "bench: installing wrk" >&2
  local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get install -y wrk >/dev/null || { $sudo apt-get update >/dev/null && $sudo apt-get install -y wrk >/dev/null; }
}

# A realistic ~1.5 KB GitHub-style JSON payload.
body='{"action":"opened","number":1347,"pull_request":{"url":"https://api.github.com/repos/octocat/Hello-World/pulls/1347","id":1,"node_id":"MDExOlB1bGxSZXF1ZXN0MQ==","html_url":"https://github.com/octocat/Hello-World/pull/1347","diff_url":"https://github.com/octocat/Hello-World/pull/1347.diff","patch_url":"https://github.com/octocat/Hello-World/pull/1347.patch","issue_url":"https://api.github.com/repos/octocat/Hello-World/issues/1347","number":1347,"state":"open","locked":false,"title":"Amazing new feature","user":{"login":"octocat","id":1,"node_id":"MDQ6VXNlcjE=","avatar_url":"https://github.com/images/error/octocat_happy.gif","type":"User","site_admin":false},"body":"Please pull these awesome changes in!","labels":[{"id":208045946,"name":"bug","color":"f29513","default":true}],"created_at":"2011-01-26T19:01:12Z","updated_at":"2011-01-26T19:01:12Z","head":{"label":"octocat:new-topic","ref":"new-topic","sha":"6dcb09b5b57875f334f61aebed695e2e4193db5e"},"base":{"label":"octocat:master","ref":"master","sha":"6dcb09b5b57875f334f61aebed695e2e4193db5e"}},"repository":{"id":1296269,"node_id":"MDEwOlJlcG9zaXRvcnkxMjk2MjY5","name":"Hello-World","full_name":"octocat/Hello-World","private":false,"html_url":"https://github.com/octocat/Hello-World","description":"This your first repo!","fork":false,"default_branch":"master","open_issues_count":0,"topics":["octocat","atom","electron","api"]},"sender":{"login":"octocat","id":1,"type":"User","site_admin":false},"installation":{"id":2311213}}'
cat >"$work/post.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-GitHub-Event"] = "pull_request"
wrk.body = [==[$body]==]
-- A fresh delivery id and a fresh body per request, as a provider sends: every webhook is new
-- to the worker's idempotency check. (Without a verifier the GitHub key is a digest of the body,
-- so one identical body would be claimed once and skipped ever after.) The first "number" of
-- the body becomes a per-request counter of the same width.
-- (Each wrk thread has its own Lua state with the same unseeded random sequence, so the thread
-- number comes from setup(), which runs once per thread in the main state.) Each run of wrk
-- also draws a run number of its own: the warm-up and the measured run go to one server, whose
-- worker would otherwise skip the measured run's first requests as duplicates of the warm-up's.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local urandom = io.open("/dev/urandom", "rb")
local bytes = urandom:read(3)
urandom:close()
local run = bytes:byte(1) * 65536 + bytes:byte(2) * 256 + bytes:byte(3)
local head, tail = wrk.body:match('^(.-"number":)%d+(.*)$')
local n = 0
request = function()
  n = n + 1
  wrk.headers["X-GitHub-Delivery"] = tid .. "-" .. run .. "-" .. n
  return wrk.format(nil, nil, nil, head .. string.format("%d%08d%09d", tid, run, n) .. tail)
end
EOF

pid=""
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start NAME PORT CMD...: start a server in the background and wait until it listens (for
# START_TRIES tenths of a second, 100 by default).
start() {
  local name="$1" p="$2"; shift 2
  FIREFLY_LISTEN="127.0.0.1:$p" BENCH_ADDR="127.0.0.1:$p" RUST_LOG=warn "$@" >"$work/$name.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 "${START_TRIES:-100}"); do
    port_open "$p" && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; pid=""
  return 1
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""; }

# as_row NAME CMD...: runs CMD... with row NAME's server binary as its last argument and the
# row's environment (the rows of scripts/bench and scripts/bench-instructions; `baseline` is
# the binary at $baseline_bin).
as_row() {
  local name="$1"; shift
  case "$name" in
    bare | mpsc | ingest) "$@" "$bin_dir/$name" ;;
    telemetry) FIREFLY_BENCH_TELEMETRY=on "$@" "$bin_dir/ingest" ;;
    edge) FIREFLY_BENCH_EDGE=on "$@" "$bin_dir/ingest" ;;
    gateway) FIREFLY_WORKER=on "$@" "$bin_dir/gateway" ;;
    baseline) FIREFLY_WORKER=on "$@" "$baseline_bin" ;;
    *) echo "bench: unknown row $name" >&2; exit 2 ;;
  esac
}

# wrk prints latencies as 812.00us / 1.23ms / 1.01s; convert to milliseconds.
to_ms() { awk -v v="$1" 'BEGIN {
  n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
  if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
  printf "%.3f", n }'; }

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# preemptions PID: how often the kernel has taken the CPU from PID's threads while they could
# still run (involuntary context switches, summed over the threads).
preemptions() { awk '/^nonvoluntary_ctxt_switches/ { n += $2 } END { print n + 0 }' /proc/"$1"/task/*/status 2>/dev/null; }

# per_request A B FILE: CPU ticks B - A as microseconds per request of the wrk output FILE.
per_request() {
  awk -v a="$1" -v b="$2" -v tck="$(getconf CLK_TCK)" \
    '/requests in/ { printf "%.1f", (b - a) * 1e6 / tck / $1 }' "$3"
}

# load ARGS...: wrk, under the scheduling policy that BENCH_WRK_SCHED names (chrt's: `batch`,
# `other`, `idle`; unset: the shell's own). With `batch`, a wrk thread that a response wakes no
# longer preempts the server thread that wrote it, which costs a server that is never idle (the
# gateway, whose worker takes the time between requests) far more than one that often waits.
load() {
  if [ -n "${BENCH_WRK_SCHED:-}" ]; then chrt --"$BENCH_WRK_SCHED" 0 wrk "$@"; else wrk "$@"; fi
}

# run NAME ROUND PORT CMD...: start the server, warm up, measure; figures in $work/NAME.ROUND.*
# (rps: 2xx answers per second; p50, p99: ms; rss: peak MB; cpu: server CPU us per request;
# wcpu: wrk's CPU us per request; pre: the server's preemptions per request; bcpu: with
# BROKER_PID set, that process's CPU us per request).
run() {
  local name="$1" round="$2" p="$3"; shift 3
  local out="$work/$name.$round"
  start "$name" "$p" "$@" || { echo "bench: $name did not start" >&2; cat "$work/$name.log" >&2; exit 1; }
  local url="http://127.0.0.1:$p/api/v1/webhook/github"
  load -t"$threads" -c"$conns" -d"$warmup" -s "$work/post.lua" "$url" >/dev/null
  local c0 c1 b0=0 b1=0 x0 x1
  c0="$(cpu_ticks "$pid")"
  x0="$(preemptions "$pid")"
  if [ -n "${BROKER_PID:-}" ]; then b0="$(cpu_ticks "$BROKER_PID")"; fi
  # wrk's own CPU time too (bash's `time` keyword, as user and system seconds): the load tool
  # shares the cores, and what it spends a request grows as the server slows down.
  local TIMEFORMAT='%U %S'
  { time load -t"$threads" -c"$conns" -d"$duration" --latency -s "$work/post.lua" "$url" >"$out.wrk"; } 2>"$out.wtime"
  c1="$(cpu_ticks "$pid")"
  x1="$(preemptions "$pid")"
  if [ -n "${BROKER_PID:-}" ]; then b1="$(cpu_ticks "$BROKER_PID")"; fi
  awk '/^VmHWM/ { printf "%.1f\n", $2 / 1024 }' "/proc/$pid/status" >"$out.rss"
  stop
  # Only 2xx answers count: a 503 from a full queue is cheap and would flatter the server.
  awk '/requests in/ { n = $1; t = $4; sub(/,$/, "", t)
         if (t ~ /m$/) { sub(/m$/, "", t); t *= 60 } else sub(/s$/, "", t) } /Non-2xx/ { bad = $NF }
       END { printf "%.2f\n", (n - bad) / t }' "$out.wrk" >"$out.rps"
  to_ms "$(awk '$1 == "50%" { print $2 }' "$out.wrk")" >"$out.p50"
  to_ms "$(awk '$1 == "99%" { print $2 }' "$out.wrk")" >"$out.p99"
  # CPU time per request: steadier than req/s when other work shares the cores.
  per_request "$c0" "$c1" "$out.wrk" >"$out.cpu"
  per_request "$b0" "$b1" "$out.wrk" >"$out.bcpu"
  awk -v t="$(tail -1 "$out.wtime")" '/requests in/ { split(t, s, " "); printf "%.1f", (s[1] + s[2]) * 1e6 / $1 }' \
    "$out.wrk" >"$out.wcpu"
  awk -v n=$((x1 - x0)) '/requests in/ { printf "%.3f", n / $1 }' "$out.wrk" >"$out.pre"
  awk '/Non-2xx|Socket errors/ { $1 = $1; print }' "$out.wrk" >"$out.errors"
}

# best NAME ROUNDS: copies the figures of NAME's round with the most req/s (other load on the
# machine only ever slows a round down) to $work/NAME.*, and the highest peak RSS of all rounds.
best() {
  local name="$1" rounds="$2" b
  b="$(for r in $(seq 1 "$rounds"); do echo "$(cat "$work/$name.$r.rps") $r"; done | sort -gr | head -1 | cut -d' ' -f2)"
  for k in rps p50 p99 cpu bcpu wcpu pre errors; do cp "$work/$name.$b.$k" "$work/$name.$k"; done
  cat "$work/$name".*.rss | sort -gr | head -1 >"$work/$name.rss"
}
