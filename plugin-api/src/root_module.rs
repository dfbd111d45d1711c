//! The root module every plugin exports, and how its version is checked.
//!
//! The host finds the module through one exported symbol and lets abi_stable check two things
//! before calling anything in it: the plugin-api version the plugin was built against (the same
//! major version, and for 0.x the same minor version or newer) and the layout of every type
//! reachable from the module. A plugin that fails either check is refused, never called.

use crate::method::{MethodBox, MethodInfo};
use abi_stable::library::RootModule;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{RResult, RStr, RString, RVec};
use abi_stable::{package_version_strings, StableAbi};

/// The functions a plugin exports.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModuleRef)))]
#[sabi(missing_field(panic))]
pub struct PluginModule {
    /// The metadata of every method in the plugin.
    pub methods: extern "C" fn() -> RResult<RVec<MethodInfo>, RString>,

    /// Builds the method `name` from its arguments (a JSON object as text).
    #[sabi(last_prefix_field)]
    pub build:
        extern "C" fn(name: RStr<'_>, arguments_json: RStr<'_>) -> RResult<MethodBox, RString>,
}

impl RootModule for PluginModuleRef {
    abi_stable::declare_root_module_statics! {PluginModuleRef}
    const BASE_NAME: &'static str = "tchprune_plugin";
    const NAME: &'static str = "tchprune_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// The version of this crate, which a plugin records when it is built.
pub const PLUGIN_API_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Exports `$root: fn() -> PluginModuleRef` as the plugin's root module: the one exported
/// symbol the host looks for. [`export_plugin!`](crate::export_plugin) uses it; call it directly
/// only when writing the module by hand.
#[macro_export]
macro_rules! export_root_module {
    ($root:path) => {
        #[doc(hidden)]
        #[no_mangle]
        pub static _1as_0lib_1header_0root_bmodule_bloader:
            $crate::abi_stable::library::LibHeader = {
            extern "C" fn erased_root_module() -> $crate::abi_stable::library::RootModuleResult {
                $crate::abi_stable::library::__call_root_module_loader($root)
            }
            // SAFETY: `erased_root_module` returns a `PluginModuleRef`, the type named here.
            unsafe {
                $crate::abi_stable::library::LibHeader::from_constructor::<$crate::PluginModuleRef>(
                    erased_root_module,
                    $crate::abi_stable::library::CheckTypeLayout::Yes,
                )
            }
        };
    };
}
