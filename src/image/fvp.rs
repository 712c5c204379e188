//! The launch script for Arm's Fixed Virtual Platforms (the ARMv8 Foundation model), written next to the
//! image when the profile has an `[fvp]` section. The model loads a boot-wrapper `.axf` (kernel, initrd,
//! device tree and command line linked into one ELF) and sees the image as its virtio block device; the
//! script passes the image with `--block-device` and says how to make the `.axf` from the image's own
//! boot files. QEMU's `virt` machine (`boardsmith boot`) is the automated stand-in.

use crate::profile::Fvp;

/// What the script needs to know about the built image.
pub struct FvpImage<'a> {
    /// File name of the image, in the same directory as the script.
    pub image: &'a str,
    /// Byte offset of the FAT boot partition.
    pub boot_offset: Option<u64>,
    /// Files on the boot partition.
    pub kernel: &'a str,
    pub initrd: Option<&'a str>,
    pub dtb: Option<&'a str>,
    pub cmdline: &'a str,
}

/// Single-quotes a string for sh.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The launch script. Every value from the profile or the build is single-quoted ([`sh_quote`]),
/// in the comments too (they are commands to copy), and none holds a line break (profile strings and
/// the command line are one line, checked where they are read), so no value can end a comment or a
/// quoted word.
pub fn launch_script(fvp: &Fvp, img: &FvpImage<'_>) -> String {
    let mut s = String::new();
    s.push_str("#!/bin/sh\n");
    s.push_str(&format!(
        "# Starts {} on Arm's Fixed Virtual Platform {}. Written by `boardsmith build`.\n",
        sh_quote(img.image),
        sh_quote(&fvp.model)
    ));
    s.push_str("#\n#   ./THIS-SCRIPT LINUX-SYSTEM.AXF [MORE MODEL OPTIONS...]\n#\n");
    s.push_str(
        "# The model boots a boot-wrapper image (.axf, from Arm's boot-wrapper-aarch64) that links the kernel,\n\
         # initrd, device tree and command line together, and sees the disk image as its virtio block device.\n\
         # Make the .axf from the files on the image's boot partition:\n",
    );
    let mut files = vec![sh_quote(&format!("::/{}", img.kernel))];
    files.extend(img.initrd.map(|i| sh_quote(&format!("::/{i}"))));
    files.extend(img.dtb.map(|d| sh_quote(&format!("::/{d}"))));
    if let Some(off) = img.boot_offset {
        s.push_str(&format!(
            "#   mcopy -i {} {} .\n",
            sh_quote(&format!("{}@@{off}", img.image)),
            files.join(" ")
        ));
    }
    s.push_str(&format!(
        "#   and give boot-wrapper-aarch64's configure the kernel ({}){}{}, and --with-cmdline={}\n",
        sh_quote(img.kernel),
        img.initrd
            .map(|i| format!(", --with-initrd={}", sh_quote(i)))
            .unwrap_or_default(),
        img.dtb
            .map(|d| format!(
                ", --with-dtb={}",
                sh_quote(d.rsplit('/').next().unwrap_or(d))
            ))
            .unwrap_or_default(),
        sh_quote(img.cmdline)
    ));
    s.push_str(&format!(
        "# Set FVP to the model's path if {} is not on PATH.\n",
        sh_quote(&fvp.model)
    ));
    s.push_str("set -eu\n");
    s.push_str("here=$(cd \"$(dirname \"$0\")\" && pwd)\n");
    s.push_str(
        "if [ $# -lt 1 ]; then\n  sed -n '2,/^set -eu$/p' \"$0\" | sed '$d; s/^# \\{0,1\\}//' >&2\n  exit 2\nfi\n",
    );
    s.push_str("axf=$1\nshift\n");
    s.push_str(&format!(
        "model=${{FVP-}}\nif [ -z \"$model\" ]; then\n  model={}\nfi\n",
        sh_quote(&fvp.model)
    ));
    s.push_str(
        "if ! command -v \"$model\" >/dev/null 2>&1; then\n  echo \"$model not found: install Arm's Foundation model (developer.arm.com) or set FVP=/path/to/it\" >&2\n  exit 1\nfi\n",
    );
    let args: Vec<String> = fvp.args.iter().map(|a| sh_quote(a)).collect();
    s.push_str(&format!(
        "exec \"$model\" {}{}--image=\"$axf\" --block-device=\"$here\"/{} \"$@\"\n",
        args.join(" "),
        if args.is_empty() { "" } else { " " },
        sh_quote(img.image)
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script() -> String {
        launch_script(
            &Fvp {
                model: "Foundation_Platform".into(),
                args: vec!["--cores=4".into(), "--gicv3".into()],
            },
            &FvpImage {
                image: "armv8-foundation.img",
                boot_offset: Some(1048576),
                kernel: "Image",
                initrd: Some("initrd.img"),
                dtb: Some("dtbs/arm/foundation-v8-gicv3-psci.dtb"),
                cmdline: "console=ttyAMA0 root=PARTUUID=x rootwait",
            },
        )
    }

    #[test]
    fn passes_the_image_as_block_device() {
        let s = script();
        assert!(s.contains(
            "exec \"$model\" '--cores=4' '--gicv3' --image=\"$axf\" --block-device=\"$here\"/'armv8-foundation.img' \"$@\""
        ));
        assert!(s.contains("mcopy -i 'armv8-foundation.img@@1048576' '::/Image' '::/initrd.img' '::/dtbs/arm/foundation-v8-gicv3-psci.dtb' ."));
        assert!(s.contains("--with-cmdline='console=ttyAMA0 root=PARTUUID=x rootwait'"));
    }

    #[test]
    fn quotes_for_sh() {
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }
}
