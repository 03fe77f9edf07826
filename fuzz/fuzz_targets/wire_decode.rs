//! Fuzz target `wire_decode`: Decodes the input as every extender wire type, translates pods and nodes as the verbs do, and checks that answers re-encode to a fixed point.
//!
//! The harness lives in `rota_fuzz::wire_decode`, shared with the stable replay test
//! (`tests/fuzz_regressions.rs`); a broken property panics here so libFuzzer saves the input.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = rota_fuzz::wire_decode(data) {
        panic!("wire_decode: {violation}");
    }
});
