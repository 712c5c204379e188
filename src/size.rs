//! Byte sizes as people write them: `512`, `8KiB`, `64M`, `1.5GiB`, `2GB`.
//! Binary suffixes (K, KiB, M, MiB, …) are powers of 1024; KB, MB, GB, TB are powers of 1000.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid size {input:?}: {reason}; write a whole number of bytes or a number with a unit such as 8KiB, 64MiB, 2GiB (or 2GB for decimal)"
)]
pub struct SizeError {
    pub input: String,
    pub reason: &'static str,
}

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;
pub const GIB: u64 = 1024 * MIB;

/// Parses a size string into bytes.
pub fn parse_size(input: &str) -> Result<u64, SizeError> {
    let err = |reason| SizeError {
        input: input.to_string(),
        reason,
    };
    let s = input.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: String = num.chars().filter(|&c| c != '_').collect();
    if num.is_empty() {
        return Err(err("it does not start with a number"));
    }
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" | "k" => KIB,
        "M" | "MiB" => MIB,
        "G" | "GiB" => GIB,
        "T" | "TiB" => 1024 * GIB,
        "KB" | "kB" => 1000,
        "MB" => 1000 * 1000,
        "GB" => 1000 * 1000 * 1000,
        "TB" => 1000 * 1000 * 1000 * 1000,
        "s" | "S" => 512,
        _ => return Err(err("unknown unit")),
    };
    let (int_part, frac_part) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num.as_str(), ""),
    };
    if frac_part.contains('.') || (int_part.is_empty() && frac_part.is_empty()) {
        return Err(err("it is not a number"));
    }
    let int: u64 = if int_part.is_empty() {
        0
    } else {
        int_part
            .parse()
            .map_err(|_| err("the number is too large"))?
    };
    let mut total = int
        .checked_mul(mult)
        .ok_or_else(|| err("the size is too large"))?;
    if !frac_part.is_empty() {
        // Fractions must come out as whole bytes: 1.5GiB is fine, 1.3B is not.
        let digits = u32::try_from(frac_part.len()).map_err(|_| err("too many decimals"))?;
        if digits > 12 {
            return Err(err("too many decimals"));
        }
        let frac: u128 = frac_part.parse().map_err(|_| err("it is not a number"))?;
        let scale = 10u128.pow(digits);
        let bytes = frac * mult as u128;
        if !bytes.is_multiple_of(scale) {
            return Err(err("the fraction is not a whole number of bytes"));
        }
        let extra = u64::try_from(bytes / scale).map_err(|_| err("the size is too large"))?;
        total = total
            .checked_add(extra)
            .ok_or_else(|| err("the size is too large"))?;
    }
    Ok(total)
}

/// Human-readable size, exact when the value is a whole number of the largest fitting binary unit.
pub struct Human(pub u64);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        for (unit, name) in [
            (GIB * 1024, "TiB"),
            (GIB, "GiB"),
            (MIB, "MiB"),
            (KIB, "KiB"),
        ] {
            if v >= unit {
                return if v.is_multiple_of(unit) {
                    write!(f, "{} {}", v / unit, name)
                } else {
                    write!(f, "{:.1} {}", v as f64 / unit as f64, name)
                };
            }
        }
        write!(f, "{v} B")
    }
}

pub fn align_up(value: u64, align: u64) -> Option<u64> {
    if align <= 1 {
        return Some(value);
    }
    value.div_ceil(align).checked_mul(align)
}

pub fn align_down(value: u64, align: u64) -> u64 {
    if align <= 1 {
        value
    } else {
        value / align * align
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("8KiB").unwrap(), 8192);
        assert_eq!(parse_size("8K").unwrap(), 8192);
        assert_eq!(parse_size("64MiB").unwrap(), 64 * MIB);
        assert_eq!(parse_size("1.5GiB").unwrap(), 3 * GIB / 2);
        assert_eq!(parse_size("2GB").unwrap(), 2_000_000_000);
        assert_eq!(parse_size("2048s").unwrap(), MIB);
        assert_eq!(parse_size("1_024").unwrap(), 1024);
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "MiB",
            "12 parsecs",
            "1.2.3M",
            "1.3",
            "99999999999999999999",
            "-1M",
            ".",
        ] {
            assert!(parse_size(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn human_is_exact_for_round_values() {
        assert_eq!(Human(8192).to_string(), "8 KiB");
        assert_eq!(Human(3 * GIB / 2).to_string(), "1.5 GiB");
        assert_eq!(Human(100).to_string(), "100 B");
    }

    proptest! {
        #[test]
        fn roundtrips_whole_units(n in 0u64..1_000_000, unit in 0usize..4) {
            let (suffix, mult) = [("", 1), ("KiB", KIB), ("MiB", MIB), ("GiB", GIB)][unit];
            prop_assert_eq!(parse_size(&format!("{n}{suffix}")).unwrap(), n * mult);
        }

        #[test]
        fn never_panics(s in ".{0,24}") {
            let _ = parse_size(&s);
        }

        #[test]
        fn align_up_is_aligned_and_minimal(v in 0u64..1u64 << 50, a in 1u64..1u64 << 24) {
            let r = align_up(v, a).unwrap();
            prop_assert!(r.is_multiple_of(a) && r >= v && r - v < a);
        }
    }
}
