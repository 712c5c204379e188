//! The layer rule (DEVELOPERS.md, "Layers"): a module of the library may use only modules of lower
//! layers, so the modules follow the data and no two of them import each other. Every path that names a
//! module of the crate counts, wherever it stands: `use crate::a::b`, the groups of `use crate::{a, b}`,
//! `crate::a::f()` inside a function body, `super::super::a` climbing out of a module, `$crate` in macros,
//! test code included. Comments and string literals do not count.
//!
//! A violation fails with `file:line`, the two modules and their layers, and the rule.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Lowest first. A module may use the modules of the layers before its own, never its own layer's
/// other modules nor a later layer's. Keep in step with the table in DEVELOPERS.md.
const LAYERS: &[(&str, &[&str])] = &[
    ("unit-test helpers (std and crates only)", &["testutil"]),
    (
        "foundations (std and crates only)",
        &["size", "time", "embedded", "signals", "tools", "rootmods"],
    ),
    ("formats and plumbing", &["disk", "output", "codec", "net"]),
    ("shared services", &["checksum", "device"]),
    ("profiles", &["profile"]),
    ("byte layout", &["plan"]),
    ("kernel config and root filesystem", &["kconfig", "rootfs"]),
    ("image assembly", &["image"]),
    ("grow", &["grow"]),
    ("write", &["write"]),
    ("products", &["boot", "release"]),
];

fn layer_of(module: &str) -> Option<(usize, &'static str)> {
    LAYERS
        .iter()
        .enumerate()
        .find(|(_, (_, mods))| mods.contains(&module))
        .map(|(i, (name, _))| (i, *name))
}

/// One reference from a file to a top-level module of the crate.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Use {
    line: usize,
    /// The top-level module named; `None` for a glob of the crate root (`use crate::*`).
    target: Option<String>,
}

/// The source with comments, string, byte-string and char literals blanked (newlines kept, so line
/// numbers stay right).
fn strip(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let blank = |out: &mut Vec<u8>, c: u8| out.push(if c == b'\n' { b'\n' } else { b' ' });
    while i < b.len() {
        let c = b[i];
        // Line comment.
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                out.push(b' ');
                i += 1;
            }
            continue;
        }
        // Block comment (nested).
        if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    out.extend_from_slice(b"  ");
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    out.extend_from_slice(b"  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
            continue;
        }
        let ident_before = i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
        // Raw strings: r"..", r#".."#, br#".."#.
        if !ident_before && (c == b'r' || (c == b'b' && b.get(i + 1) == Some(&b'r'))) {
            let mut j = if c == b'b' { i + 2 } else { i + 1 };
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) == Some(&b'"') {
                let close: Vec<u8> = std::iter::once(b'"')
                    .chain(std::iter::repeat_n(b'#', hashes))
                    .collect();
                out.extend(std::iter::repeat_n(b' ', j + 1 - i));
                i = j + 1;
                while i < b.len() && !b[i..].starts_with(&close) {
                    blank(&mut out, b[i]);
                    i += 1;
                }
                out.extend(std::iter::repeat_n(b' ', close.len()));
                i += close.len();
                continue;
            }
        }
        // Strings and byte strings.
        if c == b'"' {
            out.push(b' ');
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    blank(&mut out, b[i]);
                    i += 1;
                }
                if i < b.len() {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
            out.push(b' ');
            i += 1;
            continue;
        }
        // Char literals ('a', '\n', '\u{1F600}', '"'); a lifetime ('a) has no closing quote.
        if c == b'\'' {
            let lit_end = if b.get(i + 1) == Some(&b'\\') {
                b.get(i + 3..)
                    .and_then(|r| r.iter().position(|&x| x == b'\''))
                    .map(|p| i + 3 + p)
            } else {
                // One character, then the quote (`i + 1` is a character boundary: `'` is ASCII).
                src[i + 1..]
                    .chars()
                    .next()
                    .map(|ch| i + 1 + ch.len_utf8())
                    .filter(|&e| b.get(e) == Some(&b'\''))
            };
            if let Some(end) = lit_end {
                out.extend(std::iter::repeat_n(b' ', end + 1 - i));
                i = end + 1;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    String::from_utf8(out).expect("blanking keeps UTF-8 (only ASCII bytes are replaced)")
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    /// `::`
    Path,
    Punct(u8),
}

fn tokens(clean: &str) -> Vec<(usize, Tok)> {
    let b = clean.as_bytes();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < b.len() {
        let c = b[i];
        if c == b'\n' {
            line += 1;
            i += 1;
        } else if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'$' || c == b'_' || c.is_ascii_alphabetic() {
            let start = i;
            i += 1;
            while i < b.len() && (b[i] == b'_' || b[i].is_ascii_alphanumeric()) {
                i += 1;
            }
            let word = &clean[start..i];
            out.push((line, Tok::Ident(word.trim_start_matches('$').to_string())));
        } else if c == b':' && b.get(i + 1) == Some(&b':') {
            out.push((line, Tok::Path));
            i += 2;
        } else {
            out.push((line, Tok::Punct(c)));
            i += 1;
        }
    }
    out
}

/// The first segments of the items of a `{ ... }` group starting at `toks[open]`; returns them and the
/// index after the closing brace.
fn group_heads(toks: &[(usize, Tok)], open: usize) -> (Vec<(usize, String)>, usize) {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut expect_head = true;
    let mut i = open;
    while i < toks.len() {
        match &toks[i].1 {
            Tok::Punct(b'{') => {
                depth += 1;
                if depth == 1 {
                    expect_head = true;
                }
            }
            Tok::Punct(b'}') => {
                depth -= 1;
                if depth == 0 {
                    return (heads, i + 1);
                }
            }
            Tok::Punct(b',') if depth == 1 => expect_head = true,
            Tok::Punct(b'*') if depth == 1 && expect_head => {
                heads.push((toks[i].0, "*".into()));
                expect_head = false;
            }
            Tok::Ident(w) if depth == 1 && expect_head => {
                heads.push((toks[i].0, w.clone()));
                expect_head = false;
            }
            _ => {}
        }
        i += 1;
    }
    (heads, i)
}

/// Every top-level module `src` (the file of module `module`, e.g. `["write", "sink"]`) names.
fn uses(src: &str, module: &[String]) -> Vec<Use> {
    let toks = tokens(&strip(src));
    let mut found = Vec::new();
    // Inline modules (`mod tests { .. }`) opened and the brace depth each closes at.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < toks.len() {
        let (line, tok) = &toks[i];
        match tok {
            Tok::Punct(b'{') => depth += 1,
            Tok::Punct(b'}') => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            Tok::Ident(w) if w == "mod" => {
                if let (Some((_, Tok::Ident(name))), Some((_, Tok::Punct(b'{')))) =
                    (toks.get(i + 1), toks.get(i + 2))
                {
                    inline.push((name.clone(), depth));
                }
            }
            Tok::Ident(w)
                if (w == "crate" || w == "super")
                    && !matches!(i.checked_sub(1).map(|p| &toks[p].1), Some(Tok::Path))
                    && toks.get(i + 1).map(|t| &t.1) == Some(&Tok::Path) =>
            {
                // Resolve the run of `super::` (or one `crate::`) to a module path.
                let mut base: Vec<String> = module
                    .iter()
                    .cloned()
                    .chain(inline.iter().map(|(n, _)| n.clone()))
                    .collect();
                let mut j = i;
                if w == "crate" {
                    base.clear();
                    j += 2;
                } else {
                    while toks.get(j).map(|t| &t.1) == Some(&Tok::Ident("super".into()))
                        && toks.get(j + 1).map(|t| &t.1) == Some(&Tok::Path)
                    {
                        base.pop();
                        j += 2;
                    }
                }
                if let Some(top) = base.first() {
                    // Still inside a top-level module: that module, whatever follows.
                    found.push(Use {
                        line: *line,
                        target: Some(top.clone()),
                    });
                } else {
                    match toks.get(j) {
                        Some((l, Tok::Ident(next))) => found.push(Use {
                            line: *l,
                            target: Some(next.clone()),
                        }),
                        Some((_, Tok::Punct(b'{'))) => {
                            let (heads, _) = group_heads(&toks, j);
                            for (l, h) in heads {
                                found.push(Use {
                                    line: l,
                                    target: (h != "*").then_some(h),
                                });
                            }
                        }
                        Some((l, Tok::Punct(b'*'))) => found.push(Use {
                            line: *l,
                            target: None,
                        }),
                        _ => {}
                    }
                }
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    // `self` inside a group or path names the module itself.
    found.retain(|u| u.target.as_deref() != Some("self"));
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// `src/write/sink.rs` → `["write", "sink"]`; `src/write/mod.rs` → `["write"]`.
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|l| l == "mod") {
        parts.pop();
    }
    parts
}

/// Every violation of the rule in the files under `src`, as messages.
fn violations(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut out = Vec::new();
    for f in files {
        let rel = f.strip_prefix(src).expect("under src");
        // The binary (main.rs and its command line, cli/) is its own crate: it uses the library as
        // `boardsmith::`, which the library cannot name back. lib.rs only declares.
        if rel == Path::new("main.rs") || rel == Path::new("lib.rs") || rel.starts_with("cli") {
            continue;
        }
        let module = module_path(rel);
        let me = &module[0];
        let shown = Path::new("src").join(rel);
        let Some((my_layer, my_name)) = layer_of(me) else {
            out.push(format!(
                "{}: module `{me}` is in no layer: add it to LAYERS in tests/layering.rs and to the table in DEVELOPERS.md",
                shown.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(&f).expect("read source");
        for u in uses(&text, &module) {
            let Some(target) = u.target else {
                out.push(format!(
                    "{}:{}: a glob import of the crate root hides which modules `{me}` uses; name them",
                    shown.display(),
                    u.line
                ));
                continue;
            };
            if &target == me {
                continue;
            }
            match layer_of(&target) {
                None => out.push(format!(
                    "{}:{}: `{me}` uses `{target}`, which is in no layer of tests/layering.rs",
                    shown.display(),
                    u.line
                )),
                Some((layer, name)) if layer >= my_layer => out.push(format!(
                    "{}:{}: `{me}` (layer {}, {my_name}) uses `{target}` (layer {}, {name}): a module may only use modules of lower layers (DEVELOPERS.md, Layers){}",
                    shown.display(),
                    u.line,
                    my_layer + 1,
                    layer + 1,
                    if layer == my_layer {
                        "; modules of one layer never use each other"
                    } else {
                        "; an upward import makes a cycle"
                    }
                )),
                Some(_) => {}
            }
        }
    }
    out
}

fn crate_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn modules_use_only_lower_layers() {
    let v = violations(&crate_src());
    assert!(
        v.is_empty(),
        "{} layering violation(s):\n{}",
        v.len(),
        v.join("\n")
    );
}

#[test]
fn every_module_of_the_library_has_a_layer() {
    let lib = std::fs::read_to_string(crate_src().join("lib.rs")).expect("lib.rs");
    let declared: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            l.strip_prefix("pub mod ")
                .or_else(|| l.strip_prefix("mod "))
        })
        .map(|m| m.trim_end_matches(';').to_string())
        .collect();
    let listed: BTreeSet<String> = LAYERS
        .iter()
        .flat_map(|(_, m)| m.iter().map(|s| s.to_string()))
        .collect();
    assert_eq!(declared, listed, "src/lib.rs modules vs LAYERS");
    // The same table is written down for people.
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("DEVELOPERS.md"))
        .expect("DEVELOPERS.md");
    for (i, (_, mods)) in LAYERS.iter().enumerate() {
        let row = format!("| {} |", i + 1);
        let line = doc
            .lines()
            .find(|l| l.starts_with(&row))
            .unwrap_or_else(|| panic!("DEVELOPERS.md has no layer row starting {row:?}"));
        for m in *mods {
            assert!(
                line.contains(&format!("`{m}`")),
                "DEVELOPERS.md layer {} lacks `{m}`: {line}",
                i + 1
            );
        }
    }
}

// The scanner itself, on sources written to break it.

fn targets(src: &str, module: &[&str]) -> Vec<(usize, String)> {
    let module: Vec<String> = module.iter().map(|s| s.to_string()).collect();
    uses(src, &module)
        .into_iter()
        .map(|u| (u.line, u.target.unwrap_or_else(|| "*".into())))
        .collect()
}

#[test]
fn scanner_reads_groups_bodies_and_super_escapes() {
    let src = r##"
use crate::{plan::Layout, size::{Human, MIB}, self};
use super::super::write::sink;
fn f() {
    let x = crate::image::build::go();
    let s = "crate::boot::not_code";
    // crate::release::not_code
    /* crate::cli::not /* nested */ code */
    let c = '"'; let l: &'static str = "x"; let r = r#"crate::cli"#;
}
mod tests {
    use super::*;
    use super::super::super::grow::G;
}
macro_rules! m { () => { $crate::net::Client::new() } }
"##;
    assert_eq!(
        targets(src, &["device", "target"]),
        [
            (2, "plan".to_string()),
            (2, "size".into()),
            (3, "write".into()),
            (5, "image".into()),
            // `use super::*` in `device::target::tests` stays inside `device`.
            (12, "device".into()),
            (13, "grow".into()),
            (15, "net".into()),
        ]
    );
}

#[test]
fn scanner_catches_a_glob_of_the_root() {
    assert_eq!(targets("use super::*;", &["grow"]), [(1, "*".to_string())]);
    assert_eq!(targets("use crate::*;", &["grow"]), [(1, "*".to_string())]);
    // pub(crate) and pub(super) name no module.
    assert!(targets("pub(crate) fn a() {} pub(super) fn b() {}", &["grow"]).is_empty());
}

#[test]
fn an_upward_import_fails_with_file_line_and_rule() {
    let d = tempfile::tempdir().expect("tmp");
    let src = d.path();
    std::fs::create_dir_all(src.join("device")).expect("mkdir");
    std::fs::write(src.join("lib.rs"), "pub mod device;\npub mod write;\n").expect("write");
    std::fs::write(
        src.join("device/mod.rs"),
        "pub mod target;\nuse crate::size::Human;\n",
    )
    .expect("write");
    std::fs::write(
        src.join("device/target.rs"),
        "//! x\n\nfn f() {\n    crate::write::go();\n}\n",
    )
    .expect("write");
    std::fs::write(src.join("write.rs"), "use crate::device::target;\n").expect("write");
    let v = violations(src);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(
        v[0].starts_with("src/device/target.rs:4: `device` (layer 4, shared services) uses `write` (layer 10, write)")
            && v[0].contains("an upward import makes a cycle"),
        "{}",
        v[0]
    );
}
