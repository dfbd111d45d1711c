//! Interop with the Python package compressed-tensors (the version scripts/bootstrap.sh pins):
//! what tchprune compresses decompresses there to the same tensors, and what compressed-tensors
//! compresses loads in tchprune.

mod common;

use std::collections::BTreeMap;
use tch::{Device, Kind, Tensor};
use tchprune::checkpoint::{self, sparse_bitmask, Checkpoint};

fn sparse(shape: &[i64], kind: Kind) -> Tensor {
    let dense = Tensor::randn(shape, (kind, Device::Cpu));
    let keep = Tensor::rand(shape, (Kind::Float, Device::Cpu)).gt(0.8);
    dense * keep.to_kind(kind)
}

fn state() -> Vec<(String, Tensor)> {
    tch::manual_seed(4);
    vec![
        ("conv1.weight".into(), sparse(&[6, 1, 3, 3], Kind::Float)),
        (
            "conv1.bias".into(),
            Tensor::randn([6], (Kind::Float, Device::Cpu)),
        ),
        ("fc1.weight".into(), sparse(&[120, 400], Kind::Float)),
        (
            "fc1.bias".into(),
            Tensor::randn([120], (Kind::Float, Device::Cpu)),
        ),
        ("fc2.weight".into(), sparse(&[84, 13], Kind::Half)),
        ("head.fc.weight".into(), sparse(&[10, 84], Kind::BFloat16)),
    ]
}

#[test]
fn compressed_tensors_decompresses_what_tchprune_compresses() {
    let dir = tempfile::tempdir().unwrap();
    let (ours, theirs) = (
        dir.path().join("ours.safetensors"),
        dir.path().join("theirs.safetensors"),
    );
    let original = Checkpoint {
        tensors: state(),
        metadata: BTreeMap::new(),
    };
    let compressed = sparse_bitmask::compress(&original).unwrap();
    checkpoint::write(&compressed.tensors, &compressed.metadata, &ours).unwrap();
    common::run_python(
        "sparse_bitmask.py",
        &["decompress".as_ref(), &ours, &theirs],
    );
    let decompressed = common::read_tensors(&theirs);
    assert_eq!(
        decompressed.len(),
        original.tensors.len(),
        "{:?}",
        decompressed.keys()
    );
    for (name, t) in &original.tensors {
        let back = &decompressed[name];
        assert_eq!(back.kind(), t.kind(), "{name}");
        // convolutions come back as their 2-d view, [out, in * kh * kw]
        assert!(back.reshape(t.size()).equal(t), "{name}");
    }
}

#[test]
fn tchprune_loads_what_compressed_tensors_compresses() {
    let dir = tempfile::tempdir().unwrap();
    let (dense, theirs) = (
        dir.path().join("dense.safetensors"),
        dir.path().join("theirs.safetensors"),
    );
    // compressed-tensors compresses every `*.weight`: give it the 2-d ones
    let mut original: Vec<(String, Tensor)> = state()
        .into_iter()
        .filter(|(name, t)| !name.ends_with(".weight") || t.dim() == 2)
        .collect();
    original.sort_by(|(a, _), (b, _)| a.cmp(b));
    checkpoint::write(&original, &BTreeMap::new(), &dense).unwrap();
    common::run_python("sparse_bitmask.py", &["compress".as_ref(), &dense, &theirs]);
    let raw = checkpoint::read(&theirs).unwrap();
    assert!(sparse_bitmask::is_compressed(&raw));
    assert!(raw.tensors.iter().any(|(k, _)| k == "fc1.row_offsets"));
    let loaded = checkpoint::load(&theirs).unwrap();
    assert_eq!(loaded.len(), original.len());
    for ((name, a), (loaded_name, b)) in original.iter().zip(&loaded) {
        assert_eq!(name, loaded_name);
        assert!(a.equal(b), "{name}");
    }
    // and tchprune writes the same parts compressed-tensors wrote
    let ours = sparse_bitmask::compress(&Checkpoint {
        tensors: original,
        metadata: BTreeMap::new(),
    })
    .unwrap();
    for (name, t) in &ours.tensors {
        let (_, theirs) = raw.tensors.iter().find(|(k, _)| k == name).unwrap();
        assert!(t.equal(theirs), "{name}");
    }
}
