//! `boardsmith build`: an image (with its .bmap, .sha256 and .md5) for one board or, with --all, for
//! every board.

use std::path::PathBuf;

use boardsmith::device::progress::Counters;
use boardsmith::image::batch::{BatchSummary, BoardResult, RootfsSource, build_all};
use boardsmith::image::build::{BuildEvent, BuildRequest, build};
use boardsmith::profile::Catalog;
use boardsmith::size::Human;

use super::args::BuildArgs;
use super::exit::{Failure, pretty_json};
use super::progress::{Mode, Progress};
use super::rootfs::{print_secret_files, rootfs_request, run_rootfs};
use super::{epoch, install_signals, load, parse_size_arg};

pub fn run(catalog: &Catalog, args: BuildArgs) -> Result<(), Failure> {
    if let Some((at, c)) = args
        .cmdline_append
        .as_deref()
        .and_then(boardsmith::profile::control_char)
    {
        return Err(Failure::usage(format!(
            "--cmdline-append: contains a control character, {}, at character {at}; the kernel command line goes into extlinux.conf, boot.scr and the FVP launch script and must be one line of printable text",
            boardsmith::profile::describe_control(c)
        )));
    }
    install_signals(boardsmith::signals::OnStop::Exit)?;
    let req = BuildRequest {
        rootfs: args.rootfs.clone().unwrap_or_default(),
        out_dir: args.out.clone(),
        image_size: parse_size_arg(args.size.as_deref())?,
        epoch: epoch()?,
        cmdline_append: args.cmdline_append.clone(),
        vboot_keyblock: args.vboot_keyblock.clone(),
        vboot_signprivate: args.vboot_signprivate.clone(),
        world_readable: args.world_readable,
    };
    if args.all {
        return all(catalog, args, req);
    }
    let Some(board) = args.board.as_deref() else {
        return Err(Failure::usage("name a board, or use --all"));
    };
    let profile = load(catalog, board)?;
    if profile.vboot.is_none() {
        for (given, option) in [
            (args.vboot_keyblock.is_some(), "--vboot-keyblock"),
            (args.vboot_signprivate.is_some(), "--vboot-signprivate"),
        ] {
            if given {
                return Err(Failure::usage(format!(
                    "{option} has no effect here: board {} has no signed kernel partition ([vboot]); leave it out",
                    profile.name
                )));
            }
        }
    }
    let mut req = req;
    if args.rootfs.is_none() {
        let out = args.out.join(format!("{}.rootfs.tar", profile.name));
        let rreq = rootfs_request(&args.rootfs_options, out, req.epoch, args.world_readable)?;
        let progress = Progress::new(args.progress);
        let result = run_rootfs(&profile, &rreq, &progress);
        progress.finish();
        let report = result?;
        // On stderr, so also with --json: the only place that names the generated secrets' files.
        print_secret_files(&report);
        req.rootfs = report.output;
    }
    let progress = Progress::new(args.progress);
    let result = build(&profile, &req, &|e| match e {
        BuildEvent::Phase(p) => progress.step(p),
        BuildEvent::Hashing { done, total } => progress.advance(
            Counters {
                done,
                ..Counters::default()
            },
            Some(total),
        ),
    });
    progress.finish();
    let report = result?;
    print_build_report(&report, args.json)?;
    Ok(())
}

fn print_build_report(
    report: &boardsmith::image::build::BuildReport,
    json: bool,
) -> Result<(), Failure> {
    if json {
        println!("{}", pretty_json(&report)?);
    } else {
        eprintln!(
            "built {} ({}, {} mapped) in {:.1} s\n  bmap   {}\n  sha256 {}  {}\n  md5    {}  {}",
            report.image.display(),
            Human(report.image_size),
            Human(report.mapped_bytes),
            report.seconds,
            report.bmap.display(),
            report.sha256,
            report.sha256_file.display(),
            report.md5,
            report.md5_file.display()
        );
        if let Some(f) = &report.fvp_script {
            eprintln!("  fvp    {} (launches the image on Arm's FVP)", f.display());
        }
        for w in &report.warnings {
            eprintln!("warning: {w}");
        }
    }
    Ok(())
}

/// `build --all`: every board, side by side (`--jobs`), continuing past failures; the summary goes to
/// OUTDIR/build-summary.json (and stdout with --json), a table to stderr.
fn all(catalog: &Catalog, args: BuildArgs, req: BuildRequest) -> Result<(), Failure> {
    let source = batch_source(&args, &req)?;
    let progress = Progress::new(args.progress);
    let summary = build_all(
        catalog,
        &source,
        &req.out_dir,
        &req,
        args.jobs,
        &|board, phase| progress.step(&format!("[{board}] {phase}")),
        &|r| board_done(&progress, r),
    );
    progress.finish();
    let summary = summary?;
    std::fs::create_dir_all(&req.out_dir)
        .map_err(|e| Failure::failed(format!("creating {}: {e}", req.out_dir.display())))?;
    let json = pretty_json(&summary)?;
    let summary_path = req.out_dir.join("build-summary.json");
    boardsmith::output::write_atomic(&summary_path, format!("{json}\n").as_bytes())
        .and_then(|p| p.commit())
        .map_err(|e| Failure::failed(format!("writing {}: {e}", summary_path.display())))?;
    if args.json {
        println!("{json}");
    }
    print_summary(&summary, matches!(source, RootfsSource::Build(_)));
    if summary.failed > 0 {
        return Err(Failure::failed(format!(
            "{} of {} boards failed (summary in {})",
            summary.failed,
            summary.boards.len(),
            summary_path.display()
        )));
    }
    Ok(())
}

/// Where `build --all` takes each board's root filesystem from: a directory of them, one shared, or
/// built here (one password for every board, asked once).
fn batch_source(args: &BuildArgs, req: &BuildRequest) -> Result<RootfsSource, Failure> {
    Ok(match (&args.rootfs_dir, &args.rootfs) {
        (Some(d), _) => RootfsSource::PerBoardIn(d.clone()),
        (None, Some(r)) => RootfsSource::Shared(r.clone()),
        (None, None) => {
            let mut rreq = rootfs_request(
                &args.rootfs_options,
                PathBuf::new(),
                req.epoch,
                args.world_readable,
            )?;
            if rreq.password.is_none() && rreq.interactive {
                let p = boardsmith::rootfs::users::prompt_password(
                    "Password for the default user of every board",
                )
                .map_err(|e| Failure::usage(e.to_string()))?;
                rreq.password = Some(boardsmith::rootfs::Password::Plain(p));
            }
            // Boards build side by side: no more prompts (secret settings need a value or `random`).
            rreq.interactive = false;
            RootfsSource::Build(Box::new(rreq))
        }
    })
}

/// One board of `build --all` is done: its result, warnings and generated secrets' files.
fn board_done(progress: &Progress, r: &BoardResult) {
    match progress.mode() {
        Mode::None => {}
        Mode::Json => progress.json_event("board", r),
        Mode::Bar | Mode::Plain => {
            progress.line(&format!(
                "boardsmith: {} {} ({:.1} s{})",
                if r.ok { "built" } else { "FAILED" },
                r.board,
                r.seconds,
                match (&r.base_key, &r.base_cache) {
                    (Some(k), Some(c)) => format!("; base {} {c}", &k[..12.min(k.len())]),
                    _ => String::new(),
                }
            ));
            for w in &r.warnings {
                progress.line(&format!("warning: [{}] {w}", r.board));
            }
            for f in &r.secret_files {
                progress.line(&format!(
                    "  secret    [{}] generated: {} (mode 0600; keep it, it is printed nowhere)",
                    r.board,
                    f.display()
                ));
            }
        }
    }
}

/// The table of `build --all` on stderr.
fn print_summary(summary: &BatchSummary, built_bases: bool) {
    let mut table = format!("{:<20} {:<7} {:>8}  result\n", "board", "status", "seconds");
    for b in &summary.boards {
        let result = match (&b.image, &b.error) {
            (Some(i), _) => i.display().to_string(),
            (_, Some(e)) => e.clone(),
            _ => String::new(),
        };
        table.push_str(&format!(
            "{:<20} {:<7} {:>8.1}  {result}\n",
            b.board,
            if b.ok { "ok" } else { "FAILED" },
            b.seconds
        ));
    }
    eprint!("{table}");
    if built_bases {
        eprintln!(
            "bases: {} distinct, {} built by mmdebstrap in this run; board layers: {} distinct, {} built (the others from the cache)",
            summary.bases, summary.bases_built, summary.layers, summary.layers_built
        );
    }
}
