//! The initramfs of the emulated machine: the runner as `/init`, its arguments, and the guest
//! payloads it loads into the nested VMs.

use std::io::BufWriter;
use std::path::Path;

use crate::cpio::CpioWriter;
use crate::error::{bail, Context, Result};

/// Where the runner finds its arguments, one per line.
pub const ARGS_PATH: &str = "/mte/args";
/// Where the runner finds the bare-metal payload.
pub const PAYLOAD_PATH: &str = "/mte/payloads/mte-guest.elf";

/// The runner's arguments: the lane, then the harness arguments as the person gave them.
/// (What xtask knows of the kernel package goes into the run's environment, not to the runner.)
pub fn runner_args(harness_args: &[String]) -> Vec<String> {
    let mut args = vec!["--lane".to_string(), "emulated".to_string()];
    args.extend(harness_args.iter().cloned());
    args
}

/// The text of [`ARGS_PATH`]: one argument a line, so an argument cannot hold a newline.
pub fn args_file(args: &[String]) -> Result<String> {
    let mut text = String::new();
    for arg in args {
        if arg.contains('\n') {
            bail!(
                "harness argument {arg:?} holds a newline, which the in-guest argument file \
                 cannot carry"
            );
        }
        text.push_str(arg);
        text.push('\n');
    }
    Ok(text)
}

/// Write the initramfs to `out`; returns its size in bytes.
pub fn write(out: &Path, runner: &Path, payload: &Path, args: &[String]) -> Result<u64> {
    let runner_bytes =
        std::fs::read(runner).with_context(|| format!("reading {}", runner.display()))?;
    let payload_bytes =
        std::fs::read(payload).with_context(|| format!("reading {}", payload.display()))?;
    let args_text = args_file(args)?;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut cpio = CpioWriter::new(BufWriter::new(file));
    for dir in ["/dev", "/proc", "/sys", "/mte", "/mte/payloads"] {
        cpio.directory(dir, 0o755)?;
    }
    // The kernel gives /init its console through this node, before devtmpfs can be mounted.
    cpio.char_device("/dev/console", 0o600, 5, 1)?;
    cpio.file("/init", 0o755, &runner_bytes)?;
    cpio.file(ARGS_PATH, 0o644, args_text.as_bytes())?;
    cpio.file(PAYLOAD_PATH, 0o644, &payload_bytes)?;
    cpio.finish()?
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    Ok(std::fs::metadata(out)?.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_args_start_with_the_lane_and_keep_harness_args_verbatim() {
        let harness = vec![
            "tags::".to_string(),
            "--exact".to_string(),
            "--inject".to_string(),
            "drop".to_string(),
        ];
        assert_eq!(
            runner_args(&harness),
            ["--lane", "emulated", "tags::", "--exact", "--inject", "drop"]
        );
        assert_eq!(runner_args(&[]), ["--lane", "emulated"]);
    }

    #[test]
    fn args_file_is_one_argument_a_line() {
        let args = vec![
            "--lane".to_string(),
            "emulated".to_string(),
            "a b".to_string(),
        ];
        assert_eq!(args_file(&args).unwrap(), "--lane\nemulated\na b\n");
        assert!(args_file(&["a\nb".to_string()]).is_err());
    }
}
