#!/usr/bin/env bash
# Offline schema validation of everything deploy/ renders.
#
# Renders deploy/, deploy/monitoring and deploy/examples with `kubectl kustomize` (deploy/ and
# deploy/monitoring wrap the Helm chart's generated render), and, when helm-python-sdk is
# installed, the chart itself with the two other value sets of deploy/helm/test_chart.py. Then
# validates every built-in Kubernetes object against the Kubernetes $K8S_VERSION OpenAPI
# schemas with kubernetes-validate (PyPI; it ships the schemas, so no cluster and no network
# once installed), in strict mode: an unknown field is an error. An object of a built-in kind
# that has no schema (a mistyped apiVersion) is an error too. Objects of CRD groups (Prometheus
# Operator, KubeVirt) have no schema here; tests/deploy.rs checks the fields rota relies on.
#
# Usage: deploy/validate.sh            (from anywhere; exit 0 = all valid)
# Env:   K8S_VERSION (default 1.33.0), PYTHON (default python3; .ci/run passes its virtualenv's,
#        with deploy/helm/requirements.txt installed)
set -euo pipefail
cd "$(dirname "$0")/.."

K8S_VERSION=${K8S_VERSION:-1.33.0}
PYTHON=${PYTHON:-python3}
# API groups served by CRDs, not by Kubernetes itself.
CRD_GROUPS="monitoring.coreos.com kubevirt.io cdi.kubevirt.io"

if ! command -v kubectl >/dev/null 2>&1; then
    echo "validate.sh: kubectl not found; it is needed to render deploy/ (kubectl kustomize)" >&2
    exit 2
fi
if ! "$PYTHON" -c 'import kubernetes_validate' >/dev/null 2>&1; then
    echo "validate.sh: installing kubernetes-validate (PyPI)"
    "$PYTHON" -m pip install --quiet --disable-pip-version-check 'kubernetes-validate>=1.33,<2'
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for dir in deploy deploy/monitoring deploy/examples; do
    out="$work/rendered-$(echo "$dir" | tr / -).yaml"
    kubectl kustomize "$dir" >"$out"
    echo "rendered $dir"
done

# The chart with the other value sets its tests use (a minimal and a full one).
if "$PYTHON" -c 'import helm_python' >/dev/null 2>&1; then
    "$PYTHON" - "$work" <<'PY'
import pathlib, sys
sys.path.insert(0, "deploy/helm")
import render, test_chart
out = pathlib.Path(sys.argv[1])
(out / "rendered-chart-minimal.yaml").write_text(render.render(test_chart.MINIMAL))
(out / "rendered-chart-full.yaml").write_text(
    render.render(test_chart.FULL, name="gpu", namespace="gpu-sched"))
print("rendered deploy/helm/rota (minimal and full value sets)")
PY
else
    echo "validate.sh: helm-python-sdk not installed: the chart's other value sets are not validated (.ci/run installs it)"
fi

# One file per built-in object, so a failure names the object; CRD objects are listed only.
mkdir "$work/objects"
"$PYTHON" - "$work" "$CRD_GROUPS" <<'PY'
import pathlib, sys, yaml
work, crd_groups = pathlib.Path(sys.argv[1]), set(sys.argv[2].split())
n = 0
for rendered in sorted(work.glob("rendered-*.yaml")):
    for doc in yaml.safe_load_all(rendered.read_text()):
        if not doc:
            continue
        group = doc.get("apiVersion", "").rpartition("/")[0]
        name = f'{doc.get("kind")}/{doc.get("metadata", {}).get("name")}'
        if group in crd_groups:
            print(f"skipped (CRD, checked by tests/deploy.rs): {doc['apiVersion']} {name}")
            continue
        n += 1
        (work / "objects" / f"{n:03d}.yaml").write_text(yaml.safe_dump(doc))
print(f"{n} built-in objects to validate")
PY

status=0
"$PYTHON" -m kubernetes_validate --kubernetes-version "$K8S_VERSION" --strict \
    "$work"/objects/*.yaml >"$work/report" 2>&1 || status=$?
sed "s|$work/objects/||" "$work/report"
# kubernetes-validate only warns (exit 0) when it has no schema for a kind.
if grep -qE '^(WARN|ERROR)' "$work/report"; then
    status=1
fi
passed=$(grep -c '^INFO.* passed ' "$work/report" || true)
if [ "$status" -ne 0 ]; then
    echo "validate.sh: FAILED ($passed objects passed; see WARN/ERROR lines above)" >&2
    exit 1
fi
echo "validate.sh: $passed objects valid for Kubernetes $K8S_VERSION (strict)"
