//! Running mmdebstrap: the command line (suite, mirrors, architecture, variant, packages, options),
//! hooks that keep a package cache outside the build (a second build downloads no package) and put the
//! initramfs configuration in place before the kernel is installed, and the log it writes, read for
//! progress, downloads and the reason of a failure.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::features::AptSelection;
use crate::profile::Arch;

#[derive(Debug, thiserror::Error)]
pub enum MmdebstrapError {
    #[error("cannot start mmdebstrap: {0}; install it with: apt-get install mmdebstrap")]
    Spawn(#[source] std::io::Error),
    #[error(
        "apt could not download from the mirror {mirror}: {detail}\n{hint}; mmdebstrap's log: {log}"
    )]
    Mirror {
        mirror: String,
        detail: String,
        hint: String,
        log: PathBuf,
    },
    #[error("mmdebstrap failed ({status}); last lines of its log {log}:\n{tail}")]
    Failed {
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// mmdebstrap in its own mount namespace (as root: real owners, and nothing stays mounted if it
    /// is killed); the default.
    Unshare,
    /// Plain chroot as root.
    Root,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Unshare => "unshare",
            Mode::Root => "root",
        }
    }
}

/// Everything one mmdebstrap run needs.
#[derive(Debug, Clone)]
pub struct Run {
    pub mode: Mode,
    pub arch: Arch,
    pub apt: AptSelection,
    /// One-line `deb ...` sources, in order.
    pub sources: Vec<String>,
    pub cache: PathBuf,
    /// Files (in the work directory) put into the chroot before the remaining packages install.
    pub uploads: Vec<(PathBuf, String)>,
    /// debconf answers (a file in the work directory) given before the remaining packages install.
    pub debconf: Option<PathBuf>,
    /// Shell commands run once everything is installed (`$1` is the chroot), before the cache is saved.
    pub customize_hooks: Vec<String>,
    pub output: PathBuf,
    pub tmpdir: PathBuf,
    pub log: PathBuf,
    pub epoch: u64,
    /// A board layer's base tarball, unpacked into the chroot first (see [`super::layer`]).
    pub base_tar: Option<PathBuf>,
}

/// Everything a base build gives mmdebstrap, without any path of this machine: with the archive's state,
/// mmdebstrap's version and the keyring (see [`super::cache`]), what mmdebstrap produces is a function of
/// this. Nothing in it is board configuration that customization applies later, and nothing is secret.
#[derive(Debug, Clone)]
pub struct BasePlan {
    pub mode: Mode,
    pub arch: Arch,
    pub apt: AptSelection,
    /// The mirror and security archive the sources name (snapshot.debian.org's with a snapshot).
    pub mirror: String,
    pub security: Option<String>,
    /// snapshot.debian.org timestamp, when the archive is pinned.
    pub snapshot: Option<String>,
    /// Files put into the chroot before the remaining packages install: (path inside, content).
    pub uploads: Vec<(String, String)>,
    /// debconf answers given before the remaining packages install.
    pub debconf: Option<String>,
    /// boardsmith's initramfs customize hook (`__initramfs-hook`), when the board's modules are derived.
    pub initramfs_hook: Option<InitramfsHook>,
    /// A board layer's: the base tarball it refines (see [`super::layer`]); None for a base.
    pub layer_on: Option<PathBuf>,
}

/// The customize hook that derives the initramfs modules inside the build: this program, and its input
/// (JSON, uploaded into the chroot).
#[derive(Debug, Clone)]
pub struct InitramfsHook {
    pub program: PathBuf,
    pub input: String,
    /// What the cache key covers of the input: without the device tree by default, so that boards whose
    /// derived modules are equal share a base (a hit is checked against the board's own derivation, see
    /// `rootfs::build_rootfs`); the whole input for a base of one device tree.
    pub keyed: String,
}

/// Where one run's files are on this machine.
#[derive(Debug, Clone)]
pub struct RunPaths {
    /// The package cache of the architecture (archives/ and lists/).
    pub cache: PathBuf,
    /// A private work directory: hook files and mmdebstrap's TMPDIR.
    pub work: PathBuf,
    pub output: PathBuf,
    pub log: PathBuf,
}

impl BasePlan {
    /// The apt sources, one `deb ...` line each.
    pub fn sources(&self) -> Vec<String> {
        sources(
            &self.mirror,
            self.security.as_deref(),
            &self.apt.suite,
            &self.apt.components,
            self.snapshot.is_some(),
        )
    }

    /// (archive URL, suite) of every source: the Release files apt reads.
    pub fn archives(&self) -> Vec<(String, String)> {
        let mirror = self.mirror.trim_end_matches('/').to_string();
        let suite = &self.apt.suite;
        let mut v = vec![(mirror.clone(), suite.clone())];
        if has_updates(suite) {
            v.push((mirror, format!("{suite}-updates")));
            if let Some(sec) = &self.security {
                v.push((
                    sec.trim_end_matches('/').to_string(),
                    format!("{suite}-security"),
                ));
            }
        }
        v
    }

    fn upload_path(work: &Path, i: usize) -> PathBuf {
        work.join(format!("upload-{i}"))
    }

    /// The run, its hook files at `paths.work` (not written: see [`BasePlan::prepare`]).
    pub fn run(&self, paths: &RunPaths, epoch: u64) -> Run {
        Run {
            mode: self.mode,
            arch: self.arch,
            apt: self.apt.clone(),
            sources: self.sources(),
            cache: paths.cache.clone(),
            uploads: self
                .uploads
                .iter()
                .enumerate()
                .map(|(i, (inside, _))| (Self::upload_path(&paths.work, i), format!("/{inside}")))
                .collect(),
            debconf: self.debconf.as_ref().map(|_| paths.work.join("debconf")),
            customize_hooks: match (&self.initramfs_hook, &self.layer_on) {
                (Some(h), _) => super::initramfs::hook_commands(
                    &h.program,
                    &super::initramfs::hook_input_path(&paths.work),
                ),
                (None, Some(_)) => vec![super::layer::REGENERATE.into()],
                (None, None) => Vec::new(),
            },
            output: paths.output.clone(),
            tmpdir: paths.work.clone(),
            log: paths.log.clone(),
            epoch,
            base_tar: self.layer_on.clone(),
        }
    }

    /// Writes the hook files into `paths.work` and gives the run.
    pub fn prepare(&self, paths: &RunPaths, epoch: u64) -> Result<Run, MmdebstrapError> {
        let run = self.run(paths, epoch);
        let write = |p: &Path, text: &str| {
            std::fs::write(p, text).map_err(|source| MmdebstrapError::Io {
                context: format!("writing {}", p.display()),
                source,
            })
        };
        for ((outside, _), (_, text)) in run.uploads.iter().zip(&self.uploads) {
            write(outside, text)?;
        }
        if let (Some(p), Some(text)) = (&run.debconf, &self.debconf) {
            write(p, text)?;
        }
        if let Some(h) = &self.initramfs_hook {
            write(&super::initramfs::hook_input_path(&paths.work), &h.input)?;
        }
        Ok(run)
    }

    /// The command line with this machine's paths replaced by fixed names: what the cache key covers.
    pub fn canonical_args(&self, epoch: u64) -> Vec<String> {
        let paths = RunPaths {
            cache: PathBuf::from("/CACHE"),
            work: PathBuf::from("/WORK"),
            output: PathBuf::from("/OUTPUT.tar"),
            log: PathBuf::from("/LOG"),
        };
        // The hook's program is this machine's path too; what it is, is in the key apart.
        let mut plan = self.clone();
        if let Some(h) = &mut plan.initramfs_hook {
            h.program = PathBuf::from("/BOARDSMITH");
        }
        if plan.layer_on.is_some() {
            plan.layer_on = Some(PathBuf::from("/BASE.tar"));
        }
        plan.run(&paths, epoch)
            .args()
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }
}

/// Suites that have -updates and -security companions.
fn has_updates(suite: &str) -> bool {
    !matches!(suite, "sid" | "unstable" | "experimental" | "rc-buggy")
}

/// The apt sources for a suite: the mirror, its -updates, and the security archive.
pub fn sources(
    mirror: &str,
    security: Option<&str>,
    suite: &str,
    components: &[String],
    snapshot: bool,
) -> Vec<String> {
    let comps = components.join(" ");
    let opts = if snapshot {
        "[check-valid-until=no] "
    } else {
        ""
    };
    let mut v = vec![format!("deb {opts}{mirror} {suite} {comps}")];
    if has_updates(suite) {
        v.push(format!("deb {opts}{mirror} {suite}-updates {comps}"));
        if let Some(sec) = security {
            v.push(format!("deb {opts}{sec} {suite}-security {comps}"));
        }
    }
    v
}

/// The environment variable that carries the package cache's path to mmdebstrap's shell hooks.
pub const CACHE_ENV: &str = "BOARDSMITH_APT_CACHE";

/// Single-quotes for sh and for Perl's shellwords (which mmdebstrap's special hooks use).
pub(crate) fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl Run {
    /// The mmdebstrap arguments (without the program name). Paths never reach a shell unquoted: shell
    /// hooks read the cache from the environment ([`CACHE_ENV`], set by [`Run::run`]); mmdebstrap's
    /// special hooks (`sync-in`, `upload`, ...) split their line like a shell (Perl's shellwords), so
    /// they get every path single-quoted.
    pub fn args(&self) -> Vec<OsString> {
        let cache = |sub: &str| sh_quote(&self.cache.join(sub).display().to_string());
        let apt = &self.apt;
        let mut a: Vec<String> = vec![
            format!("--mode={}", self.mode.as_str()),
            format!("--variant={}", apt.variant),
            format!("--architectures={}", self.arch.debian()),
            format!("--components={}", apt.components.join(",")),
            "--format=tar".into(),
            "--verbose".into(),
            // Keep the downloaded essential packages so the customize hook can copy them to the cache.
            "--skip=essential/unlink".into(),
        ];
        if !apt.packages.is_empty() {
            a.push(format!("--include={}", apt.packages.join(",")));
        }
        for o in &apt.apt_options {
            a.push(format!("--aptopt={o}"));
        }
        for o in &apt.dpkg_options {
            a.push(format!("--dpkgopt={o}"));
        }
        // A base is built without /dev (a board layer's unshared tar cannot make device nodes); a layer
        // unpacks it first and adds /dev to its own output (see [`super::layer`]).
        match &self.base_tar {
            Some(base) => {
                a.push(format!(
                    "--setup-hook=tar-in {} /",
                    sh_quote(&base.display().to_string())
                ));
                // Where mmdebstrap makes the device nodes the build uses (not part of its output).
                a.push("--setup-hook=mkdir -p \"$1\"/dev".into());
            }
            None => a.push("--skip=output/dev".into()),
        }
        // Package cache: copied in before `apt-get update` (lists) and the downloads (archives), copied
        // back out once everything is installed.
        a.push(format!(
            "--setup-hook=mkdir -p \"${CACHE_ENV}\"/archives/partial \"${CACHE_ENV}\"/lists/partial \"$1\"/var/cache/apt/archives \"$1\"/var/lib/apt/lists"
        ));
        a.push(format!(
            "--setup-hook=sync-in {} /var/cache/apt/archives",
            cache("archives")
        ));
        a.push(format!(
            "--setup-hook=sync-in {} /var/lib/apt/lists",
            cache("lists")
        ));
        let mut dirs: Vec<String> = self
            .uploads
            .iter()
            .filter_map(|(_, inside)| Path::new(inside).parent().map(|p| p.display().to_string()))
            .collect();
        dirs.dedup();
        if !dirs.is_empty() {
            let mk: Vec<String> = dirs
                .iter()
                .map(|d| format!("\"$1\"{}", sh_quote(d)))
                .collect();
            a.push(format!("--essential-hook=mkdir -p {}", mk.join(" ")));
        }
        for (outside, inside) in &self.uploads {
            a.push(format!(
                "--essential-hook=upload {} {}",
                sh_quote(&outside.display().to_string()),
                sh_quote(inside)
            ));
        }
        if let Some(d) = &self.debconf {
            a.push(format!(
                "--essential-hook=upload {} /tmp/boardsmith-debconf",
                sh_quote(&d.display().to_string())
            ));
            a.push(
                "--essential-hook=chroot \"$1\" debconf-set-selections /tmp/boardsmith-debconf && rm -f \"$1\"/tmp/boardsmith-debconf"
                    .into(),
            );
        }
        for h in &self.customize_hooks {
            a.push(format!("--customize-hook={h}"));
        }
        a.push(format!(
            "--customize-hook=sync-out /var/cache/apt/archives {}",
            cache("archives")
        ));
        a.push(format!(
            "--customize-hook=sync-out /var/lib/apt/lists {}",
            cache("lists")
        ));
        // What sync-in brought keeps the package cache's timestamps (its `partial` directories, from
        // whichever build filled the cache first), and would make the base depend on the cache's
        // history: everything left in those trees gets SOURCE_DATE_EPOCH.
        a.push(
            "--customize-hook=find \"$1\"/var/cache/apt/archives \"$1\"/var/lib/apt/lists -exec touch -h -d \"@$SOURCE_DATE_EPOCH\" {} +"
                .into(),
        );
        a.push(apt.suite.clone());
        a.push(self.output.display().to_string());
        a.extend(self.sources.iter().cloned());
        a.into_iter().map(OsString::from).collect()
    }

    /// Runs mmdebstrap, streaming `I:` lines to `progress` and everything to the log.
    pub fn run(&self, progress: &dyn Fn(&str)) -> Result<Downloads, MmdebstrapError> {
        let io = |context: String| move |source| MmdebstrapError::Io { context, source };
        let mut log = std::fs::File::create(&self.log)
            .map_err(io(format!("creating {}", self.log.display())))?;
        let _ = writeln!(
            log,
            "# mmdebstrap {}",
            self.args()
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let mut child = Command::new("mmdebstrap")
            .args(self.args())
            .env("SOURCE_DATE_EPOCH", self.epoch.to_string())
            .env(CACHE_ENV, &self.cache)
            .env("TMPDIR", &self.tmpdir)
            .env("LC_ALL", "C.UTF-8")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(MmdebstrapError::Spawn)?;
        let mut downloads = Downloads::default();
        let mut tail: std::collections::VecDeque<String> = std::collections::VecDeque::new();
        let mut fetch_errors: Vec<String> = Vec::new();
        if let Some(err) = child.stderr.take() {
            for line in BufReader::new(err).split(b'\n') {
                let line = match line {
                    Ok(l) => String::from_utf8_lossy(&l).into_owned(),
                    Err(_) => break,
                };
                let _ = writeln!(log, "{line}");
                for part in line.split('\r') {
                    let part = part.trim_end();
                    if let Some(rest) = part.strip_prefix("I: ") {
                        progress(rest);
                    }
                    downloads.observe(part);
                    if is_fetch_error(part) {
                        fetch_errors.push(part.to_string());
                    }
                }
                tail.push_back(line);
                if tail.len() > 25 {
                    tail.pop_front();
                }
            }
        }
        let status = child.wait().map_err(io("waiting for mmdebstrap".into()))?;
        let _ = log.flush();
        if status.success() {
            return Ok(downloads);
        }
        let best = fetch_errors
            .iter()
            .find(|l| l.contains("Failed to fetch"))
            .or(fetch_errors.first());
        if let Some(first) = best {
            let detail = first
                .trim_start_matches("E: ")
                .trim_start_matches("W: ")
                .to_string();
            let url = detail
                .split_whitespace()
                .find(|w| w.contains("://"))
                .unwrap_or("");
            let mirror = url
                .split("/dists/")
                .next()
                .and_then(|u| u.split("/pool/").next())
                .unwrap_or(url)
                .to_string();
            let inconsistent =
                detail.contains("unexpected size") || detail.contains("Hash Sum mismatch");
            let hint = if inconsistent && mirror.contains("security") {
                "the mirror's index is inconsistent (a sync in progress?): retry later, use another mirror, or build without the security archive (--security-mirror '')"
            } else if inconsistent {
                "the mirror's index is inconsistent (a sync in progress?): retry later or use another mirror (--mirror URL)"
            } else {
                "check --mirror (or the profile's rootfs.mirror), the network and any proxy settings"
            };
            return Err(MmdebstrapError::Mirror {
                mirror,
                detail,
                hint: hint.to_string(),
                log: self.log.clone(),
            });
        }
        Err(MmdebstrapError::Failed {
            status: status.to_string(),
            log: self.log.clone(),
            tail: tail.into_iter().collect::<Vec<_>>().join("\n"),
        })
    }
}

fn is_fetch_error(line: &str) -> bool {
    let l = line.trim_start();
    (l.starts_with("E: ") || l.starts_with("W: ") || l.starts_with("Err:"))
        && (l.contains("Failed to fetch")
            || l.contains("Could not connect")
            || l.contains("Unable to connect")
            || l.contains("Temporary failure resolving")
            || l.contains("Could not resolve")
            || l.contains("Connection refused")
            || l.contains("Connection failed")
            || l.contains("unexpected size")
            || l.contains("Hash Sum mismatch")
            || l.contains("404  Not Found"))
}

/// What apt fetched, from its `Get:`/`Hit:` lines.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Downloads {
    /// Package files (.deb) downloaded.
    pub packages: u64,
    pub package_bytes: u64,
    /// Index files (Release, Packages, ...) downloaded.
    pub indexes: u64,
    pub index_bytes: u64,
    /// Indexes found unchanged.
    pub hits: u64,
}

/// "151 kB", "8506 kB", "2,345 B", "1.2 MB" → bytes.
fn parse_size(s: &str) -> u64 {
    let s = s.trim().trim_start_matches('[').trim_end_matches(']');
    let mut parts = s.split_whitespace();
    let num: f64 = parts
        .next()
        .map(|n| n.replace(',', ""))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    let mult = match parts.next().unwrap_or("B") {
        "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        _ => 1.0,
    };
    (num * mult) as u64
}

impl Downloads {
    pub fn observe(&mut self, line: &str) {
        if line.starts_with("Hit:") {
            self.hits += 1;
            return;
        }
        let Some(rest) = line.strip_prefix("Get:") else {
            return;
        };
        let size = rest.rfind('[').map(|i| parse_size(&rest[i..])).unwrap_or(0);
        let words: Vec<&str> = rest.split_whitespace().collect();
        let index = words.iter().any(|w| {
            matches!(
                *w,
                "InRelease" | "Release" | "Release.gpg" | "Packages" | "Sources"
            ) || w.starts_with("Translation")
                || w.starts_with("Contents")
        });
        if index {
            self.indexes += 1;
            self.index_bytes += size;
        } else {
            self.packages += 1;
            self.package_bytes += size;
        }
    }

    pub fn add(&mut self, other: &Downloads) {
        self.packages += other.packages;
        self.package_bytes += other.package_bytes;
        self.indexes += other.indexes;
        self.index_bytes += other.index_bytes;
        self.hits += other.hits;
    }
}

/// The default root filesystem cache: the cache directory ([`crate::output::user_cache_dir`]); packages go to
/// its `apt/ARCH`, logs to `logs/`, base root filesystems to `bases/`.
pub fn default_cache() -> PathBuf {
    crate::output::user_cache_dir()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> Run {
        Run {
            mode: Mode::Unshare,
            arch: Arch::Armhf,
            apt: AptSelection {
                suite: "bookworm".into(),
                variant: "apt".into(),
                components: vec!["main".into()],
                packages: vec!["systemd".into(), "linux-image-armmp".into()],
                apt_options: vec!["Acquire::Languages \"none\"".into()],
                dpkg_options: vec![],
            },
            sources: sources(
                "http://deb.debian.org/debian",
                Some("http://deb.debian.org/debian-security"),
                "bookworm",
                &["main".into(), "non-free-firmware".into()],
                false,
            ),
            cache: PathBuf::from("/c a/che"),
            uploads: vec![(
                PathBuf::from("/w/m o'd"),
                "/etc/initramfs-tools/modules".into(),
            )],
            debconf: None,
            customize_hooks: vec![
                "'/usr/bin/boardsmith' __initramfs-hook '/w/in.json' \"$1\"".into(),
            ],
            output: PathBuf::from("/w/out.tar"),
            tmpdir: PathBuf::from("/w"),
            log: PathBuf::from("/w/log"),
            epoch: 1,
            base_tar: None,
        }
    }

    #[test]
    fn command_line() {
        let a: Vec<String> = run()
            .args()
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect();
        assert!(a.contains(&"--architectures=armhf".to_string()));
        assert!(a.contains(&"--include=systemd,linux-image-armmp".to_string()));
        assert!(a.contains(
            &"--essential-hook=upload '/w/m o'\\''d' '/etc/initramfs-tools/modules'".to_string()
        ));
        // Shell hooks take the cache from the environment; special hooks get it quoted.
        assert!(a.contains(&format!(
            "--setup-hook=mkdir -p \"${CACHE_ENV}\"/archives/partial \"${CACHE_ENV}\"/lists/partial \"$1\"/var/cache/apt/archives \"$1\"/var/lib/apt/lists"
        )));
        assert!(a.contains(
            &"--setup-hook=sync-in '/c a/che/archives' /var/cache/apt/archives".to_string()
        ));
        assert!(a.contains(
            &"--customize-hook=sync-out /var/lib/apt/lists '/c a/che/lists'".to_string()
        ));
        assert!(a.contains(
            &"--customize-hook=find \"$1\"/var/cache/apt/archives \"$1\"/var/lib/apt/lists -exec touch -h -d \"@$SOURCE_DATE_EPOCH\" {} +".to_string()
        ));
        // No path is in a hook unquoted.
        for hook in a.iter().filter(|x| x.contains("-hook=")) {
            assert!(!hook.contains(" /c a") && !hook.contains(" /w/"), "{hook}");
        }
        let hook = a
            .iter()
            .position(|x| x.contains("__initramfs-hook"))
            .unwrap();
        assert!(a[hook + 1].starts_with("--customize-hook=sync-out"));
        let tail: Vec<&str> = a[a.len() - 5..].iter().map(String::as_str).collect();
        assert_eq!(
            tail,
            [
                "bookworm",
                "/w/out.tar",
                "deb http://deb.debian.org/debian bookworm main non-free-firmware",
                "deb http://deb.debian.org/debian bookworm-updates main non-free-firmware",
                "deb http://deb.debian.org/debian-security bookworm-security main non-free-firmware",
            ]
        );
        assert_eq!(
            sources("http://m", Some("http://s"), "sid", &["main".into()], true),
            ["deb [check-valid-until=no] http://m sid main"]
        );
    }

    /// mmdebstrap splits its special hooks with Perl's Text::ParseWords::shellwords: the paths must come
    /// back whole, spaces and quotes included.
    #[test]
    fn special_hooks_split_back_into_the_paths() {
        let mut r = run();
        r.cache = PathBuf::from("/tmp/it's a \"cache\" $HOME");
        let a: Vec<String> = r
            .args()
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect();
        let hook = a
            .iter()
            .find_map(|x| x.strip_prefix("--customize-hook=sync-out /var/lib/apt/lists "))
            .expect("sync-out hook");
        let perl = std::process::Command::new("perl")
            .args([
                "-MText::ParseWords",
                "-e",
                "print join(\"\\n\", shellwords($ARGV[0]))",
            ])
            .arg(format!("sync-out /var/lib/apt/lists {hook}"))
            .output()
            .expect("perl (Debian's perl-base)");
        assert_eq!(
            String::from_utf8_lossy(&perl.stdout),
            "sync-out\n/var/lib/apt/lists\n/tmp/it's a \"cache\" $HOME/lists"
        );
        let upload = a
            .iter()
            .find_map(|x| x.strip_prefix("--essential-hook=upload "))
            .expect("upload hook");
        let perl = std::process::Command::new("perl")
            .args([
                "-MText::ParseWords",
                "-e",
                "print join(\"|\", shellwords($ARGV[0]))",
            ])
            .arg(upload)
            .output()
            .expect("perl");
        assert_eq!(
            String::from_utf8_lossy(&perl.stdout),
            "/w/m o'd|/etc/initramfs-tools/modules"
        );
    }

    #[test]
    fn counts_apt_downloads() {
        let mut d = Downloads::default();
        for l in [
            "Get:1 http://deb.debian.org/debian bookworm InRelease [151 kB]",
            "Get:3 http://deb.debian.org/debian bookworm/main armhf Packages [8506 kB]",
            "Hit:2 http://deb.debian.org/debian bookworm-updates InRelease",
            "Get:7 http://deb.debian.org/debian bookworm/main armhf libc6 armhf 2.36-9+deb12u4 [2,345 kB]",
            "Need to get 0 B/34.9 MB of archives.",
        ] {
            d.observe(l);
        }
        assert_eq!((d.indexes, d.packages, d.hits), (2, 1, 1));
        assert_eq!(d.package_bytes, 2_345_000);
        assert_eq!(d.index_bytes, 151_000 + 8_506_000);
    }

    #[test]
    fn fetch_errors_are_recognised() {
        assert!(is_fetch_error(
            "E: Failed to fetch http://127.0.0.1:9/debian/dists/bookworm/InRelease  Could not connect to 127.0.0.1:9 (127.0.0.1). - connect (111: Connection refused)"
        ));
        assert!(is_fetch_error(
            "Err:1 http://127.0.0.1:9/debian bookworm InRelease   Could not connect to 127.0.0.1:9"
        ));
        assert!(!is_fetch_error("E: Unable to locate package foo"));
    }
}
