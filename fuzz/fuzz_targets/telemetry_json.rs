//! Fuzz target `telemetry_json`: Accepts the input as an agent's /v1/telemetry answer, as the collector does, and filters and scores a node with it.
//!
//! The harness lives in `rota_fuzz::telemetry_json`, shared with the stable replay test
//! (`tests/fuzz_regressions.rs`); a broken property panics here so libFuzzer saves the input.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = rota_fuzz::telemetry_json(data) {
        panic!("telemetry_json: {violation}");
    }
});
