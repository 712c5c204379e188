//! The command line's definition (clap) as the binary compiles it: src/cli/args.rs, included here so
//! that the tests try every option of a group from clap's own list (a new option is covered without
//! being named in a test) and check the man pages and completions against the real command tree. The
//! behaviour is always tested by running the binary (tests/support).
#![allow(dead_code, unused_imports)]

#[path = "../../src/cli/args.rs"]
mod args;

pub use args::*;
