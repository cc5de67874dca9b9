//! criterion's files for one benchmark, read back from criterion's output directory:
//! `<directory>/new/{benchmark,estimates,sample}.json`, where `benchmark.json` names the
//! benchmark's full id (criterion derives the directory from it, made safe for file systems).

use std::path::Path;

use mte_results::bench::CriterionFiles;
use serde_json::Value;

/// The files of the benchmark whose id is `id`, below `output`.
pub fn find(output: &Path, id: &str) -> Option<CriterionFiles> {
    let mut pending = vec![output.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            if path.file_name().is_some_and(|name| name == "new") {
                let read = |name: &str| -> Option<Value> {
                    let bytes = std::fs::read(path.join(name)).ok()?;
                    serde_json::from_slice(&bytes).ok()
                };
                let Some(benchmark) = read("benchmark.json") else {
                    continue;
                };
                if benchmark.get("full_id").and_then(Value::as_str) != Some(id) {
                    continue;
                }
                let directory = dir
                    .strip_prefix(output)
                    .ok()?
                    .to_string_lossy()
                    .into_owned();
                return Some(CriterionFiles {
                    directory,
                    benchmark,
                    estimates: read("estimates.json")?,
                    sample: read("sample.json")?,
                });
            }
            pending.push(path);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn files_are_found_by_the_id_their_benchmark_json_names() {
        let output =
            std::env::temp_dir().join(format!("mte-criterion-files-{}", std::process::id()));
        let write = |dir: &str, id: &str| {
            let new = output.join(dir).join("new");
            std::fs::create_dir_all(&new).unwrap();
            let files = [
                (
                    "benchmark.json",
                    json!({"full_id": id, "directory_name": dir}),
                ),
                ("estimates.json", json!({"median": {"point_estimate": 1.0}})),
                ("sample.json", json!({"iters": [1.0], "times": [1.0]})),
            ];
            for (name, value) in files {
                std::fs::write(new.join(name), value.to_string()).unwrap();
            }
        };
        write("copy_tags/from_guest/4 KiB", "copy_tags/from_guest/4 KiB");
        write("a_b/c/d", "a:b/c/d");
        let found = find(&output, "a:b/c/d").unwrap();
        assert_eq!(found.directory, "a_b/c/d");
        assert_eq!(found.estimates["median"]["point_estimate"], 1.0);
        assert!(find(&output, "copy_tags/from_guest/4 KiB").is_some());
        assert!(find(&output, "copy_tags/from_guest/64 KiB").is_none());
        std::fs::remove_dir_all(&output).unwrap();
    }
}
