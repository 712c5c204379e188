//! `boardsmith kconfig`: the board's kernel config fragments merged and, with --kernel-src, checked
//! through the kernel's own Kconfig.

use std::io::Write;
use std::path::PathBuf;

use boardsmith::profile::{Catalog, Profile};

use super::args::{KconfigArgs, KernelCommon};
use super::exit::Failure;
use super::load;

/// Loads the board and merges its fragments, printing override warnings (and redundancies with -v).
pub fn merged_fragments(
    catalog: &Catalog,
    board: &str,
    common: &KernelCommon,
) -> Result<(Profile, boardsmith::kconfig::merge::Merged), Failure> {
    use boardsmith::kconfig::{locate, merge};
    let profile = load(catalog, board)?;
    let wanted = boardsmith::rootfs::features::kernel_fragments_wanted(&common.features);
    let mut extra = locate::extra_fragments(&profile, &wanted);
    extra.extend(common.fragments.iter().cloned());
    let refs = locate::refs_for(&profile, &extra);
    let fragments = locate::load_all(&refs)
        .map_err(|e| Failure::from(boardsmith::kconfig::KconfigError::from(e)))?;
    let merged = merge::merge(&fragments);
    for n in merged.overrides() {
        eprintln!("warning: {n}");
    }
    if common.verbose {
        for n in merged.redundancies() {
            eprintln!("note: {n}");
        }
    }
    Ok((profile, merged))
}

pub fn work_dir(common: &KernelCommon) -> PathBuf {
    common
        .work_dir
        .clone()
        .unwrap_or_else(boardsmith::kconfig::kbuild::default_work_dir)
}

pub fn print_check(c: &boardsmith::kconfig::configure::Configured, all: bool, out: &mut dyn Write) {
    use boardsmith::kconfig::check::Status;
    let r = &c.report;
    for o in &r.defconfig_overrides {
        eprintln!("warning: {o}");
    }
    if !c.kconfig_reader_warnings.is_empty() {
        eprintln!(
            "warning: boardsmith's Kconfig reader skipped {} line(s) of this tree it did not understand \
             (listed in {}); reasons given for failures may be incomplete",
            c.kconfig_reader_warnings.len(),
            c.log.display()
        );
    }
    let _ = writeln!(
        out,
        "{}: linux {} ARCH={} {} + fragments ({})",
        c.board,
        c.kernel_version,
        c.arch,
        c.defconfig,
        c.build_dir.display()
    );
    for s in &r.symbols {
        if all || s.status != Status::Kept {
            let _ = writeln!(out, "{s}");
        }
    }
    let _ = writeln!(
        out,
        "{} requested: {} kept, {} optional not kept, {} failed; .config: {}; log: {}",
        r.symbols.len(),
        r.count(Status::Kept),
        r.count(Status::Optional),
        r.count(Status::Failed),
        c.config.display(),
        c.log.display()
    );
}

pub fn check_failure(c: &boardsmith::kconfig::configure::Configured) -> Failure {
    let n = c.report.count(boardsmith::kconfig::check::Status::Failed);
    Failure::failed(format!(
        "{n} requested kernel config symbol(s) did not survive Kconfig for {} (lines marked FAILED); \
         fix the fragments or mark a symbol optional with `# boardsmith: optional` on the line before it",
        c.board
    ))
}

pub fn run(catalog: &Catalog, args: KconfigArgs) -> Result<(), Failure> {
    use boardsmith::kconfig::configure::{ConfigureRequest, Event, configure};
    let (profile, merged) = merged_fragments(catalog, &args.board, &args.common)?;
    let text = merged.render(&format!(
        "kernel config fragment for {} ({})",
        profile.name, profile.kernel.defconfig
    ));
    if let Some(out) = &args.out {
        let pending = boardsmith::output::write_atomic(out, text.as_bytes())
            .map_err(|e| Failure::failed(format!("cannot write {}: {e}", out.display())))?;
        pending
            .commit()
            .map_err(|e| Failure::failed(format!("cannot write {}: {e}", out.display())))?;
    }
    let Some(src) = &args.kernel_src else {
        if args.common.json {
            let entries: Vec<serde_json::Value> = merged
                .entries
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "symbol": e.entry.symbol,
                        "value": e.entry.value,
                        "at": merged.at(e),
                        "optional": e.entry.optional,
                    })
                })
                .collect();
            let v = serde_json::json!({
                "board": profile.name,
                "defconfig": profile.kernel.defconfig,
                "fragments": merged.fragments.iter().map(|(n, o)| serde_json::json!({"name": n, "origin": o})).collect::<Vec<_>>(),
                "entries": entries,
                "notes": merged.notes,
            });
            println!("{v:#}");
        } else if args.out.is_none() {
            print!("{text}");
        }
        return Ok(());
    };
    let work = work_dir(&args.common);
    let req = ConfigureRequest {
        profile: &profile,
        kernel_src: src,
        work_dir: &work,
        log: None,
        log_name: "kconfig.log",
    };
    let (configured, _kb) = configure(&req, &merged, &|e| match e {
        Event::Phase(p) => eprintln!("boardsmith: {p}"),
        Event::Waiting(p) => eprintln!(
            "boardsmith: waiting for another boardsmith using {}",
            p.display()
        ),
        Event::Step { .. } => {}
    })
    .map_err(Failure::from)?;
    if args.common.json {
        let v = serde_json::json!({ "check": configured, "merge_notes": merged.notes });
        println!("{v:#}");
    } else {
        print_check(&configured, true, &mut std::io::stdout().lock());
    }
    if configured.report.passed() {
        Ok(())
    } else {
        Err(check_failure(&configured))
    }
}
