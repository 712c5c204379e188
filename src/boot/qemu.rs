//! The QEMU command line for a profile's `[emulator]` section, and the QEMU process: started in its own
//! process group with a parent-death signal, and ended (SIGTERM, then SIGKILL) whenever its guard drops —
//! on success, failure, timeout, error or signal alike.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::profile::Emulator;

use super::direct::Kernel;
use super::disk::Disk;
use super::qmp::QemuEnd;
use super::screen::{Forward, Screen};

/// How the console is connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleMode {
    /// The serial port on QEMU's stdout, read by boardsmith; no monitor.
    Watched,
    /// The terminal handed to QEMU: serial and monitor multiplexed on stdio (Ctrl-A c switches, Ctrl-A x
    /// quits), Ctrl-C goes to the guest; `log` receives a copy of the console.
    Interactive { log: Option<String> },
}

/// What is attached to the machine besides its disk and console.
#[derive(Default)]
pub struct Attachments<'a> {
    /// QEMU's end of the QMP socket pair (screenshots).
    pub qmp: Option<&'a QemuEnd>,
    /// A kernel boardsmith starts itself (`direct_boot`).
    pub kernel: Option<&'a Kernel>,
    /// Host ports forwarded to the guest (needs `network`).
    pub forwards: &'a [Forward],
    /// How the screen is shown (needs `display` unless hidden).
    pub screen: Option<&'a Screen>,
}

/// QEMU's argument vector (program first).
pub fn command_line(
    emu: &Emulator,
    disk: &Disk,
    console: &ConsoleMode,
    att: &Attachments<'_>,
) -> Vec<String> {
    let mut a: Vec<String> = vec![emu.system.clone(), "-M".into(), emu.machine.clone()];
    if let Some(cpu) = &emu.cpu {
        a.extend(["-cpu".into(), cpu.clone()]);
    }
    a.extend(["-m".into(), emu.memory.clone()]);
    match att.screen {
        Some(Screen::Window(ui)) => a.extend(["-display".into(), ui.clone()]),
        Some(Screen::Vnc(v)) => a.extend([
            "-display".into(),
            "none".into(),
            "-vnc".into(),
            v.to_string(),
        ]),
        Some(Screen::Hidden) | None => a.extend(["-display".into(), "none".into()]),
    }
    match console {
        ConsoleMode::Watched => {
            a.extend([
                "-monitor".into(),
                "none".into(),
                "-serial".into(),
                "stdio".into(),
            ]);
        }
        ConsoleMode::Interactive { log } => {
            let mut chardev = "stdio,id=console,mux=on,signal=off".to_string();
            if let Some(l) = log {
                chardev.push_str(&format!(",logfile={},logappend=off", l.replace(',', ",,")));
            }
            a.extend([
                "-chardev".into(),
                chardev,
                "-serial".into(),
                "chardev:console".into(),
                "-mon".into(),
                "chardev=console,mode=readline".into(),
            ]);
        }
    }
    // A guest reset ends the run instead of starting over: a watchdog or panic reboot is a result.
    a.push("-no-reboot".into());
    if let Some(fw) = &emu.firmware {
        a.extend(["-bios".into(), fw.clone()]);
    }
    if let Some(k) = att.kernel {
        a.extend(k.args());
    }
    a.extend([
        "-drive".into(),
        format!("if={},format=raw,{}", emu.drive, disk.drive_file()),
    ]);
    if let Some(d) = &emu.display {
        a.extend(["-device".into(), d.clone()]);
    }
    for i in &emu.input {
        a.extend(["-device".into(), i.clone()]);
    }
    match &emu.network {
        // What the profile says is what the guest gets: no network device unless it names one.
        None => a.extend(["-nic".into(), "none".into()]),
        Some(model) => {
            let mut nic = format!("user,model={model}");
            for f in att.forwards {
                nic.push_str(&format!(
                    ",hostfwd=tcp:{}:{}-:{}",
                    f.addr, f.host_port, f.guest_port
                ));
            }
            a.extend(["-nic".into(), nic]);
        }
    }
    if let Some(q) = att.qmp {
        a.extend(q.args());
    }
    a.extend(emu.extra_args.iter().cloned());
    a
}

/// A running QEMU, ended when dropped.
pub struct Qemu {
    child: Child,
    /// Its own process group (watched mode), so the whole group is signalled.
    group: bool,
}

impl Qemu {
    /// Starts QEMU. Watched: stdin/stdout/stderr piped, own process group (the terminal's Ctrl-C reaches
    /// only boardsmith, which then ends QEMU). Interactive: stdio inherited, same process group (QEMU
    /// needs the terminal). Either way QEMU gets a parent-death signal, so it cannot outlive boardsmith
    /// even if boardsmith is killed with SIGKILL.
    /// `keep_fds` are inherited by QEMU (the padded disk, the kernel files, its QMP end).
    pub fn spawn(argv: &[String], keep_fds: &[i32], interactive: bool) -> io::Result<Qemu> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| io::Error::other("empty QEMU command"))?;
        let mut cmd = Command::new(program);
        cmd.args(args);
        if !interactive {
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0);
        }
        // SIGKILL when watched; SIGTERM when interactive so QEMU restores the terminal on the way out.
        let death_signal = if interactive {
            libc::SIGTERM
        } else {
            libc::SIGKILL
        };
        // SAFETY: getpid is async-signal-safe and called before fork.
        let parent = unsafe { libc::getpid() };
        let keep_fds = keep_fds.to_vec();
        // SAFETY: the closure runs between fork and exec and calls only async-signal-safe functions
        // (prctl, getppid, fcntl) and does not allocate.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    death_signal as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                // boardsmith may have died between fork and prctl.
                if libc::getppid() != parent {
                    // No allocation between fork and exec: a plain errno.
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                for &fd in &keep_fds {
                    if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        Ok(Qemu {
            child,
            group: !interactive,
        })
    }

    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `limit` for QEMU to exit by itself.
    pub fn wait_for(&mut self, limit: Duration) -> io::Result<Option<ExitStatus>> {
        let until = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(Some(s));
            }
            if Instant::now() >= until {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: plain kill(2); the pid (or group, which QEMU leads) is our unreaped child, so it cannot
        // have been reused.
        unsafe {
            libc::kill(if self.group { -pid } else { pid }, sig);
        }
    }

    /// Ends QEMU: SIGTERM (QEMU exits cleanly and restores the terminal), SIGKILL after two seconds.
    pub fn end(&mut self) -> Option<ExitStatus> {
        if let Ok(Some(s)) = self.child.try_wait() {
            return Some(s);
        }
        self.signal(libc::SIGTERM);
        if let Ok(Some(s)) = self.wait_for(Duration::from_secs(2)) {
            return Some(s);
        }
        self.signal(libc::SIGKILL);
        self.child.wait().ok()
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        self.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn emu(drive: &str, firmware: Option<&str>) -> Emulator {
        Emulator {
            name: None,
            description: None,
            display: None,
            input: Vec::new(),
            network: None,
            direct_boot: None,
            initramfs_modules: Vec::new(),
            system: "qemu-system-aarch64".into(),
            machine: "virt".into(),
            cpu: Some("cortex-a57".into()),
            memory: "1G".into(),
            drive: drive.into(),
            firmware: firmware.map(String::from),
            size_power_of_two: false,
            extra_args: vec!["-smp".into(), "2".into()],
        }
    }

    #[test]
    fn watched_command_line() {
        let disk = Disk::Snapshot(PathBuf::from("out/a.img"));
        let a = command_line(
            &emu("virtio", Some("/usr/lib/u-boot/qemu_arm64/u-boot.bin")),
            &disk,
            &ConsoleMode::Watched,
            &Attachments::default(),
        );
        assert_eq!(
            a.join(" "),
            "qemu-system-aarch64 -M virt -cpu cortex-a57 -m 1G -display none -monitor none -serial stdio \
             -no-reboot -bios /usr/lib/u-boot/qemu_arm64/u-boot.bin \
             -drive if=virtio,format=raw,file=out/a.img,snapshot=on -nic none -smp 2"
        );
    }

    #[test]
    fn interactive_command_line_muxes_the_terminal_and_logs() {
        let disk = Disk::Snapshot(PathBuf::from("a.img"));
        let a = command_line(
            &emu("sd", None),
            &disk,
            &ConsoleMode::Interactive {
                log: Some("boot,1.log".into()),
            },
            &Attachments::default(),
        );
        let s = a.join(" ");
        assert!(s.contains(
            "-chardev stdio,id=console,mux=on,signal=off,logfile=boot,,1.log,logappend=off -serial chardev:console -mon chardev=console"
        ));
        assert!(s.contains("-drive if=sd,format=raw,file=a.img,snapshot=on"));
        assert!(!s.contains("-bios"));
    }

    #[test]
    fn screen_network_and_monitor_are_attached() {
        let disk = Disk::Snapshot(PathBuf::from("a.img"));
        let mut e = emu("virtio", None);
        e.display = Some("virtio-gpu-pci,xres=1280,yres=720".into());
        e.input = vec!["virtio-keyboard-pci".into(), "virtio-tablet-pci".into()];
        e.network = Some("virtio-net-pci".into());
        let (_qmp, end) = super::super::qmp::Qmp::pair().unwrap();
        let forwards = [
            "2222:22".parse().unwrap(),
            "0.0.0.0:2303:2303".parse().unwrap(),
        ];
        let vnc = Screen::Vnc(":3".parse().unwrap());
        let line = |at: &Attachments| command_line(&e, &disk, &ConsoleMode::Watched, at).join(" ");
        let a = line(&Attachments {
            qmp: Some(&end),
            forwards: &forwards,
            screen: Some(&vnc),
            ..Default::default()
        });
        assert!(a.contains("-display none -vnc 127.0.0.1:3 "), "{a}");
        assert!(
            a.contains(
                "-device virtio-gpu-pci,xres=1280,yres=720 -device virtio-keyboard-pci -device virtio-tablet-pci"
            ),
            "{a}"
        );
        assert!(
            a.contains(
                "-nic user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=tcp:0.0.0.0:2303-:2303"
            ),
            "{a}"
        );
        assert!(
            a.contains(&format!(
                "-chardev socket,id=boardsmith-qmp,fd={} -mon chardev=boardsmith-qmp,mode=control",
                end.fd()
            )),
            "{a}"
        );
        let window = Screen::Window("gtk".into());
        let a = line(&Attachments {
            screen: Some(&window),
            ..Default::default()
        });
        assert!(a.contains("-display gtk ") && !a.contains("-vnc"), "{a}");
        assert!(a.contains("-nic user,model=virtio-net-pci -smp"), "{a}");
    }
}
