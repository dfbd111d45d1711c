//! `tchprune compress` and `decompress`: compressed-tensors' sparse-bitmask layout from a pruned
//! checkpoint, back to dense, read by every other command; `stats` reports each form's bytes.

mod common;

use serde_json::{json, Value};

#[test]
fn a_pruned_checkpoint_compresses_and_comes_back_as_finalize_writes_it() {
    let plan = json!({"steps": [
        {"method": "global_unstructured", "pruning_method": "l1_unstructured",
         "params": ["*.weight"], "amount": 0.9},
    ]});
    let (dir, run) = common::apply_to_lenet(&plan, &[]);
    assert!(run.success, "{}", run.stderr);
    let d = dir.path();
    for args in [
        ["compress", "out.safetensors", "-o", "small.safetensors"],
        ["decompress", "small.safetensors", "-o", "dense.safetensors"],
        ["finalize", "out.safetensors", "-o", "final.safetensors"],
    ] {
        let run = common::tchprune_in(d, &args);
        assert!(run.success, "{args:?}: {}", run.stderr);
    }
    let small = common::read(&d.join("small.safetensors"));
    assert!(small.iter().any(|(k, _)| k == "fc1.bitmask"), "{small:?}");
    assert!(small.iter().any(|(k, _)| k == "conv1.bias"));
    let dense = common::read(&d.join("dense.safetensors"));
    let finalized = common::read(&d.join("final.safetensors"));
    assert_eq!(dense.len(), finalized.len());
    for ((k1, a), (k2, b)) in dense.iter().zip(&finalized) {
        assert_eq!(k1, k2);
        // equal values; a pruned negative entry is -0.0 after finalize, 0.0 after decompress
        // (the layout keeps non-zero values only, as compressed-tensors does)
        assert!(a.equal(b), "{k1}");
    }
    let size = |name: &str| std::fs::metadata(d.join(name)).unwrap().len();
    assert!(size("small.safetensors") * 4 < size("final.safetensors"));

    // Every command reads the compressed file as the dense one.
    let stats = |file: &str| {
        let run = common::tchprune_in(d, &["stats", file, "--json"]);
        assert!(run.success, "{}", run.stderr);
        serde_json::from_str::<Value>(&run.stdout).unwrap()
    };
    let (of_small, of_final) = (stats("small.safetensors"), stats("final.safetensors"));
    assert_eq!(of_small["total"], of_final["total"]);
    let bytes = &of_small["bytes"];
    assert_eq!(bytes["file"], size("small.safetensors"));
    let (plain, compressed) = (
        bytes["plain"].as_u64().unwrap(),
        bytes["sparse_bitmask"].as_u64().unwrap(),
    );
    assert_eq!(plain, 4 * 60_074);
    // the compressed tensors as compress wrote them: the file minus its header
    assert!(
        compressed < size("small.safetensors") && compressed * 5 < plain,
        "{bytes}"
    );
    let pruned = stats("out.safetensors");
    assert_eq!(pruned["bytes"]["pruned"], 4 * (60_074 + 59_838));
    assert_eq!(pruned["bytes"]["sparse_bitmask"], compressed);
    let run = common::apply(
        d,
        "small.safetensors",
        "plan.json",
        "again.safetensors",
        &[],
    );
    assert!(run.success, "{}", run.stderr);
}

#[test]
fn decompress_refuses_a_file_without_compressed_weights() {
    common::refused_in(
        "not compressed",
        |_| {},
        &["decompress", "lenet.safetensors", "-o", "out.safetensors"],
        &[
            "lenet.safetensors",
            "no weight in the sparse-bitmask layout",
        ],
    );
    common::refused_in(
        "same file",
        |_| {},
        &["compress", "lenet.safetensors", "-o", "lenet.safetensors"],
        &["lenet.safetensors"],
    );
}
