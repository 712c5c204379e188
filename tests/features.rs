//! The library without the `cli` feature (as the fuzz crate uses it) has none of the command line's
//! crates: checked on cargo's own dependency graph (`cargo tree`), for the crate and for fuzz/.

mod support;

use std::path::Path;
use std::process::Command;

const CLI_ONLY: &[&str] = &["clap", "clap_complete", "clap_mangen", "indicatif"];

/// The crate names of `cargo tree ARGS` (normal dependencies only), from cargo's lock file.
fn tree(args: &[&str]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let o = support::run_ok(
        Command::new(env!("CARGO"))
            .current_dir(root)
            .args([
                "tree",
                "--offline",
                "--locked",
                "-e",
                "normal",
                "--prefix",
                "none",
            ])
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
fn the_library_and_the_fuzz_crate_build_without_the_command_line_crates() {
    // The default build has them (the check below would otherwise prove nothing).
    let full = tree(&["-p", "boardsmith"]);
    for c in CLI_ONLY {
        assert!(full.iter().any(|n| n == c), "{c} not in the default build");
    }
    let lib = tree(&["-p", "boardsmith", "--no-default-features"]);
    let fuzz = tree(&["--manifest-path", "fuzz/Cargo.toml"]);
    for (what, names) in [("--no-default-features", &lib), ("fuzz/", &fuzz)] {
        assert!(names.iter().any(|n| n == "boardsmith"), "{what}: {names:?}");
        for c in CLI_ONLY {
            assert!(!names.iter().any(|n| n == c), "{what} depends on {c}");
        }
    }
}
