//! Fuzz target `config`: Parses the input as a RotaConfig file; a valid config's effective YAML parses back to the same config.
//!
//! The harness lives in `rota_fuzz::config`, shared with the stable replay test
//! (`tests/fuzz_regressions.rs`); a broken property panics here so libFuzzer saves the input.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = rota_fuzz::config(data) {
        panic!("config: {violation}");
    }
});
