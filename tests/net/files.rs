//! `ctx.send_file` against a real server (`tower_context::serve` on 127.0.0.1) and a
//! real HTTP/1.1 client (hyper's), asserting what a browser or a download manager
//! sees: status, headers, body bytes. Two roots: a temporary directory made here,
//! then `examples/public/`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use axum::Router;
use axum::extract::{Path as UrlPath, Query};
use axum::routing::{get, post};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tower_context::cookies::Cookie;
use tower_context::files::{FileBody, PublicFiles};
use tower_context::{Context, ContextLayer, HttpError};

/// A directory of its own under the system's temporary directory.
pub fn temp_dir(name: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("tower-context-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn examples_public() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/public")
}

/// 1 MiB that is not the same at any two offsets a range test reads.
pub fn big_content() -> Vec<u8> {
    (0..1024 * 1024_u32).map(|i| (i % 251) as u8).collect()
}

/// Writes `content` at `path` under `base`, making the directories it needs.
fn write_under(base: &Path, path: &str, content: &[u8]) {
    let path = base.join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// The first root (temporary) and what lies beside it, which must never be served.
struct Tree {
    base: PathBuf,
    first: PathBuf,
}

impl Tree {
    fn new() -> Tree {
        let base = temp_dir("files");
        let first = base.join("first");
        let write = |path: &str, content: &[u8]| write_under(&base, path, content);
        write("secret.txt", b"outside every root");
        write("first/a.txt", b"the first root's a.txt\n");
        write("first/hello.txt", b"shadows examples/public/hello.txt\n");
        write("first/dir/index.html", b"<p>dir index</p>\n");
        write("first/big.bin", &big_content());
        write("first/nothing.txt", b"");
        // A directory with no index.html: the next root's index stands for it.
        std::fs::create_dir_all(base.join("first/empty")).unwrap();
        write("first/%2e%2e/x.txt", b"a name, not a step up\n");
        Tree { base, first }
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

#[derive(serde::Deserialize)]
struct File {
    file: String,
}

async fn by_path(ctx: Context, path: Option<UrlPath<String>>) -> Result<Response<FileBody>, HttpError> {
    ctx.send_file(path.map(|UrlPath(p)| p).unwrap_or_default()).await
}

async fn by_query(ctx: Context, Query(File { file }): Query<File>) -> Result<Response<FileBody>, HttpError> {
    ctx.send_file(file).await
}

/// A handler that does everything else a handler may do around a file.
async fn dressed(ctx: Context) -> Result<Response<FileBody>, HttpError> {
    ctx.cookies().set(Cookie::new("seen", "yes"))?;
    ctx.set_header(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    ctx.set_header(header::HeaderName::from_static("x-deferred"), HeaderValue::from_static("applied"));
    ctx.after(|mut res| async move {
        res.headers_mut().insert("x-hook", HeaderValue::from_static("ran"));
        Ok(res)
    })?;
    ctx.send_file("a.txt").await
}

async fn start(roots: &[&Path]) -> SocketAddr {
    start_with(PublicFiles::new(roots)).await
}

async fn start_with(files: PublicFiles) -> SocketAddr {
    let app = Router::new()
        .route("/static/", get(by_path))
        .route("/static/{*path}", get(by_path))
        .route("/query", get(by_query))
        .route("/dressed", get(dressed))
        .route("/upload", post(|ctx: Context| async move { ctx.send_file("a.txt").await }))
        .layer(ContextLayer::new().public_files(files));
    crate::serve_app(app).await
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |v| v.to_str().unwrap())
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }

    /// The message of a rendered JSON error.
    fn message(&self) -> String {
        let json: Value = serde_json::from_slice(&self.body).unwrap_or_default();
        json["message"].as_str().unwrap_or_default().to_owned()
    }
}

/// One request on a new connection; the target goes on the wire exactly as given.
async fn fetch(addr: SocketAddr, method: Method, target: &str, headers: &[(&str, &str)]) -> Answer {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let mut request = Request::builder().method(method).uri(target).header("host", "test");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender.send_request(request.body(Empty::<Bytes>::new()).unwrap()).await.unwrap();
    let (parts, body) = response.into_parts();
    Answer { status: parts.status, headers: parts.headers, body: body.collect().await.unwrap().to_bytes() }
}

async fn get_with(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Answer {
    fetch(addr, Method::GET, target, headers).await
}

async fn get_(addr: SocketAddr, target: &str) -> Answer {
    get_with(addr, target, &[]).await
}

#[tokio::test]
async fn files_come_with_their_type_length_validators_and_cache_control() {
    let tree = Tree::new();
    let addr = start(&[&tree.first, &examples_public()]).await;

    let a = get_(addr, "/static/a.txt").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.text(), "the first root's a.txt\n");
    assert_eq!(a.header("content-type"), "text/plain");
    assert_eq!(a.header("content-length"), "23");
    assert_eq!(a.header("accept-ranges"), "bytes");
    assert_eq!(a.header("cache-control"), "max-age=60, must-revalidate, public");
    assert!(a.header("etag").starts_with('"'), "a strong ETag: {}", a.header("etag"));
    assert!(a.header("last-modified").ends_with(" GMT"));

    // Binary bytes arrive unchanged, 1 MiB across many chunks too.
    let png = get_(addr, "/static/pixel.png").await;
    assert_eq!((png.status, png.header("content-type")), (StatusCode::OK, "image/png"));
    assert_eq!(png.body, std::fs::read(examples_public().join("pixel.png")).unwrap());
    let big = get_(addr, "/static/big.bin").await;
    assert_eq!(big.header("content-type"), "application/octet-stream");
    assert_eq!(big.header("content-length"), "1048576");
    assert!(big.body == big_content(), "the 1 MiB file arrives byte for byte");

    // A directory serves its index.html, with or without the slash.
    for target in ["/static/dir", "/static/dir/"] {
        let dir = get_(addr, target).await;
        assert_eq!((dir.status, dir.header("content-type")), (StatusCode::OK, "text/html"), "{target}");
        assert_eq!(dir.text(), "<p>dir index</p>\n");
    }
}

#[tokio::test]
async fn roots_are_searched_in_order() {
    let tree = Tree::new();
    let addr = start(&[&tree.first, &examples_public()]).await;
    // In both roots: the first wins.
    assert_eq!(get_(addr, "/static/hello.txt").await.text(), "shadows examples/public/hello.txt\n");
    // Only in the second.
    let pixel = get_(addr, "/static/pixel.png").await;
    assert_eq!(pixel.status, 200);
    // The first root's directory has no index.html; the second root's has one.
    let root = get_(addr, "/static/").await;
    assert_eq!((root.status, root.header("content-type")), (StatusCode::OK, "text/html"));
    assert!(root.text().contains("<h1>Public files</h1>"), "{}", root.text());

    // The other order.
    let addr = start(&[&examples_public(), &tree.first]).await;
    assert_eq!(
        get_(addr, "/static/hello.txt").await.text(),
        "Hello from examples/public: a text file served by ctx.send_file.\n"
    );
    assert_eq!(get_(addr, "/static/a.txt").await.text(), "the first root's a.txt\n");
}

#[tokio::test]
async fn head_gets_the_head_alone() {
    let tree = Tree::new();
    let addr = start(&[&tree.first]).await;
    let head = fetch(addr, Method::HEAD, "/static/big.bin", &[]).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), "1048576");
    assert_eq!(head.header("content-type"), "application/octet-stream");
    assert_eq!(head.header("cache-control"), "max-age=60, must-revalidate, public");
    assert!(!head.header("etag").is_empty());
    assert!(head.body.is_empty());
    // Another method gets the whole file, whatever it asks for.
    let post =
        fetch(addr, Method::POST, "/upload", &[("range", "bytes=0-1"), ("if-match", "\"nope\"")]).await;
    assert_eq!((post.status, post.text()), (StatusCode::OK, "the first root's a.txt\n"));
}

#[tokio::test]
async fn ranges_get_206_and_ranges_outside_the_file_416() {
    let tree = Tree::new();
    let addr = start(&[&tree.first]).await;
    let big = big_content();

    let part = get_with(addr, "/static/big.bin", &[("range", "bytes=100000-100009")]).await;
    assert_eq!(part.status, 206);
    assert_eq!(part.header("content-range"), "bytes 100000-100009/1048576");
    assert_eq!(part.header("content-length"), "10");
    assert_eq!(part.header("cache-control"), "max-age=60, must-revalidate, public");
    assert_eq!(part.body, big[100_000..100_010]);

    // Range units are case-insensitive (RFC 9110 §14.1).
    let part = get_with(addr, "/static/big.bin", &[("range", "Bytes=0-4")]).await;
    assert_eq!(
        (part.status, part.header("content-range")),
        (StatusCode::PARTIAL_CONTENT, "bytes 0-4/1048576")
    );
    assert_eq!(part.body, big[..5]);

    let tail = get_with(addr, "/static/big.bin", &[("range", "bytes=-5")]).await;
    assert_eq!(
        (tail.status, tail.header("content-range")),
        (StatusCode::PARTIAL_CONTENT, "bytes 1048571-1048575/1048576")
    );
    assert_eq!(tail.body, big[big.len() - 5..]);
    let rest = get_with(addr, "/static/big.bin", &[("range", "bytes=1000000-")]).await;
    assert_eq!(rest.body, big[1_000_000..]);
    // A suffix longer than the file asks for all of it (RFC 9110 §14.1.3).
    for range in ["bytes=-1048577", "bytes=-99999999999999999999999"] {
        let all = get_with(addr, "/static/big.bin", &[("range", range)]).await;
        assert_eq!(
            (all.status, all.header("content-range")),
            (StatusCode::PARTIAL_CONTENT, "bytes 0-1048575/1048576"),
            "{range}"
        );
        assert_eq!(all.body, big, "{range}");
    }
    // An empty file has no bytes to range over: the range is ignored, the (empty)
    // file goes out whole.
    for range in ["bytes=0-0", "bytes=-1", "bytes=0-"] {
        let empty = get_with(addr, "/static/nothing.txt", &[("range", range)]).await;
        assert_eq!((empty.status, empty.header("content-length")), (StatusCode::OK, "0"), "{range}");
        assert!(empty.header("content-range").is_empty(), "{range}");
    }

    for range in [
        "bytes=2000000-2000001",
        "bytes=5-2",
        "bytes=99999999999999999999999-",
        "bytes=x-y",
        "bytes=-0",
        "bytes=-05",
    ] {
        let refused = get_with(addr, "/static/big.bin", &[("range", range)]).await;
        assert_eq!(refused.status, 416, "{range}");
        assert_eq!(refused.header("content-range"), "bytes */1048576", "{range}");
        assert!(refused.body.is_empty(), "{range}");
    }
    // Several ranges: the whole file (no multipart answers), never a 416.
    let several = get_with(addr, "/static/a.txt", &[("range", "bytes=0-1,4-5")]).await;
    assert_eq!((several.status, several.text()), (StatusCode::OK, "the first root's a.txt\n"));
    // `Range` on two lines is not a list: ignored, as several ranges are.
    let two_lines = get_with(addr, "/static/a.txt", &[("range", "bytes=0-1"), ("range", "bytes=4-5")]).await;
    assert_eq!((two_lines.status, two_lines.text()), (StatusCode::OK, "the first root's a.txt\n"));
    assert!(two_lines.headers.get("content-range").is_none());
    // A unit other than bytes is not understood: ignored (RFC 9110 §14.2), the whole file.
    let lines = get_with(addr, "/static/big.bin", &[("range", "lines=1-2")]).await;
    assert_eq!((lines.status, lines.header("content-length")), (StatusCode::OK, "1048576"));
    // Ranges are for GET: a HEAD with one gets the whole file's head.
    let head = fetch(addr, Method::HEAD, "/static/big.bin", &[("range", "bytes=0-99")]).await;
    assert_eq!((head.status, head.header("content-length")), (StatusCode::OK, "1048576"));
    assert!(head.header("content-range").is_empty());
    assert!(head.body.is_empty());
}

#[tokio::test]
async fn if_range_lets_a_range_through_only_for_the_current_version() {
    let tree = Tree::new();
    let addr = start(&[&tree.first]).await;
    let big = big_content();
    // A file whose date is not yet a second old is no validator. Its date is set a
    // minute ahead, so that the test cannot outlast that second however slowly it
    // runs (a file written just now settles within a second of its write, less the
    // fraction of a second the date drops).
    let minute = std::time::Duration::from_secs(60);
    let date_big = |date| {
        std::fs::File::options()
            .write(true)
            .open(tree.first.join("big.bin"))
            .unwrap()
            .set_modified(date)
            .unwrap();
    };
    date_big(std::time::SystemTime::now() + minute);
    let fresh = get_(addr, "/static/big.bin").await;
    let just_now = fresh.header("last-modified").to_owned();
    let part =
        get_with(addr, "/static/big.bin", &[("range", "bytes=10-19"), ("if-range", just_now.as_str())]).await;
    assert_eq!(part.status, 200, "a date within a second of a change cannot tell two versions apart");
    // Settled a minute ago, from here on.
    date_big(std::time::SystemTime::now() - minute);
    let first = get_(addr, "/static/big.bin").await;
    let (etag, modified) = (first.header("etag").to_owned(), first.header("last-modified").to_owned());

    // The current ETag or Last-Modified: the range.
    for validator in [etag.as_str(), modified.as_str()] {
        let part =
            get_with(addr, "/static/big.bin", &[("range", "bytes=10-19"), ("if-range", validator)]).await;
        assert_eq!(part.status, 206, "{validator}");
        assert_eq!(part.body, big[10..20]);
        // Matching, but outside the file: 416 stands.
        let outside =
            get_with(addr, "/static/big.bin", &[("range", "bytes=5000000-"), ("if-range", validator)]).await;
        assert_eq!(outside.status, 416, "{validator}");
    }

    // A stale, weak or malformed validator: the whole file, 200, even for a range
    // that lies outside it.
    let weak = format!("W/{etag}");
    for validator in [
        "\"an-older-version\"",
        weak.as_str(),
        "Thu, 01 Jan 1970 00:00:00 GMT",
        "not a validator",
        "\"unterminated",
    ] {
        for range in ["bytes=10-19", "bytes=5000000-"] {
            let whole = get_with(addr, "/static/big.bin", &[("range", range), ("if-range", validator)]).await;
            assert_eq!(whole.status, 200, "{validator} {range}");
            assert!(whole.header("content-range").is_empty());
            assert_eq!(whole.header("content-length"), "1048576");
            assert!(whole.body == big, "{validator} {range}: the whole file");
        }
    }
    // Without a Range, If-Range is ignored.
    let plain = get_with(addr, "/static/a.txt", &[("if-range", "\"an-older-version\"")]).await;
    assert_eq!((plain.status, plain.text()), (StatusCode::OK, "the first root's a.txt\n"));
}

#[tokio::test]
async fn conditional_requests_get_304_and_412_before_any_range() {
    let tree = Tree::new();
    let addr = start(&[&tree.first]).await;
    let first = get_(addr, "/static/a.txt").await;
    let (etag, modified) = (first.header("etag").to_owned(), first.header("last-modified").to_owned());

    for validator in [("if-none-match", etag.as_str()), ("if-modified-since", modified.as_str())] {
        let fresh = get_with(addr, "/static/a.txt", &[validator]).await;
        assert_eq!(fresh.status, 304, "{validator:?}");
        assert_eq!(fresh.header("etag"), etag);
        assert_eq!(fresh.header("last-modified"), modified);
        assert_eq!(fresh.header("cache-control"), "max-age=60, must-revalidate, public");
        assert!(fresh.body.is_empty());
        // 304 wins over a range.
        let ranged = get_with(addr, "/static/a.txt", &[validator, ("range", "bytes=0-1")]).await;
        assert_eq!(ranged.status, 304);
        // `Cache-Control: no-cache` asks for the file (Actionhero's rule).
        let reload =
            get_with(addr, "/static/a.txt", &[validator, ("cache-control", "max-age=0, no-cache")]).await;
        assert_eq!((reload.status, reload.text()), (StatusCode::OK, "the first root's a.txt\n"));
    }
    let changed = get_with(addr, "/static/a.txt", &[("if-none-match", "\"an-older-version\"")]).await;
    assert_eq!(changed.status, 200);

    // Preconditions: 412, before the range and before 304.
    for failing in
        [("if-match", "\"an-older-version\""), ("if-unmodified-since", "Thu, 01 Jan 1970 00:00:00 GMT")]
    {
        let failed = get_with(addr, "/static/a.txt", &[failing, ("range", "bytes=0-1")]).await;
        assert_eq!(failed.status, 412, "{failing:?}");
        assert!(failed.body.is_empty());
        let failed = get_with(addr, "/static/a.txt", &[failing, ("if-none-match", etag.as_str())]).await;
        assert_eq!(failed.status, 412, "{failing:?}");
    }
    let holds = get_with(addr, "/static/a.txt", &[("if-match", etag.as_str()), ("range", "bytes=0-2")]).await;
    assert_eq!((holds.status, holds.text()), (StatusCode::PARTIAL_CONTENT, "the"));
}

#[tokio::test]
async fn a_missing_file_is_rendered_as_a_404_on_the_error_path() {
    let tree = Tree::new();
    let addr = start(&[&tree.first, &examples_public()]).await;
    for target in ["/static/nope.txt", "/static/a.txt/", "/static/dir/nope", "/static/empty/nope"] {
        let missing = get_with(addr, target, &[("accept", "application/json")]).await;
        assert_eq!(missing.status, 404, "{target}");
        assert_eq!(missing.message(), "that file is not found", "{target}");
        assert_eq!(missing.header("x-content-type-options"), "nosniff");
        assert!(missing.header("cache-control").is_empty());
    }
    let text = get_with(addr, "/static/nope.txt", &[("accept", "text/plain")]).await;
    assert_eq!((text.status, text.text()), (StatusCode::NOT_FOUND, "that file is not found"));
}

/// A FIFO is not a regular file: skipped for the next root, a 404 in the last, and
/// never opened (opening one for reading waits for a writer, which would hold a
/// blocking thread and this request forever).
#[cfg(unix)]
#[tokio::test]
async fn a_fifo_is_not_served_nor_waited_on() {
    let tree = Tree::new();
    // The first root's hello.txt becomes a FIFO, shadowing nothing now.
    std::fs::remove_file(tree.first.join("hello.txt")).unwrap();
    for name in ["hello.txt", "pipe"] {
        let made = std::process::Command::new("mkfifo").arg(tree.first.join(name)).status().unwrap();
        assert!(made.success(), "mkfifo {name}");
    }
    let addr = start(&[&tree.first, &examples_public()]).await;
    let next = get_(addr, "/static/hello.txt").await;
    assert_eq!(
        (next.status, next.text()),
        (StatusCode::OK, "Hello from examples/public: a text file served by ctx.send_file.\n")
    );
    let missing = get_with(addr, "/static/pipe", &[("accept", "application/json")]).await;
    assert_eq!(
        (missing.status, missing.message()),
        (StatusCode::NOT_FOUND, "that file is not found".to_owned())
    );
}

#[tokio::test]
async fn traversal_attempts_are_refused() {
    let tree = Tree::new();
    let addr = start(&[&tree.first]).await;
    let secret = tree.base.join("secret.txt");
    let inside = tree.first.join("a.txt");
    let attempts = [
        "/static/../secret.txt".to_owned(),
        "/static/dir/../../secret.txt".to_owned(),
        "/static/%2e%2e/secret.txt".to_owned(),
        "/static/%2E%2E%2Fsecret.txt".to_owned(),
        "/static/..%2fsecret.txt".to_owned(),
        "/static/..%5csecret.txt".to_owned(),
        "/static/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd".to_owned(),
        "/static//etc/passwd".to_owned(),
        "/static/a.txt%00.png".to_owned(),
        "/static/%00".to_owned(),
        format!("/query?file={}", secret.display()),
        format!("/query?file={}/../secret.txt", tree.first.display()),
        "/query?file=/etc/passwd".to_owned(),
        "/query?file=a.txt%00".to_owned(),
        "/query?file=%2e%2e/secret.txt".to_owned(),
    ];
    for target in &attempts {
        let refused = get_with(addr, target, &[("accept", "application/json")]).await;
        assert_eq!(refused.status, 404, "{target}");
        assert_eq!(refused.message(), "that file is not found", "{target}");
        assert!(!refused.text().contains("outside every root"), "{target}");
    }
    // The router decodes once: `%252e%252e` is the directory literally named
    // `%2e%2e`, an ordinary one.
    assert_eq!(get_(addr, "/static/%252e%252e/x.txt").await.text(), "a name, not a step up\n");
    // An absolute path inside the root is served (Actionhero's rule), and `..`
    // that stays inside it resolves.
    let absolute = get_(addr, &format!("/query?file={}", inside.display())).await;
    assert_eq!((absolute.status, absolute.text()), (StatusCode::OK, "the first root's a.txt\n"));
    let resolved = get_(addr, "/static/dir/../a.txt").await;
    assert_eq!((resolved.status, resolved.text()), (StatusCode::OK, "the first root's a.txt\n"));
}

#[tokio::test]
async fn cookies_deferred_edits_and_hooks_still_apply() {
    let tree = Tree::new();
    let addr = start(&[&tree.first]).await;
    let dressed = get_(addr, "/dressed").await;
    assert_eq!(dressed.status, 200);
    assert_eq!(dressed.text(), "the first root's a.txt\n");
    assert!(dressed.header("set-cookie").starts_with("seen=yes"), "{}", dressed.header("set-cookie"));
    assert_eq!(dressed.header("x-deferred"), "applied");
    assert_eq!(dressed.header("x-hook"), "ran");
    // The app's Cache-Control, not the default.
    let values: Vec<_> = dressed.headers.get_all("cache-control").iter().collect();
    assert_eq!(values, ["no-store"]);
}

#[tokio::test]
async fn the_default_cache_control_can_be_changed_or_dropped() {
    let tree = Tree::new();
    let one_hour =
        PublicFiles::new([&tree.first]).cache_control(HeaderValue::from_static("public, max-age=3600"));
    let none = PublicFiles::new([&tree.first]).cache_control(None);
    for (files, want) in [(one_hour, "public, max-age=3600"), (none, "")] {
        let app =
            Router::new().route("/{*path}", get(by_path)).layer(ContextLayer::new().public_files(files));
        let addr = crate::serve_app(app).await;
        assert_eq!(get_(addr, "/a.txt").await.header("cache-control"), want);
    }
}

#[tokio::test]
async fn precompressed_variants_go_to_clients_that_accept_them() {
    let root = temp_dir("precompressed");
    let write = |path: &str, content: &[u8]| write_under(&root, path, content);
    write("site.css", b"body { color: black }\n");
    write("site.css.gz", b"(gzip bytes)");
    write("site.css.br", b"(brotli)");
    write("plain.txt", b"no variants here\n");
    // A file stored compressed and served as it is: not a variant of anything.
    write("archive.gz", b"(an archive)");
    write("docs/index.html", b"<p>docs</p>\n");
    write("docs/index.html.gz", b"(gzipped docs)");
    let addr = start_with(PublicFiles::new([&root]).precompressed_gzip().precompressed_br()).await;
    let with = |encoding: &'static str| [("accept-encoding", encoding)];

    let plain = get_(addr, "/static/site.css").await;
    assert_eq!((plain.status, plain.text()), (StatusCode::OK, "body { color: black }\n"));
    assert_eq!(plain.header("content-encoding"), "");
    assert_eq!(plain.header("vary"), "accept-encoding");

    let gzip = get_with(addr, "/static/site.css", &with("gzip, deflate")).await;
    assert_eq!((gzip.status, &gzip.body[..]), (StatusCode::OK, &b"(gzip bytes)"[..]));
    assert_eq!(gzip.header("content-encoding"), "gzip");
    assert_eq!(gzip.header("content-type"), "text/css", "the file's type, not the variant's");
    assert_eq!(gzip.header("content-length"), "12");
    assert_eq!(gzip.header("vary"), "accept-encoding");
    assert_eq!(gzip.header("cache-control"), "max-age=60, must-revalidate, public");
    assert_ne!(gzip.header("etag"), plain.header("etag"), "the variant is another representation");

    // The highest weight among the variants that exist wins; a weight of 0 refuses.
    let br = get_with(addr, "/static/site.css", &with("gzip;q=0.5, br")).await;
    assert_eq!((&br.body[..], br.header("content-encoding")), (&b"(brotli)"[..], "br"));
    let refused = get_with(addr, "/static/site.css", &with("gzip;q=0")).await;
    assert_eq!((&refused.body[..], refused.header("content-encoding")), (&plain.body[..], ""));
    // No variant beside the file, or a file that is itself compressed: as it is.
    let alone = get_with(addr, "/static/plain.txt", &with("gzip, br")).await;
    assert_eq!((alone.text(), alone.header("content-encoding")), ("no variants here\n", ""));
    let archive = get_with(addr, "/static/archive.gz", &with("gzip")).await;
    assert_eq!((&archive.body[..], archive.header("content-encoding")), (&b"(an archive)"[..], ""));
    assert_eq!(archive.header("content-type"), "application/gzip");
    // A directory's index has its variants too.
    let docs = get_with(addr, "/static/docs/", &with("gzip")).await;
    assert_eq!((&docs.body[..], docs.header("content-type")), (&b"(gzipped docs)"[..], "text/html"));

    // HEAD, a range, and a conditional request are answered for the variant.
    let head = fetch(addr, Method::HEAD, "/static/site.css", &with("gzip")).await;
    assert_eq!((head.header("content-length"), head.header("content-encoding")), ("12", "gzip"));
    assert!(head.body.is_empty());
    let part =
        get_with(addr, "/static/site.css", &[("accept-encoding", "gzip"), ("range", "bytes=1-4")]).await;
    assert_eq!((part.status, &part.body[..]), (StatusCode::PARTIAL_CONTENT, &b"gzip"[..]));
    assert_eq!(part.header("content-range"), "bytes 1-4/12");
    // A suffix longer than the variant (but not than the file) is all of the variant.
    let all =
        get_with(addr, "/static/site.css", &[("accept-encoding", "gzip"), ("range", "bytes=-20")]).await;
    assert_eq!((all.status, all.header("content-range")), (StatusCode::PARTIAL_CONTENT, "bytes 0-11/12"));
    let etag = gzip.header("etag");
    let fresh =
        get_with(addr, "/static/site.css", &[("accept-encoding", "gzip"), ("if-none-match", etag)]).await;
    assert_eq!((fresh.status, fresh.header("etag")), (StatusCode::NOT_MODIFIED, etag));
    assert_eq!(fresh.header("vary"), "accept-encoding", "a 304 says Vary as its 200 would");
    // The plain file's tag is another representation's: not a match for the variant.
    let stale = get_with(
        addr,
        "/static/site.css",
        &[("accept-encoding", "gzip"), ("if-none-match", plain.header("etag"))],
    )
    .await;
    assert_eq!((stale.status, &stale.body[..]), (StatusCode::OK, &b"(gzip bytes)"[..]));

    // Preconditions are the variant's too, and `x-gzip` names gzip.
    let failed = get_with(
        addr,
        "/static/site.css",
        &[("accept-encoding", "x-gzip"), ("if-match", plain.header("etag"))],
    )
    .await;
    assert_eq!(failed.status, StatusCode::PRECONDITION_FAILED);
    let held = get_with(addr, "/static/site.css", &[("accept-encoding", "x-gzip"), ("if-match", etag)]).await;
    assert_eq!((held.status, held.header("content-encoding")), (StatusCode::OK, "gzip"));

    // A coding these roots were not told about is not looked for.
    let gzip_only = start_with(PublicFiles::new([&root]).precompressed_gzip()).await;
    let no_br = get_with(gzip_only, "/static/site.css", &with("br")).await;
    assert_eq!((&no_br.body[..], no_br.header("content-encoding")), (&plain.body[..], ""));
    // And roots without variants neither look nor say Vary.
    let none = start(&[&root]).await;
    let as_is = get_with(none, "/static/site.css", &with("gzip")).await;
    assert_eq!(
        (&as_is.body[..], as_is.header("content-encoding"), as_is.header("vary")),
        (&plain.body[..], "", "")
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test]
async fn without_public_roots_send_file_is_a_500() {
    let app = Router::new().route("/{*path}", get(by_path)).layer(ContextLayer::new());
    let addr = crate::serve_app(app).await;
    let answer = get_with(addr, "/a.txt", &[("accept", "application/json")]).await;
    assert_eq!(answer.status, 500);
    assert_eq!(answer.message(), "Internal Server Error", "the reason is logged, not shown");
}

#[cfg(feature = "ws")]
mod socket {
    use futures_util::{SinkExt, StreamExt};
    use serde_json::json;
    use tokio_tungstenite::connect_async;
    use tokio_tungstenite::tungstenite::Message as Frame;
    use tower_context::chat::Chat;
    use tower_context::chat::ws::WebSocketChat;

    use super::*;

    type Client = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

    async fn open(socket: WebSocketChat) -> Client {
        let addr =
            crate::serve_app(Router::new().route("/ws", socket.route()).layer(ContextLayer::new())).await;
        let (mut client, _) = connect_async(format!("ws://{addr}/ws")).await.unwrap();
        assert_eq!(next(&mut client).await["context"], "api");
        client
    }

    async fn next(client: &mut Client) -> Value {
        loop {
            let frame = tokio::time::timeout(std::time::Duration::from_secs(5), client.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            if let Frame::Text(text) = frame {
                return serde_json::from_str(&text).unwrap();
            }
        }
    }

    async fn ask(client: &mut Client, frame: Value) -> Value {
        client.send(Frame::text(frame.to_string())).await.unwrap();
        next(client).await
    }

    #[tokio::test]
    async fn the_file_event_answers_with_text_or_base64_mime_length_and_date() {
        let tree = Tree::new();
        let files = PublicFiles::new([&tree.first, &examples_public()]);
        let mut client =
            open(WebSocketChat::new(Chat::new()).public_files(files).max_file_size(64 * 1024)).await;

        let text = ask(&mut client, json!({"event": "file", "file": "a.txt", "messageId": 1})).await;
        let modified = std::fs::metadata(tree.first.join("a.txt")).unwrap().modified().unwrap();
        let millis = modified.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
        assert_eq!(text["status"], "OK");
        assert_eq!(text["context"], "response");
        assert_eq!(text["content"], "the first root's a.txt\n");
        assert_eq!(text["encoding"], "utf8");
        assert_eq!(text["mime"], "text/plain");
        assert_eq!(text["length"], 23);
        assert_eq!(text["messageId"], 1);
        let date = text["lastModified"].as_str().unwrap();
        assert_eq!(date.len(), "2025-02-04T10:00:00.000Z".len(), "{date}");
        assert!(date.ends_with(&format!("{:03}Z", millis % 1000)), "{date} / {millis}");

        // Binary content round-trips through base64, byte for byte.
        let png = ask(&mut client, json!({"event": "file", "file": "pixel.png", "messageId": 2})).await;
        let bytes = std::fs::read(examples_public().join("pixel.png")).unwrap();
        assert_eq!((png["encoding"].as_str(), png["mime"].as_str()), (Some("base64"), Some("image/png")));
        assert_eq!(png["length"], bytes.len());
        use base64::Engine as _;
        let decoded =
            base64::engine::general_purpose::STANDARD.decode(png["content"].as_str().unwrap()).unwrap();
        assert_eq!(decoded, bytes);

        // A directory's index.html, from the root that has one.
        let index = ask(&mut client, json!({"event": "file", "file": "", "messageId": 3})).await;
        assert_eq!(index["mime"], "text/html");
        assert!(index["content"].as_str().unwrap().contains("<h1>Public files</h1>"));

        for (frame, error, data) in [
            (
                json!({"event": "file", "file": "nope.txt", "messageId": 4}),
                "that file is not found",
                json!({"file": "nope.txt"}),
            ),
            (
                json!({"event": "file", "file": "../secret.txt", "messageId": 5}),
                "that file is not found",
                json!({"file": "../secret.txt"}),
            ),
            (
                json!({"event": "file", "file": "a.txt\u{0}", "messageId": 6}),
                "that file is not found",
                json!({"file": "a.txt\u{0}"}),
            ),
            (json!({"event": "file", "messageId": 7}), "file is a required param to send a file", json!({})),
            (
                json!({"event": "file", "file": 7, "messageId": 8}),
                "file is a required param to send a file",
                json!({"file": 7}),
            ),
            (
                json!({"event": "file", "file": "big.bin", "messageId": 9}),
                "that file is too large for this socket (1048576 bytes; the limit is 65536)",
                json!({"file": "big.bin"}),
            ),
        ] {
            let answer = ask(&mut client, frame.clone()).await;
            let text = format!("Error: {error}");
            assert_eq!(answer["status"], text.as_str(), "{frame}");
            assert_eq!(answer["error"], text.as_str(), "{frame}");
            assert_eq!(answer["data"], data, "{frame}");
            assert_eq!(answer["messageId"], frame["messageId"]);
        }
        // The socket lives on.
        let again = ask(&mut client, json!({"event": "file", "file": "hello.txt", "messageId": 10})).await;
        assert_eq!(again["content"], "shadows examples/public/hello.txt\n");
    }

    #[tokio::test]
    async fn without_public_files_the_event_is_refused_like_a_verb() {
        let mut client = open(WebSocketChat::new(Chat::new())).await;
        let answer = ask(&mut client, json!({"event": "file", "file": "a.txt", "messageId": 1})).await;
        assert_eq!(answer["error"], "Error: verb not found or not allowed (file)");
    }
}

/// What a file request's lifecycle said: its events, and the errors it met.
type Log = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// Serves `send_file(path)` with the request's events written to a log; with
/// `cut_to`, the file is cut to that length once opened, before it is read out (a
/// file that shrinks while it is being sent).
async fn watched_files(root: &Path, cut_to: Option<u64>) -> (SocketAddr, Log) {
    let log = Log::default();
    let (l, root_) = (log.clone(), root.to_path_buf());
    let handler = move |ctx: Context, UrlPath(path): UrlPath<String>| {
        let (l, root) = (l.clone(), root_.clone());
        async move {
            for (name, on) in [("end", 0), ("finish", 1), ("close", 2)] {
                let l = l.clone();
                let push = move |_: &Context| l.lock().unwrap().push(name.to_owned());
                match on {
                    0 => ctx.on_end(push),
                    1 => ctx.on_finish(push),
                    _ => ctx.on_close(push),
                }
            }
            let l = l.clone();
            ctx.on_error(move |err| l.lock().unwrap().push(format!("error {}", err.status().as_u16())));
            let response = ctx.send_file(path.clone()).await;
            if let Some(len) = cut_to {
                std::fs::OpenOptions::new().write(true).open(root.join(&path)).unwrap().set_len(len).unwrap();
            }
            response
        }
    };
    let app = Router::new()
        .route("/{*path}", get(handler))
        .layer(ContextLayer::new().public_files(PublicFiles::new([root])));
    (crate::serve_app(app).await, log)
}

/// Waits until the log holds `n` entries.
async fn logged(log: &Log, n: usize) -> Vec<String> {
    for _ in 0..500 {
        if log.lock().unwrap().len() >= n {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    log.lock().unwrap().clone()
}

/// A file sent whole, or a range of it, finishes the request: the server stops
/// reading the file at its `Content-Length`, before the body could say it is at its
/// end, and that is a complete response all the same.
#[tokio::test]
async fn a_file_sent_whole_or_in_part_finishes_the_request() {
    let tree = Tree::new();
    let (addr, log) = watched_files(&tree.first, None).await;
    for (target, headers, status) in [
        ("/a.txt", &[][..], 200),
        ("/big.bin", &[("range", "bytes=10-19")][..], 206),
        ("/nothing.txt", &[][..], 200),
    ] {
        let answer = get_with(addr, target, headers).await;
        assert_eq!(answer.status, status, "{target}");
        assert_eq!(logged(&log, 2).await, ["end", "finish"], "{target}");
        log.lock().unwrap().clear();
    }
}

/// A file cut short while it is sent cannot be sent whole: the client gets a cut
/// response, and the request meets an error and closes; it does not finish.
#[tokio::test]
async fn a_file_that_shrinks_while_it_is_sent_is_an_error_and_closes() {
    let tree = Tree::new();
    let (addr, log) = watched_files(&tree.first, Some(4)).await;
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let request = Request::get("/big.bin").header("host", "test").body(Empty::<Bytes>::new()).unwrap();
    match sender.send_request(request).await {
        Ok(response) => {
            assert_eq!(response.headers()["content-length"], "1048576");
            assert!(response.into_body().collect().await.is_err(), "the body is cut");
        }
        Err(err) => assert!(err.is_incomplete_message() || err.is_closed(), "{err}"),
    }
    assert_eq!(logged(&log, 3).await, ["end", "error 500", "close"]);
}
