//! The boardsmith command line (src/cli/): the library (src/lib.rs) knows nothing of it.

mod cli;

fn main() {
    std::process::exit(cli::main());
}
