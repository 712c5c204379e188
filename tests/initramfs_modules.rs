//! The initramfs modules derived from real Debian kernels: `boardsmith initramfs-modules` on the seed boards
//! and on boards whose SD card is powered through a PMIC, the customize hook `rootfs` runs inside
//! mmdebstrap, the `build` warning, and a survey of every device tree in both kernel packages.
//!
//! Data: Debian's linux-image-*-armmp (armhf) and -arm64 packages, fetched with `apt-get download` into
//! .cache/debs/ARCH (shared with scripts/minimal-rootfs.sh; DEB_CACHE moves it), unpacked with
//! `dpkg-deb -x`, module metadata made by the host's `depmod -b`. Oracles: `fdtget` (device-tree facts),
//! kmod's `modprobe --resolve-alias` and `--show-depends` (alias matching, load order), `cpio` and `zstd`
//! (initramfs images).

mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> std::process::Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (is the tool installed?)"))
}

fn need_tool(tool: &str, package: &str) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "`{tool}` is missing: install the Debian package {package}"
    );
}

/// Debian's kernel package for `arch` unpacked (with module metadata from depmod), once per test run.
fn kernel_tree(arch: &str) -> PathBuf {
    static TREES: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    support::once_per_run(&TREES, arch, || unpack_kernel(arch))
}

fn unpack_kernel(arch: &str) -> PathBuf {
    need_tool("dpkg-deb", "dpkg");
    need_tool("depmod", "kmod");
    let flavour = if arch == "armhf" { "armmp" } else { "arm64" };
    let meta = format!("linux-image-{flavour}:{arch}");
    let deps = run(Command::new("apt-cache").args(["depends", &meta]));
    let pkg = String::from_utf8_lossy(&deps.stdout)
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Depends: ")
                .filter(|p| p.starts_with("linux-image-6") || p.starts_with("linux-image-5"))
                .map(|p| p.split(':').next().unwrap_or(p).to_string())
        })
        .unwrap_or_else(|| {
            panic!(
                "cannot resolve the kernel package {meta}: run `dpkg --add-architecture {arch} && apt-get update` (scripts/install-deps.sh does)"
            )
        });
    let cache = std::env::var_os("DEB_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".cache/debs"))
        .join(arch);
    std::fs::create_dir_all(&cache).unwrap();
    let find = || {
        std::fs::read_dir(&cache).ok().and_then(|d| {
            d.flatten().map(|e| e.path()).find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{pkg}_")) && n.ends_with(".deb"))
            })
        })
    };
    let deb = match find() {
        Some(d) => d,
        None => {
            let o = run(Command::new("apt-get")
                .args(["download", "-q", &format!("{pkg}:{arch}")])
                .current_dir(&cache));
            find().unwrap_or_else(|| {
                panic!(
                    "downloading the Debian package {pkg}:{arch} failed (apt-get download): {}",
                    String::from_utf8_lossy(&o.stderr)
                )
            })
        }
    };
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("initramfs-modules")
        .join(arch);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    support::run_ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dir));
    let version = kernel_version(&dir);
    support::run_ok(Command::new("depmod").arg("-b").arg(&dir).arg(&version));
    dir
}

fn kernel_version(tree: &Path) -> String {
    std::fs::read_dir(tree.join("lib/modules"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .file_name()
        .to_string_lossy()
        .into_owned()
}

fn board(name: &str) -> String {
    if name.ends_with(".toml") {
        repo()
            .join("tests/fixtures/boards")
            .join(name)
            .display()
            .to_string()
    } else {
        name.to_string()
    }
}

/// `boardsmith initramfs-modules BOARD --rootfs TREE --json`.
fn derive(name: &str, tree: &Path) -> Value {
    let o = support::run_ok(
        support::boardsmith()
            .args(["initramfs-modules", &board(name), "--json", "--rootfs"])
            .arg(tree),
    );
    serde_json::from_slice(&o.stdout).expect("json")
}

fn modules(r: &Value) -> BTreeMap<String, Vec<String>> {
    r["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["module"].as_str().unwrap().to_string(),
                strs(&m["chain"]).into_iter().map(String::from).collect(),
            )
        })
        .collect()
}

/// The strings of the JSON array `v`.
fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect()
}

fn norm(s: &str) -> String {
    s.replace('-', "_")
}

#[test]
fn seed_boards_derive_what_their_profiles_listed() {
    // What the profiles listed before the derivation (git history of boards/): each is now derived as a
    // module or known to be built in, or (virtio_pci) kept as the profile's one extra.
    for (b, arch, listed) in [
        ("cubieboard", "armhf", &["sunxi-mmc", "mmc_block", "ext4"]),
        ("mk802", "armhf", &["sunxi-mmc", "mmc_block", "ext4"]),
        (
            "chromebook-snow",
            "armhf",
            &["dw_mmc-exynos", "mmc_block", "ext4"],
        ),
        (
            "armv8-foundation",
            "arm64",
            &["virtio_blk", "virtio_pci", "ext4"],
        ),
    ] {
        let r = derive(b, &kernel_tree(arch));
        let mods = modules(&r);
        let builtin: Vec<String> = r["builtin"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["what"].as_str().unwrap().to_string())
            .collect();
        let extras = strs(&r["extras"]);
        for l in listed {
            let derived = mods.keys().any(|m| norm(m) == norm(l));
            let built_in = builtin.iter().any(|m| norm(m) == norm(l));
            assert!(
                derived || built_in || extras.contains(l),
                "{b}: `{l}` is neither derived nor built in nor an extra: {r:#}"
            );
        }
        assert_eq!(r["unresolved"].as_array().unwrap().len(), 0, "{b}: {r:#}");
        let list = strs(&r["initramfs_modules"]);
        assert!(list.contains(&"ext4"), "{b}: {list:?}");
    }
    // The chains, exactly.
    let r = derive("cubieboard", &kernel_tree("armhf"));
    let mods = modules(&r);
    assert_eq!(mods["sunxi-mmc"], ["mmc@1c0f000 (SD card controller)"]);
    assert_eq!(mods["ext4"], ["root filesystem (ext4)"]);
    assert_eq!(mods.len(), 2, "{mods:?}");
    let r = derive("chromebook-snow", &kernel_tree("armhf"));
    assert_eq!(
        modules(&r)["dw_mmc-exynos"],
        ["mmc@12220000 (SD card controller)"]
    );
    let r = derive("armv8-foundation", &kernel_tree("arm64"));
    let mods = modules(&r);
    assert_eq!(
        mods["virtio_mmio"],
        ["virtio@130000 (virtio disk controller)"]
    );
    assert_eq!(mods["virtio_blk"], ["block driver for the virtio disk"]);
}

/// fdtget's view of a node property (an independent reading of the DTB).
fn fdtget(dtb: &Path, node: &str, prop: &str, kind: &str) -> String {
    let o = run(Command::new("fdtget")
        .args(["-t", kind])
        .arg(dtb)
        .args([node, prop]));
    assert!(
        o.status.success(),
        "fdtget {node} {prop}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn pmic_on_i2c_chain_is_complete() {
    need_tool("fdtget", "device-tree-compiler");
    let tree = kernel_tree("armhf");
    let r = derive("bananapi-m2-ultra.toml", &tree);
    let mods = modules(&r);
    let ctl = "mmc@1c0f000 (SD card controller)";
    assert_eq!(mods["sunxi-mmc"], [ctl]);
    assert_eq!(
        mods["axp20x-regulator"],
        [
            "vmmc-supply of mmc@1c0f000 → dcdc1 → pmic@34 (regulator cell `axp20x-regulator`, matched by name to the built-in MFD x-powers,axp221)",
            ctl
        ]
    );
    assert_eq!(
        mods["i2c-mv64xxx"],
        [
            "parent bus of pmic@34",
            "vmmc-supply of mmc@1c0f000 → dcdc1 → pmic@34",
            ctl
        ]
    );
    assert_eq!(r["unresolved"].as_array().unwrap().len(), 0, "{r:#}");
    // The PMIC itself is built in (its compatible is in the kernel image: CONFIG_MFD_AXP20X_I2C=y).
    assert!(
        r["builtin"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["what"] == "/soc/i2c@1c2ac00/pmic@34"),
        "{r:#}"
    );
    let order = strs(&r["all_load_order"]);
    for m in [
        "kernel/drivers/regulator/axp20x-regulator.ko",
        "kernel/drivers/i2c/busses/i2c-mv64xxx.ko",
        "kernel/drivers/mmc/host/sunxi-mmc.ko",
    ] {
        assert!(order.contains(&m), "{m} in {order:?}");
    }

    // The facts the chain rests on, read by fdtget: the SD controller's supply is DCDC1, under an AXP221
    // whose parent is an I2C controller that i2c-mv64xxx claims.
    let dtb = tree.join(format!(
        "usr/lib/linux-image-{}/sun8i-r40-bananapi-m2-ultra.dtb",
        kernel_version(&tree)
    ));
    let supply = fdtget(&dtb, "/soc/mmc@1c0f000", "vmmc-supply", "x");
    let dcdc1 = "/soc/i2c@1c2ac00/pmic@34/regulators/dcdc1";
    assert_eq!(fdtget(&dtb, dcdc1, "phandle", "x"), supply);
    assert_eq!(
        fdtget(&dtb, "/soc/i2c@1c2ac00/pmic@34", "compatible", "s"),
        "x-powers,axp221"
    );
    let i2c_compat = fdtget(&dtb, "/soc/i2c@1c2ac00", "compatible", "s");
    // kmod resolves the I2C controller's modalias to i2c-mv64xxx, and the regulator's platform alias.
    let moddir = ["-d", tree.to_str().unwrap(), "-S", &kernel_version(&tree)];
    let modalias = format!(
        "of:Ni2cT(null){}",
        i2c_compat
            .split_whitespace()
            .map(|c| format!("C{c}"))
            .collect::<String>()
    );
    let o = run(Command::new("modprobe")
        .args(moddir)
        .args(["--resolve-alias", &modalias]));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "i2c_mv64xxx");
    let o = run(Command::new("modprobe")
        .args(moddir)
        .args(["--resolve-alias", "platform:axp20x-regulator"]));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "axp20x_regulator"
    );
}

#[test]
fn pmic_on_rsb_chain_is_complete() {
    let r = derive("olinuxino-a33.toml", &kernel_tree("armhf"));
    let mods = modules(&r);
    assert_eq!(
        mods["axp20x-regulator"][0],
        "vmmc-supply of mmc@1c0f000 → dcdc1 → pmic@3a3 (regulator cell `axp20x-regulator`, matched by name to the built-in MFD x-powers,axp223)"
    );
    assert!(mods.contains_key("sunxi-mmc"));
    // The RSB controller is built in (CONFIG_SUNXI_RSB=y): no bus module.
    let rsb = r["builtin"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["what"] == "/soc/rsb@1f03400")
        .unwrap_or_else(|| panic!("{r:#}"));
    assert_eq!(rsb["chain"][0], "parent bus of pmic@3a3");
    assert_eq!(r["unresolved"].as_array().unwrap().len(), 0, "{r:#}");
}

#[test]
fn load_order_and_alias_matching_agree_with_kmod() {
    let tree = kernel_tree("armhf");
    let version = kernel_version(&tree);
    let moddir = ["-d", tree.to_str().unwrap(), "-S", &version];
    let r = derive("bananapi-m2-ultra.toml", &tree);
    let order = strs(&r["all_load_order"]);
    // Every module comes after everything modprobe would load before it.
    for m in ["ext4", "sunxi-mmc", "axp20x-regulator", "i2c-mv64xxx"] {
        let o = run(Command::new("modprobe")
            .args(moddir)
            .args(["--show-depends", m]));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let prefix = format!("{}/lib/modules/{version}/", tree.display());
        let chain: Vec<String> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("insmod "))
            .map(|p| p.trim().trim_start_matches(&prefix).to_string())
            .collect();
        let pos = |p: &str| order.iter().position(|x| *x == p);
        let last = chain.last().unwrap();
        for dep in &chain[..chain.len() - 1] {
            assert!(
                pos(dep).is_some() && pos(dep) < pos(last),
                "{dep} must load before {last}: {order:?}"
            );
        }
    }

    // Alias matching: for every enabled device of two trees, the modules boardsmith matches are the ones
    // `modprobe --resolve-alias` finds for the same modalias.
    let idx = load_index(&tree, &version);
    for dtb in [
        "sun8i-r40-bananapi-m2-ultra.dtb",
        "sun4i-a10-cubieboard.dtb",
    ] {
        let data =
            std::fs::read(tree.join(format!("usr/lib/linux-image-{version}/{dtb}"))).unwrap();
        let dt = boardsmith::rootmods::fdt::DeviceTree::parse(&data).unwrap();
        let mut checked = 0;
        for i in 1..dt.nodes.len() {
            let n = dt.node(i);
            let compat = n.strings("compatible");
            if compat.is_empty() || !dt.enabled(i) {
                continue;
            }
            let modalias = format!(
                "of:N{}T(null){}",
                n.base_name(),
                compat.iter().map(|c| format!("C{c}")).collect::<String>()
            );
            let mut ours: Vec<String> = idx
                .alias_matches(&modalias)
                .into_iter()
                .map(|m| norm(idx.modules[m].name()))
                .collect();
            ours.sort();
            let o = run(Command::new("modprobe")
                .args(moddir)
                .args(["--resolve-alias", &modalias]));
            let mut theirs: Vec<String> = String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(|l| norm(l.trim()))
                .filter(|l| !l.is_empty())
                .collect();
            theirs.sort();
            theirs.dedup();
            assert_eq!(ours, theirs, "{dtb} {}: {modalias}", dt.path(i));
            checked += 1;
        }
        assert!(checked > 50, "{dtb}: only {checked} devices");
    }
}

fn load_index(tree: &Path, version: &str) -> boardsmith::rootmods::kmod::ModuleIndex {
    let dir = tree.join("lib/modules").join(version);
    let read = |n: &str| std::fs::read(dir.join(n)).unwrap();
    let (alias, dep, builtin, modinfo, softdep) = (
        read("modules.alias"),
        read("modules.dep"),
        read("modules.builtin"),
        read("modules.builtin.modinfo"),
        read("modules.softdep"),
    );
    boardsmith::rootmods::kmod::ModuleIndex::parse(boardsmith::rootmods::kmod::MetaFiles {
        alias: &alias,
        dep: &dep,
        builtin: &builtin,
        builtin_modinfo: Some(&modinfo),
        softdep: Some(&softdep),
    })
    .unwrap()
}

/// A root filesystem made of the kernel tree (hard links, so it is cheap), a stand-in U-Boot for the
/// board, /etc/initramfs-tools, and an initramfs holding `modules` (module file paths), packed by
/// `cpio -H newc` and compressed by `zstd` the way initramfs-tools does it.
fn rootfs_with_initramfs(dir: &Path, arch: &str, modules: &[&str]) -> PathBuf {
    need_tool("cpio", "cpio");
    need_tool("zstd", "zstd");
    let tree = kernel_tree(arch);
    let version = kernel_version(&tree);
    let root = dir.join("root");
    let cp = run(Command::new("cp").arg("-al").arg(&tree).arg(&root));
    assert!(cp.status.success());
    let blob = root.join("usr/lib/u-boot/Cubieboard/u-boot-sunxi-with-spl.bin");
    std::fs::create_dir_all(blob.parent().unwrap()).unwrap();
    let mut spl = vec![0xea, 0, 0, 0x16];
    spl.extend_from_slice(b"eGON.BT0");
    spl.resize(32 << 10, 0);
    std::fs::write(&blob, spl).unwrap();
    std::fs::create_dir_all(root.join("etc/initramfs-tools")).unwrap();
    // The initramfs content: busybox-less, just the module files at initramfs-tools' paths.
    let staging = dir.join("initramfs");
    for m in modules {
        let src = root.join(format!("lib/modules/{version}/{m}"));
        let dst = staging.join(format!("usr/lib/modules/{version}/{m}"));
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(&src, &dst).unwrap();
    }
    std::fs::create_dir_all(staging.join("scripts")).unwrap();
    std::fs::write(staging.join("init"), "#!/bin/sh\n").unwrap();
    let initrd = root.join(format!("boot/initrd.img-{version}"));
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd '{}' && find . | sort | cpio --quiet -o -H newc | zstd -q -19 -o '{}'",
            staging.display(),
            initrd.display()
        ))
        .status()
        .unwrap();
    assert!(st.success(), "cpio | zstd");
    root
}

#[test]
fn hook_writes_the_list_and_checks_the_initramfs() {
    let d = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let all = [
        "kernel/drivers/mmc/host/sunxi-mmc.ko",
        "kernel/fs/ext4/ext4.ko",
        "kernel/fs/jbd2/jbd2.ko",
        "kernel/fs/mbcache.ko",
        "kernel/lib/crc16.ko",
        "kernel/crypto/crc32c_generic.ko",
        "kernel/arch/arm/crypto/crc32-arm-ce.ko",
    ];
    let root = rootfs_with_initramfs(d.path(), "armhf", &all);
    let input = d.path().join("input.json");
    std::fs::write(
        &input,
        r#"{"kernel":"boot/vmlinuz-*","initrd":"boot/initrd.img-*","dtb_dir":"usr/lib/linux-image-*","dtb":"sun4i-a10-cubieboard.dtb","medium":"sd","root_fs":"ext4","extras":["uas"]}"#,
    )
    .unwrap();
    let hook = |root: &Path| {
        let mut c = support::boardsmith();
        c.arg("__initramfs-hook").arg(&input).arg(root);
        c
    };
    // The tree's module list is not the derived one (as on a board layer's base): the hook writes the
    // list and regenerates the initramfs inside the chroot, although it lacks nothing, so that it is
    // made from that list; this tree has no update-initramfs, and the hook says so.
    let f = support::run_err(&mut hook(&root));
    let err = &f
        .expect(
            1,
            &["lacking nothing; module list changed", "update-initramfs"],
        )
        .stderr;
    assert!(err.contains("regenerating"), "{err}");
    // Again, with the list now in place and nothing lacking: nothing to regenerate.
    let o = support::run_ok(&mut hook(&root));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("regenerating"), "{err}");
    let list = std::fs::read_to_string(root.join("etc/initramfs-tools/modules")).unwrap();
    let names: Vec<&str> = list.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(names, ["sunxi-mmc", "ext4", "uas"], "{list}");

    // An initramfs without the SD controller's driver: the hook regenerates it inside the chroot, and
    // says so when that fails (this tree has no update-initramfs).
    let d2 = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let root = rootfs_with_initramfs(d2.path(), "armhf", &all[1..]);
    let f = support::run_err(&mut hook(&root));
    let err = &f.expect(1, &["update-initramfs"]).stderr;
    assert!(
        err.contains("lacking kernel/drivers/mmc/host/sunxi-mmc.ko")
            || err.contains("lacking sunxi-mmc"),
        "{err}"
    );
}

#[test]
fn build_warns_when_the_initramfs_lacks_a_derived_module() {
    need_tool("mke2fs", "e2fsprogs");
    let d = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let root = rootfs_with_initramfs(d.path(), "armhf", &["kernel/fs/ext4/ext4.ko"]);
    let o = support::build_ok("cubieboard", &root, &d.path().join("out"), &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    let warning = err
        .lines()
        .find(|l| l.starts_with("warning:") && l.contains("lacks modules"))
        .unwrap_or_else(|| panic!("no warning:\n{err}"));
    assert!(
        warning.contains("sunxi-mmc") && warning.contains("jbd2") && !warning.contains(" ext4,"),
        "{warning}"
    );
    assert!(warning.contains("root not mounted"), "{warning}");
}

#[test]
fn must_fail() {
    let tree = kernel_tree("armhf");
    let d = tempfile::tempdir().unwrap();
    // No medium in the profile.
    let p = d.path().join("nomedium.toml");
    std::fs::write(
        &p,
        "arch = \"armhf\"\nconsole = \"ttyS0\"\n[kernel]\nimage = \"zImage\"\npath = \"boot/vmlinuz-*\"\n[table]\ntype = \"mbr\"\n[[partition]]\nname = \"root\"\nrole = \"root\"\nsize = \"fill\"\n",
    )
    .unwrap();
    let derive_err = |board: &str, root: &Path| {
        support::run_err(
            support::boardsmith()
                .args(["initramfs-modules", board, "--rootfs"])
                .arg(root),
        )
    };
    derive_err(p.to_str().unwrap(), &tree).expect(2, &["no `medium`"]);
    // A root filesystem without module metadata: depmod is named.
    let bare = d.path().join("bare");
    let version = kernel_version(&tree);
    for f in [
        format!("boot/vmlinuz-{version}"),
        format!("usr/lib/linux-image-{version}/sun4i-a10-cubieboard.dtb"),
    ] {
        std::fs::create_dir_all(bare.join(&f).parent().unwrap()).unwrap();
        std::fs::copy(tree.join(&f), bare.join(&f)).unwrap();
    }
    std::fs::create_dir_all(bare.join(format!("lib/modules/{version}"))).unwrap();
    derive_err("cubieboard", &bare).expect(2, &["modules.alias", "depmod"]);
    // A damaged device tree: the byte offset is named.
    let dtb = bare.join(format!(
        "usr/lib/linux-image-{version}/sun4i-a10-cubieboard.dtb"
    ));
    let mut data = std::fs::read(&dtb).unwrap();
    data[0] = 0;
    std::fs::write(&dtb, data).unwrap();
    derive_err("cubieboard", &bare).expect(2, &["sun4i-a10-cubieboard.dtb", "magic"]);
}

/// Every device tree of both kernel packages, for an SD-card root: no failure, and a summary (boards,
/// modules per board, unresolved providers, time) in target/tmp/initramfs-modules/survey.txt.
#[test]
fn every_debian_dtb() {
    use boardsmith::rootmods::{self, Medium, Resolver, derive::derive, fdt::DeviceTree};
    let mut report = String::new();
    for arch in ["armhf", "arm64"] {
        let tree = kernel_tree(arch);
        let version = kernel_version(&tree);
        let started = Instant::now();
        let idx = load_index(&tree, &version);
        let kernel_file = std::fs::read(tree.join(format!("boot/vmlinuz-{version}"))).unwrap();
        let kernel = rootmods::kernel::KernelStrings::from_kernel_file(&kernel_file).unwrap();
        let moddir = tree.join(format!("lib/modules/{version}"));
        let read_module = |p: &str| std::fs::read(moddir.join(p)).ok();
        let mut resolver = Resolver::new(&idx, Some(&kernel), &read_module);
        let setup = started.elapsed();
        let mut dtbs: Vec<PathBuf> = Vec::new();
        let mut stack = vec![tree.join(format!("usr/lib/linux-image-{version}"))];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "dtb") {
                    dtbs.push(p);
                }
            }
        }
        dtbs.sort();
        let mut per_board_modules: Vec<usize> = Vec::new();
        let mut no_controller = 0;
        let mut with_unresolved = 0;
        let mut unresolved: BTreeMap<String, usize> = BTreeMap::new();
        let mut module_use: BTreeMap<String, usize> = BTreeMap::new();
        let mut total_unresolved = 0;
        for p in &dtbs {
            let data = std::fs::read(p).unwrap();
            let dt = DeviceTree::parse(&data).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let d = derive(&mut resolver, &dt, Medium::Sd, Some("ext4"));
            per_board_modules.push(d.modules.len());
            if d.controllers.is_empty() {
                no_controller += 1;
            }
            let real: Vec<_> = d
                .unresolved
                .iter()
                .filter(|u| !u.what.ends_with("controller"))
                .collect();
            if !real.is_empty() {
                with_unresolved += 1;
            }
            total_unresolved += real.len();
            for u in real {
                let key = if u.compatible.is_empty() {
                    u.reason.clone()
                } else {
                    u.compatible[0].clone()
                };
                *unresolved.entry(key).or_default() += 1;
            }
            for n in &d.modules {
                *module_use.entry(n.module.clone()).or_default() += 1;
            }
        }
        let secs = started.elapsed().as_secs_f64();
        per_board_modules.sort_unstable();
        let n = dtbs.len();
        let median = per_board_modules.get(n / 2).copied().unwrap_or(0);
        let max = per_board_modules.last().copied().unwrap_or(0);
        let mean = per_board_modules.iter().sum::<usize>() as f64 / n.max(1) as f64;
        let mut hist: BTreeMap<usize, usize> = BTreeMap::new();
        for m in &per_board_modules {
            *hist.entry(*m).or_default() += 1;
        }
        report.push_str(&format!(
            "## {arch}: linux-image-{version}, medium sd, root ext4\n\
             | device trees | derived modules per board (min / median / mean / max) | boards without an SD controller | boards with unresolved providers | unresolved providers (total) | time (setup + all trees) |\n\
             | --- | --- | --- | --- | --- | --- |\n\
             | {n} | {} / {median} / {mean:.1} / {max} | {no_controller} | {with_unresolved} | {total_unresolved} | {:.1} s + {:.1} s |\n\n\
             modules per board: {}\n\n\
             most needed modules: {}\n\n\
             most frequent unresolved providers: {}\n\n",
            per_board_modules.first().copied().unwrap_or(0),
            setup.as_secs_f64(),
            secs - setup.as_secs_f64(),
            hist.iter()
                .map(|(k, v)| format!("{k}: {v} boards"))
                .collect::<Vec<_>>()
                .join(", "),
            top(&module_use, 12),
            top(&unresolved, 12),
        ));
        assert!(n > 400, "{arch}: only {n} device trees");
    }
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("initramfs-modules/survey.txt");
    std::fs::write(&out, &report).unwrap();
    eprintln!("{report}(written to {})", out.display());
}

fn top(m: &BTreeMap<String, usize>, n: usize) -> String {
    let mut v: Vec<(&String, &usize)> = m.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    v.into_iter()
        .take(n)
        .map(|(k, c)| format!("{k} ({c})"))
        .collect::<Vec<_>>()
        .join(", ")
}
