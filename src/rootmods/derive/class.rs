//! Which storage class a controller is (MMC, USB, SATA, virtio, PCI), by node name or driver path.

use super::super::fdt::DeviceTree;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Class {
    Mmc,
    Usb,
    Sata,
    Virtio,
    Pci,
}

pub(super) fn class_by_name(tree: &DeviceTree, i: usize) -> Option<Class> {
    let n = tree.node(i);
    if n.strings("compatible").iter().any(|c| c == "virtio,mmio") {
        return Some(Class::Virtio);
    }
    if n.strings("device_type").iter().any(|t| t == "pci") {
        return Some(Class::Pci);
    }
    match n.base_name() {
        "mmc" | "sdhci" | "dwmmc" | "mshc" | "sdmmc" => Some(Class::Mmc),
        "usb" => Some(Class::Usb),
        "sata" | "ahci" => Some(Class::Sata),
        "virtio" => Some(Class::Virtio),
        "pcie" | "pci" => Some(Class::Pci),
        _ => None,
    }
}

pub(super) fn class_by_path(path: &str) -> Option<Class> {
    const USB: [&str; 6] = [
        "/drivers/usb/host/",
        "/drivers/usb/musb/",
        "/drivers/usb/dwc2/",
        "/drivers/usb/dwc3/",
        "/drivers/usb/chipidea/",
        "/drivers/usb/cdns3/",
    ];
    if path.contains("/drivers/mmc/host/") {
        Some(Class::Mmc)
    } else if USB.iter().any(|d| path.contains(d)) {
        Some(Class::Usb)
    } else if path.contains("/drivers/ata/") {
        Some(Class::Sata)
    } else if path.contains("/drivers/virtio/") {
        Some(Class::Virtio)
    } else if path.contains("/drivers/pci/controller/") {
        Some(Class::Pci)
    } else {
        None
    }
}

/// Whether an MMC host carries an SDIO function (Wi-Fi) rather than a card.
pub(super) fn is_sdio(tree: &DeviceTree, i: usize) -> bool {
    let n = tree.node(i);
    n.prop("cap-sdio-irq").is_some()
        || n.children.iter().any(|&c| {
            let cc = tree.node(c).strings("compatible");
            !cc.is_empty() && !cc.iter().any(|x| x == "mmc-card")
        })
}
