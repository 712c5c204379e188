//! The size rule (DEVELOPERS.md, "Size limits"): no file under `src/` over 900 lines and no function
//! over 150, unless DEVELOPERS.md lists it with a reason. A listed exception that is no longer over its
//! limit fails too, so the list only shrinks.
//!
//! A function runs from its `fn` line to the closing brace at the same indentation (the code is
//! rustfmt-formatted, so that brace is alone on its line); nested functions count in their own right
//! and as lines of the function around them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 900;
const MAX_FN_LINES: usize = 150;

/// What DEVELOPERS.md's "Size limits" section lists: `- `PATH`: reason` for a file, `- `PATH` `fn
/// NAME`: reason` for a function.
#[derive(Debug, Default)]
struct Exceptions {
    files: BTreeSet<String>,
    fns: BTreeSet<(String, String)>,
}

fn exceptions(root: &Path) -> Exceptions {
    let text = std::fs::read_to_string(root.join("DEVELOPERS.md")).expect("reading DEVELOPERS.md");
    let mut ex = Exceptions::default();
    let mut inside = false;
    for (n, line) in text.lines().enumerate() {
        if line.starts_with("## ") {
            inside = line.trim() == "## Size limits";
            continue;
        }
        if !inside || !line.starts_with("- `src/") {
            continue;
        }
        let (head, reason) = line
            .split_once("`: ")
            .map(|(h, r)| (format!("{h}`"), r))
            .unwrap_or_else(|| panic!("DEVELOPERS.md:{}: an exception needs `: reason`", n + 1));
        assert!(
            reason.trim().len() >= 10,
            "DEVELOPERS.md:{}: the reason for {head} is missing or too short",
            n + 1
        );
        let quoted: Vec<&str> = head.split('`').skip(1).step_by(2).collect();
        match quoted.as_slice() {
            [path] => {
                ex.files.insert(path.to_string());
            }
            [path, f] if f.starts_with("fn ") => {
                ex.fns
                    .insert((path.to_string(), f["fn ".len()..].to_string()));
            }
            _ => panic!(
                "DEVELOPERS.md:{}: expected - `src/PATH`: reason or - `src/PATH` `fn NAME`: reason",
                n + 1
            ),
        }
    }
    ex
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("reading src/") {
        let p = e.expect("reading src/").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The name of the function declared on `line`, if it declares one: `fn`, after any visibility and
/// qualifiers.
fn fn_name(line: &str) -> Option<&str> {
    let mut rest = line.trim_start();
    loop {
        if let Some(after) = rest.strip_prefix("pub(") {
            rest = after[after.find(')')? + 1..].trim_start();
            continue;
        }
        let word_end = rest.find([' ', '(']).unwrap_or(rest.len());
        let word = &rest[..word_end];
        if word == "fn" {
            let name = rest[2..].trim_start();
            let end = name
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(name.len());
            return (end > 0).then(|| &name[..end]);
        }
        rest = match word {
            "pub" | "const" | "async" | "unsafe" | "default" => rest[word_end..].trim_start(),
            "extern" => {
                // `extern "C"`: the ABI string too.
                let after = rest[word_end..].trim_start();
                match after.strip_prefix('"') {
                    Some(abi) => abi[abi.find('"')? + 1..].trim_start(),
                    None => after,
                }
            }
            _ => return None,
        };
    }
}

/// Every function of `text` with a body: (name, first line (1-based), length in lines).
fn functions(text: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(name) = fn_name(line) else { continue };
        let trimmed = line.trim_start();
        if trimmed.starts_with("//") {
            continue;
        }
        let indent = &line[..line.len() - trimmed.len()];
        let close = format!("{indent}}}");
        if line.trim_end().ends_with('}') && line.contains('{') {
            out.push((name.to_string(), i + 1, 1));
            continue;
        }
        for (j, l) in lines.iter().enumerate().skip(i) {
            if *l == close {
                out.push((name.to_string(), i + 1, j - i + 1));
                break;
            }
            // A declaration without a body (a trait's required method): `;` at the fn's own depth.
            let at_depth = l.starts_with(indent) && !l[indent.len()..].starts_with(' ');
            if l.trim_end().ends_with(';') && (j == i || at_depth) {
                break;
            }
        }
    }
    out
}

#[test]
fn no_file_or_function_over_its_limit_unless_listed_with_a_reason() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ex = exceptions(root);
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    files.sort();
    let mut problems = Vec::new();
    let mut seen_files = BTreeSet::new();
    let mut seen_fns = BTreeSet::new();
    for path in &files {
        let rel = path
            .strip_prefix(root)
            .expect("under the crate")
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(path).expect("reading a source file");
        let n = text.lines().count();
        if n > MAX_FILE_LINES {
            if ex.files.contains(&rel) {
                seen_files.insert(rel.clone());
            } else {
                problems.push(format!(
                    "{rel}: {n} lines (limit {MAX_FILE_LINES}): split it by concern, or list it under \"Size limits\" in DEVELOPERS.md with the reason"
                ));
            }
        }
        for (name, line, len) in functions(&text) {
            if len <= MAX_FN_LINES {
                continue;
            }
            let key = (rel.clone(), name.clone());
            if ex.fns.contains(&key) {
                seen_fns.insert(key);
            } else {
                problems.push(format!(
                    "{rel}:{line}: fn {name} has {len} lines (limit {MAX_FN_LINES}): break it into named stages, or list it under \"Size limits\" in DEVELOPERS.md with the reason"
                ));
            }
        }
    }
    for f in ex.files.difference(&seen_files) {
        problems.push(format!(
            "DEVELOPERS.md lists {f} as over {MAX_FILE_LINES} lines, and it is not (any more): remove the line"
        ));
    }
    for (f, name) in ex.fns.difference(&seen_fns) {
        problems.push(format!(
            "DEVELOPERS.md lists fn {name} in {f} as over {MAX_FN_LINES} lines, and it is not (any more): remove the line"
        ));
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn function_lengths_are_measured_from_fn_to_its_closing_brace() {
    let src = "\
pub(crate) fn a(x: u32) -> u32 {
    x
}

impl T {
    pub fn b(
        &self,
    ) -> u32 {
        fn inner() {}
        1
    }
    fn c();
    // fn not_code() {
    const unsafe extern \"C\" fn d() {
    }
}
";
    let f = functions(src);
    assert_eq!(
        f,
        [
            ("a".to_string(), 1, 3),
            ("b".to_string(), 6, 6),
            ("inner".to_string(), 9, 1),
            ("d".to_string(), 14, 2),
        ]
    );
}

#[test]
fn a_file_over_the_limit_is_found_and_an_exception_needs_a_reason() {
    let long_fn = format!("fn long() {{\n{}}}\n", "    x();\n".repeat(MAX_FN_LINES));
    let f = functions(&long_fn);
    assert_eq!(f, [("long".to_string(), 1, MAX_FN_LINES + 2)]);
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(
        dir.path().join("DEVELOPERS.md"),
        "## Size limits\n- `src/a.rs` `fn long`: a state machine read best whole\n- `src/b.rs`: generated tables, one per line\n## Next\n- `src/c.rs`: not in the section\n",
    )
    .expect("writing DEVELOPERS.md");
    let ex = exceptions(dir.path());
    assert_eq!(ex.files.iter().collect::<Vec<_>>(), ["src/b.rs"]);
    assert!(ex.fns.contains(&("src/a.rs".into(), "long".into())));
    std::fs::write(
        dir.path().join("DEVELOPERS.md"),
        "## Size limits\n- `src/a.rs`: \n",
    )
    .expect("writing DEVELOPERS.md");
    let missing = std::panic::catch_unwind(|| exceptions(dir.path()));
    assert!(missing.is_err(), "an exception without a reason is refused");
}
