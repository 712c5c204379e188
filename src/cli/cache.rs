//! `boardsmith cache list|prune`: the cache of root filesystem bases and board layers mmdebstrap built.

use std::io::Write as _;
use std::path::PathBuf;

use boardsmith::rootfs::cache::parse_age;
use boardsmith::rootfs::layer;
use boardsmith::size::Human;

use super::args::{CacheAction, CacheArgs, CacheDirOption};
use super::exit::{Failure, pretty_json};

pub fn run(args: CacheArgs) -> Result<(), Failure> {
    match args.action {
        CacheAction::List { json, dir } => list(json, &dir),
        CacheAction::Prune {
            older_than,
            json,
            dir,
        } => prune(older_than.as_deref(), json, &dir),
    }
}

fn root(d: &CacheDirOption) -> PathBuf {
    d.cache
        .clone()
        .unwrap_or_else(boardsmith::rootfs::mmdebstrap::default_cache)
}

fn when(t: Option<u64>) -> String {
    t.map(boardsmith::time::utc).unwrap_or_else(|| "-".into())
}

/// `cache list`: a table on stdout (bases, then board layers), totals and leftovers on stderr.
fn list(json: bool, dir: &CacheDirOption) -> Result<(), Failure> {
    let all = layer::list(&root(dir));
    if json {
        println!("{}", pretty_json(&all)?);
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{:<6} {:<14} {:<6} {:<10} {:>5} {:>10}  {:<24} {:<20} state",
        "kind", "key", "arch", "suite", "pkgs", "size", "last used", "built for"
    );
    for (kind, listing) in [("base", &all.bases), ("layer", &all.layers)] {
        for e in &listing.entries {
            let _ = writeln!(
                out,
                "{kind:<6} {:<14} {:<6} {:<10} {:>5} {:>10}  {:<24} {:<20} {}",
                &e.key[..12],
                e.arch.as_deref().unwrap_or("-"),
                e.suite.as_deref().unwrap_or("-"),
                e.packages
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "-".into()),
                Human(e.size).to_string(),
                when(e.last_used),
                e.board.as_deref().unwrap_or("-"),
                e.state
            );
        }
    }
    for (kind, listing) in [("bases", &all.bases), ("board layers", &all.layers)] {
        eprintln!(
            "{} {kind}, {} in {}",
            listing.entries.len(),
            Human(listing.total_bytes),
            listing.dir.display()
        );
        for t in &listing.temporaries {
            eprintln!(
                "  {t}: an interrupted or running build's (never used; `boardsmith cache prune` removes it once no build holds its key)"
            );
        }
    }
    Ok(())
}

/// `cache prune`: what was removed and kept (bases and board layers), on stderr.
fn prune(older_than: Option<&str>, json: bool, dir: &CacheDirOption) -> Result<(), Failure> {
    let age = older_than
        .map(parse_age)
        .transpose()
        .map_err(|e| Failure::usage(e.to_string()))?;
    let all = layer::prune(&root(dir), age);
    if json {
        println!("{}", pretty_json(&all)?);
        return Ok(());
    }
    for (kind, pruned) in [("bases", &all.bases), ("board layers", &all.layers)] {
        for e in &pruned.removed {
            eprintln!(
                "removed {} ({} {}, {}, last used {})",
                &e.key[..12],
                e.arch.as_deref().unwrap_or("?"),
                e.suite.as_deref().unwrap_or("?"),
                Human(e.size),
                when(e.last_used)
            );
        }
        for k in &pruned.in_use {
            eprintln!("kept {} (a build is using it)", &k[..12]);
        }
        for t in &pruned.temporaries_removed {
            eprintln!("removed {t} (left by an interrupted build)");
        }
        eprintln!(
            "freed {}; {} {kind} kept in {}",
            Human(pruned.removed_bytes),
            pruned.kept + pruned.in_use.len(),
            pruned.dir.display()
        );
    }
    Ok(())
}
