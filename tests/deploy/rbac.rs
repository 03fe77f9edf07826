//! The RBAC table (`deploy/rbac-uses.tsv`) and the source scan that keeps it honest: which
//! Kubernetes kinds each file under `src/` builds an `Api` for, and which API calls it makes.
//! Path-independent: every `.rs` file under `src/` is read, whatever folder it sits in.

use std::collections::BTreeSet;
use std::path::Path;

use crate::support::{read, repo_file};

/// One row of the table: one verb on one resource, and where the code makes the call.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Use {
    /// `cluster` (ClusterRole) or `namespace` (Role in rota's namespace).
    pub scope: String,
    /// API group, `""` for the core group.
    pub group: String,
    pub resource: String,
    pub verb: String,
    /// Kind of the `Api` the call goes through (`Pod`, `VirtualMachine`, `Event`, …).
    pub kind: String,
    /// The call token the scan looks for (`get_opt(`, `watcher(`, …).
    pub call: String,
}

/// `deploy/rbac-uses.tsv`, parsed (comment lines skipped; each row must have seven fields).
pub fn table() -> Vec<Use> {
    read("deploy/rbac-uses.tsv")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            assert_eq!(
                f.len(),
                7,
                "rbac-uses.tsv: 7 tab-separated fields in {line:?}"
            );
            let group = if f[1] == "-" { "" } else { f[1] };
            Use {
                scope: f[0].into(),
                group: group.into(),
                resource: f[2].into(),
                verb: f[3].into(),
                kind: f[4].into(),
                call: f[5].into(),
            }
        })
        .collect()
}

/// The verbs a call token stands for.
pub fn verbs_of(call: &str) -> &'static [&'static str] {
    match call {
        "watcher(" => &["list", "watch"],
        "get_opt(" | "api.get(" | "get_status(" => &["get"],
        "api.list(" => &["list"],
        "api.patch(" | "patch_status(" => &["patch"],
        "api.create(" => &["create"],
        "api.replace(" | "replace_status(" => &["update"],
        "api.delete(" => &["delete"],
        "delete_collection(" => &["deletecollection"],
        "create_subresource" | "api.evict(" => &["create"],
        "read_decide_patch(" => &["get", "patch"],
        "read_object(" => &["get"],
        "patch_decided(" => &["patch"],
        "vm_subresource(" => &["update"],
        "Recorder::new(" => &["create", "patch"],
        other => panic!("rbac-uses.tsv: unknown call token {other:?}"),
    }
}

/// Call tokens that go to a subresource (`<plural>/eviction`).
pub const SUBRESOURCE_CALLS: [&str; 2] = ["create_subresource", "api.evict("];

/// KubeVirt's `start` and `stop` subresources of a VirtualMachine, served by virt-api under
/// their own group: `(group, resources)` of the `vm_subresource(` token.
pub const VM_SUBRESOURCES: (&str, [&str; 2]) = (
    "subresources.kubevirt.io",
    ["virtualmachines/start", "virtualmachines/stop"],
);

/// API group and plural of the kinds rota knows; a kind missing here fails the test until
/// someone adds it (and its table rows).
pub fn resource_of(kind: &str) -> Option<(&'static str, &'static str)> {
    Some(match kind {
        "Node" => ("", "nodes"),
        "Pod" => ("", "pods"),
        "ConfigMap" => ("", "configmaps"),
        "Job" => ("batch", "jobs"),
        "Lease" => ("coordination.k8s.io", "leases"),
        "VirtualMachine" => ("kubevirt.io", "virtualmachines"),
        "Event" => ("events.k8s.io", "events"),
        _ => return None,
    })
}

/// The kube `Api` methods the scan looks for (the tokens of [`verbs_of`] but the Recorder's).
/// Names that rota or std also use for other things (`get`, `list`, `patch`, `create`,
/// `replace`, `delete`, `evict`) count only on a value named `api` (`api.patch(`,
/// `self.api.replace(`): rota's convention for its `Api` values. The rest count anywhere.
const API_CALLS: [&str; 18] = [
    "watcher(",
    "get_opt(",
    "get_status(",
    "patch_status(",
    "replace_status(",
    "delete_collection(",
    "create_subresource",
    "read_decide_patch(",
    "read_object(",
    "patch_decided(",
    "vm_subresource(",
    "api.get(",
    "api.list(",
    "api.patch(",
    "api.create(",
    "api.replace(",
    "api.delete(",
    "api.evict(",
];

/// `code` without whole-line comments, and with the line breaks and indentation before a
/// method call removed (`api\n    .patch(` reads `api.patch(`).
fn normalise(source: &str) -> String {
    let code = source
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = String::with_capacity(code.len());
    let mut pending = String::new();
    for c in code.chars() {
        if c.is_whitespace() {
            pending.push(c);
            continue;
        }
        if c != '.' {
            out.push_str(&pending);
        }
        pending.clear();
        out.push(c);
    }
    out
}

/// `(kind, call, file)` for every file under `dir` that builds an `Api` of a kind (or a
/// kube-runtime Event `Recorder`) and contains a call token. Whole-line comments are skipped.
pub fn scan(dir: &Path) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    let root = repo_file("");
    for path in rust_files(dir) {
        let source = std::fs::read_to_string(&path).unwrap_or_default();
        let code = normalise(&source);
        let file = path
            .strip_prefix(&root)
            .unwrap_or(&path)
            .display()
            .to_string();
        for kind in api_kinds(&code, &file) {
            for call in API_CALLS {
                if code.contains(call) {
                    out.insert((kind.clone(), call.to_owned(), file.clone()));
                }
            }
        }
        if code.contains("Recorder::new(") && code.contains("kube::runtime::events") {
            out.insert(("Event".into(), "Recorder::new(".into(), file.clone()));
        }
    }
    out
}

/// Kinds of the `Api<K>` / `Api::<K>` in `code`; for `DynamicObject`, the kinds its
/// ApiResource names (`gvk("group", "v1", "Kind")` or `kind: "Kind"`). Generic `Api<K>`
/// (a single capital letter) is the caller's kind, counted where the caller builds it.
fn api_kinds(code: &str, file: &str) -> BTreeSet<String> {
    let mut kinds = BTreeSet::new();
    for opener in ["Api::<", "Api<"] {
        for (at, _) in code.match_indices(opener) {
            let preceded = code[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_');
            if preceded {
                continue; // `DynamicApi<`, `MyApi<`: not kube's Api
            }
            let rest = &code[at + opener.len()..];
            let kind: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if kind.len() <= 1 {
                continue;
            }
            if kind == "DynamicObject" {
                let named = dynamic_kinds(code);
                assert!(
                    !named.is_empty(),
                    "{file}: Api<DynamicObject> without a kind the scan can read \
                     (gvk(\"group\", \"version\", \"Kind\") or kind: \"Kind\")"
                );
                kinds.extend(named);
            } else {
                kinds.insert(kind);
            }
        }
    }
    kinds
}

fn dynamic_kinds(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (at, _) in code.match_indices("gvk(") {
        let args = &code[at + 4..];
        let args = &args[..args.find(')').unwrap_or(0)];
        if let Some(kind) = args.split(',').nth(2) {
            out.insert(kind.trim().trim_matches('"').to_owned());
        }
    }
    for (at, _) in code.match_indices("kind: \"") {
        let rest = &code[at + 7..];
        out.insert(rest[..rest.find('"').unwrap_or(0)].to_owned());
    }
    out.retain(|k| !k.is_empty());
    out
}

fn rust_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}
