//! The extender's endpoint set: a router from method and path to the verb functions.
//!
//! kube-scheduler calls `urlPrefix + "/" + verb`, so a POST verb is recognised by the last path
//! segment (`/filter` and `/gpu-fairshare/filter` both work). Operational endpoints are exact
//! paths. Every answer is counted and timed, by verb (or endpoint) and status: extender verbs
//! under their name, `/healthz`, `/readyz`, `/metrics` and explain under theirs, and every
//! other path under `other`, so arbitrary paths never become label values. `HEAD` is served
//! wherever `GET` is; a 405 names the accepted methods in `Allow`.

use std::sync::Arc;
use std::time::Instant;

use hyper::{Method, StatusCode};
use prometheus::Registry;

use crate::clock::thread_cpu_seconds;
use crate::config::ValidConfig;
use crate::http::{self, Handler, Request, Response};
use crate::metrics::{self, ExtenderMetrics};
use crate::read::view::ClusterView;
use crate::readiness::Readiness;

use super::explain;
use super::verbs::{self, VerbError};

/// What the verbs read: the cluster view and the config.
#[derive(Clone, Debug)]
pub struct Context {
    /// The live cluster view.
    pub view: Arc<ClusterView>,
    /// The validated config.
    pub config: Arc<ValidConfig>,
    /// Learn Nodes from `nodeCacheCapable: false` requests (only without an API server).
    pub learn_nodes: bool,
    /// Where the filter reports pods the gate holds back, for rate-limited Events; `None`
    /// without an API server and in tests.
    pub held_events: Option<crate::write::held_events::HeldSender>,
    /// The rotation marks of Jobs and VMs (announced stops, opt-outs) that `explain` reports;
    /// `None` without an API server and in tests.
    pub rotation_marks: Option<Arc<crate::read::rotated_out::RotatedOutIndex>>,
}

/// The extender HTTP handler.
pub struct Extender {
    ctx: Context,
    metrics: ExtenderMetrics,
    registry: Registry,
    readiness: Option<Arc<Readiness>>,
}

/// A recognised endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Filter,
    Prioritize,
    Preempt,
    Bind,
    Healthz,
    Readyz,
    Metrics,
    Explain,
}

impl Route {
    fn of(path: &str) -> Option<Route> {
        Some(match path {
            "/healthz" => Route::Healthz,
            "/readyz" => Route::Readyz,
            "/metrics" => Route::Metrics,
            p if p.starts_with(explain::PATH_PREFIX) => Route::Explain,
            _ => match path.rsplit('/').next()? {
                "filter" => Route::Filter,
                "prioritize" => Route::Prioritize,
                "preempt" => Route::Preempt,
                "bind" => Route::Bind,
                _ => return None,
            },
        })
    }

    fn method(self) -> Method {
        match self {
            Route::Healthz | Route::Readyz | Route::Metrics | Route::Explain => Method::GET,
            _ => Method::POST,
        }
    }

    /// Whether `method` is served: the route's own, and `HEAD` wherever `GET` is.
    fn accepts(self, method: &Method) -> bool {
        *method == self.method() || (*method == Method::HEAD && self.method() == Method::GET)
    }

    /// The `Allow` header of a 405.
    fn allow(self) -> &'static str {
        match self.method() {
            Method::GET => "GET, HEAD",
            _ => "POST",
        }
    }

    /// Metric label: the verb, or the endpoint's fixed name.
    fn label(self) -> &'static str {
        match self {
            Route::Filter => "filter",
            Route::Prioritize => "prioritize",
            Route::Preempt => "preempt",
            Route::Bind => "bind",
            Route::Explain => "explain",
            Route::Healthz => "healthz",
            Route::Readyz => "readyz",
            Route::Metrics => "metrics",
        }
    }
}

/// Metric label of a path: its route's label, or `other` for every unknown path (a bounded
/// set: arbitrary paths must not become label values).
fn path_label(path: &str) -> &'static str {
    Route::of(path).map_or(OTHER_LABEL, Route::label)
}

/// Metric label of requests to no known endpoint.
pub const OTHER_LABEL: &str = "other";

impl Extender {
    /// Builds the handler and registers its metrics on `registry`.
    pub fn new(ctx: Context, registry: Registry) -> prometheus::Result<Self> {
        let metrics = ExtenderMetrics::register(&registry)?;
        Ok(Self {
            ctx,
            metrics,
            registry,
            readiness: None,
        })
    }

    /// Fails `/readyz` with the reasons `readiness` holds (besides an unsynced view).
    pub fn with_readiness(mut self, readiness: Arc<Readiness>) -> Self {
        self.readiness = Some(readiness);
        self
    }

    /// `/readyz`: 200 once the view has synced and nothing keeps this replica from working;
    /// 503 with one line per reason otherwise. The verbs answer either way.
    fn readyz(&self) -> Response {
        const NOT_SYNCED: &str = "cluster view not synced yet\n";
        let synced = self.ctx.view.is_synced();
        let problems = self
            .readiness
            .as_ref()
            .map(|r| r.problems())
            .unwrap_or_default();
        if problems.is_empty() {
            return match synced {
                true => Response::with_type(StatusCode::OK, http::TEXT, "ready\n"),
                false => {
                    Response::with_type(StatusCode::SERVICE_UNAVAILABLE, http::TEXT, NOT_SYNCED)
                }
            };
        }
        let mut body = String::from("not ready (the extender still answers kube-scheduler):\n");
        if !synced {
            body.push_str(NOT_SYNCED);
        }
        for problem in problems {
            body.push_str(&format!("{problem}\n"));
        }
        Response::with_type(StatusCode::SERVICE_UNAVAILABLE, http::TEXT, body)
    }

    fn dispatch(&self, route: Route, request: &Request) -> Response {
        let verb = |f: fn(&Context, &[u8]) -> Result<Vec<u8>, VerbError>| match f(
            &self.ctx,
            &request.body,
        ) {
            Ok(body) => Response::json(StatusCode::OK, body),
            Err(err) => {
                tracing::info!(code = err.code(), error = %err, "Rejected an extender request.");
                Response::error(err.status(), err)
            }
        };
        match route {
            Route::Filter => verb(verbs::filter),
            Route::Prioritize => verb(verbs::prioritize),
            Route::Preempt => verb(verbs::preempt),
            Route::Explain => explain::handle(&self.ctx, &request.path),
            Route::Bind => Response::error(
                StatusCode::NOT_IMPLEMENTED,
                "rota does not bind pods: remove bindVerb from the extender configuration",
            ),
            Route::Healthz => Response::with_type(StatusCode::OK, http::TEXT, "ok\n"),
            Route::Readyz => self.readyz(),
            Route::Metrics => Response::with_type(
                StatusCode::OK,
                http::PROMETHEUS_TEXT,
                metrics::render(&self.registry),
            ),
        }
    }
}

impl Handler for Extender {
    fn handle(&self, request: Request) -> Response {
        let started = Instant::now();
        let cpu_started = thread_cpu_seconds();
        let route = Route::of(&request.path);
        let response = match route {
            None => Response::error(
                StatusCode::NOT_FOUND,
                format!(
                    "no such endpoint {}: use POST /filter, /prioritize or /preempt, or GET /healthz, /readyz, /metrics or /v1/explain/NAMESPACE/POD",
                    request.path
                ),
            ),
            Some(route) if !route.accepts(&request.method) => Response {
                allow: Some(route.allow()),
                ..Response::error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!("{} expects {}", request.path, route.allow()),
                )
            },
            Some(route) => self.dispatch(route, &request),
        };
        let label = route.map_or(OTHER_LABEL, Route::label);
        let seconds = started.elapsed().as_secs_f64();
        // The handler is synchronous: the thread's CPU over it is this request's.
        let cpu = (thread_cpu_seconds() - cpu_started).max(0.0);
        self.metrics.observe(
            label,
            response.status.as_u16(),
            seconds,
            Some(response.body.len()),
        );
        self.metrics.observe_cpu(label, cpu);
        response
    }

    fn rejected(&self, path: &str, status: StatusCode, seconds: f64) {
        self.metrics
            .observe(path_label(path), status.as_u16(), seconds, None);
    }
}
