//! Kubernetes name syntax checks used by config validation.
//!
//! Each check returns `Err(reason)` with a sentence fragment that completes "must ..." style
//! messages; the caller adds the field path. The rules mirror apimachinery's
//! `IsDNS1123Subdomain`, `IsQualifiedName` and `IsExtendedResourceName`. Pure string functions:
//! no allocation beyond the error text, no regex dependency.

/// Longest DNS-1123 subdomain (a label-key prefix or a resource domain).
const SUBDOMAIN_MAX: usize = 253;
/// Longest name part of a qualified name, and longest label value.
const NAME_MAX: usize = 63;
/// apimachinery validates an extended resource name as the quota key `requests.<name>`, so the
/// domain must leave room for that prefix.
const QUOTA_PREFIX: &str = "requests.";

/// Checks a DNS-1123 subdomain: dot-separated labels of lower-case alphanumerics and `-`, each
/// starting and ending alphanumeric, at most 253 characters.
pub(super) fn dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > SUBDOMAIN_MAX {
        return Err(format!("must be at most {SUBDOMAIN_MAX} characters"));
    }
    let label_ok = |l: &str| {
        let lower_alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        l.starts_with(lower_alnum)
            && l.ends_with(lower_alnum)
            && l.chars().all(|c| lower_alnum(c) || c == '-')
    };
    if s.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a DNS-1123 subdomain (lower-case alphanumerics, '-' and '.', \
             starting and ending with an alphanumeric)"
        ))
    }
}

/// Checks the name part of a qualified name, which is also the syntax of a non-empty label
/// value: `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, at most 63 characters.
pub(super) fn label_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > NAME_MAX {
        return Err(format!("{s:?} is longer than {NAME_MAX} characters"));
    }
    let alnum = |c: char| c.is_ascii_alphanumeric();
    let inner = |c: char| alnum(c) || matches!(c, '-' | '_' | '.');
    if s.starts_with(alnum) && s.ends_with(alnum) && s.chars().all(inner) {
        Ok(())
    } else {
        Err(format!(
            "{s:?} must consist of alphanumerics, '-', '_' or '.', and start and end with an \
             alphanumeric"
        ))
    }
}

/// Checks a qualified name (a label key): `[prefix/]name`, where the prefix is a DNS-1123
/// subdomain.
pub(super) fn qualified_name(s: &str) -> Result<(), String> {
    match s.split_once('/') {
        None => label_name(s),
        Some((prefix, name)) => {
            if name.contains('/') {
                return Err(format!("{s:?} has more than one '/'"));
            }
            dns1123_subdomain(prefix).map_err(|e| format!("prefix of {s:?}: {e}"))?;
            label_name(name).map_err(|e| format!("name of {s:?}: {e}"))
        }
    }
}

/// Checks an extended resource name: `domain/name`, fully qualified, outside the
/// `kubernetes.io` domain (those names are native resources, which rota cannot manage).
pub(super) fn extended_resource_name(s: &str) -> Result<(), String> {
    let Some((domain, _)) = s.split_once('/') else {
        return Err(format!(
            "{s:?} must be a fully qualified extended resource name (domain/name)"
        ));
    };
    if domain == "kubernetes.io" || domain.ends_with(".kubernetes.io") {
        return Err(format!(
            "{s:?} is in the kubernetes.io domain, which is reserved for native resources"
        ));
    }
    if s.starts_with(QUOTA_PREFIX) {
        return Err(format!("{s:?} must not start with {QUOTA_PREFIX:?}"));
    }
    qualified_name(s)?;
    // The quota key `requests.<domain>/<name>` must itself be a qualified name.
    if domain.len() + QUOTA_PREFIX.len() > SUBDOMAIN_MAX {
        return Err(format!(
            "the domain of {s:?} must be at most {} characters",
            SUBDOMAIN_MAX - QUOTA_PREFIX.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subdomains() {
        for ok in ["a", "nvidia.com", "a-b.c0", "0.1"] {
            assert_eq!(dns1123_subdomain(ok), Ok(()), "{ok}");
        }
        let long = "a".repeat(254);
        for bad in ["", "A.com", "-a", "a-", "a..b", "a_b", ".a", long.as_str()] {
            assert!(dns1123_subdomain(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn label_names() {
        for ok in ["a", "A", "a.b_c-D", "0", &"x".repeat(63)] {
            assert_eq!(label_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "-a", "a.", "a b", "ä", "a/b", &"x".repeat(64)] {
            assert!(label_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn qualified_names() {
        for ok in ["rota.io/tenant", "tenant", "example.com/Team_1"] {
            assert_eq!(qualified_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "/tenant",
            "rota.io/",
            "a/b/c",
            "Rota.io/tenant",
            "rota.io/-x",
        ] {
            assert!(qualified_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn extended_resources() {
        for ok in ["nvidia.com/gpu", "nvidia.com/GA102GL_A10", "amd.com/gpu"] {
            assert_eq!(extended_resource_name(ok), Ok(()), "{ok}");
        }
        let long_domain = format!("{}/gpu", "a".repeat(250));
        for bad in [
            "gpu",
            "kubernetes.io/gpu",
            "foo.kubernetes.io/gpu",
            "requests.nvidia.com/gpu",
            "nvidia.com/",
            "nvidia.com/-gpu",
            "NVIDIA.com/gpu",
            long_domain.as_str(),
        ] {
            assert!(extended_resource_name(bad).is_err(), "{bad}");
        }
    }
}
