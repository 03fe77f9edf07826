#!/usr/bin/env python3
"""Tests of the rota Helm chart, rendered and linted by Helm v4's own library (helm-python-sdk).

Renders the defaults and two value sets (a minimal one and a full one under another release
name and namespace) and checks the objects: kinds and names, RBAC, probes, security context,
pinned images, priority classes, anti-affinity, a PDB per multi-replica Deployment, the config
and scheduler wiring. Also: `helm lint --strict`, the values schema, and that deploy/rota.yaml
and deploy/monitoring/rota-monitoring.yaml equal a fresh render.

Run: python3 deploy/helm/test_chart.py   (needs helm-python-sdk==0.2.2 and PyYAML; .ci/run
installs both in a virtualenv). Plain unittest, no pytest needed.
"""

from __future__ import annotations

import csv
import hashlib
import pathlib
import sys
import unittest

import helm_python as helm
import yaml

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import render as chart_render  # noqa: E402  (deploy/helm/render.py)

CHART = HERE / "rota"
REPO = HERE.parent.parent

MINIMAL = {
    "scheduler": {"enabled": False},
    "agent": {"enabled": False},
    "extender": {"replicas": 1},
    "priorityClassName": {"extender": ""},
    "networkPolicy": {"extenderExtraFrom": [{"ipBlock": {"cidr": "192.0.2.10/32"}}]},
}

FULL = {
    "namespace": {"create": True},
    "image": {"repository": "registry.example/rota",
              "digest": "sha256:" + "ab" * 32},
    "priorityClassName": {"extender": "gpu-critical", "scheduler": "gpu-critical",
                          "agent": "system-node-critical"},
    "priorityClassQuota": True,
    "extender": {"replicas": 3, "maxInflightBodyBytes": 268435456,
                 "resources": {"requests": {"cpu": "200m", "memory": "512Mi"},
                               "limits": {"cpu": "2", "memory": "2Gi"}}},
    # Helm merges maps with the defaults: null drops a default key.
    "agent": {"nodeSelector": {"gpu": "yes", "nvidia.com/gpu.present": None}, "port": 9500,
              "vfio": {"enabled": False}},
    "telemetry": {"dcgmExporter": {"enabled": True}},
    "scheduler": {"name": "fair", "replicas": 3, "image": {"tag": "v1.36.0"},
                  "extender": {"weight": 3}},
    "monitoring": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    "config": {"rotation": {"dryRun": False},
               "tenants": [{"name": "lab", "weight": 3}, {"name": "course", "weight": 1}]},
}


def objects(values: dict | None = None, *, name: str = "rota",
            namespace: str = "rota-system") -> list[dict]:
    text = chart_render.render(values, name=name, namespace=namespace)
    return [d for d in yaml.safe_load_all(text) if d]


def find(objs: list[dict], kind: str, name: str) -> dict:
    for o in objs:
        if o["kind"] == kind and o["metadata"]["name"] == name:
            return o
    raise AssertionError(f"no {kind}/{name} in {sorted(names(objs))}")


def names(objs: list[dict]) -> set[tuple[str, str]]:
    return {(o["kind"], o["metadata"]["name"]) for o in objs}


def selects(match: dict, labels: dict) -> bool:
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def grants(role: dict) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"]
            for r in rule["resources"] for v in rule["verbs"]}


def table(scope: str) -> set[tuple[str, str, str]]:
    rows = (REPO / "deploy" / "rbac-uses.tsv").read_text().splitlines()
    reader = csv.reader((r for r in rows if r and not r.startswith("#")), delimiter="\t")
    return {("" if g == "-" else g, r, v) for s, g, r, v, *_ in reader if s == scope}


class Workloads:
    """Checks every rendered Deployment and DaemonSet must pass, whatever the values."""

    def check_workloads(self, objs: list[dict], classes: dict[str, str]) -> None:
        workloads = [o for o in objs if o["kind"] in ("Deployment", "DaemonSet")]
        self.assertTrue(workloads)
        for w in workloads:
            who = f'{w["kind"]}/{w["metadata"]["name"]}'
            pod = w["spec"]["template"]["spec"]
            self.assertEqual(pod["securityContext"]["runAsNonRoot"], True, who)
            self.assertEqual(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault")
            self.assertTrue(selects(w["spec"]["selector"]["matchLabels"],
                                    w["spec"]["template"]["metadata"]["labels"]), who)
            for c in pod["containers"]:
                image = c["image"]
                self.assertTrue("@sha256:" in image or
                                (":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest")),
                                f"{who}: {image} not pinned")
                sc = c["securityContext"]
                self.assertEqual((sc["runAsNonRoot"], sc["allowPrivilegeEscalation"],
                                  sc["readOnlyRootFilesystem"], sc["capabilities"]["drop"]),
                                 (True, False, True, ["ALL"]), who)
                for kind in ("requests", "limits"):
                    for res in ("cpu", "memory"):
                        self.assertIn(res, c["resources"][kind], f"{who}: {kind}.{res}")
                ports = {p["name"] for p in c["ports"]}
                for probe in ("readinessProbe", "livenessProbe"):
                    self.assertIn(c[probe]["httpGet"]["port"], ports, f"{who}: {probe}")
                for env in c.get("env", []):
                    ref = env.get("valueFrom", {}).get("fieldRef")
                    if ref:
                        self.assertEqual(ref.get("apiVersion"), "v1", f"{who}: {env['name']}")
            role = "agent" if w["kind"] == "DaemonSet" else (
                "scheduler" if "scheduler" in w["metadata"]["name"] else "extender")
            self.assertEqual(pod.get("priorityClassName", ""), classes[role], who)
            if w["kind"] == "Deployment":
                labels = w["spec"]["template"]["metadata"]["labels"]
                hard = pod["affinity"]["podAntiAffinity"][
                    "requiredDuringSchedulingIgnoredDuringExecution"]
                self.assertTrue(any(t["topologyKey"] == "kubernetes.io/hostname" and
                                    selects(t["labelSelector"]["matchLabels"], labels)
                                    for t in hard), who)
                zone = [t for t in pod["topologySpreadConstraints"]
                        if t["topologyKey"] == "topology.kubernetes.io/zone"]
                self.assertEqual(zone[0]["whenUnsatisfiable"], "ScheduleAnyway", who)
                pdbs = [p for p in objs if p["kind"] == "PodDisruptionBudget" and
                        selects(p["spec"]["selector"]["matchLabels"], labels)]
                if w["spec"]["replicas"] > 1:
                    self.assertEqual(len(pdbs), 1, f"{who}: one PDB")
                    self.assertEqual(pdbs[0]["spec"]["minAvailable"], 1)
                else:
                    self.assertEqual(pdbs, [], f"{who}: a single replica gets no PDB "
                                               "(minAvailable 1 would block every drain)")


class Defaults(Workloads, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.objs = objects()

    def test_kinds_and_names(self):
        self.assertEqual(names(self.objs), {
            ("NetworkPolicy", "rota-extender"), ("NetworkPolicy", "rota-agent"),
            ("PodDisruptionBudget", "rota-extender"), ("PodDisruptionBudget", "rota-scheduler"),
            ("ServiceAccount", "rota-extender"), ("ServiceAccount", "rota-agent"),
            ("ServiceAccount", "rota-scheduler"),
            ("ConfigMap", "rota-config"), ("ConfigMap", "rota-scheduler-config"),
            ("ClusterRole", "rota-extender"), ("ClusterRoleBinding", "rota-extender"),
            ("ClusterRoleBinding", "rota-scheduler-as-kube-scheduler"),
            ("ClusterRoleBinding", "rota-scheduler-as-volume-scheduler"),
            ("Role", "rota-extender"), ("Role", "rota-scheduler-leader-election"),
            ("RoleBinding", "rota-extender"), ("RoleBinding", "rota-scheduler-leader-election"),
            ("RoleBinding", "rota-scheduler-extension-apiserver-authentication-reader"),
            ("Service", "rota-extender"), ("Deployment", "rota-extender"),
            ("Deployment", "rota-scheduler"), ("DaemonSet", "rota-agent"),
            ("DaemonSet", "rota-agent-vfio"),
        })
        for o in self.objs:
            if o["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
                want = "kube-system" if o["metadata"]["name"].endswith("-reader") else "rota-system"
                self.assertEqual(o["metadata"]["namespace"], want, o["metadata"]["name"])

    def test_workloads(self):
        self.check_workloads(self.objs, {"extender": "system-cluster-critical",
                                         "scheduler": "system-cluster-critical",
                                         "agent": "system-node-critical"})
        extender = find(self.objs, "Deployment", "rota-extender")
        self.assertEqual(extender["spec"]["replicas"], 2)
        c = extender["spec"]["template"]["spec"]["containers"][0]
        with helm.Chart.load(str(CHART)) as chart:
            self.assertEqual(c["image"], "rota:" + chart.metadata["appVersion"])
        self.assertEqual(c["resources"]["limits"]["memory"], "1Gi")
        self.assertNotIn("--max-inflight-body-bytes", c["args"])
        self.assertEqual(c["readinessProbe"]["httpGet"]["path"], "/readyz")

    def test_rbac_is_the_table(self):
        self.assertEqual(grants(find(self.objs, "ClusterRole", "rota-extender")),
                         table("cluster"))
        self.assertEqual(grants(find(self.objs, "Role", "rota-extender")), table("namespace"))
        agent_sa = find(self.objs, "ServiceAccount", "rota-agent")
        self.assertIs(agent_sa["automountServiceAccountToken"], False)

    def test_config_checksum_rolls_the_pods(self):
        data = find(self.objs, "ConfigMap", "rota-config")["data"]["rota-config.yaml"]
        digest = hashlib.sha256(data.rstrip("\n").encode()).hexdigest()
        for kind, name in [("Deployment", "rota-extender"), ("DaemonSet", "rota-agent"),
                           ("DaemonSet", "rota-agent-vfio")]:
            annotations = find(self.objs, kind, name)["spec"]["template"]["metadata"][
                "annotations"]
            self.assertEqual(annotations["checksum/config"], digest, name)
        config = yaml.safe_load(data)
        self.assertEqual(config["telemetry"]["agentSelector"], "app.kubernetes.io/name=rota-agent")
        self.assertEqual(config["telemetry"]["agentPort"], 9402)
        self.assertNotIn("dcgmExporterSelector", config["telemetry"])
        self.assertIs(config["rotation"]["dryRun"], True)

    def test_scheduler_config_follows_the_rota_config(self):
        data = find(self.objs, "ConfigMap", "rota-config")["data"]["rota-config.yaml"]
        sched = yaml.safe_load(find(self.objs, "ConfigMap", "rota-scheduler-config")["data"]
                               ["scheduler-config.yaml"])
        ext = sched["extenders"][0]
        self.assertEqual(ext["urlPrefix"], "http://rota-extender.rota-system.svc:8888")
        self.assertEqual([r["name"] for r in ext["managedResources"]],
                         yaml.safe_load(data)["gpuResources"])
        self.assertEqual((ext["weight"], ext["ignorable"], ext["nodeCacheCapable"]),
                         (5, False, True))

    def test_generated_files_equal_the_render(self):
        for path, text in chart_render.generated().items():
            self.assertEqual(path.read_text(), text,
                             f"{path}: run python3 deploy/helm/render.py and commit")


class Minimal(Workloads, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.objs = objects(MINIMAL)

    def test_only_the_extender(self):
        kinds = {k for k, _ in names(self.objs)}
        self.assertNotIn("DaemonSet", kinds)
        self.assertNotIn("PodDisruptionBudget", kinds)
        self.assertEqual([n for k, n in names(self.objs) if k == "Deployment"], ["rota-extender"])
        self.assertFalse(any("scheduler" in n for _, n in names(self.objs)))
        self.assertNotIn(("NetworkPolicy", "rota-agent"), names(self.objs))

    def test_workloads(self):
        self.check_workloads(self.objs, {"extender": "", "scheduler": "", "agent": ""})

    def test_network_policy_admits_the_extra_peer_and_prometheus_only(self):
        policy = find(self.objs, "NetworkPolicy", "rota-extender")
        peers = policy["spec"]["ingress"][0]["from"]
        self.assertEqual(len(peers), 2)
        self.assertIn({"ipBlock": {"cidr": "192.0.2.10/32"}}, peers)


class Full(Workloads, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.objs = objects(FULL, name="gpu", namespace="gpu-sched")

    def test_names_follow_the_release_and_namespace(self):
        ns = find(self.objs, "Namespace", "gpu-sched")
        self.assertEqual(ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
                         "restricted")
        for kind, name in [("Deployment", "gpu-rota-extender"), ("Deployment", "gpu-rota-scheduler"),
                           ("DaemonSet", "gpu-rota-agent"), ("PodMonitor", "gpu-rota-extender"),
                           ("PrometheusRule", "gpu-rota"), ("ResourceQuota", "gpu-rota-critical-pods"),
                           ("ConfigMap", "gpu-rota-grafana-dashboard")]:
            self.assertEqual(find(self.objs, kind, name)["metadata"]["namespace"], "gpu-sched")
        self.assertNotIn(("DaemonSet", "gpu-rota-agent-vfio"), names(self.objs))

    def test_workloads(self):
        self.check_workloads(self.objs, {"extender": "gpu-critical", "scheduler": "gpu-critical",
                                         "agent": "system-node-critical"})
        c = find(self.objs, "Deployment", "gpu-rota-extender")["spec"]["template"]["spec"][
            "containers"][0]
        self.assertEqual(c["image"], "registry.example/rota@sha256:" + "ab" * 32)
        self.assertEqual(c["args"][-2:], ["--max-inflight-body-bytes", "268435456"])
        agent = find(self.objs, "DaemonSet", "gpu-rota-agent")["spec"]["template"]["spec"]
        self.assertEqual(agent["nodeSelector"], {"gpu": "yes"})
        self.assertEqual(agent["containers"][0]["ports"][0]["containerPort"], 9500)

    def test_config_values_reach_the_rota_config(self):
        config = yaml.safe_load(find(self.objs, "ConfigMap", "gpu-rota-config")["data"]
                                ["rota-config.yaml"])
        self.assertIs(config["rotation"]["dryRun"], False)
        self.assertEqual([t["name"] for t in config["tenants"]], ["lab", "course"])
        self.assertEqual(config["telemetry"]["dcgmExporterSelector"], "app=nvidia-dcgm-exporter")
        self.assertEqual(config["telemetry"]["dcgmExporterPort"], 9400)
        self.assertEqual(config["telemetry"]["agentPort"], 9500)
        # Untouched keys keep the defaults of values.yaml.
        self.assertEqual(config["quantum"]["jobSeconds"], 600)

    def test_scheduler_wiring_follows_the_release(self):
        sched = yaml.safe_load(find(self.objs, "ConfigMap", "gpu-rota-scheduler-config")["data"]
                               ["scheduler-config.yaml"])
        self.assertEqual(sched["profiles"][0]["schedulerName"], "fair")
        self.assertEqual(sched["extenders"][0]["urlPrefix"],
                         "http://gpu-rota-extender.gpu-sched.svc:8888")
        self.assertEqual(sched["extenders"][0]["weight"], 3)
        self.assertEqual(sched["leaderElection"]["resourceNamespace"], "gpu-sched")
        lease = find(self.objs, "Role", "gpu-rota-scheduler-leader-election")["rules"][0]
        self.assertEqual(lease["resourceNames"], [sched["leaderElection"]["resourceName"]])
        image = find(self.objs, "Deployment", "gpu-rota-scheduler")["spec"]["template"]["spec"][
            "containers"][0]["image"]
        self.assertEqual(image, "registry.k8s.io/kube-scheduler:v1.36.0")

    def test_monitoring_objects(self):
        rule = find(self.objs, "PrometheusRule", "gpu-rota")
        self.assertEqual(rule["metadata"]["labels"]["release"], "kube-prometheus-stack")
        exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
        self.assertTrue(any('job="gpu-sched/gpu-rota-extender"' in e for e in exprs))
        self.assertFalse(any("rota-system" in e for e in exprs))
        summaries = [r["annotations"]["summary"] for g in rule["spec"]["groups"]
                     for r in g["rules"]]
        self.assertTrue(any("{{ $labels.tenant }}" in s for s in summaries),
                        "Prometheus templates pass through Helm untouched")
        quota = find(self.objs, "ResourceQuota", "gpu-rota-critical-pods")
        self.assertEqual(quota["spec"]["scopeSelector"]["matchExpressions"][0]["values"],
                         ["gpu-critical", "system-node-critical"])


class ChartHygiene(unittest.TestCase):
    def test_lint_strict_is_clean(self):
        for values in ({}, MINIMAL, FULL):
            report = helm.lint(str(CHART), values, strict=True, namespace="rota-system",
                               kube_version="v1.33.0")
            problems = [m for m in report["messages"] if m["severity"] >= 2]
            self.assertEqual((report["errors"], problems), ([], []), values)

    def test_schema_refuses_bad_values(self):
        with helm.Chart.load(str(CHART)) as chart:
            for bad in ({"image": {"tag": "latest"}}, {"extender": {"replicas": 0}},
                        {"extender": {"maxInflightBodyBytes": "512Mi"}}, {"extnder": {}},
                        {"config": {"gpuResources": []}}, {"scheduler": {"image": {"tag": "1.33"}}}):
                with self.assertRaises(helm.HelmValuesError, msg=str(bad)):
                    chart.validate_schema(bad)

    def test_chart_refuses_an_unpinned_image(self):
        with helm.Chart.load(str(CHART)) as chart:
            # The schema refuses image.tag latest; the template refuses it where the schema
            # does not look (extender.image) or is skipped.
            with self.assertRaises(helm.HelmRenderError):
                chart.render({"extender": {"image": {"tag": "latest"}}}, name="rota",
                             namespace="rota-system")

    def test_pinned_sdk(self):
        self.assertEqual(helm.__version__, "0.2.2")


if __name__ == "__main__":
    unittest.main(verbosity=2)
