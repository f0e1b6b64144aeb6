//! The checks every spec field goes through: each failure names the file,
//! the field and what was expected. Numbers are range-checked, and floats
//! must be finite first: YAML's `.nan` and `.inf` are numbers to serde, and
//! NaN slips through any range written as `v < lo || v > hi`.
//!
//! Pure; must not know which fields a spec has (that is `spec`).

use crate::detect::Error;
use crate::detect::detectors::Direction;

pub(super) struct Check<'a> {
    pub(super) file: &'a str,
    /// What the spec should change but still works (deprecated spellings).
    pub(super) warnings: std::cell::RefCell<Vec<String>>,
}

impl Check<'_> {
    /// Records a warning about `field`, named like errors are.
    pub(super) fn warn(&self, field: &str, message: impl std::fmt::Display) {
        self.warnings.borrow_mut().push(format!(
            "model spec {}: field `{field}` {message}",
            self.file
        ));
    }

    pub(super) fn fail(&self, field: impl Into<String>, expected: impl Into<String>) -> Error {
        Error::ValidateSpec {
            file: self.file.to_string(),
            field: field.into(),
            expected: expected.into(),
        }
    }

    /// A side as specs write it: `above` or `below`.
    pub(super) fn direction(&self, field: String, text: &str) -> Result<Direction, Error> {
        match text {
            "above" => Ok(Direction::Above),
            "below" => Ok(Direction::Below),
            other => Err(self.fail(
                field,
                format!("must be \"above\" or \"below\" (got {other:?})"),
            )),
        }
    }

    pub(super) fn non_empty(&self, field: &str, v: &str) -> Result<(), Error> {
        if v.trim().is_empty() {
            return Err(self.fail(field, "must not be empty"));
        }
        Ok(())
    }

    /// A duration as specs write it (`30m`, `1h30m`, or seconds; see
    /// [`super::parse_duration`]), in seconds, within `[lo, hi]`; `what`
    /// says the range in words. With [`Seconds::Whole`] a fraction of a
    /// second is refused too, and the error says so: `90.5s` is within the
    /// range in words. A failure shows the text as written.
    pub(super) fn duration(
        &self,
        field: &str,
        text: &str,
        lo: f64,
        hi: f64,
        what: &str,
        seconds: Seconds,
    ) -> Result<f64, Error> {
        let v = match super::parse_duration(text) {
            Some(v) if lo <= v && v <= hi => v,
            _ => return Err(self.fail(field, format!("must be {what} (got {text:?})"))),
        };
        if seconds == Seconds::Whole && v.fract() != 0.0 {
            let expected = format!("must be {what}, in whole seconds (got {text:?})");
            return Err(self.fail(field, expected));
        }
        Ok(v)
    }

    /// `v` (or `default` when the spec leaves it out) within `[lo, hi]`;
    /// `what` says the range in words for the error.
    pub(super) fn range<T: SpecNumber>(
        &self,
        field: &str,
        v: Option<T>,
        default: T,
        lo: T,
        hi: T,
        what: &str,
    ) -> Result<T, Error> {
        let v = v.unwrap_or(default);
        if !v.finite() {
            return Err(self.not_finite(field, what, v));
        }
        // Written so that an incomparable value fails too: `v < lo || v >
        // hi` lets NaN through.
        if !(lo <= v && v <= hi) {
            return Err(self.fail(field, format!("must be {what} (got {v})")));
        }
        Ok(v)
    }

    /// The error for a NaN or ±inf (YAML `.nan`, `.inf`, `-.inf`) where
    /// `what` was expected.
    pub(super) fn not_finite(&self, field: &str, what: &str, v: impl SpecNumber) -> Error {
        self.fail(
            field,
            format!(
                "must be {what} (got {}, which is not a finite number)",
                v.yaml()
            ),
        )
    }
}

/// Whether a duration may have a fraction of a second: a field kept as a
/// whole number of seconds (`window_seconds` is a `u32`) refuses `90.5s`
/// rather than silently rounding it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Seconds {
    /// Any number of seconds in range (a half-life, a minimum history).
    Any,
    /// A whole number of seconds.
    Whole,
}

/// A number a spec accepts. Floats can be NaN or infinite, which no range
/// check catches by comparison alone, so each type says whether a value is
/// finite; there is deliberately no default, so a new float type cannot skip
/// the check.
pub(super) trait SpecNumber: PartialOrd + Copy + std::fmt::Display {
    fn finite(self) -> bool;
    /// The value as YAML spells it (`.nan`, `.inf`), so the error matches
    /// what the user wrote.
    fn yaml(self) -> String {
        self.to_string()
    }
}

impl SpecNumber for f64 {
    fn finite(self) -> bool {
        self.is_finite()
    }
    fn yaml(self) -> String {
        if self.is_nan() {
            ".nan".into()
        } else if self == f64::INFINITY {
            ".inf".into()
        } else if self == f64::NEG_INFINITY {
            "-.inf".into()
        } else {
            self.to_string()
        }
    }
}

impl SpecNumber for i64 {
    fn finite(self) -> bool {
        true
    }
}

impl SpecNumber for u32 {
    fn finite(self) -> bool {
        true
    }
}

impl SpecNumber for usize {
    fn finite(self) -> bool {
        true
    }
}
