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
    pub(super) fn candidate(&self, requested: &Path) -> Option<SmallPath> {
        if has_nul(requested) {
            return None;
        }
        if requested.is_absolute() {
            // Only a root known as an absolute path can say what lies inside it.
            if !self.0.is_absolute() {
                return None;
            }
            let resolved = resolve_absolute(requested)?;
            if !resolved.starts_with(&self.0) {
                return None;
            }
            let mut resolved = SmallPath::heap(resolved);
            keep_trailing_slash(requested, &mut resolved);
            return Some(resolved);
        }
        let room = self.0.as_os_str().len() + requested.as_os_str().len() + INDEX.len() + 2;
        let mut candidate = SmallPath::new(&self.0, room);
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
fn keep_trailing_slash(requested: &Path, candidate: &mut SmallPath) {
    let bytes = requested.as_os_str().as_encoded_bytes();
    if bytes.last().is_some_and(|&b| std::path::is_separator(char::from(b))) {
        candidate.push(OsStr::new(""));
    }
}

/// A path as the search builds it: `push` and `pop` as `PathBuf` has them, for
/// plain names only (the rules above decide which names come here).
///
/// On Unix it is kept in place, without allocating, when it fits in `INLINE_PATH`
/// bytes (it travels to the blocking pool inside the search's task, which is
/// allocated anyway): finding a file then allocates nothing for its path, and
/// `send_file` nothing that `ServeFile` would not. A longer one, an absolute
/// request's, and every one on other systems is a `PathBuf`.
#[derive(Clone)]
pub(super) struct SmallPath(Repr);

// In place on purpose: boxing the inline bytes would be the allocation they save.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
enum Repr {
    #[cfg(unix)]
    Inline {
        bytes: [u8; INLINE_PATH],
        len: usize,
    },
    Heap(PathBuf),
}

#[cfg(unix)]
const INLINE_PATH: usize = 240;

impl SmallPath {
    /// `root`, with `room` bytes expected in all.
    pub(super) fn new(root: &Path, room: usize) -> SmallPath {
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            let root = root.as_os_str().as_bytes();
            if room <= INLINE_PATH && root.len() <= INLINE_PATH {
                let mut bytes = [0; INLINE_PATH];
                bytes[..root.len()].copy_from_slice(root);
                return SmallPath(Repr::Inline { bytes, len: root.len() });
            }
        }
        let mut path = PathBuf::with_capacity(room);
        path.push(root);
        SmallPath(Repr::Heap(path))
    }

    pub(super) fn heap(path: PathBuf) -> SmallPath {
        SmallPath(Repr::Heap(path))
    }

    pub(super) fn as_path(&self) -> &Path {
        match &self.0 {
            #[cfg(unix)]
            Repr::Inline { bytes, len } => {
                use std::os::unix::ffi::OsStrExt;
                Path::new(OsStr::from_bytes(&bytes[..*len]))
            }
            Repr::Heap(path) => path,
        }
    }

    /// Appends `name` (a plain name, or `""` for a trailing separator) after a
    /// separator, as `PathBuf::push` does.
    pub(super) fn push(&mut self, name: &OsStr) {
        #[cfg(unix)]
        if let Repr::Inline { bytes, len } = &mut self.0 {
            use std::os::unix::ffi::OsStrExt;
            let name = name.as_bytes();
            let separator = *len > 0 && bytes[*len - 1] != b'/';
            let end = *len + usize::from(separator) + name.len();
            if end <= INLINE_PATH {
                if separator {
                    bytes[*len] = b'/';
                }
                bytes[end - name.len()..end].copy_from_slice(name);
                *len = end;
                return;
            }
            // Too long to stay inline: the rest is built on the heap.
            let mut path = PathBuf::from(OsStr::from_bytes(&bytes[..*len]));
            path.push(OsStr::from_bytes(name));
            self.0 = Repr::Heap(path);
            return;
        }
        if let Repr::Heap(path) = &mut self.0 {
            path.push(name);
        }
    }

    /// Drops the last name, as `PathBuf::pop` does (only called after a push, so
    /// there is one; a name pushed here holds no separator).
    fn pop(&mut self) {
        match &mut self.0 {
            #[cfg(unix)]
            Repr::Inline { bytes, len } => {
                if let Some(cut) = bytes[..*len].iter().rposition(|&b| b == b'/') {
                    // `/a` pops to `/`, not to nothing.
                    *len = cut.max(1);
                }
            }
            Repr::Heap(path) => {
                path.pop();
            }
        }
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
        root().candidate(Path::new(requested)).map(|p| p.as_path().to_string_lossy().into_owned())
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
        assert_eq!(root.candidate(&inside).map(|p| p.as_path().to_path_buf()), Some(inside.clone()));
    }

    #[test]
    fn room_is_kept_for_the_index() {
        let root = Root::new(&PathBuf::from("/srv").join("d".repeat(300)));
        let candidate = root.candidate(Path::new("docs")).unwrap();
        let Repr::Heap(path) = &candidate.0 else { panic!("a path this long is on the heap") };
        assert!(path.capacity() >= path.as_os_str().len() + 1 + INDEX.len());
    }

    /// The candidate built in place and the one built in a `PathBuf` are the same
    /// path, for every way through push and pop, across the inline limit too.
    #[test]
    fn built_in_place_or_on_the_heap_the_candidate_is_the_same() {
        let long = "n".repeat(100);
        let roots = ["/", "/srv/public", "relative/root", "relative/trailing/"];
        let requests = [
            "a.txt".to_owned(),
            "css/../a.txt".to_owned(),
            "a/b/../../c/".to_owned(),
            "docs/".to_owned(),
            "docs/..".to_owned(),
            format!("{long}/{long}/x.txt"),
            format!("{long}/{long}/{long}/../y/"),
            format!("{long}/{long}/{long}/../../.."),
        ];
        let mut spilled = 0;
        for root in roots {
            for requested in &requests {
                let mut heap = SmallPath::heap(PathBuf::from(root));
                // Room for the root alone: a long request spills to the heap midway.
                let mut built = SmallPath::new(Path::new(root), root.len());
                for component in Path::new(requested).components() {
                    match component {
                        Component::Normal(name) => {
                            heap.push(name);
                            built.push(name);
                        }
                        Component::ParentDir => {
                            heap.pop();
                            built.pop();
                        }
                        _ => {}
                    }
                    assert_eq!(built.as_path(), heap.as_path(), "{root} + {requested}");
                    assert_eq!(
                        built.as_path().as_os_str().as_encoded_bytes(),
                        heap.as_path().as_os_str().as_encoded_bytes(),
                        "{root} + {requested}"
                    );
                }
                built.push(OsStr::new(""));
                heap.push(OsStr::new(""));
                assert_eq!(
                    built.as_path().as_os_str().as_encoded_bytes(),
                    heap.as_path().as_os_str().as_encoded_bytes(),
                    "{root} + {requested} + a trailing separator"
                );
                built.push(OsStr::new(INDEX));
                heap.push(OsStr::new(INDEX));
                assert_eq!(built.as_path(), heap.as_path(), "{root} + {requested} + the index");
                spilled += usize::from(matches!(built.0, Repr::Heap(_)));
            }
        }
        // The two longest requests went past the inline bytes on the way, from every
        // root (on Unix; elsewhere every path is on the heap).
        assert!(spilled >= 2 * roots.len(), "{spilled}");
    }

    #[test]
    fn an_empty_root_is_the_current_directory_not_everywhere() {
        let root = Root::new(Path::new(""));
        let here = std::path::absolute(".").unwrap();
        assert!(root.candidate(Path::new("/etc/passwd")).is_none());
        assert_eq!(
            root.candidate(Path::new("a.txt")).map(|p| p.as_path().to_path_buf()),
            Some(resolve_absolute(&here).unwrap().join("a.txt"))
        );
    }
}
