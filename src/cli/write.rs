//! `boardsmith write`: an image (file, standard input or URL) onto a card or into a file.

use boardsmith::size::parse_size;

use super::args::{NetArgs, WriteArgs};
use super::exit::{Failure, pretty_json};
use super::progress::Progress;
use super::{install_signals, parse_size_arg};

/// A duration given as seconds, or with a unit: `90`, `90s`, `10m`, `1h`, `500ms`.
fn parse_duration_arg(flag: &str, v: &str) -> Result<std::time::Duration, Failure> {
    let t = v.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        Failure::usage(format!(
            "{flag} {v:?}: expected a duration such as 30s, 10m or 1h"
        ))
    })?;
    let ms = match unit.trim() {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1000),
        "m" | "min" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => None,
    }
    .filter(|&ms| ms > 0 && ms <= 7 * 86_400_000)
    .ok_or_else(|| {
        Failure::usage(format!(
            "{flag} {v:?}: expected a duration between 1ms and 7 days, such as 30s, 10m or 1h"
        ))
    })?;
    Ok(std::time::Duration::from_millis(ms))
}

/// The network settings of `write` (given only for a URL source: `refuse_ignored_options`).
fn write_net_options(args: &NetArgs) -> Result<boardsmith::net::NetOptions, Failure> {
    let mut o = boardsmith::net::NetOptions::default();
    if let Some(n) = args.retries {
        o.retries = n;
    }
    if let Some(t) = &args.retry_time {
        o.retry_time = parse_duration_arg("--retry-time", t)?;
    }
    if let Some(t) = &args.stall_timeout {
        o.stall_timeout = parse_duration_arg("--stall-timeout", t)?;
    }
    if let Some(t) = &args.connect_timeout {
        o.connect_timeout = parse_duration_arg("--connect-timeout", t)?;
    }
    Ok(o)
}

pub fn run(args: WriteArgs) -> Result<(), Failure> {
    use boardsmith::write::sums::{ExpectedSum, SumKind, parse_hex};
    use boardsmith::write::{BmapChoice, WriteRequest};
    let expected = match (&args.sha256, &args.md5) {
        (Some(h), _) => Some((SumKind::Sha256, h, "--sha256")),
        (None, Some(h)) => Some((SumKind::Md5, h, "--md5")),
        _ => None,
    }
    .map(|(kind, h, origin)| {
        parse_hex(kind, h)
            .map(|hex| ExpectedSum {
                kind,
                hex,
                origin: origin.into(),
            })
            .map_err(|e| Failure::usage(format!("{origin}: {e}")))
    })
    .transpose()?;
    let source = boardsmith::write::source::SourceSpec::parse(&args.src);
    let net = write_net_options(&args.net)?;
    let req = WriteRequest {
        source,
        target: args.target,
        bmap: match (args.bmap, args.no_bmap) {
            (Some(f), _) => BmapChoice::File(f),
            (None, true) => BmapChoice::None,
            (None, false) => BmapChoice::Auto,
        },
        verify: !args.no_verify,
        grow: args.grow,
        expected,
        sums: args.sums,
        target_size: parse_size_arg(args.size.as_deref())?,
        yes: args.yes,
        net,
        no_checksum: args.net.no_checksum,
        max_window: match args.max_window.as_deref() {
            None => Default::default(),
            Some(s) => parse_size(s)
                .map_err(|e| Failure::usage(format!("--max-window: {e}")))
                .and_then(|n| {
                    boardsmith::write::decompress::WindowLimit::chosen(n).map_err(Failure::usage)
                })?,
        },
    };
    install_signals(boardsmith::signals::OnStop::Poll)?;
    let progress = Progress::new(args.progress);
    let result = boardsmith::write::write(&req, &|e| progress.device(e));
    progress.finish();
    let report = result?;
    if args.json {
        println!("{}", pretty_json(&report)?);
    } else {
        eprint!("{report}");
    }
    Ok(())
}
