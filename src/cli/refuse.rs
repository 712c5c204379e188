//! Options that the rest of the command line makes useless are refused, before any work.

use clap::ArgMatches;
use clap::parser::ValueSource;

use super::args::{
    PrebuiltOptions, ReleaseArgs, WatchOptions, arguments_of, cache_key_refused_arguments,
    debian_only_arguments, rootfs_only_arguments, write_net_arguments,
};
use super::exit::Failure;

fn option_name(a: &clap::Arg) -> String {
    a.get_long()
        .map(|l| format!("--{l}"))
        .unwrap_or_else(|| a.get_id().to_string())
}

fn given(m: &ArgMatches, id: &str) -> bool {
    m.value_source(id) == Some(ValueSource::CommandLine)
}

/// Fails on the first of `args` given on the command line (an environment variable is ambient
/// configuration, not a request for this run, and is not refused). `why` says what makes it useless.
pub fn refuse_given(m: &ArgMatches, args: &[clap::Arg], why: &str) -> Result<(), Failure> {
    match args.iter().find(|a| given(m, a.get_id().as_str())) {
        Some(a) => Err(Failure::usage(format!(
            "{} has no effect here: {why}; leave it out",
            option_name(a)
        ))),
        None => Ok(()),
    }
}

const PREBUILT: &str = "it configures the Debian build (mmdebstrap), and --rootfs-tarball starts from a prebuilt root filesystem instead";

/// Refuses options that the rest of the command line makes useless, before any work. Each rule is
/// about a whole options struct (clap's list of its arguments), so no option can be forgotten.
pub fn ignored_options(m: &ArgMatches) -> Result<(), Failure> {
    match m.subcommand() {
        Some(("build", b)) => build(b),
        Some(("write", w)) => write(w),
        Some(("boot", b)) if given(b, "interactive") => refuse_given(
            b,
            &arguments_of::<WatchOptions>(),
            "--interactive hands the console to you and nothing watches it (no pattern, timeout, JSON result or screenshot)",
        ),
        Some(("rootfs", r)) => rootfs(r),
        Some(("release", r)) => release(r),
        _ => Ok(()),
    }
}

/// `build`: the root filesystem's options when it is not built here; a prebuilt tarball with --all;
/// the Debian options with a prebuilt tarball.
fn build(b: &ArgMatches) -> Result<(), Failure> {
    if given(b, "rootfs") {
        refuse_given(
            b,
            &rootfs_only_arguments(),
            "--rootfs takes a finished root filesystem, and this option applies only when build makes one (without --rootfs)",
        )?;
    }
    if given(b, "all") && given(b, "rootfs_dir") {
        refuse_given(
            b,
            &rootfs_only_arguments(),
            "--all --rootfs-dir builds from finished root filesystems, and this option applies only when build makes them (--all without --rootfs-dir)",
        )?;
    }
    if given(b, "all") {
        refuse_given(
            b,
            &arguments_of::<PrebuiltOptions>(),
            "--all builds every board's root filesystem from Debian packages (through the base cache), and a prebuilt tarball is one architecture's; build boards from it one at a time",
        )?;
    }
    prebuilt(b)
}

/// `write`: the network options without a URL.
fn write(w: &ArgMatches) -> Result<(), Failure> {
    let src = w.get_one::<String>("src").map_or("", String::as_str);
    if !boardsmith::write::source::SourceSpec::parse(src).is_url()
        && let Some(a) = write_net_arguments()
            .iter()
            .find(|a| given(w, a.get_id().as_str()))
    {
        return Err(Failure::usage(format!(
            "{} only applies to an image from an http(s) URL; {src} is not one",
            option_name(a)
        )));
    }
    Ok(())
}

/// `rootfs`: with --cache-key, what does not change the base; with a prebuilt tarball, the Debian
/// options.
fn rootfs(r: &ArgMatches) -> Result<(), Failure> {
    if given(r, "cache_key") {
        refuse_given(
            r,
            &arguments_of::<PrebuiltOptions>(),
            "--cache-key is the key of the base mmdebstrap builds, and --rootfs-tarball starts from a prebuilt root filesystem instead",
        )?;
        refuse_given(
            r,
            &cache_key_refused_arguments(),
            "--cache-key prints the key of the board's base (mmdebstrap's packages, hooks and archive), which this option does not change",
        )?;
    }
    prebuilt(r)
}

/// `build` and `rootfs`: a prebuilt --rootfs-tarball makes every Debian (mmdebstrap) option useless.
fn prebuilt(m: &ArgMatches) -> Result<(), Failure> {
    if given(m, "rootfs_tarball") {
        refuse_given(m, &debian_only_arguments(), PREBUILT)?;
    }
    Ok(())
}

/// `release`: each format's settings, refused when that format is not produced.
fn release(r: &ArgMatches) -> Result<(), Failure> {
    let formats: Vec<String> = r
        .get_many::<String>("compress")
        .map(|v| v.map(|f| f.trim().to_string()).collect())
        .unwrap_or_default();
    for (format, ids) in [
        ("xz", &["xz_level", "xz_block"][..]),
        ("zst", &["zstd_level"][..]),
        ("7z", &["sevenz_level"][..]),
    ] {
        if formats.iter().any(|f| f == format) {
            continue;
        }
        if let Some(id) = ids.iter().find(|id| given(r, id)) {
            let long = arguments_of::<ReleaseArgs>()
                .iter()
                .find(|a| a.get_id() == *id)
                .map(option_name)
                .unwrap_or_else(|| (*id).to_string());
            return Err(Failure::usage(format!(
                "{long} has no effect here: --compress does not include {format}; leave it out or add {format} to --compress"
            )));
        }
    }
    Ok(())
}
