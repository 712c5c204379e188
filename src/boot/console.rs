//! The serial console as text: escape sequences and control characters removed, split into lines, and
//! watched for the expected pattern and for the signs of each boot stage failing.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;

use regex::Regex;

/// Longest line kept; longer ones are split (a guest can print without newlines forever).
const MAX_LINE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Text,
    Esc,
    Csi,
    Osc,
    OscEsc,
}

/// Turns console bytes into text lines: ANSI escape sequences (CSI, OSC, two-byte ESC) and control
/// characters other than tab are dropped, carriage returns ignored, backspace erases.
#[derive(Debug)]
pub struct Sanitizer {
    line: Vec<u8>,
    state: State,
}

impl Default for Sanitizer {
    fn default() -> Self {
        Sanitizer {
            line: Vec::new(),
            state: State::Text,
        }
    }
}

impl Sanitizer {
    /// Feeds bytes; complete lines are appended to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<String>) {
        for &b in bytes {
            self.state = match (self.state, b) {
                (State::Text, 0x1b) => State::Esc,
                (State::Text, b'\n') => {
                    out.push(self.take());
                    State::Text
                }
                (State::Text, 0x08) => {
                    self.line.pop();
                    State::Text
                }
                (State::Text, b'\t') => {
                    self.line.push(b);
                    State::Text
                }
                (State::Text, c) if c < 0x20 || c == 0x7f => State::Text,
                (State::Text, c) => {
                    self.line.push(c);
                    if self.line.len() >= MAX_LINE {
                        out.push(self.take());
                    }
                    State::Text
                }
                (State::Esc, b'[') => State::Csi,
                (State::Esc, b']') => State::Osc,
                (State::Esc, _) => State::Text,
                (State::Csi, 0x40..=0x7e) => State::Text,
                (State::Csi, _) => State::Csi,
                (State::Osc, 0x07) => State::Text,
                (State::Osc, 0x1b) => State::OscEsc,
                (State::Osc, _) => State::Osc,
                (State::OscEsc, b'\\') => State::Text,
                (State::OscEsc, _) => State::Osc,
            };
        }
    }

    fn take(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.line).into_owned();
        self.line.clear();
        s
    }

    /// The line being printed (a prompt has no newline yet).
    pub fn partial(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.line)
    }

    /// The unfinished line, if any, removed.
    pub fn take_partial(&mut self) -> Option<String> {
        (!self.line.is_empty()).then(|| self.take())
    }
}

/// Where a boot stopped. Each is recognised from what the console printed (or did not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Nothing at all on the console: the boot ROM started no SPL.
    NoSpl,
    /// Nothing at all on the console from the emulator's firmware.
    NoFirmware,
    /// SPL ran but U-Boot proper never printed its banner.
    SplOnly,
    /// U-Boot ran its boot targets and found no extlinux.conf or boot script.
    UbootNoBootConfig,
    /// U-Boot found a boot configuration but did not start a kernel.
    UbootBootFailed,
    /// The kernel was started but printed nothing, or stopped before running init.
    Kernel,
    KernelPanic,
    /// The kernel (or the initramfs) could not mount the root filesystem.
    RootNotMounted,
    /// The root filesystem was mounted but the expected pattern never appeared.
    Userspace,
    /// QEMU itself failed (it exited before the guest printed anything).
    Emulator,
}

impl Stage {
    /// Stable identifier (JSON output).
    pub fn id(self) -> &'static str {
        match self {
            Stage::NoSpl => "no-spl-output",
            Stage::NoFirmware => "no-firmware-output",
            Stage::SplOnly => "spl",
            Stage::UbootNoBootConfig => "u-boot-no-boot-config",
            Stage::UbootBootFailed => "u-boot-boot-failed",
            Stage::Kernel => "kernel",
            Stage::KernelPanic => "kernel-panic",
            Stage::RootNotMounted => "root-not-mounted",
            Stage::Userspace => "userspace",
            Stage::Emulator => "emulator",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::NoSpl => "no SPL output",
            Stage::NoFirmware => "no firmware output",
            Stage::SplOnly => "SPL ran but U-Boot did not start",
            Stage::UbootNoBootConfig => "U-Boot found no boot config",
            Stage::UbootBootFailed => "U-Boot found a boot config but did not start the kernel",
            Stage::Kernel => "kernel started but did not reach init",
            Stage::KernelPanic => "kernel panic",
            Stage::RootNotMounted => "root not mounted",
            Stage::Userspace => "root filesystem mounted but the expected output did not appear",
            Stage::Emulator => "QEMU failed",
        })
    }
}

/// What the boot has reached so far.
#[derive(Debug, Default, Clone)]
struct Milestones {
    output: bool,
    spl: bool,
    uboot: bool,
    boot_config: bool,
    kernel_started: bool,
    linux: bool,
    init: bool,
    root_mounted: bool,
    /// A U-Boot line explaining a failure, kept for the report.
    uboot_error: Option<String>,
}

/// The result of one console line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Continue,
    Matched(String),
    Failed(Stage, String),
}

/// Signs recognised on the console, as printed by U-Boot 2023.01, Linux 6.1, Debian's initramfs-tools,
/// systemd and boardsmith's minimal initramfs.
struct Patterns {
    uboot: Regex,
    boot_config: Regex,
    kernel_started: Regex,
    linux: Regex,
    init: Regex,
    root_mounted: Regex,
    panic: Regex,
    panic_root: Regex,
    root_failed: Regex,
    uboot_prompt: Regex,
    uboot_error: Regex,
}

impl Patterns {
    fn new() -> Patterns {
        let r =
            |s: &str| Regex::new(s).unwrap_or_else(|e| unreachable!("built-in pattern {s}: {e}"));
        Patterns {
            uboot: r(r"^U-Boot \d{4}\.\d{2}"),
            boot_config: r(r"^Found (/\S*extlinux\.conf|U-Boot script )|^## Executing script at"),
            kernel_started: r(r"^Starting kernel \.\.\.|^EFI stub: Booting Linux Kernel"),
            linux: r(r"Booting Linux on physical CPU|\] Linux version "),
            init: r(r"Run \S+ as init process|Trying to move old root to /initrd"),
            root_mounted: r(
                r"VFS: Mounted root|EXT4-fs \([^)]+\): mounted filesystem|Switching root\.|boardsmith-initramfs: mounting ",
            ),
            panic: r(r"Kernel panic - not syncing"),
            panic_root: r(r"VFS: Unable to mount root|No working init found|unknown-block\("),
            root_failed: r(
                r"root not mounted|Gave up waiting for root|ALERT! .* does not exist|VFS: Cannot open root device|Timed out waiting for device .*(root|by-partuuid|by-uuid)",
            ),
            uboot_prompt: r(r"^(=>|U-Boot>) ?$"),
            uboot_error: r(
                r"(?i)fail|error|not found|unable|bad (crc|magic|linux|image)|wrong image|skipping",
            ),
        }
    }
}

/// Watches console lines for the expected pattern and for failure signs, remembering the last lines.
pub struct Watcher {
    expect: Regex,
    patterns: Patterns,
    seen: Milestones,
    /// The last lines, each with how many times it repeated in a row.
    last: VecDeque<(String, usize)>,
    keep: usize,
    /// True when the board's bootloader starts with an SPL the boot ROM loads from the image.
    has_spl: bool,
    /// True when QEMU starts the kernel itself (no firmware prints first).
    direct: bool,
}

impl Watcher {
    pub fn new(expect: Regex, has_spl: bool, keep: usize) -> Watcher {
        Watcher {
            expect,
            patterns: Patterns::new(),
            seen: Milestones::default(),
            last: VecDeque::with_capacity(keep),
            keep,
            has_spl,
            direct: false,
        }
    }

    /// The kernel is the first to print (QEMU started it directly, without firmware).
    pub fn kernel_first(mut self) -> Watcher {
        self.direct = true;
        self
    }

    /// The last lines seen, oldest first; a line repeated in a row appears once, with its count.
    pub fn last_lines(&self) -> Vec<String> {
        self.last
            .iter()
            .map(|(l, n)| match n {
                1 => l.clone(),
                n => format!("{l}  [{n} times]"),
            })
            .collect()
    }

    /// Remembers a line for the report without interpreting it (the unfinished line at the end).
    pub fn record(&mut self, line: &str) {
        if let Some((l, n)) = self.last.back_mut()
            && l == line
        {
            *n += 1;
            return;
        }
        if self.last.len() == self.keep {
            self.last.pop_front();
        }
        self.last.push_back((line.to_string(), 1));
    }

    /// True once the guest printed anything.
    pub fn any_output(&self) -> bool {
        self.seen.output
    }

    /// One complete console line.
    pub fn line(&mut self, line: &str) -> Verdict {
        self.record(line);
        if line.trim().is_empty() {
            return Verdict::Continue;
        }
        self.seen.output = true;
        if self.expect.is_match(line) {
            return Verdict::Matched(line.to_string());
        }
        let p = &self.patterns;
        let s = &mut self.seen;
        if line.starts_with("U-Boot SPL ") {
            s.spl = true;
        } else if p.uboot.is_match(line) {
            s.uboot = true;
        }
        if p.boot_config.is_match(line) {
            s.boot_config = true;
        }
        if p.kernel_started.is_match(line) {
            s.kernel_started = true;
        }
        if p.linux.is_match(line) {
            s.linux = true;
        }
        if p.init.is_match(line) {
            s.init = true;
        }
        if p.root_mounted.is_match(line) {
            s.root_mounted = true;
        }
        if s.uboot && !s.kernel_started && s.uboot_error.is_none() && p.uboot_error.is_match(line) {
            // Before the boot config is found, U-Boot's own noise (no ethernet, missing uboot.env) is
            // not the reason a boot failed; after it, the first error is.
            if s.boot_config {
                s.uboot_error = Some(line.trim().to_string());
            }
        }
        if p.panic.is_match(line) {
            let stage = if p.panic_root.is_match(line) {
                Stage::RootNotMounted
            } else {
                Stage::KernelPanic
            };
            return Verdict::Failed(stage, line.trim().to_string());
        }
        if p.root_failed.is_match(line) {
            return Verdict::Failed(Stage::RootNotMounted, line.trim().to_string());
        }
        self.uboot_gave_up(line)
    }

    /// The unfinished line (prompts end without a newline).
    pub fn partial(&mut self, partial: &str) -> Verdict {
        if partial.trim().is_empty() {
            return Verdict::Continue;
        }
        if self.expect.is_match(partial) {
            self.seen.output = true;
            return Verdict::Matched(partial.to_string());
        }
        self.uboot_gave_up(partial)
    }

    /// U-Boot back at its prompt before starting a kernel: every boot target was tried and failed.
    fn uboot_gave_up(&self, line: &str) -> Verdict {
        let s = &self.seen;
        if !(s.uboot && !s.kernel_started && self.patterns.uboot_prompt.is_match(line.trim_end())) {
            return Verdict::Continue;
        }
        if s.boot_config {
            let why = s
                .uboot_error
                .clone()
                .unwrap_or_else(|| "no error printed".into());
            Verdict::Failed(
                Stage::UbootBootFailed,
                format!("U-Boot returned to its prompt: {why}"),
            )
        } else {
            Verdict::Failed(
                Stage::UbootNoBootConfig,
                "U-Boot tried every boot target, found neither extlinux/extlinux.conf nor boot.scr on the \
                 boot partition, and stopped at its prompt"
                    .into(),
            )
        }
    }

    /// The stage the boot was in when time ran out (or QEMU exited), with an explanation.
    pub fn stalled(&self) -> (Stage, String) {
        let s = &self.seen;
        if !s.output && self.direct {
            return (
                Stage::Kernel,
                "nothing appeared on the serial console: QEMU started the kernel, which printed nothing (is the emulator's console= right for this machine?)"
                    .into(),
            );
        }
        if !s.output {
            return if self.has_spl {
                (
                    Stage::NoSpl,
                    "nothing appeared on the serial console: the boot ROM started no SPL; is the bootloader \
                     blob in the image at the offset the profile names (`boardsmith show BOARD`)?"
                        .into(),
                )
            } else {
                (
                    Stage::NoFirmware,
                    "nothing appeared on the serial console: the emulator's firmware printed nothing".into(),
                )
            };
        }
        if s.root_mounted {
            return (
                Stage::Userspace,
                "the root filesystem was mounted; its init did not print the expected pattern"
                    .into(),
            );
        }
        if s.init {
            return (
                Stage::RootNotMounted,
                "init (initramfs) ran but no root filesystem was mounted".into(),
            );
        }
        if s.kernel_started || s.linux {
            return (
                Stage::Kernel,
                if s.linux {
                    "the kernel started but never ran init".into()
                } else {
                    "U-Boot started the kernel but the kernel printed nothing (wrong console= or device tree?)"
                        .into()
                },
            );
        }
        if s.boot_config {
            return (
                Stage::UbootBootFailed,
                s.uboot_error.clone().unwrap_or_else(|| {
                    "U-Boot found the boot configuration but started no kernel".into()
                }),
            );
        }
        if s.uboot {
            return (
                Stage::UbootNoBootConfig,
                "U-Boot is running but found no extlinux/extlinux.conf or boot.scr".into(),
            );
        }
        if s.spl {
            return (
                Stage::SplOnly,
                "the SPL ran but U-Boot proper did not start (is the whole u-boot-sunxi-with-spl.bin written?)"
                    .into(),
            );
        }
        (
            if self.has_spl {
                Stage::NoSpl
            } else {
                Stage::NoFirmware
            },
            "the console printed something, but no bootloader banner".into(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &[u8]) -> Vec<String> {
        let mut s = Sanitizer::default();
        let mut out = Vec::new();
        // Byte at a time: chunk boundaries must not matter.
        for b in text {
            s.feed(std::slice::from_ref(b), &mut out);
        }
        out.extend(s.take_partial());
        out
    }

    #[test]
    fn sanitizer_strips_escapes_and_controls() {
        assert_eq!(
            lines(b"U-Boot\r\n/ # \x1b[6n\x1b[1;32mgreen\x1b[0m\x07\n\x1b]0;title\x07x\x1b7y\n"),
            ["U-Boot", "/ # green", "xy"]
        );
        assert_eq!(
            lines(b"Hit any key to stop autoboot:  2 \x08\x08\x08 1 \x08\x08\x08 0 \n"),
            ["Hit any key to stop autoboot:  0 "]
        );
        assert_eq!(lines(b"tab\there\xff\n"), ["tab\there\u{fffd}"]);
    }

    #[test]
    fn sanitizer_splits_endless_lines() {
        let out = lines(&vec![b'a'; MAX_LINE * 2 + 3]);
        assert_eq!(out.len(), 3);
        assert_eq!(out[2], "aaa");
    }

    fn run(w: &mut Watcher, transcript: &str) -> Verdict {
        for l in lines(transcript.as_bytes()) {
            let v = w.line(&l);
            if v != Verdict::Continue {
                return v;
            }
        }
        Verdict::Continue
    }

    fn watcher(expect: &str) -> Watcher {
        Watcher::new(Regex::new(expect).unwrap(), true, 10)
    }

    // Excerpts of real consoles, recorded from QEMU 10.0 on this project's machines.
    const SPL_UBOOT: &str = "\nU-Boot SPL 2023.01+dfsg-2+deb12u3 (Jun 22 2026 - 08:38:07 +0000)\nDRAM: 1024 MiB\n\
        Trying to boot from MMC1\n\n\nU-Boot 2023.01+dfsg-2+deb12u3 (Jun 22 2026 - 08:38:07 +0000) Allwinner Technology\n\
        MMC:   mmc@1c0f000: 0\nLoading Environment from FAT... OK\nNet:   \nError: ethernet@1c0b000 address not set.\n\
        No ethernet found.\n\nHit any key to stop autoboot:  0 \nswitch to partitions #0, OK\nmmc0 is current device\n\
        Scanning mmc 0:1...\n";
    const FOUND: &str = "Found /extlinux/extlinux.conf\nRetrieving file: /extlinux/extlinux.conf\n\
        1:\tCubieboard (Allwinner A10)\nRetrieving file: /initrd.img\nRetrieving file: /zImage\n\
        append: console=ttyS0,115200 root=PARTUUID=ed857263-02 rootwait\n\nStarting kernel ...\n\n\
        [    0.000000] Booting Linux on physical CPU 0x0\n\
        [    4.313979] Run /init as init process\nboardsmith-initramfs: loading 6 modules\n";
    const ROOT_OK: &str = "boardsmith-initramfs: mounting /dev/mmcblk0p2 (PARTUUID=ed857263-02)\n\
        [    6.647479] EXT4-fs (mmcblk0p2): mounted filesystem with ordered data mode. Quota mode: none.\n\
        BOARDSMITH-ROOT-OK: init running from the root filesystem (/dev/mmcblk0p2), kernel 6.1.0-50-armmp\n";

    #[test]
    fn a_full_boot_matches_the_marker() {
        let mut w = watcher("BOARDSMITH-ROOT-OK");
        let v = run(&mut w, &format!("{SPL_UBOOT}{FOUND}{ROOT_OK}"));
        assert!(matches!(v, Verdict::Matched(l) if l.starts_with("BOARDSMITH-ROOT-OK: init")));
    }

    #[test]
    fn silence_is_no_spl_output() {
        let w = watcher("NEVER");
        assert_eq!(w.stalled().0, Stage::NoSpl);
        assert_eq!(w.stalled().0.to_string(), "no SPL output");
        let w = Watcher::new(Regex::new("NEVER").unwrap(), false, 10);
        assert_eq!(w.stalled().0, Stage::NoFirmware);
    }

    #[test]
    fn uboot_prompt_without_config_fails_at_once() {
        let mut w = watcher("BOARDSMITH-ROOT-OK");
        let tail = "No EFI system partition\nBootOrder not defined\nEFI boot manager: Cannot load any image\n\
            Device 0: unknown device\nstarting USB...\n       scanning usb for storage devices... 0 Storage Device(s) found\n\
            No ethernet found.\nmissing environment variable: pxeuuid\nRetrieving file: pxelinux.cfg/default\n\
            No ethernet found.\nConfig file not found\nmdio_register: non unique device name 'emac'\nNo ethernet found.\n";
        assert_eq!(
            run(&mut w, &format!("{SPL_UBOOT}{tail}")),
            Verdict::Continue
        );
        assert_eq!(w.stalled().0, Stage::UbootNoBootConfig);
        match w.partial("=> ") {
            Verdict::Failed(Stage::UbootNoBootConfig, why) => assert!(why.contains("extlinux")),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn uboot_prompt_after_config_names_the_error() {
        let mut w = watcher("BOARDSMITH-ROOT-OK");
        let tail = "Found /extlinux/extlinux.conf\nRetrieving file: /extlinux/extlinux.conf\n\
            1:\tCubieboard (Allwinner A10)\nRetrieving file: /initrd.img\nRetrieving file: /zImage\n\
            ** Unable to read file /zImage **\nSkipping boardsmith for failure retrieving kernel\n\
            EXTLINUX FAILED: continuing...\nFound U-Boot script /boot.scr\n## Executing script at 43100000\n\
            Failed to load '/zImage'\nzimage: Bad magic!\nSCRIPT FAILED: continuing...\nConfig file not found\n";
        assert_eq!(
            run(&mut w, &format!("{SPL_UBOOT}{tail}")),
            Verdict::Continue
        );
        match w.partial("=> ") {
            Verdict::Failed(Stage::UbootBootFailed, why) => {
                assert!(why.contains("Unable to read file /zImage"), "{why}")
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn a_prompt_after_the_kernel_started_is_not_uboot() {
        let mut w = watcher("login:");
        run(&mut w, &format!("{SPL_UBOOT}{FOUND}"));
        assert_eq!(w.partial("=> "), Verdict::Continue);
    }

    #[test]
    fn initramfs_without_root_is_root_not_mounted() {
        let mut w = watcher("BOARDSMITH-ROOT-OK");
        let tail = "boardsmith-initramfs: root PARTUUID=deadbeef-02 not found; block devices: mmcblk0 mmcblk0p1 mmcblk0p2\n\
            boardsmith-initramfs: root not mounted\n";
        match run(&mut w, &format!("{SPL_UBOOT}{FOUND}{tail}")) {
            Verdict::Failed(Stage::RootNotMounted, why) => {
                assert!(why.contains("root not mounted"))
            }
            v => panic!("{v:?}"),
        }
        // Debian's initramfs-tools and a kernel without initramfs say it differently.
        let mut w = watcher("NEVER");
        assert!(matches!(
            run(
                &mut w,
                "Gave up waiting for root file system device.  Common problems:\n"
            ),
            Verdict::Failed(Stage::RootNotMounted, _)
        ));
        let mut w = watcher("NEVER");
        assert!(matches!(
            run(
                &mut w,
                "[    2.1] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\n"
            ),
            Verdict::Failed(Stage::RootNotMounted, _)
        ));
    }

    #[test]
    fn other_panics_are_kernel_panics() {
        let mut w = watcher("NEVER");
        match run(
            &mut w,
            "[    1.0] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100\n",
        ) {
            Verdict::Failed(Stage::KernelPanic, why) => {
                assert!(why.contains("Attempted to kill init"))
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn stalls_are_named_by_the_furthest_stage() {
        let mut w = watcher("never");
        run(&mut w, "\nU-Boot SPL 2023.01\nTrying to boot from MMC1\n");
        assert_eq!(w.stalled().0, Stage::SplOnly);
        run(&mut w, SPL_UBOOT);
        assert_eq!(w.stalled().0, Stage::UbootNoBootConfig);
        run(&mut w, FOUND);
        assert_eq!(w.stalled().0, Stage::RootNotMounted);
        run(&mut w, ROOT_OK);
        assert_eq!(w.stalled().0, Stage::Userspace);
        let mut w = watcher("never");
        run(
            &mut w,
            &format!("{SPL_UBOOT}Found /extlinux/extlinux.conf\nStarting kernel ...\n"),
        );
        assert_eq!(w.stalled().0, Stage::Kernel);
    }

    #[test]
    fn expect_matches_a_prompt_without_newline() {
        let mut w = watcher(r"\S+ login:\s*$");
        assert!(matches!(w.partial("debian login: "), Verdict::Matched(_)));
    }

    #[test]
    fn keeps_the_last_lines() {
        let mut w = Watcher::new(Regex::new("never").unwrap(), true, 3);
        run(&mut w, "a\nb\nc\nd\n");
        assert_eq!(w.last_lines(), ["b", "c", "d"]);
        run(&mut w, "d\nd\ne\n");
        assert_eq!(w.last_lines(), ["c", "d  [3 times]", "e"]);
    }
}
