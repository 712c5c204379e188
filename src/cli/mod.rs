//! The command line: the clap definition ([`args`]) turned into validated requests for the library
//! before any work starts, one file per command. Help, man pages and shell completions all come from
//! the one definition; [`exit`] maps every error to its exit status, [`progress`] shows every
//! command's progress.

mod args;
mod boards;
mod boot;
mod build;
mod cache;
mod completions;
mod exit;
mod grow;
mod initramfs_modules;
mod kconfig;
mod kernel;
mod man;
mod progress;
mod refuse;
mod release;
mod rootfs;
mod show;
mod write;

use clap::{ArgMatches, CommandFactory, FromArgMatches};

use boardsmith::profile::{Catalog, Profile};
use boardsmith::size::parse_size;

use args::{CatalogArgs, Cli, Command};
use exit::{EXIT_USAGE, Failure};

pub fn main() -> i32 {
    quiet_on_closed_stdout();
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m).map(|c| (c, m)));
    let (cli, matches) = match parsed {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    let result = refuse::ignored_options(&matches).and_then(|()| run(cli, Some(&matches)));
    // A stop signal being handled decides the exit status (128+N), whatever the work returned.
    boardsmith::signals::wait_if_stopping();
    match result {
        Ok(()) => 0,
        Err(f) => {
            eprintln!("error: {}", f.message);
            f.code
        }
    }
}

/// `boardsmith boards | head` closes stdout early; `println!` (and clap_complete) then panic on the broken
/// pipe. End quietly with the status a shell gives a process killed by SIGPIPE, as other Unix tools do, instead of
/// printing a panic. (SIGPIPE itself stays ignored: a dying QEMU must not kill `boot` before it reports.)
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.contains("Broken pipe") || msg.contains("BrokenPipe") {
            std::process::exit(128 + libc::SIGPIPE);
        }
        default(info)
    }));
}

pub(crate) fn load(catalog: &Catalog, board: &str) -> Result<Profile, Failure> {
    Ok(catalog.load(board)?)
}

pub(crate) fn parse_size_arg(s: Option<&str>) -> Result<Option<u64>, Failure> {
    s.map(|s| parse_size(s).map_err(|e| Failure::usage(format!("--size: {e}"))))
        .transpose()
}

pub(crate) fn epoch() -> Result<u64, Failure> {
    boardsmith::disk::ids::source_date_epoch().map_err(Failure::usage)
}

/// Runs a parsed command line; `matches` (clap's) lets options be refused by where they were given.
fn run(cli: Cli, matches: Option<&ArgMatches>) -> Result<(), Failure> {
    let catalog = |c: &CatalogArgs| Catalog::new(c.boards_dir.clone());
    match cli.command {
        Command::Boards { json, catalog: c } => boards::run(&catalog(&c), json),
        Command::Show(args) => show::run(&catalog(&args.catalog), args),
        Command::Build(args) => build::run(&catalog(&args.catalog), args),
        Command::Release(args) => release::run(&catalog(&args.catalog), args),
        Command::Kconfig(args) => kconfig::run(&catalog(&args.catalog), args),
        Command::Kernel(args) => kernel::run(&catalog(&args.catalog), args),
        Command::Boot(args) => boot::run(
            &catalog(&args.catalog),
            args,
            matches.and_then(|m| m.subcommand_matches("boot")),
        ),
        Command::Rootfs(args) => rootfs::run(&catalog(&args.catalog), args),
        Command::Cache(args) => cache::run(args),
        Command::InitramfsModules(args) => initramfs_modules::run(&catalog(&args.catalog), args),
        Command::InitramfsHook { input, root } => initramfs_modules::hook(&input, &root),
        Command::Write(args) => write::run(args),
        Command::Grow(args) => grow::run(args),
        Command::Completions { shell, catalog: c } => completions::run(&catalog(&c), shell),
        Command::Man(args) => man::run(args),
    }
}

/// Makes SIGINT/SIGTERM/SIGHUP end this command with 128+N: at once, removing its temporary files
/// (`OnStop::Exit`), or once the work stopped at its next check (`OnStop::Poll`).
pub(crate) fn install_signals(on_stop: boardsmith::signals::OnStop) -> Result<(), Failure> {
    boardsmith::signals::install(on_stop)
        .map_err(|e| Failure::failed(format!("installing the signal handlers: {e}")))
}
