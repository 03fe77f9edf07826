#!/usr/bin/env bash
# Records what `rota agent --source nvml` reports on a real NVIDIA GPU next to NVML's own
# Python binding (nvidia-ml-py) and nvidia-smi, idle and under a matrix-multiply load, and what
# the extender decides from it. Needs: a built `rota` binary, a GPU with its driver, python3 with
# torch and pynvml. Usage: tests/hardware/record-nvml.sh ROTA_BINARY OUT_DIR
set -uo pipefail
rota=${1:?rota binary}; out=${2:?output folder}
mkdir -p "$out"
fetch() { python3 -c 'import sys,urllib.request;print(urllib.request.urlopen(sys.argv[1],timeout=5).read().decode())' "$1"; }
post() { python3 -c 'import sys,urllib.request
r=urllib.request.Request(sys.argv[1],data=open(sys.argv[2],"rb").read(),headers={"Content-Type":"application/json"})
print(urllib.request.urlopen(r,timeout=10).read().decode())' "$1" "$2"; }
pynvml_snapshot() { python3 - <<'PY'
import json, pynvml as n
n.nvmlInit()
gpus=[]
for i in range(n.nvmlDeviceGetCount()):
    h=n.nvmlDeviceGetHandleByIndex(i); m=n.nvmlDeviceGetMemoryInfo(h); u=n.nvmlDeviceGetUtilizationRates(h)
    def opt(f):
        try: return f()
        except n.NVMLError as e: return "error: %s" % e
    gpus.append({"index":i,"uuid":n.nvmlDeviceGetUUID(h),"name":n.nvmlDeviceGetName(h),
      "memoryTotalBytes":m.total,"memoryUsedBytes":m.used,"gpuUtilPercent":u.gpu,"memUtilPercent":u.memory,
      "temperatureC":opt(lambda:n.nvmlDeviceGetTemperature(h,n.NVML_TEMPERATURE_GPU)),
      "powerMilliwatts":opt(lambda:n.nvmlDeviceGetPowerUsage(h)),
      "smClockMHz":opt(lambda:n.nvmlDeviceGetClockInfo(h,n.NVML_CLOCK_SM)),
      "eccVolatileUncorrected":opt(lambda:n.nvmlDeviceGetTotalEccErrors(h,n.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,n.NVML_VOLATILE_ECC)),
      "throttleReasons":opt(lambda:n.nvmlDeviceGetCurrentClocksThrottleReasons(h))})
print(json.dumps({"driver":n.nvmlSystemGetDriverVersion(),"gpus":gpus},indent=1))
PY
}
node=$(hostname)
nvidia-smi -q > "$out/nvidia-smi-q.txt" 2>&1
"$rota" --version > "$out/versions.txt" 2>&1; uname -a >> "$out/versions.txt"
RUST_LOG=info "$rota" agent --source nvml --node-name "$node" --listen 127.0.0.1:9402 --interval 1 > "$out/agent.log" 2>&1 &
agent=$!
sleep 3
fetch http://127.0.0.1:9402/v1/telemetry > "$out/telemetry-idle.json"
pynvml_snapshot > "$out/pynvml-idle.json"
# Load: bf16 matmuls on the GPU for 20 s, holding ~30 GiB.
python3 -c '
import torch,time
x=torch.randn(8192,8192,device="cuda",dtype=torch.bfloat16); hold=torch.empty(30*2**30,dtype=torch.uint8,device="cuda")
t=time.time()
while time.time()-t<20: y=x@x
torch.cuda.synchronize()' > "$out/load.log" 2>&1 &
load=$!
sleep 10
fetch http://127.0.0.1:9402/v1/telemetry > "$out/telemetry-busy.json"
pynvml_snapshot > "$out/pynvml-busy.json"
fetch http://127.0.0.1:9402/metrics > "$out/agent-metrics-busy.txt"
# The extender, fed by this agent, judging the same node (learned from a full Node object).
RUST_LOG=info "$rota" extender --cluster none --listen 127.0.0.1:8888 --ledger-file /tmp/rota-ledger.json \
  --agent "$node=http://127.0.0.1:9402/v1/telemetry" > "$out/extender.log" 2>&1 &
ext=$!
sleep 4
cat > /tmp/filter.json <<JSON
{"Pod":{"metadata":{"name":"train","namespace":"team-a","uid":"u1","labels":{"rota.io/tenant":"team-a"}},
 "spec":{"containers":[{"name":"main","resources":{"limits":{"nvidia.com/gpu":"1"}}}]}},
 "Nodes":{"items":[{"metadata":{"name":"$node","labels":{"nvidia.com/gpu.product":"NVIDIA-H100-80GB-HBM3","nvidia.com/gpu.memory":"81559"}},
 "status":{"allocatable":{"nvidia.com/gpu":"1","cpu":"16"},"conditions":[{"type":"Ready","status":"True"}]}}]}}
JSON
post http://127.0.0.1:8888/filter /tmp/filter.json > "$out/extender-filter.json" 2>&1
post http://127.0.0.1:8888/prioritize /tmp/filter.json > "$out/extender-prioritize.json" 2>&1
fetch http://127.0.0.1:8888/metrics > "$out/extender-metrics.txt" 2>&1
wait $load
kill $agent $ext 2>/dev/null
ls -la "$out"
