//! Crash and restart of the usage ledger (issue #8): the ledger comes back after the extender
//! dies at an arbitrary moment. The rotated-out set is covered by `tests/restarts_rotation.rs`.
//!
//! 1. A real SIGKILL: this test binary re-executes itself as a child that runs the production
//!    `UsageAccounting` loop on the real `FileLedgerStore` (20 ms ticks, one tenant holding
//!    2 GPUs) and announces every load and save on stdout; the parent kills it at seeded
//!    random moments, 30 times, and after each kill checks the file against the announcements.
//! 2. Truncated, bit-flipped, garbage and wrongly typed ledgers: the loader recovers what it
//!    can without panicking and the next save writes a clean file.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rota::config::ValidConfig;
use rota::core::ledger::{parse_record, Ledger, LedgerRecord};
use rota::core::model::GpuNode;
use rota::core::{GpuPod, WorkloadId, WorkloadKind};
use rota::read::view::{ClusterView, ViewSettings};
use rota::write::ledger_store::{FileLedgerStore, LedgerStore, Loaded, Result as StoreResult};
use rota::write::usage::UsageAccounting;
use tokio::sync::watch;

use common::tempdir::TempDir;

mod common;
const GPU: &str = "nvidia.com/gpu";
/// Default half-life (7 days): decay over a test run is tiny but real.
const H: f64 = 604_800.0;
/// The child's tick.
const TICK: Duration = Duration::from_millis(20);
/// GPUs the child's only tenant holds (device weight 1).
const HELD: f64 = 2.0;
const TENANT: &str = "physics";
const CHILD_ENV: &str = "ROTA_RESTARTS_LEDGER_FILE";
const CHILD_TEST: &str = "ledger_child_process";
const LOADED: &str = "ROTA-LOADED ";
const SAVED: &str = "ROTA-SAVED ";
const KILLS: usize = 30;

/// splitmix64: a seeded generator, so every run kills at the same moments.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// =============================================================================================
// 1. SIGKILL of a real process running the file ledger

/// The production store, announcing every load and completed save on stdout (one line each;
/// Rust's stdout is line-buffered, so a printed line is out of the process before the next
/// tick starts).
struct Announcing(FileLedgerStore);

fn announce(prefix: &str, ledger: &Ledger) {
    let line = serde_json::to_string(&ledger.to_record()).unwrap_or_default();
    println!("{prefix}{line}");
}

impl LedgerStore for Announcing {
    fn load(&self) -> BoxFuture<'_, StoreResult<Loaded>> {
        Box::pin(async move {
            let loaded = self.0.load().await?;
            announce(LOADED, &loaded.ledger);
            Ok(loaded)
        })
    }

    fn save<'a>(&'a self, ledger: &'a Ledger) -> BoxFuture<'a, StoreResult<()>> {
        Box::pin(async move {
            self.0.save(ledger).await?;
            announce(SAVED, ledger);
            Ok(())
        })
    }
}

/// One node, one pod of `TENANT` holding `HELD` GPUs.
fn charged_view(config: &ValidConfig) -> Arc<ClusterView> {
    let view = Arc::new(ClusterView::new(ViewSettings::from_config(config)));
    view.apply_gpu_node(GpuNode {
        name: "n1".into(),
        ready: true,
        allocatable: [(GPU.to_string(), 8)].into(),
        ..GpuNode::default()
    });
    view.apply_gpu_pod(GpuPod {
        uid: "p".into(),
        name: "p".into(),
        namespace: TENANT.into(),
        tenant: TENANT.into(),
        workload: WorkloadId {
            kind: WorkloadKind::Job,
            namespace: TENANT.into(),
            name: "train".into(),
        },
        requests: [(GPU.to_string(), HELD as u64)].into(),
        node_name: Some("n1".into()),
        active: true,
        ..GpuPod::default()
    });
    view
}

/// The child: runs `UsageAccounting::run` (load, then tick every 20 ms as leader) until it is
/// killed. Does nothing unless the parent set `CHILD_ENV`; gives up by itself after 20 s so a
/// parent that died cannot leave it running.
#[test]
#[ignore = "child process of sigkill_mid_run_never_tears_the_ledger_and_loses_at_most_one_tick"]
fn ledger_child_process() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let config = Arc::new(ValidConfig::default());
        let accounting = UsageAccounting {
            ledger: Arc::new(parking_lot::Mutex::new(Ledger::new(H).unwrap())),
            store: Arc::new(Announcing(FileLedgerStore::new(path, H))),
            view: charged_view(&config),
            config,
            leader: watch::channel(true).1,
            interval: TICK,
            readiness: None,
        };
        let _ = tokio::time::timeout(Duration::from_secs(20), accounting.run()).await;
    });
}

/// Kills the child if the parent panics first.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What one child life printed.
#[derive(Default)]
struct Life {
    loaded: Option<LedgerRecord>,
    saved: Vec<LedgerRecord>,
}

/// Starts a child on `path`, lets it run `run_for`, SIGKILLs it, and returns what it printed.
fn run_and_kill(path: &Path, run_for: Duration) -> Life {
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", CHILD_TEST, "--ignored", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(CHILD_ENV, path)
        .env("RUST_LOG", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let lines = BufReader::new(stdout).lines();
        lines.map_while(Result::ok).collect::<Vec<String>>()
    });
    std::thread::sleep(run_for);
    child.0.kill().unwrap(); // SIGKILL on Unix
    child.0.wait().unwrap();
    let mut life = Life::default();
    for line in reader.join().unwrap() {
        // A line cut by the kill fails to parse and is ignored: only whole lines count.
        if let Some(json) = line.strip_prefix(LOADED) {
            life.loaded = serde_json::from_str(json).ok();
        } else if let Some(json) = line.strip_prefix(SAVED) {
            life.saved.extend(serde_json::from_str(json).ok());
        }
    }
    life
}

/// The file, parsed strictly: it must be a whole ledger (never torn).
fn read_strict(path: &Path) -> Option<LedgerRecord> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("reading {}: {e}", path.display()),
    };
    let record: LedgerRecord = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("torn or corrupt ledger ({e}):\n{text}"));
    let (_, problems) = parse_record(&text, H).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    Some(record)
}

fn usage_of(record: &LedgerRecord) -> f64 {
    record
        .tenants
        .get(TENANT)
        .map_or(0.0, |t| t.allocated_gpu_seconds)
}

/// Whether `next` is `prev` advanced once by the accounting tick: decayed over the interval,
/// plus the charge for `HELD` GPUs unless the gap exceeded two ticks (then only decayed).
/// Returns whether it was charged.
fn one_advance(prev: Option<&LedgerRecord>, next: &LedgerRecord) -> Result<bool, String> {
    let Some(prev) = prev.filter(|p| p.updated_at.is_some()) else {
        // The first tick of a fresh ledger only starts the clock.
        return if usage_of(next) == 0.0 {
            Ok(false)
        } else {
            Err(format!("a fresh ledger was charged: {next:?}"))
        };
    };
    let (t0, t1) = (
        prev.updated_at.unwrap_or(0.0),
        next.updated_at.unwrap_or(0.0),
    );
    if t1 <= t0 {
        return Err(format!("time did not move forward: {t0} → {t1}"));
    }
    let (from, _) = Ledger::from_record(prev, H).map_err(|e| e.to_string())?;
    let mut decayed = from.clone();
    decayed.advance(t1, std::iter::empty());
    let mut charged = from;
    charged.advance(t1, [(TENANT, HELD, None)]);
    let got = usage_of(next);
    let close = |l: &Ledger| (l.usage(TENANT, t1) - got).abs() <= 1e-9 * got.max(1.0);
    match (close(&charged), close(&decayed)) {
        (true, _) => Ok(true),
        (false, true) => Ok(false),
        _ => Err(format!(
            "{prev:?} → {next:?} is not one tick of {HELD} GPUs"
        )),
    }
}

#[test]
fn sigkill_mid_run_never_tears_the_ledger_and_loses_at_most_one_tick() {
    let dir = TempDir::new("restarts", "sigkill");
    let path = dir.file("ledger.json");
    let mut rng = Rng(0x5EED_0008);
    let mut on_disk: Option<LedgerRecord> = None;
    let (mut saves, mut unannounced, mut uncharged, mut temp_files) = (0, 0, 0, 0);
    for kill in 0..KILLS {
        let run_for = Duration::from_millis(30 + rng.below(220));
        let life = run_and_kill(&path, run_for);

        // The ledger comes back: the child started from exactly what the last one left.
        if let Some(loaded) = &life.loaded {
            let expected = on_disk
                .clone()
                .unwrap_or_else(|| Ledger::new(H).unwrap().to_record());
            assert_eq!(loaded, &expected, "kill {kill}: loaded something else");
        }
        // Every save is the previous state advanced by one tick (nothing else lost or added).
        let mut prev = on_disk.clone();
        for save in &life.saved {
            let charged = one_advance(prev.as_ref(), save);
            let charged = charged.unwrap_or_else(|e| panic!("kill {kill}: {e}"));
            uncharged += usize::from(!charged);
            prev = Some(save.clone());
        }
        saves += life.saved.len();

        // Never torn, and the last save or at most one more (written, then killed before
        // announcing it): a restart loses at most the tick in flight.
        let now = read_strict(&path);
        if now != prev {
            let next = now.as_ref().expect("a saved ledger disappeared");
            one_advance(prev.as_ref(), next).unwrap_or_else(|e| {
                panic!("kill {kill}: the file is neither the last save nor one tick on: {e}")
            });
            unannounced += 1;
        }
        on_disk = now;

        // A kill mid-write leaves its temporary file; the next start sweeps it, so at most the
        // one of the child just killed is there.
        let temps = dir.entries().iter().filter(|n| n.ends_with(".tmp")).count();
        assert!(
            temps <= 1,
            "kill {kill}: temp files pile up: {:?}",
            dir.entries()
        );
        temp_files += temps;
    }
    assert!(saves > KILLS, "the children hardly ran: {saves} saves");
    let charged = usage_of(on_disk.as_ref().unwrap());
    assert!(charged > 0.0, "nothing was ever charged");
    eprintln!(
        "{KILLS} kills: {saves} announced saves ({uncharged} only decayed: first tick or gap), \
         {unannounced} saved but killed before announcing, {temp_files} killed mid-write, \
         {charged:.3} GPU-s charged"
    );
}

/// A temporary file torn by a kill (another PID's, or this PID's reused) never breaks a start.
#[tokio::test]
async fn a_torn_temp_file_from_a_killed_writer_does_not_break_the_next_start() {
    let dir = TempDir::new("restarts", "temp");
    let path = dir.file("ledger.json");
    let store = FileLedgerStore::new(&path, H);
    let mut ledger = Ledger::new(H).unwrap();
    ledger.advance(1_000.0, []);
    ledger.advance(1_060.0, [(TENANT, HELD, None)]);
    store.save(&ledger).await.unwrap();
    let good = std::fs::read(&path).unwrap();
    let torn = &good[..good.len() / 2];
    // A dead writer's temp file beside the ledger, and one at our own temp path (PID reuse).
    let stale = dir.file(".ledger.json.4242.tmp");
    std::fs::write(&stale, torn).unwrap();
    std::fs::write(store.temp_path(), torn).unwrap();

    let restarted = FileLedgerStore::new(&path, H);
    let loaded = restarted.load().await.unwrap();
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    assert_eq!(loaded.ledger.to_record(), ledger.to_record());
    let mut next = loaded.ledger;
    next.advance(1_090.0, [(TENANT, HELD, None)]);
    restarted.save(&next).await.unwrap();
    assert_eq!(read_strict(&path), Some(next.to_record()));
    assert!(
        !restarted.temp_path().exists(),
        "our own temp file is renamed away"
    );
}

// =============================================================================================
// 2. Truncated and corrupt ledgers

/// Three tenants, one with measured use, as the pretty file a save writes.
fn sample() -> Ledger {
    let mut l = Ledger::new(H).unwrap();
    l.advance(1_769_860_800.0, []);
    l.advance(
        1_769_864_400.0,
        [
            ("physics", 4.0, Some(3.0)),
            ("course-101", 1.0, None),
            ("bio", 2.5, None),
        ],
    );
    l
}

/// Loads `bytes` through the file store, then saves what was recovered and loads again: the
/// second load must be clean and identical. Returns the first load.
async fn load_then_resave(dir: &TempDir, bytes: &[u8]) -> Loaded {
    let path = dir.file("ledger.json");
    std::fs::write(&path, bytes).unwrap();
    let store = FileLedgerStore::new(&path, H);
    let loaded = store.load().await.unwrap();
    for name in loaded.ledger.tenants() {
        let at = loaded.ledger.updated_at().unwrap_or(0.0);
        let u = loaded.ledger.tenant_usage(name, at);
        assert!(
            u.allocated.is_finite() && u.allocated >= 0.0,
            "{name}: {u:?}"
        );
        assert!(u.measured.is_finite() && u.measured >= 0.0, "{name}: {u:?}");
    }
    store.save(&loaded.ledger).await.unwrap();
    let again = store.load().await.unwrap();
    assert!(
        again.problems.is_empty(),
        "resaved file: {:?}",
        again.problems
    );
    assert_eq!(again.ledger.to_record(), loaded.ledger.to_record());
    assert_eq!(dir.entries(), ["ledger.json"]);
    loaded
}

/// Every recovered tenant carries exactly its original value: recovery drops, never invents.
fn assert_subset_of(recovered: &Ledger, original: &Ledger) {
    let original = original.to_record();
    for (name, rec) in recovered.to_record().tenants {
        let Some(orig) = original.tenants.get(&name) else {
            panic!("tenant {name:?} was invented");
        };
        assert_eq!(&rec, orig, "{name}");
    }
}

#[tokio::test]
async fn every_truncation_recovers_a_subset_and_the_next_save_is_clean() {
    let dir = TempDir::new("restarts", "truncate");
    let original = sample();
    let full = serde_json::to_string_pretty(&original.to_record()).unwrap();
    let full = full.as_bytes();
    let mut recovered_some = 0;
    for cut in 0..full.len() {
        let loaded = load_then_resave(&dir, &full[..cut]).await;
        assert!(!loaded.problems.is_empty(), "cut at {cut} reported nothing");
        assert_subset_of(&loaded.ledger, &original);
        recovered_some += usize::from(loaded.ledger.tenants().count() > 0);
    }
    // A cut JSON document is invalid as a whole, so nothing is recovered from a prefix.
    assert_eq!(recovered_some, 0);
    let whole = load_then_resave(&dir, full).await;
    assert!(whole.problems.is_empty());
    assert_eq!(whole.ledger.to_record(), original.to_record());
}

#[tokio::test]
async fn flipped_bytes_never_panic_and_resave_cleanly() {
    let dir = TempDir::new("restarts", "flip");
    let original = sample();
    let full = serde_json::to_string_pretty(&original.to_record())
        .unwrap()
        .into_bytes();
    let mut rng = Rng(0xF11F);
    let mut flagged = 0;
    for _ in 0..200 {
        let mut bytes = full.clone();
        let at = rng.below(bytes.len() as u64) as usize;
        bytes[at] ^= 1 << rng.below(8);
        let loaded = load_then_resave(&dir, &bytes).await;
        flagged += usize::from(!loaded.problems.is_empty());
    }
    assert!(flagged > 0, "no flip was ever reported");
}

#[tokio::test]
async fn garbage_and_wrong_types_recover_per_tenant() {
    let dir = TempDir::new("restarts", "garbage");
    let good = r#""keep":{"allocatedGpuSeconds":12.5,"measuredGpuSeconds":1.0}"#;
    let head = r#""apiVersion":"rota.io/v1alpha1","kind":"UsageLedger""#;
    // (file, tenants recovered, whether a problem must be reported)
    let cases: Vec<(String, Vec<&str>, bool)> = vec![
        (String::new(), vec![], true),
        ("\0\0\0\0".into(), vec![], true),
        ("null".into(), vec![], true),
        ("[1,2]".into(), vec![], true),
        ("\"ledger\"".into(), vec![], true),
        ("{}".into(), vec![], true),
        (format!("{{{head},\"tenants\":[{good}]}}"), vec![], true),
        (format!("{{{head},\"tenants\":{{{good},\"n\":5}}}}"), vec!["keep"], true),
        (format!("{{{head},\"tenants\":{{{good},\"s\":\"x\"}}}}"), vec!["keep"], true),
        (
            format!(
                "{{{head},\"tenants\":{{{good},\"nul\":{{\"allocatedGpuSeconds\":null,\"measuredGpuSeconds\":0}}}}}}"
            ),
            vec!["keep"],
            true,
        ),
        (
            format!("{{{head},\"updatedAt\":\"yesterday\",\"tenants\":{{{good}}}}}"),
            vec!["keep"],
            true,
        ),
        (
            format!("{{{head},\"updatedAt\":1e999,\"tenants\":{{{good}}}}}"),
            vec![],
            true,
        ),
        (
            format!("{{\"apiVersion\":7,\"kind\":\"Other\",\"tenants\":{{{good}}}}}"),
            vec!["keep"],
            true,
        ),
        (format!("{{{head},\"tenants\":{{{good}}}}}"), vec!["keep"], false),
    ];
    for (text, tenants, problem) in cases {
        let loaded = load_then_resave(&dir, text.as_bytes()).await;
        let got: Vec<&str> = loaded.ledger.tenants().collect();
        assert_eq!(got, tenants, "{text}");
        assert_eq!(
            !loaded.problems.is_empty(),
            problem,
            "{text}: {:?}",
            loaded.problems
        );
        if tenants == ["keep"] {
            let at = loaded.ledger.updated_at().unwrap_or(0.0);
            assert_eq!(loaded.ledger.usage("keep", at), 12.5, "{text}");
        }
    }
}
