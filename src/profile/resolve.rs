//! One profile file read (syntax, one-line strings) and its `extends` chain merged, base first.

use std::sync::Arc;

use super::raw::RawProfile;
use super::validate::validate;
use super::{Catalog, LocError, Profile, ProfileError, SourceFile, source};

pub(super) fn parse_file(file: &Arc<SourceFile>) -> Result<RawProfile, ProfileError> {
    let raw = source::parse_with_origin::<RawProfile>(file)?;
    one_line_strings(file)?;
    Ok(raw)
}

/// The first control character in `s` (C0, DEL, C1, the Unicode line and paragraph separators,
/// and the bidirectional controls): its 1-based character position and the character.
pub fn control_char(s: &str) -> Option<(usize, char)> {
    s.chars()
        .enumerate()
        .find(|(_, c)| {
            c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') || is_bidi_control(*c)
        })
        .map(|(i, c)| (i + 1, c))
}

/// Unicode's bidirectional controls, which make text display in another order than it is read
/// ("Trojan Source"): refused like control characters wherever text reaches a generated file.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// What a control character is, for messages: `U+000A (line feed)`.
pub fn describe_control(c: char) -> String {
    let name = match c {
        '\n' => " (line feed)",
        '\r' => " (carriage return)",
        '\t' => " (tab)",
        '\0' => " (NUL)",
        '\u{1b}' => " (escape)",
        c if is_bidi_control(c) => " (bidirectional control)",
        _ => "",
    };
    format!("U+{:04X}{name}", c as u32)
}

/// Every string of a profile file, and every key, is one line of printable text: profile values end
/// up in generated files (extlinux.conf, boot.scr, uboot.env, fstab, the FVP launch script, release
/// notes) and a line break there starts a new directive or, in a script, a new command. Checked on
/// the file's syntax tree, so no field can be forgotten; the error names file:line:col and field.
fn one_line_strings(file: &SourceFile) -> Result<(), ProfileError> {
    use toml::de::{DeTable, DeValue};
    fn check(file: &SourceFile, span: usize, field: &str, s: &str) -> Result<(), ProfileError> {
        match control_char(s) {
            None => Ok(()),
            Some((i, c)) => {
                let (line, col) = file.line_col(span);
                Err(ProfileError::At(LocError::Invalid {
                    at: format!("{}:{line}:{col}", file.name),
                    field: field.to_string(),
                    message: format!(
                        "contains a control character, {}, at character {i}; profile values go into generated files (extlinux.conf, boot.scr, uboot.env, fstab, the FVP launch script, release notes) and must be one line of printable text",
                        describe_control(c)
                    ),
                }))
            }
        }
    }
    fn value(
        file: &SourceFile,
        v: &toml::Spanned<DeValue<'_>>,
        field: &str,
    ) -> Result<(), ProfileError> {
        match v.get_ref() {
            DeValue::String(s) => check(file, v.span().start, field, s),
            DeValue::Array(a) => a
                .into_iter()
                .enumerate()
                .try_for_each(|(i, e)| value(file, e, &format!("{field}[{i}]"))),
            DeValue::Table(t) => table(file, t, field),
            _ => Ok(()),
        }
    }
    fn table(file: &SourceFile, t: &DeTable<'_>, prefix: &str) -> Result<(), ProfileError> {
        for (k, v) in t {
            let key: &str = k.get_ref();
            let field = if prefix.is_empty() {
                key.to_string()
            } else {
                format!("{prefix}.{key}")
            };
            if control_char(key).is_some() {
                check(file, k.span().start, &format!("{field:?} (a key)"), key)?;
            }
            value(file, v, &field)?;
        }
        Ok(())
    }
    match DeTable::parse(&file.text) {
        Ok(t) => table(file, t.get_ref(), ""),
        // Syntax errors are reported by the parse that precedes this check.
        Err(_) => Ok(()),
    }
}

/// Later layers (the board) override earlier ones (its bases) field by field.
macro_rules! overlay {
    ($dst:expr, $src:expr, [$($f:ident),* $(,)?]) => {
        $( if $src.$f.is_some() { $dst.$f = $src.$f; } )*
    };
}

fn merge(base: &mut RawProfile, top: RawProfile) {
    overlay!(
        base,
        top,
        [
            name,
            description,
            arch,
            console,
            medium,
            partitions,
            emulator,
            vboot,
            fvp
        ]
    );
    overlay!(
        base.kernel,
        top.kernel,
        [
            package,
            image,
            path,
            initrd,
            dtb_dir,
            dtb,
            cmdline,
            defconfig,
            fragments,
            initramfs_modules
        ]
    );
    match (&mut base.bootloader, top.bootloader) {
        (Some(b), Some(t)) => {
            overlay!(b, t, [package, path, offset, max_size, magic, env]);
        }
        (b @ None, t) => *b = t,
        (Some(_), None) => {}
    }
    overlay!(
        base.table,
        top.table,
        [
            kind,
            alignment,
            size,
            disk_signature,
            gpt_entries,
            gpt_entries_offset
        ]
    );
    // Named emulators merge by name: a board replaces its base's setup of the same name whole.
    match (&mut base.emulators, top.emulators) {
        (Some(b), Some(t)) => b.extend(t),
        (b @ None, t) => *b = t,
        (Some(_), None) => {}
    }
    overlay!(base.boot, top.boot, [methods, extlinux_fdt]);
    overlay!(base.display, top.display, [video]);
    overlay!(
        base.release,
        top.release,
        [changelog, known_issues, console_notes]
    );
    match (&mut base.rootfs, top.rootfs) {
        (Some(b), Some(t)) => {
            overlay!(
                b,
                t,
                [
                    suite,
                    mirror,
                    security_mirror,
                    components,
                    packages,
                    features,
                    hostname,
                    user,
                    password_hash,
                    expire_password,
                    locale,
                    timezone,
                    fstab,
                    autologin
                ]
            );
        }
        (b @ None, t) => *b = t,
        (Some(_), None) => {}
    }
}

pub(super) fn resolve(board: Arc<SourceFile>, catalog: &Catalog) -> Result<Profile, ProfileError> {
    // Walk the extends chain: board, its base, the base's base…
    let mut chain: Vec<(Arc<SourceFile>, RawProfile)> = Vec::new();
    let mut current = board;
    loop {
        let raw = parse_file(&current)?;
        let next = raw.extends.clone();
        chain.push((current.clone(), raw));
        let Some(ext) = next else { break };
        let base = catalog.find_base(&ext.value, &current)?;
        if chain.iter().any(|(f, _)| f.name == base.name) || chain.len() > 16 {
            let names: Vec<&str> = chain.iter().map(|(f, _)| f.name.as_str()).collect();
            return Err(ProfileError::Cycle {
                at: ext.at(),
                chain: format!("{} -> {}", names.join(" -> "), base.name),
            });
        }
        current = base;
    }
    let sources: Vec<Arc<SourceFile>> = chain.iter().map(|(f, _)| f.clone()).collect();
    let board_file = sources[0].clone();
    let mut layers = chain.into_iter().rev().map(|(_, r)| r);
    let mut merged = layers.next().unwrap_or_default();
    for layer in layers {
        merge(&mut merged, layer);
    }
    validate(merged, &board_file, sources)
}

#[cfg(test)]
mod tests {
    use super::super::test_profiles::{MINIMAL, load_text};
    use super::*;

    #[test]
    fn unknown_key_names_line_and_column() {
        let text =
            format!("{MINIMAL}[[partition]]\nname = \"root\"\nsize = \"fill\"\ncolour = \"red\"\n");
        let e = load_text(&text).unwrap_err().to_string();
        assert!(e.contains("t.toml:11:1"), "{e}");
        assert!(e.contains("colour"), "{e}");
    }

    /// Bidirectional controls reorder what a reader sees ("Trojan Source"): refused like control
    /// characters, and named as what they are.
    #[test]
    fn bidirectional_controls_are_control_characters() {
        assert_eq!(control_char("ok\u{202E}txt.exe"), Some((3, '\u{202E}')));
        assert_eq!(control_char("a\u{2066}b"), Some((2, '\u{2066}')));
        assert_eq!(control_char("plain é text"), None);
        assert_eq!(
            describe_control('\u{202E}'),
            "U+202E (bidirectional control)"
        );
        let text = format!(
            "{MINIMAL}[[partition]]\nname = \"root\"\nsize = \"fill\"\nlabel = \"ro\u{202E}ot\"\n"
        );
        let e = load_text(&text).unwrap_err().to_string();
        assert!(e.contains("U+202E (bidirectional control)"), "{e}");
    }

    #[test]
    fn extends_cycle_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.toml"), "extends = \"b.toml\"\n").unwrap();
        std::fs::write(dir.path().join("b.toml"), "extends = \"a.toml\"\n").unwrap();
        let e = Catalog::default()
            .load(dir.path().join("a.toml").to_str().unwrap())
            .unwrap_err();
        assert!(matches!(e, ProfileError::Cycle { .. }), "{e}");
    }
}
