//! The phandle references of a node (`*-supply`, `clocks`, `resets`, GPIOs, DMA, ...), and the
//! subsystem a reference into an MFD needs a cell driver from.

use super::super::fdt::DeviceTree;

/// The subsystem a reference needs from an MFD (its cell drivers live there).
pub(super) fn cell_dirs(prop: &str) -> Option<(&'static str, &'static [&'static str])> {
    let class: (&str, &[&str]) = if prop.ends_with("-supply") {
        ("regulator", &["/drivers/regulator/"])
    } else if prop.starts_with("assigned-clock") || prop == "clocks" {
        ("clock", &["/drivers/clk/"])
    } else if is_gpio_prop(prop) {
        ("GPIO", &["/drivers/gpio/", "/drivers/pinctrl/"])
    } else if prop == "resets" {
        ("reset", &["/drivers/reset/"])
    } else if prop == "phys" {
        ("PHY", &["/drivers/phy/"])
    } else if prop == "pwms" {
        ("PWM", &["/drivers/pwm/"])
    } else if prop == "power-domains" {
        ("power domain", &["/drivers/soc/", "/drivers/pmdomain/"])
    } else {
        return None;
    };
    Some(class)
}

fn is_gpio_prop(name: &str) -> bool {
    (name == "gpios" || name == "gpio" || name.ends_with("-gpios") || name.ends_with("-gpio"))
        && !name.ends_with("nr-gpios")
}

/// The `#...-cells` property giving the argument count after each phandle, for the properties that
/// are phandle-with-arguments lists; `Some("")` for plain phandle lists, `None` for anything else.
fn cells_prop(name: &str) -> Option<&'static str> {
    if name.starts_with('#') {
        return None;
    }
    Some(match name {
        "clocks" | "assigned-clocks" | "assigned-clock-parents" => "#clock-cells",
        "resets" => "#reset-cells",
        "phys" => "#phy-cells",
        "power-domains" => "#power-domain-cells",
        "dmas" => "#dma-cells",
        "iommus" => "#iommu-cells",
        "interconnects" => "#interconnect-cells",
        "mboxes" => "#mbox-cells",
        "pwms" => "#pwm-cells",
        "interrupts-extended" => "#interrupt-cells",
        "interrupt-parent" | "mmc-pwrseq" | "nvmem-cells" => "",
        n if n.ends_with("-supply") => "",
        n if n.starts_with("pinctrl-")
            && n[8..].chars().all(|c| c.is_ascii_digit())
            && n.len() > 8 =>
        {
            ""
        }
        n if is_gpio_prop(n) => "#gpio-cells",
        _ => return None,
    })
}

/// Phandle references of a node: (property, target node), and problems found reading them.
pub(super) fn references(tree: &DeviceTree, node: usize) -> (Vec<(String, usize)>, Vec<String>) {
    let mut refs = Vec::new();
    let mut problems = Vec::new();
    for (name, value) in &tree.node(node).props {
        let Some(cells_name) = cells_prop(name) else {
            continue;
        };
        let cells: Vec<u32> = value
            .chunks(4)
            .map(|c| {
                let mut b = [0u8; 4];
                b[..c.len()].copy_from_slice(c);
                u32::from_be_bytes(b)
            })
            .collect();
        if value.len() % 4 != 0 {
            problems.push(format!("`{name}` is not a list of 32-bit cells"));
            continue;
        }
        let single =
            name.ends_with("-supply") || name == "interrupt-parent" || name == "mmc-pwrseq";
        let mut i = 0;
        while i < cells.len() {
            let ph = cells[i];
            i += 1;
            if ph == 0 {
                continue;
            }
            let Some(target) = tree.by_phandle(ph) else {
                problems.push(format!("`{name}` names phandle {ph:#x}, which no node has"));
                break;
            };
            refs.push((name.clone(), target));
            if single {
                break;
            }
            if !cells_name.is_empty() {
                match tree.node(target).u32_prop(cells_name) {
                    Some(n) if n <= 32 => i += n as usize,
                    Some(n) => {
                        problems.push(format!(
                            "`{name}`: {} has {cells_name} = {n}",
                            tree.node(target).name
                        ));
                        break;
                    }
                    None => {
                        problems.push(format!(
                            "`{name}`: {} has no {cells_name}",
                            tree.node(target).name
                        ));
                        break;
                    }
                }
            }
        }
    }
    // An `interrupts` property without its own parent uses the nearest ancestor's `interrupt-parent`.
    let n = tree.node(node);
    if n.prop("interrupts").is_some()
        && n.prop("interrupt-parent").is_none()
        && n.prop("interrupts-extended").is_none()
        && let Some(ph) = tree
            .ancestors(node)
            .find_map(|a| tree.node(a).u32_prop("interrupt-parent"))
    {
        match tree.by_phandle(ph) {
            Some(t) => refs.push(("interrupt-parent (inherited)".into(), t)),
            None => problems.push(format!(
                "inherited interrupt-parent names phandle {ph:#x}, which no node has"
            )),
        }
    }
    (refs, problems)
}
