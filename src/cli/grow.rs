//! `boardsmith grow`: the last partition and its filesystem to the end of a card or file.

use super::args::GrowArgs;
use super::exit::{Failure, pretty_json};
use super::progress::Progress;
use super::{install_signals, parse_size_arg};

pub fn run(args: GrowArgs) -> Result<(), Failure> {
    let size = parse_size_arg(args.size.as_deref())?;
    install_signals(boardsmith::signals::OnStop::Poll)?;
    let mut target = boardsmith::device::target::Target::open_checked(
        &args.target,
        &boardsmith::device::target::Checks {
            yes: args.yes,
            create: false,
            ..Default::default()
        },
    )
    .map_err(|e| {
        let mut f = Failure::from(e);
        f.message.push_str("\nnothing was changed");
        f
    })?;
    let progress = Progress::new(args.progress);
    let result = boardsmith::grow::grow(&mut target, size, &|e| progress.device(e));
    progress.finish();
    let report = result.map_err(|f| {
        Failure::from(f).context(format!("growing {} failed", args.target.display()))
    })?;
    if args.json {
        println!("{}", pretty_json(&report)?);
    } else {
        eprintln!("{}: {report}", args.target.display());
    }
    Ok(())
}
