//! Fuzz target `extender_verbs`: POSTs the input to /filter, /prioritize and /preempt of an extender over a small cluster: 200 with a well-formed answer or 400, never 5xx or a panic.
//!
//! The harness lives in `rota_fuzz::extender_verbs`, shared with the stable replay test
//! (`tests/fuzz_regressions.rs`); a broken property panics here so libFuzzer saves the input.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = rota_fuzz::extender_verbs(data) {
        panic!("extender_verbs: {violation}");
    }
});
