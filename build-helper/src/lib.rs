//! Links a crate's executables to the libtorch that tchprune was built against.
//!
//! tch finds libtorch when it builds (`LIBTORCH`), but the link arguments of a dependency's
//! build script never reach the executables of the crate that uses it: without an rpath they
//! exit with "libtorch_cpu.so: cannot open shared object file" unless `LD_LIBRARY_PATH` is set,
//! and the linker drops `libtorch_cuda` (nothing calls it by name), so CUDA is not seen. A
//! crate's own build script is the one place that can add both, so call this from yours:
//!
//! ```no_run
//! // build.rs
//! fn main() {
//!     tchprune_build::link_libtorch();
//! }
//! ```
//!
//! The libtorch directory comes from tchprune's build (cargo hands it to the build scripts
//! of crates that depend on `tchprune` as `DEP_TCHPRUNE_LIBTORCH_LIB`), so it is always the
//! one the crate was compiled against.

#![warn(missing_docs)]
// The crate's example is a build script, whose `main` is the point.
#![allow(clippy::needless_doctest_main)]

use std::path::{Path, PathBuf};

/// Where libtorch is, as the build scripts of tchprune (`DEP_TCHPRUNE_LIBTORCH_LIB`) or of
/// tch's `torch-sys` (`DEP_TCH_LIBTORCH_LIB`, for tchprune's own build) report it.
pub fn libtorch_lib_dir() -> Option<PathBuf> {
    ["DEP_TCHPRUNE_LIBTORCH_LIB", "DEP_TCH_LIBTORCH_LIB"]
        .into_iter()
        .find_map(|name| {
            println!("cargo:rerun-if-env-changed={name}");
            std::env::var_os(name)
        })
        .map(PathBuf::from)
}

/// How to link the crate's executables (tests, examples, binaries, benchmarks, cdylibs).
#[derive(Clone, Copy, Debug)]
pub struct Link {
    cuda: bool,
}

impl Default for Link {
    fn default() -> Self {
        Self { cuda: true }
    }
}

impl Link {
    /// An rpath to libtorch, and libtorch's CUDA part when the installed libtorch has one.
    pub fn new() -> Self {
        Self::default()
    }

    /// Leaves libtorch's CUDA part out: the executables start faster and smaller (no CUDA
    /// libraries are loaded), and only ever see the CPU (`tch::Cuda::is_available()` is false).
    /// For tools that never run on a GPU.
    pub fn cpu_only(mut self) -> Self {
        self.cuda = false;
        self
    }

    /// Prints the cargo instructions.
    ///
    /// # Panics
    /// When no libtorch directory was handed down: the crate does not depend on `tchprune`.
    pub fn emit(self) {
        let Some(lib) = libtorch_lib_dir() else {
            panic!(
                "tchprune-build: cargo did not say where libtorch is (DEP_TCHPRUNE_LIBTORCH_LIB): \
                 call tchprune_build from the build script of a crate that has `tchprune` in \
                 its [dependencies]"
            );
        };
        for instruction in instructions(&lib, self.cuda && has_cuda(&lib)) {
            println!("cargo:{instruction}");
        }
    }
}

/// Links the crate's executables to libtorch, with CUDA when the installed libtorch has it:
/// `Link::new().emit()`.
pub fn link_libtorch() {
    Link::new().emit();
}

fn has_cuda(lib: &Path) -> bool {
    lib.join("libtorch_cuda.so").exists()
}

/// The cargo instructions (without the `cargo:` prefix) that link to the libtorch in `lib`.
pub fn instructions(lib: &Path, cuda: bool) -> Vec<String> {
    let lib = lib.display();
    let mut out = vec![
        format!("rustc-link-search=native={lib}"),
        format!("rustc-link-arg=-Wl,-rpath,{lib}"),
    ];
    if cuda {
        // `libtorch.so` needs `libtorch_cuda.so`, whose loading registers the CUDA backend.
        out.push("rustc-link-arg=-Wl,--no-as-needed".to_owned());
        out.push("rustc-link-arg=-ltorch".to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_only_links_no_cuda() {
        let lib = Path::new("/opt/torch/lib");
        let cpu = instructions(lib, false);
        assert_eq!(
            cpu,
            [
                "rustc-link-search=native=/opt/torch/lib",
                "rustc-link-arg=-Wl,-rpath,/opt/torch/lib"
            ]
        );
        let cuda = instructions(lib, true);
        assert_eq!(cuda[..2], cpu[..]);
        assert_eq!(
            cuda[2..],
            [
                "rustc-link-arg=-Wl,--no-as-needed",
                "rustc-link-arg=-ltorch"
            ]
        );
    }
}
