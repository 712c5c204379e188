//! `boardsmith kernel`: the board's kernel cross-built (defconfig + checked fragments) into a staging tree.

use std::path::PathBuf;

use boardsmith::kconfig::configure::Event;
use boardsmith::profile::Catalog;

use super::args::KernelArgs;
use super::exit::Failure;
use super::kconfig::{check_failure, merged_fragments, print_check, work_dir};
use super::progress::Progress;

pub fn run(catalog: &Catalog, args: KernelArgs) -> Result<(), Failure> {
    use boardsmith::kconfig::configure::{ConfigureRequest, configure};
    use boardsmith::kconfig::kernel_build::{BuildRequest, build, check_destination};
    let (profile, merged) = merged_fragments(catalog, &args.board, &args.common)?;
    let staging = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("out").join(format!("{}-kernel", profile.name)));
    check_destination(&staging).map_err(Failure::from)?;
    if args.jobs == Some(0) {
        return Err(Failure::usage("--jobs must be at least 1"));
    }
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let work = work_dir(&args.common);
    let progress = Progress::new(args.progress);
    let req = ConfigureRequest {
        profile: &profile,
        kernel_src: &args.kernel_src,
        work_dir: &work,
        log: args.log.as_deref(),
        log_name: "kernel-build.log",
    };
    let configured = configure(&req, &merged, &|e| show_event(&progress, e));
    let (configured, kb) = match configured {
        Ok(c) => c,
        Err(e) => {
            progress.finish();
            return Err(Failure::from(e));
        }
    };
    progress.suspend(|| print_check(&configured, args.common.verbose, &mut std::io::stderr()));
    if !configured.report.passed() {
        progress.finish();
        return Err(check_failure(&configured));
    }
    let result = build(
        &profile,
        &kb,
        &configured,
        &BuildRequest {
            staging: &staging,
            jobs,
        },
        &|e| show_event(&progress, e),
    );
    progress.finish();
    let report = result.map_err(Failure::from)?;
    if args.common.json {
        let v = serde_json::json!({ "check": configured, "build": report });
        println!("{v:#}");
    }
    eprintln!(
        "installed linux {} for {} into {} in {:.0} s: {}, {} device trees{}, {} modules{}\n  log {}",
        report.release,
        report.board,
        report.staging.display(),
        report.seconds,
        report.kernel,
        report.dtbs,
        report
            .dtb_dir
            .as_deref()
            .map(|d| format!(" in {d}"))
            .unwrap_or_default(),
        report.modules,
        report
            .modules_dir
            .as_deref()
            .map(|d| format!(" in {d}"))
            .unwrap_or_default(),
        report.log.display()
    );
    Ok(())
}

/// The kernel build's events: its phases as steps, every compile step on the bar, and one line per
/// 500 of them in the other modes.
fn show_event(progress: &Progress, e: Event<'_>) {
    match e {
        Event::Phase(p) => progress.step(p),
        Event::Waiting(p) => progress.step(&format!(
            "waiting for another boardsmith using {}",
            p.display()
        )),
        Event::Step { count, line } if count % 500 == 0 => {
            progress.step(&format!("{count} build steps, now {line}"))
        }
        Event::Step { count, line } => progress.detail(&format!("[{count}] {line}")),
    }
}
