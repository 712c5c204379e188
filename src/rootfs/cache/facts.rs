//! What the key needs besides the plan: mmdebstrap's version, apt's keyring and the archive's state
//! (Release files fetched once per process, or the snapshot's time).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Mutex;

use super::key::sha256_hex;
use super::{
    ArchiveState, CacheError, Facts, KeyInputs, KeyringFile, MAX_KEYRING, MAX_RELEASE, io_err,
};
use crate::rootfs::mmdebstrap::BasePlan;

/// `mmdebstrap --version`, e.g. "mmdebstrap 1.3.5".
pub fn mmdebstrap_version() -> Result<String, CacheError> {
    let o = std::process::Command::new("mmdebstrap")
        .arg("--version")
        .env("LC_ALL", "C.UTF-8")
        .output()
        .map_err(|e| CacheError::Mmdebstrap {
            detail: e.to_string(),
        })?;
    let v = String::from_utf8_lossy(&o.stdout).trim().to_string();
    if !o.status.success() || v.is_empty() || v.len() > 200 {
        return Err(CacheError::Mmdebstrap {
            detail: format!("{} {}", o.status, String::from_utf8_lossy(&o.stderr).trim()),
        });
    }
    Ok(v)
}

/// apt's trusted keyring as mmdebstrap uses it: `Dir::Etc::Trusted` and every file of
/// `Dir::Etc::TrustedParts` (read through `apt-config`), and Debian's archive keyring, which mmdebstrap
/// names in the sources it writes when apt does not trust the suite's key. Names relative to their
/// directory, so only the content matters.
pub fn keyring() -> Result<Vec<KeyringFile>, CacheError> {
    let (trusted, parts) = apt_trusted_paths();
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    files.push(("trusted.gpg".into(), trusted));
    if let Ok(rd) = std::fs::read_dir(&parts) {
        let mut names: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".gpg") || n.ends_with(".asc"))
            .collect();
        names.sort();
        names.truncate(1000);
        for n in names {
            files.push((format!("trusted.gpg.d/{n}"), parts.join(&n)));
        }
    }
    files.push((
        "debian-archive-keyring.gpg".into(),
        PathBuf::from("/usr/share/keyrings/debian-archive-keyring.gpg"),
    ));
    let mut out = Vec::new();
    for (name, path) in files {
        let Ok(f) = File::open(&path) else { continue };
        let mut data = Vec::new();
        f.take(MAX_KEYRING)
            .read_to_end(&mut data)
            .map_err(io_err(format!("reading the keyring {}", path.display())))?;
        out.push(KeyringFile {
            name,
            sha256: sha256_hex(&data),
        });
    }
    Ok(out)
}

/// (Dir::Etc::Trusted, Dir::Etc::TrustedParts) from apt's configuration, or apt's defaults.
fn apt_trusted_paths() -> (PathBuf, PathBuf) {
    let defaults = (
        PathBuf::from("/etc/apt/trusted.gpg"),
        PathBuf::from("/etc/apt/trusted.gpg.d"),
    );
    let Ok(o) = std::process::Command::new("apt-config")
        .args([
            "shell",
            "T",
            "Dir::Etc::Trusted/f",
            "P",
            "Dir::Etc::TrustedParts/d",
        ])
        .output()
    else {
        return defaults;
    };
    let text = String::from_utf8_lossy(&o.stdout);
    let value = |var: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{var}=")))
            .map(|v| v.trim().trim_matches('\'').to_string())
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    (
        value("T").unwrap_or(defaults.0),
        value("P").unwrap_or(defaults.1),
    )
}

/// Release files fetched in this process: every board of a batch sees the archive as the first did.
static ARCHIVE_SEEN: Mutex<BTreeMap<String, ArchiveState>> = Mutex::new(BTreeMap::new());

/// A Release file through the one HTTP client (`crate::net`: system certificates, timeouts, resume,
/// no redirect from https to http); None on 404 or 410 (a 401 or 403 is an error here: a mirror that
/// wants credentials is no missing suite). Three attempts: a small file, and a mistyped mirror should
/// fail in a second, not after the image download's minutes of retries; Ctrl-C stops the waits.
fn get(url: &str) -> Result<Option<Vec<u8>>, CacheError> {
    let opts = crate::net::NetOptions {
        retries: 3,
        ..Default::default()
    };
    crate::net::Client::new(opts)
        .cancel_when(crate::signals::interrupted)
        .fetch_small(url, MAX_RELEASE, &[404, 410])
        .map_err(|e| {
            let detail = e.to_string();
            CacheError::Archive {
                detail: detail
                    .strip_prefix(&format!("{url}: "))
                    .unwrap_or(&detail)
                    .to_string(),
                url: url.to_string(),
            }
        })
}

/// A field of a Release file (in the signed part of an InRelease).
fn release_field(text: &str, field: &str) -> Option<String> {
    let prefix = format!("{field}:");
    text.lines()
        .take_while(|l| !l.starts_with("-----BEGIN PGP SIGNATURE"))
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().to_string())
}

/// Fetches the Release file of `suite` at `archive` (InRelease, else Release), as it is now.
pub fn fetch_release(archive: &str, suite: &str) -> Result<ArchiveState, CacheError> {
    let mut url = format!("{archive}/dists/{suite}/InRelease");
    let data = match get(&url)? {
        Some(d) => d,
        None => {
            url = format!("{archive}/dists/{suite}/Release");
            match get(&url)? {
                Some(d) => d,
                None => {
                    return Err(CacheError::Archive {
                        url,
                        detail: format!(
                            "neither InRelease nor Release exists (HTTP 404): is `{suite}` a suite of this archive?"
                        ),
                    });
                }
            }
        }
    };
    let text = String::from_utf8_lossy(&data);
    let date = release_field(&text, "Date").ok_or_else(|| CacheError::Release {
        url: url.clone(),
        message: "has no Date field: not a Debian archive's Release file (check the mirror URL)"
            .into(),
    })?;
    release_date(&date).ok_or_else(|| CacheError::Release {
        url: url.clone(),
        message: format!(
            "its Date `{date}` is not a UTC date like `Sat, 11 Jul 2026 10:16:37 UTC`"
        ),
    })?;
    Ok(ArchiveState {
        url,
        sha256: sha256_hex(&data),
        date,
        valid_until: release_field(&text, "Valid-Until"),
    })
}

/// A Release file's Date (RFC 2822 in UTC, as Debian's archive tools write it) as a Unix timestamp.
/// Hand-written: the crates that parse RFC 2822 reject the `UTC` zone name dak writes.
pub fn release_date(s: &str) -> Option<u64> {
    let s = s.trim();
    let s = s.split_once(',').map_or(s, |(_, rest)| rest).trim();
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [day, month, year, time, zone] = parts.as_slice() else {
        return None;
    };
    if !matches!(*zone, "UTC" | "GMT" | "UT" | "Z" | "+0000") {
        return None;
    }
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == month)? as u32
        + 1;
    let t: Vec<u32> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [hh, mm, ss] = t.as_slice() else {
        return None;
    };
    crate::time::from_civil(year.parse().ok()?, month, day.parse().ok()?, *hh, *mm, *ss)
}

/// A snapshot.debian.org timestamp (`20250101T000000Z`) as a Unix timestamp.
pub fn snapshot_time(ts: &str) -> Result<u64, CacheError> {
    let bad = || CacheError::Snapshot { given: ts.into() };
    let b = ts.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return Err(bad());
    }
    let digits = |r: std::ops::Range<usize>| -> Result<u32, CacheError> {
        let s = &ts[r];
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    crate::time::from_civil(
        i64::from(digits(0..4)?),
        digits(4..6)?,
        digits(6..8)?,
        digits(9..11)?,
        digits(11..13)?,
        digits(13..15)?,
    )
    .ok_or_else(bad)
}

/// The archive's state for `plan`: its Release files (fetched once per process), or the snapshot.
fn archive_state(plan: &BasePlan) -> Result<(Vec<ArchiveState>, u64), CacheError> {
    if let Some(ts) = &plan.snapshot {
        return Ok((Vec::new(), snapshot_time(ts)?));
    }
    let mut states = Vec::new();
    for (archive, suite) in plan.archives() {
        let id = format!("{archive} {suite}");
        let known = ARCHIVE_SEEN.lock().ok().and_then(|m| m.get(&id).cloned());
        let state = match known {
            Some(s) => s,
            None => {
                let s = fetch_release(&archive, &suite)?;
                if let Ok(mut m) = ARCHIVE_SEEN.lock() {
                    m.insert(id, s.clone());
                }
                s
            }
        };
        states.push(state);
    }
    let epoch = states
        .iter()
        .filter_map(|s| release_date(&s.date))
        .max()
        .unwrap_or(0);
    Ok((states, epoch))
}

/// Gathers the facts for `plan` (runs `mmdebstrap --version`, reads the keyring, fetches the Release
/// files unless the plan has a snapshot).
pub fn facts(plan: &BasePlan) -> Result<Facts, CacheError> {
    let (archive, epoch) = archive_state(plan)?;
    Ok(Facts {
        mmdebstrap: mmdebstrap_version()?,
        keyring: keyring()?,
        archive,
        epoch,
    })
}

/// After a build: the Release files the key names, fetched again. `None` when the archive is still in
/// the state the key describes; otherwise why what was built must not be stored under the key (a file
/// changed, or it could not be read again).
pub fn archive_moved(inputs: &KeyInputs, plan: &BasePlan) -> Option<String> {
    if plan.snapshot.is_some() {
        return None;
    }
    for ((archive, suite), seen) in plan.archives().iter().zip(&inputs.archive) {
        let now = match fetch_release(archive, suite) {
            Ok(now) => now,
            Err(e) => return Some(format!("the archive could not be read again ({e})")),
        };
        if now != *seen {
            return Some(format!(
                "{} changed while the base was built (Date {} then {})",
                now.url, seen.date, now.date
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_dates_and_snapshots() {
        assert_eq!(
            release_date("Sat, 11 Jul 2026 10:16:37 UTC"),
            crate::time::from_civil(2026, 7, 11, 10, 16, 37)
        );
        assert_eq!(
            release_date("11 Jul 2026 10:16:37 GMT"),
            release_date("Sat, 11 Jul 2026 10:16:37 UTC")
        );
        for bad in [
            "",
            "Sat, 11 Jul 2026 10:16:37 CEST",
            "Sat, 31 Feb 2026 10:16:37 UTC",
            "yesterday",
        ] {
            assert_eq!(release_date(bad), None, "{bad}");
        }
        assert_eq!(snapshot_time("20250101T000000Z").unwrap(), 1_735_689_600);
        for bad in [
            "2025-01-01",
            "20250101T000000",
            "20251301T000000Z",
            "2025010xT000000Z",
            "latest",
        ] {
            assert!(snapshot_time(bad).is_err(), "{bad}");
        }
        let text = "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nOrigin: Debian\nDate: Sat, 11 Jul 2026 10:16:37 UTC\nValid-Until: Sat, 18 Jul 2026 10:16:37 UTC\n-----BEGIN PGP SIGNATURE-----\nDate: x\n";
        assert_eq!(
            release_field(text, "Date").as_deref(),
            Some("Sat, 11 Jul 2026 10:16:37 UTC")
        );
        assert_eq!(
            release_field(text, "Valid-Until").as_deref(),
            Some("Sat, 18 Jul 2026 10:16:37 UTC")
        );
        assert_eq!(release_field(text, "Suite"), None);
    }
}
