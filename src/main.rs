fn main() {
    std::process::exit(boardsmith::cli::main());
}
