//! Pruning inside a training loop: train LeNet, prune 80% globally by magnitude in three rounds
//! while fine-tuning, then make the pruning permanent. Uses Fashion-MNIST when Debian's
//! `dataset-fashion-mnist` is installed (`apt-get install dataset-fashion-mnist`) (or `--data DIR` points at the IDX files), else a
//! synthetic task. `cargo run --release --example train_pruned`

use std::path::PathBuf;
use std::sync::Arc;
use tch::nn::OptimizerConfig;
use tch::{nn, Device, Kind, Tensor};
use tchprune::layers::LENET_WEIGHTS;
use tchprune::method::L1Unstructured;
use tchprune::sparsity::sparsity;
use tchprune::{layers, prune, Module};

struct Data {
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    name: String,
}

fn load_data() -> anyhow::Result<Data> {
    let dir = std::env::args()
        .skip_while(|a| a != "--data")
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/datasets/fashion-mnist"));
    if dir.join("train-images-idx3-ubyte.gz").exists() {
        let m = tch::vision::mnist::load_dir(gunzip_idx_files(&dir)?)?;
        let shape = |t: Tensor| t.view([-1, 1, 28, 28]);
        return Ok(Data {
            train_x: shape(m.train_images),
            train_y: m.train_labels,
            test_x: shape(m.test_images),
            test_y: m.test_labels,
            name: format!("Fashion-MNIST from {}", dir.display()),
        });
    }
    // The class is the brightest of ten horizontal bands.
    let make = |n: i64| {
        let x = Tensor::rand([n, 1, 28, 28], (Kind::Float, Device::Cpu)) * 0.3;
        let y = Tensor::randint(10, [n], (Kind::Int64, Device::Cpu));
        let rows = (y.view([n, 1]) * 2 + 4).repeat([1, 2]) + Tensor::from_slice(&[0i64, 1]);
        let band = Tensor::zeros([n, 28], (Kind::Float, Device::Cpu)).scatter_value(1, &rows, 1.0);
        (x + band.view([n, 1, 28, 1]), y)
    };
    let ((train_x, train_y), (test_x, test_y)) = (make(6000), make(1000));
    Ok(Data {
        train_x,
        train_y,
        test_x,
        test_y,
        name: "synthetic bands (no Fashion-MNIST found)".into(),
    })
}

/// tch reads plain IDX files; Debian ships them gzipped. Unpacks them under `target/`.
fn gunzip_idx_files(dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/fashion-mnist");
    std::fs::create_dir_all(&out)?;
    for name in [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ] {
        let target = out.join(name);
        if !target.exists() {
            let gz = std::fs::File::open(dir.join(format!("{name}.gz")))?;
            let tmp = out.join(format!("{name}.tmp"));
            std::io::copy(
                &mut flate2::read::GzDecoder::new(gz),
                &mut std::fs::File::create(&tmp)?,
            )?;
            std::fs::rename(tmp, target)?;
        }
    }
    Ok(out)
}

fn accuracy(model: &Module, data: &Data) -> f64 {
    tch::no_grad(|| {
        model
            .forward(&data.test_x)
            .accuracy_for_logits(&data.test_y)
            .double_value(&[])
    })
}

fn train_epoch(model: &Module, opt: &mut nn::Optimizer, data: &Data) {
    for (x, y) in tch::data::Iter2::new(&data.train_x, &data.train_y, 128).shuffle() {
        opt.backward_step(&model.forward_t(&x, true).cross_entropy_for_logits(&y));
    }
}

fn main() -> anyhow::Result<()> {
    tch::manual_seed(0);
    let data = load_data()?;
    println!("data: {}", data.name);
    let vs = nn::VarStore::new(Device::Cpu);
    let mut model = layers::lenet(&vs.root());
    let mut opt = nn::Adam::default().build(&vs, 1e-3)?;
    train_epoch(&model, &mut opt, &data);
    println!("dense: accuracy {:.3}", accuracy(&model, &data));
    // three rounds of 41.5% of what remains leave about 20% of the weights
    for round in 1..=3 {
        prune::global_unstructured(
            &mut model,
            &LENET_WEIGHTS,
            Arc::new(L1Unstructured::new(0.415)?),
            &[],
        )?;
        let pruned = accuracy(&model, &data);
        train_epoch(&model, &mut opt, &data);
        let global = sparsity(&model, &LENET_WEIGHTS)?
            .pop()
            .expect("a global row");
        println!(
            "round {round}: sparsity {:.1}%, accuracy right after pruning {pruned:.3}, after fine-tuning {:.3}",
            global.percent(),
            accuracy(&model, &data)
        );
    }
    for path in LENET_WEIGHTS {
        prune::remove(&mut model, path)?;
    }
    let global = sparsity(&model, &LENET_WEIGHTS)?
        .pop()
        .expect("a global row");
    println!(
        "after remove: sparsity {:.1}%, accuracy {:.3}, still pruned: {}",
        global.percent(),
        accuracy(&model, &data),
        prune::is_pruned(&model)
    );
    Ok(())
}
