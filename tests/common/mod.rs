//! Helpers shared by the cross-crate tests: building the plugin crates, and model snapshots.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use tch::{Kind, Tensor};
use tchprune::Module;

/// Every plugin crate of the workspace, shipped plugins and test fixtures.
const PLUGIN_PACKAGES: &[&str] = &[
    "tchprune-plugin-foobar",
    "tchprune-plugin-nm",
    "tchprune-fixture-misbehaving",
    "tchprune-fixture-wrong-shape",
    "tchprune-fixture-future-api",
    "tchprune-fixture-not-a-plugin",
    "tchprune-fixture-first-entries",
    "tchprune-fixture-first-channels",
    "tchprune-fixture-calibrated",
];

/// The workspace root.
pub fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
}

/// The shared library of the plugin crate `package`, built (once per test binary) with cargo
/// into `target/plugins`, apart from the target directory the tests themselves run from.
pub fn plugin(package: &str) -> PathBuf {
    assert!(
        PLUGIN_PACKAGES.contains(&package),
        "unknown plugin crate {package}"
    );
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let target = workspace().join("target/plugins");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut command = Command::new(cargo);
        command
            .current_dir(workspace())
            .args(["build", "--quiet", "--target-dir"])
            .arg(&target);
        for package in PLUGIN_PACKAGES {
            command.args(["-p", package]);
        }
        let status = command.status().expect("cargo runs");
        assert!(status.success(), "building the plugin crates failed");
        target.join("debug")
    });
    dir.join(format!(
        "{}{}{}",
        std::env::consts::DLL_PREFIX,
        package.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    ))
}

/// The fenced blocks of `markdown` whose info string is `lang`.
pub fn code_blocks<'a>(markdown: &'a str, lang: &str) -> Vec<&'a str> {
    let fence = format!("```{lang}\n");
    markdown
        .split(fence.as_str())
        .skip(1)
        .map(|rest| &rest[..rest.find("```").expect("closed fence")])
        .collect()
}

/// `t` flattened into `f64`s.
pub fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
}

/// Everything that defines a module's state: parameter and buffer values, and the pruning
/// histories.
pub fn snapshot(model: &Module) -> (Vec<(String, Vec<f64>)>, Vec<String>) {
    let state = model
        .state_dict()
        .into_iter()
        .map(|(name, t)| (name, values(&t)))
        .collect();
    let hooks = model
        .named_modules()
        .iter()
        .flat_map(|(_, sub)| sub.pruning_hooks().map(|h| format!("{h:?}")))
        .collect();
    (state, hooks)
}

/// The mask buffer of the pruned tensor at `path` (`"fc1.weight"`), as `bool`.
pub fn mask(model: &Module, path: &str) -> Tensor {
    let (module, name) = tchprune::split_tensor_path(path);
    model
        .submodule(module)
        .expect("the module exists")
        .buffer(&tchprune::mask_name(name))
        .unwrap_or_else(|| panic!("{path} is pruned"))
        .to_kind(Kind::Bool)
}

/// The tensor at `path` (`"fc1.weight"`), as the forward pass sees it.
pub fn tensor(model: &Module, path: &str) -> Tensor {
    let (module, name) = tchprune::split_tensor_path(path);
    model
        .submodule(module)
        .expect("the module exists")
        .get(name)
}

/// A fresh LeNet with its own variables.
pub fn lenet() -> (tch::nn::VarStore, Module) {
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let model = tchprune::layers::lenet(&vs.root());
    (vs, model)
}
