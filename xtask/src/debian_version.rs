//! Debian package version ordering (`[epoch:]upstream[-revision]`, with `~` sorting before
//! everything), so that "the newest kernel of a series" means what apt means by it.
//!
//! Written here rather than taken from the `debversion` crate: that crate brings regex, chrono
//! and num-bigint for what is dpkg's short comparison algorithm.

use std::cmp::Ordering;

/// Compare two Debian versions as `dpkg --compare-versions` does.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (a_epoch, a_upstream, a_revision) = split(a);
    let (b_epoch, b_upstream, b_revision) = split(b);
    a_epoch
        .cmp(&b_epoch)
        .then_with(|| compare_part(a_upstream, b_upstream))
        .then_with(|| compare_part(a_revision, b_revision))
}

fn split(version: &str) -> (u64, &str, &str) {
    let (epoch, rest) = match version.split_once(':') {
        Some((epoch, rest)) if epoch.bytes().all(|b| b.is_ascii_digit()) => {
            (epoch.parse().unwrap_or(0), rest)
        }
        _ => (0, version),
    };
    match rest.rsplit_once('-') {
        Some((upstream, revision)) => (epoch, upstream, revision),
        None => (epoch, rest, ""),
    }
}

/// Weight of a character in the non-digit runs: `~` first, then the end of the run, then
/// letters, then everything else.
fn weight(c: Option<u8>) -> i32 {
    match c {
        Some(b'~') => -1,
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => c as i32,
        Some(c) => c as i32 + 256,
    }
}

/// Alternating runs of non-digits (compared by [`weight`]) and digits (compared as numbers).
fn compare_part(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    while !a.is_empty() || !b.is_empty() {
        while a.first().is_some_and(|c| !c.is_ascii_digit())
            || b.first().is_some_and(|c| !c.is_ascii_digit())
        {
            let (wa, wb) = (weight(a.first().copied()), weight(b.first().copied()));
            if wa != wb {
                return wa.cmp(&wb);
            }
            a = &a[1..];
            b = &b[1..];
        }
        let digits = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
        let (na, nb) = (digits(a), digits(b));
        let number = |s: &[u8]| {
            let s = std::str::from_utf8(s)
                .unwrap_or("0")
                .trim_start_matches('0');
            (s.len(), s.to_string())
        };
        // Compare by length of the significant digits, then lexically: no overflow on long runs.
        let ordering = number(&a[..na]).cmp(&number(&b[..nb]));
        if ordering != Ordering::Equal {
            return ordering;
        }
        a = &a[na..];
        b = &b[nb..];
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    #[test]
    fn orders_as_dpkg_does() {
        let cases = [
            ("6.1.192-2", "6.1.176-1", Greater),
            ("6.1.10-1", "6.1.9-1", Greater),
            ("6.12.95-1~bpo12+1", "6.12.95-1", Less),
            ("6.12.95-1~bpo12+1", "6.12.94-3", Greater),
            ("1.0~rc1", "1.0", Less),
            ("1:1.0", "2.0", Greater),
            ("1.0-1", "1.0-1", Equal),
            ("1.0a", "1.0+", Less),
            ("1.0", "1.0-0", Equal),
            ("1.001", "1.1", Equal),
            ("10.0.2+ds-2+deb13u1~bpo12+1", "7.2+dfsg-7+deb12u7", Greater),
        ];
        for (a, b, expected) in cases {
            assert_eq!(compare(a, b), expected, "{a} vs {b}");
            assert_eq!(compare(b, a), expected.reverse(), "{b} vs {a}");
        }
    }
}
