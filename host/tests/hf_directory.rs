//! Hugging Face directories: sharded and single-file weights read and written back in the same
//! layout, and indexes that lie (a missing shard, a path outside the directory, a tensor in two
//! shards or where the index does not say) refused with a line naming the problem.

use std::path::Path;
use tch::{Device, Kind, Tensor};
use tchprune::checkpoint::hf::{self, HfDirectory};

fn tensors() -> Vec<(String, Tensor)> {
    (0..6)
        .map(|i| {
            let t = Tensor::full([10, 100], i as f64, (Kind::Float, Device::Cpu));
            (format!("layers.{i}.weight"), t)
        })
        .collect()
}

/// A directory of three shards (two tensors each), a config and a README.
fn sharded(dir: &Path) {
    hf::write_new(
        dir,
        &serde_json::json!({"model_type": "test"}),
        &tensors(),
        Some(8000),
    )
    .unwrap();
    std::fs::write(dir.join("README.md"), "readme").unwrap();
}

#[test]
fn a_sharded_directory_round_trips_in_its_layout() {
    let scratch = tempfile::tempdir().unwrap();
    let input = scratch.path().join("in");
    sharded(&input);
    let dir = HfDirectory::open(&input).unwrap();
    assert!(dir.is_sharded());
    assert_eq!(dir.shards().len(), 3);
    assert_eq!(dir.shards()[0].file, "model-00001-of-00003.safetensors");
    let all = dir.read_all().unwrap();
    assert_eq!(all.len(), 6);
    // Written back with each tensor doubled: the same shards, a new index, the README copied.
    let output = scratch.path().join("out");
    dir.write_like(&output, None, |shard| {
        let mut checkpoint = dir.read_shard(shard)?;
        for (_, t) in &mut checkpoint.tensors {
            *t = &*t * 2.0;
        }
        Ok(checkpoint)
    })
    .unwrap();
    let again = HfDirectory::open(&output).unwrap();
    assert_eq!(again.shards(), dir.shards());
    assert_eq!(std::fs::read(output.join("README.md")).unwrap(), b"readme");
    assert_eq!(
        std::fs::read(output.join("config.json")).unwrap(),
        std::fs::read(input.join("config.json")).unwrap()
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(output.join(hf::INDEX_FILE)).unwrap()).unwrap();
    assert_eq!(index["metadata"]["total_size"], 6 * 1000 * 4);
    for ((k1, a), (k2, b)) in again.read_all().unwrap().iter().zip(&all) {
        assert_eq!(k1, k2);
        assert!(a.equal(&(b * 2.0)));
    }
    // An existing output is refused; nothing temporary is left beside it.
    let error = dir
        .write_like(&output, None, |s| dir.read_shard(s))
        .unwrap_err()
        .to_string();
    assert!(error.contains("exists already"), "{error}");
    let names: Vec<String> = std::fs::read_dir(scratch.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
}

/// Rewrites the index of `dir` with `edit`.
fn edit_index(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join(hf::INDEX_FILE);
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut index);
    std::fs::write(&path, index.to_string()).unwrap();
}

#[test]
fn indexes_that_lie_are_refused_naming_the_problem() {
    type Breakage = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Breakage)> = vec![
        (
            "which is missing",
            Box::new(|d: &Path| {
                std::fs::remove_file(d.join("model-00002-of-00003.safetensors")).unwrap()
            }),
        ),
        (
            "not a file of the directory",
            Box::new(|d: &Path| {
                edit_index(d, |i| {
                    i["weight_map"]["layers.0.weight"] = "../x.safetensors".into()
                })
            }),
        ),
        (
            "not a file of the directory",
            Box::new(|d: &Path| {
                edit_index(d, |i| {
                    i["weight_map"]["layers.0.weight"] = "/etc/passwd".into()
                })
            }),
        ),
        (
            "which the index does not list there",
            Box::new(|d: &Path| {
                edit_index(d, |i| {
                    i["weight_map"]
                        .as_object_mut()
                        .unwrap()
                        .remove("layers.1.weight");
                })
            }),
        ),
        (
            "does not",
            Box::new(|d: &Path| {
                edit_index(d, |i| {
                    i["weight_map"]["layers.0.weight"] = "model-00002-of-00003.safetensors".into()
                })
            }),
        ),
        (
            "leads outside the directory",
            Box::new(|d: &Path| {
                let outside = d.parent().unwrap().join("elsewhere.safetensors");
                std::fs::rename(d.join("model-00003-of-00003.safetensors"), &outside).unwrap();
                std::os::unix::fs::symlink(&outside, d.join("model-00003-of-00003.safetensors"))
                    .unwrap();
            }),
        ),
    ];
    for (expected, break_it) in cases {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("in");
        sharded(&dir);
        break_it(&dir);
        let error = HfDirectory::open(&dir).unwrap_err().to_string();
        assert!(error.contains(expected), "expected '{expected}': {error}");
        assert_eq!(error.lines().count(), 1, "{error}");
    }
    // A tensor in two shards.
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("in");
    sharded(&dir);
    let first = tchprune::checkpoint::read(dir.join("model-00001-of-00003.safetensors")).unwrap();
    let mut second =
        tchprune::checkpoint::read(dir.join("model-00002-of-00003.safetensors")).unwrap();
    second.tensors.push(first.tensors[0].clone_shallow());
    std::fs::remove_file(dir.join("model-00002-of-00003.safetensors")).unwrap();
    tchprune::checkpoint::write(
        &second.tensors,
        &Default::default(),
        dir.join("model-00002-of-00003.safetensors"),
    )
    .unwrap();
    let error = HfDirectory::open(&dir).unwrap_err().to_string();
    assert!(
        error.contains("in two shards") || error.contains("does not list"),
        "{error}"
    );
    // No weights at all.
    let empty = scratch.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let error = HfDirectory::open(&empty).unwrap_err().to_string();
    assert!(
        error.contains("not a Hugging Face model directory"),
        "{error}"
    );
}

trait CloneShallow {
    fn clone_shallow(&self) -> Self;
}

impl CloneShallow for (String, Tensor) {
    fn clone_shallow(&self) -> Self {
        (self.0.clone(), self.1.shallow_clone())
    }
}
