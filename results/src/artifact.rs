//! Artifacts: files a check hands to the host side (as [`crate::stream::Record::Artifact`]),
//! which keeps them in the run directory and passes them on to the next kernel of the run. A
//! migration stream saved on one kernel is restored on the next this way.

/// Where kept artifacts go in a run directory: `artifacts/boot<N>-<kernel release>/<name>`,
/// a folder a boot (a kernel booted twice saves twice).
pub const RUN_DIR_FOLDER: &str = "artifacts";
/// Where the emulated machine finds the artifacts of the kernel booted before it.
pub const INCOMING_DIR: &str = "/mte/incoming";
/// The file in [`INCOMING_DIR`] that names the kernel release the artifacts came from.
pub const SAVED_ON_FILE: &str = "saved-on";
/// The word on the emulated machine's kernel command line that tells its runner a next kernel
/// of the run takes its artifacts. Without it none is sent: nothing would read it, and the
/// saved migration stream (330 KB) takes more than a second over the console.
pub const NEXT_KERNEL_WORD: &str = "mte_suite.next_kernel=1";

/// Why `name` cannot be an artifact's name: it must be one plain file name (letters, digits,
/// `_`, `-`, `.`, not starting with a dot), so that it can neither leave its folder nor take
/// the place of [`SAVED_ON_FILE`].
pub fn check_name(name: &str) -> Result<(), String> {
    let plain = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if name.is_empty() || name.len() > 100 || !plain || name.starts_with('.') {
        return Err(format!(
            "artifact name {name:?} is not a plain file name (letters, digits, _ - ., at most \
             100, not starting with a dot)"
        ));
    }
    if name == SAVED_ON_FILE {
        return Err(format!("artifact name {name:?} is reserved"));
    }
    Ok(())
}

/// A kernel release as one folder name: anything but letters, digits and `._+-` becomes `_`.
pub fn kernel_folder(release: &str) -> String {
    let folder: String = release
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    // No `.` or `..`, nor a hidden folder.
    match folder.trim_start_matches('.') {
        "" => "unknown-kernel".into(),
        trimmed => trimmed.into(),
    }
}

/// Where an artifact of boot `boot` is kept, relative to the run directory.
pub fn kept_path(boot: u32, kernel_release: &str, name: &str) -> String {
    format!(
        "{RUN_DIR_FOLDER}/boot{boot}-{}/{name}",
        kernel_folder(kernel_release)
    )
}

/// Where the next kernel's machine finds an artifact.
pub fn incoming_path(name: &str) -> String {
    format!("{INCOMING_DIR}/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_file_names() {
        for good in ["sparse-tags.stream", "a", "x_1.bin"] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "../x",
            "a/b",
            ".hidden",
            "sp ace",
            SAVED_ON_FILE,
            &"n".repeat(101),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn artifacts_are_kept_by_boot_and_arrive_in_the_incoming_folder() {
        assert_eq!(
            kept_path(1, "6.1.0-56-arm64", "sparse-tags.stream"),
            "artifacts/boot1-6.1.0-56-arm64/sparse-tags.stream"
        );
        assert_eq!(
            kept_path(3, "6.1.0-56-arm64", "sparse-tags.stream"),
            "artifacts/boot3-6.1.0-56-arm64/sparse-tags.stream"
        );
        assert_eq!(kernel_folder("../evil kernel"), "_evil_kernel");
        assert_eq!(kernel_folder(""), "unknown-kernel");
        assert_eq!(
            incoming_path("sparse-tags.stream"),
            "/mte/incoming/sparse-tags.stream"
        );
    }
}
