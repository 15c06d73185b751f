//! Where the build script finds the `.proto` files. Its own file so that
//! the crate's tests can run it (`src/lib.rs` includes it under test).

use std::env::VarError;
use std::path::PathBuf;

/// The root of the `.proto` files: `../proto` from the crate's manifest
/// directory, which `var` (`std::env::var` in the build script) gives
/// when the script runs.
///
/// Read at run time: `env!` would bake in the directory of whichever
/// checkout first compiled the script, and a second checkout sharing the
/// target directory then fails with "not in any include path".
pub(crate) fn proto_root(
    var: impl FnOnce(&str) -> Result<String, VarError>,
) -> Result<PathBuf, VarError> {
    Ok(PathBuf::from(var("CARGO_MANIFEST_DIR")?).join("../proto"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: two checkouts sharing a target directory broke each
    /// other's builds while the script took the manifest directory at
    /// compile time. The root follows whatever directory the variable
    /// names when the script runs, not the one this was compiled in.
    #[test]
    fn reads_the_manifest_dir_at_run_time() {
        let other = std::env::temp_dir().join("another-checkout/station-net");
        let other_text = other.to_str().expect("a UTF-8 temp dir").to_owned();
        let mut asked = Vec::new();
        let root = proto_root(|name| {
            asked.push(name.to_owned());
            Ok(other_text.clone())
        })
        .expect("the variable is set");
        assert_eq!(asked, ["CARGO_MANIFEST_DIR"]);
        assert_eq!(root, other.join("../proto"));
        assert_ne!(
            root,
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../proto")
        );
        // Unset (not run by Cargo): an error, not a guess.
        assert!(proto_root(|_| Err(VarError::NotPresent)).is_err());
    }
}
