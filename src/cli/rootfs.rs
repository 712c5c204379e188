//! `boardsmith rootfs`: a root filesystem from Debian packages (mmdebstrap) or a prebuilt tarball; also
//! the request `build` makes when it builds the root filesystem itself.

use std::path::PathBuf;

use boardsmith::profile::{Catalog, Profile};
use boardsmith::rootfs::{ArtifactSource, Password, RootfsRequest, Selection};
use boardsmith::size::Human;

use super::args::{BoardOptions, DebianOptions, MmdebstrapMode, RootfsArgs, RootfsOptions};
use super::exit::{Failure, pretty_json};
use super::progress::Progress;
use super::{epoch, install_signals, load};

/// Turns the shared rootfs options into a request for the library.
pub fn rootfs_request(
    o: &RootfsOptions,
    out: PathBuf,
    epoch: u64,
    world_readable: bool,
) -> Result<RootfsRequest, Failure> {
    let mut req = RootfsRequest::new(out, epoch);
    req.initramfs_hook = std::env::current_exe().ok();
    req.selection = Selection {
        add: o.features.clone(),
        remove: o.no_features.clone(),
    };
    debian(&mut req, &o.debian);
    board(&mut req, &o.board)?;
    settings(&mut req, &o.board)?;
    let t = &o.prebuilt;
    if t.sha256.is_some() && t.rootfs_tarball.is_none() {
        return Err(Failure::usage(
            "--sha256 is the checksum of --rootfs-tarball, which is not given; give both or neither",
        ));
    }
    if t.rootfs_tarball.is_some() {
        req.tarball = Some(ArtifactSource {
            source: t.rootfs_tarball.clone(),
            sha256: t.sha256.clone(),
        });
    }
    req.interactive = !o.board.password_stdin && boardsmith::rootfs::users::can_prompt();
    req.world_readable = world_readable;
    Ok(req)
}

/// The Debian build's options: the base (mirror, suite, snapshot, mode) and how it runs.
fn debian(req: &mut RootfsRequest, d: &DebianOptions) {
    if let Some(c) = &d.cache {
        req.cache = c.clone();
    }
    req.no_cache = d.no_cache;
    req.mirror = d.base.mirror.clone();
    req.security_mirror = d.base.security_mirror.clone();
    req.suite = d.base.suite.clone();
    req.snapshot = d.base.snapshot.clone();
    req.mode = match d.base.mode {
        MmdebstrapMode::Unshare => boardsmith::rootfs::mmdebstrap::Mode::Unshare,
        MmdebstrapMode::Root => boardsmith::rootfs::mmdebstrap::Mode::Root,
    };
    if let Some(b) = &d.binfmt_dir {
        req.binfmt_dir = b.clone();
    }
}

/// The board configuration: host name, user, password, DroidMote binary.
fn board(req: &mut RootfsRequest, b: &BoardOptions) -> Result<(), Failure> {
    req.hostname = b.hostname.clone();
    req.user = b.user.clone();
    req.autologin = b.autologin.then_some(true);
    req.expire_password = b.expire_password.then_some(true);
    req.password = match (&b.password_hash, b.password_stdin, b.random_password) {
        (_, _, true) => Some(Password::Random),
        (Some(h), _, _) => Some(Password::Hash(h.trim().to_string())),
        (None, true, _) => Some(Password::Plain(
            boardsmith::rootfs::users::read_stdin_line()
                .map_err(|e| Failure::usage(format!("--password-stdin: {e}")))?,
        )),
        (None, false, false) => None,
    };
    if b.droidmote_binary.is_some() || b.droidmote_sha256.is_some() {
        req.artifacts.insert(
            "droidmote".into(),
            ArtifactSource {
                source: b.droidmote_binary.clone(),
                sha256: b.droidmote_sha256.clone(),
            },
        );
    }
    Ok(())
}

/// The feature settings: `--set NAME=VALUE`, and those with their own option (each given once).
fn settings(req: &mut RootfsRequest, b: &BoardOptions) -> Result<(), Failure> {
    for kv in &b.set {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| Failure::usage(format!("--set {kv}: expected NAME=VALUE")))?;
        if req
            .settings
            .insert(k.trim().to_string(), v.to_string())
            .is_some()
        {
            return Err(Failure::usage(format!("--set {}: given twice", k.trim())));
        }
    }
    for (name, option, value) in [
        (
            "droidmote_port",
            "--droidmote-port",
            b.droidmote_port.map(|p| p.to_string()),
        ),
        (
            "droidmote_password",
            "--droidmote-password",
            b.droidmote_password.clone(),
        ),
    ] {
        req.setting_options.insert(name.into(), option.into());
        if let Some(v) = value
            && req.settings.insert(name.into(), v).is_some()
        {
            return Err(Failure::usage(format!(
                "{option} and --set {name}=... both give {name}; keep one"
            )));
        }
    }
    Ok(())
}

pub fn run_rootfs(
    profile: &Profile,
    req: &boardsmith::rootfs::RootfsRequest,
    progress: &Progress,
) -> Result<boardsmith::rootfs::RootfsReport, Failure> {
    use boardsmith::rootfs::RootfsEvent;
    boardsmith::rootfs::build_rootfs(profile, req, &|e| match e {
        RootfsEvent::Phase(p) => progress.step(p),
        RootfsEvent::Warning(w) => progress.warn(w),
    })
    .map_err(Failure::from)
}

pub fn run(catalog: &Catalog, args: RootfsArgs) -> Result<(), Failure> {
    install_signals(boardsmith::signals::OnStop::Exit)?;
    let profile = load(catalog, &args.board)?;
    if args.cache_key {
        let req = rootfs_request(&args.options, PathBuf::new(), epoch()?, false)?;
        let key = boardsmith::rootfs::cache_key(&profile, &req).map_err(Failure::from)?;
        if args.json {
            println!("{}", pretty_json(&key)?);
        } else {
            println!("{}", key.key);
        }
        return Ok(());
    }
    let out = args
        .output
        .out
        .clone()
        .ok_or_else(|| Failure::usage("give the output with -o OUT.tar|DIR"))?;
    let req = rootfs_request(&args.options, out, epoch()?, args.output.world_readable)?;
    let progress = Progress::new(args.output.progress);
    let result = run_rootfs(&profile, &req, &progress);
    progress.finish();
    let report = result?;
    if args.json {
        println!("{}", pretty_json(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

/// The human summary of a built root filesystem, on stderr.
fn print_report(report: &boardsmith::rootfs::RootfsReport) {
    eprintln!(
        "built {} ({}, {} {}) in {:.0} s\n  features  {}\n  kernel    {}\n  user      {} (uid {}, groups {})\n  fstab     {}\n  packages  {} downloaded ({}), {} index files fetched",
        report.output.display(),
        report.format,
        report.arch,
        Human(report.size_bytes),
        report.seconds,
        if report.features.is_empty() {
            "none".to_string()
        } else {
            report.features.join(", ")
        },
        report.boot.kernel,
        report.user.name,
        report.user.uid,
        report.user.groups.join(","),
        report
            .fstab
            .iter()
            .map(|e| format!("{} {}", e.spec, e.mount))
            .collect::<Vec<_>>()
            .join(", "),
        report.downloads.packages,
        Human(report.downloads.package_bytes),
        report.downloads.indexes,
    );
    if let Some(b) = &report.base {
        eprintln!(
            "  base      {} ({}{})",
            b.key,
            b.cache,
            b.entry
                .as_ref()
                .map(|e| format!(", {}", e.display()))
                .unwrap_or_default()
        );
        if let Some(l) = &b.layer {
            eprintln!(
                "  layer     {} ({}{})",
                l.key,
                l.cache,
                l.entry
                    .as_ref()
                    .map(|e| format!(", {}", e.display()))
                    .unwrap_or_default()
            );
        }
    }
    print_secret_files(report);
}

/// Where generated secrets went (never the secrets themselves).
pub fn print_secret_files(report: &boardsmith::rootfs::RootfsReport) {
    for f in &report.secret_files {
        eprintln!(
            "  secret    generated {}: {} (mode 0600; keep it, it is printed nowhere)",
            f.secret,
            f.path.display()
        );
    }
    if report.user.password_expired {
        eprintln!(
            "  password  expired: {} must choose a new one at the first login",
            report.user.name
        );
    }
}
