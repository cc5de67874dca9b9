//! Loading the kernel modules xtask packed into the initramfs, in the order it listed them
//! (every dependency before its users).

use std::ffi::CStr;
use std::fs::File;
use std::os::fd::AsRawFd;

/// Load every module `list` names; one line of result per module: its name, or what went
/// wrong. No list means there was nothing to load.
pub fn load_listed(list: &str) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(list) else {
        return Vec::new();
    };
    module_paths(&text)
        .map(|path| {
            let name = module_name(path);
            match load(path) {
                Ok(Loaded::Now) => name.to_string(),
                Ok(Loaded::Already) => format!("{name} (already loaded)"),
                Err(e) => {
                    eprintln!("mte-runner: loading {path}: {e}");
                    format!("{name}: {e}")
                }
            }
        })
        .collect()
}

/// The paths of a module list: one a line, blank lines ignored.
fn module_paths(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(str::trim).filter(|line| !line.is_empty())
}

/// `/lib/modules/6.1.0/kernel/mm/zsmalloc.ko` -> `zsmalloc`.
fn module_name(path: &str) -> &str {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.strip_suffix(".ko").unwrap_or(file)
}

enum Loaded {
    Now,
    Already,
}

fn load(path: &str) -> std::io::Result<Loaded> {
    let file = File::open(path)?;
    const NO_PARAMETERS: &CStr = c"";
    // SAFETY: finit_module reads the open file and the NUL-terminated parameter string.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            file.as_raw_fd(),
            NO_PARAMETERS.as_ptr(),
            0,
        )
    };
    if ret == 0 {
        return Ok(Loaded::Now);
    }
    let error = std::io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::EEXIST) => Ok(Loaded::Already),
        _ => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_one_path_a_line_in_order() {
        let text = "/lib/modules/6.12/kernel/lib/lz4/lz4_compress.ko\n\n\
                    /lib/modules/6.12/kernel/drivers/block/zram/zram.ko\n";
        let names: Vec<&str> = module_paths(text).map(module_name).collect();
        assert_eq!(names, ["lz4_compress", "zram"]);
        assert!(load_listed("/no/such/list").is_empty());
    }
}
