//! Helpers of tests/deploy.rs: reading repository files, the generated manifests (deploy/rota.yaml,
//! deploy/monitoring/rota-monitoring.yaml: the Helm chart's render, parsed directly),
//! `kubectl kustomize` renders (cached, skipped without kubectl), JSON-pointer access to
//! rendered objects, the hardening every rota container must have, the metric-name scanner
//! behind the dashboard drift check, and the source scanner behind the RBAC table check.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use rota::config::ValidConfig;
use serde_json::Value;

/// `rel` under the repository root.
pub fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The text of a repository file; panics naming it when unreadable.
pub fn read(rel: &str) -> String {
    let path = repo_file(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Every non-empty document of a YAML stream, as JSON values.
pub fn yaml_docs(text: &str, what: &str) -> Vec<Value> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(text).unwrap_or_else(|e| panic!("parse {what}: {e}"));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// A repository file holding exactly one YAML document.
pub fn yaml_file(rel: &str) -> Value {
    let mut docs = yaml_docs(&read(rel), rel);
    assert_eq!(docs.len(), 1, "{rel} should hold one YAML document");
    docs.remove(0)
}

/// `v` at a JSON pointer, or `Null`.
pub fn at<'a>(v: &'a Value, pointer: &str) -> &'a Value {
    static NULL: Value = Value::Null;
    v.pointer(pointer).unwrap_or(&NULL)
}

/// The string at `pointer`; panics naming the object when it is not one.
pub fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    at(v, pointer)
        .as_str()
        .unwrap_or_else(|| panic!("{pointer} should be a string in {}", name_of(v)))
}

/// The list at `pointer`; panics naming the object when it is not one.
pub fn list<'a>(v: &'a Value, pointer: &str) -> &'a Vec<Value> {
    at(v, pointer)
        .as_array()
        .unwrap_or_else(|| panic!("{pointer} should be a list in {}", name_of(v)))
}

/// `Kind/name` of an object, for messages.
pub fn name_of(v: &Value) -> String {
    format!(
        "{}/{}",
        at(v, "/kind").as_str().unwrap_or("?"),
        at(v, "/metadata/name").as_str().unwrap_or("?")
    )
}

/// The objects of a generated manifest file (`deploy/rota.yaml`, …), parsed once.
pub fn manifest(rel: &'static str) -> &'static [Value] {
    static CACHE: OnceLock<parking_lot::Mutex<BTreeMap<&'static str, &'static [Value]>>> =
        OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut cache = cache.lock();
    cache.entry(rel).or_insert_with(|| {
        let objects = yaml_docs(&read(rel), rel);
        assert!(!objects.is_empty(), "{rel} holds no objects");
        Box::leak(objects.into_boxed_slice())
    })
}

/// `deploy/rota.yaml`: what `kubectl apply -k deploy/` installs.
pub fn installed() -> &'static [Value] {
    manifest("deploy/rota.yaml")
}

/// The RotaConfig text the installed ConfigMap carries (the chart's `config` value).
pub fn rota_config_text() -> &'static str {
    text(
        find(installed(), "ConfigMap", "rota-config"),
        "/data/rota-config.yaml",
    )
}

/// The installed RotaConfig, validated by rota's own loader.
pub fn rota_config() -> ValidConfig {
    rota::config::parse(rota_config_text())
        .unwrap_or_else(|e| panic!("the RotaConfig in deploy/rota.yaml: {e}"))
}

/// `kubectl kustomize DIR`, parsed; `None` (after saying so) when kubectl is absent. Cached:
/// the tests run in parallel and all read the same renders.
pub fn render(dir: &'static str) -> Option<&'static [Value]> {
    static CACHE: OnceLock<parking_lot::Mutex<BTreeMap<&'static str, &'static [Value]>>> =
        OnceLock::new();
    if Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_err()
    {
        eprintln!("skipping: `kubectl` not found on PATH, so `kubectl kustomize {dir}` cannot run");
        return None;
    }
    let cache = CACHE.get_or_init(Default::default);
    if let Some(objects) = cache.lock().get(dir) {
        return Some(objects);
    }
    let output = Command::new("kubectl")
        .arg("kustomize")
        .arg(repo_file(dir))
        .output()
        .unwrap_or_else(|e| panic!("run kubectl kustomize {dir}: {e}"));
    assert!(
        output.status.success(),
        "kubectl kustomize {dir} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let objects = yaml_docs(&String::from_utf8_lossy(&output.stdout), dir);
    assert!(
        !objects.is_empty(),
        "kubectl kustomize {dir} rendered nothing"
    );
    let leaked: &'static [Value] = Box::leak(objects.into_boxed_slice());
    cache.lock().insert(dir, leaked);
    Some(leaked)
}

/// The rendered object of that kind and name; panics when absent.
pub fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| at(o, "/kind") == kind && at(o, "/metadata/name") == name)
        .unwrap_or_else(|| panic!("no {kind}/{name} rendered"))
}

/// The rendered objects of one kind.
pub fn all_of<'a>(objects: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    objects.iter().filter(move |o| at(o, "/kind") == kind)
}

/// The ConfigMap a pod volume refers to (generated names carry a hash suffix, already
/// substituted in the pod spec by kustomize).
pub fn mounted_config_map<'a>(objects: &'a [Value], workload: &Value, volume: &str) -> &'a Value {
    let volumes = list(workload, "/spec/template/spec/volumes");
    let volume = volumes
        .iter()
        .find(|v| at(v, "/name") == volume)
        .unwrap_or_else(|| panic!("{} has no volume {volume}", name_of(workload)));
    find(objects, "ConfigMap", text(volume, "/configMap/name"))
}

/// The downward-API field path a container's env var `var` is set from.
pub fn env_field_path<'a>(container: &'a Value, var: &str) -> Option<&'a str> {
    at(container, "/env")
        .as_array()?
        .iter()
        .find(|e| at(e, "/name") == var)
        .and_then(|e| at(e, "/valueFrom/fieldRef/fieldPath").as_str())
}

/// The container port named `name`.
pub fn named_port(container: &Value, name: &str) -> Option<u64> {
    at(container, "/ports")
        .as_array()?
        .iter()
        .find(|p| at(p, "/name") == name)
        .and_then(|p| at(p, "/containerPort").as_u64())
}

/// Every `matchLabels` pair is among `labels`.
pub fn selects(match_labels: &Value, labels: &Value) -> bool {
    let Some(wanted) = match_labels.as_object() else {
        return false;
    };
    !wanted.is_empty()
        && wanted
            .iter()
            .all(|(k, v)| labels.as_object().and_then(|l| l.get(k)) == Some(v))
}

/// Pod hardening every rota-shipped container must have (the `restricted` Pod Security
/// Standard, plus a read-only root file system).
pub fn assert_hardened(workload: &Value) {
    let who = name_of(workload);
    let pod = at(workload, "/spec/template/spec");
    assert_eq!(at(pod, "/securityContext/runAsNonRoot"), true, "{who}");
    for container in list(pod, "/containers") {
        let sc = at(container, "/securityContext");
        assert_eq!(at(sc, "/runAsNonRoot"), true, "{who}: runAsNonRoot");
        assert_eq!(
            at(sc, "/readOnlyRootFilesystem"),
            true,
            "{who}: read-only root"
        );
        assert_eq!(
            at(sc, "/allowPrivilegeEscalation"),
            false,
            "{who}: no escalation"
        );
        assert_eq!(
            at(sc, "/capabilities/drop"),
            &serde_json::json!(["ALL"]),
            "{who}"
        );
        assert_eq!(
            at(sc, "/seccompProfile/type"),
            "RuntimeDefault",
            "{who}: seccomp"
        );
        for kind in ["requests", "limits"] {
            for resource in ["cpu", "memory"] {
                let quantity = at(container, &format!("/resources/{kind}/{resource}"));
                assert!(
                    quantity.is_string(),
                    "{who}: resources.{kind}.{resource} unset"
                );
            }
        }
    }
}

// === metric names ===

/// Every `"rota_…"` string literal under `src/`: the metric names rota exports.
pub fn exported_metrics() -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut BTreeSet<String>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let source = std::fs::read_to_string(&path).unwrap_or_default();
                out.extend(
                    metric_names(&source)
                        .into_iter()
                        .filter(|(_, quoted)| *quoted)
                        .map(|(name, _)| name),
                );
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(&repo_file("src"), &mut out);
    out
}

/// `rota_[a-z_]+` words in `text`, each with whether it is a whole `"…"` literal.
pub fn metric_names(text: &str) -> Vec<(String, bool)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(offset) = text[from..].find("rota_") {
        let start = from + offset;
        let mut end = start + "rota_".len();
        while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
            end += 1;
        }
        let word_start =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let digit_after = end < bytes.len() && bytes[end].is_ascii_alphanumeric();
        if word_start && !digit_after {
            let quoted = start > 0 && bytes[start - 1] == b'"' && bytes.get(end) == Some(&b'"');
            out.push((text[start..end].to_owned(), quoted));
        }
        from = end;
    }
    out
}

/// Names in PromQL `exprs` that rota does not export (histogram and summary series reduced to
/// their family), and how many names were found in all.
pub fn unknown_metrics(exprs: &[String], exported: &BTreeSet<String>) -> (Vec<String>, usize) {
    let mut unknown = Vec::new();
    let mut found = 0;
    for expr in exprs {
        for (name, _) in metric_names(expr) {
            found += 1;
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| exported.contains(*f)))
                .unwrap_or(&name);
            if !exported.contains(family) {
                unknown.push(format!("{name} in {expr:?}"));
            }
        }
    }
    (unknown, found)
}

/// The Grafana dashboard (`deploy/helm/rota/files/grafana-dashboard.json`), parsed.
pub fn dashboard() -> Value {
    let text = read("deploy/helm/rota/files/grafana-dashboard.json");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("grafana-dashboard.json: {e}"))
}

/// Every PromQL expression of the dashboard: panel targets and variable queries.
pub fn dashboard_exprs(dash: &Value) -> Vec<String> {
    fn targets(panels: &[Value], out: &mut Vec<String>) {
        for panel in panels {
            for target in at(panel, "/targets").as_array().into_iter().flatten() {
                out.push(text(target, "/expr").to_owned());
            }
            targets(at(panel, "/panels").as_array().map_or(&[], |p| p), out);
        }
    }
    let mut out = Vec::new();
    targets(list(dash, "/panels"), &mut out);
    for var in list(dash, "/templating/list") {
        if at(var, "/type") == "query" {
            out.push(text(var, "/query/query").to_owned());
        }
    }
    out
}
