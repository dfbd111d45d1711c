//! Checkpoints and plans that are damaged or careless rather than hostile: half of a pruned
//! pair, keys that are not dotted paths, duplicate header keys, dtypes a method cannot prune,
//! numbers too large for 64 bits, histories that would not fit in a header. Each gets one line
//! naming what is wrong, and no output.

mod common;

use serde_json::json;
use std::path::Path;
use tch::{Device, Kind, Tensor};

const APPLY: [&str; 6] = [
    "apply",
    "in.safetensors",
    "--plan",
    "plan.json",
    "-o",
    "out.safetensors",
];

fn checkpoint(dir: &Path, tensors: &[(&str, Tensor)]) {
    let named: Vec<(&str, &Tensor)> = tensors.iter().map(|(k, t)| (*k, t)).collect();
    common::write(&dir.join("in.safetensors"), &named);
}

fn refused(name: &str, tensors: Vec<(&str, Tensor)>, plan: serde_json::Value, fragments: &[&str]) {
    common::refused_in(
        name,
        |dir| {
            checkpoint(dir, &tensors);
            common::write_plan(dir, &plan);
        },
        &APPLY,
        fragments,
    );
}

fn ones(shape: &[i64]) -> Tensor {
    Tensor::ones(shape, (Kind::Float, Device::Cpu))
}

#[test]
fn half_of_a_pruned_pair_is_refused_naming_the_key() {
    let prune_all = json!({"steps": [{"method": "l1_unstructured", "params": ["*"], "amount": 1}]});
    refused(
        "a mask without its orig",
        vec![("fc.weight_mask", ones(&[2, 2])), ("fc.bias", ones(&[2]))],
        prune_all.clone(),
        &["'fc.weight_mask' is half of a pruned pair ('fc.weight_orig' is missing)"],
    );
    refused(
        "an orig without its mask",
        vec![("fc.weight_orig", ones(&[2, 2])), ("fc.bias", ones(&[2]))],
        prune_all,
        &["'fc.weight_orig' is half of a pruned pair ('fc.weight_mask' is missing)"],
    );
}

#[test]
fn keys_that_are_not_dotted_paths_are_named() {
    for key in ["", "a..b", ".a", "a."] {
        refused(
            "a key with an empty part",
            vec![(key, ones(&[2])), ("b", ones(&[2]))],
            json!({"steps": []}),
            &[&format!("the key '{key}' is not a dotted path of names")],
        );
    }
}

#[test]
fn duplicate_header_keys_are_named() {
    common::refused_in(
        "a key twice in the header",
        |dir| {
            let header = br#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
            let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
            bytes.extend_from_slice(header);
            bytes.extend_from_slice(&[0; 8]);
            std::fs::write(dir.join("twice.safetensors"), bytes).unwrap();
        },
        &["stats", "twice.safetensors"],
        &["twice.safetensors: not a readable safetensors file: the key 'a' appears twice"],
    );
}

#[test]
fn a_dtype_a_method_cannot_prune_is_named_with_the_method() {
    for (method, tensor, kind) in [
        (
            "random_unstructured",
            Tensor::arange(6, (Kind::Int64, Device::Cpu)),
            "Int64",
        ),
        ("l1_unstructured", ones(&[6]).to_kind(Kind::Bool), "Bool"),
    ] {
        refused(
            method,
            vec![("p", tensor)],
            json!({"steps": [{"method": method, "params": ["p"], "amount": 0.5}]}),
            &[&format!(
                "plan step 1 ({method}) on 'p': method {method} failed: cannot prune {kind} tensors"
            )],
        );
    }
}

#[test]
fn numbers_beyond_64_bits_are_quoted_as_written() {
    refused(
        "a count of 2^64",
        vec![("p", ones(&[4]))],
        serde_json::from_str(
            r#"{"steps": [{"method": "l1_unstructured", "params": ["p"], "amount": 18446744073709551616}]}"#,
        )
        .unwrap(),
        &["invalid amount 18446744073709551616: the count is too large"],
    );
    refused(
        "a dim of 2^64",
        vec![("p", ones(&[2, 2]))],
        serde_json::from_str(
            r#"{"steps": [{"method": "random_structured", "params": ["p"], "amount": 1, "dim": 18446744073709551616}]}"#,
        )
        .unwrap(),
        &["argument 'dim': must be an integer that fits in 64 bits, got 18446744073709551616"],
    );
}

#[test]
fn io_errors_say_what_failed_once() {
    let dir = common::refused_in(
        "an output in a missing directory",
        |dir| {
            checkpoint(dir, &[("p", ones(&[4]))]);
            common::write_plan(dir, &json!({"steps": []}));
        },
        &common::apply_args("in.safetensors", "missing/out.safetensors"),
        &["missing/out.safetensors: its directory missing cannot be used"],
    );
    let run = common::tchprune_in(
        dir.path(),
        &common::apply_args("in.safetensors", "missing/out.safetensors"),
    );
    assert!(
        !run.stderr.contains("state_dict does not fit"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.matches("os error").count(), 1, "{}", run.stderr);
}

#[test]
fn large_inline_arguments_are_recorded_by_digest_and_the_output_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    checkpoint(dir.path(), &[("p", ones(&[300, 300]))]);
    let mask: Vec<Vec<u8>> = (0..300)
        .map(|i| (0..300).map(|j| ((i + j) % 2) as u8).collect())
        .collect();
    common::write_plan(
        dir.path(),
        &json!({"steps": [{"method": "custom_from_mask", "params": ["p"], "mask": mask}]}),
    );
    let run = common::tchprune_in(dir.path(), &APPLY);
    assert!(run.success, "{}", run.stderr);
    let out = tchprune::checkpoint::read(dir.path().join("out.safetensors")).unwrap();
    let history = &out.metadata["tchprune.history"];
    assert!(history.len() < 512, "{} bytes of history", history.len());
    assert!(
        history.contains("\"omitted\"") && history.contains("fnv1a64"),
        "{history}"
    );
    assert_eq!(
        common::zeros(&common::tensor(
            &dir.path().join("out.safetensors"),
            "p_mask"
        )),
        45_000
    );
}

#[test]
fn a_file_safetensors_could_not_read_back_is_never_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.safetensors");
    let metadata = [("big".to_owned(), "x".repeat(100_000_001))]
        .into_iter()
        .collect();
    let err =
        tchprune::checkpoint::write(&[("p".to_owned(), ones(&[2]))], &metadata, &path).unwrap_err();
    assert!(
        err.to_string()
            .contains("more than the 100000000 safetensors reads back"),
        "{err}"
    );
    assert!(!path.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
