//! The modules an initramfs needs to reach the root device, derived from the board's device tree and the
//! kernel's own module metadata, both read from the root filesystem (see [`derive`] for the method).
//!
//! This module is a leaf: it knows nothing of profiles, root filesystem formats or the command line; it
//! reads files through [`Files`]. (The fuzz targets compile it on its own, so it refers to nothing
//! outside itself.)

pub mod derive;
pub mod fdt;
pub mod initramfs;
pub mod kernel;
pub mod kmod;

use serde::Serialize;

pub use derive::{Builtin, Derivation, Medium, Need, Resolver, Unresolved};
use fdt::DeviceTree;
use kernel::KernelStrings;
use kmod::{MAX_META, MetaFiles, ModuleIndex};

/// A module file read for its MFD cell names is at most this large.
const MAX_MODULE_FILE: u64 = 64 << 20;
/// Largest initramfs read.
pub const MAX_INITRD: u64 = 512 << 20;
/// Memory an xz or lzma decoder may use: a stream's header chooses its dictionary size, and a forged
/// one must not make us allocate gigabytes (initramfs-tools and the kernel use at most 64 MiB).
pub const MAX_DECODER_MEMORY: u64 = 256 << 20;

/// Read access to a root filesystem (a directory or a tarball), paths relative to its root.
pub trait Files {
    /// Paths matching a pattern whose components may contain `*`, highest version last.
    fn glob(&self, pattern: &str) -> Result<Vec<String>, String>;
    /// A regular file's bytes (`None` if absent); an error if it is larger than `limit` bytes.
    fn read(&self, path: &str, limit: u64) -> Result<Option<Vec<u8>>, String>;
}

#[derive(Debug, thiserror::Error)]
pub enum RootmodsError {
    #[error("the root filesystem has no {what} at `{pattern}`{hint}")]
    Missing {
        what: String,
        pattern: String,
        hint: String,
    },
    #[error("reading {path} in the root filesystem: {message}")]
    Read { path: String, message: String },
    #[error("device tree {path}: {source}")]
    Dtb {
        path: String,
        #[source]
        source: fdt::FdtError,
    },
    #[error("{dir}/{source}")]
    Kmod {
        dir: String,
        #[source]
        source: kmod::KmodError,
    },
    #[error("{what} `{name}` is not a module name (letters, digits, '_' and '-')")]
    BadName { what: String, name: String },
}

/// What to derive for: where the kernel, device tree and modules are, the medium and the root filesystem.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// Glob of the kernel, e.g. `boot/vmlinuz-*`; the version is what `*` stands for.
    pub kernel: &'a str,
    /// Glob of the device-tree directory, e.g. `usr/lib/linux-image-*`.
    pub dtb_dir: &'a str,
    /// The device tree inside it, e.g. `sun4i-a10-cubieboard.dtb`.
    pub dtb: &'a str,
    pub medium: Medium,
    /// The root filesystem's module, e.g. `ext4`.
    pub root_fs: Option<&'a str>,
    /// Modules the profile adds (`kernel.initramfs_modules`).
    pub extras: &'a [String],
}

/// Everything derived, for printing and for the initramfs configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub kernel: String,
    pub kernel_version: String,
    pub dtb: String,
    pub modules_dir: String,
    /// Where built-in compatibles were looked up (or why they could not be).
    pub kernel_image: String,
    #[serde(flatten)]
    pub derivation: Derivation,
    pub extras: Vec<String>,
    /// Names for /etc/initramfs-tools/modules: the derived modules, then the extras.
    pub initramfs_modules: Vec<String>,
    /// Every module file to load for them, dependencies first (relative to `modules_dir`).
    pub all_load_order: Vec<String>,
    pub warnings: Vec<String>,
}

/// The part of a path that a pattern's `*` stands for: `boot/vmlinuz-*` on `boot/vmlinuz-6.1.0-9-armmp`
/// gives `6.1.0-9-armmp`.
pub fn version_suffix<'p>(path: &'p str, pattern: &str) -> &'p str {
    let base = path.rsplit('/').next().unwrap_or(path);
    let pat = pattern.rsplit('/').next().unwrap_or(pattern);
    match pat.split_once('*') {
        Some((pre, post))
            if base.starts_with(pre)
                && base.ends_with(post)
                && base.len() >= pre.len() + post.len() =>
        {
            &base[pre.len()..base.len() - post.len()]
        }
        _ => "",
    }
}

fn read(files: &dyn Files, path: &str, limit: u64) -> Result<Option<Vec<u8>>, RootmodsError> {
    files
        .read(path, limit)
        .map_err(|message| RootmodsError::Read {
            path: path.to_string(),
            message,
        })
}

fn glob(files: &dyn Files, pattern: &str) -> Result<Vec<String>, RootmodsError> {
    files.glob(pattern).map_err(|message| RootmodsError::Read {
        path: pattern.to_string(),
        message,
    })
}

/// The kernel's module metadata under `dir` (`lib/modules/VERSION`).
pub fn load_index(files: &dyn Files, dir: &str) -> Result<ModuleIndex, RootmodsError> {
    let need = |name: &str| -> Result<Vec<u8>, RootmodsError> {
        read(files, &format!("{dir}/{name}"), MAX_META)?.ok_or_else(|| RootmodsError::Missing {
            what: format!("module metadata ({name})"),
            pattern: format!("{dir}/{name}"),
            hint:
                "; depmod writes it when the kernel package is installed (depmod -b ROOT VERSION)"
                    .into(),
        })
    };
    let alias = need("modules.alias")?;
    let dep = need("modules.dep")?;
    let builtin = need("modules.builtin")?;
    let builtin_modinfo = read(files, &format!("{dir}/modules.builtin.modinfo"), MAX_META)?;
    let softdep = read(files, &format!("{dir}/modules.softdep"), MAX_META)?;
    ModuleIndex::parse(MetaFiles {
        alias: &alias,
        dep: &dep,
        builtin: &builtin,
        builtin_modinfo: builtin_modinfo.as_deref(),
        softdep: softdep.as_deref(),
    })
    .map_err(|source| RootmodsError::Kmod {
        dir: dir.to_string(),
        source,
    })
}

/// The kernel, its version, and its module directory, as `build` picks them: the highest version.
pub fn locate_kernel(
    files: &dyn Files,
    kernel_pattern: &str,
) -> Result<(String, String, String), RootmodsError> {
    let kernel = glob(files, kernel_pattern)?
        .pop()
        .ok_or_else(|| RootmodsError::Missing {
            what: "kernel".into(),
            pattern: kernel_pattern.into(),
            hint: "; install the kernel package into it".into(),
        })?;
    let mut version = version_suffix(&kernel, kernel_pattern).to_string();
    if version.is_empty() {
        // A kernel without a version in its name: the only (or highest) module directory.
        version = glob(files, "lib/modules/*")?
            .pop()
            .map(|d| d.rsplit('/').next().unwrap_or_default().to_string())
            .unwrap_or_default();
    }
    let dir = format!("lib/modules/{version}");
    if version.is_empty() || glob(files, &dir)?.is_empty() {
        return Err(RootmodsError::Missing {
            what: "module directory for the kernel".into(),
            pattern: dir,
            hint: format!(" (kernel {kernel})"),
        });
    }
    Ok((kernel, version, dir))
}

/// Derives the modules for a root filesystem.
pub fn analyze(files: &dyn Files, req: &Request<'_>) -> Result<Report, RootmodsError> {
    for e in req.extras {
        if !kmod::valid_module_name(e) {
            return Err(RootmodsError::BadName {
                what: "kernel.initramfs_modules entry".into(),
                name: e.clone(),
            });
        }
    }
    let (kernel, version, modules_dir) = locate_kernel(files, req.kernel)?;
    let dirs = glob(files, req.dtb_dir)?;
    let dir = dirs
        .iter()
        .find(|d| version_suffix(d, req.dtb_dir) == version)
        .or(dirs.last())
        .ok_or_else(|| RootmodsError::Missing {
            what: "device-tree directory".into(),
            pattern: req.dtb_dir.into(),
            hint: "; the kernel package ships DTBs there".into(),
        })?;
    let dtb_path = format!("{dir}/{}", req.dtb);
    let dtb =
        read(files, &dtb_path, fdt::MAX_DTB as u64)?.ok_or_else(|| RootmodsError::Missing {
            what: "device tree".into(),
            pattern: format!("{}/{}", req.dtb_dir, req.dtb),
            hint: "; the kernel package ships DTBs there".into(),
        })?;
    let tree = DeviceTree::parse(&dtb).map_err(|source| RootmodsError::Dtb {
        path: dtb_path.clone(),
        source,
    })?;
    let index = load_index(files, &modules_dir)?;

    let mut warnings = Vec::new();
    let kernel_strings = match read(files, &kernel, kernel::MAX_KERNEL_FILE) {
        Ok(Some(data)) => match KernelStrings::from_kernel_file(&data) {
            Ok(k) => Some(k),
            Err(e) => {
                warnings.push(format!(
                    "kernel {kernel}: {e}; built-in drivers without a module alias cannot be recognised, so more providers show as unresolved"
                ));
                None
            }
        },
        Ok(None) => None,
        Err(e) => {
            warnings.push(format!("{e}; built-in drivers cannot be recognised"));
            None
        }
    };
    let read_module = |p: &str| -> Option<Vec<u8>> {
        files
            .read(&format!("{modules_dir}/{p}"), MAX_MODULE_FILE)
            .ok()
            .flatten()
    };
    let mut resolver = Resolver::new(&index, kernel_strings.as_ref(), &read_module);
    let derivation = derive::derive(&mut resolver, &tree, req.medium, req.root_fs);
    let report = finish(
        &index,
        derivation,
        req.extras,
        warnings,
        [
            kernel.clone(),
            version,
            dtb_path,
            modules_dir,
            kernel_strings
                .map(|k| format!("{} ({} strings)", k.source, k.len()))
                .unwrap_or_else(|| "not read".into()),
        ],
    )?;
    Ok(report)
}

/// Adds the extras, checks names, and computes the full load order.
pub fn finish(
    index: &ModuleIndex,
    derivation: Derivation,
    extras: &[String],
    mut warnings: Vec<String>,
    [kernel, kernel_version, dtb, modules_dir, kernel_image]: [String; 5],
) -> Result<Report, RootmodsError> {
    for n in &derivation.modules {
        if !kmod::valid_module_name(&n.module) {
            return Err(RootmodsError::BadName {
                what: format!("module file {modules_dir}/{}", n.path),
                name: n.module.clone(),
            });
        }
    }
    let mut names: Vec<String> = derivation
        .modules
        .iter()
        .map(|n| n.module.clone())
        .collect();
    let mut roots: Vec<usize> = derivation
        .modules
        .iter()
        .filter_map(|n| index.module(&n.module))
        .collect();
    for e in extras {
        match index.module(e) {
            Some(i) => roots.push(i),
            None if index.builtin_path(e).is_some() => warnings.push(format!(
                "kernel.initramfs_modules: `{e}` is built into this kernel; the entry has no effect"
            )),
            None => warnings.push(format!(
                "kernel.initramfs_modules: `{e}` is neither a module of kernel {kernel_version} nor built in"
            )),
        }
        if !names
            .iter()
            .any(|n| kmod::normalize(n) == kmod::normalize(e))
        {
            names.push(e.clone());
        }
    }
    let all_load_order = index
        .load_order(&roots)
        .into_iter()
        .map(|i| index.modules[i].path.clone())
        .collect();
    Ok(Report {
        kernel,
        kernel_version,
        dtb,
        modules_dir,
        kernel_image,
        derivation,
        extras: extras.to_vec(),
        initramfs_modules: names,
        all_load_order,
        warnings,
    })
}

impl Report {
    /// Human-readable: derived modules with their chains, built-in providers, unresolved ones.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let d = &self.derivation;
        s.push_str(&format!(
            "kernel {} ({}), device tree {}\nroot medium: {} (controllers: {})\n",
            self.kernel_version,
            self.kernel,
            self.dtb,
            d.medium.describe(),
            if d.controllers.is_empty() {
                "none".into()
            } else {
                d.controllers.join(", ")
            }
        ));
        let lines: Vec<String> = d.modules.iter().map(Derivation::need_line).collect();
        section(&mut s, "derived modules", &lines);
        if !self.extras.is_empty() {
            s.push_str(&format!(
                "\nextras from the profile (kernel.initramfs_modules): {}\n",
                self.extras.join(", ")
            ));
        }
        let lines: Vec<String> = d
            .builtin
            .iter()
            .map(|b| format!("{} ({}) ← {}", b.what, b.by, b.chain.join(" ← ")))
            .collect();
        section(&mut s, "built in", &lines);
        let lines: Vec<String> = d
            .unresolved
            .iter()
            .map(|u| {
                let compatible = if u.compatible.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", u.compatible.join(", "))
                };
                let chain = if u.chain.is_empty() {
                    String::new()
                } else {
                    format!(" ← {}", u.chain.join(" ← "))
                };
                format!("{}{compatible}: {}{chain}", u.what, u.reason)
            })
            .collect();
        section(&mut s, "unresolved", &lines);
        s.push_str(&format!(
            "\nload order ({} files): {}\n",
            self.all_load_order.len(),
            self.all_load_order
                .iter()
                .map(|p| kmod::stem(p))
                .collect::<Vec<_>>()
                .join(" ")
        ));
        for w in &self.warnings {
            s.push_str(&format!("warning: {w}\n"));
        }
        s
    }
}

/// A titled list of the report: `TITLE (N):` and one indented line each.
fn section(s: &mut String, title: &str, lines: &[String]) {
    s.push_str(&format!("\n{title} ({}):\n", lines.len()));
    for l in lines {
        s.push_str(&format!("  {l}\n"));
    }
}
