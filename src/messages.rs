//! Text for people: library messages rewritten in plain words (serde names the Rust type it
//! expected, `expected u16`, which says nothing to someone editing a YAML file), and output to
//! stdout that survives a closed pipe (`rota simulate | head`), where `print!` would panic.
//! Must not: change what a message means, only how the expected type is spelled.

/// Writes `text` to stdout and flushes. A reader that went away (`| head`) gives an
/// [`std::io::ErrorKind::BrokenPipe`] error, which `main` ends on quietly.
pub fn print_stdout(text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// Rust type names as serde spells them, and what they mean in a document.
const TYPE_WORDS: [(&str, &str); 12] = [
    ("u8", "a whole number from 0 to 255"),
    ("u16", "a whole number from 0 to 65535"),
    ("u32", "a whole number from 0 to 4294967295"),
    ("u64", "a whole number of at least 0"),
    ("usize", "a whole number of at least 0"),
    ("i8", "a whole number from -128 to 127"),
    ("i16", "a whole number from -32768 to 32767"),
    ("i32", "a whole number from -2147483648 to 2147483647"),
    ("i64", "a whole number"),
    ("f32", "a number"),
    ("f64", "a number"),
    ("a boolean", "true or false"),
];

/// `message` with `expected <rust type>` (serde) and `invalid <rust type>` (serde-saphyr)
/// spelled in words, and serde's `invalid type:` / `invalid value:` prefixes shortened to
/// `got`.
pub fn plain_serde_message(message: &str) -> String {
    let mut out = message
        .replace("invalid type: ", "got ")
        .replace("invalid value: ", "got ");
    out = drop_struct_names(&out);
    for (rust, words) in TYPE_WORDS {
        out = replace_word(
            &out,
            &format!("expected {rust}"),
            &format!("expected {words}"),
        );
        out = replace_word(&out, &format!("invalid {rust}"), &format!("not {words}"));
    }
    out
}

/// `expected struct TenantConfig` names a Rust type; in a document it is a mapping.
fn drop_struct_names(text: &str) -> String {
    const STRUCT: &str = "expected struct ";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(STRUCT) {
        out.push_str(&rest[..at]);
        out.push_str("expected a mapping");
        let name = &rest[at + STRUCT.len()..];
        let end = name
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(name.len());
        rest = &name[end..];
    }
    out.push_str(rest);
    out
}

/// Replaces `from` where it is not followed by a letter or digit (so `u64` but not `u64s`).
fn replace_word(text: &str, from: &str, to: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(from) {
        let after = &rest[at + from.len()..];
        let whole = !after.starts_with(|c: char| c.is_ascii_alphanumeric());
        out.push_str(&rest[..at]);
        out.push_str(if whole { to } else { from });
        rest = after;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_type_names_become_words() {
        assert_eq!(
            plain_serde_message("invalid value: integer `70000`, expected u16"),
            "got integer `70000`, expected a whole number from 0 to 65535"
        );
        assert_eq!(
            plain_serde_message("invalid type: string \"7d\", expected f64"),
            "got string \"7d\", expected a number"
        );
        assert_eq!(
            plain_serde_message("line 4: invalid u64"),
            "line 4: not a whole number of at least 0"
        );
        assert_eq!(
            plain_serde_message("invalid type: null, expected struct TenantConfig"),
            "got null, expected a mapping"
        );
        // A name that only starts like a type is left alone.
        assert_eq!(plain_serde_message("expected u64s"), "expected u64s");
    }
}
