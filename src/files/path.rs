//! Where a requested path lies under a public root, decided on the path's text
//! before the file system is asked.
//!
//! The rules (Actionhero's, with traversal refused outright):
//! - A relative path is taken under the root. `.` is skipped and `..` steps back
//!   over what the path itself went down; a `..` that would step above the root
//!   leaves it, and the root is skipped.
//! - An absolute path is served only from a root it lies inside (after its own `.`
//!   and `..` are resolved); any other root is skipped.
//! - A NUL byte, a drive prefix or a component that is not a plain name (`c:` on
//!   Windows) is refused for every root.
//!
//! The candidate is built from the resolved text, so the operating system never
//! sees a `..` from the request. Symbolic links inside a root are followed, as
//! tower-http's `ServeDir` and Actionhero follow them: a root should not hold links
//! to what must stay private.

use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};

/// The file a directory stands for.
pub(super) const INDEX: &str = "index.html";

/// A public root: absolute and without `.` or `..` when the current directory could
/// be read, else as given (then absolute requests never match it).
#[derive(Clone, Debug)]
pub(super) struct Root(PathBuf);

impl Root {
    pub(super) fn new(path: &Path) -> Root {
        // An empty root (an unset variable, say) is the current directory, never a
        // root that every path starts with.
        let path = if path.as_os_str().is_empty() { Path::new(".") } else { path };
        let absolute = std::path::absolute(path).ok().and_then(|p| resolve_absolute(&p));
        Root(absolute.unwrap_or_else(|| path.to_path_buf()))
    }

    pub(super) fn path(&self) -> &Path {
        &self.0
    }

    /// The candidate for `requested` under this root, or `None` when the request
    /// leaves it (or is refused). Room is kept for a directory's `/index.html`.
    pub(super) fn candidate(&self, requested: &Path) -> Option<PathBuf> {
        if has_nul(requested) {
            return None;
        }
        if requested.is_absolute() {
            // Only a root known as an absolute path can say what lies inside it.
            if !self.0.is_absolute() {
                return None;
            }
            let mut resolved = resolve_absolute(requested)?;
            if !resolved.starts_with(&self.0) {
                return None;
            }
            keep_trailing_slash(requested, &mut resolved);
            return Some(resolved);
        }
        let room = self.0.as_os_str().len() + requested.as_os_str().len() + INDEX.len() + 2;
        let mut candidate = PathBuf::with_capacity(room);
        candidate.push(&self.0);
        let mut depth = 0_usize;
        for component in requested.components() {
            match component {
                Component::Normal(name) if is_plain(name) => {
                    candidate.push(name);
                    depth += 1;
                }
                Component::CurDir => {}
                Component::ParentDir if depth > 0 => {
                    candidate.pop();
                    depth -= 1;
                }
                // Above the root, a name that is not plain, or a root or drive in a
                // path that is not absolute (`\dir` on Windows).
                _ => return None,
            }
        }
        if depth > 0 {
            keep_trailing_slash(requested, &mut candidate);
        }
        Some(candidate)
    }
}

/// A request that ends in a slash names a directory: the candidate keeps the slash,
/// so the file system finds no regular file there (`a.txt/` is not `a.txt`).
fn keep_trailing_slash(requested: &Path, candidate: &mut PathBuf) {
    let bytes = requested.as_os_str().as_encoded_bytes();
    if bytes.last().is_some_and(|&b| std::path::is_separator(char::from(b))) {
        candidate.push("");
    }
}

/// An absolute path with its `.` and `..` resolved on the text (`/..` stays `/`), or
/// `None` when it holds something refused.
fn resolve_absolute(path: &Path) -> Option<PathBuf> {
    if has_nul(path) {
        return None;
    }
    let mut resolved = PathBuf::with_capacity(path.as_os_str().len() + INDEX.len() + 1);
    let mut depth = 0_usize;
    for component in path.components() {
        match component {
            Component::Prefix(_) | Component::RootDir => resolved.push(component),
            Component::CurDir => {}
            Component::ParentDir => {
                if depth > 0 {
                    resolved.pop();
                    depth -= 1;
                }
            }
            Component::Normal(name) if is_plain(name) => {
                resolved.push(name);
                depth += 1;
            }
            Component::Normal(_) => return None,
        }
    }
    Some(resolved)
}

/// A name that is one plain component on this platform (on Windows, `c:` in the
/// middle of a path is a drive, not a name).
fn is_plain(name: &OsStr) -> bool {
    let mut parts = Path::new(name).components();
    matches!(parts.next(), Some(Component::Normal(_))) && parts.next().is_none()
}

fn has_nul(path: &Path) -> bool {
    path.as_os_str().as_encoded_bytes().contains(&0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> Root {
        Root::new(Path::new("/srv/public"))
    }

    fn under(requested: &str) -> Option<String> {
        root().candidate(Path::new(requested)).map(|p| p.to_string_lossy().into_owned())
    }

    #[test]
    fn relative_paths_are_taken_under_the_root() {
        assert_eq!(under("a.txt").as_deref(), Some("/srv/public/a.txt"));
        assert_eq!(under("css/site.css").as_deref(), Some("/srv/public/css/site.css"));
        assert_eq!(under("./css/./site.css").as_deref(), Some("/srv/public/css/site.css"));
        assert_eq!(under("css/../a.txt").as_deref(), Some("/srv/public/a.txt"));
        assert_eq!(under("").as_deref(), Some("/srv/public"));
        assert_eq!(under("a//b").as_deref(), Some("/srv/public/a/b"));
        assert_eq!(under("docs/").as_deref(), Some("/srv/public/docs/"));
        assert_eq!(under("docs/..").as_deref(), Some("/srv/public"));
        assert_eq!(under("/srv/public/docs/").as_deref(), Some("/srv/public/docs/"));
    }

    #[test]
    fn a_path_that_climbs_above_the_root_leaves_it() {
        for path in ["..", "../etc/passwd", "css/../../etc/passwd", "a/b/../../..", "./.."] {
            assert_eq!(under(path), None, "{path}");
        }
        // `%2e%2e` is a name here: decoding is the router's job, done once.
        assert_eq!(under("%2e%2e/secret").as_deref(), Some("/srv/public/%2e%2e/secret"));
    }

    #[test]
    fn absolute_paths_are_served_only_from_inside_the_root() {
        assert_eq!(under("/srv/public/a.txt").as_deref(), Some("/srv/public/a.txt"));
        assert_eq!(under("/srv/public/css/../a.txt").as_deref(), Some("/srv/public/a.txt"));
        for path in ["/etc/passwd", "/srv/public/../secret", "/srv/publicity/a.txt", "/", "/srv"] {
            assert_eq!(under(path), None, "{path}");
        }
        assert_eq!(resolve_absolute(Path::new("/../../etc")).unwrap(), Path::new("/etc"));
    }

    #[test]
    fn nul_bytes_are_refused() {
        assert_eq!(under("a\0.txt"), None);
        assert_eq!(under("/srv/public/a\0"), None);
    }

    #[test]
    fn relative_roots_are_made_absolute() {
        let root = Root::new(Path::new("public/./files/.."));
        assert!(root.path().is_absolute());
        assert!(root.path().ends_with("public"), "{:?}", root.path());
        let inside = root.path().join("a.txt");
        assert_eq!(root.candidate(&inside), Some(inside.clone()));
    }

    #[test]
    fn room_is_kept_for_the_index() {
        let candidate = root().candidate(Path::new("docs")).unwrap();
        assert!(candidate.capacity() >= candidate.as_os_str().len() + 1 + INDEX.len());
    }

    #[test]
    fn an_empty_root_is_the_current_directory_not_everywhere() {
        let root = Root::new(Path::new(""));
        let here = std::path::absolute(".").unwrap();
        assert!(root.candidate(Path::new("/etc/passwd")).is_none());
        assert_eq!(root.candidate(Path::new("a.txt")), Some(resolve_absolute(&here).unwrap().join("a.txt")));
    }
}
