//! The command line's definition (clap): every command, its arguments and their help, from which the
//! help, the man pages and the shell completions are made. Definitions only: what each command does
//! is in its own file beside this one. The tests include this file too (tests/support/cli.rs), to
//! try every option of a group from clap's own list.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
        #[command(flatten)]
        catalog: CatalogArgs,
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
    /// List or prune the root filesystem cache: the bases and board layers mmdebstrap built, shared by
    /// the boards (and builds) with the same keys
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
        #[command(flatten)]
        catalog: CatalogArgs,
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

/// Where board profiles come from, for every command that reads one: only these take `--boards-dir`,
/// so it is refused (by clap, as unknown) wherever it would have no effect.
#[derive(Args, Debug, Clone)]
pub struct CatalogArgs {
    /// Directory of your own board profiles (searched before the embedded ones)
    #[arg(long, env = "BOARDSMITH_BOARDS", value_name = "DIR")]
    pub boards_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// Board name or path to a profile .toml
    pub board: String,
    #[command(flatten)]
    pub catalog: CatalogArgs,
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
    #[command(flatten)]
    pub catalog: CatalogArgs,
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
    #[command(flatten)]
    pub catalog: CatalogArgs,
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
    /// Progress display on stderr
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
    #[command(flatten)]
    pub catalog: CatalogArgs,
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
    /// Progress display on stderr
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
    #[command(flatten)]
    pub catalog: CatalogArgs,
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
    #[arg(long, value_name = "REGEX", default_value = boardsmith::boot::DEFAULT_EXPECT)]
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
    #[command(flatten)]
    pub catalog: CatalogArgs,
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
    /// Progress display on stderr
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
pub fn arguments_of<T: Args>() -> Vec<clap::Arg> {
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
    /// Progress display on stderr
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
    /// Print the report as JSON on stdout
    #[arg(long)]
    pub json: bool,
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
    /// Progress display on stderr
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
    /// Print the report as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

/// How a command shows its progress on stderr (its report goes to stdout with --json).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressMode {
    /// A bar on a terminal, else plain
    Auto,
    /// A bar (or spinner) redrawn in place
    Bar,
    /// One line per step, and per tenth of the bytes
    Plain,
    /// One JSON object per line (event: step, phase, progress, warning, note, ...)
    Json,
    /// Nothing but warnings and notes
    None,
}

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
    #[command(flatten)]
    pub catalog: CatalogArgs,
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
    #[command(flatten)]
    pub catalog: CatalogArgs,
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
    /// Progress display on stderr
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
    #[command(flatten)]
    pub common: KernelCommon,
}
