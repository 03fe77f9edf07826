//! The in-flight body budget against the container's memory limit.
//!
//! `--max-inflight-body-bytes` bounds the request bodies held at once; with the connections'
//! buffers, the caches and the handlers' parsing on top, a budget as large as the memory limit
//! gets the process OOM-killed by a burst of large requests. So the budget and the limit are
//! consistent by construction:
//!
//! * unset (the default), the budget is **half the memory limit, at most 512 MiB** (512 MiB
//!   without a limit): the chart's 1 GiB limit gives 512 MiB;
//! * set explicitly, it must fit in half the limit, or the extender refuses to start and says
//!   which to raise;
//! * either way one body at `--max-body-bytes` must fit (the budget is never below it).
//!
//! The limit is the cgroup's: v2 `memory.max` (the tightest along the process's cgroup path),
//! else v1 `memory.limit_in_bytes`. Must not: guess a limit it cannot read (no limit found means
//! none is enforced).

use std::fs;
use std::path::Path;

/// The budget without a memory limit, and the most a derived budget takes.
pub const DEFAULT_INFLIGHT_BODY_BYTES: usize = 512 << 20;

/// The budget may take at most `1 / LIMIT_DIVISOR` of the memory limit.
pub const LIMIT_DIVISOR: u64 = 2;

/// cgroup v1 reports "no limit" as a huge page-rounded number; anything from here up is none.
const V1_UNLIMITED: u64 = 1 << 62;

/// The budget and limit cannot be made consistent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// An explicit `--max-inflight-body-bytes` above half the limit.
    #[error(
        "--max-inflight-body-bytes {} is more than half the container's memory limit ({}): a \
         burst of large requests could get the extender OOM-killed. Raise the memory limit to \
         at least {}, or lower --max-inflight-body-bytes (or leave it unset: it is then derived \
         from the limit)",
        mib(*requested as u64), mib(*limit), mib(*needed)
    )]
    AboveLimit {
        /// The flag's value.
        requested: usize,
        /// The container's memory limit.
        limit: u64,
        /// The smallest limit that would fit it.
        needed: u64,
    },
    /// Half the limit cannot hold even one body at `--max-body-bytes`.
    #[error(
        "the container's memory limit ({}) is too small for --max-body-bytes {}: one body at the \
         cap must fit in half the limit. Raise the memory limit to at least {}, or lower \
         --max-body-bytes",
        mib(*limit), mib(*max_body as u64), mib(*needed)
    )]
    LimitTooSmall {
        /// `--max-body-bytes`.
        max_body: usize,
        /// The container's memory limit.
        limit: u64,
        /// The smallest limit that would fit one body.
        needed: u64,
    },
}

/// The in-flight body budget for `requested` (`--max-inflight-body-bytes`, `None` when unset),
/// `max_body_bytes` and the memory `limit` (`None`: no limit).
pub fn inflight_budget(
    requested: Option<usize>,
    max_body_bytes: usize,
    limit: Option<u64>,
) -> Result<usize, BudgetError> {
    let Some(limit) = limit else {
        return Ok(requested.unwrap_or(DEFAULT_INFLIGHT_BODY_BYTES));
    };
    let room = limit / LIMIT_DIVISOR;
    let too_small = || BudgetError::LimitTooSmall {
        max_body: max_body_bytes,
        limit,
        needed: (max_body_bytes as u64).saturating_mul(LIMIT_DIVISOR),
    };
    if max_body_bytes as u64 > room {
        return Err(too_small());
    }
    match requested {
        None => Ok(usize::try_from(room)
            .unwrap_or(usize::MAX)
            .min(DEFAULT_INFLIGHT_BODY_BYTES)),
        Some(bytes) if bytes as u64 > room => Err(BudgetError::AboveLimit {
            requested: bytes,
            limit,
            needed: (bytes as u64).saturating_mul(LIMIT_DIVISOR),
        }),
        Some(bytes) => Ok(bytes),
    }
}

/// [`inflight_budget`] under this process's cgroup memory limit, logged.
pub fn inflight_budget_here(
    requested: Option<usize>,
    max_body_bytes: usize,
) -> Result<usize, BudgetError> {
    let limit = memory_limit_under(Path::new("/"));
    let budget = inflight_budget(requested, max_body_bytes, limit)?;
    tracing::info!(
        budget_bytes = budget,
        memory_limit_bytes = limit,
        explicit = requested.is_some(),
        "In-flight body budget."
    );
    Ok(budget)
}

/// The memory limit of this process's cgroup, reading `/proc/self/cgroup` and `/sys/fs/cgroup`
/// under `root` (`/` in production; a test's directory in tests). `None`: no limit found.
pub fn memory_limit_under(root: &Path) -> Option<u64> {
    let membership = fs::read_to_string(root.join("proc/self/cgroup")).unwrap_or_default();
    let cgroup = root.join("sys/fs/cgroup");
    for line in membership.lines() {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next(), fields.next()?, fields.next()?);
        if controllers.is_empty() {
            // v2: the tightest memory.max from the process's cgroup up to the root.
            let tightest = ancestors(path)
                .filter_map(|dir| read_limit(&cgroup.join(dir).join("memory.max")))
                .min();
            if tightest.is_some() {
                return tightest;
            }
        } else if controllers.split(',').any(|c| c == "memory") {
            let memory = cgroup.join("memory");
            return read_limit(&memory.join(relative(path)).join("memory.limit_in_bytes"))
                .or_else(|| read_limit(&memory.join("memory.limit_in_bytes")));
        }
    }
    // A private cgroup namespace without a readable /proc/self/cgroup: the mount's own files.
    read_limit(&cgroup.join("memory.max"))
        .or_else(|| read_limit(&cgroup.join("memory/memory.limit_in_bytes")))
}

/// `a/b/c`, `a/b`, `a`, `` for the cgroup path `/a/b/c`.
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    let path = relative(path);
    let cuts = path.match_indices('/').map(|(i, _)| i).collect::<Vec<_>>();
    std::iter::once(path)
        .chain(cuts.into_iter().rev().map(move |i| &path[..i]))
        .chain((!path.is_empty()).then_some(""))
}

fn relative(path: &str) -> &str {
    path.trim_start_matches('/')
}

/// A limit file's value: bytes, or `None` for `max`, unlimited, missing or unreadable.
fn read_limit(file: &Path) -> Option<u64> {
    let text = fs::read_to_string(file).ok()?;
    let bytes: u64 = text.trim().parse().ok()?;
    (bytes < V1_UNLIMITED).then_some(bytes)
}

fn mib(bytes: u64) -> String {
    if bytes % (1 << 30) == 0 && bytes > 0 {
        format!("{} GiB", bytes >> 30)
    } else {
        format!("{} MiB", bytes.div_ceil(1 << 20))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;
    const GIB: u64 = 1 << 30;

    #[test]
    fn unset_budget_is_half_the_limit_capped_at_the_default() {
        let max_body = 64 * MIB;
        assert_eq!(inflight_budget(None, max_body, Some(GIB)), Ok(512 * MIB));
        assert_eq!(
            inflight_budget(None, max_body, Some(4 * GIB)),
            Ok(512 * MIB)
        );
        assert_eq!(
            inflight_budget(None, max_body, Some(512 << 20)),
            Ok(256 * MIB)
        );
        assert_eq!(inflight_budget(None, max_body, None), Ok(512 * MIB));
    }

    #[test]
    fn explicit_budget_above_half_the_limit_is_refused_naming_the_fix() {
        // The shipped configuration before this check: 512 MiB budget, 512 MiB limit.
        let err = inflight_budget(Some(512 * MIB), 64 * MIB, Some(512 << 20)).unwrap_err();
        assert_eq!(
            err,
            BudgetError::AboveLimit {
                requested: 512 * MIB,
                limit: 512 << 20,
                needed: GIB
            }
        );
        let message = err.to_string();
        assert!(message.contains("at least 1 GiB"), "{message}");
        assert!(
            message.contains("--max-inflight-body-bytes 512 MiB"),
            "{message}"
        );
        assert_eq!(
            inflight_budget(Some(512 * MIB), 64 * MIB, Some(GIB)),
            Ok(512 * MIB)
        );
        // Without a limit an explicit value is taken as it is.
        assert_eq!(
            inflight_budget(Some(8 * GIB as usize), 64 * MIB, None),
            Ok(8 * GIB as usize)
        );
    }

    #[test]
    fn a_limit_that_cannot_hold_one_capped_body_is_refused() {
        let err = inflight_budget(None, 64 * MIB, Some(100 << 20)).unwrap_err();
        assert!(matches!(err, BudgetError::LimitTooSmall { needed, .. } if needed == 128 << 20));
        assert!(err.to_string().contains("--max-body-bytes 64 MiB"));
        assert!(inflight_budget(Some(MIB), 64 * MIB, Some(100 << 20)).is_err());
    }

    fn tree(files: &[(&str, &str)]) -> std::path::PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let root = std::env::temp_dir().join(format!(
            "rota-cgroup-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        for (path, text) in files {
            let file = root.join(path);
            fs::create_dir_all(file.parent().unwrap()).unwrap();
            fs::write(file, text).unwrap();
        }
        root
    }

    #[test]
    fn reads_cgroup_v2_the_tightest_limit_on_the_path() {
        let root = tree(&[
            ("proc/self/cgroup", "0::/kubepods/pod1/ctr\n"),
            ("sys/fs/cgroup/kubepods/pod1/ctr/memory.max", "max\n"),
            ("sys/fs/cgroup/kubepods/pod1/memory.max", "1073741824\n"),
            ("sys/fs/cgroup/kubepods/memory.max", "8589934592\n"),
        ]);
        assert_eq!(memory_limit_under(&root), Some(GIB));
        // A private cgroup namespace: the process sits at the root of the mount.
        let private = tree(&[
            ("proc/self/cgroup", "0::/\n"),
            ("sys/fs/cgroup/memory.max", "536870912\n"),
        ]);
        assert_eq!(memory_limit_under(&private), Some(512 << 20));
        let unlimited = tree(&[
            ("proc/self/cgroup", "0::/\n"),
            ("sys/fs/cgroup/memory.max", "max\n"),
        ]);
        assert_eq!(memory_limit_under(&unlimited), None);
        for dir in [root, private, unlimited] {
            let _ = fs::remove_dir_all(dir);
        }
    }

    #[test]
    fn reads_cgroup_v1_and_treats_its_huge_value_as_no_limit() {
        let root = tree(&[
            (
                "proc/self/cgroup",
                "12:cpu,cpuacct:/kubepods/x\n4:memory:/kubepods/x\n",
            ),
            (
                "sys/fs/cgroup/memory/kubepods/x/memory.limit_in_bytes",
                "1073741824\n",
            ),
        ]);
        assert_eq!(memory_limit_under(&root), Some(GIB));
        let unlimited = tree(&[
            ("proc/self/cgroup", "4:memory:/\n"),
            (
                "sys/fs/cgroup/memory/memory.limit_in_bytes",
                "9223372036854771712\n",
            ),
        ]);
        assert_eq!(memory_limit_under(&unlimited), None);
        assert_eq!(memory_limit_under(Path::new("/nonexistent-root")), None);
        for dir in [root, unlimited] {
            let _ = fs::remove_dir_all(dir);
        }
    }
}
