//! Finding pruning methods by name and building them from JSON arguments.
//!
//! Built-in methods register themselves with [`inventory`] next to their definitions, so adding a
//! method is one `inventory::submit!` and no central list to edit. A [`Registry`] snapshots
//! them and can take more entries (methods of the application, or plugins) under the rule that
//! names are unique.

use crate::error::{PruneError, Result};
use crate::method::PruningMethod;
use serde_json::Value;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Builds a method from its JSON arguments.
pub type BuildFn = fn(&Value) -> Result<Arc<dyn PruningMethod>>;

/// A builder that may hold state (a plugin's handle, say).
type Builder = Arc<dyn Fn(&Value) -> Result<Arc<dyn PruningMethod>> + Send + Sync>;

/// A statically registered method: submit one with `inventory::submit!` to make a method of
/// your crate available by name.
#[derive(Debug)]
pub struct MethodEntry {
    /// The name it is found by (`"l1_unstructured"`).
    pub name: &'static str,
    /// PyTorch's PRUNING_TYPE as text: `"unstructured"`, `"structured"` or `"global"`.
    pub pruning_type: &'static str,
    /// One line saying what it does.
    pub description: &'static str,
    /// The arguments it takes: name and meaning.
    pub arguments: &'static [(&'static str, &'static str)],
    /// Builds it from JSON arguments.
    pub build: BuildFn,
}

inventory::collect!(MethodEntry);

/// Where a registered method comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Compiled into this program.
    BuiltIn,
    /// Loaded from a plugin file.
    Plugin(PathBuf),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::BuiltIn => f.write_str("built-in"),
            Origin::Plugin(path) => write!(f, "plugin {}", path.display()),
        }
    }
}

/// A method known to a [`Registry`].
#[derive(Clone)]
pub struct Registered {
    /// The name it is found by.
    pub name: String,
    /// PRUNING_TYPE as text.
    pub pruning_type: String,
    /// One line saying what it does.
    pub description: String,
    /// Where it comes from.
    pub origin: Origin,
    /// The arguments it takes: name and meaning.
    pub arguments: Vec<(String, String)>,
    builder: Builder,
}

impl fmt::Debug for Registered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registered")
            .field("name", &self.name)
            .field("pruning_type", &self.pruning_type)
            .field("origin", &self.origin)
            .finish()
    }
}

impl Registered {
    /// An entry built by `builder`.
    pub fn new(
        name: impl Into<String>,
        pruning_type: impl Into<String>,
        description: impl Into<String>,
        origin: Origin,
        builder: impl Fn(&Value) -> Result<Arc<dyn PruningMethod>> + Send + Sync + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            pruning_type: pruning_type.into(),
            description: description.into(),
            origin,
            arguments: Vec::new(),
            builder: Arc::new(builder),
        }
    }

    /// This entry with the arguments it declares (name and meaning).
    pub fn with_arguments(mut self, arguments: Vec<(String, String)>) -> Self {
        self.arguments = arguments;
        self
    }

    /// Builds the method from its JSON arguments.
    pub fn build(&self, args: &Value) -> Result<Arc<dyn PruningMethod>> {
        (self.builder)(args)
    }
}

/// Methods by name: the built-ins, plus whatever is registered later.
///
/// ```
/// let registry = tchprune::Registry::with_builtins();
/// let method = registry.build("l1_unstructured", &serde_json::json!({"amount": 0.3})).unwrap();
/// assert_eq!(method.name(), "l1_unstructured");
/// ```
#[derive(Clone, Debug)]
pub struct Registry {
    entries: Vec<Registered>,
}

impl Registry {
    /// A registry with no method at all.
    pub fn empty() -> Self {
        Self {
            entries: Vec::new(),
        }
    }

    /// Every method submitted with `inventory` in this program, sorted by name.
    pub fn with_builtins() -> Self {
        let mut entries: Vec<Registered> = inventory::iter::<MethodEntry>
            .into_iter()
            .map(|entry| {
                let build = entry.build;
                let arguments = (entry.arguments.iter())
                    .map(|(name, meaning)| (name.to_string(), meaning.to_string()))
                    .collect();
                Registered::new(
                    entry.name,
                    entry.pruning_type,
                    entry.description,
                    Origin::BuiltIn,
                    build,
                )
                .with_arguments(arguments)
            })
            .collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Self { entries }
    }

    /// Adds a method; a name that is already taken is an error.
    pub fn register(&mut self, entry: Registered) -> Result<()> {
        self.register_all(vec![entry]).map(drop)
    }

    /// Adds several methods, all or none: if any name is taken (or repeated among them), the
    /// registry is left as it was. Returns their names.
    pub fn register_all(&mut self, entries: Vec<Registered>) -> Result<Vec<String>> {
        for (i, entry) in entries.iter().enumerate() {
            let mut earlier = self.entries.iter().chain(&entries[..i]);
            if let Some(existing) = earlier.find(|e| e.name == entry.name) {
                return Err(PruneError::DuplicateMethod {
                    name: entry.name.clone(),
                    existing: existing.origin.to_string(),
                    new: entry.origin.to_string(),
                });
            }
        }
        let names = entries.iter().map(|entry| entry.name.clone()).collect();
        self.entries.extend(entries);
        Ok(names)
    }

    /// Loads the plugin file at `path` and registers its methods (all or none); returns their
    /// names. Loading a file that is loaded already (under any path to it) changes nothing.
    pub fn load_plugin(&mut self, path: impl AsRef<Path>) -> Result<Vec<String>> {
        let path = path.as_ref();
        if let Some(names) = self.loaded_from(path) {
            return Ok(names);
        }
        self.register_all(crate::plugin::load(path)?)
    }

    /// Loads every plugin in the directory `dir` (see [`crate::plugin::plugin_files`]) and
    /// registers their methods (all or none); returns their names. Files loaded already change
    /// nothing.
    pub fn load_plugin_dir(&mut self, dir: impl AsRef<Path>) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let mut entries = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for file in crate::plugin::plugin_files(dir.as_ref())? {
            // A symlink or a hardlink to a file listed before is that file again.
            if file_identity(&file).is_some_and(|identity| !seen.insert(identity)) {
                continue;
            }
            match self.loaded_from(&file) {
                Some(loaded) => names.extend(loaded),
                None => entries.extend(crate::plugin::load(&file)?),
            }
        }
        names.extend(self.register_all(entries)?);
        Ok(names)
    }

    /// The names of the methods loaded from the plugin file at `path` (or another name of the
    /// same file: a symlink, a hardlink), if it is loaded.
    fn loaded_from(&self, path: &Path) -> Option<Vec<String>> {
        let file = file_identity(path)?;
        let names: Vec<String> = self
            .entries
            .iter()
            .filter(|entry| match &entry.origin {
                Origin::Plugin(loaded) => file_identity(loaded) == Some(file),
                Origin::BuiltIn => false,
            })
            .map(|entry| entry.name.clone())
            .collect();
        (!names.is_empty()).then_some(names)
    }

    /// The method registered under `name`.
    pub fn get(&self, name: &str) -> Option<&Registered> {
        self.entries.iter().find(|entry| entry.name == name)
    }

    /// Builds the method `name` from its JSON arguments.
    pub fn build(&self, name: &str, args: &Value) -> Result<Arc<dyn PruningMethod>> {
        self.get(name)
            .ok_or_else(|| PruneError::UnknownMethod(name.to_owned()))?
            .build(args)
    }

    /// Every registered method.
    pub fn iter(&self) -> impl Iterator<Item = &Registered> {
        self.entries.iter()
    }
}

/// The file `path` names (following symlinks), as its device and inode.
fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.dev(), metadata.ino()))
}

impl Default for Registry {
    fn default() -> Self {
        Self::with_builtins()
    }
}
