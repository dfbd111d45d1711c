//! `tchprune apply`: every method and argument form of the plan format, side files, globs,
//! plugins, iterative pruning across runs, mask dtypes and the recorded history.

mod common;

use common::{apply_to_lenet, tensor, zeros};
use serde_json::{json, Value};
use tch::Kind;

fn out(dir: &tempfile::TempDir, key: &str) -> tch::Tensor {
    tensor(&dir.path().join("out.safetensors"), key)
}

fn assert_ok(run: &common::Run) {
    assert!(run.success, "tchprune failed: {}", run.stderr);
}

#[test]
fn an_integer_amount_is_a_count_and_a_float_a_fraction() {
    let plan = json!({"steps": [
        {"method": "l1_unstructured", "params": ["fc3.bias"], "amount": 1},
        {"method": "l1_unstructured", "params": ["fc2.bias"], "amount": 1.0},
        {"method": "random_unstructured", "params": ["fc1.bias"], "amount": 0.25},
    ]});
    let (dir, run) = apply_to_lenet(&plan, &[]);
    assert_ok(&run);
    assert_eq!(zeros(&out(&dir, "fc3.bias_mask")), 1);
    assert_eq!(zeros(&out(&dir, "fc2.bias_mask")), 84);
    assert_eq!(zeros(&out(&dir, "fc1.bias_mask")), 30);
    assert_eq!(
        out(&dir, "fc3.bias_mask").kind(),
        Kind::Float,
        "masks in the parameter's dtype"
    );
}

#[test]
fn the_smallest_magnitudes_go_first() {
    let (dir, run) = apply_to_lenet(
        &json!({"steps": [{"method": "l1_unstructured", "params": ["fc3.bias"], "amount": 3}]}),
        &[],
    );
    assert_ok(&run);
    let orig = out(&dir, "fc3.bias_orig").abs();
    let mask = out(&dir, "fc3.bias_mask");
    let largest_pruned = orig.masked_select(&mask.eq(0)).max().double_value(&[]);
    let smallest_kept = orig.masked_select(&mask.eq(1)).min().double_value(&[]);
    assert!(largest_pruned <= smallest_kept);
}

#[test]
fn norms_by_name_and_negative_dims() {
    let slices = |dir: &tempfile::TempDir, key: &str, dim: i64| -> i64 {
        let mask = out(dir, key).ne(0);
        let others: Vec<i64> = (0..mask.dim() as i64).filter(|d| *d != dim).collect();
        mask.any_dims(others.as_slice(), false)
            .logical_not()
            .sum(Kind::Int64)
            .int64_value(&[])
    };
    let plan = json!({"steps": [
        {"method": "ln_structured", "params": ["conv1.weight"], "amount": 2, "n": 2, "dim": -4},
        {"method": "ln_structured", "params": ["conv2.weight"], "amount": 0.5, "n": "inf", "dim": 0},
        {"method": "ln_structured", "params": ["fc1.weight"], "amount": 0.1, "n": "-inf", "dim": -1},
        {"method": "ln_structured", "params": ["fc2.weight"], "amount": 12, "n": "fro", "dim": -1},
        {"method": "random_structured", "params": ["fc3.weight"], "amount": 3, "dim": -2},
    ]});
    let (dir, run) = apply_to_lenet(&plan, &[]);
    assert_ok(&run);
    assert_eq!(slices(&dir, "conv1.weight_mask", 0), 2);
    assert_eq!(slices(&dir, "conv2.weight_mask", 0), 8);
    assert_eq!(slices(&dir, "fc1.weight_mask", 1), 40);
    assert_eq!(slices(&dir, "fc2.weight_mask", 1), 12);
    assert_eq!(slices(&dir, "fc3.weight_mask", 0), 3);

    // "fro" over the slices of a matrix is their 2-norm: the same mask as n = 2; a fractional n
    // works too.
    let (two, run) = apply_to_lenet(
        &json!({"steps": [{"method": "ln_structured", "params": ["fc2.weight"], "amount": 12, "n": 2, "dim": 1},
                          {"method": "ln_structured", "params": ["fc3.weight"], "amount": 0.3, "n": 1.5, "dim": 1}]}),
        &[],
    );
    assert_ok(&run);
    assert!(out(&two, "fc2.weight_mask").equal(&out(&dir, "fc2.weight_mask")));
    assert_eq!(slices(&two, "fc3.weight_mask", 1), 25);
}

#[test]
fn scores_and_masks_come_from_side_files_relative_to_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    common::lenet_checkpoint(dir.path());
    std::fs::create_dir(dir.path().join("plans")).unwrap();
    // Scores that rank fc3.bias in reverse index order; a mask that prunes fc2.bias's first half.
    let scores = tch::Tensor::arange(10, (Kind::Float, tch::Device::Cpu)).flip([0]);
    let mask = tch::Tensor::cat(
        &[
            tch::Tensor::zeros([42], tch::kind::FLOAT_CPU),
            tch::Tensor::ones([42], tch::kind::FLOAT_CPU),
        ],
        0,
    );
    common::write(
        &dir.path().join("plans/scores.safetensors"),
        &[("fc3.bias", &scores)],
    );
    common::write(
        &dir.path().join("plans/masks.safetensors"),
        &[("fc2.bias", &mask)],
    );
    let plan = json!({"steps": [
        {"method": "l1_unstructured", "params": ["fc3.bias"], "amount": 4, "scores_file": "scores.safetensors"},
        {"method": "custom_from_mask", "params": ["fc2.bias"], "mask_file": "masks.safetensors"},
    ]});
    common::write_plan(&dir.path().join("plans"), &plan);
    let run = common::apply(
        dir.path(),
        "lenet.safetensors",
        "plans/plan.json",
        "out.safetensors",
        &[],
    );
    assert_ok(&run);
    let output = dir.path().join("out.safetensors");
    assert_eq!(
        common::workspace::values(&tensor(&output, "fc3.bias_mask")),
        [1., 1., 1., 1., 1., 1., 0., 0., 0., 0.]
    );
    assert!(tensor(&output, "fc2.bias_mask").equal(&mask));
}

#[test]
fn globs_match_keys_and_pruned_pairs_by_their_parameter_key() {
    let plan = json!({"steps": [
        {"method": "identity", "params": ["conv?.weight", "fc*.bias", "conv1.*"]},
        {"method": "l1_unstructured", "params": ["*1.weight"], "amount": 0.5},
    ]});
    let (dir, run) = apply_to_lenet(&plan, &[]);
    assert_ok(&run);
    let keys: Vec<String> = common::read(&dir.path().join("out.safetensors"))
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    for pruned in [
        "conv1.weight",
        "conv2.weight",
        "conv1.bias",
        "fc1.bias",
        "fc2.bias",
        "fc3.bias",
    ] {
        assert!(
            keys.contains(&format!("{pruned}_orig")),
            "{pruned}: {keys:?}"
        );
        assert!(
            keys.contains(&format!("{pruned}_mask")),
            "{pruned}: {keys:?}"
        );
        assert!(!keys.contains(&pruned.to_owned()));
    }
    for plain in ["fc1.weight", "fc2.weight", "fc3.weight", "conv2.bias"] {
        assert!(
            keys.contains(&plain.to_owned()) != plain.starts_with("fc1"),
            "{plain}"
        );
    }
    // `*1.weight` matched conv1.weight (already pruned, by its parameter key) and fc1.weight.
    assert_eq!(zeros(&out(&dir, "conv1.weight_mask")), 27);
    assert_eq!(zeros(&out(&dir, "fc1.weight_mask")), 24_000);
}

#[test]
fn global_pruning_spans_the_matched_keys() {
    let plan = json!({"steps": [
        {"method": "global_unstructured", "pruning_method": "l1_unstructured",
         "params": ["conv*.weight", "fc*.weight"], "amount": 0.8},
    ]});
    let (dir, run) = apply_to_lenet(&plan, &[]);
    assert_ok(&run);
    let keys = [
        "conv1.weight",
        "conv2.weight",
        "fc1.weight",
        "fc2.weight",
        "fc3.weight",
    ];
    let (pruned, total): (i64, i64) = keys
        .iter()
        .map(|k| {
            let mask = out(&dir, &format!("{k}_mask"));
            (zeros(&mask), mask.numel() as i64)
        })
        .fold((0, 0), |(a, b), (c, d)| (a + c, b + d));
    assert_eq!(pruned, (total as f64 * 0.8).round() as i64);
}

#[test]
fn remove_writes_the_plain_parameter() {
    let plan = json!({"steps": [
        {"method": "l1_unstructured", "params": ["fc2.weight"], "amount": 0.5},
        {"method": "remove", "params": ["fc2.weight"]},
    ]});
    let (dir, run) = apply_to_lenet(&plan, &[]);
    assert_ok(&run);
    let weight = out(&dir, "fc2.weight");
    assert_eq!(zeros(&weight), 5040);
    let keys: Vec<String> = common::read(&dir.path().join("out.safetensors"))
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(
        !keys.iter().any(|k| k.starts_with("fc2.weight_")),
        "{keys:?}"
    );
}

#[test]
fn pruning_across_two_runs_equals_one_run_and_keeps_the_history() {
    let first = json!({"seed": 3, "steps": [{"method": "l1_unstructured", "params": ["fc1.weight"], "amount": 0.5}]});
    let second = json!({"steps": [{"method": "ln_structured", "params": ["fc1.weight"], "amount": 0.5, "n": 1, "dim": 0}]});
    let both = json!({"seed": 3, "steps": [first["steps"][0], second["steps"][0]]});

    let (dir, run) = apply_to_lenet(&first, &[]);
    assert_ok(&run);
    common::write_plan(dir.path(), &second);
    let run = common::apply(
        dir.path(),
        "out.safetensors",
        "plan.json",
        "twice.safetensors",
        &[],
    );
    assert_ok(&run);
    let (once, run) = apply_to_lenet(&both, &[]);
    assert_ok(&run);
    let twice = common::read(&dir.path().join("twice.safetensors"));
    let single = common::read(&once.path().join("out.safetensors"));
    assert_eq!(twice.len(), single.len());
    for ((k, a), (_, b)) in twice.iter().zip(&single) {
        assert!(common::identical(a, b), "{k}");
    }
    // The second run added to the first mask: half of the rows, on top of half the entries.
    let first_mask = tensor(&dir.path().join("out.safetensors"), "fc1.weight_mask");
    let mask = tensor(&dir.path().join("twice.safetensors"), "fc1.weight_mask");
    assert_eq!(
        zeros(&mask.gt_tensor(&first_mask)),
        mask.numel() as i64,
        "nothing revived"
    );
    let empty_rows = mask
        .ne(0)
        .any_dim(1, false)
        .logical_not()
        .sum(Kind::Int64)
        .int64_value(&[]);
    assert!(empty_rows >= 60, "{empty_rows} empty rows");

    let metadata = tchprune::checkpoint::read(dir.path().join("twice.safetensors"))
        .unwrap()
        .metadata;
    let history: Value =
        serde_json::from_str(&metadata[tchprune::plan::HISTORY_METADATA_KEY]).unwrap();
    assert_eq!(
        history["fc1.weight"],
        json!([{"method": "l1_unstructured", "amount": 0.5},
               {"method": "ln_structured", "amount": 0.5, "n": 1, "dim": 0}])
    );
}

#[test]
fn bool_masks_are_four_times_smaller_and_load_the_same() {
    let plan =
        json!({"steps": [{"method": "l1_unstructured", "params": ["*.weight"], "amount": 0.5}]});
    let (same, run) = apply_to_lenet(&plan, &[]);
    assert_ok(&run);
    let (boolean, run) = apply_to_lenet(&plan, &["--mask-dtype", "bool"]);
    assert_ok(&run);
    let mask = out(&boolean, "fc1.weight_mask");
    assert_eq!(mask.kind(), Kind::Bool);
    assert!(mask
        .to_kind(Kind::Float)
        .equal(&out(&same, "fc1.weight_mask")));
    let size = |dir: &tempfile::TempDir| {
        std::fs::metadata(dir.path().join("out.safetensors"))
            .unwrap()
            .len()
    };
    let masks: i64 = 54 + 864 + 48_000 + 10_080 + 840;
    let saved = (size(&same) - size(&boolean)) as i64;
    // Each mask entry: 4 bytes -> 1; the headers differ by a few bytes of dtype names.
    assert!(
        (saved - 3 * masks).abs() < 256,
        "saved {saved} bytes, masks hold {masks} entries"
    );
}

#[test]
fn the_input_is_never_modified() {
    let dir = tempfile::tempdir().unwrap();
    let input = common::lenet_checkpoint(dir.path());
    let before = std::fs::read(&input).unwrap();
    common::write_plan(
        dir.path(),
        &json!({"steps": [{"method": "l1_unstructured", "params": ["*"], "amount": 0.9}]}),
    );
    let run = common::apply(
        dir.path(),
        "lenet.safetensors",
        "plan.json",
        "out.safetensors",
        &[],
    );
    assert_ok(&run);
    assert_eq!(std::fs::read(&input).unwrap(), before);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        3,
        "no temporary file is left: {leftovers:?}"
    );
}

#[test]
fn plugins_from_the_command_line_and_from_the_plan() {
    let foobar = common::workspace::plugin("tchprune-plugin-foobar");
    let nm = common::workspace::plugin("tchprune-plugin-nm");
    let dir = tempfile::tempdir().unwrap();
    common::lenet_checkpoint(dir.path());
    let local_nm = dir.path().join("plugins").join(nm.file_name().unwrap());
    std::fs::create_dir(dir.path().join("plugins")).unwrap();
    std::fs::copy(&nm, &local_nm).unwrap();
    let plan = json!({
    "plugins": [format!("plugins/{}", nm.file_name().unwrap().to_str().unwrap())],
    "steps": [
        {"method": "foobar", "params": ["fc3.bias"]},
        {"method": "nm", "params": ["fc1.weight"], "n": 1, "m": 4},
        {"method": "global_unstructured", "pruning_method": "foobar", "params": ["fc2.bias", "fc3.bias"]},
    ]});
    common::write_plan(dir.path(), &plan);
    let run = common::apply(
        dir.path(),
        "lenet.safetensors",
        "plan.json",
        "out.safetensors",
        &["--plugin", foobar.to_str().unwrap()],
    );
    assert!(run.success, "{}", run.stderr);
    let output = dir.path().join("out.safetensors");
    assert_eq!(zeros(&tensor(&output, "fc1.weight_mask")), 36_000);
    // fc3.bias: foobar leaves the odd entries; the global foobar then prunes every other entry
    // of what is left of fc2.bias (84 entries) and fc3.bias (5) together, fc3's share starting
    // at the 85th: it prunes entries 1, 5 and 9.
    assert_eq!(zeros(&tensor(&output, "fc2.bias_mask")), 42);
    assert_eq!(
        common::workspace::values(&tensor(&output, "fc3.bias_mask")),
        [0., 0., 0., 1., 0., 0., 0., 1., 0., 0.]
    );
}

#[test]
fn every_input_tensor_reaches_the_output_whatever_its_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let weight = tch::Tensor::randn([4, 8], (Kind::BFloat16, tch::Device::Cpu));
    let steps = tch::Tensor::from(7i64);
    let running_mean = tch::Tensor::randn([4], (Kind::Double, tch::Device::Cpu));
    let flags = tch::Tensor::from_slice(&[true, false, true]);
    common::write(
        &dir.path().join("in.safetensors"),
        &[
            ("layer.weight", &weight),
            ("bn.num_batches_tracked", &steps),
            ("bn.running_mean", &running_mean),
            ("flags", &flags),
        ],
    );
    common::write_plan(
        dir.path(),
        &json!({"steps": [{"method": "l1_unstructured", "params": ["layer.weight"], "amount": 0.5}]}),
    );
    let run = common::apply(
        dir.path(),
        "in.safetensors",
        "plan.json",
        "out.safetensors",
        &[],
    );
    assert_ok(&run);
    let output = dir.path().join("out.safetensors");
    assert!(common::identical(
        &tensor(&output, "bn.num_batches_tracked"),
        &steps
    ));
    assert!(common::identical(
        &tensor(&output, "bn.running_mean"),
        &running_mean
    ));
    assert!(common::identical(&tensor(&output, "flags"), &flags));
    assert!(common::identical(
        &tensor(&output, "layer.weight_orig"),
        &weight
    ));
    let mask = tensor(&output, "layer.weight_mask");
    assert_eq!(mask.kind(), Kind::BFloat16);
    assert_eq!(zeros(&mask), 16);
}

#[test]
fn a_checkpoint_with_bool_masks_keeps_pruning() {
    let first =
        json!({"steps": [{"method": "l1_unstructured", "params": ["fc1.weight"], "amount": 0.5}]});
    let (dir, run) = apply_to_lenet(&first, &["--mask-dtype", "bool"]);
    assert_ok(&run);
    let second =
        json!({"steps": [{"method": "l1_unstructured", "params": ["fc1.weight"], "amount": 0.5}]});
    common::write_plan(dir.path(), &second);
    let run = common::apply(
        dir.path(),
        "out.safetensors",
        "plan.json",
        "again.safetensors",
        &[],
    );
    assert_ok(&run);
    let mask = tensor(&dir.path().join("again.safetensors"), "fc1.weight_mask");
    assert_eq!(
        mask.kind(),
        Kind::Float,
        "back in the parameter's dtype by default"
    );
    assert_eq!(
        zeros(&mask),
        36_000,
        "half of the remaining half pruned on top"
    );
}
