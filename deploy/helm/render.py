#!/usr/bin/env python3
"""Render the rota chart (deploy/helm/rota) with helm-python-sdk, Helm v4's library.

The plain manifests are this chart's render, so they cannot drift from it:

  deploy/rota.yaml                    defaults, release `rota`, namespace `rota-system`, with
                                      namespace.create=true (`kubectl apply -k deploy/`)
  deploy/monitoring/rota-monitoring.yaml
                                      the monitoring templates only, monitoring.enabled=true

Usage:
  render.py                 rewrite both files
  render.py --check         exit 1 (with a diff) if either differs from a fresh render
  render.py -f VALUES.yaml [--set k=v ...] [--namespace NS] [--name NAME]
                            print the chart's render with your values (like `helm template`)

Needs `pip install helm-python-sdk==0.2.2` (see .ci/run); no helm binary, no cluster.
"""

from __future__ import annotations

import argparse
import difflib
import pathlib
import sys

import helm_python as helm

DEPLOY = pathlib.Path(__file__).resolve().parent.parent
CHART = DEPLOY / "helm" / "rota"
RELEASE = "rota"
NAMESPACE = "rota-system"
MONITORING_DIR = "templates/monitoring/"

# Helm's install order by kind (pkg/release/v1/util/kind_sorter.go, InstallOrder), so that a
# plain `kubectl apply -f` creates what others refer to first.
INSTALL_ORDER = [
    "PriorityClass", "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange",
    "PodSecurityPolicy", "PodDisruptionBudget", "ServiceAccount", "Secret", "SecretList",
    "ConfigMap", "StorageClass", "PersistentVolume", "PersistentVolumeClaim",
    "CustomResourceDefinition", "ClusterRole", "ClusterRoleList", "ClusterRoleBinding",
    "ClusterRoleBindingList", "Role", "RoleList", "RoleBinding", "RoleBindingList", "Service",
    "DaemonSet", "Pod", "ReplicationController", "ReplicaSet", "Deployment",
    "HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress",
    "APIService", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
]


def render(values: dict | None = None, *, name: str = RELEASE, namespace: str = NAMESPACE,
           only: str | None = None, exclude: str | None = None) -> str:
    """The chart's manifests as one YAML stream, in Helm's install order.

    Each document keeps its `# Source: rota/templates/...` line, as `helm template` prints it.
    `only`/`exclude` keep or drop templates whose path (under the chart) starts with them.
    """
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema(values or {})
        manifests = chart.render(values or {}, name=name, namespace=namespace,
                                 is_install=True)
    docs = []
    for path in sorted(manifests):
        rel = path.split("/", 1)[1]
        if rel == "templates/NOTES.txt" or rel.startswith("templates/_"):
            continue
        if only and not rel.startswith(only):
            continue
        if exclude and rel.startswith(exclude):
            continue
        for doc in split_documents(manifests[path]):
            docs.append((path, doc))
    docs.sort(key=lambda item: (install_rank(item[1]), item[0]))
    return "".join(f"---\n# Source: {path}\n{doc}\n" for path, doc in docs)


def split_documents(text: str) -> list[str]:
    """The non-empty documents of one rendered template (comments kept)."""
    out, current = [], []
    for line in text.splitlines():
        if line.strip() == "---":
            out.append("\n".join(current))
            current = []
        else:
            current.append(line)
    out.append("\n".join(current))
    return [d.strip("\n") for d in out if any(
        l.strip() and not l.lstrip().startswith("#") for l in d.splitlines())]


def install_rank(doc: str) -> int:
    for line in doc.splitlines():
        if line.startswith("kind:"):
            kind = line.split(":", 1)[1].strip()
            return INSTALL_ORDER.index(kind) if kind in INSTALL_ORDER else len(INSTALL_ORDER)
    return len(INSTALL_ORDER)


def header(what: str, command: str) -> str:
    return (f"# {what}\n"
            f"# GENERATED from the Helm chart deploy/helm/rota by `{command}`: do not edit;\n"
            "# change the chart (or its values.yaml) and regenerate. tests and CI fail when this\n"
            "# file differs from a fresh render.\n")


def generated() -> dict[pathlib.Path, str]:
    plain = render({"namespace": {"create": True}}, exclude=MONITORING_DIR)
    monitoring = render({"monitoring": {"enabled": True}}, only=MONITORING_DIR)
    return {
        DEPLOY / "rota.yaml": header(
            "rota: everything `kubectl apply -k deploy/` installs (the chart's defaults).",
            "python3 deploy/helm/render.py") + plain,
        DEPLOY / "monitoring" / "rota-monitoring.yaml": header(
            "rota's PodMonitors, alerts and Grafana dashboard (`kubectl apply -k "
            "deploy/monitoring`).", "python3 deploy/helm/render.py") + monitoring,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help="compare the generated files with a fresh render")
    parser.add_argument("-f", "--values", action="append", default=[],
                        help="values file (repeatable); prints the render")
    parser.add_argument("--set", action="append", default=[], help="k=v (repeatable)")
    parser.add_argument("--name", default=RELEASE)
    parser.add_argument("--namespace", default=NAMESPACE)
    args = parser.parse_args()

    if args.values or args.set:
        values: dict = {}
        for path in args.values:
            values = merge(values, helm.values_from_yaml(pathlib.Path(path).read_text()))
        for expression in args.set:
            values = merge(values, helm.parse_set_string(expression))
        sys.stdout.write(render(values, name=args.name, namespace=args.namespace))
        return 0

    stale = 0
    for path, text in generated().items():
        rel = path.relative_to(DEPLOY.parent)
        if args.check:
            current = path.read_text() if path.exists() else ""
            if current != text:
                stale += 1
                sys.stdout.writelines(difflib.unified_diff(
                    current.splitlines(True), text.splitlines(True),
                    f"{rel} (committed)", f"{rel} (chart render)"))
            else:
                print(f"{rel}: equal to the chart's render")
        else:
            path.write_text(text)
            print(f"wrote {rel}")
    if stale:
        print(f"\n{stale} generated file(s) differ from the chart: run "
              "`python3 deploy/helm/render.py` and commit", file=sys.stderr)
        return 1
    return 0


def merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


if __name__ == "__main__":
    sys.exit(main())
