//! `Content-Range`, as a server answers a request for the rest of a file: pure, so that builds without
//! the HTTP client (the fuzz crate) still parse it.

/// `bytes FIRST-LAST/TOTAL` or `bytes FIRST-LAST/*` → (first, last, total), with first <= last < total.
pub fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (first, last) = span.split_once('-')?;
    let (first, last) = (first.trim().parse().ok()?, last.trim().parse().ok()?);
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse::<u64>().ok()?),
    };
    if last < first || total.is_some_and(|t| last >= t) {
        return None;
    }
    Some((first, last, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(
            parse_content_range("bytes 10-19/100"),
            Some((10, 19, Some(100)))
        );
        assert_eq!(parse_content_range("bytes 0-0/*"), Some((0, 0, None)));
        assert_eq!(parse_content_range("bytes 10-9/100"), None);
        assert_eq!(parse_content_range("bytes 10-100/100"), None);
        assert_eq!(parse_content_range("bytes */100"), None);
        assert_eq!(parse_content_range("items 1-2/3"), None);
        assert_eq!(parse_content_range("bytes 1-x/3"), None);
    }

    proptest::proptest! {
        #[test]
        fn content_range_is_consistent_or_none(s in ".{0,40}", a in 0u64..u64::MAX, b in 0u64..u64::MAX, t in 0u64..u64::MAX) {
            if let Some((first, last, total)) = parse_content_range(&s) {
                proptest::prop_assert!(first <= last && total.is_none_or(|t| last < t));
            }
            let v = format!("bytes {a}-{b}/{t}");
            match parse_content_range(&v) {
                Some(r) => proptest::prop_assert_eq!(r, (a, b, Some(t))),
                None => proptest::prop_assert!(b < a || b >= t),
            }
        }
    }
}
