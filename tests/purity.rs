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
