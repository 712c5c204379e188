//! The command line: clap definitions, turned into validated requests for the library before any work
//! starts. Help, man page and shell completions all come from this one definition.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::image::batch::{RootfsSource, build_all};
use crate::image::build::{BuildEvent, BuildRequest, build};
use crate::plan::{PlanInput, plan};
use crate::profile::{Catalog, Profile};
use crate::size::{Human, parse_size};

/// Exit status for a failed operation.
pub const EXIT_FAILURE: i32 = 1;
/// Exit status for invalid input or usage.
pub const EXIT_USAGE: i32 = 2;
/// Exit status for a download that failed after every retry (trying again later may work).
pub const EXIT_NETWORK: i32 = crate::write::EXIT_NETWORK;

#[derive(Parser, Debug)]
#[command(
    name = "boardsmith",
    version,
    about = "Build bootable SD-card and disk images for ARM boards, write them to cards, and boot them",
    long_about = None,
    after_help = "Exit status: 0 success, 1 the operation failed, 2 invalid usage or input, 3 a download \
failed after every retry (the network or the server; trying again later may work)."
)]
pub struct Cli {
    /// Directory of your own board profiles (searched before the embedded ones)
    #[arg(long, global = true, env = "BOARDSMITH_BOARDS", value_name = "DIR")]
    pub boards_dir: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List board profiles (embedded ones and those in --boards-dir)
    Boards {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Show a resolved profile and its byte layout: where every byte of the image goes
    Show(ShowArgs),
    /// Build BOARD.img with its .bmap, .sha256 and .md5 from a profile and a root filesystem
    Build(BuildArgs),
    /// Compress a built image into release artefacts with SHA256SUMS, MD5SUMS, a JSON manifest and notes
    Release(ReleaseArgs),
    /// Merge the board's kernel config fragments; with --kernel-src, run the kernel's Kconfig and check
    /// that every requested symbol survives
    Kconfig(KconfigArgs),
    /// Cross-build the board's kernel (defconfig + checked fragments) into a staging tree for `build --rootfs`
    Kernel(KernelArgs),
    /// Boot an image in the board's emulator (QEMU) and watch its serial console for a pattern
    #[command(
        after_help = "Exit status: 0 the pattern appeared; 1 it did not (timeout, or the console showed the boot failing: \
no SPL output, U-Boot found no boot config, kernel panic, root not mounted, ...); 2 invalid usage or input; \
128+N when stopped by signal N (QEMU is stopped first)."
    )]
    Boot(BootArgs),
    /// Build a root filesystem for BOARD from Debian packages (mmdebstrap) or a prebuilt tarball
    Rootfs(RootfsArgs),
    /// List or prune the base cache: root filesystems mmdebstrap built, shared by the boards (and
    /// builds) whose bases have the same key
    Cache(CacheArgs),
    /// Derive the modules the initramfs needs to mount the root filesystem, from the board's device tree
    /// and the kernel's module metadata in a root filesystem, each with the chain that needs it
    #[command(
        after_help = "Exit status: 0 derived (unresolved providers are listed, not fatal); 1 the root filesystem \
could not be read; 2 invalid usage, or the root filesystem lacks the kernel, device tree or module metadata."
    )]
    InitramfsModules(InitramfsModulesArgs),
    /// Internal: mmdebstrap's customize hook of `rootfs` (derives the modules inside the build)
    #[command(name = "__initramfs-hook", hide = true)]
    InitramfsHook {
        /// The hook's input, written by `rootfs`
        input: PathBuf,
        /// mmdebstrap's chroot directory
        root: PathBuf,
    },
    /// Write an image to a card or a file: decode, write, verify what landed, optionally grow
    Write(WriteArgs),
    /// Grow the last partition and its ext2/3/4 filesystem to the end of a card or file
    Grow(GrowArgs),
    /// Print shell completions (BOARD arguments complete to the board names)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print a man page (roff), or write every page into a directory
    Man(ManArgs),
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// The command whose page to print, e.g. build for boardsmith-build(1) (default: boardsmith(1))
    pub command: Option<String>,
    /// Write boardsmith.1 and boardsmith-COMMAND.1 for every command into DIR instead
    #[arg(long, short = 'o', value_name = "DIR", conflicts_with = "command")]
    pub out_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct CacheArgs {
    #[command(subcommand)]
    pub action: CacheAction,
}

#[derive(Subcommand, Debug)]
pub enum CacheAction {
    /// List the cached bases: key, architecture, suite, size, last use, the board that built it
    List {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: CacheDirOption,
    },
    /// Remove cached bases no build is using: those not used for AGE with --older-than, else all; and
    /// what interrupted builds left behind
    Prune {
        /// Only bases not used for this long: 30d, 12h, 2w, 90m, 45s
        #[arg(long, value_name = "AGE")]
        older_than: Option<String>,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: CacheDirOption,
    },
}

#[derive(Args, Debug)]
pub struct CacheDirOption {
    /// boardsmith's cache (bases are in DIR/bases) [default: $XDG_CACHE_HOME/boardsmith]
    #[arg(long, value_name = "DIR", env = "BOARDSMITH_CACHE")]
    pub cache: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// Board name or path to a profile .toml
    pub board: String,
    /// Print JSON (profile and layout)
    #[arg(long)]
    pub json: bool,
    /// Image size, e.g. 2GiB (overrides the profile's table.size)
    #[arg(long, value_name = "SIZE")]
    pub size: Option<String>,
    /// Root filesystem (directory or .tar) to size the layout from
    #[arg(long, value_name = "DIR|TAR")]
    pub rootfs: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct InitramfsModulesArgs {
    /// Board name or path to a profile .toml (its `medium` and `kernel.dtb` say what to derive)
    pub board: String,
    /// Root filesystem (directory or uncompressed .tar) holding the kernel, device trees and modules
    #[arg(long, value_name = "DIR|TAR")]
    pub rootfs: PathBuf,
    /// Print JSON: the modules with their chains, built-in and unresolved providers, the load order
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Board name or path to a profile .toml
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub board: Option<String>,
    /// Root filesystem: a directory or an uncompressed .tar (default: build one first, as
    /// `boardsmith rootfs` does, into OUTDIR/BOARD.rootfs.tar)
    #[arg(long, value_name = "DIR|TAR")]
    pub rootfs: Option<PathBuf>,
    /// Build every board (embedded and --boards-dir), continuing past failures; writes
    /// OUTDIR/build-summary.json. Without --rootfs-dir or --rootfs, each board's root filesystem is built
    /// first (OUTDIR/BOARD.rootfs.tar) through the base cache: each distinct base and board layer once
    #[arg(long)]
    pub all: bool,
    /// With --all: directory holding each board's root filesystem as BOARD.tar or BOARD/
    #[arg(long, value_name = "DIR", requires = "all", conflicts_with = "rootfs")]
    pub rootfs_dir: Option<PathBuf>,
    /// With --all: boards built at the same time
    #[arg(long, value_name = "N", default_value_t = 1, requires = "all")]
    pub jobs: usize,
    /// Output directory
    #[arg(
        short = 'o',
        long = "out",
        value_name = "OUTDIR",
        default_value = "out"
    )]
    pub out: PathBuf,
    /// Image size, e.g. 2GiB (overrides the profile's table.size; default sizes the root from its content)
    #[arg(long, value_name = "SIZE")]
    pub size: Option<String>,
    /// Text appended to the kernel command line
    #[arg(long, value_name = "ARGS")]
    pub cmdline_append: Option<String>,
    /// vboot keyblock for the ChromeOS kernel partition (overrides the profile's [vboot] keyblock)
    #[arg(long, value_name = "FILE")]
    pub vboot_keyblock: Option<PathBuf>,
    /// vboot private key (.vbprivk) signing the kernel partition (overrides the profile's)
    #[arg(long, value_name = "FILE")]
    pub vboot_signprivate: Option<PathBuf>,
    /// Print a JSON summary on stdout
    #[arg(long)]
    pub json: bool,
    /// Progress display
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
    /// Let every local user read the image (and the root filesystem tarball build makes): they hold
    /// the password hashes, so by default only their owner can (mode 0600)
    #[arg(long)]
    pub world_readable: bool,
    #[command(flatten)]
    pub rootfs_options: RootfsOptions,
}

#[derive(Args, Debug)]
pub struct ReleaseArgs {
    /// Board name or path to a profile .toml
    pub board: String,
    /// The built image (default: out/BOARD.img; its .bmap and .sha256 must be beside it)
    #[arg(long, value_name = "FILE")]
    pub image: Option<PathBuf>,
    /// Release directory (default: release/BOARD)
    #[arg(short = 'o', long = "out", value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Formats to produce, comma-separated: xz, zst, 7z
    #[arg(
        long,
        value_name = "LIST",
        default_value = "xz,zst,7z",
        value_delimiter = ','
    )]
    pub compress: Vec<String>,
    /// xz preset (0-9)
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(0..=9))]
    pub xz_level: u32,
    /// xz block size: blocks decode independently, so writers can decode on several threads
    #[arg(long, default_value = "16MiB", value_name = "SIZE")]
    pub xz_block: String,
    /// zstd level (1-19)
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub zstd_level: i32,
    /// 7z (LZMA2) level (0-9)
    #[arg(long = "7z-level", default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=9))]
    pub sevenz_level: u32,
    /// Compression threads (default: all cores)
    #[arg(long, value_name = "N")]
    pub threads: Option<u32>,
    /// Print the release manifest as JSON on stdout
    #[arg(long)]
    pub json: bool,
    /// Progress display
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
    /// Let every local user read the compressed images: they hold the root filesystem's password
    /// hashes, so by default only their owner can (mode 0600)
    #[arg(long)]
    pub world_readable: bool,
}

#[derive(Args, Debug)]
pub struct BootArgs {
    /// The image to boot (never modified: QEMU runs on a snapshot or a temporary padded copy)
    pub image: PathBuf,
    /// Board name or path to a profile .toml (default: the image's file name, e.g. out/cubieboard.img)
    #[arg(long, value_name = "BOARD")]
    pub board: Option<String>,
    /// The profile's emulator setup to use: `default` (its [emulator]) or the NAME of an
    /// [emulators.NAME] section, e.g. `desktop` (a screen, keyboard, tablet and network)
    #[arg(long, value_name = "NAME")]
    pub emulator: Option<String>,
    /// Write the serial console (as text) to FILE
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Hand the console to the user (Ctrl-A x quits QEMU, Ctrl-A c its monitor); no pattern is awaited
    #[arg(long)]
    pub interactive: bool,
    #[command(flatten)]
    pub watch: WatchOptions,
    #[command(flatten)]
    pub screen: ScreenOptions,
    #[command(flatten)]
    pub net: NetOptions,
}

/// What matters only when boardsmith watches the console (refused with --interactive).
#[derive(Args, Debug)]
pub struct WatchOptions {
    /// Regular expression awaited on the serial console, matched line by line
    #[arg(long, value_name = "REGEX", default_value = crate::boot::DEFAULT_EXPECT)]
    pub expect: String,
    /// Seconds to wait for the pattern (and the screenshots)
    #[arg(long, value_name = "S", default_value_t = 300.0)]
    pub timeout: f64,
    /// Print a JSON result on stdout (the console goes to stderr)
    #[arg(long)]
    pub json: bool,
    /// Do not echo the console (the log still gets it)
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub screenshots: ScreenshotOptions,
}

/// Screenshots of the emulated screen (the emulator needs a display device).
#[derive(Args, Debug)]
pub struct ScreenshotOptions {
    /// Write a PNG of the emulated screen to FILE when --expect's pattern appears (or when the
    /// --screenshot-after that follows it does), --screenshot-delay later; repeatable. The boot ends
    /// once the pattern appeared and every screenshot is taken
    #[arg(long = "screenshot", value_name = "FILE.png")]
    pub screenshot: Vec<PathBuf>,
    /// The console pattern that triggers the --screenshot given before it (instead of --expect's)
    #[arg(
        long = "screenshot-after",
        value_name = "REGEX",
        requires = "screenshot"
    )]
    pub screenshot_after: Vec<String>,
    /// Seconds after its trigger that the --screenshot given before it is taken [default: 0]
    #[arg(long = "screenshot-delay", value_name = "S", requires = "screenshot")]
    pub screenshot_delay: Vec<f64>,
}

/// An interactive screen (the emulator needs a display device). The board keeps running after the
/// pattern appeared, until QEMU exits (window closed, guest powered off) or boardsmith is stopped.
#[derive(Args, Debug)]
pub struct ScreenOptions {
    /// Show the screen in a window of QEMU's user interface (gtk, or sdl)
    #[arg(long, value_name = "UI", num_args = 0..=1, default_missing_value = "gtk",
          value_parser = ["gtk", "sdl"], conflicts_with = "vnc")]
    pub display: Option<String>,
    /// Serve the screen over VNC on [ADDRESS]:DISPLAY (TCP port 5900+DISPLAY; the address is 127.0.0.1
    /// unless given; there is no password, so keep it on the loopback or a network you trust)
    #[arg(long, value_name = "[ADDR]:N")]
    pub vnc: Option<String>,
}

/// Networking between host and board (the emulator needs a network device).
#[derive(Args, Debug)]
pub struct NetOptions {
    /// Forward a TCP port of the host to the board over QEMU's user-mode network, e.g. 2222:22 for ssh,
    /// 2303:2303 for DroidMote; the host side listens on 127.0.0.1 unless ADDR is given (repeatable)
    #[arg(long = "forward", value_name = "[ADDR:]HOST_PORT:GUEST_PORT")]
    pub forwards: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RootfsArgs {
    /// Board name or path to a profile .toml
    pub board: String,
    /// Print the cache key of the board's base (mmdebstrap's output: packages, hooks, archive state)
    /// and exit; with --json, every input it covers. Reads the archive's Release files
    #[arg(long)]
    pub cache_key: bool,
    /// Print a JSON report on stdout
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub output: RootfsOutputOptions,
    #[command(flatten)]
    pub options: RootfsOptions,
}

/// Where and how `rootfs` writes the root filesystem (refused with --cache-key, which writes none).
#[derive(Args, Debug)]
pub struct RootfsOutputOptions {
    /// Output: NAME.tar (a reproducible tarball) or a directory (needs root)
    #[arg(
        short = 'o',
        long = "out",
        value_name = "OUT.tar|DIR",
        required_unless_present = "cache_key"
    )]
    pub out: Option<PathBuf>,
    /// Progress display
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
    /// Let every local user read the tarball: it holds the password hashes, so by default only its
    /// owner can (mode 0600)
    #[arg(long)]
    pub world_readable: bool,
}

/// How mmdebstrap gets root inside the chroot.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmdebstrapMode {
    /// Own mount namespace: nothing stays mounted if the build is killed
    Unshare,
    /// Plain chroot (needs root)
    Root,
}

/// Root filesystem options, shared by `rootfs` and `build` (without --rootfs). Every option in this
/// struct (and in the structs it flattens) matters only when boardsmith builds the root filesystem, so
/// `build --rootfs` and `build --all --rootfs-dir` refuse each of them ([`refuse_given`] goes through
/// clap's own list of this struct's arguments: a new option here is covered without being named
/// anywhere). Which struct an option goes in says which stage it changes: [`BoardOptions`] only the
/// board configuration, [`BaseOptions`] (and the features) the base and so its cache key.
#[derive(Args, Debug, Clone)]
pub struct RootfsOptions {
    /// Add a feature (repeatable): xfce, droidmote, usb-net, usb-audio, bluetooth, ssh, wifi
    #[arg(long = "feature", value_name = "F")]
    pub features: Vec<String>,
    /// Leave out a feature the board profile turns on by default (repeatable)
    #[arg(long = "no-feature", value_name = "F")]
    pub no_features: Vec<String>,
    #[command(flatten)]
    pub board: BoardOptions,
    #[command(flatten)]
    pub prebuilt: PrebuiltOptions,
    #[command(flatten)]
    pub debian: DebianOptions,
}

/// The board configuration, applied to the base without a package manager: none of these changes the
/// base (mmdebstrap's output), so `rootfs --cache-key` refuses each of them.
#[derive(Args, Debug, Clone)]
pub struct BoardOptions {
    /// Host name (default: the profile's, else the board name)
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
    /// Name of the default user (default: debian)
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// Log the default user into the desktop at boot (needs a desktop feature: xfce)
    #[arg(long)]
    pub autologin: bool,
    /// The default user's password as a crypt(3) hash (`mkpasswd -m yescrypt`). There is no default:
    /// without it (or --password-stdin, --random-password) you are asked on the terminal, and without
    /// a terminal the command fails
    #[arg(
        long,
        value_name = "HASH",
        env = "BOARDSMITH_PASSWORD_HASH",
        hide_env_values = true
    )]
    pub password_hash: Option<String>,
    /// Read the default user's password from the first line of standard input (hashed, never shown)
    #[arg(long, conflicts_with = "password_hash")]
    pub password_stdin: bool,
    /// Generate a strong password for the default user, written to OUT.password (mode 0600), never
    /// printed
    #[arg(long, conflicts_with_all = ["password_hash", "password_stdin"])]
    pub random_password: bool,
    /// The default user must change the password at the first login, as published Armbian and
    /// Raspberry Pi OS images do (also the profile's rootfs.expire_password); not with autologin
    #[arg(long)]
    pub expire_password: bool,
    /// A feature setting, e.g. --set droidmote_port=2400 (repeatable)
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub set: Vec<String>,
    /// DroidMote server binary for the board's architecture (path or http(s) URL)
    #[arg(long, value_name = "PATH|URL")]
    pub droidmote_binary: Option<String>,
    /// sha256 of the DroidMote binary (required with --droidmote-binary)
    #[arg(long, value_name = "HEX")]
    pub droidmote_sha256: Option<String>,
    /// DroidMote port [default: 2303]
    #[arg(long, value_name = "PORT")]
    pub droidmote_port: Option<u16>,
    /// DroidMote password; no default. `random` generates one into OUT.droidmote-password (mode
    /// 0600). A value given here is visible to other local users while boardsmith runs: prefer
    /// `random`, BOARDSMITH_DROIDMOTE_PASSWORD or the prompt
    #[arg(long, value_name = "PASSWORD|random")]
    pub droidmote_password: Option<String>,
}

/// A prebuilt root filesystem instead of Debian packages.
#[derive(Args, Debug, Clone)]
pub struct PrebuiltOptions {
    /// Start from a prebuilt root filesystem tarball (.tar, .tar.gz/.xz/.zst/.bz2; path or URL)
    /// instead of Debian packages
    #[arg(long, value_name = "PATH|URL")]
    pub rootfs_tarball: Option<String>,
    /// sha256 of --rootfs-tarball
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,
}

/// Options of the Debian build through mmdebstrap: a prebuilt --rootfs-tarball refuses each of them.
#[derive(Args, Debug, Clone)]
pub struct DebianOptions {
    #[command(flatten)]
    pub base: BaseOptions,
    /// boardsmith's cache: Debian packages and indexes (DIR/apt/ARCH; a second build downloads no
    /// package), mmdebstrap's logs (DIR/logs) and base root filesystems (DIR/bases)
    /// [default: $XDG_CACHE_HOME/boardsmith]
    #[arg(long, value_name = "DIR", env = "BOARDSMITH_CACHE")]
    pub cache: Option<PathBuf>,
    /// Build the base with mmdebstrap without looking in or storing to the base cache
    #[arg(long)]
    pub no_cache: bool,
    /// binfmt_misc directory to check for QEMU handlers
    #[arg(long, value_name = "DIR", env = "BOARDSMITH_BINFMT_DIR", hide = true)]
    pub binfmt_dir: Option<PathBuf>,
}

/// What the base (mmdebstrap's output) is made from besides the features: each changes its cache key.
#[derive(Args, Debug, Clone)]
pub struct BaseOptions {
    /// Debian mirror (overrides the profile's rootfs.mirror)
    #[arg(long, value_name = "URL")]
    pub mirror: Option<String>,
    /// Security archive ('' for none)
    #[arg(long, value_name = "URL")]
    pub security_mirror: Option<String>,
    /// Debian suite (overrides the profile's rootfs.suite)
    #[arg(long, value_name = "SUITE")]
    pub suite: Option<String>,
    /// Install from snapshot.debian.org at this time (e.g. 20250101T000000Z): the same packages every time
    #[arg(long, value_name = "TIMESTAMP")]
    pub snapshot: Option<String>,
    /// mmdebstrap mode
    #[arg(long, value_enum, default_value_t = MmdebstrapMode::Unshare)]
    pub mode: MmdebstrapMode,
}

/// The arguments of an options struct, as clap defines them (ids, long names, value parsers).
fn arguments_of<T: Args>() -> Vec<clap::Arg> {
    T::augment_args(clap::Command::new("options"))
        .get_arguments()
        .cloned()
        .collect()
}

/// Every argument that matters only when boardsmith builds the root filesystem (refused by
/// `build --rootfs` and `build --all`). Public for the tests, which try each one.
pub fn rootfs_only_arguments() -> Vec<clap::Arg> {
    arguments_of::<RootfsOptions>()
}

/// Every argument of the Debian (mmdebstrap) build, refused with a prebuilt --rootfs-tarball.
pub fn debian_only_arguments() -> Vec<clap::Arg> {
    arguments_of::<DebianOptions>()
}

/// Every argument of `rootfs` that does not change the base, refused with --cache-key (public for the
/// tests, which try each one): the output's, the board configuration's, the prebuilt tarball's, and
/// the Debian options other than [`BaseOptions`] (where the cache is, whether to use it).
pub fn cache_key_refused_arguments() -> Vec<clap::Arg> {
    let base: Vec<clap::Id> = arguments_of::<BaseOptions>()
        .iter()
        .map(|a| a.get_id().clone())
        .collect();
    let mut v = arguments_of::<RootfsOutputOptions>();
    v.extend(arguments_of::<BoardOptions>());
    v.extend(arguments_of::<PrebuiltOptions>());
    v.extend(
        arguments_of::<DebianOptions>()
            .into_iter()
            .filter(|a| !base.contains(a.get_id())),
    );
    v
}

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
fn refuse_given(m: &ArgMatches, args: &[clap::Arg], why: &str) -> Result<(), Failure> {
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
fn refuse_ignored_options(m: &ArgMatches) -> Result<(), Failure> {
    match m.subcommand() {
        Some(("build", b)) => {
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
            if given(b, "rootfs_tarball") {
                refuse_given(b, &debian_only_arguments(), PREBUILT)?;
            }
        }
        Some(("write", w)) => {
            let src = w.get_one::<String>("src").map_or("", String::as_str);
            if !crate::write::source::SourceSpec::parse(src).is_url()
                && let Some(a) = write_net_arguments()
                    .iter()
                    .find(|a| given(w, a.get_id().as_str()))
            {
                return Err(Failure::usage(format!(
                    "{} only applies to an image from an http(s) URL; {src} is not one",
                    option_name(a)
                )));
            }
        }
        Some(("boot", b)) if given(b, "interactive") => {
            refuse_given(
                b,
                &arguments_of::<WatchOptions>(),
                "--interactive hands the console to you and nothing watches it (no pattern, timeout, JSON result or screenshot)",
            )?;
        }
        Some(("rootfs", r)) => {
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
            if given(r, "rootfs_tarball") {
                refuse_given(r, &debian_only_arguments(), PREBUILT)?;
            }
        }
        Some(("release", r)) => {
            // Each format's settings, refused when that format is not produced.
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
        }
        _ => {}
    }
    Ok(())
}

#[derive(Args, Debug)]
#[command(after_help = "\
SRC may be raw or compressed with xz, gzip, zstd, bzip2 or 7z (recognised by content). A block map \
(SRC.bmap, or the names bmaptool tries) limits writing to the mapped blocks and checks each range. \
The first 64 KiB are written last, after the rest is written and verified, so an interrupted card \
never looks bootable.\n\
An image from a URL is written only when something can check it: --sha256/--md5, a bmap with range \
checksums (--bmap FILE, or beside an https URL), or sums beside an https URL (IMAGE.sha256/.md5, or \
the downloaded file's in SRC.sha256/.md5, SHA256SUMS or MD5SUMS); \
otherwise it is refused before the target is touched (--no-checksum accepts it unchecked). A dropped \
or stalled connection is resumed where it left off (HTTP Range, If-Range with the first response's \
ETag or Last-Modified); a server without Range support ends the write. Certificates come from the \
system store, or the bundle SSL_CERT_FILE names; a redirect from https to http is refused.\n\
Exit status: 0 success, 1 the write failed (the message says whether the source or the target is at \
fault), 2 invalid usage or input, 3 the download failed after every retry (trying again later may \
work), 128+N after signal N (130 Ctrl-C, 143 SIGTERM).")]
pub struct WriteArgs {
    /// Image: a file (.img, .img.xz/.gz/.zst/.bz2, .7z), '-' for standard input, or an http(s) URL
    pub src: String,
    /// Target: a block device (/dev/sdX, /dev/mmcblkN) or a file
    pub target: PathBuf,
    /// Block map to use (default: SRC.bmap, or the names bmaptool tries, if one exists)
    #[arg(long, value_name = "F", conflicts_with = "no_bmap")]
    pub bmap: Option<PathBuf>,
    /// Ignore any block map: write every byte
    #[arg(long)]
    pub no_bmap: bool,
    /// Do not read back and compare what was written
    #[arg(long)]
    pub no_verify: bool,
    /// Then grow the last partition and its filesystem to fill the target
    #[arg(long)]
    pub grow: bool,
    /// Expected SHA-256 of the image (default: from IMAGE.sha256 beside SRC, if there is one)
    #[arg(long, value_name = "HEX", conflicts_with = "md5")]
    pub sha256: Option<String>,
    /// Expected MD5 of the image (default: from IMAGE.md5 beside SRC, if there is one)
    #[arg(long, value_name = "HEX")]
    pub md5: Option<String>,
    /// Compute and print the image's SHA-256 and MD5
    #[arg(long)]
    pub sums: bool,
    /// File targets: the file's size, e.g. 8G (at least the image's; --grow fills it)
    #[arg(long, value_name = "SIZE")]
    pub size: Option<String>,
    /// Confirm writing to a non-removable disk, a removable one over 128 GB, or into a partition
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Progress display: a bar on a terminal, JSON lines on stdout, or nothing
    #[arg(long, value_enum, default_value_t = WriteProgressMode::Auto)]
    pub progress: WriteProgressMode,
    /// zstd, xz and 7z sources: the largest window (zstd) or dictionary (xz, 7z) to decode with, a
    /// power of two up to 2GiB; the writer holds that much memory for it (default 16MiB, which keeps
    /// the writer under 64MiB; e.g. 64MiB for `xz -9` images, 2GiB for `zstd --long=31` files)
    #[arg(long, value_name = "SIZE")]
    pub max_window: Option<String>,
    // Last: the heading it sets applies to the options after it.
    #[command(flatten)]
    pub net: NetArgs,
}

/// The options of `write` that only a URL source uses: refused for a file or standard input, by
/// walking clap's list of this struct's arguments (a new one here is refused without further code).
#[derive(Args, Debug)]
#[command(next_help_heading = "URL sources")]
pub struct NetArgs {
    /// Write the image although nothing can check it (no --sha256/--md5, no bmap with
    /// range checksums, no sums over https beside it); sums that are found are still checked
    #[arg(long, conflicts_with_all = ["sha256", "md5"])]
    pub no_checksum: bool,
    /// Attempts in a row that bring no new byte before giving up [default: 8]
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,
    /// Longest time without a new byte, across reconnects, before giving up, e.g. 90s,
    /// 10m [default: 5m]
    #[arg(long, value_name = "TIME")]
    pub retry_time: Option<String>,
    /// Time without data after which a connection counts as stalled and is replaced
    /// [default: 30s]
    #[arg(long, value_name = "TIME")]
    pub stall_timeout: Option<String>,
    /// Time allowed to connect (DNS, TCP, TLS) [default: 20s]
    #[arg(long, value_name = "TIME")]
    pub connect_timeout: Option<String>,
}

/// Every argument of `write` that only a URL source uses. Public for the tests, which try each one.
pub fn write_net_arguments() -> Vec<clap::Arg> {
    arguments_of::<NetArgs>()
}

/// A duration given as seconds, or with a unit: `90`, `90s`, `10m`, `1h`, `500ms`.
fn parse_duration_arg(flag: &str, v: &str) -> Result<std::time::Duration, Failure> {
    let t = v.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        Failure::usage(format!(
            "{flag} {v:?}: expected a duration such as 30s, 10m or 1h"
        ))
    })?;
    let ms = match unit.trim() {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1000),
        "m" | "min" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => None,
    }
    .filter(|&ms| ms > 0 && ms <= 7 * 86_400_000)
    .ok_or_else(|| {
        Failure::usage(format!(
            "{flag} {v:?}: expected a duration between 1ms and 7 days, such as 30s, 10m or 1h"
        ))
    })?;
    Ok(std::time::Duration::from_millis(ms))
}

/// The network settings of `write` (given only for a URL source: `refuse_ignored_options`).
fn write_net_options(args: &NetArgs) -> Result<crate::net::NetOptions, Failure> {
    let mut o = crate::net::NetOptions::default();
    if let Some(n) = args.retries {
        o.retries = n;
    }
    if let Some(t) = &args.retry_time {
        o.retry_time = parse_duration_arg("--retry-time", t)?;
    }
    if let Some(t) = &args.stall_timeout {
        o.stall_timeout = parse_duration_arg("--stall-timeout", t)?;
    }
    if let Some(t) = &args.connect_timeout {
        o.connect_timeout = parse_duration_arg("--connect-timeout", t)?;
    }
    Ok(o)
}

#[derive(Args, Debug)]
#[command(after_help = "\
The partition table is checked completely before anything changes (--size included).\n\
Exit status: 0 success, 1 growing failed (the message says what the target holds now), 2 invalid \
usage or input (a bad partition table), 128+N after signal N (130 Ctrl-C, 143 SIGTERM).")]
pub struct GrowArgs {
    /// A card (block device) or image file holding an MBR or GPT partition table
    pub target: PathBuf,
    /// File targets: extend the file to this size first, e.g. 8G (never shrinks)
    #[arg(long, value_name = "SIZE")]
    pub size: Option<String>,
    /// Confirm changing a non-removable disk, a removable one over 128 GB, or a partition
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Progress display
    #[arg(long, value_enum, default_value_t = WriteProgressMode::Auto)]
    pub progress: WriteProgressMode,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteProgressMode {
    Auto,
    Bar,
    Json,
    None,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressMode {
    Auto,
    Bar,
    Plain,
    None,
}

/// An error reported at the edge, with the exit status it maps to.
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Self {
        Failure {
            code: EXIT_USAGE,
            message: message.into(),
        }
    }
    fn failed(message: impl Into<String>) -> Self {
        Failure {
            code: EXIT_FAILURE,
            message: message.into(),
        }
    }
}

/// `value` as pretty JSON: a value serde cannot represent is a failure, never an empty line.
fn pretty_json(value: &impl serde::Serialize) -> Result<String, Failure> {
    serde_json::to_string_pretty(value)
        .map_err(|e| Failure::failed(format!("writing the report as JSON: {e}")))
}

/// `value` as a JSON value, to add fields to.
fn json_value(value: &impl serde::Serialize) -> Result<serde_json::Value, Failure> {
    serde_json::to_value(value)
        .map_err(|e| Failure::failed(format!("writing the report as JSON: {e}")))
}

fn report_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let m = inner.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = inner.source();
    }
    s
}

pub fn main() -> i32 {
    quiet_on_closed_stdout();
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m).map(|c| (c, m)));
    let (cli, matches) = match parsed {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    let result = refuse_ignored_options(&matches).and_then(|()| run(cli, Some(&matches)));
    // A stop signal being handled decides the exit status (128+N), whatever the work returned.
    crate::signals::wait_if_stopping();
    match result {
        Ok(()) => 0,
        Err(f) => {
            eprintln!("error: {}", f.message);
            f.code
        }
    }
}

/// `boardsmith boards | head` closes stdout early; `println!` (and clap_complete) then panic on the broken
/// pipe. End
/// quietly with the status a shell gives a process killed by SIGPIPE, as other Unix tools do, instead of
/// printing a panic. (SIGPIPE itself stays ignored: a dying QEMU must not kill `boot` before it reports.)
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.contains("Broken pipe") || msg.contains("BrokenPipe") {
            std::process::exit(128 + libc::SIGPIPE);
        }
        default(info)
    }));
}

fn load(catalog: &Catalog, board: &str) -> Result<Profile, Failure> {
    catalog
        .load(board)
        .map_err(|e| Failure::usage(report_chain(&e)))
}

fn parse_size_arg(s: Option<&str>) -> Result<Option<u64>, Failure> {
    s.map(|s| parse_size(s).map_err(|e| Failure::usage(format!("--size: {e}"))))
        .transpose()
}

fn epoch() -> Result<u64, Failure> {
    crate::disk::ids::source_date_epoch().map_err(Failure::usage)
}

/// Runs a parsed command line; `matches` (clap's) lets options be refused by where they were given.
pub fn run(cli: Cli, matches: Option<&ArgMatches>) -> Result<(), Failure> {
    let catalog = Catalog::new(cli.boards_dir.clone());
    match cli.command {
        Command::Boards { json } => {
            let boards = catalog
                .list()
                .map_err(|e| Failure::usage(report_chain(&e)))?;
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
        Command::Show(args) => show(&catalog, args),
        Command::Build(args) => build_cmd(&catalog, args),
        Command::Release(args) => release_cmd(&catalog, args),
        Command::Kconfig(args) => kconfig_cmd(&catalog, args),
        Command::Kernel(args) => kernel_cmd(&catalog, args),
        Command::Boot(args) => boot_cmd(
            &catalog,
            args,
            matches.and_then(|m| m.subcommand_matches("boot")),
        ),
        Command::Rootfs(args) => rootfs_cmd(&catalog, args),
        Command::Cache(args) => cache_cmd(args),
        Command::InitramfsModules(args) => initramfs_modules_cmd(&catalog, args),
        Command::InitramfsHook { input, root } => {
            let report = crate::rootfs::initramfs::run_hook(&input, &root)
                .map_err(|e| Failure::failed(report_chain(&e)))?;
            eprintln!(
                "I: boardsmith: initramfs modules for {} on {}: {}",
                report.dtb,
                report.derivation.medium.name(),
                report.initramfs_modules.join(" ")
            );
            Ok(())
        }
        Command::Write(args) => write_cmd(args),
        Command::Grow(args) => grow_cmd(args),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut completion_command(&catalog)?,
                "boardsmith",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Man(args) => man_cmd(args),
    }
}

/// The command line as the completion scripts see it: every BOARD argument offers the board names of
/// the catalogue (the embedded boards and those in --boards-dir when it is given to `completions`).
/// Parsing keeps accepting any name or path; only the generated script lists these.
fn completion_command(catalog: &Catalog) -> Result<clap::Command, Failure> {
    let names: Vec<String> = catalog
        .list()
        .map_err(|e| Failure::usage(report_chain(&e)))?
        .into_iter()
        .map(|b| b.name)
        .collect();
    let mut cli = Cli::command();
    let with_board: Vec<String> = cli
        .get_subcommands()
        .filter(|c| c.get_arguments().any(|a| a.get_id() == "board"))
        .map(|c| c.get_name().to_string())
        .collect();
    for sub in with_board {
        let names = names.clone();
        cli = cli.mut_subcommand(sub, move |c| {
            c.mut_arg("board", move |a| {
                a.value_parser(clap::builder::PossibleValuesParser::new(names))
            })
        });
    }
    Ok(cli)
}

/// The exit statuses of a command whose help does not state them (the shared contract: the help's
/// "Exit status:" paragraph wins where there is one).
fn default_exit_status(command: &str) -> &'static str {
    match command {
        "rootfs" | "build" => {
            "0 success, 1 the operation failed, 2 invalid usage or input, 3 a download failed after every retry (trying again later may work), 128+N after signal N (130 Ctrl-C, 143 SIGTERM; temporary files are removed first)."
        }
        "release" => {
            "0 success, 1 the operation failed, 2 invalid usage or input, 128+N after signal N (130 Ctrl-C, 143 SIGTERM; temporary files are removed first)."
        }
        _ => "0 success, 1 the operation failed, 2 invalid usage or input.",
    }
}

/// One man page: clap_mangen's sections, then EXIT STATUS (from the help's "Exit status:" paragraph,
/// the rest of that text under NOTES) and SEE ALSO (the main page lists every command's page, a
/// command's page the main one).
fn man_page(cmd: &clap::Command, main: bool) -> Result<Vec<u8>, Failure> {
    use clap_mangen::roff::{Roff, bold, roman};
    let after = cmd
        .get_after_long_help()
        .or_else(|| cmd.get_after_help())
        .map(|s| s.to_string())
        .unwrap_or_default();
    let (notes, exit) = match after.find("Exit status: ") {
        Some(at) => (
            after[..at].trim().to_string(),
            after[at + "Exit status: ".len()..].trim().to_string(),
        ),
        None => (
            after.trim().to_string(),
            default_exit_status(cmd.get_name()).to_string(),
        ),
    };
    let exit = if main {
        format!(
            "{exit} Commands stopped by signal N exit with 128+N; each command's page has its own list."
        )
    } else {
        exit
    };
    let mut out = Vec::new();
    clap_mangen::Man::new(
        cmd.clone()
            .after_help(None::<&str>)
            .after_long_help(None::<&str>),
    )
    .source(concat!("boardsmith ", env!("CARGO_PKG_VERSION")))
    .render(&mut out)
    .map_err(|e| Failure::failed(format!("rendering the man page: {e}")))?;
    let mut roff = Roff::new();
    roff.control("SH", ["EXIT STATUS"]);
    roff.text([roman(exit)]);
    if !notes.is_empty() {
        roff.control("SH", ["NOTES"]);
        for (i, para) in notes.lines().enumerate() {
            if i > 0 {
                roff.control("PP", []);
            }
            roff.text([roman(para)]);
        }
    }
    roff.control("SH", ["SEE ALSO"]);
    let mut refs: Vec<String> = if main {
        cmd.get_subcommands()
            .filter(|c| !c.is_hide_set())
            .map(|c| format!("boardsmith-{}", c.get_name()))
            .collect()
    } else {
        vec!["boardsmith".to_string()]
    };
    refs.sort();
    for (i, r) in refs.iter().enumerate() {
        let sep = if i + 1 < refs.len() { "(1)," } else { "(1)" };
        roff.text([bold(r.as_str()), roman(sep)]);
    }
    // The preamble (two lines defining the apostrophe string) is already in clap_mangen's part.
    let tail = roff.render();
    for line in tail.lines().skip(2) {
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    Ok(out)
}

/// The main page and one page per visible command, with their file names.
fn man_pages() -> Result<Vec<(String, Vec<u8>)>, Failure> {
    let mut cli = Cli::command().disable_help_subcommand(true);
    // Gives every subcommand its display name (boardsmith-build), which titles its page.
    cli.build();
    let mut pages = vec![("boardsmith.1".to_string(), man_page(&cli, true)?)];
    command_pages(&cli, "boardsmith", &mut pages)?;
    Ok(pages)
}

/// A page for every visible subcommand of `cmd`, and of theirs (`boardsmith-cache-list.1`): clap_mangen's
/// SUBCOMMANDS section refers to each by that name.
fn command_pages(
    cmd: &clap::Command,
    prefix: &str,
    pages: &mut Vec<(String, Vec<u8>)>,
) -> Result<(), Failure> {
    for sub in cmd.get_subcommands().filter(|c| !c.is_hide_set()) {
        let name = format!("{prefix}-{}", sub.get_name());
        pages.push((format!("{name}.1"), man_page(sub, false)?));
        command_pages(sub, &name, pages)?;
    }
    Ok(())
}

fn man_cmd(args: ManArgs) -> Result<(), Failure> {
    let pages = man_pages()?;
    let Some(dir) = args.out_dir else {
        let name = match &args.command {
            // `cache list` or `cache-list`: the page of a nested command.
            Some(c) => format!(
                "boardsmith-{}.1",
                c.split_whitespace().collect::<Vec<_>>().join("-")
            ),
            None => "boardsmith.1".to_string(),
        };
        let page = pages.iter().find(|(n, _)| *n == name).ok_or_else(|| {
            let known: Vec<&str> = pages
                .iter()
                .filter_map(|(n, _)| n.strip_prefix("boardsmith-")?.strip_suffix(".1"))
                .collect();
            Failure::usage(format!(
                "no man page for {:?}: the commands are {}",
                args.command.as_deref().unwrap_or_default(),
                known.join(", ")
            ))
        })?;
        let _ = std::io::stdout().write_all(&page.1);
        return Ok(());
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| Failure::failed(format!("creating {}: {e}", dir.display())))?;
    for (name, page) in &pages {
        let path = dir.join(name);
        crate::output::write_atomic(&path, page)
            .and_then(|f| f.commit())
            .map_err(|e| Failure::failed(format!("writing {}: {e}", path.display())))?;
        println!("{}", dir.join(name).display());
    }
    Ok(())
}

fn initramfs_modules_cmd(catalog: &Catalog, args: InitramfsModulesArgs) -> Result<(), Failure> {
    use crate::rootmods::RootmodsError;
    let profile = load(catalog, &args.board)?;
    let req = crate::rootfs::initramfs::request(&profile).ok_or_else(|| {
        Failure::usage(if profile.medium.is_none() {
            format!(
                "board `{}` has no `medium` in its profile: nothing to derive (set medium = \"sd\", \"emmc\", \"usb\", \"sata\" or \"virtio\")",
                profile.name
            )
        } else {
            format!(
                "board `{}` has no kernel.dtb in its profile: the controllers cannot be read from a device tree",
                profile.name
            )
        })
    })?;
    let tree = crate::rootfs::tree::RootTree::open(&args.rootfs)
        .map_err(|e| Failure::usage(report_chain(&e)))?;
    let files = crate::rootfs::initramfs::TreeFiles(&tree);
    let report = crate::rootmods::analyze(&files, &req).map_err(|e| Failure {
        code: match e {
            RootmodsError::Read { .. } => EXIT_FAILURE,
            _ => EXIT_USAGE,
        },
        message: format!("{}: {}", args.rootfs.display(), report_chain(&e)),
    })?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let _ = writeln!(out, "{}", pretty_json(&report)?);
    } else {
        let _ = write!(out, "{}", report.text());
    }
    Ok(())
}

fn show(catalog: &Catalog, args: ShowArgs) -> Result<(), Failure> {
    let profile = load(catalog, &args.board)?;
    let image_size = parse_size_arg(args.size.as_deref())?;
    let mut input = PlanInput {
        image_size,
        epoch: epoch()?,
        ..Default::default()
    };
    if let Some(r) = &args.rootfs {
        let tree =
            crate::rootfs::tree::RootTree::open(r).map_err(|e| Failure::usage(report_chain(&e)))?;
        let stats = tree.stats().map_err(|e| Failure::usage(report_chain(&e)))?;
        input.fill_content = Some(crate::image::ext4::auto_size(&stats));
        if let Some(b) = &profile.bootloader
            && let Ok(Some(data)) = tree.read(&b.path.value)
        {
            input.blob_size = Some(data.len() as u64);
        }
    }
    let layout =
        plan(&profile, &input).map_err(|e| Failure::usage(format!("invalid layout: {e}")))?;
    let blob = match &args.rootfs {
        Some(r) => {
            crate::image::build::kernel_blob_size(&profile, r, &input).map_err(|e| Failure {
                code: if e.is_input_error() {
                    EXIT_USAGE
                } else {
                    EXIT_FAILURE
                },
                message: report_chain(&e),
            })?
        }
        None => None,
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        let v = serde_json::json!({ "profile": profile, "layout": layout });
        let _ = writeln!(out, "{v:#}");
        return Ok(());
    }
    let _ = writeln!(out, "{} — {}", profile.name, profile.description);
    let files: Vec<&str> = profile.sources.iter().map(|s| s.name.as_str()).collect();
    let _ = writeln!(out, "profile: {}", files.join(" <- "));
    let _ = writeln!(
        out,
        "arch: {}, console: {}",
        profile.arch.debian(),
        profile.console
    );
    let k = &profile.kernel;
    let _ = writeln!(
        out,
        "kernel: {} ({}) from {}{}",
        k.image.file_name(),
        if k.package.is_empty() {
            "-"
        } else {
            &k.package
        },
        k.path,
        k.dtb
            .as_ref()
            .map(|d| format!(", device tree {d}"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "command line: {}",
        crate::image::build::kernel_cmdline(&profile, &layout, None)
    );
    if let Some(b) = &profile.bootloader {
        let _ = writeln!(
            out,
            "bootloader: {} at byte {} ({})",
            b.path.value,
            b.offset.value,
            Human(b.offset.value)
        );
    }
    let methods: Vec<String> = profile
        .boot
        .methods
        .iter()
        .map(|m| format!("{m:?}").to_lowercase())
        .collect();
    if !methods.is_empty() {
        let _ = writeln!(out, "boot configuration: {}", methods.join(", "));
    }
    // `boot --emulator NAME`: what each setup gives the board.
    for e in profile.emulator.iter().chain(&profile.emulators) {
        let mut what = vec![format!("QEMU {} ({})", e.machine, e.system)];
        what.push(format!("{} disk", e.drive));
        if e.direct_boot.is_some() {
            what.push("kernel of the image's extlinux.conf".into());
        }
        match &e.display {
            Some(d) => what.push(format!("screen {d}")),
            None => what.push("no screen".into()),
        }
        match &e.network {
            Some(n) => what.push(format!("network {n} (--forward)")),
            None => what.push("no network".into()),
        }
        let _ = writeln!(out, "emulator {}: {}", e.label(), what.join(", "));
    }
    if let Some((part, size, capacity)) = blob {
        let _ = writeln!(
            out,
            "kernel blob: {size} bytes ({}) of partition `{part}` ({}), {:.0}% used",
            Human(size),
            Human(capacity),
            size as f64 * 100.0 / capacity.max(1) as f64
        );
    } else if profile.vboot.is_some() {
        let _ = writeln!(
            out,
            "kernel blob: signed at build time (pass --rootfs to see its size against its partition)"
        );
    }
    let _ = writeln!(out);
    let _ = write!(out, "{layout}");
    Ok(())
}

struct Progress {
    mode: ProgressMode,
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn new(mode: ProgressMode) -> Progress {
        let mode = match mode {
            ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Bar,
            ProgressMode::Auto => ProgressMode::Plain,
            m => m,
        };
        let bar = (mode == ProgressMode::Bar).then(|| {
            let b = indicatif::ProgressBar::new_spinner();
            b.enable_steady_tick(std::time::Duration::from_millis(120));
            b
        });
        Progress { mode, bar }
    }

    fn event(&self, e: BuildEvent<'_>) {
        match (self.mode, e) {
            (ProgressMode::Bar, BuildEvent::Phase(p)) => {
                if let Some(b) = &self.bar {
                    b.set_message(p.to_string());
                }
            }
            (ProgressMode::Plain, BuildEvent::Phase(p)) => eprintln!("boardsmith: {p}"),
            _ => {}
        }
    }

    fn phase(&self, p: &str) {
        self.event(BuildEvent::Phase(p));
    }

    fn warn(&self, w: &str) {
        match &self.bar {
            Some(b) => b.suspend(|| eprintln!("warning: {w}")),
            None => eprintln!("warning: {w}"),
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

fn build_all_cmd(catalog: &Catalog, args: BuildArgs, req: BuildRequest) -> Result<(), Failure> {
    let source = match (&args.rootfs_dir, &args.rootfs) {
        (Some(d), _) => RootfsSource::PerBoardIn(d.clone()),
        (None, Some(r)) => RootfsSource::Shared(r.clone()),
        (None, None) => {
            // Each board's root filesystem, built here. One password for every board: asked once.
            let mut rreq = rootfs_request(
                &args.rootfs_options,
                PathBuf::new(),
                req.epoch,
                args.world_readable,
            )?;
            if rreq.password.is_none() && rreq.interactive {
                let p = crate::rootfs::users::prompt_password(
                    "Password for the default user of every board",
                )
                .map_err(|e| Failure::usage(e.to_string()))?;
                rreq.password = Some(crate::rootfs::Password::Plain(p));
            }
            // Boards build side by side: no more prompts (secret settings need a value or `random`).
            rreq.interactive = false;
            RootfsSource::Build(Box::new(rreq))
        }
    };
    let quiet = args.progress == ProgressMode::None;
    let plain = matches!(args.progress, ProgressMode::Plain)
        || (args.progress == ProgressMode::Auto && !std::io::stderr().is_terminal());
    let summary = build_all(
        catalog,
        &source,
        &req.out_dir,
        &req,
        args.jobs,
        &|board, phase| {
            if plain {
                eprintln!("boardsmith: [{board}] {phase}");
            }
        },
        &|r| {
            if !quiet {
                eprintln!(
                    "boardsmith: {} {} ({:.1} s{})",
                    if r.ok { "built" } else { "FAILED" },
                    r.board,
                    r.seconds,
                    match (&r.base_key, &r.base_cache) {
                        (Some(k), Some(c)) => format!("; base {} {c}", &k[..12.min(k.len())]),
                        _ => String::new(),
                    }
                );
                for w in &r.warnings {
                    eprintln!("warning: [{}] {w}", r.board);
                }
                for f in &r.secret_files {
                    eprintln!(
                        "  secret    [{}] generated: {} (mode 0600; keep it, it is printed nowhere)",
                        r.board,
                        f.display()
                    );
                }
            }
        },
    )
    .map_err(|e| Failure::usage(report_chain(&e)))?;
    std::fs::create_dir_all(&req.out_dir)
        .map_err(|e| Failure::failed(format!("creating {}: {e}", req.out_dir.display())))?;
    let json = pretty_json(&summary)?;
    let summary_path = req.out_dir.join("build-summary.json");
    crate::output::write_atomic(&summary_path, format!("{json}\n").as_bytes())
        .and_then(|p| p.commit())
        .map_err(|e| Failure::failed(format!("writing {}: {e}", summary_path.display())))?;
    if args.json {
        println!("{json}");
    }
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
    if matches!(source, RootfsSource::Build(_)) {
        eprintln!(
            "bases: {} distinct, {} built by mmdebstrap in this run; board layers: {} distinct, {} built (the others from the cache)",
            summary.bases, summary.bases_built, summary.layers, summary.layers_built
        );
    }
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

/// Turns the shared rootfs options into a request for the library.
fn rootfs_request(
    o: &RootfsOptions,
    out: PathBuf,
    epoch: u64,
    world_readable: bool,
) -> Result<crate::rootfs::RootfsRequest, Failure> {
    use crate::rootfs::{ArtifactSource, Password, RootfsRequest, Selection};
    let mut req = RootfsRequest::new(out, epoch);
    req.initramfs_hook = std::env::current_exe().ok();
    req.selection = Selection {
        add: o.features.clone(),
        remove: o.no_features.clone(),
    };
    let d = &o.debian;
    if let Some(c) = &d.cache {
        req.cache = c.clone();
    }
    req.no_cache = d.no_cache;
    req.mirror = d.base.mirror.clone();
    req.security_mirror = d.base.security_mirror.clone();
    req.suite = d.base.suite.clone();
    req.snapshot = d.base.snapshot.clone();
    req.mode = match d.base.mode {
        MmdebstrapMode::Unshare => crate::rootfs::mmdebstrap::Mode::Unshare,
        MmdebstrapMode::Root => crate::rootfs::mmdebstrap::Mode::Root,
    };
    if let Some(b) = &d.binfmt_dir {
        req.binfmt_dir = b.clone();
    }
    let b = &o.board;
    req.hostname = b.hostname.clone();
    req.user = b.user.clone();
    req.autologin = b.autologin.then_some(true);
    req.expire_password = b.expire_password.then_some(true);
    req.password = match (&b.password_hash, b.password_stdin, b.random_password) {
        (_, _, true) => Some(Password::Random),
        (Some(h), _, _) => Some(Password::Hash(h.trim().to_string())),
        (None, true, _) => Some(Password::Plain(
            crate::rootfs::users::read_stdin_line()
                .map_err(|e| Failure::usage(format!("--password-stdin: {e}")))?,
        )),
        (None, false, false) => None,
    };
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
    // Settings with their own option.
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
    if b.droidmote_binary.is_some() || b.droidmote_sha256.is_some() {
        req.artifacts.insert(
            "droidmote".into(),
            ArtifactSource {
                source: b.droidmote_binary.clone(),
                sha256: b.droidmote_sha256.clone(),
            },
        );
    }
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
    req.interactive = !b.password_stdin && crate::rootfs::users::can_prompt();
    req.world_readable = world_readable;
    Ok(req)
}

/// Makes SIGINT/SIGTERM/SIGHUP end this command with 128+N: at once, removing its temporary files
/// (`OnStop::Exit`), or once the work stopped at its next check (`OnStop::Poll`).
fn install_signals(on_stop: crate::signals::OnStop) -> Result<(), Failure> {
    crate::signals::install(on_stop)
        .map_err(|e| Failure::failed(format!("installing the signal handlers: {e}")))
}

fn run_rootfs(
    profile: &Profile,
    req: &crate::rootfs::RootfsRequest,
    progress: &Progress,
) -> Result<crate::rootfs::RootfsReport, Failure> {
    use crate::rootfs::RootfsEvent;
    crate::rootfs::build_rootfs(profile, req, &|e| match e {
        RootfsEvent::Phase(p) => progress.phase(p),
        RootfsEvent::Warning(w) => progress.warn(w),
    })
    .map_err(rootfs_failure)
}

fn rootfs_failure(e: crate::rootfs::RootfsError) -> Failure {
    Failure {
        code: if e.is_input_error() {
            EXIT_USAGE
        } else if let crate::rootfs::RootfsError::Fetch(f) = &e
            && f.is_transient()
        {
            EXIT_NETWORK
        } else {
            EXIT_FAILURE
        },
        message: report_chain(&e),
    }
}

fn rootfs_cmd(catalog: &Catalog, args: RootfsArgs) -> Result<(), Failure> {
    install_signals(crate::signals::OnStop::Exit)?;
    let profile = load(catalog, &args.board)?;
    if args.cache_key {
        let req = rootfs_request(&args.options, PathBuf::new(), epoch()?, false)?;
        let key = crate::rootfs::cache_key(&profile, &req).map_err(rootfs_failure)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&key).unwrap_or_default());
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
        print_secret_files(&report);
    }
    Ok(())
}

fn cache_cmd(args: CacheArgs) -> Result<(), Failure> {
    use crate::rootfs::cache::parse_age;
    use crate::rootfs::layer;
    let root = |d: &CacheDirOption| {
        d.cache
            .clone()
            .unwrap_or_else(crate::rootfs::mmdebstrap::default_cache)
    };
    let when = |t: Option<u64>| t.map(crate::time::utc).unwrap_or_else(|| "-".into());
    match args.action {
        CacheAction::List { json, dir } => {
            let all = layer::list(&root(&dir));
            if json {
                println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
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
        CacheAction::Prune {
            older_than,
            json,
            dir,
        } => {
            let age = older_than
                .as_deref()
                .map(parse_age)
                .transpose()
                .map_err(|e| Failure::usage(e.to_string()))?;
            let all = layer::prune(&root(&dir), age);
            if json {
                println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
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
    }
}

/// Where generated secrets went (never the secrets themselves).
fn print_secret_files(report: &crate::rootfs::RootfsReport) {
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

fn build_cmd(catalog: &Catalog, args: BuildArgs) -> Result<(), Failure> {
    if let Some((at, c)) = args
        .cmdline_append
        .as_deref()
        .and_then(crate::profile::control_char)
    {
        return Err(Failure::usage(format!(
            "--cmdline-append: contains a control character, {}, at character {at}; the kernel command line goes into extlinux.conf, boot.scr and the FVP launch script and must be one line of printable text",
            crate::profile::describe_control(c)
        )));
    }
    install_signals(crate::signals::OnStop::Exit)?;
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
        return build_all_cmd(catalog, args, req);
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
    let result = build(&profile, &req, &|e| progress.event(e));
    progress.finish();
    let report = result.map_err(|e| Failure {
        code: if e.is_input_error() {
            EXIT_USAGE
        } else {
            EXIT_FAILURE
        },
        message: report_chain(&e),
    })?;
    print_build_report(&report, args.json)?;
    Ok(())
}

fn print_build_report(
    report: &crate::image::build::BuildReport,
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

fn release_cmd(catalog: &Catalog, args: ReleaseArgs) -> Result<(), Failure> {
    use crate::release::{Format, ReleaseEvent, ReleaseRequest, Settings, release};
    install_signals(crate::signals::OnStop::Exit)?;
    let profile = load(catalog, &args.board)?;
    let mut formats = Vec::new();
    for f in &args.compress {
        let fmt = Format::parse(f.trim()).ok_or_else(|| {
            Failure::usage(format!(
                "--compress: unknown format {f:?}; use xz, zst or 7z"
            ))
        })?;
        if !formats.contains(&fmt) {
            formats.push(fmt);
        }
    }
    let xz_block =
        parse_size(&args.xz_block).map_err(|e| Failure::usage(format!("--xz-block: {e}")))?;
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1)
    });
    let req = ReleaseRequest {
        image: args.image.clone().unwrap_or_else(|| {
            crate::release::default_image(std::path::Path::new("out"), &profile.name)
        }),
        out_dir: args
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from("release").join(&profile.name)),
        formats,
        settings: Settings {
            threads,
            xz_level: args.xz_level,
            xz_block,
            zstd_level: args.zstd_level,
            sevenz_level: args.sevenz_level,
            epoch: epoch()?,
            world_readable: args.world_readable,
        },
    };
    let mode = match args.progress {
        ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Bar,
        ProgressMode::Auto => ProgressMode::Plain,
        m => m,
    };
    let bar = (mode == ProgressMode::Bar).then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:24} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let result = release(&profile, &req, &|e| match (&bar, e) {
        (Some(b), ReleaseEvent::Artefact(name)) => {
            b.set_message(name.to_string());
            b.set_position(0);
        }
        (Some(b), ReleaseEvent::Bytes { done, total }) => {
            b.set_length(total);
            b.set_position(done);
        }
        (None, ReleaseEvent::Artefact(name)) if mode == ProgressMode::Plain => {
            eprintln!("boardsmith: writing {name}")
        }
        _ => {}
    });
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let manifest = result.map_err(|e| Failure {
        code: if e.is_input_error() {
            EXIT_USAGE
        } else {
            EXIT_FAILURE
        },
        message: report_chain(&e),
    })?;
    if args.json {
        println!("{}", pretty_json(&manifest)?);
    } else {
        for a in &manifest.artefacts {
            eprintln!(
                "  {:<32} {:>12}  {}",
                a.name,
                Human(a.digest.size).to_string(),
                a.digest.sha256
            );
        }
        eprintln!(
            "release notes: {}",
            req.out_dir
                .join(format!("{}-release.md", profile.name))
                .display()
        );
    }
    Ok(())
}

// ---- kernel configuration and build ----

#[derive(Args, Debug)]
pub struct KernelCommon {
    /// Extra fragment after the profile's: an embedded name (see kernel-configs/) or a path
    #[arg(long = "fragment", value_name = "NAME|FILE")]
    pub fragments: Vec<String>,
    /// Root filesystem feature the kernel must support: adds kernel-configs/FEATURE.config if there is one
    #[arg(long = "feature", value_name = "FEATURE")]
    pub features: Vec<String>,
    /// Work directory for kernel build directories (default $XDG_CACHE_HOME/boardsmith or ~/.cache/boardsmith)
    #[arg(long, env = "BOARDSMITH_WORK_DIR", value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Also report redundant fragment assignments (and, for `kernel`, every kept symbol)
    #[arg(short, long)]
    pub verbose: bool,
    /// Print JSON on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct KconfigArgs {
    /// Board name or path to a profile .toml
    pub board: String,
    /// Write the merged fragment to FILE (default: stdout, unless --kernel-src)
    #[arg(short = 'o', long = "out", value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Kernel source tree: run its Kconfig (defconfig + fragments, olddefconfig) in a build directory
    /// under the work directory and check every requested symbol; exit 1 if one did not survive
    #[arg(long, value_name = "DIR")]
    pub kernel_src: Option<PathBuf>,
    #[command(flatten)]
    pub common: KernelCommon,
}

#[derive(Args, Debug)]
pub struct KernelArgs {
    /// Board name or path to a profile .toml
    pub board: String,
    /// Kernel source tree (never written to)
    #[arg(long, value_name = "DIR")]
    pub kernel_src: PathBuf,
    /// Staging tree to install into (default out/BOARD-kernel)
    #[arg(short = 'o', long = "out", value_name = "STAGING")]
    pub out: Option<PathBuf>,
    /// Parallel make jobs (default: number of CPUs)
    #[arg(short = 'j', long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Full build log (default: kernel-build.log in the build directory)
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Progress display
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
    #[command(flatten)]
    pub common: KernelCommon,
}

fn kconfig_failure(e: crate::kconfig::KconfigError) -> Failure {
    Failure {
        code: if e.is_input_error() {
            EXIT_USAGE
        } else {
            EXIT_FAILURE
        },
        message: report_chain(&e),
    }
}

/// Loads the board and merges its fragments, printing override warnings (and redundancies with -v).
fn merged_fragments(
    catalog: &Catalog,
    board: &str,
    common: &KernelCommon,
) -> Result<(Profile, crate::kconfig::merge::Merged), Failure> {
    use crate::kconfig::{locate, merge};
    let profile = load(catalog, board)?;
    let wanted = crate::rootfs::features::kernel_fragments_wanted(&common.features);
    let mut extra = locate::extra_fragments(&profile, &wanted);
    extra.extend(common.fragments.iter().cloned());
    let refs = locate::refs_for(&profile, &extra);
    let fragments = locate::load_all(&refs).map_err(|e| kconfig_failure(e.into()))?;
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

fn work_dir(common: &KernelCommon) -> PathBuf {
    common
        .work_dir
        .clone()
        .unwrap_or_else(crate::kconfig::kbuild::default_work_dir)
}

fn print_check(c: &crate::kconfig::configure::Configured, all: bool, out: &mut dyn Write) {
    use crate::kconfig::check::Status;
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

fn check_failure(c: &crate::kconfig::configure::Configured) -> Failure {
    let n = c.report.count(crate::kconfig::check::Status::Failed);
    Failure::failed(format!(
        "{n} requested kernel config symbol(s) did not survive Kconfig for {} (lines marked FAILED); \
         fix the fragments or mark a symbol optional with `# boardsmith: optional` on the line before it",
        c.board
    ))
}

fn kconfig_cmd(catalog: &Catalog, args: KconfigArgs) -> Result<(), Failure> {
    use crate::kconfig::configure::{ConfigureRequest, Event, configure};
    let (profile, merged) = merged_fragments(catalog, &args.board, &args.common)?;
    let text = merged.render(&format!(
        "kernel config fragment for {} ({})",
        profile.name, profile.kernel.defconfig
    ));
    if let Some(out) = &args.out {
        let pending = crate::output::write_atomic(out, text.as_bytes())
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
    .map_err(kconfig_failure)?;
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

impl Progress {
    fn kernel_event(&self, e: crate::kconfig::configure::Event<'_>) {
        use crate::kconfig::configure::Event;
        let msg = match e {
            Event::Phase(p) => p.to_string(),
            Event::Waiting(p) => format!("waiting for another boardsmith using {}", p.display()),
            Event::Step { count, line } => {
                match (self.mode, &self.bar) {
                    (ProgressMode::Bar, Some(b)) => b.set_message(format!("[{count}] {line}")),
                    (ProgressMode::Plain, _) if count % 500 == 0 => {
                        eprintln!("boardsmith: {count} build steps, now {line}")
                    }
                    _ => {}
                }
                return;
            }
        };
        match (self.mode, &self.bar) {
            (ProgressMode::Bar, Some(b)) => b.println(format!("boardsmith: {msg}")),
            (ProgressMode::Plain, _) => eprintln!("boardsmith: {msg}"),
            _ => {}
        }
    }
}

fn kernel_cmd(catalog: &Catalog, args: KernelArgs) -> Result<(), Failure> {
    use crate::kconfig::configure::{ConfigureRequest, configure};
    use crate::kconfig::kernel_build::{BuildRequest, build, check_destination};
    let (profile, merged) = merged_fragments(catalog, &args.board, &args.common)?;
    let staging = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("out").join(format!("{}-kernel", profile.name)));
    check_destination(&staging).map_err(kconfig_failure)?;
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
    let configured = configure(&req, &merged, &|e| progress.kernel_event(e));
    let (configured, kb) = match configured {
        Ok(c) => c,
        Err(e) => {
            progress.finish();
            return Err(kconfig_failure(e));
        }
    };
    if let Some(b) = &progress.bar {
        b.suspend(|| print_check(&configured, args.common.verbose, &mut std::io::stderr()));
    } else {
        print_check(&configured, args.common.verbose, &mut std::io::stderr());
    }
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
        &|e| progress.kernel_event(e),
    );
    progress.finish();
    let report = result.map_err(kconfig_failure)?;
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

/// The board for `boot`: --board, or the image's file name when it names a profile.
fn boot_board(catalog: &Catalog, args: &BootArgs) -> Result<Profile, Failure> {
    if let Some(b) = &args.board {
        return load(catalog, b);
    }
    let stem = args
        .image
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    match catalog.load(&stem) {
        Ok(p) if !stem.is_empty() => Ok(p),
        _ => Err(Failure::usage(format!(
            "{} does not name a board profile; pass --board BOARD",
            args.image.display()
        ))),
    }
}

/// The screenshots, each with the --screenshot-after and --screenshot-delay that follow it on the
/// command line (clap keeps each option's values apart; their positions pair them).
fn screenshot_specs(
    m: Option<&ArgMatches>,
    o: &ScreenshotOptions,
) -> Result<Vec<crate::boot::ScreenshotSpec>, Failure> {
    let index = |id: &str| -> Vec<usize> {
        m.and_then(|m| m.indices_of(id))
            .map(|i| i.collect())
            .unwrap_or_default()
    };
    let shots = index("screenshot");
    let mut specs: Vec<crate::boot::ScreenshotSpec> = o
        .screenshot
        .iter()
        .map(|f| crate::boot::ScreenshotSpec {
            file: f.clone(),
            after: None,
            delay: std::time::Duration::ZERO,
        })
        .collect();
    // The --screenshot an option belongs to: the last one before it.
    let owner = |at: usize, what: &str| -> Result<usize, Failure> {
        shots.iter().rposition(|&s| s < at).ok_or_else(|| {
            Failure::usage(format!(
                "{what} has no effect here: it applies to the --screenshot given before it, and there is none; put it after its --screenshot FILE.png"
            ))
        })
    };
    let mut after_set = vec![false; specs.len()];
    for (at, re) in index("screenshot_after")
        .into_iter()
        .zip(&o.screenshot_after)
    {
        let i = owner(at, "--screenshot-after")?;
        if std::mem::replace(&mut after_set[i], true) {
            return Err(Failure::usage(format!(
                "--screenshot-after is given twice for --screenshot {}",
                specs[i].file.display()
            )));
        }
        specs[i].after = Some(
            regex::Regex::new(re)
                .map_err(|e| Failure::usage(format!("--screenshot-after: {e}")))?,
        );
    }
    let mut delay_set = vec![false; specs.len()];
    for (at, d) in index("screenshot_delay")
        .into_iter()
        .zip(&o.screenshot_delay)
    {
        let i = owner(at, "--screenshot-delay")?;
        if std::mem::replace(&mut delay_set[i], true) {
            return Err(Failure::usage(format!(
                "--screenshot-delay is given twice for --screenshot {}",
                specs[i].file.display()
            )));
        }
        if !(d.is_finite() && *d >= 0.0 && *d < 1e6) {
            return Err(Failure::usage(format!(
                "--screenshot-delay: {d} is not a number of seconds (0 or more)"
            )));
        }
        specs[i].delay = std::time::Duration::from_secs_f64(*d);
    }
    for s in &specs {
        if s.file.file_name().is_none() {
            return Err(Failure::usage(format!(
                "--screenshot: {} names no file",
                s.file.display()
            )));
        }
        // QEMU gets the path in QMP's JSON, which carries text only.
        if s.file.to_str().is_none() {
            return Err(Failure::usage(format!(
                "--screenshot: {} is not UTF-8; choose a UTF-8 file name",
                s.file.display()
            )));
        }
        // Known now, not after a boot of minutes.
        let dir = match s.file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => std::path::Path::new("."),
        };
        if !dir.is_dir() {
            return Err(Failure::usage(format!(
                "--screenshot: {}: the directory {} does not exist",
                s.file.display(),
                dir.display()
            )));
        }
    }
    Ok(specs)
}

fn boot_cmd(catalog: &Catalog, args: BootArgs, m: Option<&ArgMatches>) -> Result<(), Failure> {
    use crate::boot::{BootError, BootEvent, BootRequest, Screen, boot};
    let profile = boot_board(catalog, &args)?;
    let emu = crate::boot::select_emulator(&profile, args.emulator.as_deref())
        .map_err(|e| Failure::usage(report_chain(&e)))?;
    // What the chosen emulator cannot do is refused as a whole options struct (clap's own list).
    if let Some(m) = m {
        if emu.display.is_none() {
            let why = format!(
                "emulator `{}` of board `{}` has no display device (QEMU's {} machine shows no screen){}",
                emu.label(),
                profile.name,
                emu.machine,
                match profile.emulators.iter().find(|e| e.display.is_some()) {
                    Some(e) => format!("; --emulator {} has one", e.label()),
                    None => String::new(),
                }
            );
            refuse_given(m, &arguments_of::<ScreenshotOptions>(), &why)?;
            refuse_given(m, &arguments_of::<ScreenOptions>(), &why)?;
        }
        if emu.network.is_none() {
            refuse_given(
                m,
                &arguments_of::<NetOptions>(),
                &format!(
                    "emulator `{}` of board `{}` has no network device (emulator.network)",
                    emu.label(),
                    profile.name
                ),
            )?;
        }
    }
    let w = &args.watch;
    let expect =
        regex::Regex::new(&w.expect).map_err(|e| Failure::usage(format!("--expect: {e}")))?;
    if !(w.timeout.is_finite() && w.timeout > 0.0 && w.timeout < 1e7) {
        return Err(Failure::usage(format!(
            "--timeout: {} is not a positive number of seconds",
            w.timeout
        )));
    }
    let screen = match (&args.screen.display, &args.screen.vnc) {
        (Some(ui), _) => {
            if std::env::var_os("DISPLAY").is_none()
                && std::env::var_os("WAYLAND_DISPLAY").is_none()
            {
                return Err(Failure::usage(
                    "--display needs a graphical session (neither DISPLAY nor WAYLAND_DISPLAY is set); use --vnc :N and a VNC viewer instead",
                ));
            }
            Screen::Window(ui.clone())
        }
        (None, Some(v)) => Screen::Vnc(
            v.parse()
                .map_err(|e| Failure::usage(format!("--vnc: {e}")))?,
        ),
        (None, None) => Screen::Hidden,
    };
    let forwards = args
        .net
        .forwards
        .iter()
        .map(|f| {
            f.parse()
                .map_err(|e| Failure::usage(format!("--forward: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let req = BootRequest {
        log: args.log.clone(),
        interactive: args.interactive,
        emulator: args.emulator.clone(),
        screenshots: screenshot_specs(m, &w.screenshots)?,
        forwards,
        screen,
        ..BootRequest::new(
            args.image.clone(),
            expect,
            std::time::Duration::from_secs_f64(w.timeout),
        )
    };
    let (json, quiet) = (w.json, w.quiet);
    let mut on = |e: BootEvent<'_>| match e {
        BootEvent::Starting { command } => {
            if !quiet {
                eprintln!("boardsmith: {}", command.join(" "));
            }
            if args.interactive {
                eprintln!(
                    "boardsmith: console handed over; Ctrl-A x quits QEMU, Ctrl-A c switches to its monitor"
                );
            }
            for f in &req.forwards {
                eprintln!(
                    "boardsmith: forwarding {}:{} on this machine to port {} of the board",
                    f.addr, f.host_port, f.guest_port
                );
            }
            if let Screen::Vnc(v) = &req.screen {
                eprintln!(
                    "boardsmith: the screen is served over VNC on {}:{} (display {v})",
                    v.addr,
                    v.port()
                );
            }
        }
        BootEvent::Padding { to } => {
            if !quiet {
                eprintln!(
                    "boardsmith: the emulated SD card must be a power of two: booting a temporary copy padded to {}",
                    Human(to)
                );
            }
        }
        BootEvent::DirectBoot { cmdline } => {
            if !quiet {
                eprintln!(
                    "boardsmith: starting the kernel and initrd of the image's extlinux.conf with QEMU's device tree: {cmdline}"
                );
            }
        }
        BootEvent::Screenshot(s) => {
            eprintln!(
                "boardsmith: screenshot {} ({}x{}) after {:.1} s",
                s.file.display(),
                s.width,
                s.height,
                s.seconds
            );
        }
        BootEvent::KeepRunning { .. } => {
            eprintln!(
                "boardsmith: the board keeps running for you; end it by closing QEMU's window, powering the board off, or Ctrl-C"
            );
        }
        BootEvent::Console(line) => {
            if !quiet {
                // A closed stdout (`| head`) must not stop the boot, so write errors are ignored.
                if json {
                    let _ = writeln!(std::io::stderr().lock(), "{line}");
                } else {
                    let _ = writeln!(std::io::stdout().lock(), "{line}");
                }
            }
        }
        BootEvent::Emulator(line) => {
            let _ = writeln!(std::io::stderr().lock(), "qemu: {line}");
        }
    };
    install_signals(crate::signals::OnStop::Poll)?;
    match boot(&profile, &req, &mut on) {
        Ok(report) => {
            if json {
                let v = serde_json::json!({ "result": "booted", "report": report });
                println!("{v:#}");
            } else if let Some(m) = &report.matched {
                eprintln!(
                    "boardsmith: {} booted to /{}/ in {:.1} s: {m}",
                    report.image.display(),
                    w.expect,
                    report.seconds
                );
            }
            Ok(())
        }
        Err(e) => {
            let code = match &e {
                BootError::Interrupted { signal, .. } => 128 + signal,
                e if e.is_input_error() => EXIT_USAGE,
                _ => EXIT_FAILURE,
            };
            if json && let BootError::Failed(f) = &e {
                let v = serde_json::json!({ "result": "failed", "failure": f });
                println!("{v:#}");
            }
            Err(Failure {
                code,
                message: report_chain(&e),
            })
        }
    }
}

fn write_display(mode: WriteProgressMode) -> crate::device::progress::ProgressDisplay {
    use crate::device::progress::{Display, ProgressDisplay};
    ProgressDisplay::new(match mode {
        WriteProgressMode::Auto if std::io::stderr().is_terminal() => Display::Bar,
        WriteProgressMode::Auto | WriteProgressMode::None => Display::None,
        WriteProgressMode::Bar => Display::Bar,
        WriteProgressMode::Json => Display::Json,
    })
}

fn write_cmd(args: WriteArgs) -> Result<(), Failure> {
    use crate::write::sums::{ExpectedSum, SumKind, parse_hex};
    use crate::write::{BmapChoice, WriteRequest};
    let expected = match (&args.sha256, &args.md5) {
        (Some(h), _) => Some((SumKind::Sha256, h, "--sha256")),
        (None, Some(h)) => Some((SumKind::Md5, h, "--md5")),
        _ => None,
    }
    .map(|(kind, h, origin)| {
        parse_hex(kind, h)
            .map(|hex| ExpectedSum {
                kind,
                hex,
                origin: origin.into(),
            })
            .map_err(|e| Failure::usage(format!("{origin}: {e}")))
    })
    .transpose()?;
    let source = crate::write::source::SourceSpec::parse(&args.src);
    let net = write_net_options(&args.net)?;
    let req = WriteRequest {
        source,
        target: args.target,
        bmap: match (args.bmap, args.no_bmap) {
            (Some(f), _) => BmapChoice::File(f),
            (None, true) => BmapChoice::None,
            (None, false) => BmapChoice::Auto,
        },
        verify: !args.no_verify,
        grow: args.grow,
        expected,
        sums: args.sums,
        target_size: parse_size_arg(args.size.as_deref())?,
        yes: args.yes,
        net,
        no_checksum: args.net.no_checksum,
        max_window: match args.max_window.as_deref() {
            None => Default::default(),
            Some(s) => parse_size(s)
                .map_err(|e| Failure::usage(format!("--max-window: {e}")))
                .and_then(|n| {
                    crate::write::decompress::WindowLimit::chosen(n).map_err(Failure::usage)
                })?,
        },
    };
    install_signals(crate::signals::OnStop::Poll)?;
    let display = write_display(args.progress);
    let result = crate::write::write(&req, &|e| display.event(e));
    display.finish();
    let report = result.map_err(|f| Failure {
        code: f.error.exit_code(),
        message: f.to_string(),
    })?;
    if args.progress == WriteProgressMode::Json {
        let mut v = json_value(&report)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("event".into(), "summary".into());
        }
        println!("{v}");
    } else {
        eprint!("{report}");
    }
    Ok(())
}

fn grow_cmd(args: GrowArgs) -> Result<(), Failure> {
    let size = parse_size_arg(args.size.as_deref())?;
    install_signals(crate::signals::OnStop::Poll)?;
    let mut target = crate::device::target::Target::open_checked(
        &args.target,
        &crate::device::target::Checks {
            yes: args.yes,
            create: false,
            ..Default::default()
        },
    )
    .map_err(|e| Failure {
        code: if e.is_usage() {
            EXIT_USAGE
        } else {
            EXIT_FAILURE
        },
        message: format!("{e}\nnothing was changed"),
    })?;
    let display = write_display(args.progress);
    let result = crate::grow::grow(&mut target, size, &|e| display.event(e));
    display.finish();
    let report = result.map_err(|f| Failure {
        code: f.exit_code(),
        message: format!("growing {} failed: {f}", args.target.display()),
    })?;
    if args.progress == WriteProgressMode::Json {
        let mut v = json_value(&report)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("event".into(), "summary".into());
        }
        println!("{v}");
    } else {
        eprintln!("{}: {report}", args.target.display());
    }
    Ok(())
}
