//! Declared groups that do not fit the checkpoint: each is refused in one line before anything
//! is computed or printed, and no checkpoint that contradicts itself is ever written.

mod common;

use serde_json::json;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// `fc` (3 channels, pruned, channel 1 zero in `orig`) read by `out`: the pair from the report.
fn pair(dir: &Path) {
    let orig =
        Tensor::from_slice(&[1.0f32, 2., 3., 4., 0., 0., 0., 0., 5., 6., 7., 8.]).reshape([3, 4]);
    let mask = Tensor::ones([3, 4], (Kind::Float, Device::Cpu));
    let bias = Tensor::from_slice(&[0.5f32, 0.0, -0.5]);
    let out = Tensor::ones([2, 3], (Kind::Float, Device::Cpu));
    common::write(
        &dir.join("pair.safetensors"),
        &[
            ("fc.weight_orig", &orig),
            ("fc.weight_mask", &mask),
            ("fc.bias", &bias),
            ("out.weight", &out),
        ],
    );
}

fn with_groups(groups: serde_json::Value) -> impl FnOnce(&Path) {
    move |dir| {
        pair(dir);
        std::fs::write(
            dir.join("groups.json"),
            json!({ "groups": groups }).to_string(),
        )
        .unwrap();
    }
}

#[test]
fn groups_that_do_not_fit_are_refused_by_shrink_and_print_groups() {
    let half_pair = json!([{"writers": ["fc.weight_orig"], "channelwise": ["fc.bias"],
                            "readers": [{"key": "out.weight"}]}]);
    let cases = [
        (
            "half of a pruned pair",
            half_pair,
            &["'fc.weight_orig' is half of the pruned pair 'fc.weight'"][..],
        ),
        (
            "a key that is not there",
            json!([{"writers": ["fc.weight"], "readers": [{"key": "head.weight"}]}]),
            &["no tensor 'head.weight'"][..],
        ),
        (
            "a per-channel tensor of another width",
            json!([{"writers": ["fc.weight"], "channelwise": ["out.weight"]}]),
            &["per-channel tensor 'out.weight'"][..],
        ),
        (
            "a factor that does not divide",
            json!([{"writers": ["fc.weight"], "readers": [{"key": "out.weight", "factor": 2}]}]),
            &["reader 'out.weight'", "factor 2"][..],
        ),
        (
            "writers of different widths",
            json!([{"writers": ["fc.weight", "out.weight"]}]),
            &["writer 'out.weight'"][..],
        ),
    ];
    for (name, groups, fragments) in cases {
        for last in [&["-o", "out.safetensors"][..], &["--print-groups"][..]] {
            let mut args = vec!["shrink", "pair.safetensors", "--groups", "groups.json"];
            args.extend_from_slice(last);
            common::refused_in(name, with_groups(groups.clone()), &args, fragments);
        }
    }
}

#[test]
fn a_prune_groups_step_with_groups_that_do_not_fit_is_one_line_naming_the_step() {
    let groups = json!([{"writers": ["fc.weight"], "channelwise": ["out.weight"]}]);
    common::refused_in(
        "prune_groups, lying groups",
        |dir| {
            pair(dir);
            common::write_plan(
                dir,
                &json!({"steps": [{"method": "prune_groups", "params": ["*"], "groups": groups,
                                   "pruning_method": "ln_structured", "amount": 1, "n": 2}]}),
            );
        },
        &common::apply_args("pair.safetensors", "x.safetensors"),
        &["step 1", "per-channel tensor 'out.weight'"],
    );
}

#[test]
fn groups_that_fit_shrink_the_pair_as_a_pair_and_the_widths_are_true() {
    let dir = tempfile::tempdir().unwrap();
    with_groups(
        json!([{"writers": ["fc.weight"], "channelwise": ["fc.bias"],
                        "readers": [{"key": "out.weight"}]}]),
    )(dir.path());
    let run = common::tchprune_in(
        dir.path(),
        &[
            "shrink",
            "pair.safetensors",
            "--groups",
            "groups.json",
            "-o",
            "out.safetensors",
        ],
    );
    assert!(run.success, "{}", run.stderr);
    let written = tchprune::checkpoint::read(dir.path().join("out.safetensors")).unwrap();
    tchprune::checkpoint::check_consistent(&written).unwrap();
    let shape = |key: &str| {
        let (_, t) = written.tensors.iter().find(|(k, _)| k == key).unwrap();
        t.size()
    };
    assert_eq!(shape("fc.weight_orig"), [2, 4]);
    assert_eq!(shape("fc.weight_mask"), [2, 4]);
    assert_eq!(shape("fc.bias"), [2]);
    assert_eq!(shape("out.weight"), [2, 2]);
    assert_eq!(written.metadata["tchprune.widths"], r#"{"fc":2}"#);
}

#[test]
fn the_consistency_check_refuses_what_a_reader_would_trip_on() {
    let t = |shape: &[i64]| Tensor::zeros(shape, (Kind::Float, Device::Cpu));
    let checkpoint =
        |tensors: Vec<(&str, Tensor)>, widths: Option<&str>| tchprune::checkpoint::Checkpoint {
            tensors: tensors
                .into_iter()
                .map(|(k, t)| (k.to_owned(), t))
                .collect(),
            metadata: widths
                .map(|w| [("tchprune.widths".to_owned(), w.to_owned())].into())
                .unwrap_or_default(),
        };
    let cases = [
        (
            checkpoint(
                vec![("a.w_orig", t(&[3, 4])), ("a.w_mask", t(&[2, 4]))],
                None,
            ),
            "its mask 'a.w_mask'",
        ),
        (
            checkpoint(
                vec![
                    ("a.w", t(&[3])),
                    ("a.w_orig", t(&[3])),
                    ("a.w_mask", t(&[3])),
                ],
                None,
            ),
            "'a.w' is present along with 'a.w_orig'",
        ),
        (checkpoint(vec![(".weight", t(&[3]))], None), "empty part"),
        (
            checkpoint(vec![("fc.weight_orig", t(&[3, 4]))], Some(r#"{"fc": 2}"#)),
            "gives 'fc' 2 channels",
        ),
        (
            checkpoint(vec![("fc.weight", t(&[3, 4]))], Some(r#"{"head": 3}"#)),
            "names 'head', which has no tensor",
        ),
    ];
    for (written, fragment) in cases {
        let err = tchprune::checkpoint::check_consistent(&written).unwrap_err();
        assert!(err.to_string().contains(fragment), "{err}");
    }
    let fine = checkpoint(
        vec![
            ("fc.weight_orig", t(&[2, 4])),
            ("fc.weight_mask", t(&[2, 4])),
            ("fc.bias", t(&[2])),
            ("bn.num_batches_tracked", t(&[])),
        ],
        Some(r#"{"fc": 2}"#),
    );
    tchprune::checkpoint::check_consistent(&fine).unwrap();
}

#[test]
fn a_group_of_zero_channels_is_one_line_in_tchprunes_words() {
    let setup = |dir: &Path| {
        let empty = |shape: &[i64]| Tensor::zeros(shape, (Kind::Float, Device::Cpu));
        common::write(
            &dir.join("empty.safetensors"),
            &[
                ("fc.weight", &empty(&[0, 4])),
                ("fc.bias", &empty(&[0])),
                ("out.weight", &empty(&[2, 0])),
            ],
        );
        let groups = json!([{"writers": ["fc.weight"], "channelwise": ["fc.bias"],
                             "readers": [{"key": "out.weight"}]}]);
        std::fs::write(
            dir.join("groups.json"),
            json!({ "groups": groups }).to_string(),
        )
        .unwrap();
        common::write_plan(
            dir,
            &json!({"steps": [{"method": "prune_groups", "params": ["*"], "groups": groups,
                               "pruning_method": "ln_structured", "amount": 1, "n": 2, "dim": 0}]}),
        );
    };
    common::refused_in(
        "shrink, zero channels",
        setup,
        &[
            "shrink",
            "empty.safetensors",
            "--groups",
            "groups.json",
            "-o",
            "x.safetensors",
        ],
        &["'fc.weight' has no channels"],
    );
    common::refused_in(
        "prune_groups, zero channels",
        setup,
        &common::apply_args("empty.safetensors", "x.safetensors"),
        &["step 1", "'fc.weight' has no channels"],
    );
}
