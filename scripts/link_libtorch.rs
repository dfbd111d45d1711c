//! Build script shared by every crate that produces executables (tests, examples, binaries).
//!
//! tch's own link arguments do not reach our executables, so each of them gets an rpath to
//! libtorch (they run without `LD_LIBRARY_PATH`) and `--no-as-needed -ltorch`, which keeps
//! `libtorch_cuda` linked so that CUDA is seen on GPU machines. `scripts/bootstrap.sh` writes
//! `TCHPRUNE_TORCH_LIB` into `.cargo/config.toml`.

fn main() {
    println!("cargo:rerun-if-env-changed=TCHPRUNE_TORCH_LIB");
    println!("cargo:rerun-if-changed=../scripts/link_libtorch.rs");
    match std::env::var("TCHPRUNE_TORCH_LIB") {
        Ok(lib) => {
            println!("cargo:rustc-link-search=native={lib}");
            println!("cargo:rustc-link-arg=-Wl,-rpath={lib}");
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
            println!("cargo:rustc-link-arg=-ltorch");
        }
        Err(_) => println!(
            "cargo:warning=TCHPRUNE_TORCH_LIB is not set: run scripts/bootstrap.sh first, \
             or executables will need LD_LIBRARY_PATH to find libtorch"
        ),
    }
}
