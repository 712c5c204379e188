//! Data files compiled into the binary (see build.rs): board profiles, kernel config fragments, rootfs recipes.

mod generated {
    include!(concat!(env!("OUT_DIR"), "/embedded.rs"));
}

/// Contents of an embedded file by its repository path, e.g. `boards/cubieboard.toml`.
pub fn get(path: &str) -> Option<&'static [u8]> {
    generated::FILES
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, data)| *data)
}

/// Embedded files directly inside `dir` (not in subdirectories), sorted by path.
pub fn list(dir: &str) -> impl Iterator<Item = (&'static str, &'static [u8])> {
    let prefix = format!("{}/", dir.trim_end_matches('/'));
    generated::FILES.iter().filter_map(move |(p, data)| {
        let rest = p.strip_prefix(&prefix)?;
        (!rest.contains('/')).then_some((*p, *data))
    })
}
