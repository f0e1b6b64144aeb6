//! JSON merge patches (RFC 7386): applying one, the patch that undoes one,
//! and whether one is already applied. The executor checks after a restart
//! whether a journaled change was sent; the planners build inverses.
//!
//! Pure functions on `serde_json::Value`; nothing here knows about actions.

use serde_json::Value;

/// The merge patch that restores `current` where `patch` would change it:
/// keys `patch` sets that `current` lacks become `null`.
pub fn inverse_merge(patch: &Value, current: &Value) -> Value {
    match patch {
        Value::Object(p) => {
            let mut out = serde_json::Map::new();
            for (k, v) in p {
                let cur = current.get(k).unwrap_or(&Value::Null);
                let inv = if v.is_object() && cur.is_object() {
                    inverse_merge(v, cur)
                } else {
                    cur.clone()
                };
                out.insert(k.clone(), inv);
            }
            Value::Object(out)
        }
        _ => current.clone(),
    }
}

/// Applies a JSON merge patch (RFC 7386) to `target` — used to check what a
/// patch would leave behind and, after a restart, whether it was applied.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// Whether every field `patch` sets already has that value in `object`
/// (`null` meaning absent).
pub fn patch_is_applied(patch: &Value, object: &Value) -> bool {
    match patch {
        Value::Object(p) => p.iter().all(|(k, v)| {
            let cur = object.get(k).unwrap_or(&Value::Null);
            if v.is_object() {
                patch_is_applied(v, cur)
            } else {
                cur == v
            }
        }),
        other => other == object,
    }
}
