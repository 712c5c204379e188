//! ChromeOS kernel partitions: a FIT image (kernel, device tree, optional initramfs) made by `mkimage -f`,
//! packed and signed as a vboot kernel blob by `vbutil_kernel --pack` (Debian's vboot-kernel-utils), then
//! verified with the kernel subkey before it goes into the image. The firmware's own tools are the judge.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::profile::Vboot;
use crate::rootfs::tree::FileData;

#[derive(Debug, thiserror::Error)]
pub enum VbootError {
    #[error(
        "{what} {path} cannot be read: {source}; install vboot-kernel-utils (Debian ships the developer keys in /usr/share/vboot/devkeys) or pass your own with --vboot-keyblock/--vboot-signprivate"
    )]
    Key {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{program}` was not found; install {package}")]
    ToolMissing {
        program: &'static str,
        package: &'static str,
    },
    #[error("{program} failed ({status}):\n{output}")]
    ToolFailed {
        program: &'static str,
        status: String,
        output: String,
    },
    #[error("the signed kernel blob does not verify with {subkey}:\n{output}")]
    Verify { subkey: PathBuf, output: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// Inputs of one kernel blob.
pub struct KernelBlob<'a> {
    pub kernel: &'a FileData,
    pub dtb: Option<(&'a str, &'a FileData)>,
    pub initrd: Option<&'a FileData>,
    pub cmdline: &'a str,
    pub description: &'a str,
    pub arch: &'a str,
    pub epoch: u64,
}

/// Keys after command-line overrides.
#[derive(Debug, Clone)]
pub struct Keys {
    pub keyblock: PathBuf,
    pub signprivate: PathBuf,
    pub subkey: Option<PathBuf>,
    pub version: u32,
    pub load_address: u32,
}

impl Keys {
    pub fn from_profile(v: &Vboot, keyblock: Option<&Path>, signprivate: Option<&Path>) -> Keys {
        let overridden = keyblock.is_some() || signprivate.is_some();
        Keys {
            keyblock: keyblock.map_or_else(|| v.keyblock.clone(), Path::to_path_buf),
            signprivate: signprivate.map_or_else(|| v.signprivate.clone(), Path::to_path_buf),
            // The profile's subkey only matches the profile's keys.
            subkey: if overridden { None } else { v.subkey.clone() },
            version: v.version,
            load_address: v.load_address,
        }
    }

    /// Fails early, before any image work, when a key cannot be read.
    pub fn check(&self) -> Result<(), VbootError> {
        let read = |what, p: &Path| {
            std::fs::File::open(p)
                .map(drop)
                .map_err(|source| VbootError::Key {
                    what,
                    path: p.to_path_buf(),
                    source,
                })
        };
        read("keyblock", &self.keyblock)?;
        read("signing key", &self.signprivate)?;
        if let Some(s) = &self.subkey {
            read("kernel subkey", s)?;
        }
        Ok(())
    }
}

fn materialize(data: &FileData, dest: &Path) -> Result<PathBuf, VbootError> {
    match data {
        FileData::Path(p, _) => Ok(p.clone()),
        FileData::Bytes(b) => {
            std::fs::write(dest, b).map_err(|source| VbootError::Io {
                context: format!("writing {}", dest.display()),
                source,
            })?;
            Ok(dest.to_path_buf())
        }
    }
}

fn run(
    program: &'static str,
    package: &'static str,
    cmd: &mut Command,
) -> Result<String, VbootError> {
    let out = cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            VbootError::ToolMissing { program, package }
        } else {
            VbootError::Io {
                context: format!("running {program}"),
                source: e,
            }
        }
    })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        return Err(VbootError::ToolFailed {
            program,
            status: out.status.to_string(),
            output: text.trim().to_string(),
        });
    }
    Ok(text)
}

fn its_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The FIT source: one configuration with kernel, device tree and (optionally) ramdisk, SHA-1 hashed.
pub fn fit_source(
    b: &KernelBlob<'_>,
    kernel: &Path,
    dtb: Option<(&str, &Path)>,
    initrd: Option<&Path>,
    load: u32,
) -> String {
    let mut s = String::new();
    s.push_str("/dts-v1/;\n\n/ {\n");
    s.push_str(&format!(
        "\tdescription = \"{}\";\n\t#address-cells = <1>;\n\n\timages {{\n",
        its_escape(b.description)
    ));
    s.push_str(&format!(
        "\t\tkernel-1 {{\n\t\t\tdescription = \"Linux kernel\";\n\t\t\tdata = /incbin/(\"{}\");\n\t\t\ttype = \"kernel\";\n\t\t\tarch = \"{}\";\n\t\t\tos = \"linux\";\n\t\t\tcompression = \"none\";\n\t\t\tload = <0x{load:08x}>;\n\t\t\tentry = <0x{load:08x}>;\n\t\t\thash-1 {{ algo = \"sha1\"; }};\n\t\t}};\n",
        its_escape(&kernel.display().to_string()),
        b.arch
    ));
    if let Some((name, path)) = dtb {
        s.push_str(&format!(
            "\t\tfdt-1 {{\n\t\t\tdescription = \"{}\";\n\t\t\tdata = /incbin/(\"{}\");\n\t\t\ttype = \"flat_dt\";\n\t\t\tarch = \"{}\";\n\t\t\tcompression = \"none\";\n\t\t\thash-1 {{ algo = \"sha1\"; }};\n\t\t}};\n",
            its_escape(name),
            its_escape(&path.display().to_string()),
            b.arch
        ));
    }
    if let Some(path) = initrd {
        s.push_str(&format!(
            "\t\tramdisk-1 {{\n\t\t\tdescription = \"initramfs\";\n\t\t\tdata = /incbin/(\"{}\");\n\t\t\ttype = \"ramdisk\";\n\t\t\tarch = \"{}\";\n\t\t\tos = \"linux\";\n\t\t\tcompression = \"none\";\n\t\t\thash-1 {{ algo = \"sha1\"; }};\n\t\t}};\n",
            its_escape(&path.display().to_string()),
            b.arch
        ));
    }
    s.push_str("\t};\n\n\tconfigurations {\n\t\tdefault = \"conf-1\";\n\t\tconf-1 {\n\t\t\tkernel = \"kernel-1\";\n");
    if dtb.is_some() {
        s.push_str("\t\t\tfdt = \"fdt-1\";\n");
    }
    if initrd.is_some() {
        s.push_str("\t\t\tramdisk = \"ramdisk-1\";\n");
    }
    s.push_str("\t\t};\n\t};\n};\n");
    s
}

/// Builds, signs and verifies the kernel blob in `work`; returns its bytes.
pub fn build_blob(b: &KernelBlob<'_>, keys: &Keys, work: &Path) -> Result<Vec<u8>, VbootError> {
    keys.check()?;
    let dir = work.join("vboot");
    std::fs::create_dir_all(&dir).map_err(|source| VbootError::Io {
        context: format!("creating {}", dir.display()),
        source,
    })?;
    let kernel = materialize(b.kernel, &dir.join("kernel"))?;
    let dtb = match b.dtb {
        Some((name, data)) => Some((name, materialize(data, &dir.join("fdt.dtb"))?)),
        None => None,
    };
    let initrd = b
        .initrd
        .map(|d| materialize(d, &dir.join("initrd")))
        .transpose()?;
    let its = dir.join("kernel.its");
    let source = fit_source(
        b,
        &kernel,
        dtb.as_ref().map(|(n, p)| (*n, p.as_path())),
        initrd.as_deref(),
        keys.load_address,
    );
    let w = |p: &Path, data: &[u8]| {
        std::fs::write(p, data).map_err(|source| VbootError::Io {
            context: format!("writing {}", p.display()),
            source,
        })
    };
    w(&its, source.as_bytes())?;
    let fit = dir.join("kernel.fit");
    run(
        "mkimage",
        "u-boot-tools and device-tree-compiler",
        Command::new("mkimage")
            .env("SOURCE_DATE_EPOCH", b.epoch.to_string())
            .arg("-f")
            .arg(&its)
            .arg(&fit),
    )?;

    let cmdline = dir.join("cmdline");
    w(&cmdline, b.cmdline.as_bytes())?;
    // The ARM firmware ignores the bootloader stub, but vbutil_kernel requires one.
    let stub = dir.join("bootloader.bin");
    w(&stub, &[0u8; 512])?;
    let blob = dir.join("kernel.kpart");
    run(
        "vbutil_kernel",
        "vboot-kernel-utils",
        Command::new("vbutil_kernel")
            .arg("--pack")
            .arg(&blob)
            .arg("--keyblock")
            .arg(&keys.keyblock)
            .arg("--signprivate")
            .arg(&keys.signprivate)
            .arg("--version")
            .arg(keys.version.to_string())
            .arg("--vmlinuz")
            .arg(&fit)
            .arg("--bootloader")
            .arg(&stub)
            .arg("--config")
            .arg(&cmdline)
            .arg("--arch")
            .arg("arm"),
    )?;
    if let Some(subkey) = &keys.subkey {
        let out = Command::new("vbutil_kernel")
            .arg("--verify")
            .arg(&blob)
            .arg("--signpubkey")
            .arg(subkey)
            .output()
            .map_err(|source| VbootError::Io {
                context: "running vbutil_kernel --verify".into(),
                source,
            })?;
        if !out.status.success() {
            let output = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return Err(VbootError::Verify {
                subkey: subkey.clone(),
                output,
            });
        }
    }
    std::fs::read(&blob).map_err(|source| VbootError::Io {
        context: format!("reading {}", blob.display()),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_source_lists_every_part() {
        let data = FileData::Bytes(vec![1]);
        let b = KernelBlob {
            kernel: &data,
            dtb: Some(("exynos5250-snow.dtb", &data)),
            initrd: Some(&data),
            cmdline: "console=tty1",
            description: "test \"board\"",
            arch: "arm",
            epoch: 0,
        };
        let s = fit_source(
            &b,
            Path::new("/k"),
            Some(("exynos5250-snow.dtb", Path::new("/d"))),
            Some(Path::new("/i")),
            0x4000_8000,
        );
        assert!(s.contains("load = <0x40008000>;"));
        assert!(s.contains("fdt = \"fdt-1\";") && s.contains("ramdisk = \"ramdisk-1\";"));
        assert!(s.contains("description = \"test \\\"board\\\"\";"));
    }
}
