//! `boardsmith man`: a man page per command, from the clap definition, with EXIT STATUS and SEE ALSO.

use std::io::Write as _;

use clap::CommandFactory;

use super::args::{Cli, ManArgs};
use super::exit::Failure;

/// The exit statuses of a command whose help does not state them (the shared contract: the help's
/// "Exit status:" paragraph wins where there is one).
fn default_exit_status(command: &str) -> &'static str {
    match command {
        "rootfs" | "build" => {
            "0 success, 1 the operation failed, 2 invalid usage or input, 3 a download failed after every retry (trying again later may work), 128+N after signal N (130 Ctrl-C, 143 SIGTERM; temporary files are removed first)."
        }
        "release" => {
            "0 success, 1 the operation failed, 2 invalid usage or input, 128+N after signal N (130 Ctrl-C, 143 SIGTERM; temporary files are removed first)."
        }
        _ => "0 success, 1 the operation failed, 2 invalid usage or input.",
    }
}

/// One man page: clap_mangen's sections, then EXIT STATUS (from the help's "Exit status:" paragraph,
/// the rest of that text under NOTES) and SEE ALSO (the main page lists every command's page, a
/// command's page the main one).
fn man_page(cmd: &clap::Command, main: bool) -> Result<Vec<u8>, Failure> {
    use clap_mangen::roff::{Roff, bold, roman};
    let after = cmd
        .get_after_long_help()
        .or_else(|| cmd.get_after_help())
        .map(|s| s.to_string())
        .unwrap_or_default();
    let (notes, exit) = match after.find("Exit status: ") {
        Some(at) => (
            after[..at].trim().to_string(),
            after[at + "Exit status: ".len()..].trim().to_string(),
        ),
        None => (
            after.trim().to_string(),
            default_exit_status(cmd.get_name()).to_string(),
        ),
    };
    let exit = if main {
        format!(
            "{exit} Commands stopped by signal N exit with 128+N; each command's page has its own list."
        )
    } else {
        exit
    };
    let mut out = Vec::new();
    clap_mangen::Man::new(
        cmd.clone()
            .after_help(None::<&str>)
            .after_long_help(None::<&str>),
    )
    .source(concat!("boardsmith ", env!("CARGO_PKG_VERSION")))
    .render(&mut out)
    .map_err(|e| Failure::failed(format!("rendering the man page: {e}")))?;
    let mut roff = Roff::new();
    roff.control("SH", ["EXIT STATUS"]);
    roff.text([roman(exit)]);
    if !notes.is_empty() {
        roff.control("SH", ["NOTES"]);
        for (i, para) in notes.lines().enumerate() {
            if i > 0 {
                roff.control("PP", []);
            }
            roff.text([roman(para)]);
        }
    }
    roff.control("SH", ["SEE ALSO"]);
    let mut refs: Vec<String> = if main {
        cmd.get_subcommands()
            .filter(|c| !c.is_hide_set())
            .map(|c| format!("boardsmith-{}", c.get_name()))
            .collect()
    } else {
        vec!["boardsmith".to_string()]
    };
    refs.sort();
    for (i, r) in refs.iter().enumerate() {
        let sep = if i + 1 < refs.len() { "(1)," } else { "(1)" };
        roff.text([bold(r.as_str()), roman(sep)]);
    }
    // The preamble (two lines defining the apostrophe string) is already in clap_mangen's part.
    let tail = roff.render();
    for line in tail.lines().skip(2) {
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    Ok(out)
}

/// The main page and one page per visible command, with their file names.
fn man_pages() -> Result<Vec<(String, Vec<u8>)>, Failure> {
    let mut cli = Cli::command().disable_help_subcommand(true);
    // Gives every subcommand its display name (boardsmith-build), which titles its page.
    cli.build();
    let mut pages = vec![("boardsmith.1".to_string(), man_page(&cli, true)?)];
    command_pages(&cli, "boardsmith", &mut pages)?;
    Ok(pages)
}

/// A page for every visible subcommand of `cmd`, and of theirs (`boardsmith-cache-list.1`): clap_mangen's
/// SUBCOMMANDS section refers to each by that name.
fn command_pages(
    cmd: &clap::Command,
    prefix: &str,
    pages: &mut Vec<(String, Vec<u8>)>,
) -> Result<(), Failure> {
    for sub in cmd.get_subcommands().filter(|c| !c.is_hide_set()) {
        let name = format!("{prefix}-{}", sub.get_name());
        pages.push((format!("{name}.1"), man_page(sub, false)?));
        command_pages(sub, &name, pages)?;
    }
    Ok(())
}

pub fn run(args: ManArgs) -> Result<(), Failure> {
    let pages = man_pages()?;
    let Some(dir) = args.out_dir else {
        let name = match &args.command {
            // `cache list` or `cache-list`: the page of a nested command.
            Some(c) => format!(
                "boardsmith-{}.1",
                c.split_whitespace().collect::<Vec<_>>().join("-")
            ),
            None => "boardsmith.1".to_string(),
        };
        let page = pages.iter().find(|(n, _)| *n == name).ok_or_else(|| {
            let known: Vec<&str> = pages
                .iter()
                .filter_map(|(n, _)| n.strip_prefix("boardsmith-")?.strip_suffix(".1"))
                .collect();
            Failure::usage(format!(
                "no man page for {:?}: the commands are {}",
                args.command.as_deref().unwrap_or_default(),
                known.join(", ")
            ))
        })?;
        let _ = std::io::stdout().write_all(&page.1);
        return Ok(());
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| Failure::failed(format!("creating {}: {e}", dir.display())))?;
    for (name, page) in &pages {
        let path = dir.join(name);
        boardsmith::output::write_atomic(&path, page)
            .and_then(|f| f.commit())
            .map_err(|e| Failure::failed(format!("writing {}: {e}", path.display())))?;
        println!("{}", dir.join(name).display());
    }
    Ok(())
}
