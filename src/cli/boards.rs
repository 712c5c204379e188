//! `boardsmith boards`: the board profiles, embedded and in --boards-dir.

use std::io::Write as _;

use boardsmith::profile::Catalog;

use super::exit::{Failure, pretty_json};

pub fn run(catalog: &Catalog, json: bool) -> Result<(), Failure> {
    let boards = catalog.list()?;
    let mut out = std::io::stdout().lock();
    if json {
        let _ = writeln!(out, "{}", pretty_json(&boards)?);
    } else {
        for b in boards {
            let _ = writeln!(out, "{:<20} {:<6} {}", b.name, b.arch, b.description);
        }
    }
    Ok(())
}
