//! Calendar dates from Unix timestamps (UTC) and back, for FAT timestamps, release notes and archive dates.

/// (year, month, day, hour, minute, second) in UTC.
pub fn civil(ts: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (ts / 86400) as i64;
    let secs = ts % 86400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (secs / 3600) as u32,
        ((secs / 60) % 60) as u32,
        (secs % 60) as u32,
    )
}

/// The Unix timestamp of a UTC date and time; None before 1970 or for an impossible date.
pub fn from_civil(y: i64, m: u32, d: u32, hh: u32, mm: u32, ss: u32) -> Option<u64> {
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&m)
        || d == 0
        || d > month_days[(m - 1) as usize]
        || hh > 23
        || mm > 59
        || ss > 60
    {
        return None;
    }
    // Howard Hinnant's days-from-civil algorithm (the inverse of `civil`).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let ts = days * 86_400 + i64::from(hh) * 3600 + i64::from(mm) * 60 + i64::from(ss);
    u64::try_from(ts).ok()
}

/// `2023-11-14 22:13:20 UTC`
pub fn utc(ts: u64) -> String {
    let (y, m, d, hh, mm, ss) = civil(ts);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02} UTC")
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::utc(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(super::utc(951_782_400), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn from_civil_inverts_civil() {
        for ts in [
            0u64,
            951_782_400,
            1_700_000_000,
            1_783_765_031,
            4_102_444_799,
        ] {
            let (y, m, d, hh, mm, ss) = super::civil(ts);
            assert_eq!(super::from_civil(y, m, d, hh, mm, ss), Some(ts));
        }
        assert_eq!(super::from_civil(2023, 2, 29, 0, 0, 0), None);
        assert_eq!(super::from_civil(2024, 13, 1, 0, 0, 0), None);
        assert_eq!(super::from_civil(1969, 12, 31, 0, 0, 0), None);
    }
}
