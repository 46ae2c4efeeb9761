//! HTTP `Range: bytes=…` (RFC 9110 §14) against a blob's size. One range only: a
//! multi-range request is answered with the whole blob, which the RFC allows, and a
//! header that is not a bytes range is ignored the same way.

use std::ops::Range;

/// What to send for a request's `Range` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requested {
    /// The whole blob (no header, one we do not serve ranges for, or a malformed one).
    Full,
    /// These bytes, half-open, never empty, within the blob: 206.
    Partial(Range<u64>),
    /// A well-formed range that lies outside the blob: 416.
    Unsatisfiable,
}

/// Interprets a `Range` header value for a blob of `size` bytes.
pub fn parse(header: Option<&str>, size: u64) -> Requested {
    let Some(h) = header else {
        return Requested::Full;
    };
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return Requested::Full;
    };
    if spec.contains(',') {
        return Requested::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Requested::Full;
    };
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first.trim().is_empty(), last.trim().is_empty()) {
        // `bytes=-N`: the last N bytes.
        (true, false) => match num(last) {
            Some(0) => Requested::Unsatisfiable,
            Some(_) if size == 0 => Requested::Unsatisfiable,
            Some(n) => Requested::Partial(size.saturating_sub(n)..size),
            None => Requested::Full,
        },
        // `bytes=A-`: from A to the end.
        (false, true) => match num(first) {
            Some(a) if a < size => Requested::Partial(a..size),
            Some(_) => Requested::Unsatisfiable,
            None => Requested::Full,
        },
        // `bytes=A-B`, B inclusive and clamped to the end.
        (false, false) => match (num(first), num(last)) {
            (Some(a), Some(b)) if a > b => Requested::Full,
            (Some(a), Some(b)) if a < size => Requested::Partial(a..b.saturating_add(1).min(size)),
            (Some(_), Some(_)) => Requested::Unsatisfiable,
            _ => Requested::Full,
        },
        (true, true) => Requested::Full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn forms() {
        assert_eq!(parse(None, 10), Requested::Full);
        assert_eq!(parse(Some("bytes=0-3"), 10), Requested::Partial(0..4));
        assert_eq!(parse(Some("bytes=5-"), 10), Requested::Partial(5..10));
        assert_eq!(parse(Some("bytes=-3"), 10), Requested::Partial(7..10));
        assert_eq!(parse(Some("bytes=-30"), 10), Requested::Partial(0..10));
        assert_eq!(parse(Some("bytes=8-100"), 10), Requested::Partial(8..10));
        assert_eq!(parse(Some("bytes=10-"), 10), Requested::Unsatisfiable);
        assert_eq!(parse(Some("bytes=10-20"), 10), Requested::Unsatisfiable);
        assert_eq!(parse(Some("bytes=-0"), 10), Requested::Unsatisfiable);
        assert_eq!(parse(Some("bytes=0-"), 0), Requested::Unsatisfiable);
        assert_eq!(parse(Some("bytes=5-2"), 10), Requested::Full);
        assert_eq!(parse(Some("bytes=0-1,4-5"), 10), Requested::Full);
        assert_eq!(parse(Some("items=0-1"), 10), Requested::Full);
        assert_eq!(parse(Some("bytes=x-1"), 10), Requested::Full);
        assert_eq!(parse(Some("bytes=-"), 10), Requested::Full);
    }

    proptest! {
        #[test]
        fn a_partial_range_is_never_empty_and_lies_within(h in "\\PC{0,24}", size in 0u64..100) {
            for header in [h.clone(), format!("bytes={h}")] {
                if let Requested::Partial(r) = parse(Some(&header), size) {
                    prop_assert!(r.start < r.end && r.end <= size, "{header:?} {r:?}");
                }
            }
        }
    }
}
