//! Fuzz target `dcgm_text`: Reads the input as a dcgm-exporter page, as the collector does, and filters and scores a node with it.
//!
//! The harness lives in `rota_fuzz::dcgm_text`, shared with the stable replay test
//! (`tests/fuzz_regressions.rs`); a broken property panics here so libFuzzer saves the input.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = rota_fuzz::dcgm_text(data) {
        panic!("dcgm_text: {violation}");
    }
});
