#!/usr/bin/env bash
# bench/load.sh: hermes under constant mixed load, side by side with nginx
# and with the upstream itself, then through restarts, on loopback only.
#
# Run it from the repo root:
#
#   bash bench/load.sh                                    # everything: a few minutes
#   MODES=drain RESTARTS=3 DURATION=20s bash bench/load.sh    # quick, drain mode only
#   ROUNDS=0 MODES=drain bash bench/load.sh               # restarts only, no steady state
#   MODES= ROUNDS=7 bash bench/load.sh                    # steady state only, side by side
#
# Knobs (environment variables; defaults in brackets):
#
#   MODES          restart modes, each run as `hermes restart --mode MODE` ["handoff drain"].
#                  A hermes whose restart has no --mode can only run MODES=drain
#                  (then plain `hermes restart`, which drains).
#   RESTARTS       restarts per mode, spread evenly over DURATION [20]
#   DURATION       load per mode while it restarts: 90s, 2m or seconds [60s]
#   UPGRADE_MODES  modes in which the middle restart is a binary upgrade: a build
#                  with version "bench-upgrade" is moved over the running binary's
#                  path first, and /status must show that version after [handoff]
#   CONCURRENCY    load generator workers, and its keep-alive connections [32]
#   SHORT_FRAC     fraction of short non-streaming requests; the rest stream [0.5]
#   CHUNKS         chunks per stream, on average [100]
#   SPREAD         a stream has CHUNKS×(1±SPREAD) chunks, uniformly, so the
#                  workers do not march in step [0.5]
#   CHUNK_DELAY    delay between two chunks (a Go duration) [10ms]
#   WRK_CHUNKS     chunks per SSE stream in the wrk runs, sent with no delay [20]
#   ROUNDS         steady-state rounds of direct, nginx, hermes (medians) [3]
#   STEADY         length of each steady-state run (loadgen, wrk SSE, wrk short) [5s]
#   SETTLE         a request within this of a restart counts as "during" it [1s]
#   DRAIN_TIMEOUT  the gateway's drain.timeout; longer than any stream [60s]
#   MEM            1: the memory phase (3. below); 0 skips it [1]
#   MEM_IDLE       idle keep-alive connections held in the memory phase [3000]
#   MEM_STREAMS    SSE streams open at once in the memory phase; at most what
#                  the open-file limit fits, two descriptors a stream [10000]
#   MEM_AFTER      how long after the streams end the RSS is read again [60s]
#   OUT            where the results go [bench/out]
#   KEEP           1: keep the temp dir (configs, every process's log) [0]
#
# What it does: installs wrk and nginx with apt-get if they are missing;
# builds a static release hermes, the same with version "bench-upgrade",
# and the test binary, whose roles (loadtest_test.go) are the tools:
#
#   HERMES_TEST_ROLE=fake-upstream hermes.test -addr A -chunks N -delay D
#   HERMES_TEST_ROLE=loadgen hermes.test -url URL -c N -duration D -marks F -samples F -out F
#   HERMES_TEST_ROLE=plot hermes.test -out SVG MODE=SAMPLES,MARKS...
#   HERMES_TEST_ROLE=report hermes.test -dir OUT -command CMD
#   (each takes -h; a role's flags follow the binary, a leading -- is skipped)
#
# It starts the fake upstream (an OpenAI-compatible SSE server), nginx (its
# own config and prefix in a temp dir, 1 worker, proxy_buffering off,
# upstream keepalive) and `hermes serve` (policy in the temp dir, upstream =
# the fake one). Then:
#
#   1. steady state: ROUNDS interleaved rounds of direct, nginx, hermes, each
#      under the same loadgen load, then `wrk -t1 -c32` on SSE streams (no
#      delay between chunks: raw throughput) and on short answers;
#   2. memory: for nginx and then a fresh hermes, the RSS idle, with
#      MEM_IDLE keep-alive connections held after one short answer each,
#      at the peak of MEM_STREAMS SSE streams open at once (20 chunks 1 s
#      apart, through the fake upstream), and MEM_AFTER after they ended;
#   3. restarts under load: for each mode, the loadgen runs against hermes
#      while this script runs `hermes restart` RESTARTS times, each waited
#      for, with marks ("UNIX_MS begin|end|note LABEL") written before and
#      after each so the loadgen can tell which requests met a restart.
#
# The loadgen verifies every answer by content (a stream is whole only with
# chunks 0..N-1 in order, then [DONE]) and sorts what was not ok: refused
# (503), no connection (refused, reset, closed), failed, broken stream.
#
# Output in OUT: results.md (tables ready for docs/benchmarks.md, with the command
# line), latency.svg (latency over time per mode, restarts shaded),
# restart-MODE.json (loadgen summary), samples-MODE.tsv (every request),
# marks-MODE.txt, restart-MODE.log (the restart commands' output),
# steady/ (every steady-state run). Exit 0 when every check of the report
# passes (no failed request or broken stream, every restart succeeded,
# drain refused some requests, handoff refused none, the upgrade took), 1
# otherwise. Every process it started is ended on exit, by pid.
#
# Installing the nginx package may start the distribution's own nginx
# service where systemd runs; this script never uses it.
set -euo pipefail
cd "$(dirname "$0")/.."

# The command line, for the report: the knobs that were set, then the script.
cmdline=""
for v in MODES RESTARTS DURATION UPGRADE_MODES CONCURRENCY SHORT_FRAC CHUNKS WRK_CHUNKS SPREAD CHUNK_DELAY ROUNDS STEADY SETTLE DRAIN_TIMEOUT MEM MEM_IDLE MEM_STREAMS MEM_AFTER OUT KEEP; do
  if [ -n "${!v+x}" ]; then
    val=${!v}
    case $val in *[!A-Za-z0-9._/:-]*|"") val="'$val'" ;; esac
    cmdline+="$v=$val "
  fi
done
cmdline+="bash bench/load.sh"

MODES=${MODES-handoff drain}
RESTARTS=${RESTARTS:-20}
DURATION=${DURATION:-60s}
UPGRADE_MODES=${UPGRADE_MODES:-handoff}
CONCURRENCY=${CONCURRENCY:-32}
SHORT_FRAC=${SHORT_FRAC:-0.5}
CHUNKS=${CHUNKS:-100}
WRK_CHUNKS=${WRK_CHUNKS:-20}
SPREAD=${SPREAD:-0.5}
CHUNK_DELAY=${CHUNK_DELAY:-10ms}
ROUNDS=${ROUNDS:-3}
STEADY=${STEADY:-5s}
SETTLE=${SETTLE:-1s}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-60s}
MEM=${MEM:-1}
MEM_IDLE=${MEM_IDLE:-3000}
MEM_STREAMS=${MEM_STREAMS:-10000}
MEM_AFTER=${MEM_AFTER:-60s}
OUT=${OUT:-bench/out}
KEEP=${KEEP:-0}

log() { printf '%s load.sh: %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# to_ms turns 90s, 2m, 500ms or plain seconds into milliseconds.
to_ms() {
  case $1 in
    *ms) awk -v v="${1%ms}" 'BEGIN { printf "%d", v }' ;;
    *s) awk -v v="${1%s}" 'BEGIN { printf "%d", v * 1000 }' ;;
    *m) awk -v v="${1%m}" 'BEGIN { printf "%d", v * 60000 }' ;;
    *[!0-9.]*|"") die "not a duration: $1" ;;
    *) awk -v v="$1" 'BEGIN { printf "%d", v * 1000 }' ;;
  esac
}
now_ms() { date +%s%3N; }
sleep_until_ms() {
  local d=$(( $1 - $(now_ms) ))
  if [ "$d" -gt 0 ]; then sleep "$(awk -v d="$d" 'BEGIN { printf "%.3f", d / 1000 }')"; fi
}

for mode in $MODES; do
  case $mode in handoff|drain) ;; *) die "MODES: unknown mode $mode (handoff, drain)" ;; esac
done
duration_ms=$(to_ms "$DURATION")
settle_ms=$(to_ms "$SETTLE")
to_ms "$STEADY" >/dev/null
mem_after_ms=$(to_ms "$MEM_AFTER")

# Open files: the soft limit up to the hard one, for every process started
# here. A stream of the memory phase takes two descriptors in the proxy
# (its client's and the upstream's): the streams are as many as fit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
nofile=$(ulimit -n)
[ "$nofile" = unlimited ] && nofile=1048576
if [ "$MEM" = 1 ] && [ $(( MEM_STREAMS * 2 + 2048 )) -gt "$nofile" ]; then
  fit=$(( (nofile - 2048) / 2 ))
  log "the open-file limit ($nofile) fits $fit streams, not MEM_STREAMS=$MEM_STREAMS: the memory phase holds $fit"
  MEM_STREAMS=$fit
fi
[ "$RESTARTS" -ge 1 ] 2>/dev/null || die "RESTARTS must be a count of at least 1"

# --- tools ------------------------------------------------------------------
export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"
command -v go >/dev/null || die "go is not installed (bash .ci/run installs it)"
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${need[@]}"
fi

# --- processes and clean-up -------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/hermes-load.XXXXXX")
mkdir -p "$work/log" "$work/build" "$work/run"
pids=()            # every background process this script started
loadgen_pid=""
policy="$work/hermes.toml"
state="$work/state"
bin="$work/run/hermes" # the path hermes runs from; an upgrade moves a new build over it

# alive: the pid is a live process (not a zombie).
alive() {
  local st
  st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [ -n "$st" ] && [ "$st" != Z ]
}

# gateway_pids: every gateway of this run, wherever it came from (the first
# one, those hermes restart starts detached, a predecessor still draining):
# each `hermes serve` whose command line names this run's policy, a path in
# this run's temp dir, so no other process is ever signalled.
gateway_pids() {
  local f d args
  for f in $(grep -lsF -- "$policy" /proc/[0-9]*/cmdline || true); do
    d=${f%/cmdline}
    args=$(tr '\0' '\n' <"$f" 2>/dev/null) || continue
    if [ "$(sed -n 2p <<<"$args")" = serve ] && grep -qxF -- "$policy" <<<"$args" && alive "${d#/proc/}"; then
      echo "${d#/proc/}"
    fi
  done
}

# shellcheck disable=SC2317 # (called from the EXIT trap)
# is_child: the pid is a live child of this script (bg starts each one
# directly), so a pid that exited and was reused is never signalled.
is_child() {
  alive "$1" && [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f2)" = "$$" ]
}

# end_pids: TERM, then KILL what is left after a few seconds.
end_pids() {
  local p i
  for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
  for i in $(seq 100); do
    local left=0
    for p in "$@"; do if alive "$p"; then left=1; fi; done
    [ "$left" = 0 ] && return 0
    sleep 0.1
  done
  for p in "$@"; do if alive "$p"; then log "pid $p ignored TERM: KILL"; kill -KILL "$p" 2>/dev/null || true; fi; done
}

stop_gateway() {
  local gws
  gws=$(gateway_pids)
  if [ -n "$gws" ]; then
    # shellcheck disable=SC2086
    end_pids $gws
  fi
  serve_pid=""
}

# shellcheck disable=SC2317 # (the EXIT trap)
cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  stop_gateway
  local p mine=()
  for p in "${pids[@]}"; do
    if is_child "$p"; then mine+=("$p"); fi
  done
  if [ ${#mine[@]} -gt 0 ]; then end_pids "${mine[@]}"; fi
  wait 2>/dev/null
  if [ "$KEEP" = 1 ] || [ "$rc" != 0 ]; then
    log "logs and configs kept in $work"
  else
    rm -rf "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# bg NAME CMD...: start CMD in the background, output in the log dir. CMD
# must be a program, not a function, so that $! is its own pid.
bg() {
  local name=$1
  shift
  "$@" >"$work/log/$name.log" 2>&1 &
  pids+=($!)
  last_pid=$!
}

# role ROLE FLAGS...: run one of the test binary's roles.
testbin="$work/build/hermes.test"
role() {
  local r=$1
  shift
  HERMES_TEST_ROLE=$r "$testbin" "$@"
}

# wait_http URL SECONDS [curl args]: until URL answers 2xx.
wait_http() {
  local url=$1 secs=$2 deadline
  shift 2
  deadline=$(( $(now_ms) + secs * 1000 ))
  until curl -sf -o /dev/null -m 2 "$@" "$url"; do
    [ "$(now_ms)" -lt "$deadline" ] || return 1
    sleep 0.05
  done
}

# --- build ------------------------------------------------------------------
log "building hermes (release and bench-upgrade) and the test binary in $work/build"
CGO_ENABLED=0 go build -trimpath -o "$work/build/hermes-release" .
CGO_ENABLED=0 go build -trimpath -ldflags "-X main.version=bench-upgrade" -o "$work/build/hermes-upgrade" .
go test -c -o "$work/build/hermes.test" .

# install_bin BUILD: put a build at the gateway's binary path. cp onto a
# running binary fails (ETXTBSY); a rename over it does not, and the running
# process keeps its old inode.
install_bin() {
  cp "$1" "$bin.tmp"
  mv -f "$bin.tmp" "$bin"
}
install_bin "$work/build/hermes-release"

mode_flag=0
restart_help=$("$bin" restart -h 2>&1 || true)
if grep -qE '^[[:space:]]*--?mode([[:space:]=]|$)' <<<"$restart_help"; then
  mode_flag=1
else
  for mode in $MODES; do
    [ "$mode" = drain ] || die "this hermes has no 'restart --mode', so it cannot $mode; run MODES=drain bash bench/load.sh"
  done
  log "this hermes has no 'restart --mode': drain mode runs plain 'hermes restart' (a drain)"
fi

# --- the three servers ------------------------------------------------------
read -r up_addr nginx_addr hermes_addr <<<"$(role free-addr -n 3 | tr '\n' ' ')"

bg fake-upstream env HERMES_TEST_ROLE=fake-upstream "$testbin" -addr "$up_addr" -chunks "$CHUNKS" -delay "$CHUNK_DELAY"
wait_http "http://$up_addr/v1/chat/completions" 10 -d '{"stream":false}' || die "the fake upstream did not answer on $up_addr"

mkdir -p "$work/nginx/tmp" "$work/nginx/logs"
cat >"$work/nginx/nginx.conf" <<EOF
# bench/load.sh: nginx as a plain streaming proxy in front of the fake upstream.
daemon off;
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/logs/error.log warn;
worker_rlimit_nofile $nofile;
events { worker_connections $(( nofile > 4096 ? nofile - 64 : 4096 )); }
http {
  access_log off;
  client_body_temp_path $work/nginx/tmp/body;
  proxy_temp_path $work/nginx/tmp/proxy;
  fastcgi_temp_path $work/nginx/tmp/fastcgi;
  uwsgi_temp_path $work/nginx/tmp/uwsgi;
  scgi_temp_path $work/nginx/tmp/scgi;
  keepalive_requests 1000000;
  upstream fake {
    server $up_addr;
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen $nginx_addr;
    location / {
      proxy_pass http://fake;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
    }
  }
}
EOF
nginx_args=(-p "$work/nginx" -c "$work/nginx/nginx.conf" -e "$work/nginx/logs/error.log")
nginx -t -q "${nginx_args[@]}" || die "nginx rejected its config: $work/nginx/nginx.conf"
bg nginx nginx "${nginx_args[@]}"
nginx_pid=$last_pid
wait_http "http://$nginx_addr/v1/chat/completions" 10 -d '{"stream":false}' || die "nginx did not answer on $nginx_addr"

cat >"$policy" <<EOF
# bench/load.sh: a gateway in front of the fake upstream.
name = "bench"
[gateway]
listen = "$hermes_addr"
upstream = "http://$up_addr"
state_dir = "$state"
[drain]
# Longer than any stream of the load ($CHUNKS chunks $CHUNK_DELAY apart): a
# drain lets every one finish.
timeout = "$DRAIN_TIMEOUT"
grace = "5s"
[restart]
ready_timeout = "30s"
EOF
"$bin" check-config --config "$policy" >"$work/log/check-config.log" 2>&1 || die "hermes check-config failed: $(cat "$work/log/check-config.log")"

serve_pid=""
start_gateway() {
  "$bin" serve --config "$policy" >>"$work/log/gateway-serve.log" 2>&1 &
  serve_pid=$!
  pids+=("$serve_pid")
  wait_http "http://$hermes_addr/readyz" 30 || die "hermes did not become ready on $hermes_addr; see $work/log/gateway-serve.log"
}
start_gateway
log "fake upstream $up_addr, nginx $nginx_addr, hermes $hermes_addr (pid $serve_pid)"

mkdir -p "$OUT"
rm -rf "$OUT/steady" "$OUT"/restart-*.json "$OUT"/restart-*.log "$OUT"/samples-*.tsv "$OUT"/marks-*.txt \
  "$OUT"/upgrade-*.txt "$OUT/results.md" "$OUT/latency.svg" "$OUT/memory"
mkdir -p "$OUT/steady"

loadgen_args=(-c "$CONCURRENCY" -short "$SHORT_FRAC" -chunks "$CHUNKS" -spread "$SPREAD" -delay "$CHUNK_DELAY" -settle "$SETTLE")

# --- 1. steady state, side by side ------------------------------------------
for kind in stream short; do
  stream=false
  [ "$kind" = stream ] && stream=true
  cat >"$work/wrk-$kind.lua" <<EOF
wrk.method = "POST"
wrk.body = '{"model":"fake","stream":$stream,"messages":[{"role":"user","content":"hello"}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Fake-Chunks"] = "$WRK_CHUNKS"
wrk.headers["X-Fake-Delay"] = "0s"
EOF
done

# proxy_cpu TARGET: the CPU time (user + system, in seconds) the proxy's
# processes have used so far: nginx's workers, or the gateway; 0 for direct.
clk_tck=$(getconf CLK_TCK)
proxy_cpu() {
  local procs=()
  case $1 in
    nginx) mapfile -t procs < <(pgrep -P "$nginx_pid") ;;
    hermes) procs=("$serve_pid") ;;
  esac
  local ticks=0 p
  for p in "${procs[@]}"; do
    [ -r "/proc/$p/stat" ] && ticks=$((ticks + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  awk -v t="$ticks" -v hz="$clk_tck" 'BEGIN { printf "%.3f", t / hz }'
}

round=1
while [ "$round" -le "$ROUNDS" ]; do
  for target in direct nginx hermes; do
    case $target in
      direct) addr=$up_addr ;;
      nginx) addr=$nginx_addr ;;
      hermes) addr=$hermes_addr ;;
    esac
    log "steady state, round $round/$ROUNDS: $target ($addr): loadgen, wrk SSE, wrk short, $STEADY each"
    role loadgen -url "http://$addr" "${loadgen_args[@]}" -duration "$STEADY" -label "$target" \
      -out "$OUT/steady/loadgen-$target-$round.json"
    for kind in stream short; do
      cpu0=$(proxy_cpu "$target")
      wrk -t1 -c32 -d"$STEADY" --latency -s "$work/wrk-$kind.lua" "http://$addr/v1/chat/completions" \
        >"$OUT/steady/wrk-$kind-$target-$round.txt"
      cpu1=$(proxy_cpu "$target")
      # The proxy's own CPU over the run: steadier than req/s on a shared
      # machine, and what decides who wins when the cores are shared.
      [ "$target" != direct ] && awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { printf "Proxy CPU seconds: %.3f\n", b - a }' \
        >>"$OUT/steady/wrk-$kind-$target-$round.txt"
    done
  done
  round=$((round + 1))
done

# --- 2. memory ---------------------------------------------------------------
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }
# memory TARGET PID ADDR: the figures of one proxy, in OUT/memory/TARGET.tsv.
memory() {
  local t=$1 pid=$2 addr=$3 f="$OUT/memory/$1.tsv" ready="$work/held-$1" hold_pid i
  log "memory, $t (pid $pid): idle, $MEM_IDLE idle connections, $MEM_STREAMS streams, then $MEM_AFTER after they end"
  printf 'idle_kb\t%s\n' "$(rss_kb "$pid")" >"$f"
  rm -f "$ready"
  bg "hold-idle-$t" env HERMES_TEST_ROLE=hold "$testbin" -addr "$addr" -n "$MEM_IDLE" -kind idle -ready "$ready"
  hold_pid=$last_pid
  for i in $(seq 1200); do
    [ -f "$ready" ] || ! alive "$hold_pid" && break
    sleep 0.1
  done
  [ -f "$ready" ] || die "memory, $t: $MEM_IDLE idle connections were not held; see $work/log/hold-idle-$t.log"
  printf 'idle_conns\t%s\nidle_held_kb\t%s\n' "$MEM_IDLE" "$(rss_kb "$pid")" >>"$f"
  kill -TERM "$hold_pid"
  wait "$hold_pid" || die "memory, $t: the idle hold failed; see $work/log/hold-idle-$t.log"
  # The streams' peak: VmHWM, reset first (clear_refs 5) and read once
  # every stream has ended; the holder fails unless all were open at once.
  echo 5 >"/proc/$pid/clear_refs"
  printf 'stream_base_kb\t%s\n' "$(rss_kb "$pid")" >>"$f"
  role hold -addr "$addr" -n "$MEM_STREAMS" -kind stream -chunks 20 -delay 1s >"$work/log/hold-stream-$t.log" 2>&1 ||
    die "memory, $t: $MEM_STREAMS streams were not all held whole; see $work/log/hold-stream-$t.log"
  printf 'streams\t%s\nstream_peak_kb\t%s\n' "$MEM_STREAMS" "$(hwm_kb "$pid")" >>"$f"
  sleep_until_ms $(( $(now_ms) + mem_after_ms ))
  printf 'after_ms\t%s\nafter_kb\t%s\n' "$mem_after_ms" "$(rss_kb "$pid")" >>"$f"
}
if [ "$MEM" = 1 ]; then
  mkdir -p "$OUT/memory"
  memory nginx "$(pgrep -P "$nginx_pid" | head -1)" "$nginx_addr"
  stop_gateway
  start_gateway # a fresh gateway: its idle is an idle gateway's
  memory hermes "$serve_pid" "$hermes_addr"
fi

# --- 3. restarts under load -------------------------------------------------
spacing_ms=$(( duration_ms / (RESTARTS + 1) ))
plots=()
for mode in $MODES; do
  # Each mode starts from a fresh gateway on the release build.
  stop_gateway
  install_bin "$work/build/hermes-release"
  start_gateway
  upgrade_at=0
  case " $UPGRADE_MODES " in *" $mode "*) upgrade_at=$(( (RESTARTS + 1) / 2 )) ;; esac
  marks="$OUT/marks-$mode.txt"
  : >"$marks"
  restart_cmd=("$bin" restart --config "$policy")
  if [ "$mode_flag" = 1 ]; then restart_cmd+=(--mode "$mode"); fi
  log "restarts under load, mode $mode: $RESTARTS restarts over $DURATION, one every ${spacing_ms}ms: ${restart_cmd[*]}"

  # The loadgen stops at TERM (below); its -duration is only a backstop.
  bg "loadgen-$mode" env HERMES_TEST_ROLE=loadgen "$testbin" -url "http://$hermes_addr" "${loadgen_args[@]}" \
    -duration "$(( duration_ms * 3 / 1000 + 300 ))s" -label "hermes restart --mode $mode" \
    -marks "$marks" -samples "$OUT/samples-$mode.tsv" -out "$OUT/restart-$mode.json"
  loadgen_pid=$last_pid
  t0=$(now_ms)
  failed=0
  for i in $(seq "$RESTARTS"); do
    sleep_until_ms $(( t0 + i * spacing_ms ))
    if [ "$i" = "$upgrade_at" ]; then
      install_bin "$work/build/hermes-upgrade"
      echo "$(now_ms) note upgrade" >>"$marks"
    fi
    echo "$(now_ms) begin restart-$i" >>"$marks"
    rc=0
    echo "=== restart $i ($(date +%T.%3N))" >>"$OUT/restart-$mode.log"
    "${restart_cmd[@]}" >>"$OUT/restart-$mode.log" 2>&1 || rc=$?
    echo "$(now_ms) end restart-$i rc=$rc" >>"$marks"
    if [ "$rc" != 0 ]; then
      failed=$((failed + 1))
      log "restart $i failed with exit code $rc; see $OUT/restart-$mode.log"
    fi
    if [ "$i" = "$upgrade_at" ]; then
      status=$(curl -s -m 5 "http://$hermes_addr/status" || true)
      if grep -q '"version":"bench-upgrade"' <<<"$status"; then
        echo "ok bench-upgrade" >"$OUT/upgrade-$mode.txt"
      else
        echo "FAILED: /status after the upgrade: ${status:-no answer}" >"$OUT/upgrade-$mode.txt"
        log "binary upgrade did not take: $status"
      fi
    fi
  done
  last_end=$(now_ms)
  end=$(( t0 + duration_ms ))
  [ "$end" -ge $(( last_end + 2 * settle_ms )) ] || end=$(( last_end + 2 * settle_ms ))
  sleep_until_ms "$end"
  kill -TERM "$loadgen_pid"
  wait "$loadgen_pid" || die "the loadgen failed; see $work/log/loadgen-$mode.log"
  loadgen_pid=""
  log "mode $mode: $RESTARTS restarts, $failed failed"
  plots+=("$mode=$OUT/samples-$mode.tsv,$OUT/marks-$mode.txt")
done
stop_gateway

# --- 4. the plot and the report ---------------------------------------------
title="hermes restarts under load: $CONCURRENCY workers, $(awk -v f="$SHORT_FRAC" 'BEGIN { printf "%d", f * 100 }')% short, streams of $CHUNKS±$(awk -v c="$CHUNKS" -v s="$SPREAD" 'BEGIN { printf "%d", c * s }') chunks $CHUNK_DELAY apart"
if [ ${#plots[@]} -gt 0 ]; then
  role plot -out "$OUT/latency.svg" -title "$title" "${plots[@]}"
fi
rc=0
role report -dir "$OUT" -command "$cmdline" -modes "$MODES" \
  -note "machine: $(nproc) cores, $(uname -sr), $(go version | cut -d' ' -f3), $(nginx -v 2>&1 | sed 's/.*version: //'), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2); $(date -u '+%Y-%m-%d %H:%M UTC'); shared machine: compare ratios, not absolute figures" \
  -note "load: loadgen with $CONCURRENCY workers (keep-alive pool of $CONCURRENCY); $(awk -v f="$SHORT_FRAC" 'BEGIN { printf "%d", f * 100 }')% of requests short (non-streaming), the rest SSE streams of $CHUNKS×(1±$SPREAD) chunks $CHUNK_DELAY apart; a refused worker retries after 20 ms" \
  -note "restarts: $RESTARTS per mode over $DURATION, each waited for; drain.timeout $DRAIN_TIMEOUT; a request within $SETTLE of a restart counts as during it" \
  -note "plot: latency.svg" || rc=$?
log "results in $OUT/results.md and $OUT/latency.svg"
exit "$rc"
