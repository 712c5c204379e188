//! `boardsmith release`: a built image compressed into release artefacts with sums, manifest and notes.

use std::path::PathBuf;

use boardsmith::device::progress::Counters;
use boardsmith::profile::Catalog;
use boardsmith::size::{Human, parse_size};

use super::args::ReleaseArgs;
use super::exit::{Failure, pretty_json};
use super::progress::Progress;
use super::{epoch, install_signals, load};

pub fn run(catalog: &Catalog, args: ReleaseArgs) -> Result<(), Failure> {
    use boardsmith::release::{Format, ReleaseEvent, ReleaseRequest, Settings, release};
    install_signals(boardsmith::signals::OnStop::Exit)?;
    let profile = load(catalog, &args.board)?;
    let mut formats = Vec::new();
    for f in &args.compress {
        let fmt = Format::parse(f.trim()).ok_or_else(|| {
            Failure::usage(format!(
                "--compress: unknown format {f:?}; use xz, zst or 7z"
            ))
        })?;
        if !formats.contains(&fmt) {
            formats.push(fmt);
        }
    }
    let xz_block =
        parse_size(&args.xz_block).map_err(|e| Failure::usage(format!("--xz-block: {e}")))?;
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1)
    });
    let req = ReleaseRequest {
        image: args.image.clone().unwrap_or_else(|| {
            boardsmith::release::default_image(std::path::Path::new("out"), &profile.name)
        }),
        out_dir: args
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from("release").join(&profile.name)),
        formats,
        settings: Settings {
            threads,
            xz_level: args.xz_level,
            xz_block,
            zstd_level: args.zstd_level,
            sevenz_level: args.sevenz_level,
            epoch: epoch()?,
            world_readable: args.world_readable,
        },
    };
    let progress = Progress::new(args.progress);
    let result = release(&profile, &req, &|e| match e {
        ReleaseEvent::Artefact(name) => progress.begin(&format!("writing {name}"), None),
        ReleaseEvent::Bytes { done, total } => progress.advance(
            Counters {
                done,
                written: done,
                skipped: 0,
            },
            Some(total),
        ),
    });
    progress.finish();
    let manifest = result?;
    if args.json {
        println!("{}", pretty_json(&manifest)?);
    } else {
        for a in &manifest.artefacts {
            eprintln!(
                "  {:<32} {:>12}  {}",
                a.name,
                Human(a.digest.size).to_string(),
                a.digest.sha256
            );
        }
        eprintln!(
            "release notes: {}",
            req.out_dir
                .join(format!("{}-release.md", profile.name))
                .display()
        );
    }
    Ok(())
}
