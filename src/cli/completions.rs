//! `boardsmith completions SHELL`: shell completion scripts, from the clap definition.

use clap::CommandFactory;

use boardsmith::profile::Catalog;

use super::args::Cli;
use super::exit::Failure;

pub fn run(catalog: &Catalog, shell: clap_complete::Shell) -> Result<(), Failure> {
    clap_complete::generate(
        shell,
        &mut completion_command(catalog)?,
        "boardsmith",
        &mut std::io::stdout(),
    );
    Ok(())
}

/// The command line as the completion scripts see it: every BOARD argument offers the board names of
/// the catalogue (the embedded boards and those in --boards-dir when it is given to `completions`).
/// Parsing keeps accepting any name or path; only the generated script lists these.
fn completion_command(catalog: &Catalog) -> Result<clap::Command, Failure> {
    let names: Vec<String> = catalog.list()?.into_iter().map(|b| b.name).collect();
    let mut cli = Cli::command();
    let with_board: Vec<String> = cli
        .get_subcommands()
        .filter(|c| c.get_arguments().any(|a| a.get_id() == "board"))
        .map(|c| c.get_name().to_string())
        .collect();
    for sub in with_board {
        let names = names.clone();
        cli = cli.mut_subcommand(sub, move |c| {
            c.mut_arg("board", move |a| {
                a.value_parser(clap::builder::PossibleValuesParser::new(names))
            })
        });
    }
    Ok(cli)
}
