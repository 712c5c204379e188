//! `build_rootfs`: the two stages in order, from the request to the report.
//!
//! 1. what the user supplies and where the output goes, checked ([`Supplied::gather`],
//!    [`Destination::check`]), and the base's key ([`debian_base_input`]), before anything is written;
//! 2. the work directory, the secret files and the artifacts;
//! 3. stage 1, the base: a prebuilt tarball ([`prebuilt_base`]) or mmdebstrap's output through the
//!    cache ([`base_stage`]), replaced by a base of the board's own device tree when a shared one's
//!    initramfs does not fit ([`Build::own_device_tree_base`]);
//! 4. stage 2, the board configuration ([`Build::configure`]);
//! 5. the output and the secret files renamed into place ([`Destination::write`]).

use std::path::PathBuf;
use std::time::Instant;

use super::base::{Base, base_modules_differ, base_plan, debian_base_input, initramfs_files};
use super::board::{check_boot_files, initramfs_modules};
use super::destination::{Destination, WorkDir, commit_secrets, write_secrets};
use super::features::{ArtifactSpec, Recipe};
use super::inputs::{Supplied, resolve_recipe};
use super::mmdebstrap::BasePlan;
use super::tartree::TarTree;
use super::{
    BootFiles, RootfsError, RootfsEvent, RootfsReport, RootfsRequest, artifact_flags, cache,
    customize, fetch, io, layer,
};
use crate::plan::{Layout, PlanInput, plan};
use crate::profile::Profile;

/// Builds the root filesystem described by `profile` and `req`, in two stages: the base (mmdebstrap's
/// output, through the cache; or a prebuilt tarball) and the board configuration applied to it.
pub fn build_rootfs(
    profile: &Profile,
    req: &RootfsRequest,
    on: &dyn Fn(RootfsEvent<'_>),
) -> Result<RootfsReport, RootfsError> {
    let started = Instant::now();
    let mut b = Build {
        profile,
        req,
        on,
        warnings: Vec::new(),
    };
    on(RootfsEvent::Phase("resolving the recipe"));
    let (recipe, mut vars, hostname) = resolve_recipe(profile, req)?;
    let dest = Destination::check(&req.out)?;
    // Everything the user must supply, before the long part.
    let supplied = Supplied::gather(&recipe, req, &mut vars)?;
    // The initramfs configuration: given to mmdebstrap, and written by stage 2 with the derived list.
    let mut initramfs = initramfs_files(profile);
    // The base's key (and the archive's state it covers), and whether mmdebstrap will be needed.
    let base_input = match supplied.tarball {
        Some(_) => None,
        None => Some(debian_base_input(profile, &recipe, req, &initramfs, on)?),
    };
    let layout = plan(
        profile,
        &PlanInput {
            epoch: req.epoch,
            ..Default::default()
        },
    )?;

    let created = crate::signals::create_dir_all_tracked(&dest.parent)
        .map_err(io(format!("creating {}", dest.parent.display())))?;
    let work =
        WorkDir::create(&dest.parent, &dest.name).map_err(io("creating a work directory"))?;
    let pending_secrets = write_secrets(&supplied.secrets)?;
    let artifacts = fetch_artifacts(&supplied.artifacts, &work, on)?;

    // Stage 1, the base: a prebuilt tarball, or mmdebstrap's output through the cache.
    let mut stage1 = match (&supplied.tarball, &base_input) {
        (Some((source, sha)), _) => prebuilt_base(source, sha, &work, on)?,
        (None, Some((plan, inputs))) => b.debian_base(plan, inputs, &work)?,
        (None, None) => unreachable!("a Debian build has its base plan"),
    };

    // Stage 2, the board configuration: without a package manager, the same on a cache hit and a miss.
    on(RootfsEvent::Phase(
        "configuring users, files, fstab and services",
    ));
    // Errors in a prebuilt tarball name it, not its working copy.
    let shown = match &supplied.tarball {
        Some((source, _)) => PathBuf::from(format!("--rootfs-tarball {source}")),
        None => stage1.tar.clone(),
    };
    let mut tree = TarTree::open_as(&stage1.tar, &shown)?;
    if let Some((_, inputs)) = &base_input
        && let Some(why) = b.shared_base_misfits(&stage1, &tree)
    {
        drop(tree);
        // Its shared lock is no longer needed.
        let shared = stage1
            .base
            .take()
            .map(|base| layer::layer_key(&base.report).to_string())
            .unwrap_or_default();
        let why = format!("board layer {shared} was built for other initramfs modules ({why})");
        stage1 = b.own_device_tree_base(&recipe, &initramfs, inputs, &why, &work)?;
        tree = TarTree::open(&stage1.tar)?;
    }
    let config = Configuration {
        recipe: &recipe,
        vars: &vars,
        layout: &layout,
        password_hash: &supplied.password_hash,
        artifacts,
        strict: supplied.tarball.is_none(),
    };
    let configured = b.configure(&mut tree, config, &mut initramfs, stage1.hooked)?;

    on(RootfsEvent::Phase("writing the root filesystem"));
    let (contents, size_bytes) = dest.write(tree, &work, req.epoch, req.world_readable)?;
    // The base (and its lock) is no longer read.
    let (downloads, log, base_report) = match stage1.base {
        Some(base) => (base.downloads, base.log, Some(base.report)),
        None => Default::default(),
    };
    let secret_files = commit_secrets(pending_secrets, &supplied.secrets)?;
    drop(work);
    created.keep();

    Ok(RootfsReport {
        board: profile.name.clone(),
        arch: profile.arch.debian().into(),
        output: dest.out,
        format: if dest.as_tar { "tar" } else { "directory" },
        source: stage1.source,
        suite: recipe.apt.suite.clone(),
        features: recipe.features.clone(),
        kernel_fragments: recipe.kernel_fragments.clone(),
        packages_requested: recipe.apt.packages.len(),
        downloads,
        cache: base_input.is_some().then(|| req.cache.clone()),
        base: base_report,
        log,
        hostname,
        user: configured.customized.user,
        fstab: configured.customized.fstab,
        enabled: configured.customized.enabled,
        boot: configured.boot,
        initramfs: configured.initramfs,
        checks: configured.checks,
        contents,
        size_bytes,
        epoch: req.epoch,
        seconds: started.elapsed().as_secs_f64(),
        warnings: b.warnings,
        secret_files,
    })
}

/// One build's fixed inputs, and the warnings it collects.
struct Build<'a> {
    profile: &'a Profile,
    req: &'a RootfsRequest,
    on: &'a dyn Fn(RootfsEvent<'_>),
    warnings: Vec<String>,
}

/// Stage 1's result: the base tarball, and how it was had.
struct Stage1 {
    /// The base from mmdebstrap (held while it is read); None for a prebuilt tarball.
    base: Option<Base>,
    /// The tarball stage 2 starts from.
    tar: PathBuf,
    /// For the report: where the base came from.
    source: String,
    /// Whether the base ran the initramfs customize hook (then it must hold every derived module).
    hooked: bool,
}

/// What stage 2 applies to the base.
struct Configuration<'a> {
    recipe: &'a Recipe,
    vars: &'a customize::Vars,
    layout: &'a Layout,
    password_hash: &'a str,
    /// (destination in the tree, contents, mode).
    artifacts: Vec<(String, Vec<u8>, u32)>,
    /// A Debian build must have everything the recipe wants; a prebuilt tarball only gets warnings.
    strict: bool,
}

/// Stage 2's result.
struct Configured {
    customized: customize::Customized,
    initramfs: Option<crate::rootmods::Report>,
    checks: usize,
    boot: BootFiles,
}

impl Build<'_> {
    fn warn(&mut self, w: String) {
        (self.on)(RootfsEvent::Warning(&w));
        self.warnings.push(w);
    }

    /// Stage 1 for a Debian build: the base through the cache (or built for `--no-cache`).
    fn debian_base(
        &mut self,
        plan: &BasePlan,
        inputs: &cache::KeyInputs,
        work: &WorkDir,
    ) -> Result<Stage1, RootfsError> {
        let base = layer::stage(
            self.profile,
            plan,
            inputs,
            self.req,
            work.path(),
            self.on,
            &mut self.warnings,
        )?;
        Ok(Stage1 {
            tar: base.tar.clone(),
            source: format!(
                "mmdebstrap {} from {} ({})",
                plan.apt.suite,
                plan.mirror,
                layer::describe(&base.report)
            ),
            hooked: plan.initramfs_hook.is_some(),
            base: Some(base),
        })
    }

    /// A shared board layer's key leaves the device tree out: a hit made by the customize hook is this
    /// board's only if the modules derived for this board's device tree are those its initramfs was made
    /// with. Why not, when it is not.
    fn shared_base_misfits(&self, stage1: &Stage1, tree: &TarTree) -> Option<String> {
        let base = stage1.base.as_ref()?;
        if !layer::is_hit(&base.report) || !stage1.hooked {
            return None;
        }
        base_modules_differ(self.profile, tree)
    }

    /// The board layer of this board's own device tree (its own key, built once like any other, on the
    /// base), in place of a shared layer that does not fit (`why`: which layer, and how).
    fn own_device_tree_base(
        &mut self,
        recipe: &Recipe,
        initramfs: &[(String, String)],
        shared: &cache::KeyInputs,
        why: &str,
        work: &WorkDir,
    ) -> Result<Stage1, RootfsError> {
        self.warn(format!(
            "{why}: using a layer of {}'s device tree",
            self.profile.name
        ));
        let plan = base_plan(self.profile, recipe, self.req, initramfs, true)?;
        let facts = cache::Facts {
            mmdebstrap: shared.mmdebstrap.clone(),
            keyring: shared.keyring.clone(),
            archive: shared.archive.clone(),
            epoch: shared.epoch,
        };
        let inputs = cache::KeyInputs::new(&plan, &facts);
        let mut stage1 = self.debian_base(&plan, &inputs, work)?;
        if let Some(base) = &stage1.base {
            stage1.source = format!(
                "mmdebstrap {} from {} ({}, of its device tree)",
                plan.apt.suite,
                plan.mirror,
                layer::describe(&base.report)
            );
        }
        Ok(stage1)
    }

    /// Stage 2: the initramfs modules, the configuration (users, files, fstab, services), the recipe's
    /// checks and the boot files. A prebuilt tarball gets warnings where a Debian build fails.
    fn configure(
        &mut self,
        tree: &mut TarTree,
        config: Configuration<'_>,
        initramfs: &mut Vec<(String, String)>,
        hooked: bool,
    ) -> Result<Configured, RootfsError> {
        let initramfs_report = initramfs_modules(
            self.profile,
            tree,
            initramfs,
            hooked,
            self.on,
            &mut self.warnings,
        )?;
        let recipe = config.recipe;
        let customized = customize::apply(
            tree,
            recipe,
            &customize::Inputs {
                board: &self.profile.name,
                epoch: self.req.epoch,
                password_hash: config.password_hash,
                expire_password: recipe.expire_password,
                vars: config.vars,
                layout: config.layout,
                artifacts: config.artifacts,
                initramfs: std::mem::take(initramfs),
                strict: config.strict,
            },
        )?;
        for w in &customized.warnings {
            self.warn(w.clone());
        }
        (self.on)(RootfsEvent::Phase("checking the result"));
        let checks = match customize::run_checks(tree, recipe, config.vars) {
            Ok(n) => n,
            // A foreign tarball need not have what the Debian recipe checks for: report, do not fail.
            Err(e) if !config.strict => {
                self.warn(format!("{e} (not fatal for a prebuilt tarball)"));
                0
            }
            Err(e) => return Err(e.into()),
        };
        let boot = if config.strict {
            check_boot_files(tree, self.profile)?
        } else {
            // A foreign tarball may carry its own boot arrangement; report what is there.
            check_boot_files(tree, self.profile).unwrap_or(BootFiles {
                kernel: String::new(),
                initrd: None,
                dtb: None,
                bootloader: None,
            })
        };
        Ok(Configured {
            customized,
            initramfs: initramfs_report,
            checks,
            boot,
        })
    }
}

/// The artifacts the features need, fetched into the work directory and checked against their sums:
/// (destination in the tree, contents, mode).
fn fetch_artifacts(
    plan: &[(ArtifactSpec, String, String)],
    work: &WorkDir,
    on: &dyn Fn(RootfsEvent<'_>),
) -> Result<Vec<(String, Vec<u8>, u32)>, RootfsError> {
    let mut artifacts = Vec::new();
    for (a, source, sha) in plan {
        on(RootfsEvent::Phase(&format!(
            "fetching {} ({})",
            a.name, a.description
        )));
        let dest = work.path().join(format!("artifact-{}", a.name));
        fetch::fetch_verified(
            &format!("{} {source}", artifact_flags(&a.name).0),
            source,
            sha,
            &dest,
        )?;
        let data = std::fs::read(&dest).map_err(io(format!("reading {}", dest.display())))?;
        artifacts.push((a.dest.clone(), data, a.mode));
    }
    Ok(artifacts)
}

/// Stage 1 for `--rootfs-tarball`: fetched, checked against its sum and decompressed into the work
/// directory.
fn prebuilt_base(
    source: &str,
    sha: &str,
    work: &WorkDir,
    on: &dyn Fn(RootfsEvent<'_>),
) -> Result<Stage1, RootfsError> {
    on(RootfsEvent::Phase("fetching the root filesystem tarball"));
    let tar = work.path().join("source.tar");
    let dl = work.path().join("source.download");
    fetch::fetch_verified_noting(
        &format!("--rootfs-tarball {source}"),
        source,
        sha,
        &dl,
        &|m| on(RootfsEvent::Warning(m)),
    )?;
    fetch::decompress_tarball("--rootfs-tarball", &dl, &tar)?;
    Ok(Stage1 {
        base: None,
        tar,
        source: format!("tarball {source}"),
        hooked: false,
    })
}
