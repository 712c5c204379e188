//! The library without its default features (as the fuzz crate uses it) has none of the command line's
//! crates and no HTTP/TLS stack: checked on cargo's own dependency graph (`cargo tree`), for the crate and
//! for fuzz/.

mod support;

use std::path::Path;
use std::process::Command;

const CLI_ONLY: &[&str] = &["clap", "clap_complete", "clap_mangen", "indicatif"];
/// What the `net` feature brings: the HTTP client and its TLS stack.
const NET_ONLY: &[&str] = &["ureq", "rustls"];

/// The crate names of `cargo tree ARGS` (normal dependencies only), from cargo's lock file (not
/// `--offline`: on a fresh machine the fuzz crate's dependencies are fetched here first).
fn tree(args: &[&str]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let o = support::run_ok(
        Command::new(env!("CARGO"))
            .current_dir(root)
            .args(["tree", "--locked", "-e", "normal", "--prefix", "none"])
            .args(["--format", "{p}"])
            .args(args),
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn the_library_and_the_fuzz_crate_build_without_the_command_line_and_http_crates() {
    // The default build has them (the check below would otherwise prove nothing).
    let full = tree(&["-p", "boardsmith"]);
    for c in CLI_ONLY.iter().chain(NET_ONLY) {
        assert!(full.iter().any(|n| n == c), "{c} not in the default build");
    }
    let lib = tree(&["-p", "boardsmith", "--no-default-features"]);
    let fuzz = tree(&["--manifest-path", "fuzz/Cargo.toml"]);
    for (what, names) in [("--no-default-features", &lib), ("fuzz/", &fuzz)] {
        assert!(names.iter().any(|n| n == "boardsmith"), "{what}: {names:?}");
        for c in CLI_ONLY.iter().chain(NET_ONLY) {
            assert!(!names.iter().any(|n| n == c), "{what} depends on {c}");
        }
    }
}

/// The command line's crates are the binary's: no library source (everything under src/ but main.rs
/// and cli/) names them, so the `cli` feature only switches the binary's dependencies.
#[test]
fn only_the_binary_uses_the_command_line_crates() {
    fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).expect("read src").flatten() {
            let p = e.path();
            if p.is_dir() {
                sources(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut found = Vec::new();
    for f in files {
        let rel = f.strip_prefix(&src).expect("under src");
        if rel == Path::new("main.rs") || rel.starts_with("cli") {
            continue;
        }
        let text = std::fs::read_to_string(&f).expect("read source");
        for (i, line) in text.lines().enumerate() {
            if CLI_ONLY
                .iter()
                .any(|c| line.contains(&format!("{c}::")) || line.contains(&format!("use {c}")))
            {
                found.push(format!("src/{}:{}: {line}", rel.display(), i + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "the library uses the command line's crates:\n{}",
        found.join("\n")
    );
    // The check sees them where they are.
    let progress = std::fs::read_to_string(src.join("cli/progress.rs")).expect("cli/progress.rs");
    assert!(progress.contains("indicatif::"));
}
