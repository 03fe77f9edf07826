//! Helpers shared by the integration tests: `mod common;` in a test file brings them in.
//!
//! Each test binary compiles this module on its own and uses a different subset of it, so
//! unused items are expected here and are not dead code of the product: hence the allow below,
//! confined to this module.

#![allow(dead_code)]

pub mod extender;
pub mod generators;
pub mod raw_http;
pub mod tempdir;
