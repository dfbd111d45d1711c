//! The plugin author's guide works as written: its `Cargo.toml` and `src/lib.rs`, taken from
//! `plugin-api/README.md`, build into a plugin that loads and prunes.

mod common;

use serde_json::json;
use std::process::Command;
use tchprune::{prune, Registry};

#[test]
fn the_guides_foobar_builds_loads_and_prunes() {
    let guide = std::fs::read_to_string(common::workspace().join("plugin-api/README.md")).unwrap();
    let manifest = common::code_blocks(&guide, "toml")
        .into_iter()
        .find(|block| block.contains("crate-type = [\"cdylib\"]"))
        .expect("the guide shows the plugin's Cargo.toml");
    let source = common::code_blocks(&guide, "rust")
        .into_iter()
        .find(|block| block.contains("export_plugin!"))
        .expect("the guide shows the plugin's src/lib.rs");

    let dir = tempfile::tempdir().unwrap();
    let api = common::workspace().join("plugin-api");
    let manifest = manifest.replace("../tchprune/plugin-api", api.to_str().unwrap());
    std::fs::create_dir(dir.path().join("src")).unwrap();
    std::fs::write(
        dir.path().join("Cargo.toml"),
        format!("{manifest}\n[workspace]\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("src/lib.rs"), source).unwrap();
    // The workspace's lock file pins the versions the rest of the tests already fetched.
    std::fs::copy(
        common::workspace().join("Cargo.lock"),
        dir.path().join("Cargo.lock"),
    )
    .unwrap();
    let target = common::workspace().join("target/plugins");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(dir.path())
        .args(["build", "--quiet", "--offline", "--target-dir"])
        .arg(&target)
        .status()
        .unwrap();
    assert!(status.success(), "the guide's plugin does not build");

    let library = target.join("debug").join(format!(
        "{}foobar_plugin{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    let mut registry = Registry::with_builtins();
    assert_eq!(registry.load_plugin(&library).unwrap(), ["my_foobar"]);
    let (_vs, mut model) = common::lenet();
    let method = registry.build("my_foobar", &json!({})).unwrap();
    prune::apply(&mut model, "fc3.bias", method, None).unwrap();
    assert_eq!(
        common::values(&common::mask(&model, "fc3.bias")),
        [0., 1., 0., 1., 0., 1., 0., 1., 0., 1.]
    );
}
