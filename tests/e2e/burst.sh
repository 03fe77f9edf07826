#!/usr/bin/env bash
# kube-scheduler's throughput on a burst of GPU pods, with and without rota (issue #18). Not in
# CI: it needs the binaries of ../shared/controlplane/README.md and a release build of rota.
#
# Each run is a fresh control plane (no kubelet): N Ready 8-GPU nodes and 2N pending one-GPU
# pods are created while no scheduler runs; then kube-scheduler starts (client QPS and burst
# SCHED_QPS, `nodeCacheCapable: true`) and the time until every pod has a node is measured, on
# a watch of the burst pods (POLL=1: by asking for an unbound pod twice a second, as before;
# that costs the API server a scan of the bound pods each time, load that grows with the run).
# Configurations, interleaved in each round so they share the machine's load:
#   none       no extender
#   rota-none  rota as filter+prioritize extender with `--cluster none` (answers without policy)
#   rota       rota as extender, watching the cluster (default config)
#   rota-filter  rota as filter-only extender, GPUs packed in-tree (NodeResourcesFit
#              MostAllocated): the chart's `scheduler.extender.prioritize: false` profile
#   none-packed  no extender, GPUs packed in-tree as in rota-filter: what packing itself
#              costs kube-scheduler (full nodes to pass over), apart from any extender
# Usage: BIN_DIR=DIR ROTA=target/release/rota N=2000 ROUNDS=2 tests/e2e/burst.sh
# Prints one line per run: `round config nodes pods seconds`, then the CPU-seconds each process
# used during the burst (`cpu apiserver=… etcd=… scheduler=… rota=… steal=…`, steal being the
# machine's CPU time taken by its hypervisor), how the pods lie (`spread`: nodes used, full
# nodes) and rota's peak resident memory.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${BIN_DIR:?set BIN_DIR to the folder holding kube-apiserver and kube-scheduler}"
ROTA=${ROTA:-target/release/rota}
CP=${CONTROLPLANE:-../shared/controlplane}
N=${N:-2000}
ROUNDS=${ROUNDS:-1}
CONFIGS=${CONFIGS:-none rota-none rota}
SCHED_QPS=${SCHED_QPS:-5000}
# PCT=N sets kube-scheduler's percentageOfNodesToScore (default: its adaptive value).
# WATCH=json|protobuf adds a bare watch of every Pod (curl) to each run: what one more Pod
# watcher costs the API server in that encoding (its bytes are printed with the CPU line).
# Ports of their own, so a control plane of another checkout on the defaults is left alone.
export API_PORT=${API_PORT:-16443} ETCD_PORT=${ETCD_PORT:-12379} ETCD_PEER_PORT=${ETCD_PEER_PORT:-12380}
SCHED_PORT=${SCHED_PORT:-20259}
ROTA_PORT=${ROTA_PORT:-18888}
HERE=tests/e2e

# Stops what the current run started (only those processes, by their ids).
cleanup() {
  local pid
  for pid in ${sched_pid:-} ${rota_pid:-} ${watch_pid:-}; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  sched_pid="" rota_pid="" watch_pid=""
  # KEEP=1 keeps the run's folder (logs) for a look afterwards.
  if [[ -n "${RUN_DIR:-}" ]]; then
    bash "$CP/down.sh" $([[ -n "${KEEP:-}" ]] || echo --purge) >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

run() { # round config
  local run_dir start end
  rota_pid="" sched_pid=""
  run_dir=$(mktemp -d)
  export RUN_DIR=$run_dir WITH_SCHEDULER=0 WITH_KCM=0 KUBECONFIG=$run_dir/admin.kubeconfig
  bash "$CP/up.sh" >"$run_dir/up.log" 2>&1 || { cat "$run_dir/up.log"; return 1; }
  python3 "$HERE/burst_objects.py" create "$N"
  if [[ "$2" != none* ]]; then
    kubectl create namespace rota-system >/dev/null
    local mode=kube; [[ "$2" == rota-none ]] && mode=none
    if curl -fs "http://127.0.0.1:$ROTA_PORT/healthz" >/dev/null 2>&1; then
      echo "something already answers on port $ROTA_PORT" >&2
      return 1
    fi
    "$ROTA" extender --listen 127.0.0.1:$ROTA_PORT --cluster "$mode" --ledger-file "$run_dir/ledger.json" \
      >"$run_dir/rota.log" 2>&1 &
    rota_pid=$!
    for _ in $(seq 1 120); do
      curl -fs http://127.0.0.1:$ROTA_PORT/readyz >/dev/null 2>&1 && break
      kill -0 "$rota_pid" 2>/dev/null || { cat "$run_dir/rota.log"; return 1; }
      sleep 0.5
    done
    kill -0 "$rota_pid" 2>/dev/null || { cat "$run_dir/rota.log"; return 1; }
  fi
  sched_config "$run_dir" "$2" >"$run_dir/scheduler-config.yaml"
  if [[ -n "${WATCH:-}" ]]; then
    local accept=application/json rv
    rv=$(kubectl get --raw '/api/v1/pods?limit=1' | python3 -c 'import json, sys; print(json.load(sys.stdin)["metadata"]["resourceVersion"])')
    [[ "$WATCH" == protobuf ]] && accept="application/vnd.kubernetes.protobuf;stream=watch"
    curl -sk -N -H "Authorization: Bearer $(awk '/token:/ {print $2}' "$KUBECONFIG")" -H "Accept: $accept" \
      "$(awk '/server:/ {print $2}' "$KUBECONFIG")/api/v1/pods?watch=1&allowWatchBookmarks=true&resourceVersion=$rv" >"$run_dir/watch.out" &
    watch_pid=$!
  fi
  local before steal_before perf_pid=""; before=$(cpu_seconds "$run_dir") steal_before=$(steal)
  # PERF=1 (or rota): a flat CPU profile of rota during the burst ($run_dir/perf.data, with
  # KEEP=1); PERF=scheduler profiles kube-scheduler instead, with call stacks (Go keeps frame
  # pointers).
  if [[ "${PERF:-}" == 1 || "${PERF:-}" == rota ]] && [[ -n "$rota_pid" ]]; then
    perf record -F 499 -p "$rota_pid" -o "$run_dir/perf.data" >/dev/null 2>&1 &
    perf_pid=$!
  fi
  start=$(date +%s.%N)
  "$BIN_DIR/kube-scheduler" --config="$run_dir/scheduler-config.yaml" --bind-address=127.0.0.1 \
    --secure-port=$SCHED_PORT --authentication-kubeconfig="$run_dir/scheduler.kubeconfig" \
    --authorization-kubeconfig="$run_dir/scheduler.kubeconfig" \
    --cert-dir="$run_dir/scheduler-certs" --v=1 >"$run_dir/kube-scheduler.log" 2>&1 &
  sched_pid=$!
  if [[ "${PERF:-}" == scheduler ]]; then
    perf record -F 499 -g -p "$sched_pid" -o "$run_dir/perf.data" >/dev/null 2>&1 &
    perf_pid=$!
  fi
  if [[ -n "${POLL:-}" ]]; then # the earlier sessions' way: ask for an unbound pod twice a second
    while [[ $(python3 "$HERE/burst_objects.py" unbound) != 0 ]]; do
      sleep 0.5
      (( $(date +%s) - ${start%.*} < ${LIMIT_S:-900} )) || { echo "$1 $2: not all bound after ${LIMIT_S:-900} s" >&2; return 1; }
    done
  else
    python3 "$HERE/burst_objects.py" wait "${LIMIT_S:-900}" || { echo "$1 $2: not all bound" >&2; return 1; }
  fi
  end=$(date +%s.%N)
  [[ -n "$perf_pid" ]] && { kill -INT "$perf_pid"; wait "$perf_pid" || true; }
  echo "$1 $2 $N $((2 * N)) $(echo "$end - $start" | bc)"
  echo "  cpu $(cpu_delta "$before" "$(cpu_seconds "$run_dir")") steal=$(steal_since "$steal_before")"
  echo "  spread $(python3 "$HERE/burst_objects.py" spread)"
  [[ -n "$rota_pid" ]] && echo "  rota peak memory $(awk '/VmHWM/ {print $2, $3}' "/proc/$rota_pid/status")"
  [[ -n "${WATCH:-}" ]] && echo "  watch $WATCH $(stat -c %s "$run_dir/watch.out") bytes"
  if [[ -n "${KEEP:-}" ]]; then # the metrics of the run, beside its logs
    [[ -n "$rota_pid" ]] && curl -fs "http://127.0.0.1:$ROTA_PORT/metrics" >"$run_dir/rota.metrics" || true
    curl -fsk -H "Authorization: Bearer $(awk '/token:/ {print $2}' "$KUBECONFIG")" \
      "https://127.0.0.1:$SCHED_PORT/metrics" >"$run_dir/scheduler.metrics" || true
    kubectl get --raw /metrics >"$run_dir/apiserver.metrics" || true
    echo "  kept $run_dir"
  fi
  cleanup
}

# `name=seconds` of user+system CPU for each process of the run (scheduler 0 before it starts).
cpu_seconds() { # run_dir
  local name pid
  for name in kube-apiserver etcd scheduler rota; do
    case $name in
      scheduler) pid=${sched_pid:-} ;;
      rota) pid=${rota_pid:-} ;;
      *) pid=$(cat "$1/pids/$name.pid" 2>/dev/null || true) ;;
    esac
    if [[ -n "$pid" && -r /proc/$pid/stat ]]; then
      awk -v n="$name" -v hz="$(getconf CLK_TCK)" '{printf "%s=%.2f ", n, ($14 + $15) / hz}' "/proc/$pid/stat"
    else
      printf '%s=0 ' "$name"
    fi
  done
}

# CPU time the hypervisor gave to others while this machine wanted it (all CPUs, /proc/stat):
# a run with seconds of steal ran on a slower machine than its neighbours.
steal() { awk -v hz="$(getconf CLK_TCK)" '/^cpu / {printf "%.2f", $9 / hz}' /proc/stat; }
steal_since() { echo "$(steal) - $1" | bc; }

cpu_delta() { # before after
  python3 -c 'import sys
b = dict(kv.split("=") for kv in sys.argv[1].split())
a = dict(kv.split("=") for kv in sys.argv[2].split())
print(" ".join(f"{k}={float(a[k]) - float(b.get(k, 0)):.1f}" for k in a))' "$1" "$2"
}

sched_config() { # run_dir config
  cat <<YAML
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: $1/scheduler.kubeconfig
  qps: $SCHED_QPS
  burst: $SCHED_QPS
leaderElection:
  leaderElect: false
$([[ -n "${PCT:-}" ]] && echo "percentageOfNodesToScore: $PCT")
YAML
  [[ "$2" == none ]] && return
  [[ "$2" == rota-filter || "$2" == none-packed ]] && cat <<YAML
profiles:
- schedulerName: default-scheduler
  pluginConfig:
  - name: NodeResourcesFit
    args:
      scoringStrategy:
        type: MostAllocated
        resources:
        - name: nvidia.com/gpu
          weight: 1
YAML
  [[ "$2" == none-packed ]] && return
  cat <<YAML
extenders:
- urlPrefix: http://127.0.0.1:$ROTA_PORT
  filterVerb: filter
$([[ "$2" == rota-filter ]] || echo "  prioritizeVerb: prioritize")
  weight: 1
  httpTimeout: 5s
  nodeCacheCapable: true
  managedResources:
  - name: nvidia.com/gpu
    ignoredByScheduler: false
YAML
}

for round in $(seq 1 "$ROUNDS"); do
  for config in $CONFIGS; do run "$round" "$config"; done
done
