//! Wanda, SparseGPT and per-layer magnitude against plain PyTorch implementations of the papers
//! (`oracle/oneshot_reference.py`), on random layers whose inputs are correlated (as a layer's
//! inputs are), and through the mask engine: both front ends, the history, pruning on top of an
//! earlier mask, and nothing changed on error.

mod common;

use common::{read_tensors, run_python};
use std::path::Path;
use std::sync::Arc;
use tch::{nn, Device, Kind, Tensor};
use tchprune::calibration::{Calibration, LayerStatistics, Needs};
use tchprune::method::{Magnitude, NmPattern, SparseGpt, Wanda};
use tchprune::{prune, Module, PruningMethod, VarStorePruner};

/// A layer `[rows, columns]` and the statistics of `tokens` correlated inputs.
fn layer(rows: i64, columns: i64, tokens: i64, seed: i64) -> (Tensor, Tensor, LayerStatistics) {
    tch::manual_seed(seed);
    let weight = Tensor::randn([rows, columns], (Kind::Float, Device::Cpu));
    let mixing =
        Tensor::randn([columns, columns], (Kind::Float, Device::Cpu)) / (columns as f64).sqrt();
    let scales = Tensor::rand([1, columns], (Kind::Float, Device::Cpu)) * 3.0 + 0.1;
    let x = (Tensor::randn([tokens, columns], (Kind::Float, Device::Cpu)).matmul(&mixing)
        + Tensor::randn([tokens, columns], (Kind::Float, Device::Cpu)) * 0.3)
        * scales;
    let calibration = Calibration::new(Needs::GRAM);
    calibration.observe(&["w"], &x.view([4, tokens / 4, columns]));
    let stats = calibration.statistics("w").unwrap().unwrap();
    (weight, x, stats)
}

/// What the reference gives for `method` on the layer: (mask, new weight).
fn reference(
    method: &str,
    weight: &Tensor,
    stats: &LayerStatistics,
    sparsity: f64,
    nm: &str,
) -> (Tensor, Tensor) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.safetensors");
    let mean_squares = &stats.squared_norms / stats.samples as f64;
    let gram = stats.gram.as_ref().unwrap();
    Tensor::write_safetensors(
        &[
            ("weight", weight),
            ("gram", gram),
            ("mean_squares", &mean_squares),
        ],
        &input,
    )
    .unwrap();
    let out = dir.path().join("out.safetensors");
    let sparsity = sparsity.to_string();
    let args: [&Path; 6] = [
        Path::new("layer"),
        &input,
        &out,
        Path::new(method),
        Path::new(&sparsity),
        Path::new(nm),
    ];
    run_python("oneshot_reference.py", &args);
    let mut t = read_tensors(&out);
    (t.remove("mask").unwrap(), t.remove("weight").unwrap())
}

/// Prunes a fresh copy of `weight` with `method` through a `VarStorePruner`: (mask, new weight).
fn ours(
    method: Arc<dyn PruningMethod>,
    weight: &Tensor,
    stats: &LayerStatistics,
) -> (Tensor, Tensor) {
    let vs = nn::VarStore::new(Device::Cpu);
    let w = vs.root().var_copy("w", weight);
    let mut pruner = VarStorePruner::new(&vs);
    prune::apply_calibrated(&mut pruner, "w", method, stats).unwrap();
    (pruner.mask("w").unwrap().shallow_clone(), w.detach())
}

fn nm(text: &str) -> Option<NmPattern> {
    (text != "none").then(|| NmPattern::parse(text).unwrap())
}

/// `||W X^T - W' X^T||` over the calibration inputs.
fn reconstruction_error(weight: &Tensor, pruned: &Tensor, x: &Tensor) -> f64 {
    (x.matmul(&weight.tr()) - x.matmul(&pruned.tr()))
        .norm()
        .double_value(&[])
}

#[test]
fn wanda_masks_equal_the_reference() {
    for (seed, (sparsity, pattern)) in [(0.5, "none"), (0.7, "none"), (0.5, "2:4"), (0.25, "none")]
        .into_iter()
        .enumerate()
    {
        let (weight, _, stats) = layer(48, 256, 512, seed as i64);
        let method = Arc::new(Wanda::new(sparsity, nm(pattern)).unwrap());
        let (mask, values) = ours(method, &weight, &stats);
        let (expected, expected_values) = reference("wanda", &weight, &stats, sparsity, pattern);
        assert!(
            mask.equal(&expected),
            "wanda {sparsity} {pattern}: masks differ"
        );
        assert!(
            values.equal(&expected_values),
            "wanda {sparsity} {pattern}: values differ"
        );
        let kept_per_row = mask.sum_dim_intlist(1, false, Kind::Int64);
        let expected_kept = match pattern {
            "2:4" => 128,
            _ => 256 - (256.0 * sparsity).floor() as i64,
        };
        assert!(kept_per_row.eq(expected_kept).all().int64_value(&[]) == 1);
    }
}

#[test]
fn sparsegpt_equals_the_reference_and_reconstructs_best() {
    // 320 columns: two blocks of 128 and one of 64.
    for (seed, (sparsity, pattern)) in [(0.5, "none"), (0.7, "none"), (0.5, "2:4")]
        .into_iter()
        .enumerate()
    {
        let (weight, x, stats) = layer(64, 320, 1024, 20 + seed as i64);
        let method = Arc::new(SparseGpt::new(sparsity, nm(pattern)).unwrap());
        let (mask, values) = ours(method, &weight, &stats);
        let (expected, expected_values) =
            reference("sparsegpt", &weight, &stats, sparsity, pattern);
        let differing = mask.ne_tensor(&expected).sum(Kind::Int64).int64_value(&[]);
        assert!(
            differing <= 2,
            "sparsegpt {sparsity} {pattern}: {differing} mask entries differ"
        );
        let scale = expected_values.abs().max().double_value(&[]);
        if differing == 0 {
            let diff = (&values - &expected_values).abs().max().double_value(&[]);
            assert!(
                diff < 1e-4 * scale.max(1.0),
                "sparsegpt {sparsity} {pattern}: values differ by {diff}"
            );
        }
        // Pruned entries are exactly zero, the sparsity is the reference's.
        assert_eq!(
            values
                .masked_select(&mask.logical_not())
                .abs()
                .max()
                .double_value(&[]),
            0.0
        );
        let ours_error = reconstruction_error(&weight, &values, &x);
        let reference_error = reconstruction_error(&weight, &expected_values, &x);
        assert!(
            (ours_error - reference_error).abs() < 1e-3 * reference_error,
            "sparsegpt {sparsity} {pattern}: error {ours_error} vs the reference's {reference_error}"
        );
        // Below Wanda's and magnitude's at the same sparsity.
        let wanda = ours(
            Arc::new(Wanda::new(sparsity, nm(pattern)).unwrap()),
            &weight,
            &stats,
        )
        .1;
        let magnitude = ours(
            Arc::new(Magnitude::new(sparsity, nm(pattern)).unwrap()),
            &weight,
            &stats,
        )
        .1;
        let (wanda_error, magnitude_error) = (
            reconstruction_error(&weight, &wanda, &x),
            reconstruction_error(&weight, &magnitude, &x),
        );
        assert!(
            ours_error < wanda_error && ours_error < magnitude_error,
            "sparsegpt {ours_error}, wanda {wanda_error}, magnitude {magnitude_error}"
        );
    }
}

#[test]
fn magnitude_equals_the_reference() {
    for (sparsity, pattern) in [(0.5, "none"), (0.5, "2:4")] {
        let (weight, _, stats) = layer(32, 128, 64, 7);
        let (mask, _) = ours(
            Arc::new(Magnitude::new(sparsity, nm(pattern)).unwrap()),
            &weight,
            &stats,
        );
        let (expected, _) = reference("magnitude", &weight, &stats, sparsity, pattern);
        assert!(mask.equal(&expected), "magnitude {sparsity} {pattern}");
    }
}

#[test]
fn both_front_ends_give_the_same_weights_and_record_the_method() {
    let (weight, _, stats) = layer(16, 64, 128, 3);
    let method: Arc<dyn PruningMethod> = Arc::new(SparseGpt::new(0.5, None).unwrap());
    let (mask, values) = ours(Arc::clone(&method), &weight, &stats);

    let mut module =
        Module::new("Linear").with_parameter("weight", weight.copy().set_requires_grad(true));
    prune::apply_calibrated(&mut module, "weight", Arc::clone(&method), &stats).unwrap();
    let orig = module.parameter("weight_orig").unwrap();
    let module_mask = module.buffer("weight_mask").unwrap();
    assert!(module_mask.equal(&mask));
    // The new values became the orig, kept entries equal to the VarStore's variable.
    assert!((orig * &mask).equal(&values));
    assert_eq!(
        module.pruning_hook("weight").unwrap().method_names(),
        ["sparsegpt"]
    );
    let state = module.state_dict();
    assert!(state.iter().any(|(k, _)| k == "weight_orig"));
}

#[test]
fn prunes_on_top_of_an_earlier_mask_and_keeps_its_zeros() {
    let (weight, _, stats) = layer(16, 64, 128, 5);
    let vs = nn::VarStore::new(Device::Cpu);
    let _w = vs.root().var_copy("w", &weight);
    let mut pruner = VarStorePruner::new(&vs);
    prune::l1_unstructured(&mut pruner, "w", 0.6, None).unwrap();
    let first = pruner.mask("w").unwrap().shallow_clone();
    for method in [
        Arc::new(Wanda::new(0.5, None).unwrap()) as Arc<dyn PruningMethod>,
        Arc::new(SparseGpt::new(0.7, None).unwrap()),
    ] {
        prune::apply_calibrated(&mut pruner, "w", method, &stats).unwrap();
        let mask = pruner.mask("w").unwrap();
        // Nothing pruned before is revived.
        assert_eq!(
            mask.logical_and(&first.logical_not())
                .sum(Kind::Int64)
                .int64_value(&[]),
            0
        );
    }
    assert_eq!(
        pruner.history("w").unwrap().method_names(),
        ["l1_unstructured", "wanda", "sparsegpt"]
    );
}

#[test]
fn a_failure_changes_nothing() {
    let (weight, _, stats) = layer(16, 64, 128, 6);
    let vs = nn::VarStore::new(Device::Cpu);
    let w = vs.root().var_copy("w", &weight);
    let other = vs.root().var_copy("narrow", &weight.narrow(1, 0, 32));
    let mut pruner = VarStorePruner::new(&vs);
    let sparsegpt = Arc::new(SparseGpt::new(0.5, None).unwrap());
    // Statistics of inputs of another width.
    let error =
        prune::apply_calibrated(&mut pruner, "narrow", sparsegpt.clone(), &stats).unwrap_err();
    assert!(error.to_string().contains("'narrow'"), "{error}");
    // Statistics without X^T X.
    let norms_only = Calibration::new(Needs::NORMS);
    norms_only.observe(&["w"], &Tensor::randn([8, 64], (Kind::Float, Device::Cpu)));
    let error = prune::apply_calibrated(
        &mut pruner,
        "w",
        sparsegpt,
        &norms_only.statistics("w").unwrap().unwrap(),
    )
    .unwrap_err();
    assert!(error.to_string().contains("X^T X"), "{error}");
    // A data-aware method without statistics.
    let error = prune::apply(
        &mut pruner,
        "w",
        Arc::new(Wanda::new(0.5, None).unwrap()),
        None,
    )
    .unwrap_err();
    assert!(error.to_string().contains("apply_calibrated"), "{error}");
    // N:M on rows that do not split into groups.
    let odd = vs
        .root()
        .var_copy("odd", &Tensor::randn([4, 66], (Kind::Float, Device::Cpu)));
    let calibration = Calibration::new(Needs::GRAM);
    calibration.observe(
        &["odd"],
        &Tensor::randn([8, 66], (Kind::Float, Device::Cpu)),
    );
    let error = prune::apply_calibrated(
        &mut pruner,
        "odd",
        Arc::new(Wanda::new(0.5, Some(NmPattern::TWO_FOUR)).unwrap()),
        &calibration.statistics("odd").unwrap().unwrap(),
    )
    .unwrap_err();
    assert!(error.to_string().contains("multiple of 4"), "{error}");
    assert!(pruner.pruned_names().is_empty());
    assert!(
        w.equal(&weight)
            && other.equal(&weight.narrow(1, 0, 32))
            && odd.abs().min().double_value(&[]) > 0.0
    );
}

#[test]
fn methods_are_found_by_name_and_built_from_json() {
    let registry = tchprune::Registry::with_builtins();
    let sparsegpt = registry
        .build(
            "sparsegpt",
            &serde_json::json!({"nm": "2:4", "dampening": 0.05}),
        )
        .unwrap();
    assert_eq!(sparsegpt.arguments()["nm"], "2:4");
    assert_eq!(sparsegpt.arguments()["dampening"], 0.05);
    assert_eq!(sparsegpt.needs(), Needs::GRAM);
    let wanda = registry
        .build("wanda", &serde_json::json!({"sparsity": 0.6}))
        .unwrap();
    assert_eq!(wanda.needs(), Needs::NORMS);
    let error = registry
        .build("wanda", &serde_json::json!({"nm": "4:2"}))
        .unwrap_err()
        .to_string();
    assert!(error.contains("'4:2'"), "{error}");
    let error = registry
        .build(
            "sparsegpt",
            &serde_json::json!({"nm": "2:4", "block_size": 30}),
        )
        .unwrap_err()
        .to_string();
    assert!(error.contains("block_size"), "{error}");
}

#[test]
fn sparsegpt_runs_on_cuda_like_on_the_cpu() {
    if !tch::Cuda::is_available() {
        eprintln!("skipped: no CUDA device");
        return;
    }
    for pattern in ["none", "2:4"] {
        let (weight, _, stats) = layer(64, 320, 1024, 40);
        let method = SparseGpt::new(0.5, nm(pattern)).unwrap();
        let cpu_mask = Tensor::ones([64, 320], (Kind::Bool, Device::Cpu));
        let (mask, values) = method
            .solve(&weight, stats.gram.as_ref().unwrap(), &cpu_mask)
            .unwrap();
        let cuda = Device::Cuda(0);
        let (cuda_mask, cuda_values) = method
            .solve(
                &weight.to_device(cuda),
                &stats.gram.as_ref().unwrap().to_device(cuda),
                &cpu_mask.to_device(cuda),
            )
            .unwrap();
        let differing = mask
            .ne_tensor(&cuda_mask.to_device(Device::Cpu))
            .sum(Kind::Int64)
            .int64_value(&[]);
        assert!(
            differing <= 2,
            "{pattern}: {differing} mask entries differ on CUDA"
        );
        if differing == 0 {
            let diff = (&values - cuda_values.to_device(Device::Cpu))
                .abs()
                .max()
                .double_value(&[]);
            assert!(diff < 1e-3, "{pattern}: values differ by {diff} on CUDA");
        }
    }
}
