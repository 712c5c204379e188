//! `boardsmith man`: one page per command plus the main page, each rendered by man-db's `man
//! --warnings -l` (groff) without a warning, with an EXIT STATUS section, and every page a page
//! refers to present.

mod cli_definition;
mod support;

use std::path::Path;
use std::process::{Command, Output};

use clap::CommandFactory;
use support::{boardsmith, run_ok};

/// `man --warnings -l PAGE`, formatted at a fixed width; a missing `man` fails naming its package.
fn man(page: &Path) -> Output {
    Command::new("man")
        .args(["--warnings", "-l"])
        .arg(page)
        // Wide enough that no line of the tests' sections is broken or hyphenated.
        .env("MANWIDTH", "400")
        .env("LC_ALL", "C.UTF-8")
        .env_remove("MANPAGER")
        .env_remove("PAGER")
        .output()
        .unwrap_or_else(|e| panic!("cannot run man (package man-db, with groff-base): {e}"))
}

/// The text of a section of a rendered page (from its heading to the next one), its lines joined by
/// spaces.
fn section(text: &str, heading: &str) -> String {
    let mut lines = text.lines().skip_while(|l| *l != heading);
    assert!(lines.next().is_some(), "no {heading} section in:\n{text}");
    lines
        .take_while(|l| l.is_empty() || l.starts_with(' '))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn every_command_has_a_page_that_man_renders_cleanly() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("man1");
    run_ok(boardsmith().args(["man", "-o"]).arg(&dir));
    // Every visible command and nested command (`cache list`), from clap.
    fn pages(cmd: &clap::Command, prefix: &str, out: &mut Vec<String>) {
        for c in cmd.get_subcommands().filter(|c| !c.is_hide_set()) {
            let name = format!("{prefix}-{}", c.get_name());
            out.push(format!("{name}.1"));
            pages(c, &name, out);
        }
    }
    let mut expected = vec!["boardsmith.1".to_string()];
    pages(&cli_definition::Cli::command(), "boardsmith", &mut expected);
    assert!(expected.contains(&"boardsmith-cache-list.1".to_string()));
    expected.sort();
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    assert_eq!(found, expected);
    let reference = regex::Regex::new(r"\b(boardsmith(?:-[a-z-]+)?)\(1\)").unwrap();
    for name in &found {
        let page = dir.join(name);
        let o = man(&page);
        let text = String::from_utf8_lossy(&o.stdout);
        let warnings = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "man {name}: {}: {warnings}", o.status);
        assert!(warnings.is_empty(), "man --warnings {name}:\n{warnings}");
        let exit = section(&text, "EXIT STATUS");
        assert!(
            exit.contains("0 ") && exit.contains("2 invalid usage"),
            "{name}: {exit}"
        );
        let see_also = section(&text, "SEE ALSO");
        assert!(
            reference.is_match(&see_also),
            "{name}: SEE ALSO {see_also:?}"
        );
        // Every page referred to anywhere (SUBCOMMANDS, SEE ALSO) exists.
        for r in reference.captures_iter(&text) {
            assert!(
                dir.join(format!("{}.1", &r[1])).exists(),
                "{name} refers to {}(1)",
                &r[1]
            );
        }
        // The page printed alone is the same page.
        let command = name
            .strip_prefix("boardsmith-")
            .and_then(|n| n.strip_suffix(".1"));
        let mut c = boardsmith();
        c.arg("man").args(command);
        let alone = run_ok(&mut c);
        assert_eq!(
            alone.stdout,
            std::fs::read(&page).unwrap(),
            "boardsmith man {command:?}"
        );
    }
    // Each command's own contract, from its help.
    let text = |n: &str| String::from_utf8_lossy(&man(&dir.join(n)).stdout).into_owned();
    let write = text("boardsmith-write.1");
    let exit = section(&write, "EXIT STATUS");
    assert!(
        exit.contains("3 the download failed") && exit.contains("128+N"),
        "{exit}"
    );
    assert!(
        section(&write, "URL SOURCES").contains("--retries"),
        "{write}"
    );
    for n in [
        "boardsmith-build.1",
        "boardsmith-rootfs.1",
        "boardsmith-release.1",
        "boardsmith-boot.1",
    ] {
        let t = text(n);
        assert!(section(&t, "EXIT STATUS").contains("128+N"), "{n}: {t}");
    }
}

#[test]
fn an_unknown_page_is_a_usage_error() {
    let o = boardsmith().args(["man", "nosuch"]).output().unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(
        e.contains("no man page for \"nosuch\"") && e.contains("build"),
        "{e}"
    );
    let o = boardsmith()
        .args(["man", "build", "-o", "x"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}
