//! Release notes (Markdown) and the kernel-option report they contain: every option of the board's kernel
//! config fragments, the device it enables (the fragment's comment above it), and whether the image's
//! kernel (its /boot/config-*) really has it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::ReleaseManifest;
use crate::profile::Profile;
use crate::size::Human;

#[derive(Debug, Clone, Serialize)]
pub struct OptionReport {
    pub symbol: String,
    pub requested: String,
    pub description: Option<String>,
    /// `y`, `m`, `not set`, or None when the image carries no kernel config.
    pub in_image: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FragmentReport {
    pub name: String,
    pub found: bool,
    pub options: Vec<OptionReport>,
}

fn kernel_config_values(config: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for line in config.lines() {
        if let Some((k, v)) = line.split_once('=') {
            m.insert(k.to_string(), v.to_string());
        } else if let Some(sym) = line
            .strip_prefix("# ")
            .and_then(|r| r.strip_suffix(" is not set"))
        {
            m.insert(sym.to_string(), "n".to_string());
        }
    }
    m
}

pub fn fragment_reports(
    profile: &Profile,
    features: &[String],
    config: Option<&str>,
) -> Vec<FragmentReport> {
    use crate::kconfig::locate;
    let values = config.map(kernel_config_values);
    let wanted = crate::rootfs::features::kernel_fragments_wanted(features);
    let extra = locate::extra_fragments(profile, &wanted);
    locate::refs_for(profile, &extra)
        .iter()
        .map(|r| match locate::load(r) {
            Err(_) => FragmentReport {
                name: r.name.clone(),
                found: false,
                options: Vec::new(),
            },
            Ok(fragment) => FragmentReport {
                name: r.name.clone(),
                found: true,
                options: fragment
                    .entries
                    .into_iter()
                    .map(|e| {
                        let symbol = format!("CONFIG_{}", e.symbol);
                        OptionReport {
                            in_image: values.as_ref().map(|v| {
                                match v.get(&symbol).map(String::as_str) {
                                    None | Some("n") => "not set".to_string(),
                                    Some(x) => x.to_string(),
                                }
                            }),
                            requested: e.value.config_text(),
                            description: e.description,
                            symbol,
                        }
                    })
                    .collect(),
            },
        })
        .collect()
}

/// `value` (read from the image, so untrusted) as inert Markdown text: every ASCII punctuation
/// character backslash-escaped (CommonMark), so no value can open a heading, a table cell, a code
/// span, a link, emphasis or raw HTML (`\<img` is a literal `<img`). It must not go inside a code span,
/// where backslashes are literal: the notes put every such value in plain text. Control characters
/// were refused when the image was read (`inspect::check`); any left become U+FFFD.
pub fn inert(value: &str) -> String {
    let mut s = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
            s.push('\u{FFFD}');
            continue;
        }
        if c.is_ascii_punctuation() {
            s.push('\\');
        }
        s.push(c);
    }
    s
}

/// The release notes of `m`, one section after another.
pub fn markdown(profile: &Profile, m: &ReleaseManifest) -> String {
    let mut s = String::new();
    heading(&mut s, m);
    downloads(&mut s, m);
    install(&mut s, profile, m);
    console_and_login(&mut s, profile, m);
    what_is_inside(&mut s, profile, m);
    kernel_options(&mut s, m);
    changelog(&mut s, m);
    known_issues(&mut s, m);
    s
}

/// The title, and what the image was built from, so anyone can rebuild it byte for byte.
fn heading(s: &mut String, m: &ReleaseManifest) {
    let title = if m.description.is_empty() {
        m.board.clone()
    } else {
        m.description.clone()
    };
    let _ = writeln!(s, "# {title}: boardsmith image `{}`\n", m.board);
    let _ = writeln!(
        s,
        "Built from {} with SOURCE_DATE_EPOCH={} ({}); the same inputs rebuild these files byte for byte.\n",
        m.profile_files
            .iter()
            .map(|f| format!("`{f}`"))
            .collect::<Vec<_>>()
            .join(" ← "),
        m.source_date_epoch,
        crate::time::utc(m.source_date_epoch)
    );
}

/// Every artefact with its digests, and the uncompressed image's, to check a download against.
fn downloads(s: &mut String, m: &ReleaseManifest) {
    s.push_str("## Downloads\n\n| file | size | SHA-256 | MD5 |\n|---|---:|---|---|\n");
    for a in &m.artefacts {
        let _ = writeln!(
            s,
            "| `{}` | {} ({} bytes) | `{}` | `{}` |",
            a.name,
            Human(a.digest.size),
            a.digest.size,
            a.digest.sha256,
            a.digest.md5
        );
    }
    let _ = writeln!(
        s,
        "\nUncompressed image `{}`: {} bytes, SHA-256 `{}`, MD5 `{}`.\nCheck the downloads with `sha256sum -c SHA256SUMS` or `md5sum -c MD5SUMS`.\n",
        m.image.name, m.image.digest.size, m.image.digest.sha256, m.image.digest.md5
    );
}

/// How to write the first downloadable artefact to a card, with boardsmith and with bmaptool.
fn install(s: &mut String, profile: &Profile, m: &ReleaseManifest) {
    s.push_str("## Install\n\n");
    let first = m
        .artefacts
        .iter()
        .find(|a| a.kind != "bmap")
        .map_or(m.image.name.clone(), |a| a.name.clone());
    let bmap = format!("{}.bmap", m.image.name);
    if profile.name.starts_with("chromebook") {
        s.push_str("Write the image to an SD card or USB stick (replace `/dev/sdX` with your card; everything on it is lost),\ngrowing the root filesystem to the card's size and verifying what was written:\n\n");
    } else {
        s.push_str("Write the image to an SD card (replace `/dev/sdX` with your card; everything on it is lost), growing the\nroot filesystem to the card's size and verifying what was written:\n\n");
    }
    let _ = writeln!(
        s,
        "    boardsmith write {first} /dev/sdX --bmap {bmap} --grow\n"
    );
    let _ = writeln!(
        s,
        "With bmaptool instead: `bmaptool copy --bmap {bmap} {first} /dev/sdX` (no growing).\n"
    );
}

/// The serial console (device and speed, 115200 when the profile names none), the profile's console
/// notes, and the user and hostname the image was built with.
fn console_and_login(s: &mut String, profile: &Profile, m: &ReleaseManifest) {
    s.push_str("## Console and login\n\n");
    let (dev, speed) = profile
        .console
        .split_once(',')
        .unwrap_or((profile.console.as_str(), "115200"));
    let speed: String = speed.chars().take_while(|c| c.is_ascii_digit()).collect();
    let _ = writeln!(
        s,
        "The kernel console is `{dev}` at {speed} baud (8N1), e.g. `picocom -b {speed} /dev/ttyUSB0` on a USB serial adapter."
    );
    if let Some(n) = &profile.release.console_notes {
        let _ = writeln!(s, "{n}");
    }
    if let Some(mf) = &m.facts.manifest {
        if let Some(u) = &mf.user {
            let _ = writeln!(
                s,
                "Log in as the user {} with the password chosen at build time; root is locked, use `sudo`.",
                inert(u)
            );
        }
        if let Some(h) = &mf.hostname {
            let _ = writeln!(s, "The hostname is {}.", inert(h));
        }
    }
    s.push('\n');
}

/// What was found in the image: kernel, bootloader, features, remote-control port, Debian suite.
fn what_is_inside(s: &mut String, profile: &Profile, m: &ReleaseManifest) {
    s.push_str("## What is inside\n\n");
    let f = &m.facts;
    let _ = writeln!(
        s,
        "- Kernel: {}{}",
        f.kernel_release.as_deref().map_or("unknown".into(), inert),
        f.kernel_package
            .as_ref()
            .map(|v| format!(" (package `{}` {})", profile.kernel.package, inert(v)))
            .unwrap_or_default()
    );
    if let Some(u) = &f.uboot {
        let pkg = profile
            .bootloader
            .as_ref()
            .and_then(|b| b.package.clone())
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "- Bootloader: {}{}",
            inert(u),
            f.bootloader_package
                .as_ref()
                .map(|v| format!(" (package `{pkg}` {})", inert(v)))
                .unwrap_or_default()
        );
    }
    if m.features.is_empty() {
        s.push_str("- Root filesystem features: none recorded\n");
    } else {
        let features: Vec<String> = m.features.iter().map(|f| inert(f)).collect();
        let _ = writeln!(s, "- Root filesystem features: {}", features.join(", "));
    }
    if let Some(port) = f.manifest.as_ref().and_then(|mf| mf.droidmote_port) {
        let _ = writeln!(
            s,
            "- droidmote remote-control server: started with the X11 session, listening on port {port}"
        );
    }
    if let Some(suite) = f.manifest.as_ref().and_then(|mf| mf.suite.clone()) {
        let _ = writeln!(s, "- Debian {}", inert(&suite));
    }
    s.push('\n');
}

/// A subsection of "What is inside": each kernel config fragment's options and whether the image's
/// kernel has them (only what was requested when the image carries no kernel config). Absent when
/// the board asks for no fragments.
fn kernel_options(s: &mut String, m: &ReleaseManifest) {
    if m.kernel_fragments.is_empty() {
        return;
    }
    s.push_str("### Kernel options\n\n");
    if m.facts.kernel_config.is_none() {
        s.push_str("The image carries no /boot/config-*, so the options below are what was requested, not checked.\n\n");
    }
    for fr in &m.kernel_fragments {
        let _ = writeln!(
            s,
            "`{}`{}:\n",
            fr.name,
            if fr.found {
                ""
            } else {
                " (fragment not found)"
            }
        );
        if fr.options.is_empty() {
            continue;
        }
        s.push_str("| option | enables | requested | in this kernel |\n|---|---|---|---|\n");
        for o in &fr.options {
            let _ = writeln!(
                s,
                "| `{}` | {} | {} | {} |",
                o.symbol,
                o.description.as_deref().unwrap_or(""),
                o.requested,
                match o.in_image.as_deref() {
                    Some("y") => "built in".into(),
                    Some("m") => "module".into(),
                    Some("not set") => "**missing**".into(),
                    // The image's kernel config says so: its text, inert.
                    Some(other) => inert(other),
                    None => "unknown".into(),
                }
            );
        }
        s.push('\n');
    }
}

/// The profile's changelog.
fn changelog(s: &mut String, m: &ReleaseManifest) {
    s.push_str("## Changelog\n\n");
    bullets(s, &m.changelog);
}

/// The profile's known issues.
fn known_issues(s: &mut String, m: &ReleaseManifest) {
    s.push_str("\n## Known issues\n\n");
    bullets(s, &m.known_issues);
}

/// A list of the profile's entries, saying so when it records none.
fn bullets(s: &mut String, items: &[String]) {
    if items.is_empty() {
        s.push_str("- (none recorded in the profile)\n");
    }
    for i in items {
        let _ = writeln!(s, "- {i}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_config_values_read_both_spellings() {
        let v = kernel_config_values("CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"x\"\n");
        assert_eq!(v["CONFIG_A"], "y");
        assert_eq!(v["CONFIG_B"], "n");
        assert_eq!(v["CONFIG_C"], "\"x\"");
    }

    #[test]
    fn image_text_is_inert_markdown() {
        assert_eq!(inert("6.1.0-18-armmp"), "6\\.1\\.0\\-18\\-armmp");
        assert_eq!(inert("bookworm"), "bookworm");
        // Every ASCII punctuation character is escaped, so nothing opens HTML, a link, a code span,
        // emphasis, a table cell or an entity; a control character left over becomes U+FFFD.
        assert_eq!(
            inert("<img src=x onerror=alert(1)>"),
            "\\<img src\\=x onerror\\=alert\\(1\\)\\>"
        );
        assert_eq!(
            inert("a|`b`*_[c](d)&amp;#!"),
            "a\\|\\`b\\`\\*\\_\\[c\\]\\(d\\)\\&amp\\;\\#\\!"
        );
        assert_eq!(
            inert("x\n\n## Downloads\r"),
            "x\u{FFFD}\u{FFFD}\\#\\# Downloads\u{FFFD}"
        );
        assert_eq!(inert("\\"), "\\\\");
        // Non-ASCII text is left as it is.
        assert_eq!(inert("Grüße"), "Grüße");
        for c in (0u8..128)
            .map(char::from)
            .filter(char::is_ascii_punctuation)
        {
            assert_eq!(inert(&c.to_string()), format!("\\{c}"));
        }
    }
}
