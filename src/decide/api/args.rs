//! Argument checks and conversions shared by the host functions: target
//! maps, non-negative integers, string maps, PostgreSQL memory sizes.
//!
//! Pure conversions; errors are script errors with the argument named.

use std::collections::BTreeMap;

use rhai::{EvalAltResult, Map};

use crate::detect::ComponentId;

pub type Fallible<T> = Result<T, Box<EvalAltResult>>;

pub fn text(map: &Map, key: &str) -> Option<String> {
    map.get(key).and_then(|v| v.clone().into_string().ok())
}

/// A target map `#{kind, namespace, name}` (the context's `component` is one).
pub fn target(map: &Map) -> Fallible<ComponentId> {
    let field = |k: &str| {
        text(map, k)
            .filter(|s| !s.is_empty() || k == "namespace")
            .ok_or_else(|| -> Box<EvalAltResult> {
                format!("target needs a string `{k}` (got #{{kind, namespace, name}} = {map:?})")
                    .into()
            })
    };
    Ok(ComponentId {
        kind: field("kind")?,
        namespace: field("namespace")?,
        name: field("name")?,
    })
}

pub fn positive(what: &str, v: i64) -> Fallible<i64> {
    if v < 0 {
        return Err(format!("{what} must not be negative, got {v}").into());
    }
    Ok(v)
}

pub fn string_map(map: &Map, what: &str) -> Fallible<BTreeMap<String, String>> {
    map.iter()
        .map(|(k, v)| {
            let s = if v.is_string() {
                v.clone().into_string().unwrap_or_default()
            } else if v.is_int() || v.is_float() || v.is_bool() {
                v.to_string()
            } else {
                return Err(format!("{what}: value of `{k}` must be a string or number").into());
            };
            Ok((k.to_string(), s))
        })
        .collect()
}

/// Parses a PostgreSQL memory setting (`4MB`, `512kB`, `1GB`, plain number =
/// bytes) into bytes.
pub fn parse_pg_bytes(s: &str) -> Option<i64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: i64 = digits.parse().ok()?;
    let mult: i64 = match unit.trim() {
        "" | "B" => 1,
        "kB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        "TB" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Formats bytes in the largest PostgreSQL unit that divides them exactly.
pub fn format_pg_bytes(bytes: i64) -> String {
    for (unit, size) in [
        ("TB", 1i64 << 40),
        ("GB", 1 << 30),
        ("MB", 1 << 20),
        ("kB", 1 << 10),
    ] {
        if bytes != 0 && bytes % size == 0 {
            return format!("{}{unit}", bytes / size);
        }
    }
    format!("{bytes}B")
}
