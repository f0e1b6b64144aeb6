//! A line diff (pure): the inverse of an action (the object as it was)
//! against its patch (what the action sets), for the action page.

/// One line of a diff.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line<'a> {
    Same(&'a str),
    /// Only in the old text (the inverse).
    Removed(&'a str),
    /// Only in the new text (the patch).
    Added(&'a str),
}

/// The lines of `old` and `new`, aligned on their longest common
/// subsequence. Quadratic in the line counts, which is fine for patches of
/// a few dozen lines; past `MAX_LINES` on either side everything old is
/// shown removed and everything new added.
pub fn lines<'a>(old: &'a str, new: &'a str) -> Vec<Line<'a>> {
    const MAX_LINES: usize = 2000;
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    if a.len() > MAX_LINES || b.len() > MAX_LINES {
        return a
            .iter()
            .map(|l| Line::Removed(l))
            .chain(b.iter().map(|l| Line::Added(l)))
            .collect();
    }
    // lcs[i][j]: length of the LCS of a[i..] and b[j..].
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(a.len() + b.len());
    while i < a.len() && j < b.len() {
        if a[i] == b[j] {
            out.push(Line::Same(a[i]));
            i += 1;
            j += 1;
        } else if lcs[i + 1][j] >= lcs[i][j + 1] {
            out.push(Line::Removed(a[i]));
            i += 1;
        } else {
            out.push(Line::Added(b[j]));
            j += 1;
        }
    }
    out.extend(a[i..].iter().map(|l| Line::Removed(l)));
    out.extend(b[j..].iter().map(|l| Line::Added(l)));
    out
}

#[cfg(test)]
mod tests {
    use super::{Line::*, lines};

    #[test]
    fn a_changed_line_is_removed_then_added_between_common_lines() {
        let old = "{\n  \"replicas\": 2,\n  \"x\": 1\n}";
        let new = "{\n  \"replicas\": 4,\n  \"x\": 1\n}";
        assert_eq!(
            lines(old, new),
            vec![
                Same("{"),
                Removed("  \"replicas\": 2,"),
                Added("  \"replicas\": 4,"),
                Same("  \"x\": 1"),
                Same("}"),
            ]
        );
    }

    #[test]
    fn empty_sides() {
        assert_eq!(lines("", "a"), vec![Added("a")]);
        assert_eq!(lines("a", ""), vec![Removed("a")]);
        assert!(lines("", "").is_empty());
    }
}
