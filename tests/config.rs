//! Config loading and validation, end to end through the public API: YAML text in, a
//! `ValidConfig` or an error naming the field path out.
//!
//! Also guards the docs: the README's configuration reference must list every key with its
//! default, and the example (the Helm chart's default RotaConfig) must validate.

use std::path::{Path, PathBuf};

use rota::config::{
    self, ConfigError, ConfigProblem, GroupConfig, RotaConfig, TenantConfig, ValidConfig,
};
use serde_json::Value;

const EXAMPLE: &str = "deploy/helm/rota/files/rota-config.yaml";

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read_repo_file(rel: &str) -> String {
    let path = repo_file(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The validation problems of `yaml`; panics when it fails earlier or validates.
fn problems(yaml: &str) -> Vec<ConfigProblem> {
    match config::parse(yaml) {
        Err(ConfigError::Invalid(errors)) => errors.0,
        Err(other) => panic!("expected validation errors for {yaml:?}, got: {other}"),
        Ok(_) => panic!("expected validation errors for {yaml:?}, but it validated"),
    }
}

fn parse_ok(yaml: &str) -> ValidConfig {
    config::parse(yaml).unwrap_or_else(|e| panic!("expected {yaml:?} to validate: {e}"))
}

// === loading ===

#[test]
fn default_round_trips_through_yaml() {
    let default = ValidConfig::default();
    let yaml = default.to_yaml();
    assert_eq!(parse_ok(&yaml), default, "YAML was:\n{yaml}");
}

#[test]
fn example_round_trips_through_yaml() {
    let example = parse_ok(&read_repo_file(EXAMPLE));
    assert_ne!(
        *example,
        RotaConfig::default(),
        "example should set non-defaults"
    );
    assert_eq!(parse_ok(&example.to_yaml()), example);
}

#[test]
fn strings_that_look_like_other_yaml_types_round_trip() {
    let mut c = RotaConfig::default();
    for name in [
        "yes", "no", "on", "null", "true", "123", "1e3", "0x1F", "1.5", "NaN",
    ] {
        c.tenants.push(TenantConfig {
            name: name.into(),
            weight: 2.0,
            group: None,
        });
    }
    c.usage.device_weights.insert("Tesla-T4".into(), 0.5);
    let valid = c.validate().expect("fixture validates");
    let yaml = valid.to_yaml();
    assert_eq!(parse_ok(&yaml), valid, "YAML was:\n{yaml}");
}

#[test]
fn empty_documents_mean_all_defaults() {
    for yaml in ["", "\n", "# only a comment\n", "{}", "---\n", "~"] {
        assert_eq!(*parse_ok(yaml), RotaConfig::default(), "{yaml:?}");
    }
}

#[test]
fn api_version_and_kind_may_be_omitted_but_not_wrong() {
    let c = parse_ok("tenantLabel: team\n");
    assert_eq!(c.api_version, config::API_VERSION);
    assert_eq!(c.kind, config::KIND);
    assert_eq!(c.tenant_label, "team");

    let p = problems("apiVersion: rota.io/v1\nkind: RotaConfiguration\n");
    let paths: Vec<&str> = p.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["apiVersion", "kind"]);
    assert!(p[0].reason.contains("rota.io/v1alpha1"), "{}", p[0]);
}

#[test]
fn unknown_field_reports_its_path() {
    let yaml = "tenants:\n  - name: a\n  - name: b\n    wieght: 2\n";
    match config::parse(yaml) {
        Err(e @ ConfigError::Parse { .. }) => {
            let text = e.to_string();
            assert!(text.starts_with("tenants[1].wieght: "), "{text}");
            assert!(text.contains("unknown field"), "{text}");
            assert_eq!(e.code(), "parse");
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
    let err = config::parse("usage:\n  halfLife: 3\n").expect_err("unknown key");
    assert!(err.to_string().starts_with("usage.halfLife: "), "{err}");
}

#[test]
fn wrong_type_reports_its_path() {
    let err = config::parse("usage:\n  halfLifeSeconds: 7d\n").expect_err("string for f64");
    assert_eq!(
        err.to_string(),
        "usage.halfLifeSeconds: invalid type: string \"7d\", expected f64"
    );
    let err = config::parse("quantum:\n  jobSeconds: -5\n").expect_err("negative u64");
    assert!(err.to_string().starts_with("quantum.jobSeconds: "), "{err}");
    let err = config::parse("telemetry:\n  unknownPolicy: maybe\n").expect_err("bad enum");
    assert!(
        err.to_string().starts_with("telemetry.unknownPolicy: "),
        "{err}"
    );
    for yaml in ["- just\n- a list\n", "just text", "42"] {
        let err = config::parse(yaml).expect_err("not a mapping");
        assert!(
            matches!(err, ConfigError::Parse { ref path, .. } if path.is_empty()),
            "{err}"
        );
        assert!(err.to_string().contains("must be a mapping"), "{err}");
    }
}

#[test]
fn missing_tenant_name_reports_its_path() {
    let err = config::parse("tenants:\n  - weight: 2\n").expect_err("name is required");
    let text = err.to_string();
    assert!(text.starts_with("tenants[0]"), "{text}");
    assert!(text.contains("name"), "{text}");
}

#[test]
fn yaml_syntax_error_mentions_position() {
    let err = config::parse("tenants:\n  - name: a\n    weight: [1,\n").expect_err("unclosed");
    match &err {
        ConfigError::Syntax {
            line,
            column,
            reason,
        } => {
            assert!(line.is_some() && column.is_some(), "{err:?}");
            assert!(reason.contains("line"), "{reason}");
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
    assert_eq!(err.code(), "syntax");
    let err = config::parse("a: 1\na: 2\n").expect_err("duplicate key");
    assert!(
        matches!(err, ConfigError::Syntax { line: Some(2), .. }),
        "{err:?}"
    );
}

#[test]
fn truncated_and_mangled_example_never_panics() {
    let text = read_repo_file(EXAMPLE);
    let mut outcomes = (0, 0);
    for end in (0..=text.len()).filter(|i| text.is_char_boundary(*i)) {
        match config::parse(&text[..end]) {
            Ok(_) => outcomes.0 += 1,
            Err(e) => {
                assert!(!e.to_string().is_empty());
                outcomes.1 += 1;
            }
        }
    }
    // Both outcomes must occur, or the loop did not exercise anything.
    assert!(outcomes.0 > 0 && outcomes.1 > 0, "{outcomes:?}");
    // Dropping any one line must not panic either.
    let lines: Vec<&str> = text.lines().collect();
    for skip in 0..lines.len() {
        let mut mangled: Vec<&str> = lines.clone();
        mangled.remove(skip);
        let _ = config::parse(&mangled.join("\n"));
    }
}

#[test]
fn load_names_the_missing_file() {
    let path = repo_file("deploy/helm/rota/files/does-not-exist.yaml");
    let err = config::load(&path).expect_err("missing file");
    assert_eq!(err.code(), "io");
    assert!(err.to_string().contains("does-not-exist.yaml"), "{err}");
}

#[test]
fn example_file_validates_without_warnings() {
    let c = config::load(&repo_file(EXAMPLE)).unwrap_or_else(|e| panic!("{EXAMPLE}: {e}"));
    assert_eq!(c.warnings(), Vec::<String>::new());
    assert!(c.manages_resource("nvidia.com/GA102GL_A10"));
    assert_eq!(c.groups.len(), 2);
    for product in ["H100", "A100", "T4", "A10"] {
        assert!(
            c.usage.device_weights.keys().any(|k| k.contains(product)),
            "no device weight for {product}"
        );
    }
}

#[test]
fn check_report_prints_ok_warnings_and_effective_config() {
    let report = config::check_report(&repo_file(EXAMPLE)).expect("example is valid");
    assert!(report.starts_with("config OK: "), "{report}");
    // (`rotation.warning:` is a key of the effective config, not a diagnostic.)
    assert!(
        !report.lines().any(|l| l.starts_with("warning:")),
        "{report}"
    );
    let yaml_start = report
        .find("apiVersion:")
        .expect("effective config printed");
    let example = config::load(&repo_file(EXAMPLE)).expect("example is valid");
    assert_eq!(parse_ok(&report[yaml_start..]), example);

    let dir = std::env::temp_dir().join(format!("rota-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("warn.yaml");
    std::fs::write(&file, "telemetry:\n  staleAfterSeconds: 10\n").expect("write temp file");
    let report = config::check_report(&file);
    let _ = std::fs::remove_dir_all(&dir);
    let report = report.expect("legal config");
    assert!(
        report.contains("\nwarning: telemetry.staleAfterSeconds: "),
        "{report}"
    );
}

#[test]
fn check_report_fails_with_every_problem() {
    let dir = std::env::temp_dir().join(format!("rota-config-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("bad.yaml");
    std::fs::write(&file, "kind: Nope\nusage:\n  halfLifeSeconds: 0\n").expect("write");
    let result = config::check_report(&file);
    let _ = std::fs::remove_dir_all(&dir);
    let err = result.expect_err("invalid config");
    assert_eq!(err.code(), "invalid");
    let text = err.to_string();
    assert!(text.contains("\nkind: must be"), "{text}");
    assert!(text.contains("\nusage.halfLifeSeconds: must be"), "{text}");
}

// === validation rules ===

/// One failing case per rule: the YAML and the path the problem must name.
const RULE_CASES: &[(&str, &str)] = &[
    ("apiVersion: v1", "apiVersion"),
    ("kind: Config", "kind"),
    ("gpuResources: []", "gpuResources"),
    ("gpuResources: [gpu]", "gpuResources[0]"),
    (
        "gpuResources: [nvidia.com/gpu, kubernetes.io/gpu]",
        "gpuResources[1]",
    ),
    ("gpuResources: [x.kubernetes.io/gpu]", "gpuResources[0]"),
    ("gpuResources: [Nvidia.com/gpu]", "gpuResources[0]"),
    ("gpuResources: [nvidia.com/-gpu]", "gpuResources[0]"),
    (
        "gpuResources: [nvidia.com/gpu, nvidia.com/gpu]",
        "gpuResources[1]",
    ),
    ("tenantLabel: 'rota.io/bad label'", "tenantLabel"),
    ("tenantLabel: ''", "tenantLabel"),
    ("defaultTenantWeight: 0", "defaultTenantWeight"),
    ("defaultTenantWeight: -1", "defaultTenantWeight"),
    ("groups: [{name: ''}]", "groups[0].name"),
    ("groups: [{name: a, weight: 0}]", "groups[0].weight"),
    ("groups: [{name: a}, {name: a}]", "groups[1].name"),
    ("tenants: [{name: ''}]", "tenants[0].name"),
    ("tenants: [{name: 'two words'}]", "tenants[0].name"),
    ("tenants: [{name: -dash}]", "tenants[0].name"),
    ("tenants: [{name: a, weight: -2}]", "tenants[0].weight"),
    (
        "tenants: [{name: a}, {name: b}, {name: a}]",
        "tenants[2].name",
    ),
    ("tenants: [{name: a, group: nope}]", "tenants[0].group"),
    (
        "groups: [{name: g}]\ntenants: [{name: a, group: h}]",
        "tenants[0].group",
    ),
    ("tenants: [{name: a, group: ''}]", "tenants[0].group"),
    ("usage: {halfLifeSeconds: 0}", "usage.halfLifeSeconds"),
    ("usage: {halfLifeSeconds: -60}", "usage.halfLifeSeconds"),
    (
        "usage: {deviceWeights: {Tesla-T4: 0}}",
        "usage.deviceWeights.Tesla-T4",
    ),
    (
        "usage: {deviceWeights: {'Tesla T4': 1}}",
        "usage.deviceWeights.Tesla T4",
    ),
    (
        "usage: {defaultDeviceWeight: 0}",
        "usage.defaultDeviceWeight",
    ),
    ("quantum: {jobSeconds: 0}", "quantum.jobSeconds"),
    (
        "quantum: {virtualMachineSeconds: 0}",
        "quantum.virtualMachineSeconds",
    ),
    ("quantum: {podSeconds: 0}", "quantum.podSeconds"),
    ("quantum: {minSeconds: 0}", "quantum.minSeconds"),
    ("quantum: {maxSeconds: 0}", "quantum.maxSeconds"),
    (
        "quantum: {minSeconds: 900, maxSeconds: 800}",
        "quantum.minSeconds",
    ),
    ("quantum: {jobSeconds: 100}", "quantum.jobSeconds"),
    (
        "quantum: {virtualMachineSeconds: 90000}",
        "quantum.virtualMachineSeconds",
    ),
    ("quantum: {podSeconds: 299}", "quantum.podSeconds"),
    ("rotation: {intervalSeconds: 0}", "rotation.intervalSeconds"),
    ("rotation: {marginGpus: -0.5}", "rotation.marginGpus"),
    (
        "rotation: {maxPerTick: 0, maxPerTenantPerTick: 0}",
        "rotation.maxPerTick",
    ),
    (
        "rotation: {maxPerTenantPerTick: 0}",
        "rotation.maxPerTenantPerTick",
    ),
    (
        "rotation: {maxPerTick: 2, maxPerTenantPerTick: 3}",
        "rotation.maxPerTenantPerTick",
    ),
    (
        "rotation: {protectedPriorityClasses: [High]}",
        "rotation.protectedPriorityClasses[0]",
    ),
    (
        "rotation: {protectedPriorityClasses: [a, a]}",
        "rotation.protectedPriorityClasses[1]",
    ),
    (
        "telemetry: {pollIntervalSeconds: 0}",
        "telemetry.pollIntervalSeconds",
    ),
    (
        "telemetry: {staleAfterSeconds: 5}",
        "telemetry.staleAfterSeconds",
    ),
    (
        "telemetry: {pollIntervalSeconds: 60, staleAfterSeconds: 30}",
        "telemetry.staleAfterSeconds",
    ),
    (
        "telemetry: {maxTemperatureCelsius: 0}",
        "telemetry.maxTemperatureCelsius",
    ),
    (
        "telemetry: {maxTemperatureCelsius: 150}",
        "telemetry.maxTemperatureCelsius",
    ),
    (
        "telemetry: {unhealthyXids: [0]}",
        "telemetry.unhealthyXids[0]",
    ),
    (
        "telemetry: {unhealthyXids: [79, 48, 79]}",
        "telemetry.unhealthyXids[2]",
    ),
    ("scoring: {packing: -1}", "scoring.packing"),
    ("scoring: {health: -1}", "scoring.health"),
    ("scoring: {thermal: -1}", "scoring.thermal"),
    ("scoring: {utilisation: -1}", "scoring.utilisation"),
    ("scoring: {headRoom: -1}", "scoring.headRoom"),
    (
        "scoring: {packing: 0, health: 0, thermal: 0, utilisation: 0, headRoom: 0}",
        "scoring",
    ),
];

#[test]
fn every_rule_rejects_its_case_with_the_path() {
    for (yaml, path) in RULE_CASES {
        let found = problems(yaml);
        assert!(
            found.iter().any(|p| p.path == *path),
            "{yaml:?}: expected a problem at {path}, got {found:?}"
        );
        let err = config::parse(yaml).expect_err("invalid");
        let text = err.to_string();
        assert!(text.contains(&format!("\n{path}: ")), "{yaml:?}: {text}");
        assert_eq!(err.code(), "invalid");
    }
}

#[test]
fn boundary_values_are_accepted() {
    parse_ok("rotation: {marginGpus: 0, maxPerTick: 1, maxPerTenantPerTick: 1}");
    parse_ok("telemetry: {pollIntervalSeconds: 1, staleAfterSeconds: 2}");
    parse_ok("telemetry: {maxTemperatureCelsius: 149.9}");
    parse_ok("quantum: {minSeconds: 600, maxSeconds: 600, virtualMachineSeconds: 600}");
    parse_ok("scoring: {packing: 0, health: 0, thermal: 0, utilisation: 0, headRoom: 0.1}");
    // Tenants without a group next to grouped ones form the implicit default group.
    let c = parse_ok("groups: [{name: g}]\ntenants: [{name: a, group: g}, {name: b}]");
    assert_eq!(c.tenant_group("b"), None);
}

#[test]
fn non_finite_numbers_are_rejected() {
    // YAML `.nan` is refused by the parser; a config built in code must be caught too.
    let mut c = RotaConfig {
        default_tenant_weight: f64::NAN,
        ..RotaConfig::default()
    };
    c.usage.half_life_seconds = f64::INFINITY;
    c.rotation.margin_gpus = f64::INFINITY;
    c.scoring.thermal = f64::NAN;
    c.telemetry.max_temperature_celsius = f64::NAN;
    let errors = c.validate().expect_err("non-finite values");
    let paths: Vec<&str> = errors.0.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "defaultTenantWeight",
            "usage.halfLifeSeconds",
            "rotation.marginGpus",
            "telemetry.maxTemperatureCelsius",
            "scoring.thermal"
        ]
    );
    assert!(config::parse("defaultTenantWeight: .nan").is_err());
}

#[test]
fn all_problems_are_reported_at_once() {
    let yaml = "\
kind: Nope
gpuResources: [gpu]
tenants:
  - {name: a, weight: 0, group: ghost}
usage: {halfLifeSeconds: -1}
rotation: {intervalSeconds: 0}
telemetry: {maxTemperatureCelsius: 200}
";
    let err = config::parse(yaml).expect_err("many problems");
    let ConfigError::Invalid(errors) = &err else {
        panic!("expected validation errors, got {err}");
    };
    let paths: Vec<&str> = errors.problems().iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "kind",
            "gpuResources[0]",
            "tenants[0].weight",
            "tenants[0].group",
            "usage.halfLifeSeconds",
            "rotation.intervalSeconds",
            "telemetry.maxTemperatureCelsius",
        ]
    );
    // One line per problem after the heading.
    assert_eq!(err.to_string().lines().count(), paths.len() + 1, "{err}");
}

#[test]
fn default_config_is_valid_and_quiet() {
    let c = RotaConfig::default().validate().expect("default validates");
    assert_eq!(c.warnings(), Vec::<String>::new());
}

// === warnings ===

#[test]
fn suspicious_settings_warn_without_failing() {
    let cases: &[(&str, &str)] = &[
        (
            "tenants: [{name: a, weight: 1000}, {name: b}]",
            "tenants[0].weight: ",
        ),
        (
            "defaultTenantWeight: 0.001\ntenants: [{name: a}]",
            "tenants[0].weight: weight 1 is 1000 times defaultTenantWeight (0.001)",
        ),
        (
            "groups: [{name: g, weight: 5000}, {name: h, weight: 5}]",
            "groups[0].weight: ",
        ),
        ("groups: [{name: lonely}]", "groups[0]: "),
        (
            "groups: [{name: a}]\ntenants: [{name: a, group: a}]",
            "groups[0].name: ",
        ),
        (
            "telemetry: {staleAfterSeconds: 14}",
            "telemetry.staleAfterSeconds: ",
        ),
        ("usage: {halfLifeSeconds: 60}", "usage.halfLifeSeconds: "),
    ];
    for (yaml, prefix) in cases {
        let warnings = parse_ok(yaml).warnings();
        assert!(
            warnings.iter().any(|w| w.starts_with(prefix)),
            "{yaml:?}: expected a warning starting {prefix:?}, got {warnings:?}"
        );
    }
    // Just under the thresholds: no warnings.
    for yaml in [
        "tenants: [{name: a, weight: 999}, {name: b}]",
        "telemetry: {staleAfterSeconds: 15}",
        "rotation: {enabled: true, dryRun: true}",
    ] {
        assert_eq!(parse_ok(yaml).warnings(), Vec::<String>::new(), "{yaml:?}");
    }
}

// === docs drift ===

/// The README region between the config-reference markers.
fn reference_region() -> String {
    let readme = read_repo_file("README.md");
    let start = readme
        .find("<!-- config-reference:start -->")
        .expect("start marker in README.md");
    let end = readme
        .find("<!-- config-reference:end -->")
        .expect("end marker in README.md");
    readme[start..end].to_string()
}

/// Every key path of `value`: leaves, plus `list` and `list[].field` for lists of objects.
/// Maps with free-form keys (`usage.deviceWeights`) are leaves.
fn key_paths(prefix: &str, value: &Value, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(map) if !map.is_empty() && prefix != "usage.deviceWeights" => {
            for (key, child) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                key_paths(&path, child, out);
            }
        }
        Value::Array(items) if items.iter().any(Value::is_object) => {
            out.push((prefix.to_string(), value.clone()));
            for item in items {
                key_paths(&format!("{prefix}[]"), item, out);
            }
        }
        _ => out.push((prefix.to_string(), value.clone())),
    }
}

/// A default value as the README writes it, inside backticks.
fn render_default(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            _ => n.to_string(),
        },
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(render_default).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(map) if map.is_empty() => "{}".into(),
        other => other.to_string(),
    }
}

/// The table row documenting `path`, split into trimmed cells.
fn reference_row(region: &str, path: &str) -> Option<Vec<String>> {
    let lead = format!("| `{path}` |");
    let line = region.lines().find(|l| l.starts_with(&lead))?;
    Some(line.split('|').map(|c| c.trim().to_string()).collect())
}

#[test]
fn readme_reference_documents_every_key_with_its_default() {
    let region = reference_region();
    let default = serde_json::to_value(RotaConfig::default()).expect("serialize default");
    let mut defaults = Vec::new();
    key_paths("", &default, &mut defaults);
    assert!(defaults.len() > 30, "walk found too few keys: {defaults:?}");
    for (path, value) in &defaults {
        let row = reference_row(&region, path)
            .unwrap_or_else(|| panic!("README config reference lacks a row for `{path}`"));
        // cells: "", path, type, default, meaning, ""
        let expected = format!("`{}`", render_default(value));
        assert_eq!(row[3], expected, "README default for `{path}`");
    }

    // List entries only appear when a list is non-empty.
    let mut sample = RotaConfig::default();
    sample.groups.push(GroupConfig {
        name: "g".into(),
        weight: 1.0,
    });
    sample.tenants.push(TenantConfig {
        name: "t".into(),
        weight: 1.0,
        group: Some("g".into()),
    });
    let mut all = Vec::new();
    key_paths(
        "",
        &serde_json::to_value(&sample).expect("serialize"),
        &mut all,
    );
    for (path, _) in &all {
        assert!(
            reference_row(&region, path).is_some(),
            "README config reference lacks a row for `{path}`"
        );
    }
}

#[test]
fn warning_periods_are_bounded_and_annotations_clamped_to_the_maximum() {
    let paths =
        |yaml: &str| -> Vec<String> { problems(yaml).into_iter().map(|p| p.path).collect() };
    assert_eq!(
        paths("rotation: {warning: {jobSeconds: 4000}}"),
        ["rotation.warning.jobSeconds"]
    );
    assert_eq!(
        paths("rotation: {warning: {maxSeconds: 100000, virtualMachineSeconds: 600}}"),
        ["rotation.warning.maxSeconds"]
    );
    let c = parse_ok("rotation: {warning: {maxSeconds: 900, podSeconds: 60}}");
    use rota::core::WorkloadKind::{Job, Pod, VirtualMachine};
    assert_eq!(c.warning_for(VirtualMachine, None), 300);
    assert_eq!(c.warning_for(Pod, None), 60);
    assert_eq!(c.warning_for(Job, Some(5000)), 900, "clamped to maxSeconds");
    assert_eq!(
        c.warning_for(VirtualMachine, Some(0)),
        0,
        "an owner may ask for none"
    );
}
