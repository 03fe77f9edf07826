#!/usr/bin/env python3
"""Bulk objects for tests/e2e/burst.sh, straight to the API server (kubectl is too slow for
thousands of objects).

  burst_objects.py create N      N 8-GPU Ready nodes, then 2N pending one-GPU pods
  burst_objects.py unbound       prints 1 while a burst pod has no spec.nodeName, else 0
  burst_objects.py wait LIMIT_S  returns once every burst pod has a node (a watch, not a poll)
  burst_objects.py spread        how the bound burst pods lie: nodes used, most on one node,
                                 nodes with all 8 GPUs taken (packing leaves whole nodes free)

Reads the server and bearer token from $KUBECONFIG (the admin kubeconfig of up.sh).
"""
import concurrent.futures
import json
import os
import re
import ssl
import sys
import time
import urllib.parse
import urllib.request

CONFIG = open(os.environ["KUBECONFIG"]).read()
SERVER = re.search(r"server: (\S+)", CONFIG).group(1)
TOKEN = re.search(r"token: (\S+)", CONFIG).group(1)
TLS = ssl.create_default_context()
TLS.check_hostname = False
TLS.verify_mode = ssl.CERT_NONE
GPUS_PER_NODE = 8
PODS = "/api/v1/namespaces/default/pods"
BURST = "labelSelector=app%3Dburst"


def request(method, path, body=None, content="application/json"):
    """An authorized request to the API server."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(SERVER + path, data=data, method=method)
    req.add_header("Authorization", "Bearer " + TOKEN)
    req.add_header("Content-Type", content)
    return req


def call(method, path, body=None, content="application/json"):
    with urllib.request.urlopen(request(method, path, body, content), context=TLS,
                                timeout=60) as resp:
        return json.loads(resp.read() or b"{}")


def node(i):
    name = f"gpu-node-{i}"
    call("POST", "/api/v1/nodes", {
        "metadata": {"name": name, "labels": {
            "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu.memory": "81920"}},
        "spec": {}})
    resources = {"nvidia.com/gpu": str(GPUS_PER_NODE), "cpu": "64", "memory": "512Gi",
                 "pods": "110"}
    call("PATCH", f"/api/v1/nodes/{name}/status", {"status": {
        "capacity": resources, "allocatable": resources,
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "message": "e2e", "lastHeartbeatTime": None,
                        "lastTransitionTime": None}]}},
         content="application/strategic-merge-patch+json")
    # The node lifecycle taints a node created without a kubelet as not ready; drop them.
    call("PATCH", f"/api/v1/nodes/{name}", {"spec": {"taints": None}},
         content="application/merge-patch+json")


def pod(i):
    call("POST", PODS, {
        "metadata": {"name": f"burst-{i}", "labels": {"app": "burst"}},
        "spec": {"containers": [{"name": "main", "image": "registry.invalid/none:0",
                                 "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}})


def create(n):
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        list(pool.map(node, range(n)))
        list(pool.map(pod, range(2 * n)))


def wait_bound(limit_s):
    """Returns once every burst pod has a node, watching from a list (so nothing is missed
    whenever it starts); fails after limit_s seconds. A watch costs the API server one event per
    bind, where polling for unbound pods would cost it a scan of the bound ones each time."""
    deadline = time.monotonic() + limit_s
    while True:
        listed = call("GET", f"{PODS}?{BURST}")
        unbound = {p["metadata"]["name"] for p in listed["items"]
                   if not p["spec"].get("nodeName")}
        if not unbound:
            return
        version = listed["metadata"]["resourceVersion"]
        watch = request("GET", f"{PODS}?{BURST}&watch=1&resourceVersion={version}")
        try:
            with urllib.request.urlopen(watch, context=TLS, timeout=limit_s) as stream:
                for line in stream:
                    event = json.loads(line)
                    if event["type"] == "ERROR":
                        break  # e.g. 410 Gone: list again
                    changed = event["object"]
                    if event["type"] == "DELETED" or changed["spec"].get("nodeName"):
                        unbound.discard(changed["metadata"]["name"])
                    if not unbound:
                        return
                    if time.monotonic() > deadline:
                        break
        except OSError:  # a read timeout or a dropped stream: list again, within the limit
            pass
        if time.monotonic() > deadline:
            sys.exit(f"{len(unbound)} burst pods still unbound after {limit_s:.0f} s")


def unbound():
    """1 while some burst pod has no node, else 0 (burst.sh POLL=1). Not cheap, although one
    pod at most is sent back: the API server reads the pods from etcd page by page until one
    matches, and late in a burst thousands of bound pods come first in key order (measured
    with 9,999 of 10,000 bound: 0.4 CPU-seconds of kube-apiserver and 0.1 of etcd per call)."""
    items = call("GET", f"{PODS}?{BURST}&fieldSelector=spec.nodeName%3D&limit=1")["items"]
    return 1 if items else 0


def spread():
    per_node = {}
    base = f"{PODS}?{BURST}&limit=5000"
    path = base
    while path:
        page = call("GET", path)
        for item in page["items"]:
            node = item["spec"].get("nodeName")
            if node:
                per_node[node] = per_node.get(node, 0) + 1
        token = page["metadata"].get("continue")
        path = token and f"{base}&continue={urllib.parse.quote(token)}"
    most = max(per_node.values(), default=0)
    full = sum(1 for n in per_node.values() if n >= GPUS_PER_NODE)
    return f"{len(per_node)} nodes used, at most {most} pods on one, {full} full"


if __name__ == "__main__":
    if sys.argv[1] == "create":
        create(int(sys.argv[2]))
    elif sys.argv[1] == "spread":
        print(spread())
    elif sys.argv[1] == "wait":
        wait_bound(float(sys.argv[2]))
    else:
        print(unbound())
