//! The examples' data: Fashion-MNIST from Debian's `dataset-fashion-mnist` package when it is
//! installed, else a synthetic task of the same shape, so that every example runs anywhere.

use std::io::Read;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// Where Debian's `dataset-fashion-mnist` puts the IDX files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Images `[N, 1, 28, 28]` in [0, 1] and their labels, for training and testing.
#[derive(Debug)]
pub struct Data {
    /// Training images.
    pub train_x: Tensor,
    /// Training labels.
    pub train_y: Tensor,
    /// Test images.
    pub test_x: Tensor,
    /// Test labels.
    pub test_y: Tensor,
    /// What the data is, for the output.
    pub name: String,
}

/// Fashion-MNIST from `dir` (gzipped IDX files, as Debian ships them) when they are there.
pub fn fashion_mnist(dir: &Path) -> anyhow::Result<Option<Data>> {
    if !dir.join("train-images-idx3-ubyte.gz").exists() {
        return Ok(None);
    }
    let m = tch::vision::mnist::load_dir(gunzip_idx_files(dir)?)?;
    let shape = |t: Tensor| t.view([-1, 1, 28, 28]);
    Ok(Some(Data {
        train_x: shape(m.train_images),
        train_y: m.train_labels,
        test_x: shape(m.test_images),
        test_y: m.test_labels,
        name: format!("Fashion-MNIST from {}", dir.display()),
    }))
}

/// A task of Fashion-MNIST's shape that small networks learn in a few hundred steps: the class
/// is the brightest of ten horizontal bands of noise.
pub fn synthetic(train: i64, test: i64) -> Data {
    let make = |n: i64| {
        let x = Tensor::rand([n, 1, 28, 28], (Kind::Float, Device::Cpu)) * 0.3;
        let y = Tensor::randint(10, [n], (Kind::Int64, Device::Cpu));
        let rows = (y.view([n, 1]) * 2 + 4).repeat([1, 2]) + Tensor::from_slice(&[0i64, 1]);
        let band = Tensor::zeros([n, 28], (Kind::Float, Device::Cpu)).scatter_value(1, &rows, 1.0);
        (x + band.view([n, 1, 28, 1]), y)
    };
    let ((train_x, train_y), (test_x, test_y)) = (make(train), make(test));
    Data {
        train_x,
        train_y,
        test_x,
        test_y,
        name: "synthetic bands (no Fashion-MNIST found)".into(),
    }
}

/// Fashion-MNIST from `--data DIR` or Debian's place, else [`synthetic`] data.
pub fn from_args_or_synthetic() -> anyhow::Result<Data> {
    let dir = std::env::args()
        .skip_while(|a| a != "--data")
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(FASHION_MNIST_DIR));
    Ok(fashion_mnist(&dir)?.unwrap_or_else(|| synthetic(6000, 1000)))
}

/// The most bytes an unpacked IDX file may have (Fashion-MNIST's largest has 47,040,016).
const MAX_IDX_BYTES: u64 = 64 << 20;

/// tch reads plain IDX files; Debian ships them gzipped. Unpacks them under `target/`.
fn gunzip_idx_files(dir: &Path) -> anyhow::Result<PathBuf> {
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
            let source = dir.join(format!("{name}.gz"));
            let gz = tchprune::files::open_regular(&source)?;
            let mut tmp = tempfile::NamedTempFile::new_in(&out)?;
            let unpacked = std::io::copy(
                &mut flate2::read::GzDecoder::new(gz).take(MAX_IDX_BYTES + 1),
                &mut tmp,
            )?;
            anyhow::ensure!(
                unpacked <= MAX_IDX_BYTES,
                "{}: unpacks to more than {MAX_IDX_BYTES} bytes, more than any Fashion-MNIST file",
                source.display()
            );
            tmp.persist(target)?;
        }
    }
    Ok(out)
}
