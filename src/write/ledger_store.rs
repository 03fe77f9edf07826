//! Where the usage ledger lives between restarts: a file (`--cluster none`) or a ConfigMap
//! (`--cluster kube`), plus the [`LedgerKeeper`] that advances and saves it every tick.
//!
//! ```text
//!   tick(now, allocations) ─▶ Ledger::advance ─▶ LedgerRecord (JSON) ─▶ store.save
//!     file:      write .NAME.PID.tmp ─▶ fsync ─▶ rename over NAME ─▶ fsync directory
//!     ConfigMap: PUT with the last seen resourceVersion ─▶ 409: re-GET, retry once ─▶ 404: POST
//! ```
//!
//! Invariants: a save is all or nothing (a reader sees the old ledger or the new one, never half
//! of one), so a restart loses at most one tick; a load sweeps the temporary files of writers
//! killed mid-save (`tests/restarts_ledger.rs` kills real processes to check both). A missing, corrupt or truncated ledger is never
//! an error: it is recovered tenant by tenant through [`parse_record`] (a tenant that cannot be
//! read starts from zero) and every problem is logged with `warn!` and returned to the caller,
//! except a ledger that is simply absent (a first start), which the caller reports once.
//! Only the leader saves (the caller's duty), so a ConfigMap conflict means a person or a late
//! former leader wrote it; the leader's ledger wins and the conflict is logged.
//! Must not: decide anything about usage (the pure [`Ledger`] does), read a clock (`now` is an
//! argument), or block the async runtime (file I/O runs on `spawn_blocking`).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

use crate::core::ledger::{self, parse_record, Ledger};

/// The ConfigMap key that holds the ledger JSON.
pub const CONFIG_MAP_KEY: &str = "ledger.json";

/// Why loading or saving the ledger failed. A missing or corrupt ledger is not an error (see
/// [`Loaded::problems`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configured half-life is unusable.
    #[error("cannot build the usage ledger: {0}")]
    Ledger(#[from] ledger::Error),
    /// The ledger file exists but could not be read (permissions, I/O error).
    #[error("cannot read the usage ledger {path}: {source}")]
    Read {
        /// The ledger file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Writing, syncing or renaming failed; the previous ledger file is intact.
    #[error("cannot write the usage ledger {path}: {source}")]
    Write {
        /// The file that failed (the temporary file, the target or its directory).
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The blocking file task panicked or was cancelled.
    #[error("the ledger file task failed: {0}")]
    Blocking(#[source] tokio::task::JoinError),
    /// The ledger could not be encoded as JSON (a bug: the record holds only finite numbers).
    #[error("cannot encode the usage ledger: {0}")]
    Encode(#[source] serde_json::Error),
    /// A request to the API server failed.
    #[error("{verb} ConfigMap {namespace}/{name} failed: {source}")]
    Api {
        /// `get`, `create` or `replace`.
        verb: &'static str,
        /// The ConfigMap's namespace.
        namespace: String,
        /// The ConfigMap's name.
        name: String,
        /// The client error (boxed: it is large and errors travel in `Result`s).
        #[source]
        source: Box<kube::Error>,
    },
    /// The ConfigMap changed again between the re-read and the retry.
    #[error("ConfigMap {namespace}/{name} keeps changing under the leader; will retry next tick")]
    Conflict {
        /// The ConfigMap's namespace.
        namespace: String,
        /// The ConfigMap's name.
        name: String,
    },
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Stable, bounded label for metrics and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Ledger(_) => "invalid_half_life",
            Error::Read { .. } => "read",
            Error::Write { .. } => "write",
            Error::Blocking(_) => "blocking_task",
            Error::Encode(_) => "encode",
            Error::Api { .. } => "api",
            Error::Conflict { .. } => "conflict",
        }
    }

    /// The Kubernetes request that failed, as `(verb, namespace, object, error)`, if this is an
    /// API error.
    pub fn kube(&self) -> Option<(&'static str, &str, String, &kube::Error)> {
        match self {
            Error::Api {
                verb,
                namespace,
                name,
                source,
            } => Some((
                verb,
                namespace.as_str(),
                format!("configmap {namespace}/{name}"),
                source.as_ref(),
            )),
            _ => None,
        }
    }

    /// Whether trying again (next tick) may succeed. A bad half-life or an API answer such as
    /// 403 Forbidden or 422 Invalid needs a person.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Ledger(_) | Error::Encode(_) => false,
            Error::Api { source, .. } => api_retryable(source),
            Error::Read { .. }
            | Error::Write { .. }
            | Error::Blocking(_)
            | Error::Conflict { .. } => true,
        }
    }
}

fn api_retryable(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(status) => {
            matches!(status.code, 409 | 429) || status.code >= 500 || status.code == 0
        }
        // Connection, TLS and timeout failures are transient; a body that does not decode is not.
        kube::Error::SerdeError(_) => false,
        _ => true,
    }
}

/// What a store found: the ledger (possibly empty or partly recovered) and every problem met.
#[derive(Debug)]
pub struct Loaded {
    /// The ledger to continue from.
    pub ledger: Ledger,
    /// Human-readable problems (missing ledger, corrupt JSON, tenants dropped). All but a
    /// missing ledger are already logged; a missing ledger is the caller's to report (it is
    /// expected on a first start, and a follower reloads every tick).
    pub problems: Vec<String>,
    /// There was no ledger at all (no file, no ConfigMap or no key in it).
    pub missing: bool,
}

impl Loaded {
    /// Logs every problem loudly, naming where the ledger came from.
    fn logged(ledger: Ledger, problems: Vec<String>, source: &str) -> Self {
        for problem in &problems {
            tracing::warn!(source, problem = %problem, "Usage ledger problem; recovered.");
        }
        Self {
            ledger,
            problems,
            missing: false,
        }
    }

    /// A fresh ledger because there is none stored: not logged here (see [`Loaded::problems`]).
    fn missing(half_life_seconds: f64, problem: String, source: &str) -> Result<Self> {
        tracing::debug!(source, "No usage ledger stored.");
        Ok(Self {
            ledger: Ledger::new(half_life_seconds)?,
            problems: vec![problem],
            missing: true,
        })
    }
}

/// Persistent home of the usage ledger. Object safe (boxed futures) so that the wiring can
/// pick a store at run time.
pub trait LedgerStore: Send + Sync {
    /// Reads the ledger. Missing or corrupt data is recovered and reported in
    /// [`Loaded::problems`]; `Err` only when the store cannot be read at all.
    fn load(&self) -> BoxFuture<'_, Result<Loaded>>;
    /// Writes the ledger, all or nothing.
    fn save<'a>(&'a self, ledger: &'a Ledger) -> BoxFuture<'a, Result<()>>;
}

impl<T: LedgerStore + ?Sized> LedgerStore for Box<T> {
    fn load(&self) -> BoxFuture<'_, Result<Loaded>> {
        (**self).load()
    }

    fn save<'a>(&'a self, ledger: &'a Ledger) -> BoxFuture<'a, Result<()>> {
        (**self).save(ledger)
    }
}

fn encode(ledger: &Ledger) -> Result<String> {
    // Pretty: an operator may read (or, in an emergency, edit) the ledger by hand.
    serde_json::to_string_pretty(&ledger.to_record()).map_err(Error::Encode)
}

/// Parses stored text, recovering per tenant.
fn decode(text: &str, half_life_seconds: f64, source: &str) -> Result<Loaded> {
    let (ledger, problems) = parse_record(text, half_life_seconds)?;
    Ok(Loaded::logged(ledger, problems, source))
}

/// The ledger in a local file, for `--cluster none`.
#[derive(Clone, Debug)]
pub struct FileLedgerStore {
    path: PathBuf,
    half_life_seconds: f64,
}

impl FileLedgerStore {
    /// A store at `path` for a ledger with `half_life_seconds` (`usage.half_life_seconds`).
    pub fn new(path: impl Into<PathBuf>, half_life_seconds: f64) -> Self {
        Self {
            path: path.into(),
            half_life_seconds,
        }
    }

    /// The ledger file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The temporary file a save writes before the rename: hidden, beside the target (a
    /// rename is atomic only within one file system), and per process.
    pub fn temp_path(&self) -> PathBuf {
        let name = self
            .path
            .file_name()
            .map_or_else(|| "ledger".into(), |n| n.to_string_lossy().into_owned());
        self.path
            .with_file_name(format!(".{name}.{}.tmp", std::process::id()))
    }

    fn load_blocking(&self) -> Result<Loaded> {
        self.sweep_stale_temps();
        let source = self.path.display().to_string();
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                let problem = format!("no ledger at {source}; starting from zero");
                return Loaded::missing(self.half_life_seconds, problem, &source);
            }
            Err(source_err) => {
                return Err(Error::Read {
                    path: self.path.clone(),
                    source: source_err,
                })
            }
        };
        match String::from_utf8(bytes) {
            Ok(text) => decode(&text, self.half_life_seconds, &source),
            Err(err) => {
                let text = String::from_utf8_lossy(err.as_bytes()).into_owned();
                let mut loaded = decode(&text, self.half_life_seconds, &source)?;
                let problem = "ledger file is not valid UTF-8; invalid bytes replaced".to_owned();
                tracing::warn!(source, problem = %problem, "Usage ledger problem; recovered.");
                loaded.problems.insert(0, problem);
                Ok(loaded)
            }
        }
    }

    /// Removes temporary files that writers killed mid-save left beside the ledger (their
    /// names carry the dead writer's PID, so no later save would ever reuse them and they
    /// would pile up, one per crash). Runs on load, i.e. at start-up, when only a second
    /// process misconfigured onto the same file could still be writing one; its rename then
    /// fails with a retryable write error. Best effort: failures are logged, never returned.
    fn sweep_stale_temps(&self) {
        let (Some(dir), Some(name)) = (self.path.parent(), self.path.file_name()) else {
            return;
        };
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let prefix = format!(".{}.", name.to_string_lossy());
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let file_name = file_name.to_string_lossy();
            let pid = file_name
                .strip_prefix(prefix.as_str())
                .and_then(|rest| rest.strip_suffix(".tmp"));
            if !pid.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())) {
                continue;
            }
            match fs::remove_file(entry.path()) {
                Ok(()) => tracing::info!(
                    file = %entry.path().display(),
                    "Removed a usage ledger temporary file left by a writer that died mid-save."
                ),
                Err(err) => tracing::warn!(
                    file = %entry.path().display(),
                    error = %err,
                    "Cannot remove a stale usage ledger temporary file."
                ),
            }
        }
    }

    fn save_blocking(&self, bytes: &[u8]) -> Result<()> {
        let tmp = self.temp_path();
        let written = write_synced(&tmp, bytes).and_then(|()| {
            fs::rename(&tmp, &self.path).map_err(|source| Error::Write {
                path: self.path.clone(),
                source,
            })
        });
        if let Err(err) = written {
            // Best effort: a leftover temporary file is harmless but untidy.
            let _ = fs::remove_file(&tmp);
            return Err(err);
        }
        sync_dir(&self.path)
    }
}

/// Writes `bytes` to a fresh `path` and fsyncs it, so the rename publishes complete data.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let write = || -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        file.write_all(bytes)?;
        file.sync_all()
    };
    write().map_err(|source| Error::Write {
        path: path.to_owned(),
        source,
    })
}

/// Fsyncs the directory holding `path` so the rename itself survives a crash.
fn sync_dir(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| Error::Write {
            path: dir.to_owned(),
            source,
        })
}

impl LedgerStore for FileLedgerStore {
    fn load(&self) -> BoxFuture<'_, Result<Loaded>> {
        let store = self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || store.load_blocking())
                .await
                .map_err(Error::Blocking)?
        })
    }

    fn save<'a>(&'a self, ledger: &'a Ledger) -> BoxFuture<'a, Result<()>> {
        let store = self.clone();
        let bytes = encode(ledger);
        Box::pin(async move {
            let bytes = bytes?;
            tokio::task::spawn_blocking(move || store.save_blocking(bytes.as_bytes()))
                .await
                .map_err(Error::Blocking)?
        })
    }
}

/// The ledger in key [`CONFIG_MAP_KEY`] of a ConfigMap, for `--cluster kube`. Saves replace
/// the ConfigMap with the last seen `resourceVersion` (optimistic concurrency); other keys,
/// labels and annotations on it are kept.
pub struct ConfigMapLedgerStore {
    api: Api<ConfigMap>,
    namespace: String,
    name: String,
    half_life_seconds: f64,
    /// The ConfigMap as last read or written; `None` when it does not exist (as far as we know).
    last_seen: tokio::sync::Mutex<Option<ConfigMap>>,
}

impl std::fmt::Debug for ConfigMapLedgerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigMapLedgerStore")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("half_life_seconds", &self.half_life_seconds)
            .finish_non_exhaustive()
    }
}

impl ConfigMapLedgerStore {
    /// A store in ConfigMap `namespace/name` for a ledger with `half_life_seconds`.
    pub fn new(client: Client, namespace: &str, name: &str, half_life_seconds: f64) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            half_life_seconds,
            last_seen: tokio::sync::Mutex::new(None),
        }
    }

    fn source(&self) -> String {
        format!("configmap/{}/{}", self.namespace, self.name)
    }

    fn api_error(&self, verb: &'static str) -> impl FnOnce(kube::Error) -> Error + '_ {
        move |source| Error::Api {
            verb,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source: Box::new(source),
        }
    }

    async fn get(&self) -> Result<Option<ConfigMap>> {
        let found = self.api.get_opt(&self.name).await;
        Ok(found.map_err(self.api_error("get"))?.map(strip))
    }

    async fn load_inner(&self) -> Result<Loaded> {
        let found = self.get().await?;
        let source = self.source();
        let text = found
            .as_ref()
            .and_then(|cm| cm.data.as_ref())
            .and_then(|d| d.get(CONFIG_MAP_KEY))
            .cloned();
        let missing = found.is_none();
        *self.last_seen.lock().await = found;
        match text {
            Some(text) => decode(&text, self.half_life_seconds, &source),
            None if missing => {
                let problem = format!("no ledger at {source}; starting from zero");
                Loaded::missing(self.half_life_seconds, problem, &source)
            }
            None => {
                let problem = format!("{source} has no key {CONFIG_MAP_KEY}; starting from zero");
                Loaded::missing(self.half_life_seconds, problem, &source)
            }
        }
    }

    async fn save_inner(&self, json: String) -> Result<()> {
        let mut last_seen = self.last_seen.lock().await;
        let written = match last_seen.take() {
            None => self.create_or_replace(&json).await,
            Some(cm) => match self.replace(cm, &json).await {
                Err(Error::Api { source, .. }) if status_code(&source) == Some(409) => {
                    tracing::warn!(
                        configmap = %self.source(),
                        "Usage ledger ConfigMap changed since the leader last read it (edited \
                         by hand, or a former leader wrote late); overwriting it once."
                    );
                    self.reread_and_write(&json).await
                }
                Err(Error::Api { source, .. }) if status_code(&source) == Some(404) => {
                    self.create_or_replace(&json).await
                }
                other => other,
            },
        };
        // On failure `last_seen` stays empty, so the next save starts from a fresh read.
        *last_seen = Some(strip(written?));
        Ok(())
    }

    fn conflict(&self) -> Error {
        Error::Conflict {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    async fn reread_and_write(&self, json: &str) -> Result<ConfigMap> {
        match self.get().await? {
            Some(fresh) => match self.replace(fresh, json).await {
                Err(Error::Api { source, .. }) if status_code(&source) == Some(409) => {
                    Err(self.conflict())
                }
                other => other,
            },
            None => self.create(json).await,
        }
    }

    /// POST; on 409 AlreadyExists (created meanwhile) read it and replace once.
    async fn create_or_replace(&self, json: &str) -> Result<ConfigMap> {
        match self.create(json).await {
            Err(Error::Api { source, .. }) if status_code(&source) == Some(409) => {
                self.reread_and_write(json).await
            }
            other => other,
        }
    }

    async fn create(&self, json: &str) -> Result<ConfigMap> {
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/name".to_owned(),
                    "rota".to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([(
                CONFIG_MAP_KEY.to_owned(),
                json.to_owned(),
            )])),
            ..ConfigMap::default()
        };
        let created = self.api.create(&PostParams::default(), &cm).await;
        created.map_err(self.api_error("create"))
    }

    /// PUT `cm` (carrying the resourceVersion it was read with) with the new ledger.
    async fn replace(&self, mut cm: ConfigMap, json: &str) -> Result<ConfigMap> {
        cm.data
            .get_or_insert_with(BTreeMap::new)
            .insert(CONFIG_MAP_KEY.to_owned(), json.to_owned());
        let replaced = self
            .api
            .replace(&self.name, &PostParams::default(), &cm)
            .await;
        replaced.map_err(self.api_error("replace"))
    }
}

/// Drops server-managed bulk that a replace need not send back.
fn strip(mut cm: ConfigMap) -> ConfigMap {
    cm.metadata.managed_fields = None;
    cm
}

fn status_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

impl LedgerStore for ConfigMapLedgerStore {
    fn load(&self) -> BoxFuture<'_, Result<Loaded>> {
        Box::pin(self.load_inner())
    }

    fn save<'a>(&'a self, ledger: &'a Ledger) -> BoxFuture<'a, Result<()>> {
        let json = encode(ledger);
        Box::pin(async move { self.save_inner(json?).await })
    }
}

/// Owns the live [`Ledger`] and its store: each tick charges the interval since the last one
/// and saves, so a restart loses at most one tick. Only the leader should call
/// [`tick`](Self::tick); a replica that becomes leader calls [`reload`](Self::reload) first,
/// because the former leader kept writing while this one waited.
pub struct LedgerKeeper<S> {
    ledger: Ledger,
    store: S,
}

impl<S: LedgerStore> LedgerKeeper<S> {
    /// Loads the ledger from `store` (recovering what it can; problems are logged and
    /// returned).
    pub async fn load(store: S) -> Result<(Self, Vec<String>)> {
        let Loaded {
            ledger, problems, ..
        } = store.load().await?;
        Ok((Self { ledger, store }, problems))
    }

    /// A keeper around an existing ledger (the simulator, tests).
    pub fn new(ledger: Ledger, store: S) -> Self {
        Self { ledger, store }
    }

    /// The live ledger, as of the last tick.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Replaces the live ledger with the stored one (on becoming leader). On error the live
    /// ledger is kept.
    pub async fn reload(&mut self) -> Result<Vec<String>> {
        let Loaded {
            ledger, problems, ..
        } = self.store.load().await?;
        self.ledger = ledger;
        Ok(problems)
    }

    /// Charges `allocations` (`(tenant, weighted GPUs, measured busy GPUs)`, held since the
    /// last tick) up to `now` (Unix seconds), then saves. A failed save keeps the advanced
    /// ledger in memory (the next tick saves it again) and returns the error for the caller to
    /// log and count.
    pub async fn tick<'a, I>(&mut self, now: f64, allocations: I) -> Result<()>
    where
        I: IntoIterator<Item = (&'a str, f64, Option<f64>)>,
    {
        self.ledger.advance(now, allocations);
        self.store.save(&self.ledger).await
    }

    /// Saves the live ledger without advancing it (on shutdown or stepping down).
    pub async fn flush(&self) -> Result<()> {
        self.store.save(&self.ledger).await
    }
}

impl<S> std::fmt::Debug for LedgerKeeper<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerKeeper")
            .field("ledger", &self.ledger)
            .finish_non_exhaustive()
    }
}
