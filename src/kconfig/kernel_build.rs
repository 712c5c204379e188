//! Cross-building a checked configuration and installing the result into a staging tree laid out like
//! a Debian root filesystem, so that `boardsmith build --rootfs` (or a rootfs it is copied into) finds
//! it where the profile looks for Debian's kernel package:
//! `boot/vmlinuz-REL` (zImage or Image; the profile's `kernel.path` with `*` = REL), `boot/config-REL`,
//! `boot/System.map-REL`, the device trees under the profile's `kernel.dtb_dir` (Debian's
//! `usr/lib/linux-image-REL/`), and modules under `lib/modules/REL/` (depmod run, debug info stripped).
//! The tree appears under its final name only when complete.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use super::KconfigError;
use super::configure::{Configured, Event};
use super::dotconfig::DotConfig;
use super::kbuild::{self, Kbuild};
use super::value::{Tri, Value};
use crate::profile::Profile;

/// Marker file written at the top of every staging tree boardsmith makes; a directory carrying it may be
/// replaced by the next build.
pub const STAGING_MARKER: &str = ".boardsmith-kernel.json";

pub struct BuildRequest<'a> {
    pub staging: &'a Path,
    pub jobs: usize,
}

#[derive(Debug, Serialize)]
pub struct KernelBuild {
    pub board: String,
    pub release: String,
    pub staging: PathBuf,
    /// Paths inside the staging tree.
    pub kernel: String,
    pub dtb_dir: Option<String>,
    pub dtbs: usize,
    pub modules_dir: Option<String>,
    pub modules: usize,
    pub config: PathBuf,
    pub log: PathBuf,
    pub seconds: f64,
}

fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> KconfigError + '_ {
    move |source| KconfigError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// Fails early (before a long compile) when `dest` exists and is neither empty nor a staging tree.
pub fn check_destination(dest: &Path) -> Result<(), KconfigError> {
    if !dest.exists() {
        return Ok(());
    }
    let ours = dest.join(STAGING_MARKER).is_file();
    let empty = dest.is_dir()
        && std::fs::read_dir(dest)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
    if ours || empty {
        Ok(())
    } else {
        Err(KconfigError::StagingNotOurs {
            path: dest.to_path_buf(),
        })
    }
}

fn count_files(dir: &Path, suffix: &str) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                count_files(&p, suffix)
            } else {
                usize::from(p.to_string_lossy().ends_with(suffix))
            }
        })
        .sum()
}

/// A profile path pattern with `*` replaced by the release (`boot/vmlinuz-*` → `boot/vmlinuz-6.1.0`).
fn instantiate(pattern: &str, release: &str) -> String {
    pattern.replace('*', release)
}

/// Whether a kbuild output line is a build step (`  CC      drivers/x.o`).
fn is_step(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("  ") else {
        return false;
    };
    let word: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
    !word.is_empty()
        && word.chars().all(|c| {
            c.is_ascii_uppercase()
                || c.is_ascii_digit()
                || c == '_'
                || c == '-'
                || c == '['
                || c == ']'
        })
        && rest.len() > word.len()
}

fn depmod() -> Option<PathBuf> {
    crate::tools::system_tool("depmod")
}

/// Builds the configured kernel and installs it into `req.staging`.
pub fn build(
    profile: &Profile,
    kb: &Kbuild,
    configured: &Configured,
    req: &BuildRequest<'_>,
    events: &dyn Fn(Event<'_>),
) -> Result<KernelBuild, KconfigError> {
    let failed = configured.report.count(super::check::Status::Failed);
    if failed > 0 {
        return Err(KconfigError::CheckFailed { failed });
    }
    check_destination(req.staging)?;
    kbuild::require_tools(&["bc", "perl"])?;
    let depmod = depmod().ok_or_else(|| kbuild::KbuildError::ToolMissing {
        tool: "depmod".into(),
        package: "kmod".into(),
    })?;
    let start = Instant::now();
    let config = DotConfig::read(&configured.config)?;
    let on = |s: &str| matches!(config.get(s), Value::Tri(Tri::Y));
    let modules = on("MODULES");
    let dtbs = on("OF");
    let image = profile.kernel.image.file_name();

    let mut targets = vec![format!("-j{}", req.jobs.max(1)), image.to_string()];
    if modules {
        targets.push("modules".into());
    }
    if dtbs {
        targets.push("dtbs".into());
    }
    events(Event::Phase(&format!(
        "make {} (-j{}; log {})",
        targets[1..].join(" "),
        req.jobs.max(1),
        kb.log_path.display()
    )));
    let mut count = 0usize;
    kb.make(&targets, &mut |line| {
        if is_step(line) {
            count += 1;
            events(Event::Step {
                count,
                line: line.trim(),
            });
        }
    })?;
    let release = kb.make_query("kernelrelease")?;

    let dest = req.staging;
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(write_err(parent))?;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "staging".into());
    let temp = parent.join(format!(".{name}.partial-{}", std::process::id()));
    if temp.exists() {
        std::fs::remove_dir_all(&temp).map_err(write_err(&temp))?;
    }
    std::fs::create_dir_all(&temp).map_err(write_err(&temp))?;
    let result = install(
        profile, kb, configured, &release, &temp, modules, dtbs, &depmod, events,
    );
    let mut report = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&temp);
            return Err(e);
        }
    };
    // Replace an earlier staging tree only now that the new one is complete.
    if dest.exists() {
        let old = parent.join(format!(".{name}.old-{}", std::process::id()));
        std::fs::rename(dest, &old).map_err(write_err(dest))?;
        std::fs::rename(&temp, dest).map_err(write_err(dest))?;
        let _ = std::fs::remove_dir_all(&old);
    } else {
        std::fs::rename(&temp, dest).map_err(write_err(dest))?;
    }
    report.staging = dest.to_path_buf();
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
fn install(
    profile: &Profile,
    kb: &Kbuild,
    configured: &Configured,
    release: &str,
    root: &Path,
    modules: bool,
    dtbs: bool,
    depmod: &Path,
    events: &dyn Fn(Event<'_>),
) -> Result<KernelBuild, KconfigError> {
    events(Event::Phase(&format!(
        "installing {release} into the staging tree"
    )));
    let k = &profile.kernel;
    let kernel_rel = instantiate(&k.path, release);
    let kernel_dst = root.join(&kernel_rel);
    let boot = kernel_dst.parent().unwrap_or(root).to_path_buf();
    std::fs::create_dir_all(&boot).map_err(write_err(&boot))?;
    let built = kb
        .objtree
        .join("arch")
        .join(profile.arch.kernel_arch())
        .join("boot")
        .join(k.image.file_name());
    if !built.is_file() {
        return Err(KconfigError::Missing {
            what: "kernel image".into(),
            path: built,
            hint: "see the build log".into(),
        });
    }
    std::fs::copy(&built, &kernel_dst).map_err(write_err(&kernel_dst))?;
    let config_dst = boot.join(format!("config-{release}"));
    std::fs::copy(&configured.config, &config_dst).map_err(write_err(&config_dst))?;
    let map_src = kb.objtree.join("System.map");
    if map_src.is_file() {
        let map_dst = boot.join(format!("System.map-{release}"));
        std::fs::copy(&map_src, &map_dst).map_err(write_err(&map_dst))?;
    }

    let mut dtb_dir = None;
    let mut dtb_count = 0;
    if dtbs && !k.dtb_dir.is_empty() {
        let rel = instantiate(&k.dtb_dir, release);
        let dir = root.join(&rel);
        kb.make(
            &[
                "dtbs_install".into(),
                format!("INSTALL_DTBS_PATH={}", dir.display()),
            ],
            &mut |_| {},
        )?;
        dtb_count = count_files(&dir, ".dtb");
        if let Some(dtb) = &k.dtb
            && !dir.join(dtb).is_file()
        {
            return Err(KconfigError::Missing {
                what: format!("device tree {dtb} (named by the profile's kernel.dtb)"),
                path: dir.join(dtb),
                hint:
                    "the configuration does not enable the board's SoC family; check the defconfig"
                        .into(),
            });
        }
        dtb_dir = Some(rel);
    }

    let mut modules_dir = None;
    let mut module_count = 0;
    if modules {
        kb.make(
            &[
                "modules_install".into(),
                format!("INSTALL_MOD_PATH={}", root.display()),
                "INSTALL_MOD_STRIP=1".into(),
                format!("DEPMOD={}", depmod.display()),
            ],
            &mut |_| {},
        )?;
        let rel = format!("lib/modules/{release}");
        let dir = root.join(&rel);
        // These point back into the build machine's directories.
        for link in ["build", "source"] {
            let p = dir.join(link);
            if p.is_symlink() {
                std::fs::remove_file(&p).map_err(write_err(&p))?;
            }
        }
        if !dir.join("modules.dep").is_file() {
            return Err(KconfigError::Missing {
                what: "modules.dep".into(),
                path: dir.join("modules.dep"),
                hint: "depmod did not run; see the build log".into(),
            });
        }
        module_count = count_files(&dir, ".ko");
        modules_dir = Some(rel);
    }

    let report = KernelBuild {
        board: profile.name.clone(),
        release: release.to_string(),
        staging: root.to_path_buf(),
        kernel: kernel_rel,
        dtb_dir,
        dtbs: dtb_count,
        modules_dir,
        modules: module_count,
        config: configured.config.clone(),
        log: kb.log_path.clone(),
        seconds: 0.0,
    };
    let marker = serde_json::json!({
        "board": profile.name,
        "release": release,
        "kernel_version": configured.kernel_version,
        "defconfig": configured.defconfig,
        "fragments": profile.kernel.fragments,
        "kernel_src": kb.srctree,
    });
    let marker_path = root.join(STAGING_MARKER);
    // A JSON value always serialises; `{:#}` is serde_json's pretty form.
    std::fs::write(&marker_path, format!("{marker:#}")).map_err(write_err(&marker_path))?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kbuild_steps_are_recognised() {
        assert!(is_step("  CC      drivers/net/usb/asix_devices.o"));
        assert!(is_step("  CC [M]  drivers/net/usb/asix_devices.o"));
        assert!(is_step("  LD      vmlinux"));
        assert!(!is_step("make[1]: Entering directory '/x'"));
        assert!(!is_step("  "));
        assert!(!is_step("warning: something"));
    }

    #[test]
    fn patterns_take_the_release() {
        assert_eq!(
            instantiate("boot/vmlinuz-*", "6.1.176"),
            "boot/vmlinuz-6.1.176"
        );
        assert_eq!(
            instantiate("usr/lib/linux-image-*", "6.1.176"),
            "usr/lib/linux-image-6.1.176"
        );
    }

    #[test]
    fn destination_rules() {
        let t = tempfile::tempdir().expect("tempdir");
        assert!(check_destination(&t.path().join("new")).is_ok());
        assert!(check_destination(t.path()).is_ok(), "empty directory");
        std::fs::write(t.path().join("precious"), "x").expect("write");
        let e = check_destination(t.path()).expect_err("not ours");
        assert!(e.is_input_error());
        std::fs::write(t.path().join(STAGING_MARKER), "{}").expect("write");
        assert!(
            check_destination(t.path()).is_ok(),
            "an earlier staging tree"
        );
    }
}
