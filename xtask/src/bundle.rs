//! `bundle`: the suite for a device without Rust, as one tarball: the static aarch64 runner,
//! the guest payload beside it (where the runner looks by default) and `run.sh`, the POSIX sh
//! driver that runs the host lane and saves the runner's record stream with the device's facts
//! (`lab/bundle/run.sh`). `cargo xtask import` turns what it saves into a run directory.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use flate2::write::GzEncoder;
use flate2::Compression;

use crate::apt::Apt;
use crate::build::{self, relative, repo_root};
use crate::tools;
use crate::ui;
use crate::Status;

/// The driver, as it goes into the bundle.
pub const DRIVER: &str = include_str!("../../lab/bundle/run.sh");
/// The bundle's top directory: everything unpacks under it.
pub const TOP: &str = "mte-suite";
/// Where `bundle` writes the tarball unless told.
const DEFAULT_OUT: &str = "target/mte-bundle/mte-suite-arm64.tar.gz";

/// What goes into a bundle, already built.
pub struct Parts<'a> {
    pub runner: &'a Path,
    pub payload: &'a Path,
    /// The suite's revision, for `VERSION`.
    pub revision: String,
}

impl Parts<'_> {
    /// Each file of the bundle: its path under [`TOP`], its mode and its bytes.
    pub fn files(&self) -> Result<Vec<(String, u32, Vec<u8>)>> {
        let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        Ok(vec![
            ("run.sh".into(), 0o755, DRIVER.as_bytes().to_vec()),
            ("mte-runner".into(), 0o755, read(self.runner)?),
            (
                build::STAGED_PAYLOAD_NAME.into(),
                0o644,
                read(self.payload)?,
            ),
            (
                "VERSION".into(),
                0o644,
                format!("{}\n", self.revision).into_bytes(),
            ),
        ])
    }
}

/// `cargo xtask bundle [--out FILE]`: build, then write the tarball.
pub fn bundle_command(out: Option<&Path>) -> Result<Status> {
    ui::step("tools");
    let cross = tools::ensure_cross(&mut Apt::new()?)?;
    ui::step("build");
    let payload = build::payload(&cross)?;
    let runner = build::runner(&cross)?;
    let out = out.map_or_else(|| repo_root().join(DEFAULT_OUT), PathBuf::from);
    let parts = Parts {
        runner: &runner,
        payload: &payload,
        revision: crate::facts::revision(),
    };
    let size = write_tarball(&out, &parts)?;
    ui::note(&format!(
        "bundle: {} ({}); on the device: tar xzf {} && {TOP}/run.sh --out RUN, then \
         `cargo xtask import RUN` here",
        relative(&out).display(),
        ui::size(size),
        out.file_name().unwrap_or_default().to_string_lossy(),
    ));
    Ok(Status::Clean)
}

/// Write the gzip'd tarball of `parts` to `out`; returns its size.
pub fn write_tarball(out: &Path, parts: &Parts) -> Result<u64> {
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut tar = tar::Builder::new(GzEncoder::new(file, Compression::best()));
    tar.mode(tar::HeaderMode::Deterministic);
    for (name, mode, bytes) in parts.files()? {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(mode);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, format!("{TOP}/{name}"), bytes.as_slice())?;
    }
    let mut gz = tar.into_inner()?;
    gz.flush()?;
    gz.finish()?;
    Ok(std::fs::metadata(out)?.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mte_results::stream::{frame, Record};
    use mte_results::{Lane, Outcome, Tally};

    fn verdict_line(test: &str, outcome: Outcome) -> String {
        let mut v = crate::testing::verdict(test, outcome);
        v.lane = Lane::Host;
        v.reason = "a \"quoted\" reason, \"outcome\":\"fail\"".into();
        frame(&Record::Verdict(v))
    }

    /// The driver's LAVA lines, as a lab's shell runs them.
    #[test]
    fn the_driver_names_lava_cases_from_the_records() {
        let dir = tempfile::tempdir().unwrap();
        let long = format!("migration::{}", "very_long_name_".repeat(8));
        let records = [
            "[ 1.0] kernel noise".to_string(),
            verdict_line("tags::a", Outcome::Pass),
            verdict_line("faults::b", Outcome::Fail),
            verdict_line("mm::c", Outcome::Xfail),
            verdict_line("fault_injection::corrupt_tag::mm::c", Outcome::Xfail),
            verdict_line(&long, Outcome::Skip),
            frame(&Record::Done {
                tally: Tally::default(),
                wall_ms: 1.0,
            }),
        ];
        std::fs::write(dir.path().join("records"), records.join("\n")).unwrap();
        let release = dir.path().join("device/proc/sys/kernel");
        std::fs::create_dir_all(&release).unwrap();
        std::fs::write(release.join("osrelease"), "6.12.95+deb12-arm64\n").unwrap();
        let script = dir.path().join("run.sh");
        std::fs::write(&script, DRIVER).unwrap();
        let output = std::process::Command::new("sh")
            .arg(&script)
            .arg("lava")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        let text = String::from_utf8(output.stdout).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "lava-test-set start host-6.12.95_deb12-arm64");
        assert_eq!(lines[1], "lava-test-case tags.a --result pass");
        assert_eq!(lines[2], "lava-test-case faults.b --result fail");
        assert_eq!(lines[3], "lava-test-case mm.c --result pass");
        assert_eq!(
            lines[4],
            "lava-test-case fault_injection.corrupt_tag.mm.c --result skip"
        );
        let name = lines[5].split(' ').nth(1).unwrap();
        assert!(
            name.len() <= 99 && name.starts_with("migration.very_long"),
            "{name}"
        );
        assert_eq!(lines[6], "lava-test-set stop");
        assert_eq!(lines.len(), 7);
    }

    #[test]
    fn the_tarball_holds_the_driver_runner_and_payload_under_one_directory() {
        let dir = tempfile::tempdir().unwrap();
        let (runner, payload) = (dir.path().join("r"), dir.path().join("p"));
        std::fs::write(&runner, b"runner").unwrap();
        std::fs::write(&payload, b"payload").unwrap();
        let out = dir.path().join("b.tar.gz");
        let parts = Parts {
            runner: &runner,
            payload: &payload,
            revision: "v1".into(),
        };
        write_tarball(&out, &parts).unwrap();
        let file = std::fs::File::open(&out).unwrap();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
        let mut names: Vec<(String, u32)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let name = e.path().unwrap().display().to_string();
                (name, e.header().mode().unwrap())
            })
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                ("mte-suite/VERSION".to_string(), 0o644),
                ("mte-suite/mte-guest.elf".to_string(), 0o644),
                ("mte-suite/mte-runner".to_string(), 0o755),
                ("mte-suite/run.sh".to_string(), 0o755),
            ]
        );
    }
}
