//! What `--yes` confirms: a partition, a disk that is not removable, or a removable one over 128 GB.

use super::super::blockdev::{DiskInfo, LARGE_REMOVABLE};
use super::{TargetError, describe_device};

/// The media and size checks `--yes` overrides: a partition, a disk that is not removable, or a
/// removable one larger than 128 GB.
pub fn confirmation(
    path: &str,
    info: &DiskInfo,
    capacity: u64,
    yes: bool,
) -> Result<(), TargetError> {
    if yes {
        return Ok(());
    }
    let desc = describe_device(info, capacity);
    if info.is_partition {
        return Err(TargetError::Partition {
            path: path.into(),
            disk: info.disk_name.clone(),
        });
    }
    if !info.removable() {
        return Err(TargetError::NotRemovable {
            path: path.into(),
            desc,
            why: info.media.reason(),
        });
    }
    if capacity > LARGE_REMOVABLE {
        return Err(TargetError::LargeRemovable {
            path: path.into(),
            desc,
            why: info.media.reason(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::super::blockdev::{self, fake};
    use super::*;

    /// Disks as sysfs shows them: (name, dev_t).
    fn disks(sys: &Path) -> Vec<(&'static str, u64)> {
        vec![
            ("usb-hdd", fake::usb_disk(sys)),
            ("emmc", fake::emmc(sys)),
            ("sd", fake::sd_card(sys)),
            ("stick", fake::usb_stick(sys)),
            (
                "big-stick",
                fake::add(
                    sys,
                    "devices/pci0000:00/0000:00:14.0/usb2/2-3/2-3:1.0/host8/target8:0:0/8:0:0:0/block/sdd",
                    8,
                    48,
                    &[
                        ("removable", "1"),
                        ("size", "500118192"),
                        ("device/vendor", "SanDisk"),
                        ("device/model", "Extreme Pro"),
                    ],
                ),
            ),
        ]
    }

    fn check(sys: &Path, dev: u64, yes: bool) -> Result<(), TargetError> {
        let info = blockdev::info(sys, dev).unwrap();
        let size = info.size.unwrap();
        confirmation("/dev/x", &info, size, yes)
    }

    #[test]
    fn only_removable_media_up_to_128_gb_go_without_yes() {
        let d = tempfile::tempdir().unwrap();
        let sys = d.path();
        for (name, dev) in disks(sys) {
            let r = check(sys, dev, false);
            let msg = r
                .as_ref()
                .err()
                .map(ToString::to_string)
                .unwrap_or_default();
            match name {
                "usb-hdd" => {
                    assert!(
                        matches!(r, Err(TargetError::NotRemovable { .. })),
                        "{name}: {r:?}"
                    );
                    assert_eq!(
                        msg,
                        "/dev/x (Seagate Expansion Desk, 1.8 TiB, 2000398934016 bytes) is not a removable disk: the kernel reports fixed media (sysfs removable = 0), as for internal disks and USB hard disks; pass --yes if you are sure it may be overwritten"
                    );
                }
                "emmc" => {
                    assert!(
                        matches!(r, Err(TargetError::NotRemovable { .. })),
                        "{name}: {r:?}"
                    );
                    assert_eq!(
                        msg,
                        "/dev/x (DG4016, 14.6 GiB, 15634268160 bytes) is not a removable disk: built-in eMMC flash (sysfs device/type = MMC), not an SD card: it may hold the system; pass --yes if you are sure it may be overwritten"
                    );
                }
                "sd" | "stick" => assert!(r.is_ok(), "{name}: {msg}"),
                "big-stick" => {
                    assert!(
                        matches!(r, Err(TargetError::LargeRemovable { .. })),
                        "{name}: {r:?}"
                    );
                    assert_eq!(
                        msg,
                        "/dev/x (SanDisk Extreme Pro, 238.5 GiB, 256060514304 bytes) is larger than 128 GB: it is removable media (sysfs removable = 1), but at this size it is more likely a backup disk than a card or stick; pass --yes if you are sure it may be overwritten"
                    );
                }
                _ => unreachable!(),
            }
            assert!(check(sys, dev, true).is_ok(), "{name} with --yes");
        }
    }

    #[test]
    fn a_partition_needs_yes_even_on_a_card() {
        let d = tempfile::tempdir().unwrap();
        let sys = d.path();
        disks(sys);
        let p = fake::add(
            sys,
            &format!("{}/mmcblk1p1", fake::SD),
            179,
            257,
            &[("partition", "1"), ("start", "8192"), ("size", "524288")],
        );
        let r = check(sys, p, false);
        assert_eq!(
            r.err().map(|e| e.to_string()).unwrap_or_default(),
            "/dev/x is a partition of /dev/mmcblk1; an image with a partition table belongs on the whole disk (/dev/mmcblk1); pass --yes to write into the partition anyway"
        );
        assert!(check(sys, p, true).is_ok());
    }

    #[test]
    fn the_128_gb_line_is_decimal_and_inclusive() {
        let d = tempfile::tempdir().unwrap();
        let sys = d.path();
        let dev = fake::add(
            sys,
            "devices/virtual/block/sdz",
            8,
            240,
            &[("removable", "1"), ("size", "250000000")],
        );
        let info = blockdev::info(sys, dev).unwrap();
        assert!(confirmation("/dev/sdz", &info, 128_000_000_000, false).is_ok());
        assert!(matches!(
            confirmation("/dev/sdz", &info, 128_000_000_512, false),
            Err(TargetError::LargeRemovable { .. })
        ));
    }
}
