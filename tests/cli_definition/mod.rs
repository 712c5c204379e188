//! The command line's definition (clap) as the binary compiles it: src/cli/args.rs, included here so
//! that the tests try every option of a group from clap's own list (a new option is covered without
//! being named in a test) and check the man pages and completions against the real command tree. The
//! behaviour is always tested by running the binary (tests/support).
#![allow(dead_code, unused_imports)]

#[path = "../../src/cli/args.rs"]
mod args;

pub use args::*;

/// The option `arg` on a command line: `--LONG` and, when it takes one, a value clap accepts (its
/// first possible value, or 1): enough to reach the checks that refuse it, which come before any
/// value is used.
pub fn option_words(arg: &clap::Arg) -> Vec<String> {
    let mut words = vec![format!("--{}", arg.get_long().expect("a long option"))];
    if arg.get_action().takes_values() {
        words.push(
            arg.get_possible_values()
                .first()
                .map(|v| v.get_name().to_string())
                .unwrap_or_else(|| "1".to_string()),
        );
    }
    words
}

/// The long names of `args`, asserting that each of `expected` is one of them.
pub fn long_names<'a>(args: &'a [clap::Arg], expected: &[&str]) -> Vec<&'a str> {
    let longs: Vec<&str> = args.iter().filter_map(|a| a.get_long()).collect();
    for e in expected {
        assert!(longs.contains(e), "{e} not in {longs:?}");
    }
    longs
}
