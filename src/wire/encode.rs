//! Hand-written JSON encoders for the two hot answers: the filter result and the prioritize
//! list.
//!
//! They write exactly the bytes `serde_json::to_writer` writes for the same value (compact,
//! fields in declaration order, the same string escapes), only faster: strings that need no
//! escape are copied whole (checked eight bytes at a time), a message shared by many nodes is
//! escaped once and copied afterwards, and small integers skip the formatter. Tests compare
//! both encoders on arbitrary values.
//! Must not: change the answer's shape or bytes; any new field goes to serde first.

use std::io::Write as _;

use rustc_hash::FxHashMap;

use super::{ExtenderFilterResult, HostPriority, NodeMessages};

/// Writes `result` as `serde_json::to_writer` would.
pub fn filter_result(out: &mut Vec<u8>, result: &ExtenderFilterResult<'_>) {
    out.extend_from_slice(b"{\"Nodes\":");
    match &result.nodes {
        None => out.extend_from_slice(b"null"),
        Some(list) => {
            out.extend_from_slice(b"{\"items\":[");
            for (i, raw) in list.items.iter().enumerate() {
                comma(out, i);
                out.extend_from_slice(raw.get().as_bytes());
            }
            out.extend_from_slice(b"]}");
        }
    }
    out.extend_from_slice(b",\"NodeNames\":");
    match &result.node_names {
        None => out.extend_from_slice(b"null"),
        Some(names) => {
            out.push(b'[');
            for (i, name) in names.iter().enumerate() {
                comma(out, i);
                string(out, name);
            }
            out.push(b']');
        }
    }
    out.extend_from_slice(b",\"FailedNodes\":");
    messages(out, &result.failed_nodes);
    out.extend_from_slice(b",\"FailedAndUnresolvableNodes\":");
    messages(out, &result.failed_and_unresolvable_nodes);
    out.extend_from_slice(b",\"Error\":");
    string(out, &result.error);
    out.push(b'}');
}

/// Writes a `HostPriorityList` as `serde_json::to_writer` would.
pub fn host_priorities(out: &mut Vec<u8>, list: &[HostPriority<'_>]) {
    out.push(b'[');
    for (i, entry) in list.iter().enumerate() {
        comma(out, i);
        out.extend_from_slice(b"{\"Host\":");
        string(out, &entry.host);
        out.extend_from_slice(b",\"Score\":");
        integer(out, entry.score);
        out.push(b'}');
    }
    out.push(b']');
}

/// A node-to-message map. Messages are usually shared by many nodes (one `Arc<str>` per
/// distinct reason), so each distinct message (same address and length, hence same text) is
/// escaped once and later copied from where it was first written.
fn messages(out: &mut Vec<u8>, map: &NodeMessages<'_>) {
    let mut written: FxHashMap<(usize, usize), (usize, usize)> = FxHashMap::default();
    let mut last: Option<((usize, usize), (usize, usize))> = None;
    out.push(b'{');
    for (i, (node, message)) in map.0.iter().enumerate() {
        comma(out, i);
        string(out, node);
        out.push(b':');
        let key = (message.as_ptr() as usize, message.len());
        let seen = match last {
            Some((k, range)) if k == key => Some(range),
            _ => written.get(&key).copied(),
        };
        let range = match seen {
            Some((start, end)) => {
                out.extend_from_within(start..end);
                let len = end - start;
                (out.len() - len, out.len())
            }
            None => {
                let start = out.len();
                string(out, message);
                written.insert(key, (start, out.len()));
                (start, out.len())
            }
        };
        last = Some((key, range));
    }
    out.push(b'}');
}

fn comma(out: &mut Vec<u8>, index: usize) {
    if index > 0 {
        out.push(b',');
    }
}

/// A JSON string with serde_json's escapes: `\"`, `\\`, `\b \t \n \f \r`, other control
/// characters as `\u00xx` (lower-case hex); everything else, non-ASCII included, verbatim.
pub fn string(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.push(b'"');
    if !needs_escape(bytes) {
        out.extend_from_slice(bytes);
    } else {
        escaped(out, bytes);
    }
    out.push(b'"');
}

/// Whether any byte is a control character, `"` or `\`, eight bytes at a time (the last
/// word overlaps the one before it; strings under eight bytes are padded with spaces).
fn needs_escape(bytes: &[u8]) -> bool {
    let len = bytes.len();
    if len < 8 {
        let mut word = [b' '; 8];
        word[..len].copy_from_slice(bytes);
        return word_needs_escape(u64::from_le_bytes(word));
    }
    let mut at = 0;
    while at + 8 <= len {
        if word_needs_escape(load(bytes, at)) {
            return true;
        }
        at += 8;
    }
    at < len && word_needs_escape(load(bytes, len - 8))
}

fn load(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// The SWAR test on one word: a byte below 0x20 has its top three bits clear; `"` and `\`
/// become zero bytes when xor-ed with themselves. `(x - 1) & !x & 0x80` per byte is nonzero
/// exactly when the word has a zero byte.
fn word_needs_escape(x: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS != 0;
    has_zero(x & 0xE0E0_E0E0_E0E0_E0E0)
        || has_zero(x ^ (ONES * u64::from(b'"')))
        || has_zero(x ^ (ONES * u64::from(b'\\')))
}

/// The slow path: copies runs between escaped bytes.
fn escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            0x09 => b't',
            0x0A => b'n',
            0x0C => b'f',
            0x0D => b'r',
            0x00..=0x1F => b'u',
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.push(b'\\');
        out.push(short);
        if short == b'u' {
            out.extend_from_slice(&[
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ]);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// A decimal integer; scores (0..=10) take the short path.
fn integer(out: &mut Vec<u8>, n: i64) {
    match u8::try_from(n) {
        Ok(small) if small < 10 => out.push(b'0' + small),
        Ok(small) if small < 100 => out.extend_from_slice(&[b'0' + small / 10, b'0' + small % 10]),
        // Writing to a Vec cannot fail.
        _ => {
            let _ = write!(out, "{n}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::sync::Arc;

    use proptest::prelude::*;
    use serde_json::value::RawValue;

    use super::*;
    use crate::wire::NodeList;

    fn messages_of<'a>(v: &'a [(String, usize)], shared: &'a [Arc<str>]) -> NodeMessages<'a> {
        NodeMessages(
            v.iter()
                .map(|(n, r)| {
                    (
                        Cow::Borrowed(n.as_str()),
                        Cow::Borrowed(shared[*r].as_ref()),
                    )
                })
                .collect(),
        )
    }

    fn serde_bytes<T: serde::Serialize + ?Sized>(value: &T) -> Vec<u8> {
        serde_json::to_vec(value).unwrap()
    }

    /// Strings rich in the characters that need escapes, plus non-ASCII.
    fn text() -> impl Strategy<Value = String> {
        let pick = prop_oneof![
            Just('"'),
            Just('\\'),
            Just('/'),
            Just('\u{7f}'),
            Just('é'),
            Just('ノ'),
            Just('\u{2028}'),
            (0u8..0x20).prop_map(char::from),
            proptest::char::range('a', 'z'),
            proptest::char::range('-', '9'),
        ];
        proptest::collection::vec(pick, 0..40).prop_map(|c| c.into_iter().collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn strings_match_serde(s in text(), plain in "[a-z0-9.-]{0,40}") {
            for s in [&s, &plain] {
                let mut out = Vec::new();
                string(&mut out, s);
                prop_assert_eq!(out, serde_bytes(s));
            }
        }

        #[test]
        fn integers_match_serde(n in any::<i64>(), small in -5i64..120) {
            for n in [n, small] {
                let mut out = Vec::new();
                integer(&mut out, n);
                prop_assert_eq!(out, serde_bytes(&n));
            }
        }

        #[test]
        fn host_priorities_match_serde(entries in proptest::collection::vec((text(), -3i64..14), 0..12)) {
            let list: Vec<HostPriority> = entries
                .iter()
                .map(|(h, s)| HostPriority { host: Cow::Borrowed(h.as_str()), score: *s })
                .collect();
            let mut out = Vec::new();
            host_priorities(&mut out, &list);
            prop_assert_eq!(out, serde_bytes(&list));
        }

        #[test]
        fn filter_results_match_serde(
            names in proptest::option::of(proptest::collection::vec(text(), 0..8)),
            failed in proptest::collection::vec((text(), 0usize..3), 0..8),
            unresolvable in proptest::collection::vec((text(), 0usize..3), 0..8),
            reasons in proptest::collection::vec(text(), 3),
            error in text(),
            with_nodes in any::<bool>(),
        ) {
            // Reasons are shared the way the verbs share them: one Arc per distinct reason.
            let shared: Vec<Arc<str>> = reasons.iter().map(|r| Arc::from(r.as_str())).collect();
            let raw: Vec<Box<RawValue>> = ["{\"a\": [1, 2]}", "null", "\"x\\ty\""]
                .iter()
                .map(|s| RawValue::from_string((*s).to_string()).unwrap())
                .collect();
            let result = ExtenderFilterResult {
                nodes: with_nodes.then(|| NodeList { items: raw.iter().map(|r| r.as_ref()).collect() }),
                node_names: names.as_ref().map(|v| v.iter().map(|n| Cow::Borrowed(n.as_str())).collect()),
                failed_nodes: messages_of(&failed, &shared),
                failed_and_unresolvable_nodes: messages_of(&unresolvable, &shared),
                error,
            };
            let mut out = Vec::new();
            filter_result(&mut out, &result);
            prop_assert_eq!(out, serde_bytes(&result));
        }
    }

    #[test]
    fn each_class_of_byte_is_detected_at_every_offset() {
        for bad in (0u8..0x20).chain([b'"', b'\\']) {
            for len in 1..20 {
                for at in 0..len {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = bad;
                    assert!(needs_escape(&bytes), "{bad:#x} at {at} of {len}");
                }
            }
        }
        let clean = "gpu-node-00042.example/zone-ü\u{7f}ノ~ !#[]{}".as_bytes();
        assert!(!needs_escape(clean));
    }
}
