#!/usr/bin/env bash
# Rotation with notice on a real kube-apiserver, kube-scheduler and Job controller (issue #17).
# Not in CI: it needs the binaries of ../shared/controlplane/README.md and a build of rota.
#
# One 8-GPU node (no kubelet). Tenant `physics` runs two 4-GPU Jobs that fill it; tenant `bio`
# then submits a 4-GPU Job. rota (rotation on, Jobs warned WARN_S seconds ahead, 1 s quanta)
# must announce the stop of one physics Job (rota.io/stop-at on the Job and a RotationScheduled
# Event), keep it running until then, then suspend it; the Job controller deletes its pods and
# bio's pods are bound. Prints what it saw, with times; exits non-zero if a step does not happen.
# With OPT_OUT=1 the owner annotates the warned Job rota.io/preemptible=false instead: the stop
# must be cancelled (RotationCancelled Event, notice removed) and the Job keep running.
# Usage: BIN_DIR=DIR ROTA=target/debug/rota [OPT_OUT=1] tests/e2e/warning.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${BIN_DIR:?set BIN_DIR to the folder holding kube-apiserver, kube-scheduler, kube-controller-manager}"
ROTA=${ROTA:-target/debug/rota}
CP=${CONTROLPLANE:-../shared/controlplane}
WARN_S=${WARN_S:-20}
export API_PORT=${API_PORT:-17443} ETCD_PORT=${ETCD_PORT:-13379} ETCD_PEER_PORT=${ETCD_PEER_PORT:-13380}
export SCHED_PORT=${SCHED_PORT:-21259} KCM_PORT=${KCM_PORT:-21257}
ROTA_PORT=${ROTA_PORT:-19888}
RUN_DIR=$(mktemp -d)
export RUN_DIR WITH_SCHEDULER=1 WITH_KCM=1 KUBECONFIG=$RUN_DIR/admin.kubeconfig AUTHZ=AlwaysAllow
export EXTENDER_URL=http://127.0.0.1:$ROTA_PORT EXTENDER_NODE_CACHE_CAPABLE=true
rota_pid=""
cleanup() {
  [[ -n "$rota_pid" ]] && { kill "$rota_pid" 2>/dev/null || true; wait "$rota_pid" 2>/dev/null || true; }
  bash "$CP/down.sh" $([[ -n "${KEEP:-}" ]] || echo --purge) >/dev/null 2>&1 || true
}
trap cleanup EXIT
t0=$(date +%s)
say() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
wait_for() { # seconds description command...
  local limit=$1 what=$2; shift 2
  for _ in $(seq 1 $((limit * 2))); do
    if "$@" >/dev/null 2>&1; then say "$what"; return 0; fi
    sleep 0.5
  done
  say "FAILED: $what (within $limit s)"; cat "$RUN_DIR/rota.log" | tail -20; return 1
}

bash "$CP/up.sh" >"$RUN_DIR/up.log" 2>&1 || { cat "$RUN_DIR/up.log"; exit 1; }
# (up.sh wipes RUN_DIR: the config goes in after it.)
cat >"$RUN_DIR/rota.yaml" <<YAML
apiVersion: rota.io/v1alpha1
kind: RotaConfig
tenants: [{name: physics}, {name: bio}]
quantum: {jobSeconds: 1, virtualMachineSeconds: 1, podSeconds: 1, minSeconds: 1}
rotation:
  dryRun: false
  intervalSeconds: 2
  warning: {jobSeconds: $WARN_S}
YAML
python3 - <<'PY'
import os, sys
sys.path.insert(0, "tests/e2e")
import burst_objects as b
b.node(0)
PY
kubectl create namespace rota-system >/dev/null
for ns in physics bio; do kubectl create namespace $ns >/dev/null; done
"$ROTA" extender --listen 127.0.0.1:$ROTA_PORT --cluster kube --config "$RUN_DIR/rota.yaml" \
  --ledger-file "$RUN_DIR/ledger.json" >"$RUN_DIR/rota.log" 2>&1 &
rota_pid=$!
wait_for 60 "rota is ready" curl -fs http://127.0.0.1:$ROTA_PORT/readyz

job() { # namespace name
  kubectl apply -f - >/dev/null <<YAML
apiVersion: batch/v1
kind: Job
metadata: {name: $2, namespace: $1}
spec:
  parallelism: 4
  completions: 4
  template:
    metadata: {labels: {rota.io/tenant: $1}}
    spec:
      schedulerName: default-scheduler
      restartPolicy: Never
      containers:
      - name: main
        image: registry.invalid/none:0
        resources: {limits: {nvidia.com/gpu: "1"}}
YAML
}
bound() { # namespace job count
  [[ $(kubectl get pods -n "$1" -l job-name="$2" -o jsonpath='{range .items[?(@.spec.nodeName)]}x{end}' | wc -c) -ge $3 ]]
}
job physics train-1; job physics train-2
wait_for 60 "physics: 8 pods bound (the node is full)" bash -c "$(declare -f bound); bound physics train-1 4 && bound physics train-2 4"
sleep 3
job bio fold
announced() {
  kubectl get jobs -n physics -o jsonpath='{range .items[*]}{.metadata.name}={.metadata.annotations.rota\.io/stop-at}{"\n"}{end}' | grep -E '=.+$'
}
wait_for 30 "a physics Job carries rota.io/stop-at" bash -c "$(declare -f announced); announced"
victim=$(kubectl get jobs -n physics -o jsonpath='{range .items[*]}{.metadata.name}={.metadata.annotations.rota\.io/stop-at}{"\n"}{end}' | grep -E '=.+$' | head -1)
say "announced: $victim"
say "$(kubectl get jobs -n physics "${victim%%=*}" -o jsonpath='{.metadata.annotations.rota\.io/stop-for} / {.metadata.annotations.rota\.io/stop-reason}')"
wait_for 20 "RotationScheduled Event" bash -c "kubectl get events -n physics --field-selector reason=RotationScheduled -o name | grep -q ."
say "Event: $(kubectl get events -n physics --field-selector reason=RotationScheduled -o jsonpath='{.items[0].type} {.items[0].reason}: {.items[0].message}{.items[0].note}')"
suspended() { [[ $(kubectl get job -n physics "$1" -o jsonpath='{.spec.suspend}') == true ]]; }
if suspended "${victim%%=*}"; then say "FAILED: suspended before its warning ended"; exit 1; fi
if [[ -n "${OPT_OUT:-}" ]]; then
  # The owner keeps the Job: the stop is cancelled and the notice removed.
  kubectl annotate job -n physics "${victim%%=*}" rota.io/preemptible=false >/dev/null
  say "the owner annotated ${victim%%=*} rota.io/preemptible=false"
  wait_for 20 "RotationCancelled Event" bash -c "kubectl get events -n physics --field-selector reason=RotationCancelled -o name | grep -q ."
  say "Event: $(kubectl get events -n physics --field-selector reason=RotationCancelled -o jsonpath='{.items[0].type} {.items[0].reason}: {.items[0].message}{.items[0].note}')"
  cleared() { [[ -z $(kubectl get job -n physics "$1" -o jsonpath='{.metadata.annotations.rota\.io/stop-at}') ]]; }
  wait_for 10 "the notice is removed" bash -c "$(declare -f cleared); cleared ${victim%%=*}"
  sleep $((WARN_S + 5))
  if suspended "${victim%%=*}"; then say "FAILED: suspended after the owner opted out"; exit 1; fi
  say "not suspended $((WARN_S + 5)) s later; OK"
  exit 0
fi
say "still running during the warning: $(kubectl get pods -n physics -l job-name=${victim%%=*} -o name | wc -l) pods"
wait_for $((WARN_S + 30)) "the announced Job is suspended" bash -c "$(declare -f suspended); suspended ${victim%%=*}"
say "its annotations now: $(kubectl get job -n physics "${victim%%=*}" -o jsonpath='{.metadata.annotations}')"
# Playing the kubelet: the Job controller deleted the pods; finish their termination.
terminating() { kubectl get pods -n physics -l job-name="$1" -o jsonpath='{.items[*].metadata.deletionTimestamp}' | grep -q .; }
wait_for 30 "the Job controller deletes the suspended Job's pods" bash -c "$(declare -f terminating); terminating ${victim%%=*}"
kubectl delete pods -n physics -l job-name="${victim%%=*}" --grace-period=0 --force >/dev/null 2>&1
wait_for 60 "bio: 4 pods bound" bash -c "$(declare -f bound); bound bio fold 4"
say "OK"
