//! Detector parameters set by name: `detect eval --detector
//! cad:max_active=3` and the search's candidates go through
//! [`DetectorParams::with`], which checks the names and values against
//! the parameters' own serde form, so a new parameter needs no code here.
//!
//! Kept apart from `params.rs`, which is the table of kinds and defaults.
//! Must not parse command lines (that is `cli::detect`) nor range-check
//! values (that is `spec`).

use super::DetectorParams;

impl DetectorParams {
    /// These parameters with some of them set by name (`max_active` to
    /// 3), as `detect eval`'s `--detector cad:max_active=3` asks. A name
    /// these parameters do not have, or a value of the wrong type, is an
    /// error that says which and what was expected.
    pub fn with(&self, set: &[(String, serde_json::Value)]) -> Result<DetectorParams, String> {
        let object = |p: &DetectorParams| match serde_json::to_value(p) {
            Ok(serde_json::Value::Object(fields)) => Ok(fields),
            _ => Err(format!("{} has no named parameters", p.name())),
        };
        let mut fields = object(self)?;
        let known = fields.clone();
        let unknown = |key: &str, back: &serde_json::Map<String, serde_json::Value>| {
            let names: Vec<&str> = (known.keys().chain(back.keys()))
                .map(String::as_str)
                .filter(|k| *k != "detector")
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            format!(
                "{} has no parameter {key:?}; its parameters are {}",
                self.name(),
                names.join(", ")
            )
        };
        for (key, value) in set {
            if key == "detector" {
                return Err(unknown(key, &known));
            }
            fields.insert(key.clone(), value.clone());
        }
        let p: DetectorParams = serde_json::from_value(serde_json::Value::Object(fields))
            .map_err(|e| format!("{} with {}: {e}", self.name(), show(set)))?;
        // A name the parameters do not have is dropped on the way in (an
        // optional one left unset is not printed): it must come back out.
        let back = object(&p)?;
        match set.iter().find(|(key, _)| !back.contains_key(key)) {
            Some((key, _)) => Err(unknown(key, &back)),
            None => Ok(p),
        }
    }
}

/// The pairs as `KEY=VALUE,…`, the way they are written after
/// `--detector NAME:`, so an error quotes what the user typed.
fn show(set: &[(String, serde_json::Value)]) -> String {
    let pairs: Vec<String> = set.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join(",")
}

#[cfg(test)]
mod tests {
    use super::super::{CadParams, DetectorParams};

    #[test]
    fn parameters_set_by_name_change_only_those_and_bad_ones_are_named() {
        let cad = DetectorParams::default_for("cad").expect("cad has defaults");
        let set = |k: &str, v: serde_json::Value| vec![(k.to_string(), v)];
        let DetectorParams::Cad(p) = cad.with(&set("max_active", 3.into())).expect("valid") else {
            panic!("not cad");
        };
        let DetectorParams::Cad(d) = cad.clone() else {
            panic!("not cad");
        };
        assert_eq!(p, CadParams { max_active: 3, ..d });
        let typo = cad
            .with(&set("max_activ", 3.into()))
            .expect_err("a typo is refused");
        assert!(
            typo.contains("no parameter \"max_activ\"") && typo.contains("max_active"),
            "{typo}"
        );
        let wrong = cad
            .with(&set("max_active", "many".into()))
            .expect_err("text for a number is refused");
        assert!(wrong.contains("max_active=\"many\""), "{wrong}");
        let tag = cad
            .with(&set("detector", "ewma".into()))
            .expect_err("the tag is not a parameter");
        assert!(tag.contains("no parameter \"detector\""), "{tag}");
        // Every kind with defaults round-trips through its named form.
        for name in DetectorParams::DEFAULT_NAMES {
            let p = DetectorParams::default_for(name).expect("defaults");
            assert_eq!(p.with(&[]).as_ref(), Ok(&p), "{name}");
        }
    }
}
