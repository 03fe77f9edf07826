//! The policy core stays pure: no I/O crates and no clock reads under `src/core/`.
//! (One crate cannot split dependencies per module, so this test enforces the layering.)

use std::fs;
use std::path::Path;

const FORBIDDEN: &[&str] = &[
    "kube::",
    "use kube",
    "k8s_openapi",
    "tokio",
    "hyper",
    "std::fs",
    "std::net",
    "nvml_wrapper",
    "SystemTime::now",
    "Instant::now",
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).expect("readable source folder") {
        let path = entry.expect("readable entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn core_performs_no_io_and_reads_no_clock() {
    let mut files = Vec::new();
    rust_files(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/core")
            .as_path(),
        &mut files,
    );
    assert!(!files.is_empty(), "src/core has no Rust files");
    let mut offences = Vec::new();
    for file in &files {
        let text = fs::read_to_string(file).expect("readable source");
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for word in FORBIDDEN {
                if code.contains(word) {
                    offences.push(format!("{}:{}: {}", file.display(), n + 1, word));
                }
            }
        }
    }
    assert!(offences.is_empty(), "impure core:\n{}", offences.join("\n"));
}

/// The serving processes read the wall clock in one place, `src/clock.rs`, in one time type.
#[test]
fn only_the_clock_module_reads_the_wall_clock() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let clock = root.join("clock.rs");
    let mut offences = Vec::new();
    for file in files.iter().filter(|f| **f != clock) {
        let text = fs::read_to_string(file).expect("readable source");
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for word in ["SystemTime::now", "fn unix_now"] {
                if code.contains(word) {
                    offences.push(format!("{}:{}: {}", file.display(), n + 1, word));
                }
            }
        }
    }
    assert!(
        offences.is_empty(),
        "wall clock read outside src/clock.rs:\n{}",
        offences.join("\n")
    );
}

/// Every `rota.io/…` annotation and label name is spelled once, in `src/names.rs` (API versions
/// such as `rota.io/v1alpha1` are not names). Test modules may spell them out.
#[test]
fn rota_io_names_live_in_one_module() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let names = root.join("names.rs");
    let mut offences = Vec::new();
    for file in files.iter().filter(|f| **f != names) {
        let text = fs::read_to_string(file).expect("readable source");
        let product = text.split("#[cfg(test)]").next().unwrap_or("");
        for (n, line) in product.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if code.contains("\"rota.io/") && !code.contains("\"rota.io/v1") {
                offences.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        offences.is_empty(),
        "rota.io names spelled outside src/names.rs:\n{}",
        offences.join("\n")
    );
}
