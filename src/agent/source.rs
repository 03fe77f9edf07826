//! Where GPU readings come from: the [`GpuSource`] trait, plus `vfio-pci` discovery in sysfs.
//!
//! A source only reads devices. It does not stamp the node name or the time, does not grade
//! health and does not track XIDs across samples: the agent's sampler does that, identically
//! for every source. Sources block (FFI, file reads), so the agent calls them off the async
//! runtime.

use std::fs;
use std::io;
use std::path::Path;

use super::snapshot::{NodeSample, VfioDevice};

/// A blocking producer of node samples (NVML, a replayed script, a test double).
pub trait GpuSource: Send + 'static {
    /// Takes one sample. Never fails: problems are reported inside the sample
    /// (`nvmlAvailable`, `unsupported`, `errors`). Called from a blocking thread.
    fn sample(&mut self) -> NodeSample;
}

/// PCI class prefix of display controllers (VGA `0x0300`, 3D `0x0302`): a GPU, as opposed
/// to the audio or USB functions that are usually bound to `vfio-pci` alongside it.
const DISPLAY_CLASS_PREFIX: &str = "0x03";

/// Lists the GPUs bound to `vfio-pci`, reading `<sysfs_root>/bus/pci/drivers/vfio-pci/`.
///
/// A missing driver folder means the module is not loaded: an empty list, not an error.
/// Entries that are not PCI addresses (`bind`, `new_id`, `module`, ...) are skipped, and so
/// are functions whose class is not a display controller. Sorted by address.
pub fn discover_vfio(sysfs_root: &Path) -> io::Result<Vec<VfioDevice>> {
    let driver = sysfs_root.join("bus/pci/drivers/vfio-pci");
    let entries = match fs::read_dir(&driver) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut devices = Vec::new();
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if !is_pci_address(&name) {
            continue;
        }
        let dir = driver.join(&name);
        if !read_attr(&dir, "class")?.starts_with(DISPLAY_CLASS_PREFIX) {
            continue;
        }
        devices.push(VfioDevice {
            vendor_id: read_attr(&dir, "vendor")?,
            device_id: read_attr(&dir, "device")?,
            pci_address: name,
        });
    }
    devices.sort_by(|a, b| a.pci_address.cmp(&b.pci_address));
    Ok(devices)
}

fn read_attr(dir: &Path, name: &str) -> io::Result<String> {
    let path = dir.join(name);
    let text = fs::read_to_string(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    Ok(text.trim().to_string())
}

/// `dddd:bb:dd.f` with hex digits.
fn is_pci_address(name: &str) -> bool {
    let hex = |s: &str, len: usize| s.len() == len && s.chars().all(|c| c.is_ascii_hexdigit());
    let mut parts = name.split([':', '.']);
    let shape = [4, 2, 2, 1];
    shape
        .iter()
        .all(|&len| parts.next().is_some_and(|p| hex(p, len)))
        && parts.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_device(root: &Path, addr: &str, class: &str, vendor: &str, device: &str) {
        let dir = root.join("bus/pci/drivers/vfio-pci").join(addr);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("class"), format!("{class}\n")).unwrap();
        fs::write(dir.join("vendor"), format!("{vendor}\n")).unwrap();
        fs::write(dir.join("device"), format!("{device}\n")).unwrap();
    }

    fn temp_root(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("rota-vfio-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn finds_gpus_bound_to_vfio_and_skips_other_functions() {
        let root = temp_root("found");
        write_device(&root, "0000:ca:00.0", "0x030200", "0x10de", "0x2236");
        write_device(&root, "0000:17:00.0", "0x030000", "0x10de", "0x1eb8");
        // The GPU's HDMI audio function travels with it but is not a GPU.
        write_device(&root, "0000:ca:00.1", "0x040300", "0x10de", "0x1aef");
        let driver = root.join("bus/pci/drivers/vfio-pci");
        fs::write(driver.join("new_id"), "").unwrap();
        fs::create_dir_all(driver.join("module")).unwrap();

        let found = discover_vfio(&root).unwrap();
        let addrs: Vec<&str> = found.iter().map(|d| d.pci_address.as_str()).collect();
        assert_eq!(addrs, vec!["0000:17:00.0", "0000:ca:00.0"]);
        assert_eq!(found[1].vendor_id, "0x10de");
        assert_eq!(found[1].device_id, "0x2236");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn missing_driver_folder_is_an_empty_list() {
        let root = temp_root("absent");
        assert_eq!(discover_vfio(&root).unwrap(), Vec::new());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn unreadable_attribute_is_an_error_naming_the_file() {
        let root = temp_root("broken");
        let dir = root.join("bus/pci/drivers/vfio-pci/0000:01:00.0");
        fs::create_dir_all(&dir).unwrap();
        let err = discover_vfio(&root).unwrap_err();
        assert!(err.to_string().contains("0000:01:00.0/class"), "{err}");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn pci_address_shape() {
        assert!(is_pci_address("0000:ca:00.0"));
        assert!(!is_pci_address("bind"));
        assert!(!is_pci_address("0000:ca:00"));
        assert!(!is_pci_address("0000:ca:00.0.1"));
        assert!(!is_pci_address("000g:ca:00.0"));
    }
}
