//! Artifacts the runner sends (a migration stream saved on one kernel, say): kept in the run
//! directory under the kernel that made them, and given to the next kernel's machine in its
//! initramfs, with the name of the kernel they came from.

use std::path::{Path, PathBuf};

use mte_results::artifact::{check_name, kept_path, SAVED_ON_FILE};

/// An artifact kept in the run directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kept {
    pub name: String,
    pub path: PathBuf,
    pub bytes: usize,
}

/// Decode an artifact record's bytes and write them to the run directory, under the boot and
/// kernel release that sent them; a later artifact of the same boot and name replaces it.
pub fn keep(
    run_dir: &Path,
    boot: u32,
    kernel_release: &str,
    name: &str,
    base64: &str,
) -> Result<Kept, String> {
    check_name(name)?;
    let bytes = mte_results::base64::decode(base64)
        .map_err(|e| format!("artifact {name} is damaged: {e}"))?;
    let path = run_dir.join(kept_path(boot, kernel_release, name));
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&path, &bytes));
    written.map_err(|e| format!("cannot keep artifact {}: {e}", path.display()))?;
    Ok(Kept {
        name: name.into(),
        path,
        bytes: bytes.len(),
    })
}

/// What one kernel's boot passes on to the next: its release and its artifacts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Incoming {
    pub saved_on: String,
    pub artifacts: Vec<Kept>,
}

impl Incoming {
    /// The files of the next machine's incoming folder, by name: each artifact, and the file
    /// naming the kernel they came from.
    pub fn files(&self) -> std::io::Result<Vec<(String, Vec<u8>)>> {
        let mut files = vec![(
            SAVED_ON_FILE.to_string(),
            format!("{}\n", self.saved_on).into_bytes(),
        )];
        for artifact in &self.artifacts {
            files.push((artifact.name.clone(), std::fs::read(&artifact.path)?));
        }
        Ok(files)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifacts_are_kept_under_their_kernel_and_passed_on_with_its_name() {
        let root = std::env::temp_dir().join(format!("mte-artifacts-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let bytes: Vec<u8> = (0..=255u8).collect();
        let base64 = mte_results::base64::encode(&bytes);
        let kept = keep(&root, 1, "6.1.0-56-arm64", "s.stream", &base64).unwrap();
        assert_eq!(
            kept.path,
            root.join("artifacts/boot1-6.1.0-56-arm64/s.stream")
        );
        assert_eq!(kept.bytes, 256);
        let incoming = Incoming {
            saved_on: "6.1.0-56-arm64".into(),
            artifacts: vec![kept],
        };
        let files = incoming.files().unwrap();
        assert_eq!(files[0], ("saved-on".into(), b"6.1.0-56-arm64\n".to_vec()));
        assert_eq!(files[1], ("s.stream".into(), bytes));
        assert!(keep(&root, 1, "6.1", "../escape", &base64).is_err());
        assert!(keep(&root, 1, "6.1", "s.stream", "not base64!")
            .unwrap_err()
            .contains("damaged"));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
