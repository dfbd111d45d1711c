//! compressed-tensors' sparse-bitmask layout: the exact tensors it defines, lossless round trips
//! over shapes and dtypes, errors that name the weight, and the size on ResNet-50.

use std::collections::BTreeMap;
use std::sync::Arc;
use tch::{nn, Device, Kind, Tensor};
use tchprune::checkpoint::{self, sparse_bitmask, Checkpoint};
use tchprune::method::L1Unstructured;
use tchprune::{prune, PruneError, VarStorePruner};

fn checkpoint<S: Into<String>>(tensors: Vec<(S, Tensor)>) -> Checkpoint {
    Checkpoint {
        tensors: tensors.into_iter().map(|(k, v)| (k.into(), v)).collect(),
        metadata: BTreeMap::new(),
    }
}

fn get<'a>(c: &'a Checkpoint, key: &str) -> &'a Tensor {
    &c.tensors
        .iter()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("no '{key}'"))
        .1
}

#[test]
fn the_layout_is_compressed_tensors_own() {
    // rows of 10 entries: 2 bytes each, bits in little order
    let w = Tensor::from_slice(&[
        1.0f32, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 3.0, 0.0, //
        0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 4.0,
    ])
    .reshape([2, 10]);
    let bias = Tensor::from_slice(&[0.5f32, 0.0]);
    let compressed =
        sparse_bitmask::compress(&checkpoint(vec![("fc.weight", w), ("fc.bias", bias)])).unwrap();
    let keys: Vec<&str> = compressed.tensors.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "fc.bias",
            "fc.bitmask",
            "fc.compressed",
            "fc.row_offsets",
            "fc.shape"
        ]
    );
    assert_eq!(
        Vec::<i64>::try_from(get(&compressed, "fc.shape")).unwrap(),
        [2, 10]
    );
    assert_eq!(
        Vec::<f32>::try_from(get(&compressed, "fc.compressed")).unwrap(),
        [1.0, 2.0, 3.0, 4.0]
    );
    let bitmask = get(&compressed, "fc.bitmask");
    assert_eq!((bitmask.kind(), bitmask.size()), (Kind::Uint8, vec![2, 2]));
    assert_eq!(
        Vec::<u8>::try_from(bitmask.reshape([-1])).unwrap(),
        [0b0000_0101, 0b0000_0001, 0, 0b0000_0010]
    );
    assert_eq!(
        Vec::<i64>::try_from(get(&compressed, "fc.row_offsets")).unwrap(),
        [0, 3]
    );
    let config = sparse_bitmask::config(&compressed).unwrap();
    assert_eq!(config["format"], "sparse-bitmask");
    assert_eq!(config["targets"], serde_json::json!(["fc"]));
    assert_eq!(config["global_sparsity"].as_f64().unwrap(), 16.0 / 20.0);
}

#[test]
fn round_trips_are_lossless_over_shapes_and_dtypes() {
    tch::manual_seed(1);
    for kind in [Kind::Float, Kind::Double, Kind::Half, Kind::BFloat16] {
        for shape in [
            vec![7i64, 13],
            vec![4, 3, 3, 3],
            vec![8, 16, 1, 1],
            vec![1, 1],
            vec![3, 9],
        ] {
            let dense = Tensor::randn(shape.as_slice(), (kind, Device::Cpu));
            let keep = Tensor::rand(shape.as_slice(), (Kind::Float, Device::Cpu)).gt(0.7);
            let w = dense * keep.to_kind(kind);
            let original = checkpoint(vec![
                ("layer.weight", w.copy()),
                ("layer.bias", Tensor::ones([shape[0]], (kind, Device::Cpu))),
                (
                    "bn.running_mean",
                    Tensor::zeros([3], (Kind::Float, Device::Cpu)),
                ),
            ]);
            let compressed = sparse_bitmask::compress(&original).unwrap();
            assert!(sparse_bitmask::is_compressed(&compressed));
            let restored = sparse_bitmask::decompress(&compressed).unwrap();
            assert!(restored.metadata.is_empty(), "{:?}", restored.metadata);
            assert_eq!(restored.tensors.len(), 3);
            let back = get(&restored, "layer.weight");
            assert_eq!(back.size(), shape, "{kind:?}");
            assert_eq!(back.kind(), kind);
            assert!(back.equal(&w), "{kind:?} {shape:?}");
            assert!(get(&restored, "layer.bias").equal(get(&original, "layer.bias")));
        }
    }
}

#[test]
fn weights_of_more_than_two_dimensions_are_packed_as_their_2d_view() {
    let w = Tensor::ones([4, 3, 3, 3], (Kind::Float, Device::Cpu));
    let compressed = sparse_bitmask::compress(&checkpoint(vec![("conv.weight", w)])).unwrap();
    assert_eq!(
        Vec::<i64>::try_from(get(&compressed, "conv.shape")).unwrap(),
        [4, 27]
    );
    assert_eq!(get(&compressed, "conv.bitmask").size(), [4, 4]);
    assert_eq!(
        compressed.metadata[sparse_bitmask::SHAPES_KEY],
        r#"{"conv":[4,3,3,3]}"#
    );
}

#[test]
fn broken_parts_are_errors_naming_the_weight() {
    let w = Tensor::from_slice(&[1.0f32, 0.0, 2.0, 0.0]).reshape([2, 2]);
    let good = sparse_bitmask::compress(&checkpoint(vec![("fc.weight", w)])).unwrap();
    let without = |part: &str| Checkpoint {
        tensors: good
            .tensors
            .iter()
            .filter(|(k, _)| k != part)
            .map(|(k, v)| (k.clone(), v.shallow_clone()))
            .collect(),
        metadata: good.metadata.clone(),
    };
    let replaced = |part: &str, value: Tensor| {
        let mut c = without(part);
        c.tensors.push((part.to_owned(), value));
        c
    };
    let cases = [
        (without("fc.compressed"), "'.compressed' tensor is missing"),
        (
            replaced("fc.compressed", Tensor::from_slice(&[1.0f32])),
            "marks 2 non-zero entries but '.compressed' holds 1",
        ),
        (
            replaced("fc.bitmask", Tensor::from_slice(&[1u8, 1, 1])),
            "'.bitmask' must be uint8 with 2 x 1 entries",
        ),
        (
            replaced("fc.shape", Tensor::from_slice(&[2.0f32, 2.0])),
            "'.shape' must be a 1-d integer tensor",
        ),
    ];
    for (broken, message) in cases {
        let err = sparse_bitmask::decompress(&broken).unwrap_err();
        assert!(matches!(err, PruneError::InvalidCheckpoint(_)), "{err}");
        let text = err.to_string();
        assert!(text.contains("'fc.weight'"), "{text}");
        assert!(text.contains(message), "{text}");
    }
    let pruned = checkpoint(vec![
        (
            "fc.weight_orig",
            Tensor::ones([2, 2], (Kind::Float, Device::Cpu)),
        ),
        (
            "fc.weight_mask",
            Tensor::ones([2, 2], (Kind::Float, Device::Cpu)),
        ),
    ]);
    let err = sparse_bitmask::compress(&pruned).unwrap_err().to_string();
    assert!(err.contains("finalize the checkpoint"), "{err}");
}

#[test]
fn a_compressed_checkpoint_loads_dense() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.safetensors");
    let w = Tensor::from_slice(&[0.0f32, 3.0, 0.0, 0.0, 5.0, 0.0]).reshape([2, 3]);
    let compressed = sparse_bitmask::compress(&checkpoint(vec![("fc.weight", w.copy())])).unwrap();
    checkpoint::write(&compressed.tensors, &compressed.metadata, &path).unwrap();
    let loaded = checkpoint::load(&path).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].0, "fc.weight");
    assert!(loaded[0].1.equal(&w));

    // into a tch model, through its VarStore
    let vs = nn::VarStore::new(Device::Cpu);
    let _fc = nn::linear(
        vs.root() / "fc",
        3,
        2,
        nn::LinearConfig {
            bias: false,
            ..Default::default()
        },
    );
    let mut pruner = VarStorePruner::new(&vs);
    pruner.load(&path, true).unwrap();
    assert!(vs.variables()["fc.weight"].equal(&w));
}

/// ResNet-50's conv and linear weights pruned globally by magnitude, compressed, on disk.
fn resnet50_ratio(sparsity: f64) -> f64 {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let _net = tch::vision::resnet::resnet50(&vs.root(), 1000);
    let mut names: Vec<String> = vs
        .variables()
        .into_iter()
        .filter(|(name, t)| name.ends_with(".weight") && t.dim() >= 2)
        .map(|(name, _)| name)
        .collect();
    names.sort();
    let paths: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut pruner = VarStorePruner::new(&vs);
    let method = Arc::new(L1Unstructured::new(sparsity).unwrap());
    prune::global_unstructured(&mut pruner, &paths, method, &[]).unwrap();
    let weights = checkpoint(
        pruner
            .plain_state_dict()
            .into_iter()
            .filter(|(name, _)| names.contains(name))
            .collect(),
    );
    let dense_bytes: i64 = weights
        .tensors
        .iter()
        .map(|(_, t)| 4 * t.numel() as i64)
        .sum();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resnet50.safetensors");
    let compressed = sparse_bitmask::compress(&weights).unwrap();
    checkpoint::write(&compressed.tensors, &compressed.metadata, &path).unwrap();
    let restored = sparse_bitmask::decompress(&checkpoint::read(&path).unwrap()).unwrap();
    for ((name, a), (_, b)) in weights.tensors.iter().zip(&restored.tensors) {
        assert!(a.equal(b), "{name}");
    }
    std::fs::metadata(&path).unwrap().len() as f64 / dense_bytes as f64
}

#[test]
fn resnet50_weights_at_90_and_95_percent_meet_the_size_targets() {
    let at_90 = resnet50_ratio(0.9);
    let at_95 = resnet50_ratio(0.95);
    println!("ResNet-50 conv/linear weights on disk: 90%: {at_90:.4}x, 95%: {at_95:.4}x");
    assert!(at_90 <= 0.15, "{at_90}");
    assert!(at_95 <= 0.09, "{at_95}");
}
