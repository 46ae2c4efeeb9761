//! `*` and `?` wildcard matching over bytes, shared by `prove --filter` (where `*` crosses
//! `/`) and the agent's `upload` globs (which split on `/` first and match one segment).
//! Iterative with one backtrack point, so it is linear in practice and cannot recurse
//! deeply on hostile patterns.

/// Whether `s` matches pattern `p` (`*`: any run of bytes, `?`: any one byte).
pub fn matches(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn stars_and_questions() {
        assert!(matches(b"*_test.sh", b"dns_test.sh"));
        assert!(matches(b"a?c", b"abc"));
        assert!(!matches(b"a?c", b"ac"));
        assert!(matches(b"*", b""));
        assert!(matches(b"**x*", b"aaxbb"));
        assert!(!matches(b"*x", b"aaxb"));
    }
}
