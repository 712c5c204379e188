//! Where external programs are: one lookup for every module. An executable file (the `which` crate
//! checks the execute permission, as a shell does) in PATH; system tools (e2fsck, resize2fs, losetup,
//! depmod) also in /usr/sbin and /sbin, which are not in every user's PATH.

use std::path::PathBuf;

/// `name` in PATH, if an executable file of that name is there.
pub fn which(name: &str) -> Option<PathBuf> {
    which::which(name).ok()
}

/// A system tool: PATH, then /usr/sbin and /sbin.
pub fn system_tool(name: &str) -> Option<PathBuf> {
    which(name).or_else(|| which::which_in(name, Some("/usr/sbin:/sbin"), "/").ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn only_executable_files_are_found() {
        let (d, tool) = crate::testutil::scratch("boardsmith-test-tool");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o644)).unwrap();
        let path = std::env::join_paths([d.path()]).unwrap();
        let find = || which::which_in("boardsmith-test-tool", Some(&path), "/").ok();
        assert_eq!(find(), None, "a file without the execute bit is no program");
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find(), Some(tool));
        assert!(which("sh").is_some());
        assert!(system_tool("boardsmith-no-such-tool").is_none());
    }
}
