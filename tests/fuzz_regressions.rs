//! Replays every fuzz input on stable: each file under `fuzz/corpus/<target>/` (the seeds) and
//! `fuzz/regressions/<target>/` (inputs that once crashed a target) goes through the same
//! harness the libFuzzer target runs (`fuzz/src/lib.rs`, compiled here with `#[path]`), and
//! must neither panic nor break the harness's property (2xx/4xx answers, bounded scores,
//! round trips). CI has no nightly toolchain; this is how it keeps the fuzzers' findings fixed.

#[path = "../fuzz/src/lib.rs"]
mod harness;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// The input files of `target` in `kind` (`corpus` or `regressions`), sorted; none when the
/// folder is absent (a target without crashes has an empty regressions folder).
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && !is_hidden(p))
        .collect();
    files.sort();
    files
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

/// Runs `target`'s harness on every input of `kind`; returns how many ran and one line per
/// failure (a panic or a broken property), naming the file.
fn replay(kind: &str, target: &str) -> (usize, Vec<String>) {
    let files = inputs(kind, target);
    let mut failures = Vec::new();
    for file in &files {
        let data = match std::fs::read(file) {
            Ok(data) => data,
            Err(err) => {
                failures.push(format!("{}: unreadable: {err}", file.display()));
                continue;
            }
        };
        let verdict = catch_unwind(AssertUnwindSafe(|| harness::check(target, &data)));
        match verdict {
            Ok(Some(Ok(()))) => {}
            Ok(Some(Err(violation))) => failures.push(format!("{}: {violation}", file.display())),
            Ok(None) => failures.push(format!("{target}: no such harness")),
            Err(_) => failures.push(format!("{}: panicked", file.display())),
        }
    }
    (files.len(), failures)
}

/// Replays the seeds and the regressions of one target; the seed corpus must not be empty,
/// or the replay would pass without testing anything.
fn replay_target(target: &str) {
    let (seeds, mut failures) = replay("corpus", target);
    assert!(seeds > 0, "fuzz/corpus/{target}/ has no seed inputs");
    let (_, regressions) = replay("regressions", target);
    failures.extend(regressions);
    assert!(failures.is_empty(), "{target}:\n{}", failures.join("\n"));
}

#[test]
fn extender_verbs_answer_2xx_or_4xx_for_every_recorded_input() {
    replay_target("extender_verbs");
}

#[test]
fn wire_decode_survives_and_round_trips_every_recorded_input() {
    replay_target("wire_decode");
}

#[test]
fn config_parse_survives_and_round_trips_every_recorded_input() {
    replay_target("config");
}

#[test]
fn telemetry_json_survives_every_recorded_input() {
    replay_target("telemetry_json");
}

#[test]
fn dcgm_text_survives_every_recorded_input() {
    replay_target("dcgm_text");
}

#[test]
fn every_harness_has_a_target_and_a_corpus() {
    for target in harness::TARGETS {
        let source = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/fuzz_targets")
            .join(format!("{target}.rs"));
        assert!(source.is_file(), "{} is missing", source.display());
        assert!(
            !inputs("corpus", target).is_empty(),
            "no seeds for {target}"
        );
    }
    assert!(harness::check("no_such_target", b"").is_none());
}

/// The harnesses are not vacuous: a known-good input passes, and answers that break the
/// protocol are caught by the same checks the fuzz targets apply.
#[test]
fn harnesses_pass_good_input_and_catch_bad_answers() {
    use hyper::StatusCode;
    use rota::http::Response;

    let request = br#"{"Pod":{"metadata":{"name":"p","namespace":"ns","uid":"u"},"spec":{"containers":[{"name":"c"}]}},"NodeNames":["n1","n2"]}"#;
    assert_eq!(harness::extender_verbs(request), Ok(()));
    assert_eq!(harness::config(b"defaultTenantWeight: 3\n"), Ok(()));
    assert_eq!(harness::config(b"tenants: [{name: a, weight: -1}]"), Ok(()));
    assert_eq!(harness::telemetry_json(b"{}"), Ok(()));

    let answer = |status, body: &str| Response::json(status, body.to_string());
    let bad = [
        (
            "filter",
            answer(StatusCode::INTERNAL_SERVER_ERROR, r#"{"error":"x"}"#),
        ),
        (
            "filter",
            answer(
                StatusCode::OK,
                r#"{"NodeNames":["n1"],"FailedNodes":{},"FailedAndUnresolvableNodes":{},"Error":""}"#,
            ),
        ),
        (
            "filter",
            answer(
                StatusCode::OK,
                r#"{"NodeNames":["n1","n2"],"FailedNodes":{},"FailedAndUnresolvableNodes":{},"Error":"boom"}"#,
            ),
        ),
        (
            "prioritize",
            answer(
                StatusCode::OK,
                r#"[{"Host":"n1","Score":11},{"Host":"n2","Score":0}]"#,
            ),
        ),
        (
            "prioritize",
            answer(
                StatusCode::OK,
                r#"[{"Host":"n2","Score":1},{"Host":"n1","Score":0}]"#,
            ),
        ),
        (
            "preempt",
            answer(
                StatusCode::OK,
                r#"{"NodeNameToMetaVictims":{"n1":{"Pods":[],"NumPDBViolations":0}}}"#,
            ),
        ),
        ("filter", answer(StatusCode::BAD_REQUEST, r#"{"error":""}"#)),
    ];
    for (verb, response) in &bad {
        assert!(
            harness::check_answer(verb, response, request).is_err(),
            "{verb} accepted {:?}",
            response.body
        );
    }
    let good = answer(
        StatusCode::OK,
        r#"{"NodeNames":["n2"],"FailedNodes":{"n1":"busy"},"FailedAndUnresolvableNodes":{},"Error":""}"#,
    );
    assert_eq!(harness::check_answer("filter", &good, request), Ok(()));
}
