//! What keeps this replica from being ready, and why: one registry that the loops report to and
//! `/readyz` reads.
//!
//! ```text
//!   Lease elector ─┐ fail(component, reason, object) / ok(component)
//!   ledger load  ──┼──────────────────────────────▶ Readiness ──▶ /readyz (503 + reasons)
//!   watch feeds  ──┘   (unreachable API server:          │──────▶ rota_readiness_failing{component}
//!                       component `apiserver`)           └──────▶ rota_api_failures_total{component,reason}
//! ```
//!
//! Only failures a person must fix are reported here: a missing namespace, a request the API
//! server forbids (403, 401), an API server that cannot be reached. Transient answers (409,
//! 429, 5xx) stay warnings of the loop that met them. Each component's state is logged once per
//! change, at ERROR when it starts failing (naming the object or URL) and at INFO when it
//! recovers; every failed attempt is counted. A transport failure is reported against the
//! `apiserver` component, whichever loop met it, so an unreachable API server is one ERROR line,
//! not one per loop.
//! Must not: decide anything from the state (the extender keeps answering kube-scheduler while
//! not ready), or log a failure again while its state is unchanged.

use std::collections::BTreeMap;
use std::fmt;

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

/// The component an unreachable API server is reported against.
pub const APISERVER: &str = "apiserver";

/// Why a component fails, a bounded label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    /// The namespace the object lives in does not exist.
    NamespaceMissing,
    /// The API server refused the request (403 Forbidden or 401 Unauthorized): RBAC or
    /// credentials.
    Forbidden,
    /// The API server could not be reached (connection refused, DNS, TLS, timeout).
    Unreachable,
}

impl Reason {
    /// Metric label and log field.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NamespaceMissing => "namespace_missing",
            Reason::Forbidden => "forbidden",
            Reason::Unreachable => "unreachable",
        }
    }

    /// Words for `/readyz`.
    fn words(self) -> &'static str {
        match self {
            Reason::NamespaceMissing => "namespace does not exist",
            Reason::Forbidden => "forbidden by the API server",
            Reason::Unreachable => "API server unreachable",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One failing component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The component (`lease`, `ledger`, `apiserver`, `watch/pods`, …).
    pub component: &'static str,
    /// Why.
    pub reason: Reason,
    /// The object or URL concerned (`lease rota-system/rota-extender`, `https://10.0.0.1:6443`).
    pub object: String,
    /// The last error text.
    pub detail: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} ({}): {}",
            self.component,
            self.reason.words(),
            self.object,
            self.detail
        )
    }
}

/// The registry. Cheap to share (`Arc`); every method takes `&self`.
#[derive(Debug)]
pub struct Readiness {
    problems: parking_lot::Mutex<BTreeMap<&'static str, Problem>>,
    api_url: String,
    failures: IntCounterVec,
    failing: IntGaugeVec,
}

impl Readiness {
    /// An empty registry; `api_url` names the API server in `apiserver` problems. Its metrics
    /// count from the start and appear once [`register`](Self::register)ed.
    pub fn new(api_url: &str) -> Self {
        // The options are static and valid: these constructors cannot fail.
        let failures = IntCounterVec::new(
            Opts::new(
                "rota_api_failures_total",
                "Failed API server requests that need a person (namespace missing, forbidden, unreachable), by component and reason.",
            ),
            &["component", "reason"],
        )
        .unwrap_or_else(|_| unreachable!("static metric options"));
        let failing = IntGaugeVec::new(
            Opts::new(
                "rota_readiness_failing",
                "1 while the component keeps this replica from being ready (see /readyz for the reason).",
            ),
            &["component"],
        )
        .unwrap_or_else(|_| unreachable!("static metric options"));
        Self {
            problems: parking_lot::Mutex::new(BTreeMap::new()),
            api_url: api_url.to_owned(),
            failures,
            failing,
        }
    }

    /// Registers `rota_api_failures_total` and `rota_readiness_failing` on `registry`.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.failures.clone()))?;
        registry.register(Box::new(self.failing.clone()))
    }

    /// The API server URL problems of [`APISERVER`] name.
    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// Records a failed attempt of `component` on `object`: counted every time, logged at
    /// ERROR only when the component was not already failing for this reason and object.
    pub fn fail(
        &self,
        component: &'static str,
        reason: Reason,
        object: &str,
        detail: &dyn fmt::Display,
    ) {
        self.failures
            .with_label_values(&[component, reason.as_str()])
            .inc();
        let detail = detail.to_string();
        let mut problems = self.problems.lock();
        let changed = problems
            .get(component)
            .is_none_or(|p| p.reason != reason || p.object != object);
        if changed {
            tracing::error!(
                component,
                reason = reason.as_str(),
                object,
                error = %detail,
                "{}",
                headline(component, reason, object)
            );
        }
        self.failing.with_label_values(&[component]).set(1);
        problems.insert(
            component,
            Problem {
                component,
                reason,
                object: object.to_owned(),
                detail,
            },
        );
    }

    /// Records that `component` works: logs once at INFO if it was failing.
    pub fn ok(&self, component: &'static str) {
        let mut problems = self.problems.lock();
        if let Some(was) = problems.remove(component) {
            tracing::info!(
                component,
                reason = was.reason.as_str(),
                object = %was.object,
                "Recovered: {component} works again."
            );
            self.failing.with_label_values(&[component]).set(0);
        }
    }

    /// Reports a failed Kubernetes request of `component` on `object`. Returns `true` when it
    /// was one a person must fix (recorded here, logged once); `false` for a transient answer,
    /// which the caller logs as before. `creating`: the request was a create, whose 404 means
    /// the namespace is missing.
    pub fn kube_error(
        &self,
        component: &'static str,
        object: &str,
        namespace: Option<&str>,
        err: &kube::Error,
        creating: bool,
    ) -> bool {
        match classify(err, creating) {
            Some(Reason::Unreachable) => {
                self.fail(APISERVER, Reason::Unreachable, &self.api_url, err);
                true
            }
            Some(Reason::NamespaceMissing) => {
                self.ok(APISERVER);
                let object = namespace.map_or_else(
                    || object.to_owned(),
                    |ns| format!("namespace {ns} (for {object})"),
                );
                self.fail(component, Reason::NamespaceMissing, &object, err);
                true
            }
            Some(reason) => {
                self.ok(APISERVER);
                self.fail(component, reason, object, err);
                true
            }
            None => {
                // The API server answered: it is reachable, and nothing here needs a person.
                self.ok(APISERVER);
                false
            }
        }
    }

    /// Records a successful request of `component`: the API server is reachable and the
    /// component works.
    pub fn kube_ok(&self, component: &'static str) {
        self.ok(APISERVER);
        self.ok(component);
    }

    /// The failing components, by name.
    pub fn problems(&self) -> Vec<Problem> {
        self.problems.lock().values().cloned().collect()
    }

    /// Whether `component` is failing now.
    pub fn is_failing(&self, component: &str) -> bool {
        self.problems.lock().contains_key(component)
    }
}

fn headline(component: &str, reason: Reason, object: &str) -> String {
    match reason {
        Reason::NamespaceMissing => format!(
            "{component}: {object} does not exist; this replica cannot lead (no rotation, no usage ledger) and is not ready. Create the namespace or fix --namespace."
        ),
        Reason::Forbidden => format!(
            "{component}: the API server forbids access to {object}; this replica is not ready. Check the RBAC of rota's ServiceAccount."
        ),
        Reason::Unreachable => format!(
            "{component}: cannot reach the API server at {object}; this replica is not ready and serves from its last view."
        ),
    }
}

/// Which loud failure `err` is, if any. `creating`: a 404 on a create means the namespace is
/// missing (an object that does not exist yet is what a create expects).
pub fn classify(err: &kube::Error, creating: bool) -> Option<Reason> {
    match err {
        kube::Error::Api(status) => match status.code {
            401 | 403 => Some(Reason::Forbidden),
            404 if creating => Some(Reason::NamespaceMissing),
            404 if status
                .details
                .as_ref()
                .is_some_and(|d| d.kind == "namespaces") =>
            {
                Some(Reason::NamespaceMissing)
            }
            _ => None,
        },
        // The server answered with something that does not decode: reachable, not our case.
        kube::Error::SerdeError(_) => None,
        // Connection, DNS, TLS, timeouts: the transport failed.
        _ => Some(Reason::Unreachable),
    }
}

/// The kube client error inside a watcher error, if any.
pub fn watcher_kube_error(err: &kube::runtime::watcher::Error) -> Option<&kube::Error> {
    use kube::runtime::watcher::Error as W;
    match err {
        W::InitialListFailed(e) | W::WatchStartFailed(e) | W::WatchFailed(e) => Some(e),
        W::WatchError(_) | W::NoResourceVersion => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, kind: &str) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            message: "scripted".into(),
            reason: "x".into(),
            details: Some(kube::core::response::StatusDetails {
                name: String::new(),
                group: String::new(),
                kind: kind.into(),
                uid: String::new(),
                causes: Vec::new(),
                retry_after_seconds: 0,
            }),
            ..Default::default()
        }))
    }

    #[test]
    fn classifies_what_needs_a_person_and_nothing_else() {
        assert_eq!(
            classify(&api(403, "leases"), false),
            Some(Reason::Forbidden)
        );
        assert_eq!(classify(&api(401, ""), false), Some(Reason::Forbidden));
        assert_eq!(
            classify(&api(404, "leases"), true),
            Some(Reason::NamespaceMissing)
        );
        assert_eq!(
            classify(&api(404, "namespaces"), false),
            Some(Reason::NamespaceMissing)
        );
        assert_eq!(classify(&api(404, "configmaps"), false), None);
        assert_eq!(classify(&api(409, "leases"), false), None);
        assert_eq!(classify(&api(500, ""), false), None);
    }

    #[test]
    fn state_changes_are_counted_and_kept_until_recovery() {
        let r = Readiness::new("https://127.0.0.1:1");
        r.fail("lease", Reason::Forbidden, "lease ns/l", &"403");
        r.fail("lease", Reason::Forbidden, "lease ns/l", &"403 again");
        assert_eq!(r.problems().len(), 1);
        assert_eq!(r.problems()[0].detail, "403 again");
        assert_eq!(
            r.failures.with_label_values(&["lease", "forbidden"]).get(),
            2
        );
        assert_eq!(r.failing.with_label_values(&["lease"]).get(), 1);
        r.ok("lease");
        assert!(r.problems().is_empty());
        assert_eq!(r.failing.with_label_values(&["lease"]).get(), 0);
    }
}
